"""Runners: where the embedding of a claim's texts happens.

The driver (sync.py) owns the manifest and the store. It leases claims, hands each claim's texts to the
runner with `submit`, and when the future resolves it writes the chunk and commits, fenced. A runner
therefore never touches SQLite or Zarr: the same claim/write/commit core serves every backend.

    inline      the model in this process (default)
    processes   N spawned worker processes, T torch threads each (runners/processes.py)
    gpus        one worker process per device, fp16 on CUDA, batch halved on out-of-memory (gpus.py)
    ray         Ray actors, on this machine or a cluster (ray_actors.py)
    openai      an OpenAI-compatible embeddings API (openai_api.py)
    auto        gpus where torch sees CUDA, else inline on <= 2 CPUs, else processes (auto.py)
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import Protocol

import numpy as np

from ..embedders import ModelInfo
from ._liveness import HangRule

__all__ = ["BackendFailure", "BatchDone", "EmbedResult", "Runner", "WorkerHung", "WorkerLost",
           "make_runner"]

# (vectors of shape (n, dim), float32; failures by position with their reasons)
EmbedResult = tuple[np.ndarray, dict[int, str]]

# Called with the number of texts a finished forward batch (or API request) of a claim embedded. The
# driver uses it for progress within a claim, for the ETA and as the worker's sign of life; runners call
# it from their own threads, so it must be thread-safe and quick.
BatchDone = Callable[[int], None]


class BackendFailure(str):
    """A failure reason that is the backend's fault, not the document's: an outage, a timeout, a
    dropped connection, a rate limit, an unusable answer. The document goes back to pending without
    using up an attempt (only a failure that is the document's own, like a 400 on that input, counts
    towards `Settings.retry_attempts`). A plain `str` everywhere else, so it pickles across processes."""


class WorkerLost(Exception):
    """The worker that held a claim died or was lost; the claim is released and embedded again.

    `death` tells deaths apart: the claims one death took share it, so that the driver counts the
    worker once however many claims it held (None: count each claim)."""

    def __init__(self, message: str, death: object = None) -> None:
        super().__init__(message)
        self.death = death


class WorkerHung(WorkerLost):
    """The worker finished no batch for longer than the hang deadline: it was killed and replaced."""


class Runner(Protocol):
    """What the driver asks of a backend; every runner has all of it (one with nothing to report or
    nothing that can hang says so with an empty dict and a `watch_for_hangs` that does nothing)."""

    @property
    def info(self) -> ModelInfo:
        """The model the vectors come from (what the index's configuration is checked against)."""
        ...

    @property
    def capacity(self) -> int:
        """How many claims the driver keeps in flight: enough to keep every worker busy. Read again
        and again: a runner that loses workers for good lowers it."""
        ...

    def submit(self, texts: list[str], on_batch: BatchDone | None = None) -> Future[EmbedResult]: ...

    def watch_for_hangs(self, rule: HangRule) -> None:
        """Take a worker for hung by `rule`; the driver sets it from its Settings before the first
        claim."""
        ...

    def stats(self) -> dict[str, object]:
        """For the sync summary's backend_stats, read once, just before `close`: its "warnings" (a list)
        join the summary's warnings, its "peak_rss_mb_per_worker" (a list) sum to the workers' peak."""
        ...

    def close(self) -> None: ...


BACKENDS = ("inline", "processes", "gpus", "ray", "openai", "auto")


def make_runner(backend: str, model: str, *, batch_size: int,
                embedder_options: dict[str, object] | None = None, **options: object) -> Runner:
    """The runner for a backend name. Its workers load `model` with `load_embedder(model,
    batch_size=..., **embedder_options)`; `options` are the backend's own (workers, devices, ...).

    Each backend lives in `runners/<name>.py` and exposes `make(model, batch_size, embedder_options,
    **options) -> Runner`; it is imported only when chosen, so optional dependencies stay optional.
    """
    import importlib

    from ..errors import IndexerError

    if backend not in BACKENDS:
        raise IndexerError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    module_name = {"openai": "openai_api", "ray": "ray_actors"}.get(backend, backend)
    try:
        module = importlib.import_module(f"{__name__}.{module_name}")
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith(f"{__name__}.{module_name}"):
            raise IndexerError(f"backend {backend!r} is not available in this version of indexer") from exc
        raise
    runner: Runner = module.make(model, batch_size, dict(embedder_options or {}), **options)
    return runner
