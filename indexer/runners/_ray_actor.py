"""Inside a Ray worker process: the actor that loads the model once and embeds the claims the Ray runner
(ray_actors.py, _ray_runner.py) sends it, and answers the driver's progress polls while it embeds."""

from __future__ import annotations

import contextlib
import os
import socket
from typing import Any

from ..embedders import ModelInfo
from ..errors import ModelLoadError
from . import EmbedResult
from ._cpus import pin_threads, set_torch_threads
from ._liveness import worker_peak_rss_mb
from .inline import embed_texts

__all__ = ["PROGRESS_GROUP", "EmbedActor"]

PROGRESS_GROUP = "progress"  # the actors' concurrency group for progress polls


class EmbedActor:
    """Runs in a Ray worker process: loads the model once, then embeds one claim per call.

    A model that fails to load does not kill the actor (Ray would restart it again and again): the
    error is kept and reported by `ready()`, and the driver refuses to start."""

    def __init__(self, model: str, batch_size: int, embedder_options: dict[str, object],
                 threads: int) -> None:
        pin_threads(threads)  # to this actor's CPU share, before torch starts its pools
        self.error: str | None = None
        self.embedder: Any = None
        self.batch_size = batch_size
        self.task, self.texts_done = -1, 0  # the claim being embedded and its texts done so far
        try:
            from ..embedders import load_embedder

            self.embedder = load_embedder(model, batch_size=batch_size, **embedder_options)  # type: ignore[arg-type]
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        set_torch_threads(threads)
        if self.embedder is not None:  # pay the first call's one-off costs now, during start-up
            with contextlib.suppress(Exception):
                embed_texts(self.embedder, ["warm-up"])

    def ready(self) -> tuple[ModelInfo | None, str | None, int, str, str]:
        """(model info, load error, pid, host name, Ray node id)."""
        import ray

        info = self.embedder.info if self.embedder is not None else None
        return info, self.error, os.getpid(), socket.gethostname(), ray.get_runtime_context().get_node_id()

    def embed(self, texts: list[str], task: int = -1) -> EmbedResult:
        if self.embedder is None:
            raise ModelLoadError(f"the model could not be loaded in this Ray worker: {self.error}")
        self.task, self.texts_done = task, 0
        return embed_texts(self.embedder, texts, self._batch_done, batch_size=self.batch_size)

    def _batch_done(self, n: int) -> None:
        self.texts_done += n

    def progress(self) -> tuple[int, int, float]:
        """(current claim, its texts embedded so far, this process's peak RSS in MiB); runs in its own
        concurrency group, beside `embed`."""
        return self.task, self.texts_done, worker_peak_rss_mb()
