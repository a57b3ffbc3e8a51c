"""An OpenAI-compatible `/v1/embeddings` server on loopback, for tests and benchmarks.

It answers like the OpenAI API (JSON body, `data[i].index`, `usage`, base64 or float encoding) with
deterministic vectors: the fake model's hash-seeded unit vector of each input text, so a test can
recompute every vector it expects. `Behavior` holds the knobs a test turns, also while the server runs:

    rpm / tpm                 token buckets over requests and tokens per minute; over them -> 429 with
                              Retry-After (seconds) and/or retry-after-ms, as `retry_header` says
    fail_every, fail_codes    every k-th request answers 500 / 502 / 503 (cycling)
    drop_every                every k-th request: the connection is closed without an answer
    hang_every, hang_s        every k-th request sleeps hang_s before answering (past a client timeout)
    poison, name_index        an input containing this marker -> 400 (naming its index, input[i])
    max_batch                 more inputs than this in one request -> 413 "batch size N > maximum ..."
    max_input_tokens          an input over it -> 400 "maximum context length ..." (OpenAI's wording)
    max_request_tokens        a request over it -> 400 "max 300000 tokens per request"
    shuffle                   `data` comes back in a shuffled order (the `index` field stays right)
    wrong_dim_every / wrong_count_every / nan_every   every k-th answer is garbage of that kind
    zero_marker               an input containing this marker gets an all-zero vector (200, well formed)
    text_element_every        every k-th answer has a string where a number should be (float encoding)
    rate_limit_429_first      the first k requests get 429 with `retry_after_s` (any length)
    api_key                   the bearer token it accepts (401 otherwise)
    models                    the model names it serves (404 model_not_found for any other, as OpenAI
                              answers); None serves every name

Tokens are counted as ceil(UTF-8 bytes / bytes_per_token) (4 by default, about English with a BPE).
Every request is recorded in `log` (inputs, status, outcome), so tests can check that nothing was
embedded twice. Run it alone with `python tests/openai_server.py --port 8000 --rpm 600`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import json
import math
import random
import socket
import threading
import time
from dataclasses import dataclass

import numpy as np
from aiohttp import web

from indexer.embedders.fake import FakeEmbedder


def fake_vector(text: str, dim: int) -> np.ndarray:
    """The fake model's vector (indexer.embedders.fake), so a test can compare what it stored."""
    vector: np.ndarray = FakeEmbedder(dim).embed([text])[0]
    return vector


def count_tokens(text: str, bytes_per_token: float = 4.0) -> int:
    return max(1, math.ceil(len(text.encode("utf-8")) / bytes_per_token))


API_KEY = "sk-test-0123456789abcdefKEY"  # what the tests' `server` fixture (conftest.py) accepts


@dataclass
class Behavior:
    dim: int = 64
    latency_s: float = 0.0
    rpm: float | None = None
    tpm: float | None = None
    start_full: bool = False  # buckets start empty: no burst credit inflates a measured rate
    retry_header: str = "seconds"  # seconds | ms | both | none
    send_limit_headers: bool = False  # x-ratelimit-limit-requests / -tokens on every answer
    fail_every: int = 0
    fail_codes: tuple[int, ...] = (500, 502, 503)
    drop_every: int = 0
    hang_every: int = 0
    hang_s: float = 3.0
    poison: str | None = "POISON"
    name_index: bool = True  # 400 messages name the bad input as input[i] (False: the client must bisect)
    max_batch: int | None = None
    max_input_tokens: int = 8192
    max_request_tokens: int = 300_000
    shuffle: bool = False
    wrong_dim_every: int = 0
    wrong_count_every: int = 0
    nan_every: int = 0
    rate_limit_429_first: int = 0
    retry_after_s: float = 1.0
    bytes_per_token: float = 4.0
    api_key: str = "test"
    always_status: int | None = None  # every request answers this status (a server that is down)
    always_retry_after: float | None = None  # with always_status: this Retry-After (seconds) too
    healthy_first: int = 0  # always_status and hang_every spare the first k requests (the probe passes)
    zero_marker: str | None = None
    text_element_every: int = 0
    models: tuple[str, ...] | None = None


