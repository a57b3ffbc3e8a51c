"""The openai backend's layers, each on its own: the packing, answers classified into outcomes,
the retry policy, and the sender (the real `openai` client against tests/openai_server.py on loopback).
The whole backend is tested through syncs in test_openai_backend.py and test_openai_outages.py.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import json
import random
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from indexer.runners._openai_answers import Answer, Outcome, outcome_of, read_answer, retry_after, scrub_key
from indexer.runners._openai_packing import MAX_CUTS, Item, Packer, split
from indexer.runners._openai_retry import Retries, RetryPolicy
from indexer.runners._openai_sending import Sender
from indexer.runners._openai_stats import ApiStats
from indexer.runners._ratelimit import RateLimiter
from indexer.runners._tokens import EstimateCounter

from openai_server import API_KEY, EmbeddingServer, count_tokens, fake_vector

MODEL = "text-embedding-3-small"

# -- packing ---------------------------------------------------------------------------------------


def packer(max_inputs: int = 2048, max_tokens: int = 300_000, *, tpm: float | None = None,
           truncate: bool = True, max_input_tokens: int = 8192) -> Packer:
    return Packer(EstimateCounter(), RateLimiter(None, tpm, 4), ApiStats(), max_inputs=max_inputs,
                  max_tokens=max_tokens, max_input_tokens=max_input_tokens, truncate=truncate)


def items(tokens: list[int]) -> list[Item]:
    return [Item(i, "x" * (2 * t), t, i) for i, t in enumerate(tokens)]


def test_requests_are_packed_within_every_cap_in_order() -> None:
    many = items([10] * 10)
    for p, most_inputs, most_tokens in ((packer(max_inputs=4), 4, 40), (packer(max_tokens=25), 2, 25),
                                        (packer(tpm=600), 2, 20)):  # the bucket's share: 2 s of 600/min
        batches = p.pack(many)
        assert [it.pos for b in batches for it in b] == list(range(10))
        assert max(len(b) for b in batches) <= most_inputs
        assert max(sum(it.tokens for it in b) for b in batches) <= most_tokens
        assert all(p.fits(b) for b in batches) and not p.fits(many)
    assert [len(b) for b in packer(max_inputs=6).pack(many)] == [5, 5]  # about equal, not 6 and 4
    assert packer().pack([]) == []


@pytest.mark.parametrize(("message", "max_inputs", "max_tokens"), [
    ("413 batch size 20 > maximum allowed batch size 10", 10, 300_000),
    ("400 max 50 inputs per request", 19, 300_000),  # below the refused request, whatever it says
    ("400 Requested 200 tokens, max 150 tokens per request", 2048, 142),
    ("413 Payload Too Large", 10, 100),  # nothing to go by: half of the refused request
])
def test_a_refusal_for_size_lowers_the_caps(message: str, max_inputs: int, max_tokens: int) -> None:
    p = packer()
    p.shrink(items([10] * 20), message)
    assert (p.max_inputs, p.max_tokens) == (max_inputs, max_tokens)
    p.shrink(items([10] * 2), "400 max 5000 inputs per request")
    assert p.max_inputs == 1  # never raised again


def test_a_refused_request_is_split_around_the_input_it_names_else_in_halves() -> None:
    batch = items([1] * 8)

    def positions(parts: list[list[Item]]) -> list[list[int]]:
        return [[it.pos for it in part] for part in parts]

    assert positions(split(batch, "400 input[3] was rejected")) == [[0, 1, 2], [3], [4, 5, 6, 7]]
    assert positions(split(batch, "422 '$.input[0]' is invalid")) == [[0], [1, 2, 3, 4, 5, 6, 7]]
    assert positions(split(batch, "400 input[9] was rejected")) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert positions(split(batch, "400 an input was rejected")) == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_inputs_over_the_limit_are_truncated_or_failed_and_refused_ones_not_sent_again() -> None:
    texts = ["short", "y" * 100, "refused before"]
    p = packer(max_input_tokens=10)
    p.rejected[Packer.key_of("refused before")] = "rejected by the API (400): no"
    failures: dict[int, str] = {}
    prepared = p.prepare(texts, failures)
    assert [it.pos for it in prepared] == [0, 1] and failures == {2: "rejected by the API (400): no"}
    assert prepared[1].truncated and prepared[1].tokens <= 10 and prepared[1].text != "y" * 100
    assert p.stats.truncated == 1
    strict = packer(max_input_tokens=10, truncate=False)
    failures = {}
    assert [it.pos for it in strict.prepare(texts, failures)] == [0, 2]
    assert failures == {1: "input is 50 tokens by estimate, over the model's limit of 10; "
                           "not sent (--no-truncate)"}
    assert strict.stats.too_long_failed == 1


def test_an_input_the_server_finds_too_long_is_cut_by_its_counts_a_few_times() -> None:
    p = packer()
    item = Item(0, "z" * 1000, 500, 0)
    message = ("400 This model's maximum context length is 100 tokens, however you requested 200 tokens. "
               "Please reduce your prompt.")
    assert p.cut_further(item, message)
    assert len(item.text) == 475 and item.tokens == 238 and item.truncated and p.stats.truncated == 1
    assert p.cut_further(item, "400 input too long")  # no counts: to 3/4
    assert len(item.text) == 356 and p.stats.truncated == 1  # one input, counted once
    while p.cut_further(item, "400 input too long"):
        pass
    assert item.cuts == MAX_CUTS
    assert not packer(truncate=False).cut_further(Item(0, "z" * 1000, 500, 0), message)


def test_stats_reset_to_nothing() -> None:
    stats = ApiStats(requests=3, retries=1, limiter_wait_s=0.5, first_send=1.0, truncated=2)
    stats.reset()
    assert stats == ApiStats()


# -- answers: status and message -> outcome --------------------------------------------------------


@pytest.mark.parametrize(("status", "message", "outcome"), [
    (500, "500 upstream failure 500", Outcome.SERVER_ERROR),
    (503, "503 the server is unavailable (503)", Outcome.SERVER_ERROR),
    (408, "408 request timeout", Outcome.SERVER_ERROR),
    (409, "409 conflict", Outcome.SERVER_ERROR),
    (429, "429 Rate limit reached; try again later. (rate_limit_exceeded)", Outcome.RATE_LIMITED),
    (429, "429 You exceeded your current quota (insufficient_quota)", Outcome.OUT_OF_QUOTA),
    (429, "429 Request too large for text-embedding-3-small", Outcome.TOO_LARGE),
    (413, "413 batch size 20 > maximum allowed batch size 10", Outcome.TOO_LARGE),
    (413, "413 Payload Too Large", Outcome.TOO_LARGE),
    (400, "400 Requested 2000 tokens, max 1500 tokens per request (max_tokens_per_request)",
     Outcome.TOO_LARGE),
    (422, "422 too many inputs: 4096", Outcome.TOO_LARGE),
    (400, "400 This model's maximum context length is 8192 tokens, however you requested 9000 tokens "
          "(input[3]). Please reduce your prompt.", Outcome.INPUT_TOO_LONG),
    (400, "400 input[0] is too long for the batch size", Outcome.INPUT_TOO_LONG),  # an input, not the batch
    (422, "422 input must have less than 512 tokens", Outcome.INPUT_TOO_LONG),
    (400, "400 input[2] was rejected: it contains POISON", Outcome.BAD_INPUT),
    (422, "422 '$.input[1]' is invalid: empty string", Outcome.BAD_INPUT),
    (401, "401 Incorrect API key provided (invalid_api_key)", Outcome.REFUSED),
    (403, "403 forbidden", Outcome.REFUSED),
    (404, "404 The model does not exist", Outcome.REFUSED),
    (418, "418 I'm a teapot", Outcome.REFUSED),
])
def test_each_status_maps_to_its_outcome(status: int, message: str, outcome: Outcome) -> None:
    assert outcome_of(status, message) is outcome


def test_which_outcomes_are_retried_and_which_stop_the_sync() -> None:
    assert {o for o in Outcome if o.retryable} == {
        Outcome.BAD_ANSWER, Outcome.TIMEOUT, Outcome.CONNECTION_FAILED, Outcome.SERVER_ERROR,
        Outcome.RATE_LIMITED}
    assert {o for o in Outcome if o.stops_the_sync} == {Outcome.OUT_OF_QUOTA, Outcome.REFUSED}


# -- answers: decoding -----------------------------------------------------------------------------


def body(vectors: list[np.ndarray], *, b64: bool = True, order: list[int] | None = None,
         tokens: int | None = 7) -> bytes:
    data = [{"object": "embedding", "index": i,
             "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode() if b64 else v.tolist()}
            for i, v in enumerate(vectors)]
    if order is not None:
        data = [data[i] for i in order]
    out: dict[str, object] = {"object": "list", "data": data}
    if tokens is not None:
        out["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
    return json.dumps(out).encode()


VECTORS = [fake_vector(f"text {i}", 8) for i in range(3)]


@pytest.mark.parametrize("b64", [True, False])
def test_an_answer_is_read_in_input_order_by_index(b64: bool) -> None:
    answer = read_answer(body(VECTORS, b64=b64, order=[2, 0, 1]), {}, 3, 8)
    assert answer.outcome is Outcome.OK and answer.server_tokens == 7
    assert answer.vectors is not None and answer.vectors.dtype == np.float32
    np.testing.assert_array_equal(answer.vectors, np.stack(VECTORS))
    assert read_answer(body(VECTORS, tokens=None), {}, 3, 0).server_tokens is None  # no usage: unknown


def _with(edit: Callable[[dict[str, object]], object]) -> bytes:
    parsed = json.loads(body(VECTORS, b64=False))
    edit(parsed)
    return json.dumps(parsed).encode()


def _item(parsed: dict[str, object], i: int) -> dict[str, object]:
    data = parsed["data"]
    assert isinstance(data, list)
    item = data[i]
    assert isinstance(item, dict)
    return item


@pytest.mark.parametrize(("content", "dim", "says"), [
    (b"<html>502 Bad Gateway</html>", 8, "not an embeddings answer"),
    (b'{"error": "no data"}', 8, "not an embeddings answer"),
    (body(VECTORS[:2]), 8, "2 vectors for 3 inputs"),
    (body(VECTORS, order=[0, 1, 1]), 8, "index 1 missing, out of range or repeated"),
    (_with(lambda p: _item(p, 2).update(index=3)), 8, "index 3 missing, out of range or repeated"),
    (_with(lambda p: _item(p, 0).pop("embedding")), 8, "an item with no embedding"),
    (_with(lambda p: _item(p, 0).update(embedding="not base64!")), 8, "does not decode"),
    (_with(lambda p: _item(p, 1).update(embedding=["x", 1.0])), 8, "not a number"),
    (_with(lambda p: _item(p, 1).update(embedding=[[1.0], [2.0]])), 8, "not a list of numbers"),
    (body(VECTORS), 16, "a vector of 8 dimensions, 16 expected"),
    (_with(lambda p: _item(p, 2).update(embedding=[1.0] * 9)), 0, "9 dimensions, 8 expected"),
    (body([VECTORS[0], np.full(8, np.nan, np.float32), VECTORS[2]]), 8, "non-finite values"),
])
def test_an_unusable_answer_is_a_bad_answer_saying_why(content: bytes, dim: int, says: str) -> None:
    answer = read_answer(content, {"retry-after": "2"}, 3, dim)
    assert answer.outcome is Outcome.BAD_ANSWER and answer.vectors is None and answer.status == 200
    assert answer.message.startswith("unusable answer: ") and says in answer.message, answer.message
    assert answer.retry_after == 2.0  # its headers are still read


def test_retry_after_in_milliseconds_seconds_or_a_date() -> None:
    assert retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5  # the finer one first
    assert retry_after({"retry-after": "3"}) == 3.0
    assert retry_after({"retry-after": "-3"}) == 0.0
    assert retry_after({"retry-after": "soon"}) is None
    assert retry_after({}) is None
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= (retry_after({"retry-after": later}) or 0) <= 31


def test_the_key_is_scrubbed_and_anything_like_one() -> None:
    assert scrub_key("bad key my-secret-key", "my-secret-key") == "bad key ***"
    assert scrub_key("Incorrect key provided: sk-proj-abcd1234", "") == "Incorrect key provided: sk-***"


def test_each_outcome_with_a_count_of_its_own_is_counted() -> None:
    stats = ApiStats()
    for outcome in Outcome:
        stats.count(outcome)
    assert (stats.rate_limited, stats.server_errors, stats.timeouts, stats.connection_errors,
            stats.bad_answers, stats.too_large) == (1, 1, 1, 1, 1, 1)
    assert stats.requests == stats.inputs_embedded == stats.rejected_inputs == 0


# -- the retry policy ------------------------------------------------------------------------------


class _Jitter(random.Random):
    """A jitter fixed at one end of its range (unit tests only)."""

    def __init__(self, end: str) -> None:
        super().__init__()
        self.end = end

    def uniform(self, a: float, b: float) -> float:
        return b if self.end == "high" else a


def test_backoff_doubles_up_to_its_cap_with_jitter_down_to_half() -> None:
    high = RetryPolicy(backoff_base=0.5, backoff_max=3.0, rng=_Jitter("high"))
    assert [high.backoff(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    low = RetryPolicy(backoff_base=0.5, backoff_max=3.0, rng=_Jitter("low"))
    assert [low.backoff(n) for n in range(1, 6)] == [0.25, 0.5, 1.0, 1.5, 1.5]
    jittered = RetryPolicy(backoff_base=1.0, backoff_max=60.0)
    delays = [jittered.backoff(3) for _ in range(200)]
    assert all(2.0 <= d <= 4.0 for d in delays) and len(set(delays)) > 1


@pytest.mark.parametrize("outcome", [Outcome.SERVER_ERROR, Outcome.TIMEOUT, Outcome.CONNECTION_FAILED,
                                     Outcome.BAD_ANSWER])
def test_the_servers_failures_are_retried_max_retries_times(outcome: Outcome) -> None:
    retries = RetryPolicy(max_retries=3, backoff_base=0.5, rng=_Jitter("high")).start()
    assert [retries.after(outcome, None).delay for _ in range(3)] == [0.5, 1.0, 2.0]
    last = retries.after(outcome, None)
    assert last.gives_up and last.note == ""
    assert RetryPolicy(max_retries=0).start().after(outcome, None).gives_up


def test_retry_after_replaces_the_backoff_up_to_backoff_max() -> None:
    policy = RetryPolicy(max_retries=5, backoff_max=60.0, rng=_Jitter("high"))
    retries = policy.start()
    assert retries.after(Outcome.SERVER_ERROR, 7.0).delay == 7.0
    assert retries.after(Outcome.SERVER_ERROR, 100_000.0).delay == 60.0
    assert retries.after(Outcome.SERVER_ERROR, None).delay == 2.0  # the third retry's backoff
    assert policy.honoured(None) is None and policy.honoured(0.2) == 0.2


def test_rate_limits_are_waited_out_without_using_up_retries() -> None:
    retries = RetryPolicy(max_retries=1, max_rate_limit_wait=3.5).start()
    assert [retries.after(Outcome.RATE_LIMITED, 1.0).delay for _ in range(3)] == [1.0, 1.0, 1.0]
    assert retries.after(Outcome.SERVER_ERROR, 0.1).delay == 0.1  # still its one retry
    assert retries.after(Outcome.SERVER_ERROR, 0.1).gives_up
    fourth = retries.after(Outcome.RATE_LIMITED, 1.0)  # 3 s waited: 1 s more is over 3.5 s
    assert fourth.gives_up
    assert fourth.note == "; Retry-After 1 s is beyond the 3.5 s a sync waits for a rate limit"


def test_rate_limits_without_retry_after_back_off_until_the_wait_is_spent() -> None:
    retries = RetryPolicy(backoff_base=1.0, backoff_max=1.0, max_rate_limit_wait=2.5,
                          rng=_Jitter("high")).start()
    assert [retries.after(Outcome.RATE_LIMITED, None).delay for _ in range(2)] == [1.0, 1.0]
    third = retries.after(Outcome.RATE_LIMITED, None)
    assert third.gives_up and third.note == ""


def test_a_retry_after_beyond_the_rate_limit_wait_gives_up_at_once() -> None:
    retries = RetryPolicy(max_rate_limit_wait=3600.0).start()
    first = retries.after(Outcome.RATE_LIMITED, 100_000.0)
    assert first.gives_up and "Retry-After 100000 s is beyond the 3600 s" in first.note


@pytest.mark.parametrize("outcome", [Outcome.OK, Outcome.BAD_INPUT, Outcome.TOO_LARGE, Outcome.REFUSED])
def test_answers_that_are_not_the_servers_trouble_are_not_retried(outcome: Outcome) -> None:
    with pytest.raises(ValueError, match="not sent again"):
        Retries(RetryPolicy()).after(outcome, None)


# -- the sender, against the loopback server -------------------------------------------------------


async def _send(server: EmbeddingServer, texts: list[str], *, once: bool = True, dim: int = 0,
                policy: RetryPolicy | None = None, timeout: float = 10.0,
                key: str = API_KEY) -> tuple[Answer, ApiStats, RateLimiter]:
    stats = ApiStats()
    limiter = RateLimiter(None, None, 4)
    policy = policy or RetryPolicy(backoff_base=0.01)
    sender = Sender(url=server.base_url, key=key, model=MODEL, dimensions=None, timeout=timeout,
                    limiter=limiter, policy=policy, stats=stats, adopt_limits=True,
                    scrub=lambda text: scrub_key(text, key))
    sender.dim = dim
    batch = [Item(i, t, count_tokens(t), i) for i, t in enumerate(texts)]
    try:
        answer = await (sender.send_once(batch) if once else sender.send(batch, policy.start()))
    finally:
        await sender.close()
    return answer, stats, limiter


def send(server: EmbeddingServer, texts: list[str], **options: Any) -> tuple[Answer, ApiStats, RateLimiter]:
    return asyncio.run(_send(server, texts, **options))


def test_the_sender_reads_a_good_answer_and_counts_it(server: EmbeddingServer) -> None:
    texts = ["alpha", "beta", "gamma"]
    answer, stats, limiter = send(server, texts)
    assert answer.outcome is Outcome.OK and answer.vectors is not None
    np.testing.assert_array_equal(answer.vectors, np.stack([fake_vector(t, 64) for t in texts]))
    tokens = sum(count_tokens(t) for t in texts)
    assert (stats.requests, stats.inputs_embedded) == (1, 3)
    assert stats.tokens_embedded == stats.tokens_sent == tokens  # the server's count
    assert limiter.in_flight == 0 and stats.last_answer >= stats.first_send > 0
    assert server.records()[0].encoding_format == "base64"


@pytest.mark.parametrize(("knobs", "texts", "outcome", "status", "counted"), [
    ({"always_status": 503}, ["a"], Outcome.SERVER_ERROR, 503, "server_errors"),
    ({"rate_limit_429_first": 1}, ["a"], Outcome.RATE_LIMITED, 429, "rate_limited"),
    ({"drop_every": 1}, ["a"], Outcome.CONNECTION_FAILED, None, "connection_errors"),
    ({"wrong_count_every": 1}, ["a", "b"], Outcome.BAD_ANSWER, 200, "bad_answers"),
    ({"max_batch": 1}, ["a", "b"], Outcome.TOO_LARGE, 413, "too_large"),
    ({"max_input_tokens": 2}, ["a", "b" * 40], Outcome.INPUT_TOO_LONG, 400, None),
    ({}, ["a", "b POISON"], Outcome.BAD_INPUT, 400, None),
])
def test_the_sender_classifies_each_kind_of_answer(server: EmbeddingServer, knobs: dict[str, object],
                                                   texts: list[str], outcome: Outcome, status: int | None,
                                                   counted: str | None) -> None:
    for name, value in knobs.items():
        setattr(server.behavior, name, value)
    answer, stats, limiter = send(server, texts)
    assert (answer.outcome, answer.status) == (outcome, status), answer.message
    assert answer.vectors is None and stats.requests == 1 and stats.inputs_embedded == 0
    counts = {name: value for name, value in vars(stats).items()
              if name in ("server_errors", "rate_limited", "connection_errors", "bad_answers", "too_large")}
    assert counts == {name: int(name == counted) for name in counts}
    if outcome is Outcome.RATE_LIMITED:  # the limiter is told, and waits for the server's Retry-After
        assert answer.retry_after == 1.0 and limiter.blocked_until > 0


def test_the_sender_names_a_timeout_and_scrubs_the_key(server: EmbeddingServer) -> None:
    server.behavior.hang_every, server.behavior.hang_s = 1, 2.0
    answer, stats, _ = send(server, ["a"], timeout=0.2)
    assert (answer.outcome, answer.message, stats.timeouts) == (Outcome.TIMEOUT, "no answer within 0.2s", 1)
    wrong = "sk-wrong-secret-987654321"
    server.behavior.hang_every = 0
    answer, _, _ = send(server, ["a"], key=wrong)
    assert (answer.outcome, answer.status) == (Outcome.REFUSED, 401)
    assert answer.message.startswith("401 Incorrect API key provided: sk-***.")  # the server's echo, scrubbed
    assert "987654321" not in answer.message


def test_the_sender_retries_as_the_policy_says(server: EmbeddingServer) -> None:
    server.behavior.always_status = 500
    answer, stats, _ = send(server, ["a"], once=False, policy=RetryPolicy(max_retries=2, backoff_base=0.01))
    assert answer.outcome is Outcome.SERVER_ERROR and (stats.requests, stats.retries) == (3, 2)
    assert len(server.records()) == 3


def test_the_sender_waits_out_rate_limits_without_using_retries(server: EmbeddingServer) -> None:
    b = server.behavior
    b.rate_limit_429_first, b.retry_after_s, b.retry_header = 2, 0.05, "ms"
    answer, stats, _ = send(server, ["a"], once=False, policy=RetryPolicy(max_retries=0))
    assert answer.outcome is Outcome.OK and (stats.requests, stats.retries, stats.rate_limited) == (3, 2, 2)


def test_the_sender_gives_up_at_once_on_a_retry_after_beyond_the_wait(server: EmbeddingServer) -> None:
    server.behavior.always_status, server.behavior.always_retry_after = 429, 100
    answer, stats, _ = send(server, ["a"], once=False, policy=RetryPolicy(max_rate_limit_wait=10.0))
    assert answer.outcome is Outcome.RATE_LIMITED and stats.requests == 1 and stats.retries == 0
    assert answer.message.endswith("; Retry-After 100 s is beyond the 10 s a sync waits for a rate limit")
