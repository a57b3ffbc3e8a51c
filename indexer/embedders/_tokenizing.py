"""A call's texts tokenized once, as the model's `preprocess` tokenizes them: `Tokenized` (the features,
token counts and the order by them, and the rows of a batch), the fast tokenizer called directly where
that gives exactly `preprocess`'s features, and a prompt's token length."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Tokenized:
    """A call's texts as the model's `preprocess` gives them, every text padded to the longest."""

    features: dict[str, Any]
    lengths: np.ndarray  # tokens per text
    order: np.ndarray  # positions sorted by token count (stable)
    left_padded: bool = False

    def batch(self, idx: np.ndarray) -> dict[str, Any]:
        """The features `preprocess` gives for the texts at `idx` alone: their rows, cut to their
        longest text (what padding=True pads a batch to)."""
        import torch

        n = len(self.lengths)
        full = int(self.features["attention_mask"].shape[1])
        width = int(self.lengths[idx].max())
        rows = torch.from_numpy(idx)
        out: dict[str, Any] = {}
        for key, value in self.features.items():
            if isinstance(value, torch.Tensor) and value.ndim >= 1 and value.shape[0] == n:
                value = value[rows]
                if value.ndim >= 2 and value.shape[1] == full:
                    value = value[:, full - width:] if self.left_padded else value[:, :width]
            out[key] = value
        return out


# Texts that tell whether calling the Rust tokenizer directly gives `preprocess`'s features: spaces at
# the ends, case, accents, CJK, code, and one past the model's maximum length.
_PROBES = ["  Leading and trailing spaces  ", "UPPER lower MiXeD", "déjà vu naïve café 東京 ✓",
           "def f(x):\n    return x ** 2  # code", "", "word " * 600]


class _DirectTokenizer:
    """The model's fast (Rust) tokenizer called directly, with padding done in numpy.

    `preprocess` goes through transformers' Python layer, which pads lists of Python ints and copies
    them into tensors: measured 2,400-3,100 texts/s against ~64,000 for the Rust call itself on a 16-core GPU
    host (bench/RESULTS.md). Used only when, on probe texts, it gives exactly `preprocess`'s features
    (see `direct_tokenizer`); otherwise `preprocess` is used as it is.
    """

    def __init__(self, model: Any) -> None:
        from tokenizers import Tokenizer

        hf = model.tokenizer
        # A copy: the shared backend tokenizer keeps padding/truncation state between calls.
        self.backend = Tokenizer.from_str(hf.backend_tokenizer.to_str())
        self.backend.no_padding()
        self.backend.enable_truncation(max_length=int(model.max_seq_length))
        self.pad_id = int(hf.pad_token_id or 0)
        sample = model.preprocess(["x"])
        self.with_types = "token_type_ids" in sample
        self.extras = {k: v for k, v in sample.items()
                       if k not in ("input_ids", "token_type_ids", "attention_mask")}

    def __call__(self, texts: list[str]) -> dict[str, Any]:
        import torch

        encodings = self.backend.encode_batch(texts)
        lengths = [len(e) for e in encodings]
        shape = (len(texts), max(lengths))
        ids = np.full(shape, self.pad_id, dtype=np.int64)
        mask = np.zeros(shape, dtype=np.int64)
        types = np.zeros(shape, dtype=np.int64)
        for i, (e, n) in enumerate(zip(encodings, lengths, strict=True)):
            ids[i, :n] = e.ids
            mask[i, :n] = 1
            if self.with_types:
                types[i, :n] = e.type_ids
        out = {"input_ids": torch.from_numpy(ids)}
        if self.with_types:
            out["token_type_ids"] = torch.from_numpy(types)
        out["attention_mask"] = torch.from_numpy(mask)
        return {**out, **self.extras}


def direct_tokenizer(model: Any) -> _DirectTokenizer | None:
    """A _DirectTokenizer for `model` if it gives exactly what `preprocess` gives on the probe texts
    (one call with all of them: the same padding too), else None."""
    import torch

    preprocess = getattr(model, "preprocess", None)
    if preprocess is None or not hasattr(getattr(model, "tokenizer", None), "backend_tokenizer"):
        return None
    try:
        direct = _DirectTokenizer(model)
        ours, theirs = direct(_PROBES), preprocess(_PROBES)
    except Exception:
        return None
    same = ours.keys() == theirs.keys() and all(
        torch.equal(v, theirs[k]) if isinstance(v, torch.Tensor) else v == theirs[k] for k, v in ours.items())
    return direct if same else None


def prompt_token_length(model: Any, prompt: str) -> int | None:
    """The prompt's length in tokens without a trailing special token, as sentence-transformers'
    Transformer module measures it (`_get_prompt_length`) for `encode(text, prompt=...)`."""
    prepare = getattr(model, "preprocess", None) or model.tokenize
    ids = prepare([prompt]).get("input_ids")
    if ids is None:
        return None
    length = int(ids.shape[-1])
    special = getattr(getattr(model, "tokenizer", None), "all_special_ids", None) or []
    if int(ids[..., -1].item()) in special:
        length -= 1
    return length