@dataclass
class Record:
    t: float  # when the request arrived (time.monotonic)
    inputs: list[str]
    status: int
    outcome: str  # ok | 429 | 5xx | drop | hang | 400 | 413 | 401 | 404 | garbage:<kind>
    tokens: int
    dimensions: int | None = None
    encoding_format: str | None = None
    t_done: float = 0.0
    retry_after: float | None = None  # what a 429 asked for, in seconds


class _Bucket:
    def __init__(self, per_minute: float, full: bool) -> None:
        self.rate = per_minute / 60.0
        self.cap = per_minute
        self.level = per_minute if full else 0.0
        self.t = time.monotonic()

    def take(self, amount: float) -> float:
        """Take `amount` if the bucket holds it (0.0), else the seconds until it will."""
        now = time.monotonic()
        self.level = min(self.cap, self.level + (now - self.t) * self.rate)
        self.t = now
        need = min(amount, self.cap)
        if self.level >= need:
            self.level -= amount
            return 0.0
        return (need - self.level) / self.rate


def _error(status: int, message: str, kind: str = "invalid_request_error", code: str | None = None,
           headers: dict[str, str] | None = None) -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return web.Response(status=status, text=json.dumps(body), content_type="application/json",
                        headers=headers)


class EmbeddingServer:
    """The server, on its own event loop in a daemon thread. Use as a context manager or start()/stop()."""

    def __init__(self, behavior: Behavior | None = None, port: int = 0, host: str = "127.0.0.1") -> None:
        self.behavior = behavior or Behavior()
        self.host, self.port = host, port
        self.log: list[Record] = []
        self.lock = threading.Lock()
        self._counter = itertools.count(1)
        self._rng = random.Random(7)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._buckets: tuple[_Bucket | None, _Bucket | None] = (None, None)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def reset_limits(self) -> None:
        b = self.behavior
        self._buckets = (_Bucket(b.rpm, b.start_full) if b.rpm else None,
                         _Bucket(b.tpm, b.start_full) if b.tpm else None)

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> EmbeddingServer:
        if self.port == 0:
            with socket.socket() as s:
                s.bind((self.host, 0))
                self.port = s.getsockname()[1]
        self.reset_limits()
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._serve())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="openai-test-server", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the test server did not start")
        return self

    async def _serve(self) -> None:
        app = web.Application(client_max_size=256 * 2**20)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_get("/stats", self._stats)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port, backlog=512).start()

    def stop(self) -> None:
        if self._loop is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)
            if not self._thread.is_alive():
                self._loop.close()
        self._loop = None

    async def _close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]  # handlers still sleeping (hangs)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def __enter__(self) -> EmbeddingServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what tests read ---------------------------------------------------------------------------

    def records(self, outcome: str | None = None) -> list[Record]:
        with self.lock:
            return [r for r in self.log if outcome is None or r.outcome == outcome]

    def embedded_texts(self) -> list[str]:
        """Every input of every request answered with good vectors, repeats kept."""
        return [t for r in self.records("ok") for t in r.inputs]

    def summary(self) -> dict[str, object]:
        """Counts by outcome, and the requests, inputs and tokens answered with good vectors."""
        log = self.records()
        ok = [r for r in log if r.outcome == "ok"]
        outcomes: dict[str, int] = {}
        for r in log:
            outcomes[r.outcome] = outcomes.get(r.outcome, 0) + 1
        return {"outcomes": outcomes, "ok_requests": len(ok), "ok_inputs": sum(len(r.inputs) for r in ok),
                "ok_tokens": sum(r.tokens for r in ok), "requests": len(log)}

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.summary())

    # -- the endpoint ------------------------------------------------------------------------------

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        b = self.behavior
        n = next(self._counter)
        t0 = time.monotonic()
        rec = Record(t=t0, inputs=[], status=0, outcome="", tokens=0)
        try:
            response = await self._answer(request, b, n, rec)
        except _Dropped:
            rec.status, rec.outcome = 0, "drop"
            response = None
        rec.t_done = time.monotonic()
        with self.lock:
            self.log.append(rec)
        if response is None:
            assert request.transport is not None
            request.transport.close()
            raise asyncio.CancelledError  # nothing goes back on this connection
        return response

    async def _answer(self, request: web.Request, b: Behavior, n: int, rec: Record) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {b.api_key}":
            rec.status, rec.outcome = 401, "401"
            return _error(401, "Incorrect API key provided: sk-te**********st.", code="invalid_api_key")
        body = await request.json()
        inputs = body.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        rec.inputs = list(inputs)
        rec.dimensions = body.get("dimensions")
        rec.encoding_format = body.get("encoding_format")
        model = body.get("model")
        if b.models is not None and model not in b.models:
            rec.status, rec.outcome = 404, "404"
            return _error(404, f"The model `{model}` does not exist or you do not have access to it.",
                          code="model_not_found")
        counts = [count_tokens(t, b.bytes_per_token) for t in inputs]
        rec.tokens = sum(counts)
        if b.latency_s:
            await asyncio.sleep(b.latency_s)
        down = n > b.healthy_first
        if b.always_status is not None and down:
            rec.status, rec.outcome = b.always_status, str(b.always_status)
            retry = None if b.always_retry_after is None else {"Retry-After": f"{b.always_retry_after:g}"}
            return _error(b.always_status, f"the server is unavailable ({b.always_status})", "server_error",
                          headers=retry)
        if b.drop_every and n % b.drop_every == 0:
            raise _Dropped
        if b.hang_every and n % b.hang_every == 0 and down:
            await asyncio.sleep(b.hang_s)
            rec.status, rec.outcome = 0, "hang"
            return _error(504, "too late")
        if n <= b.rate_limit_429_first:
            rec.status, rec.outcome = 429, "429"
            return _error(429, "Rate limit reached; try again later.", "requests", "rate_limit_exceeded",
                          headers=self._retry_headers(b.retry_after_s, b.retry_header or "seconds"))
        if b.fail_every and n % b.fail_every == 0:
            code = b.fail_codes[(n // b.fail_every) % len(b.fail_codes)]
            rec.status, rec.outcome = code, "5xx"
            return _error(code, f"upstream failure {code}", "server_error")
        if not isinstance(inputs, list) or not inputs or len(inputs) > 2048:
            rec.status, rec.outcome = 400, "400"
            return _error(400, "'$.input' is invalid: give 1 to 2048 strings")
        if b.max_batch is not None and len(inputs) > b.max_batch:
            rec.status, rec.outcome = 413, "413"
            return _error(413, f"batch size {len(inputs)} > maximum allowed batch size {b.max_batch}",
                          "validation")
        if rec.tokens > b.max_request_tokens:
            rec.status, rec.outcome = 400, "400"
            return _error(400, f"Requested {rec.tokens} tokens, max {b.max_request_tokens} tokens per "
                               "request", code="max_tokens_per_request")
        for i, (text, c) in enumerate(zip(inputs, counts, strict=True)):
            if c > b.max_input_tokens:
                rec.status, rec.outcome = 400, "400"
                return _error(400, f"This model's maximum context length is {b.max_input_tokens} tokens, "
                                   f"however you requested {c} tokens (input[{i}]). Please reduce your "
                                   "prompt.")
            if not text:
                rec.status, rec.outcome = 400, "400"
                return _error(400, f"'$.input[{i}]' is invalid: empty string")
            if b.poison and b.poison in text:
                rec.status, rec.outcome = 400, "400"
                where = f"input[{i}]" if b.name_index else "an input"
                return _error(400, f"{where} was rejected: it contains {b.poison}")
        wait = self._limit(rec.tokens)
        if wait > 0:
            rec.status, rec.outcome, rec.retry_after = 429, "429", wait
            return _error(429, "Rate limit reached for text-embedding-test: please try again later.",
                          "tokens", "rate_limit_exceeded",
                          headers={**self._retry_headers(wait, b.retry_header), **self._limit_headers()})
        dim = int(body.get("dimensions") or b.dim)
        vectors = [np.zeros(dim, np.float32) if b.zero_marker and b.zero_marker in t else fake_vector(t, dim)
                   for t in inputs]
        outcome = "ok"
        if b.wrong_dim_every and n % b.wrong_dim_every == 0:
            vectors = [np.concatenate([v, v[:1]]) for v in vectors]
            outcome = "garbage:dim"
        elif b.wrong_count_every and n % b.wrong_count_every == 0:
            vectors = vectors[:-1] if len(vectors) > 1 else vectors * 2
            outcome = "garbage:count"
        elif b.nan_every and n % b.nan_every == 0:
            vectors = [v.copy() for v in vectors]
            vectors[len(vectors) // 2][0] = np.nan
            outcome = "garbage:nan"
        b64 = body.get("encoding_format") == "base64"
        data: list[dict[str, object]] = [
            {"object": "embedding", "index": i,
             "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode() if b64
             else [float(x) for x in v]} for i, v in enumerate(vectors)]
        if b.text_element_every and n % b.text_element_every == 0:
            data[0]["embedding"] = ["not a number", *(float(x) for x in vectors[0][1:])]
            outcome = "garbage:text"
        if b.shuffle:
            self._rng.shuffle(data)
        rec.status, rec.outcome = 200, outcome
        payload = {"object": "list", "data": data, "model": body.get("model", ""),
                   "usage": {"prompt_tokens": rec.tokens, "total_tokens": rec.tokens}}
        return web.Response(text=json.dumps(payload), content_type="application/json",
                            headers=self._limit_headers())

    def _limit(self, tokens: int) -> float:
        """0.0 if the request fits both buckets (and takes from them), else the seconds to wait."""
        rb, tb = self._buckets
        now_waits = []
        # Check both before taking from either, so a refused request costs nothing.
        for bucket, amount in ((rb, 1.0), (tb, float(tokens))):
            if bucket is None:
                continue
            bucket.level = min(bucket.cap, bucket.level + (time.monotonic() - bucket.t) * bucket.rate)
            bucket.t = time.monotonic()
            need = min(amount, bucket.cap)
            if bucket.level < need:
                now_waits.append((need - bucket.level) / bucket.rate)
        if now_waits:
            return max(now_waits)
        for bucket, amount in ((rb, 1.0), (tb, float(tokens))):
            if bucket is not None:
                bucket.take(amount)
        return 0.0

    def _limit_headers(self) -> dict[str, str]:
        b = self.behavior
        if not b.send_limit_headers:
            return {}
        out = {}
        if b.rpm:
            out["x-ratelimit-limit-requests"] = str(int(b.rpm))
        if b.tpm:
            out["x-ratelimit-limit-tokens"] = str(int(b.tpm))
        return out

    @staticmethod
    def _retry_headers(wait_s: float, style: str) -> dict[str, str]:
        out = {}
        if style in ("seconds", "both"):
            out["Retry-After"] = str(max(1, math.ceil(wait_s)))
        if style in ("ms", "both"):
            out["retry-after-ms"] = str(max(1, math.ceil(wait_s * 1000)))
        return out


class _Dropped(Exception):
    pass


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--rpm", type=float, default=None)
    p.add_argument("--tpm", type=float, default=None)
    p.add_argument("--latency", type=float, default=0.0, help="seconds each answer takes")
    p.add_argument("--api-key", default="test")
    args = p.parse_args()
    behavior = Behavior(dim=args.dim, rpm=args.rpm, tpm=args.tpm, latency_s=args.latency,
                        api_key=args.api_key)
    server = EmbeddingServer(behavior, port=args.port).start()
    print(f"serving {server.base_url} (GET /stats for counts)", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        threading.Event().wait()
    server.stop()


if __name__ == "__main__":
    main()


__all__ = ["Behavior", "EmbeddingServer", "Record", "count_tokens", "fake_vector"]
