"""Inside a worker process of the process pool (processes.py, gpus.py): `run` is the process's target.

The worker is spawned, never forked (a forked copy of a process that has started torch, SQLite or
threads is unsafe). It pins its math libraries to its share of the CPUs before the model is loaded
(_cpus.py), loads the model once, and then embeds the claims the driver sends, in order, answering
with the messages of _messages.py. Only texts come in and only float32 vectors and per-document
failures go out (`runners.inline.embed_texts` runs here); the manifest and the store stay with the
driver.

A thread receives the next claim while the current one is embedded and tokenizes it ahead (the Rust
tokenizer releases the GIL), so the model does not wait for the pipe or the CPU between claims when
the driver sends a worker two (the gpus runner does).

The worker ignores SIGINT, SIGTERM and SIGHUP (a terminal's Ctrl-C reaches the whole process group;
stopping is the driver's to handle) and dies with the driver (PR_SET_PDEATHSIG on Linux; elsewhere at
its next read of the closed pipe).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from ..embedders import Embedder, TokenizingEmbedder
from ..errors import IndexerError
from . import BatchDone, EmbedResult
from ._cpus import pin_threads, set_torch_threads
from ._liveness import worker_peak_rss_mb
from ._messages import (
    BatchFinished,
    Claim,
    ClaimFailed,
    Embedded,
    Limits,
    LoadFailed,
    Ready,
    Stop,
    WorkerSpec,
)

__all__ = ["embedder_factory", "run"]


def _without_cudnn_attention() -> None:
    """Turn off torch's cuDNN attention kernels in this (GPU worker) process. cuDNN builds an execution
    plan for every new input shape, and token-budget batches make nearly every batch a new shape: the
    first pass over new shapes ran several times slower with cuDNN attention than without it, though
    the same shapes again ran a little faster with it (bench/RESULTS.md, "gpu"). torch then uses its
    flash or memory-efficient kernels, which need no plan."""
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch.backends.cuda, "enable_cudnn_sdp"):
        torch.backends.cuda.enable_cudnn_sdp(False)


def embedder_factory(path: str) -> Callable[..., Embedder]:
    """The function a "module:function" path names (WorkerSpec.embedder_factory), imported."""
    module, _, name = path.partition(":")
    if not module or not name or ":" in name:
        raise IndexerError(f"embedder factory {path!r}: expected 'module:function'")
    factory: Callable[..., Embedder] = getattr(importlib.import_module(module), name)
    return factory


class WorkerModel:
    """The model as a worker holds it, with the batch limits it has settled on."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        options = dict(spec.embedder_options)
        if spec.device is not None:
            options["device"] = spec.device
        if spec.batch_tokens is not None:
            options["batch_tokens"] = spec.batch_tokens
        embedder = embedder_factory(spec.embedder_factory)(spec.model, batch_size=spec.batch_size, **options)
        model: Any = getattr(embedder, "model", None)
        if spec.device is not None and spec.device.startswith("cuda"):
            _without_cudnn_attention()
            if spec.half and hasattr(model, "half"):
                model.half()
        self.embedder = embedder

    @property
    def limits(self) -> Limits:
        """The batch limits, as out-of-memory has left them."""
        return Limits(getattr(self.embedder, "batch_size", self.spec.batch_size),
                      getattr(self.embedder, "batch_tokens", self.spec.batch_tokens))

    def prepare(self, texts: list[str]) -> Any:
        """The texts tokenized (runs in the prefetch thread), or None: the embedder does not tokenize
        apart, or a text made the tokenizer fail and the claim is embedded text by text."""
        if not isinstance(self.embedder, TokenizingEmbedder):
            return None
        try:
            return self.embedder.tokenize(texts)
        except Exception:
            return None

    def embed(self, texts: list[str], prepared: Any, on_batch: BatchDone) -> EmbedResult:
        from .inline import embed_text_by_text, embed_texts

        embedder = self.embedder
        if prepared is None or not isinstance(embedder, TokenizingEmbedder):
            return embed_texts(embedder, texts, on_batch, batch_size=self.limits.batch_size)
        try:
            vectors = embedder.embed_tokenized(prepared, shrink_on_oom=self.spec.adaptive, on_batch=on_batch)
        except Exception:
            return embed_text_by_text(self.embedder, texts, on_batch)
        return np.asarray(vectors, dtype=np.float32), {}


def _die_with_parent() -> None:
    """Linux: the kernel kills this worker when the driver dies, however it dies (SIGKILL included), so
    that no worker outlives it. Elsewhere the worker ends at its next read of the closed pipe."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(Exception):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


_EOF = object()


def _prefetch(tasks: Connection, model: WorkerModel, ready: queue.Queue[Any]) -> None:
    """Receive claims and tokenize them while the previous one is on the model (the tokenizer releases
    the GIL), so that the model does not wait for the pipe or the CPU between claims."""
    try:
        while True:
            message: Claim | Stop = tasks.recv()
            if isinstance(message, Stop):
                break
            ready.put((message, model.prepare(message.texts)))
    except (EOFError, OSError):
        pass
    finally:
        ready.put(_EOF)


def run(tasks: Connection, results: Connection, spec: WorkerSpec) -> None:
    """A worker process: load the model, say so, then embed one claim per message until told to stop
    or the driver is gone (EOF)."""
    _die_with_parent()
    for stop in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(stop, signal.SIG_IGN)  # stop signals are the driver's to handle
    pin_threads(spec.threads, spec.tokenizer_threads)
    try:
        try:
            model = WorkerModel(spec)
        except BaseException as exc:
            results.send(LoadFailed(f"{type(exc).__name__}: {exc}"))
            return
        set_torch_threads(spec.threads)
        results.send(Ready(os.getpid(), model.embedder.info, model.limits, worker_peak_rss_mb()))
        ready: queue.Queue[Any] = queue.Queue(maxsize=1)
        threading.Thread(target=_prefetch, args=(tasks, model, ready), name="indexer-prefetch",
                         daemon=True).start()
        while (item := ready.get()) is not _EOF:
            claim, prepared = item
            started = time.monotonic()

            def batch_done(n: int, task: int = claim.task) -> None:
                results.send(BatchFinished(task, n))

            try:
                vectors, failures = model.embed(claim.texts, prepared, batch_done)
            except Exception as exc:
                results.send(ClaimFailed(claim.task, f"{type(exc).__name__}: {exc}", started))
                continue
            results.send(Embedded(claim.task, vectors, failures, model.limits, worker_peak_rss_mb(),
                                  started))
    except (EOFError, OSError):  # the driver is gone: nobody waits for us
        return
