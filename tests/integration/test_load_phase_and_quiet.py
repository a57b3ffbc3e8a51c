"""What a sync says while it runs (issue 15): a "load" phase of its own that names what is loading, so
that neither bar counts the model's start-up; --quiet means nothing on stderr but errors; third-party
progress bars stay off the screen when stderr is not a terminal; --backend auto says what it chose; the
first --runtime onnx run says that it exports the model. Uses the tiny random-weight model."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import pytest

import indexer
from indexer import Progress
from indexer._cli_text import ProgressBar
from indexer.runners import auto

from helpers import invoke
from tiny_model import build_tiny_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny"))


def test_the_model_loads_in_a_phase_of_its_own_naming_what_loads(tmp_path: Path, tiny: Path,
                                                                  write_jsonl: Any) -> None:
    events: list[Progress] = []
    src = write_jsonl(tmp_path / "a.jsonl", {"a": "alpha", "b": "beta"})
    indexer.sync(tmp_path / "ix", paths=[str(src)], options=indexer.SyncOptions(model=str(tiny)),
                 on_progress=events.append)
    # a new index loads the model first (its configuration binds the index), then scans, then embeds
    assert [e.phase for e in events][:1] == ["load"] and [e.phase for e in events][-1] == "embed"
    assert events[0].detail == f"model {tiny} (runtime torch; backend inline)"
    events.clear()
    write_jsonl(src, {"a": "alpha", "b": "beta", "c": "gamma"})
    indexer.sync(tmp_path / "ix", paths=[str(src)], on_progress=events.append)
    phases = [e.phase for e in events]
    # an existing index scans first; the model loads after the scan is over, before the embedding
    assert phases == ["scan"] * phases.count("scan") + ["load"] + ["embed"] * phases.count("embed")
    assert phases.count("scan") >= 1 and phases.count("embed") >= 1


def test_the_bar_closes_the_scan_before_the_load_line(monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    bar = ProgressBar()
    bar(Progress("scan", 3, None, 100.0, None, 50.0))
    assert bar.bar is not None and bar.bar.n == 3
    bar(Progress("load", 0, None, 0.0, None, 50.0, detail="model m (runtime torch; backend inline)"))
    assert bar.bar is None  # the scan's bar is closed: its clock stops before the model starts
    bar(Progress("embed", 1, 3, 1.0, 2.0, 60.0))
    bar.close()
    out = err.getvalue()
    assert "indexer: loading model m (runtime torch; backend inline) ..." in out
    assert out.index("scan") < out.index("loading") < out.index("embed")


def test_quiet_prints_nothing_on_stderr_and_a_pipe_gets_no_third_party_bars(tmp_path: Path, tiny: Path,
                                                                            write_jsonl: Any) -> None:
    src = write_jsonl(tmp_path / "a.jsonl", {"a": "alpha", "b": "beta"})
    r = invoke("sync", str(src), "--index", str(tmp_path / "ix"), "--model", str(tiny), "--quiet")
    assert r.exit_code == 0, r.output
    assert r.stderr == "" and r.stdout == ""
    write_jsonl(src, {"a": "alpha", "b": "beta", "c": "gamma"})
    r = invoke("sync", str(src), "--index", str(tmp_path / "ix"))  # not --quiet, stderr not a terminal
    assert r.exit_code == 0, r.output
    assert "Loading weights" not in r.stderr and "it/s" not in r.stderr
    assert r.stderr.startswith("synced ") and r.stderr.count("\n") == 1


def test_backend_auto_says_what_it_chose(tmp_path: Path, write_jsonl: Any) -> None:
    src = write_jsonl(tmp_path / "a.jsonl", {"a": "alpha"})
    r = invoke("sync", str(src), "--index", str(tmp_path / "ix"), "--model", "fake:8", "--backend", "auto",
               "--json")
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    expected, _ = auto.choose("fake:8", {})
    assert s["backend"] == expected and s["backend_settings"]["chosen_by"] == "auto"
    assert f"; backend {expected} (" in r.stderr and "chosen by auto" in r.stderr


def test_the_first_onnx_run_says_it_exports_the_model(tmp_path: Path, tiny: Path, write_jsonl: Any,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("INDEXER_CACHE_DIR", str(tmp_path / "cache"))
    src = write_jsonl(tmp_path / "a.jsonl", {"a": "alpha"})
    with caplog.at_level(logging.WARNING, logger="indexer"):
        indexer.sync(tmp_path / "ix1", paths=[str(src)],
                     options=indexer.SyncOptions(model=str(tiny), runtime="onnx"))
    said = [r.getMessage() for r in caplog.records if "exporting model" in r.getMessage()]
    with indexer.open(tmp_path / "ix1") as idx:
        revision = idx.config.revision
    assert said == [f"indexer: exporting model {tiny} to ONNX (onnx) into {tmp_path / 'cache' / revision}"
                    "/v2; once for this model, later runs reuse it"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="indexer"):
        indexer.sync(tmp_path / "ix2", paths=[str(src)],
                     options=indexer.SyncOptions(model=str(tiny), runtime="onnx"))
    assert not [r for r in caplog.records if "exporting" in r.getMessage()]  # the export is reused
