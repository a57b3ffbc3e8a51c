"""The openai backend's layers, each on its own: the packing.
The whole backend is tested through syncs in test_openai_backend.py and test_openai_outages.py.
"""

from __future__ import annotations

import pytest

from indexer.runners._openai_packing import MAX_CUTS, Item, Packer, split
from indexer.runners._openai_stats import ApiStats
from indexer.runners._ratelimit import RateLimiter
from indexer.runners._tokens import EstimateCounter

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
