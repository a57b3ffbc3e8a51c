"""Options reach the backend as given: a value of 0 is a value (issue 10, item 9).

click hands `sync` every option; the CLI forwards only those the user gave. It used to filter them with
`v not in (None, False)`, and since `0 == False` in Python, `--max-retries 0`, `--gpus-per-worker 0` and
`--batch-tokens 0` (gpus) were silently dropped. One case per option family (each backend that takes a
zero), through the real click command; `indexer.cli.sync` is replaced by a recorder of its SyncOptions
(a fake, for this unit test only) so that no Ray cluster or GPU is needed. The openai case is also run
for real against the loopback server in tests/test_openai_outages.py.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

import indexer.cli
from indexer import SyncOptions, SyncSummary


@pytest.mark.parametrize(("flags", "expected"), [
    (["--backend", "openai", "--max-retries", "0"], {"max_retries": 0}),
    (["--backend", "ray", "--gpus-per-worker", "0"], {"gpus_per_worker": 0.0}),
    (["--backend", "gpus", "--batch-tokens", "0"], {"batch_tokens": 0}),
    (["--backend", "openai", "--no-truncate"], {"no_truncate": True}),
])
def test_zero_valued_options_reach_the_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                flags: list[str], expected: dict[str, object]) -> None:
    seen: dict[str, object] = {}

    def recorder(index_dir: str, *, options: SyncOptions, **kwargs: object) -> SyncSummary:
        seen.update(vars(options))
        return SyncSummary()

    monkeypatch.setattr(indexer.cli, "sync", recorder)
    src = tmp_path / "d.jsonl"
    src.write_bytes(orjson.dumps({"id": "a", "text": "a"}) + b"\n")
    r = CliRunner().invoke(indexer.cli.cli, ["sync", str(src), "--index", str(tmp_path / "idx"), *flags])
    assert r.exit_code == 0, r.output
    options = seen["backend_options"]
    assert isinstance(options, dict)
    for name, value in expected.items():
        assert name in options and options[name] == value and type(options[name]) is type(value), options
    # Flags not given stay out: the backend refuses options it does not take.
    assert set(options) == set(expected)
