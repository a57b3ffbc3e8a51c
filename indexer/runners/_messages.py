"""What passes between the process pool (processes.py) and its worker processes (_worker_main.py).

Each is a frozen dataclass that multiprocessing pickles through the pipes. The driver gives a worker
its `WorkerSpec` when it starts the process, then sends it `Claim`s, and `Stop` when it is idle and no
longer needed. The worker answers:

    once, after loading the model          Ready, or LoadFailed (and exits)
    per claim, in the order they came      BatchFinished for each forward batch, then Embedded or
                                           ClaimFailed

Times (`started`) are the worker's time.monotonic(), which is system-wide: the driver compares them
with its own readings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..embedders import ModelInfo

DEFAULT_EMBEDDER_FACTORY = "indexer.embedders:load_embedder"
__all__ = [
    "DEFAULT_EMBEDDER_FACTORY",
    "BatchFinished",
    "Claim",
    "ClaimFailed",
    "Embedded",
    "Limits",
    "LoadFailed",
    "Ready",
    "Stop",
    "WorkerMessage",
    "WorkerSpec",
]

@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs to load its model; pickled to the spawned process."""

    model: str
    batch_size: int
    embedder_options: dict[str, object]
    threads: int
    device: str | None = None  # None: load_embedder's default (the CPU); else passed as device=
    half: bool = False  # cast the model to fp16 after loading (CUDA devices)
    adaptive: bool = False  # halve the batch on out-of-memory and keep it halved (gpus)
    batch_tokens: int | None = None  # cap on padded tokens per forward pass (see embedders)
    tokenizer_threads: int = 1  # threads the tokenizer may use (it runs beside the model on a GPU)
    # "module:function" the worker loads its embedder with, called as load_embedder is; the worker
    # imports it, so its module must be importable there (the tests' wraps the model to fail on demand)
    embedder_factory: str = DEFAULT_EMBEDDER_FACTORY


@dataclass(frozen=True)
class Limits:
    """A worker's batch limits, as out-of-memory has left them (the gpus runner halves them)."""

    batch_size: int
    batch_tokens: int | None


# -- driver -> worker

@dataclass(frozen=True)
class Claim:
    """Embed these texts; `task` names the claim in the answers."""

    task: int
    texts: list[str]


@dataclass(frozen=True)
class Stop:
    """Exit (sent to an idle worker only)."""


# -- worker -> driver

@dataclass(frozen=True)
class Ready:
    """The model is loaded: the worker takes claims from now on."""

    pid: int
    info: ModelInfo
    limits: Limits
    peak_rss_mb: float


@dataclass(frozen=True)
class LoadFailed:
    """The model could not be loaded; the worker has exited."""

    reason: str


@dataclass(frozen=True)
class BatchFinished:
    """A forward batch of claim `task` finished, embedding `texts` texts."""

    task: int
    texts: int


@dataclass(frozen=True, eq=False)  # an array's == is elementwise: no truth value to compare by
class Embedded:
    """Claim `task` is done: its float32 vectors, row by row, and the failures by position."""

    task: int
    vectors: np.ndarray
    failures: dict[int, str]
    limits: Limits
    peak_rss_mb: float
    started: float  # when the worker took the claim up


@dataclass(frozen=True)
class ClaimFailed:
    """Claim `task` failed as a whole (an error the embedding code did not catch)."""

    task: int
    reason: str
    started: float  # when the worker took the claim up


WorkerMessage = Ready | LoadFailed | BatchFinished | Embedded | ClaimFailed
