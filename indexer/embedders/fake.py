"""The fake model: a deterministic stand-in for pipeline tests and bookkeeping benchmarks.

Each text gets a unit vector derived from the XXH3-64 hash of its UTF-8 bytes: the same text always gets
the same vector, bit for bit, in any process and in any batch. A batch costs one vectorized computation
(counter-based SplitMix64 finalizer over the hash, one byte a component, normalized), so the model adds
next to nothing to what a benchmark with it measures: the bookkeeping. It does no model work and says
so in its configuration (revision "fake-3"; "fake-2" drew each component from 32 bits, "fake" was a
per-text generator: their vectors differ).
Never use its vectors for search.
"""

from __future__ import annotations

import numpy as np
import xxhash

from . import ModelInfo

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_SLICE = 512


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer, elementwise on uint64 (wrapping arithmetic)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    mixed: np.ndarray = x ^ (x >> np.uint64(31))
    return mixed


class FakeEmbedder:
    """A `prompt` is prepended to every text before it is hashed, as a real model would see it."""

    def __init__(self, dim: int, prompt: str = "") -> None:
        self.info = ModelInfo(model=f"fake:{dim}", revision="fake-3", dim=dim, normalize=True,
                              max_seq_length=0, prompt=prompt)
        self._counters = np.arange(1, (dim + 7) // 8 + 1, dtype=np.uint64) * _GOLDEN  # 8 bytes a word

    def embed(self, texts: list[str]) -> np.ndarray:
        prompt = self.info.prompt
        seeds = np.fromiter((xxhash.xxh3_64_intdigest((prompt + t).encode("utf-8")) for t in texts),
                            np.uint64, len(texts))
        out = np.empty((len(texts), self.info.dim), np.float32)
        # Slices of _SLICE texts: the temporaries of one computation over a whole claim group (tens of
        # thousands of texts) outgrow the CPU caches and cost several times more per text.
        for start in range(0, len(texts), _SLICE):
            self._vectors(seeds[start:start + _SLICE], out[start:start + _SLICE])
        return out

    def _vectors(self, seeds: np.ndarray, out: np.ndarray) -> None:
        with np.errstate(over="ignore"):
            words = _splitmix64(seeds[:, None] + self._counters[None, :])
        # each component odd, so never all zero (dim 1); 128 levels, so that two texts' scores against
        # a third hardly ever tie (one bit a component tied often). Little-endian explicitly, so that
        # the vectors are the same on any machine.
        words |= np.uint64(0x0101010101010101)
        np.copyto(out, words.astype("<u8").view(np.int8)[:, :self.info.dim], casting="unsafe")
        out /= np.sqrt(np.einsum("ij,ij->i", out, out))[:, None]
