"""Reading the embeddings API's answers: what each one means for the request that got it.

An answer with a body is decoded (its vectors in input order, the server's token count); a refusal or
a failure is classified. Every way a request can end is one `Outcome`, and the rest of the backend
acts on outcomes, never on status codes.
"""

from __future__ import annotations

import base64
import email.utils
import enum
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import orjson

__all__ = ["Answer", "BadAnswer", "Outcome", "announced_limits", "decode", "outcome_of", "read_answer",
           "read_error", "retry_after", "scrub_key"]

_TOO_LARGE = re.compile(r"too large|too many (inputs|items|texts)|batch size|payload|tokens per request|"
                        r"max_tokens_per_request|maximum allowed batch", re.I)
_CONTEXT = re.compile(r"context length|too long|maximum (input|sequence) length|reduce your prompt|"
                      r"max(imum)? (number of )?tokens|less than \d+ tokens", re.I)
_KEYLIKE = re.compile(r"sk-[A-Za-z0-9_\-*]{4,}")


class Outcome(enum.Enum):
    """How a request ended."""

    OK = "ok"
    BAD_ANSWER = "bad answer"  # a 200 that is unusable: wrong count, index or dimension, not numbers
    TIMEOUT = "timeout"
    CONNECTION_FAILED = "connection failed"  # refused or dropped
    SERVER_ERROR = "server error"  # 5xx, 408, 409
    RATE_LIMITED = "rate limited"  # 429
    OUT_OF_QUOTA = "out of quota"  # a 429 that says so: waiting will not help
    TOO_LARGE = "too large"  # 413, or a refusal that says the request has too many inputs or tokens
    INPUT_TOO_LONG = "input too long"  # a 400 / 422 that says an input is over the model's context
    BAD_INPUT = "bad input"  # any other 400 / 422: the server refuses one of the inputs
    REFUSED = "refused"  # 401, 403, 404 and any other status: only the user can fix it

    @property
    def retryable(self) -> bool:
        """The server's trouble, not the request's: the same request may succeed when sent again."""
        return self in _RETRYABLE

    @property
    def stops_the_sync(self) -> bool:
        """No request will succeed until the user changes something (key, model, URL, account)."""
        return self in (Outcome.OUT_OF_QUOTA, Outcome.REFUSED)


_RETRYABLE = frozenset({Outcome.BAD_ANSWER, Outcome.TIMEOUT, Outcome.CONNECTION_FAILED,
                        Outcome.SERVER_ERROR, Outcome.RATE_LIMITED})


@dataclass(frozen=True)
class Answer:
    outcome: Outcome
    message: str = ""  # what went wrong, the key scrubbed: for failure reasons and errors
    status: int | None = None  # the HTTP status, when the server answered
    vectors: np.ndarray | None = None  # OK only: one row an input, in input order
    server_tokens: int | None = None  # the request's tokens as the server counted them, when it said
    headers: Mapping[str, str] | None = None
    retry_after: float | None = None  # seconds the server asked to wait, as it asked


class BadAnswer(Exception):
    pass


def read_answer(content: bytes, headers: Mapping[str, str], n: int, dim: int) -> Answer:
    """The answer to a request of `n` inputs that the client took as a success: OK with its vectors, or
    BAD_ANSWER saying what is off. `dim`: the dimension every vector must have (0: any, but one)."""
    wait = retry_after(headers)
    try:
        vectors, tokens = decode(content, n, dim)
    except BadAnswer as exc:
        return Answer(Outcome.BAD_ANSWER, f"unusable answer: {exc}", 200, headers=headers, retry_after=wait)
    return Answer(Outcome.OK, "", 200, vectors, tokens, headers, wait)


def read_error(exc: Exception, timeout: float, scrub: Callable[[str], str]) -> Answer:
    """The request the `openai` client raised `exc` for; an exception that is not the API's is raised
    again. `timeout`: the client's, for the message."""
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return Answer(Outcome.TIMEOUT, f"no answer within {timeout:g}s")
    if isinstance(exc, openai.APIConnectionError):
        return Answer(Outcome.CONNECTION_FAILED, f"connection failed ({scrub(str(exc.__cause__ or exc))})")
    if isinstance(exc, openai.APIStatusError):
        body = exc.body
        message = body.get("message") if isinstance(body, dict) else None
        if not isinstance(message, str) or not message:
            message = exc.message
        code = body.get("code") if isinstance(body, dict) else None
        text = scrub(f"{exc.status_code} {message}" + (f" ({code})" if isinstance(code, str) else ""))
        headers = exc.response.headers
        return Answer(outcome_of(exc.status_code, text), text, exc.status_code, headers=headers,
                      retry_after=retry_after(headers))
    raise exc


