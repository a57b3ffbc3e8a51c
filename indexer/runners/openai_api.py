"""The `openai` backend: embed claims through an OpenAI-compatible `/v1/embeddings` API.

    OPENAI_API_KEY=... indexer sync SRC --index DIR --backend openai --model text-embedding-3-small \\
        [--base-url URL] [--dimensions D] [--concurrency C] [--rpm R] [--tpm T] [--max-retries 3]

The official `openai` AsyncOpenAI client runs on an asyncio loop in a background thread; `submit`
schedules a claim there and returns a concurrent Future, so the driver's claim -> write -> commit loop
is the one every backend shares. A claim goes through layers, one concern each:

    openai_api.py        the runner: claims in, vectors and failures out; what each outcome means for
                         a request's inputs (split, shrink, bisect, cut, reject, give up, stop)
    _openai_packing.py   inputs into requests: token counts, truncation, the caps, what refusals teach
    _openai_sending.py   one request through the limiter and the `openai` client, sent again as the
                         retry policy says (the client's own retries are off: max_retries=0)
    _openai_retry.py     the retry policy: which failures are retried, backoff, Retry-After, rate limits
    _openai_answers.py   answers decoded and classified: each ends as one `Outcome`, which the other
                         layers act on (never on status codes)
    _openai_stats.py     the counts in `stats()`
    _ratelimit.py        the limiter; _tokens.py: token counting

Key and address
    The key is read from OPENAI_API_KEY only: never a flag, never logged, never stored (the index's
    configuration records the model, the server's host name and the dimension, not the key or the URL),
    and scrubbed from every error message. The URL is --base-url, else OPENAI_BASE_URL, else OpenAI's.

Configuration bound into the index (index.toml)
    model           --model, as sent to the API
    revision        "api:<host>" (the base URL's host name, no scheme, port, path or credentials). A
                    model name means different weights at different providers, so a sync against
                    another host is refused; another port or path on the same host is accepted.
    dim             --dimensions, else what the server answers to a probe request at start-up (one
                    short input, sent every time the runner starts: it also checks key, model and URL
                    before any claim is taken). A sync that would get another dimension is refused.
    normalize       False: indexer stores the vectors as the server returns them and normalizes
                    nothing (OpenAI's own embeddings are unit length already).
    max_seq_length  the per-input token limit inputs are truncated to (8192, OpenAI's).

Packing
    A claim's inputs are packed into requests that respect, all at once: tokens per input (8192),
    inputs per request (2048, or --batch-size when given), tokens per request (300,000), the token
    bucket's size, and a smaller per-server limit learned on the way: a 413, or a 400 that says the
    batch or request is too large, lowers the caps (to the number the message names, else to half of
    the refused request) and the refused request is split and sent again; no document fails for it.
    Tokens are counted with the model's tokenizer when one is available offline, else estimated
    (see _tokens.py). An input over the per-input limit is truncated (counted in the stats and
    reported as a warning) or, with --no-truncate, failed with its reason without being sent. An input
    the server still finds too long after truncation by estimate is cut further, using the counts the
    server's message gives, up to 4 times.

Limits and retries
    One limiter (_ratelimit.py) over requests/minute and tokens/minute (token buckets) and the
    in-flight cap (--concurrency) is shared by every request. --rpm/--tpm set the limits; without them
    the limits the server announces in x-ratelimit-limit-requests / -tokens are adopted. A 429 slows the
    limiter, and Retry-After / retry-after-ms (any length) stops all sending until then; 429s are waited
    out, they do not use up --max-retries (at most `max_rate_limit_wait` seconds per request, 1 hour by
    default). A 429 that says the account is out of quota stops the sync. 5xx, 408, 409, timeouts,
    dropped connections and unusable answers are retried up to --max-retries times with exponential
    backoff and jitter (Retry-After honoured when given). A Retry-After is waited at most backoff_max
    (60 s) at a time; a 429 whose Retry-After is longer than the rate-limit wait left gives up at once.
    A request that gives up this way returns its documents to pending WITHOUT using up an attempt (an
    outage is not the documents' fault; only a 400 on an input counts); three such requests in a row
    with no success between them mean the server is down, and the sync stops (BackendUnavailableError,
    exit 4, claims released, nothing lost), as does a start-up probe that gives up. 401, 403, 404 and
    other unexpected statuses stop the sync at once.

Bad inputs and bad answers
    A 400 (or 422) on a request of several inputs is bisected (split at the input the message names as
    input[i], else in halves) until the bad input is alone; that document fails with the server's
    message and the rest are embedded. Texts the server rejected are remembered for the run, so a
    re-claimed failure is not sent again. Results are matched to inputs by each item's `index`; an
    answer with the wrong count, a missing or repeated index, the wrong dimension or a non-finite value
    fails the request (retried), and nothing of it is stored. Vectors are requested as base64 and
    decoded with numpy (a server that ignores the format and sends floats is read too).

Stats (`stats()`, reported in SyncSummary.backend_stats): requests, retries, 429s, server errors,
timeouts, tokens sent and embedded, achieved tokens and requests per minute, truncations, caps learned.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from dataclasses import asdict
from typing import Any, TypeVar
from urllib.parse import urlsplit

import numpy as np

from ..embedders import ModelInfo
from ..errors import BackendUnavailableError, EmbeddingError, IndexerError, ModelLoadError
from . import BackendFailure, BatchDone, EmbedResult
from ._liveness import HangRule
from ._openai_answers import Answer, Outcome, scrub_key
from ._openai_packing import Item, Packer, split
from ._openai_retry import RetryPolicy
from ._openai_sending import Sender
from ._openai_stats import ApiStats
from ._ratelimit import RateLimiter
from ._tokens import TokenCounter, token_counter

__all__ = ["PROBE_TEXT", "ApiStats", "OpenAIRunner", "make"]

T = TypeVar("T")

MAX_INPUT_TOKENS = 8192
MAX_BATCH_INPUTS = 2048
MAX_BATCH_TOKENS = 300_000
DEFAULT_CONCURRENCY = 8
DEFAULT_MAX_RETRIES = 3
PROBE_TEXT = "indexer probe"
GIVE_UPS_THAT_STOP = 3  # requests in a row that gave up, with no success between them: the server is down

# The claim's progress callback, seen by every request task of the claim (tasks copy the context).
_ON_BATCH: contextvars.ContextVar[BatchDone | None] = contextvars.ContextVar("on_batch", default=None)


class OpenAIRunner:
    """A Runner over an OpenAI-compatible embeddings API (see the module docstring)."""

    def __init__(self, model: str, *, base_url: str | None = None, dimensions: int | None = None,
                 concurrency: int = DEFAULT_CONCURRENCY, rpm: float | None = None, tpm: float | None = None,
                 max_retries: int = DEFAULT_MAX_RETRIES, no_truncate: bool = False, timeout: float = 60.0,
                 backoff_base: float = 0.5, backoff_max: float = 60.0,
                 max_batch_inputs: int = MAX_BATCH_INPUTS, max_batch_tokens: int = MAX_BATCH_TOKENS,
                 max_input_tokens: int = MAX_INPUT_TOKENS, max_rate_limit_wait: float = 3600.0,
                 tokenizer: str = "auto", prompt: str = "") -> None:
        key = os.environ.get("OPENAI_API_KEY", "")
        if not key:
            raise ModelLoadError("backend openai needs an API key in the OPENAI_API_KEY environment variable "
                                 "(it is read from there only, never from a flag or a file)")
        self._secret = key
        url = base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise IndexerError(f"--base-url {self._scrub(url)!r} is not an http(s) URL, "
                               "e.g. http://localhost:8080/v1")
        self.host = parts.hostname
        self.model = model
        self.dimensions = dimensions
        self.max_input_tokens = max_input_tokens
        self.counter: TokenCounter = token_counter(model, tokenizer)
        self.capacity = concurrency + 2
        self.retry = RetryPolicy(max_retries, backoff_base, backoff_max, max_rate_limit_wait)
        self._stats = ApiStats()
        self._failing_in_a_row = 0
        self.dim = dimensions or 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="indexer-openai", daemon=True)
        self._thread.start()
        try:
            self._call(self._setup(url, concurrency, rpm, tpm, timeout))
            self.packer = Packer(self.counter, self.limiter, self._stats,
                                 max_inputs=max(1, min(max_batch_inputs, MAX_BATCH_INPUTS)),
                                 max_tokens=max(1, min(max_batch_tokens, MAX_BATCH_TOKENS)),
                                 max_input_tokens=max_input_tokens, truncate=not no_truncate)
            self.dim = self.sender.dim = self._call(self._probe())
            self._stats.reset()  # the stats are the claims' work: the probe is not counted
        except BaseException:
            self.close()
            raise
        self.prompt = prompt
        self.info = ModelInfo(model=model, revision=f"api:{self.host}", dim=self.dim, normalize=False,
                              max_seq_length=max_input_tokens, prompt=prompt)

    # -- the Runner protocol ---------------------------------------------------------------------

    def submit(self, texts: list[str], on_batch: BatchDone | None = None) -> Future[EmbedResult]:
        if self.prompt:  # the API sees the text as a local model would: prompt first
            texts = [self.prompt + t for t in texts]
        return asyncio.run_coroutine_threadsafe(self._embed(texts, on_batch), self._loop)

    def close(self) -> None:
        loop = self._loop
        if loop.is_closed():
            return
        try:
            if self._thread.is_alive():
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(10)
        except Exception:
            pass
        finally:
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(10)
            if not self._thread.is_alive():
                loop.close()

    def watch_for_hangs(self, rule: HangRule) -> None:
        """Nothing to watch: each request has its own timeout, and its retries their own limits."""

    def stats(self) -> dict[str, object]:
        s = self._stats
        out: dict[str, object] = {k: v for k, v in asdict(s).items()
                                  if k not in ("first_send", "last_answer")}
        minutes = (s.last_answer - s.first_send) / 60.0 if s.last_answer > s.first_send else 0.0
        out["limiter_wait_s"] = round(s.limiter_wait_s, 3)
        out["tokens_per_minute"] = round(s.tokens_embedded / minutes) if minutes else 0
        out["requests_per_minute"] = round(s.requests / minutes, 2) if minutes else 0.0
        out["active_seconds"] = round(minutes * 60.0, 3)
        out["tokenizer"] = self.counter.name
        out["max_inputs_per_request"] = self.packer.max_inputs
        out["max_tokens_per_request"] = self.packer.max_tokens
        warnings = []
        if s.truncated:
            how = "counted" if self.counter.exact else "estimated (no tokenizer available offline)"
            warnings.append(f"openai: truncated {s.truncated} input(s) to {self.max_input_tokens} tokens, "
                            f"{how}; --no-truncate fails them instead")
        out["warnings"] = warnings
        return out

    # -- the loop thread -------------------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    async def _setup(self, url: str, concurrency: int, rpm: float | None, tpm: float | None,
                     timeout: float) -> None:
        self.limiter = RateLimiter(rpm, tpm, concurrency)
        self.sender = Sender(url=url, key=self._secret, model=self.model, dimensions=self.dimensions,
                             timeout=timeout, limiter=self.limiter, policy=self.retry, stats=self._stats,
                             adopt_limits=rpm is None and tpm is None, scrub=self._scrub)

    async def _shutdown(self) -> None:
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        sender = getattr(self, "sender", None)
        if sender is not None:
            await sender.close()

    async def _probe(self) -> int:
        """One short request: checks key, URL and model, and learns the dimension."""
        for _ in range(2):
            item = Item(0, PROBE_TEXT, self.counter.count(PROBE_TEXT), 0)
            vectors: list[np.ndarray] = []
            failures: dict[int, str] = {}
            await self._send([item], vectors, failures)
            if not failures:
                dim = int(vectors[0].shape[0])
                if self.dimensions and dim != self.dimensions:
                    raise ModelLoadError(f"the API at {self.host} answered {dim}-dimensional vectors for "
                                         f"model {self.model!r}, --dimensions {self.dimensions} asked; "
                                         "does this model take --dimensions?")
                return dim
            reason = failures[0]
            if isinstance(reason, BackendFailure):  # down, not refusing: the same exit as mid-sync
                raise BackendUnavailableError(
                    f"the API at {self.host} is unavailable: a test request for model {self.model!r} "
                    f"{reason}. Nothing was changed: run the same sync again once it answers")
            if self.sender.encoding == "base64" and "encoding_format" in reason:
                self.sender.encoding = "float"  # a server that refuses base64: ask for floats
                continue
            break
        raise ModelLoadError(f"the API at {self.host} refused a test request for model {self.model!r}: "
                             f"{reason}")

    async def _embed(self, texts: list[str], on_batch: BatchDone | None = None) -> EmbedResult:
        _ON_BATCH.set(on_batch)  # this coroutine runs as its own task: the setting stays with the claim
        vectors = np.full((len(texts), self.dim), np.nan, dtype=np.float32)
        failures: dict[int, str] = {}
        items = self.packer.prepare(texts, failures)
        await self._gather([self._send(batch, vectors, failures) for batch in self.packer.pack(items)])
        return vectors, failures

    async def _send(self, batch: list[Item], out: np.ndarray | list[np.ndarray],
                    failures: dict[int, str]) -> None:
        """Get one request's inputs embedded or failed, splitting the request when it must be."""
        retries = self.retry.start()  # one count while the request is cut further and sent again
        while True:
            if len(batch) > 1 and not self.packer.fits(batch):
                await self._gather([self._send(part, out, failures) for part in self.packer.pack(batch)])
                return
            answer = await self.sender.send(batch, retries)
            outcome = answer.outcome
            if outcome is Outcome.OK:
                self._store(batch, answer, out)
                return
            if outcome.retryable:  # the sender gave up on it
                self._give_up(batch, failures, answer.message)
                return
            if outcome.stops_the_sync:
                raise EmbeddingError(f"the API at {self.host} refused the request for model {self.model!r}: "
                                     f"{answer.message}. Nothing is lost: fix this and run the same sync "
                                     "again")
            if outcome is Outcome.TOO_LARGE:
                self.packer.shrink(batch, answer.message)
                if len(batch) > 1:
                    continue  # the top of the loop splits it by the new caps
            else:  # BAD_INPUT or INPUT_TOO_LONG: the server refuses one of the inputs
                if len(batch) > 1:
                    self._stats.bisections += 1
                    parts = split(batch, answer.message)
                    await self._gather([self._send(part, out, failures) for part in parts])
                    return
                if outcome is Outcome.INPUT_TOO_LONG and self.packer.cut_further(batch[0], answer.message):
                    continue
            self._reject(batch[0], failures, f"rejected by the API ({answer.status}): {answer.message}")
            return

    async def _gather(self, coros: list[Coroutine[Any, Any, None]]) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                for coro in coros:
                    group.create_task(coro)
        except BaseExceptionGroup as eg:
            raise _first(eg) from None

    # -- what an outcome means for the inputs ----------------------------------------------------

    def _store(self, batch: list[Item], answer: Answer, out: np.ndarray | list[np.ndarray]) -> None:
        assert answer.vectors is not None
        self._failing_in_a_row = 0
        if isinstance(out, list):
            out.extend(answer.vectors)
        else:
            out[[it.pos for it in batch]] = answer.vectors
        report = _ON_BATCH.get()
        if report is not None:
            report(len(batch))

    def _reject(self, item: Item, failures: dict[int, str], reason: str) -> None:
        self._stats.rejected_inputs += 1
        self.packer.rejected[item.key] = reason
        failures[item.pos] = reason

    def _give_up(self, batch: list[Item], failures: dict[int, str], message: str) -> None:
        """A request out of retries for reasons that are not its inputs' (5xx, timeouts, dropped
        connections, rate limits, unusable answers): its documents go back to pending without using
        up an attempt; GIVE_UPS_THAT_STOP such requests in a row with no success between them mean the
        server is down, and the sync stops (BackendUnavailableError, exit 4)."""
        self._stats.gave_up_requests += 1
        self._failing_in_a_row += 1
        max_retries = self.retry.max_retries
        if self._failing_in_a_row >= GIVE_UPS_THAT_STOP:
            raise BackendUnavailableError(
                f"the API at {self.host} keeps failing: {message}; {self._failing_in_a_row} requests in a "
                f"row gave up after {max_retries} retries each. Nothing is lost and no document used "
                "up an attempt: run the same sync again once it answers")
        reason = BackendFailure(f"failed after {max_retries} retries: {message}")
        for it in batch:
            failures[it.pos] = reason

    def _scrub(self, text: str) -> str:
        return scrub_key(text, self._secret)


