"""Packing a claim's texts into API requests, and what the server's refusals teach the packing.

Each input is counted (or estimated) once and truncated to the per-input limit, or failed unsent.
Requests respect every cap at once: inputs per request, tokens per request, and the token bucket's
share. A refusal for size lowers the caps for the rest of the run; a refusal of one input splits its
request around it; an input the server still finds too long is cut further.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import xxhash

from ._openai_stats import ApiStats
from ._ratelimit import RateLimiter
from ._tokens import TokenCounter, cut_utf8

__all__ = ["Item", "Packer", "split"]

MAX_CUTS = 4  # cuts of one input after the server found it too long


@dataclass
class Item:
    pos: int  # position in the claim
    text: str  # as sent (perhaps truncated)
    tokens: int  # counted or estimated
    key: int  # XXH3-64 of the text as the claim gave it
    truncated: bool = False
    cuts: int = 0  # cuts after the server found it too long


class Packer:
    """Turns a claim's texts into requests within the caps, and lowers the caps the server teaches."""

    def __init__(self, counter: TokenCounter, limiter: RateLimiter, stats: ApiStats, *, max_inputs: int,
                 max_tokens: int, max_input_tokens: int, truncate: bool) -> None:
        self.counter = counter
        self.limiter = limiter
        self.stats = stats
        self.max_inputs = max_inputs  # per request; lowered by what the server refuses
        self.max_tokens = max_tokens  # per request, likewise
        self.max_input_tokens = max_input_tokens
        self.truncate = truncate
        self.rejected: dict[int, str] = {}  # texts the server refused in this run, by key: not sent again

    def prepare(self, texts: list[str], failures: dict[int, str]) -> list[Item]:
        """The inputs to send; a text over the per-input limit is truncated (or failed, without
        truncation), and a text the server refused before is failed again with its reason."""
        items = []
        limit = self.max_input_tokens
        for pos, text in enumerate(texts):
            key = self.key_of(text)
            if key in self.rejected:
                failures[pos] = self.rejected[key]
                continue
            tokens = self.counter.count(text)
            if tokens > limit:
                how = "" if self.counter.exact else " by estimate"
                if not self.truncate:
                    self.stats.too_long_failed += 1
                    failures[pos] = (f"input is {tokens} tokens{how}, over the model's limit of {limit}; "
                                     "not sent (--no-truncate)")
                    continue
                text = self.counter.truncate(text, limit)
                tokens = self.counter.count(text)
                self.stats.truncated += 1
                items.append(Item(pos, text, tokens, key, truncated=True))
                continue
            items.append(Item(pos, text, tokens, key))
        return items

    @staticmethod
    def key_of(text: str) -> int:
        """What a text is remembered by (the claim's text, before any truncation)."""
        return xxhash.xxh3_64_intdigest(text.encode("utf-8", "surrogatepass"))

    def token_cap(self) -> int:
        """Tokens per request, in the counter's units: the hard caps, and the token bucket's share."""
        bucket = self.limiter.max_request_tokens() / self.limiter.ratio
        return max(1, int(min(self.max_tokens, bucket)))

    def fits(self, batch: list[Item]) -> bool:
        """Whether one request may carry `batch` under the caps as they are now."""
        return len(batch) <= self.max_inputs and sum(it.tokens for it in batch) <= self.token_cap()

    def pack(self, items: list[Item]) -> list[list[Item]]:
        """Requests within every cap, of about equal token counts."""
        if not items:
            return []
        max_tokens, max_inputs = self.token_cap(), self.max_inputs
        total = sum(it.tokens for it in items)
        k = max(1, math.ceil(total / max_tokens), math.ceil(len(items) / max_inputs))
        target = total / k
        batches: list[list[Item]] = []
        batch: list[Item] = []
        tokens = 0
        for it in items:
            if batch and (len(batch) >= max_inputs or tokens + it.tokens > max_tokens):
                batches.append(batch)
                batch, tokens = [], 0
            batch.append(it)
            tokens += it.tokens
            if tokens >= target:
                batches.append(batch)
                batch, tokens = [], 0
        if batch:
            batches.append(batch)
        return batches

    def shrink(self, batch: list[Item], message: str) -> None:
        """Lower the caps below the refused `batch`: to the number the message names, else to half."""
        n = len(batch)
        estimate = sum(it.tokens for it in batch)
        m = re.search(r"maximum allowed batch size (\d+)|max(?:imum)?[^0-9]{0,30}?(\d+)\s*"
                      r"(?:inputs|items|texts|documents)", message, re.I)
        t = re.search(r"requested (\d+) tokens,? max(?:imum)? (\d+)", message, re.I)
        if m:
            self.max_inputs = max(1, min(self.max_inputs, int(m.group(1) or m.group(2)), n - 1))
        elif t and int(t.group(1)) > 0:
            allowed = int(estimate * int(t.group(2)) / int(t.group(1)) * 0.95)
            self.max_tokens = max(1, min(self.max_tokens, allowed, estimate - 1))
        else:
            self.max_inputs = max(1, min(self.max_inputs, n // 2))
            self.max_tokens = max(1, min(self.max_tokens, estimate // 2))

    def cut_further(self, item: Item, message: str) -> bool:
        """An input the server finds too long although it was truncated by estimate: cut it by the
        server's own counts when its message has them (else to 3/4), a few times at most. False: the
        input is not to be cut (without truncation, or cut enough already)."""
        if not self.truncate or item.cuts >= MAX_CUTS:
            return False
        m = re.search(r"maximum context length is (\d+) tokens.*?requested (\d+) tokens", message, re.I)
        factor = 0.75
        if m and int(m.group(2)) > 0:
            factor = min(0.95, 0.95 * int(m.group(1)) / int(m.group(2)))
        if not item.truncated:
            self.stats.truncated += 1
            item.truncated = True
        item.text = cut_utf8(item.text, int(len(item.text.encode("utf-8")) * factor))
        item.tokens = self.counter.count(item.text)
        item.cuts += 1
        return bool(item.text)


def split(batch: list[Item], message: str) -> list[list[Item]]:
    """Split a refused request: around the input the message names as input[i], else in halves."""
    m = re.search(r"input\W{0,3}\[(\d+)\]", message)
    if m and int(m.group(1)) < len(batch):
        i = int(m.group(1))
        return [part for part in (batch[:i], batch[i:i + 1], batch[i + 1:]) if part]
    half = len(batch) // 2
    return [batch[:half], batch[half:]]
