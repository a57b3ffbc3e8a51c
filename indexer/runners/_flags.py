"""The options a backend gets from `indexer sync`'s flags, so that the command stays a thin shell, and
a backend's refusal of those it does not take."""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import IndexerError


def backend_options(backend: str, flags: Mapping[str, object], batch_size: int | None = None,
                    batch_tokens: int | None = None) -> dict[str, object]:
    """Only the flags the user gave reach the backend, which refuses those it does not take: None and
    False are flags not given (`is`: 0 and 0.0 are values given, like --max-retries 0). The openai and
    gpus backends pack batches by tokens themselves: --batch-size (`batch_size`, None when not given)
    caps the texts of one batch, and on gpus --batch-tokens sets the budget (else the backend sizes it
    on CUDA)."""
    options = {k: v for k, v in flags.items() if v is not None and v is not False}
    if backend == "openai" and batch_size is not None:
        options["max_batch_inputs"] = batch_size
    if backend == "gpus" and batch_size is not None:
        options["max_batch_texts"] = batch_size
    if backend == "gpus" and batch_tokens is not None:
        options["batch_tokens"] = batch_tokens
    return options


def check_options(backend: str, options: Mapping[str, object], takes: str) -> None:
    """Refuse the options (from flags) that `backend` does not take, naming those it takes."""
    if options:
        flags = ", ".join("--" + name.replace("_", "-") for name in sorted(options))
        raise IndexerError(f"backend {backend} does not take {flags}; it takes {takes}")
