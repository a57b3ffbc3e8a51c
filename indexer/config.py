"""The embedding configuration an index is bound to, and how it is stored in index.toml."""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import xxhash

from .errors import ConfigMismatchError, ManifestError

__all__ = ["DTYPES", "RUNTIMES", "EmbeddingConfig", "difference_line", "read_config", "write_config"]

DTYPES = ("float32", "float16")
# "torch": the model's own runtime (sentence-transformers on torch; the fake and API models' only one).
# "onnx": ONNX Runtime, fp32, the same vectors as torch to cosine >= 0.9999.
# "onnx-int8": ONNX Runtime with dynamically quantized int8 weights: other vectors (docs/RUNTIMES.md).
RUNTIMES = ("torch", "onnx", "onnx-int8")


@dataclass(frozen=True)
class EmbeddingConfig:
    """Everything that decides which vector a text gets. Two syncs with different configs disagree."""

    model: str
    revision: str  # weights hash, or "fake" for the fake model
    dim: int
    dtype: str
    normalize: bool
    max_seq_length: int
    prompt: str = ""
    # Fields added later have defaults that mean what an index.toml without them meant, so that an
    # older index still reads and still matches a default sync.
    runtime: str = "torch"
    # Matryoshka-style truncation: the first `truncate_dim` dims of the model's vector, L2-renormalized
    # (then dim == truncate_dim). 0 means no truncation: TOML has no null, and 0 is never a valid D.
    truncate_dim: int = 0
    # The prompt a query gets before it is embedded (`prompt` is the documents'). It changes no stored
    # vector, but searching with another one than the index was built for gives worse results silently.
    query_prompt: str = ""
    # How the embedded text is composed from a record's fields ("{title}: {text}"); "" means the text
    # field alone (sources/_template.py).
    template: str = ""
    # Long documents split into chunks of at most `chunk_tokens` tokens (0: the model's window less its
    # special tokens), each embedded; False (an index from before chunking, or --no-chunking): one
    # vector a document, its text cut at the window. `chunk_overlap`: tokens of the text before a chunk
    # repeated at its start.
    chunking: bool = False
    chunk_tokens: int = 0
    chunk_overlap: int = 0

    def fingerprint(self) -> str:
        # Later fields enter the hash only when they differ from their defaults, so an old config's
        # fingerprint stays what it was.
        data = asdict(self)
        for name, default in _LATER_DEFAULTS.items():
            if data[name] == default:
                del data[name]
        blob = json.dumps(data, sort_keys=True).encode()
        return xxhash.xxh3_128_hexdigest(blob)

    def differences(self, other: EmbeddingConfig) -> list[str]:
        """Human-readable 'field: ours -> theirs' for every field that differs."""
        out = []
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if a != b:
                out.append(difference_line(f.name, a, b))
        return out

    def require_same(self, requested: EmbeddingConfig, index_dir: Path) -> None:
        diffs = self.differences(requested)
        if diffs:
            raise ConfigMismatchError(
                f"index {index_dir} is bound to another embedding configuration; nothing was changed.\n  "
                + "\n  ".join(diffs)
                + "\nSync with the index's settings, or build a new index in another --index directory."
            )


_LATER_DEFAULTS: dict[str, Any] = {"runtime": "torch", "truncate_dim": 0, "query_prompt": "",
                                   "template": "", "chunking": False, "chunk_tokens": 0, "chunk_overlap": 0}
_WHY = {
    "runtime": " (these runtimes give different vectors)",
    "truncate_dim": " (0 means none; vectors truncated to another dimension are different vectors)",
    "prompt": " (the documents' prompt changes every vector)",
    "query_prompt": " (queries must be embedded as the index was meant to be searched)",
    "template": " (the template decides which text each document's vector is of)",
    "chunking": " (--no-chunking: one vector a document, cut at the model's window; chunked documents "
                "have other vectors)",
    "chunk_tokens": " (0 means the model's window; other chunks have other vectors)",
    "chunk_overlap": " (other overlaps make other chunks)",
}


def difference_line(name: str, ours: object, theirs: object) -> str:
    """One line of a mismatch message: 'field: index has X, this sync asked for Y' (and why it matters)."""
    return f"{name}: index has {ours!r}, this sync asked for {theirs!r}" + _WHY.get(name, "")


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def write_config(path: Path, config: EmbeddingConfig) -> None:
    lines = ["# The embedding configuration this index is bound to. Do not edit.", "[embedding]"]
    lines += [f"{f.name} = {_toml_value(getattr(config, f.name))}" for f in fields(config)]
    lines.append(f'fingerprint = "{config.fingerprint()}"')
    tmp = path.with_suffix(".toml.partial")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(path)


def read_config(path: Path) -> EmbeddingConfig:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))["embedding"]
        # A key added after the index was written is absent: its default is what the index meant.
        values: dict[str, Any] = {f.name: data[f.name] if f.name in data or f.name not in _LATER_DEFAULTS
                                  else _LATER_DEFAULTS[f.name] for f in fields(EmbeddingConfig)}
        return EmbeddingConfig(**values)
    except (OSError, KeyError, TypeError, tomllib.TOMLDecodeError) as exc:
        raise ManifestError(
            f"{path} is unreadable ({exc}); restore it from a backup or rebuild the index"
        ) from exc
