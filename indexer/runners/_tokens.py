"""Token counting for the API backend, offline only.

`token_counter(model)` picks, in order:

1. tiktoken, for the OpenAI models it knows (text-embedding-3-*, ada-002: cl100k_base), only if tiktoken
   is installed AND its encoding file is already in tiktoken's local cache (TIKTOKEN_CACHE_DIR,
   DATA_GYM_CACHE_DIR, or <tmp>/data-gym-cache). The file is read from that cache and checked against
   the hash tiktoken itself expects; nothing is ever downloaded (tiktoken's own loader would fetch it).
2. A Hugging Face `tokenizer.json` for the model name, from a local directory or the local hub cache
   (self-hosted servers: TEI, Infinity, vLLM serve hub models by name). Never fetched.
3. The estimate: ceil(UTF-8 bytes / 2). Byte-level BPE tokens of natural text average 3-5 bytes
   (English about 4, code about 3, CJK about 2.5), so this over-counts real text, about 2x for English:
   requests are packed below the server's limits and over-long inputs are cut early rather than late.
   It is not a hard bound (a pathological text can take one token per byte); the runner handles the
   rare input the server still finds too long by cutting it further (see openai_api.py). The
   rate limiter does not pay for the over-count: it learns the ratio of the server's reported
   `usage.prompt_tokens` to this estimate and books what the server counts.
"""

from __future__ import annotations

import base64
import hashlib
import math
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Protocol

__all__ = ["BYTES_PER_TOKEN_ESTIMATE", "EstimateCounter", "TokenCounter", "cut_utf8", "token_counter"]

BYTES_PER_TOKEN_ESTIMATE = 2


class TokenCounter(Protocol):
    name: str
    exact: bool

    def count(self, text: str) -> int: ...

    def truncate(self, text: str, limit: int) -> str: ...


def cut_utf8(text: str, max_bytes: int) -> str:
    """The longest prefix of `text` whose UTF-8 encoding has at most `max_bytes` bytes."""
    raw = text.encode("utf-8")
    if len(raw) <= max_bytes:
        return text
    return raw[:max(0, max_bytes)].decode("utf-8", "ignore")


class EstimateCounter:
    """ceil(UTF-8 bytes / 2): see the module docstring."""

    name = "estimate"
    exact = False

    def count(self, text: str) -> int:
        return max(1, math.ceil(len(text.encode("utf-8")) / BYTES_PER_TOKEN_ESTIMATE))

    def truncate(self, text: str, limit: int) -> str:
        return cut_utf8(text, limit * BYTES_PER_TOKEN_ESTIMATE)


class _TiktokenCounter:
    exact = True

    def __init__(self, encoding: Any) -> None:
        self.encoding = encoding
        self.name = f"tiktoken:{encoding.name}"

    def count(self, text: str) -> int:
        return len(self.encoding.encode(text, disallowed_special=()))

    def truncate(self, text: str, limit: int) -> str:
        tokens = self.encoding.encode(text, disallowed_special=())
        keep = limit
        while True:
            # A cut inside a multi-byte character drops the partial character.
            out: str = self.encoding.decode_bytes(tokens[:keep]).decode("utf-8", "ignore")
            if keep <= 0 or self.count(out) <= limit:
                return out
            keep -= 1


class _HFCounter:
    exact = True

    def __init__(self, tokenizer: Any, name: str) -> None:
        self.tokenizer = tokenizer
        self.name = f"hf:{name}"

    def count(self, text: str) -> int:
        return len(self.tokenizer.encode(text).ids)

    def truncate(self, text: str, limit: int) -> str:
        enc = self.tokenizer.encode(text)
        if len(enc.ids) <= limit:
            return text
        ends = [end for (_, end), special in zip(enc.offsets, enc.special_tokens_mask, strict=True)
                if not special]
        keep = limit - (len(enc.ids) - len(ends))
        while keep > 0:
            out = text[:ends[keep - 1]]
            if self.count(out) <= limit:
                return out
            keep -= 1
        return ""


_TIKTOKEN_PATCH = threading.Lock()


class _NotCached(Exception):
    pass


def _tiktoken_cache_file(url: str) -> Path | None:
    """Where tiktoken caches the file at `url` (tiktoken.load.read_file_cached's rule)."""
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        cache_dir = os.environ["TIKTOKEN_CACHE_DIR"]
    elif "DATA_GYM_CACHE_DIR" in os.environ:
        cache_dir = os.environ["DATA_GYM_CACHE_DIR"]
    else:
        cache_dir = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    if not cache_dir:
        return None
    return Path(cache_dir) / hashlib.sha1(url.encode()).hexdigest()


def _cached_bpe(url: str, expected_hash: str | None = None) -> dict[bytes, int]:
    path = _tiktoken_cache_file(url)
    if path is None or not path.is_file():
        raise _NotCached(url)
    data = path.read_bytes()
    if expected_hash and hashlib.sha256(data).hexdigest() != expected_hash:
        raise _NotCached(url)
    pairs = (line.split() for line in data.splitlines() if line)
    return {base64.b64decode(tok): int(rank) for tok, rank in pairs}


def _tiktoken_offline(model: str) -> TokenCounter | None:
    import importlib

    try:  # optional, and untyped: imported by name
        tiktoken: Any = importlib.import_module("tiktoken")
        tiktoken_model: Any = importlib.import_module("tiktoken.model")
        public: Any = importlib.import_module("tiktoken_ext.openai_public")
    except ImportError:
        return None
    try:
        name = tiktoken_model.encoding_name_for_model(model)
        constructor = public.ENCODING_CONSTRUCTORS[name]
        # The constructor fetches its file with load_tiktoken_bpe (which downloads when the cache lacks
        # it); for this one call it reads the local cache only, or gives up.
        with _TIKTOKEN_PATCH:
            original = public.load_tiktoken_bpe
            public.load_tiktoken_bpe = _cached_bpe
            try:
                params = constructor()
            finally:
                public.load_tiktoken_bpe = original
        return _TiktokenCounter(tiktoken.Encoding(**params))
    except Exception:  # unknown model, not cached, a tiktoken of another shape: the estimate serves
        return None


def _hf_offline(model: str) -> TokenCounter | None:
    try:
        from tokenizers import Tokenizer
    except ImportError:
        return None
    path: Path | None = None
    local = Path(model) / "tokenizer.json"
    if local.is_file():
        path = local
    elif model.count("/") == 1:
        try:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(model, "tokenizer.json")
            path = Path(found) if isinstance(found, str) else None
        except Exception:
            path = None
    if path is None:
        return None
    try:
        tokenizer = Tokenizer.from_file(str(path))
        tokenizer.no_truncation()
        tokenizer.no_padding()
    except Exception:
        return None
    return _HFCounter(tokenizer, model)


def token_counter(model: str, prefer: str = "auto") -> TokenCounter:
    """The best offline counter for `model`; `prefer="estimate"` forces the estimate."""
    if prefer != "estimate":
        for find in (_tiktoken_offline, _hf_offline):
            counter = find(model)
            if counter is not None:
                return counter
    return EstimateCounter()
