"""The fake model: a deterministic stand-in for pipeline tests and bookkeeping benchmarks.

Each text gets a unit vector drawn from a random generator seeded with the XXH3-64 hash of its UTF-8
bytes: the same text always gets the same vector, bit for bit, in any process. It does no model work,
and says so in its configuration (revision "fake"). Never use its vectors for search.
"""

from __future__ import annotations

import numpy as np
import xxhash

from . import ModelInfo


class FakeEmbedder:
    """A `prompt` is prepended to every text before it is hashed, as a real model would see it."""

    def __init__(self, dim: int, prompt: str = "") -> None:
        self.info = ModelInfo(model=f"fake:{dim}", revision="fake", dim=dim, normalize=True,
                              max_seq_length=0, prompt=prompt)

    def embed(self, texts: list[str]) -> np.ndarray:
        if self.info.prompt:
            texts = [self.info.prompt + t for t in texts]
        out = np.empty((len(texts), self.info.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            seed = xxhash.xxh3_64_intdigest(text.encode("utf-8"))
            v = np.random.default_rng(seed).standard_normal(self.info.dim)
            out[i] = v / np.linalg.norm(v)
        return out
