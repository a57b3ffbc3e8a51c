"""SyncOptions: every option of indexer.sync() in one frozen, keyword-only object, checked when made; and
the states the manifest records, as the enums Python code uses, equal to the schema's."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

import indexer
from indexer import IndexerError, SyncOptions
from indexer._cli_options import sync_options
from indexer.embedders.fake import FakeEmbedder
from indexer.sources import FolderFilter
from indexer.states import ClaimState, ContentState, DocumentState, RunState

from helpers import ROOT


@pytest.mark.parametrize(("options", "message"), [
    ({"batch_size": 0}, "--batch-size must be at least 1"),
    ({"batch_tokens": -1}, "--batch-tokens must be at least 1 (or 0: batches by --batch-size alone)"),
    ({"dtype": "int8"}, "dtype 'int8' is not supported; use float32 or float16"),
    ({"runtime": "gpu"}, "runtime 'gpu' is not known; choose one of torch, onnx, onnx-int8"),
    ({"truncate_dim": 0}, "--truncate-dim must be a whole number of dimensions, at least 1 (got 0)"),
    ({"truncate_dim": True}, "--truncate-dim must be a whole number of dimensions, at least 1 (got True)"),
    ({"max_delete": 1.5}, "--max-delete must be a fraction from 0 to 1 (got 1.5)"),
    ({"chunk_tokens": 0}, "--chunk-tokens must be a whole number of tokens, at least 1 (got 0)"),
    ({"chunk_overlap": -1}, "--chunk-overlap must be a whole number of tokens, at least 0 (got -1)"),
    ({"chunking": False, "chunk_tokens": 8}, "--no-chunking embeds whole documents"),
    ({"prompt": "p: ", "prompt_name": "query"}, "give --prompt or --prompt-name, not both"),
])
def test_a_bad_option_is_refused_when_the_options_are_made(options: dict[str, object], message: str) -> None:
    with pytest.raises(IndexerError) as err:
        SyncOptions(**options)  # type: ignore[arg-type]
    assert str(err.value).startswith(message)


def test_options_are_frozen_and_keyword_only() -> None:
    options = SyncOptions(model="fake:8")
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.model = "fake:16"  # type: ignore[misc]
    with pytest.raises(TypeError):
        SyncOptions("fake:8")  # type: ignore[call-arg]
    # a changed copy is checked as a new one is
    with pytest.raises(IndexerError, match="--batch-size must be at least 1"):
        dataclasses.replace(options, batch_size=0)


def test_options_that_load_a_model_by_name_are_refused_with_an_embedder(tmp_path: Path) -> None:
    for options in (SyncOptions(runtime="onnx"), SyncOptions(truncate_dim=4), SyncOptions(prompt="p: "),
                    SyncOptions(prompt_name="query")):
        with pytest.raises(IndexerError, match="give them to load_embedder"):
            indexer.sync(tmp_path / "ix", [("a", "alpha")], options, embedder=FakeEmbedder(8))
    assert not (tmp_path / "ix").exists()


def test_the_sync_command_s_flags_make_its_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INDEXER_SCAN_BATCH", "7")
    flags: dict[str, object] = {
        field.name: field.default for field in dataclasses.fields(SyncOptions)
        if field.name not in ("folder", "settings", "backend_options", "embedder_options")}
    flags.update(include=("*.md",), exclude=("drafts/",), hidden=True, hang_seconds=5.0, batch_size=64,
                 model="fake:8", backend="processes", workers=2, threads_per_worker=None, no_truncate=False)
    options = sync_options(flags, batch_size_given=False)
    assert options.folder == FolderFilter(("*.md",), ("drafts/",), True)
    assert (options.settings.hang_seconds, options.settings.scan_batch) == (5.0, 7)
    assert options.batch_size is None  # not given: the settings' own
    assert options.model == "fake:8" and options.backend == "processes"
    assert options.backend_options == {"workers": 2}
    assert sync_options(flags, batch_size_given=True).batch_size == 64


def _checked_values(table: str) -> set[str]:
    schema = (ROOT / "migrations" / "schema.sql").read_text()
    body = re.search(rf"CREATE TABLE {table} \((.*?)\n\);", schema, re.S)
    assert body is not None, table
    values = re.search(r"state\s+TEXT NOT NULL.*?CHECK \(state IN \(([^)]*)\)\)", body.group(1), re.S)
    assert values is not None, table
    return {v.strip().strip("'") for v in values.group(1).split(",")}


def test_the_state_enums_are_the_states_the_schema_allows() -> None:
    assert set(ContentState) == _checked_values("contents")
    assert set(ClaimState) == _checked_values("claims")
    assert set(RunState) == _checked_values("runs")
    assert set(DocumentState) == {*ContentState, "deleted"}