def outcome_of(status: int, message: str) -> Outcome:
    """The outcome of an error status, with the server's message (some servers say "too large" in a
    400, or "quota" in a 429)."""
    if status >= 500 or status in (408, 409):
        return Outcome.SERVER_ERROR
    if status == 429:
        if "quota" in message.lower():
            return Outcome.OUT_OF_QUOTA  # out of money, not out of rate
        return Outcome.TOO_LARGE if "too large" in message.lower() else Outcome.RATE_LIMITED
    says_too_long = _CONTEXT.search(message) is not None
    if status == 413 or (status in (400, 422) and _TOO_LARGE.search(message) and not says_too_long):
        return Outcome.TOO_LARGE
    if status in (400, 422):
        return Outcome.INPUT_TOO_LONG if says_too_long else Outcome.BAD_INPUT
    return Outcome.REFUSED


def decode(content: bytes, n: int, dim: int) -> tuple[np.ndarray, int | None]:
    """The vectors of an answer in input order (by each item's `index`) and the server's token
    count; BadAnswer if anything about it is off. Nothing of a bad answer is kept."""
    try:
        body = orjson.loads(content)
        data = body["data"]
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise BadAnswer(f"not an embeddings answer ({exc})") from None
    if not isinstance(data, list) or len(data) != n:
        raise BadAnswer(f"{len(data) if isinstance(data, list) else 'no'} vectors for {n} inputs")
    rows: list[np.ndarray | None] = [None] * n
    for item in data:
        index = item.get("index") if isinstance(item, dict) else None
        if not isinstance(index, int) or not 0 <= index < n or rows[index] is not None:
            raise BadAnswer(f"index {index!r} missing, out of range or repeated")
        emb = item.get("embedding")
        if isinstance(emb, str):
            try:
                v = np.frombuffer(base64.b64decode(emb, validate=True), dtype="<f4")
            except ValueError as exc:
                raise BadAnswer(f"a vector that does not decode ({exc})") from None
        elif isinstance(emb, list):
            try:
                v = np.asarray(emb, dtype=np.float32)
            except (TypeError, ValueError) as exc:  # "abc", null, a nested list
                raise BadAnswer(f"a vector with a value that is not a number ({exc})") from None
        else:
            raise BadAnswer("an item with no embedding")
        if v.ndim != 1:
            raise BadAnswer(f"a vector of shape {v.shape}, not a list of numbers")
        if dim and v.shape != (dim,):
            raise BadAnswer(f"a vector of {v.size} dimensions, {dim} expected")
        dim = dim or v.size
        rows[index] = v
    vectors = np.stack(rows).astype(np.float32, copy=False)  # type: ignore[arg-type]
    if not np.isfinite(vectors).all():
        raise BadAnswer("non-finite values")
    usage = body.get("usage")
    tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    return vectors, tokens if isinstance(tokens, int) and tokens > 0 else None


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the server asks to wait: retry-after-ms, else Retry-After (seconds or an HTTP date)."""
    ms = _number(headers.get("retry-after-ms"))
    if ms is not None and ms >= 0:
        return ms / 1000.0
    value = headers.get("retry-after")
    if not value:
        return None
    seconds = _number(value)
    if seconds is not None:
        return max(0.0, seconds)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def announced_limits(headers: Mapping[str, str]) -> tuple[float | None, float | None]:
    """The requests and tokens per minute the server announces (x-ratelimit-limit-*), None where not."""
    return (_number(headers.get("x-ratelimit-limit-requests")),
            _number(headers.get("x-ratelimit-limit-tokens")))


def scrub_key(text: str, secret: str) -> str:
    """`text` without the API key, nor anything that looks like one."""
    if secret:
        text = text.replace(secret, "***")
    return _KEYLIKE.sub("sk-***", text)


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None
