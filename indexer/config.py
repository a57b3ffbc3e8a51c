"""The embedding configuration an index is bound to, and how it is stored in index.toml."""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import xxhash

from .errors import ConfigMismatchError, ManifestError

__all__ = ["DTYPES", "EmbeddingConfig", "read_config", "write_config"]

DTYPES = ("float32", "float16")


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

    def fingerprint(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return xxhash.xxh3_128_hexdigest(blob)

    def differences(self, other: EmbeddingConfig) -> list[str]:
        """Human-readable 'field: ours -> theirs' for every field that differs."""
        out = []
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if a != b:
                out.append(f"{f.name}: index has {a!r}, this sync asked for {b!r}")
        return out

    def require_same(self, requested: EmbeddingConfig, index_dir: Path) -> None:
        diffs = self.differences(requested)
        if diffs:
            raise ConfigMismatchError(
                f"index {index_dir} is bound to another embedding configuration; nothing was changed.\n  "
                + "\n  ".join(diffs)
                + "\nSync with the index's settings, or build a new index in another --index directory."
            )


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
        return EmbeddingConfig(**{f.name: data[f.name] for f in fields(EmbeddingConfig)})
    except (OSError, KeyError, TypeError, tomllib.TOMLDecodeError) as exc:
        raise ManifestError(
            f"{path} is unreadable ({exc}); restore it from a backup or rebuild the index"
        ) from exc
