"""Out-of-memory on demand inside the gpus runner's worker processes, for tests.

`FACTORY` names `load_with_injected_oom` as a "module:function" path for
`runners.gpus.make(embedder_factory=...)`: each worker loads its embedder through it, and every
forward pass over more than OOM_ABOVE texts raises torch.cuda.OutOfMemoryError, as a GPU short of
memory would. The spawned workers import this module by the name the test imported it under (they get
the test process's sys.path, tests/ included).
"""

from __future__ import annotations

from typing import Any

from indexer.embedders import Embedder, load_embedder

OOM_ABOVE = 4


class InjectedOom:
    """Wraps a sentence-transformers model: a forward pass over more than `limit` texts raises torch's
    out-of-memory error. Everything else is the model's."""

    def __init__(self, model: Any, limit: int) -> None:
        self.model, self.limit = model, limit

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def __call__(self, features: dict[str, Any]) -> Any:
        rows = len(features["input_ids"])
        if rows > self.limit:
            import torch

            raise torch.cuda.OutOfMemoryError(
                f"CUDA out of memory (injected for tests: {rows} texts > {self.limit})")
        return self.model(features)


def load_with_injected_oom(model: str, **options: Any) -> Embedder:
    """load_embedder, with the model wrapped in InjectedOom(OOM_ABOVE)."""
    embedder = load_embedder(model, **options)
    inner = getattr(embedder, "model", None)
    if inner is not None:
        embedder.model = InjectedOom(inner, OOM_ABOVE)  # type: ignore[attr-defined]
    return embedder


FACTORY = f"{__name__}:{load_with_injected_oom.__name__}"