def _first(group: BaseExceptionGroup[Any]) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


_OPTIONS = {"base_url": str, "dimensions": int, "concurrency": int, "rpm": float, "tpm": float,
            "max_retries": int, "no_truncate": bool, "timeout": float, "backoff_base": float,
            "backoff_max": float, "max_batch_inputs": int, "max_batch_tokens": int, "max_input_tokens": int,
            "max_rate_limit_wait": float, "tokenizer": str}


def make(model: str, batch_size: int, embedder_options: dict[str, object], **options: object) -> OpenAIRunner:
    """`batch_size` is not used: requests are packed by tokens (give max_batch_inputs to cap inputs)."""
    if "runtime" in embedder_options:
        raise IndexerError(f"backend openai embeds through the API; --runtime {embedder_options['runtime']} "
                           "applies to local sentence-transformers models only")
    if "truncate_dim" in embedder_options:
        raise IndexerError("backend openai does not take --truncate-dim; ask the API for fewer dimensions "
                           "with --dimensions")
    embedder_options = dict(embedder_options)
    prompt = str(embedder_options.pop("prompt", ""))
    if embedder_options:
        names = ", ".join(sorted(embedder_options))
        raise IndexerError(f"backend openai takes no embedder options (got {names})")
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        flags = ", ".join("--" + k.replace("_", "-") for k in unknown)
        raise IndexerError(f"backend openai does not take {flags}")
    kwargs: dict[str, Any] = {}
    for name, value in options.items():
        kind = _OPTIONS[name]
        if value is None:
            continue
        ok = {bool: isinstance(value, bool), str: isinstance(value, str),
              int: isinstance(value, int) and not isinstance(value, bool),
              float: isinstance(value, int | float) and not isinstance(value, bool)}[kind]
        if not ok:
            raise IndexerError(f"backend openai: {name} must be a {kind.__name__}, got {value!r}")
        kwargs[name] = value
    return OpenAIRunner(model, prompt=prompt, **kwargs)
