"""The Ray runner: N Ray actors each load the model once and embed the claims the driver sends them.

Only texts travel to the actors and only vectors come back: the manifest (SQLite) and the store (Zarr)
stay with the driver, on the driver's machine, exactly as with every other backend.

    make(model, batch_size, embedder_options, workers=None, ray_address=None, gpus_per_worker=None,
         threads_per_worker=None)

Without `ray_address` a local Ray instance is started, sized to this machine, and shut down by
`close()`; with "auto" or an address the driver joins that cluster (`ray start --head` and
`ray start --address=...` beforehand; see docs/RAY.md). If Ray is already initialised in this process
(a notebook, a test), that connection is used and left alone.

The actor, inside Ray, is _ray_actor.py; the runner in the driver, which sends the actors their claims,
watches their progress and follows their restarts, is _ray_runner.py.

Ray is an optional dependency: `pip install 'indexer[ray]'`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from .._signals import keep_stop_handlers
from ..embedders import ModelInfo
from ..errors import IndexerError, ModelLoadError
from ._cpus import usable_cpus
from ._flags import check_options
from ._ray_actor import PROGRESS_GROUP, EmbedActor
from ._ray_runner import ActorSlot, RayRunner, first_line

__all__ = ["INSTALL_HINT", "EmbedActor", "RayRunner", "make"]

INSTALL_HINT = "pip install 'indexer[ray]'"


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise IndexerError(
            f"backend 'ray' needs the Ray package, which cannot be imported here ({exc}). "
            f"Install it with: {INSTALL_HINT}") from exc
    return ray


def _connect(ray: Any, ray_address: str | None) -> bool:
    """Initialise Ray if this process has not; True if we did (and so must shut it down)."""
    if ray.is_initialized():
        return False
    quiet = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    if ray_address is None:
        # A new local instance says at length that it enabled token authentication; it is local only.
        auth_log = logging.getLogger("ray._private.authentication.authentication_token_setup")
        level = auth_log.level
        auth_log.setLevel(logging.ERROR)
        try:
            # "local": a new instance even where RAY_ADDRESS or a `ray start` cluster would be found.
            with keep_stop_handlers():  # Ray's SIGTERM handler would exit without releasing claims
                ray.init(address="local", num_cpus=usable_cpus(), **quiet)
        except Exception as exc:
            raise IndexerError(f"could not start a local Ray instance: {first_line(exc)}") from exc
        finally:
            auth_log.setLevel(level)
        return True
    try:
        with keep_stop_handlers():
            ray.init(address=ray_address, log_to_driver=False, logging_level=logging.WARNING)
    except Exception as exc:
        raise IndexerError(
            f"could not connect to the Ray cluster at {ray_address!r}: {first_line(exc)}. Start it first "
            "(`ray start --head` on this node; see docs/RAY.md), or leave out --ray-address for a local "
            "Ray instance.") from exc
    return True


def _cluster_errors_to_stderr() -> None:
    """Ray prints what the cluster reports (\"(raylet) A worker died ...\") on the driver's STDOUT, where
    it would corrupt `indexer sync --json`. Send it to stderr; indexer reports the loss itself too.
    Ray's printing is private API: if it is not where we expect it, leave Ray as it is."""
    try:
        from ray._private import worker as ray_worker
    except ImportError:
        return
    original = getattr(ray_worker, "print_to_stdstream", None)
    if original is None or getattr(original, "indexer_to_stderr", False):
        return

    def to_stderr(data: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        return original({**data, "is_err": True}, *args, **kwargs)

    to_stderr.indexer_to_stderr = True  # type: ignore[attr-defined]
    ray_worker.print_to_stdstream = to_stderr


def _plan(ray: Any, workers: int | None, gpus_per_worker: float | None,
          threads_per_worker: int | None) -> tuple[int, float, float, int]:
    """(actors, CPUs reserved per actor, GPUs per actor, torch threads per actor), checked against the
    cluster so that no actor waits forever for resources that are not there."""
    resources = ray.cluster_resources()
    cpus = float(resources.get("CPU", 0))
    gpus = float(resources.get("GPU", 0))
    if cpus < 1:
        raise IndexerError("the Ray cluster has no CPUs to run workers on")
    node_cpus = [float(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")]
    biggest = max(node_cpus, default=cpus)
    gpw = gpus_per_worker or 0.0
    if gpw:
        if gpw > 1 and gpw != int(gpw):
            raise IndexerError(f"--gpus-per-worker {gpw:g}: Ray takes a fraction below 1 or a whole number")
        if gpus == 0:
            raise IndexerError("--gpus-per-worker: the Ray cluster has no GPUs; leave it out to use CPUs")
        n = workers or max(1, int(gpus // gpw))
        if n * gpw > gpus:
            raise IndexerError(f"--workers {n} --gpus-per-worker {gpw:g} needs {n * gpw:g} GPUs; the Ray "
                               f"cluster has {gpus:g}. Use fewer workers or a smaller GPU share.")
    else:
        n = workers or max(1, int(cpus) // 4)
    share = min(cpus / n, biggest)
    threads = threads_per_worker or max(1, int(share))
    # CPU actors reserve their share (whole CPUs where it is one or more); GPU actors one CPU at most.
    reserve = min(1.0, share) if gpw else (float(int(share)) if share >= 1 else share)
    if reserve < 1:
        reserve = max(0.01, int(reserve * 100) / 100)  # Ray takes fractions in hundredths
    return n, reserve, gpw, threads


def make(model: str, batch_size: int, embedder_options: dict[str, object], workers: int | None = None,
         ray_address: str | None = None, gpus_per_worker: float | None = None,
         threads_per_worker: int | None = None, max_restarts: int = 3, startup_timeout: float = 600.0,
         restart_timeout: float = 300.0, **options: object) -> RayRunner:
    """Start the actors and wait until each has loaded the model (or fail with the reason)."""
    check_options("ray", options, "--workers, --ray-address, --gpus-per-worker and --threads-per-worker")
    if workers is not None and workers < 1:
        raise IndexerError("--workers must be at least 1")
    ray = _import_ray()
    started = _connect(ray, ray_address)
    _cluster_errors_to_stderr()
    slots: list[ActorSlot] = []
    try:
        n, reserve, gpw, threads = _plan(ray, workers, gpus_per_worker, threads_per_worker)
        actor_class = ray.remote(concurrency_groups={PROGRESS_GROUP: 1})(EmbedActor).options(
            num_cpus=reserve, num_gpus=gpw, max_restarts=max_restarts, max_task_retries=0,
            max_concurrency=1)
        slots = [ActorSlot(i, actor_class.remote(model, batch_size, embedder_options, threads))
                 for i in range(n)]
        info = _await_ready(ray, slots, model, startup_timeout, reserve, gpw)
    except BaseException:
        for slot in slots:
            with contextlib.suppress(Exception):
                ray.kill(slot.handle, no_restart=True)
        if started:
            ray.shutdown()
        raise
    return RayRunner(ray, slots, info, started_ray=started, max_restarts=max_restarts,
                     restart_timeout=restart_timeout)


def _await_ready(ray: Any, slots: list[ActorSlot], model: str, timeout: float, reserve: float,
                 gpw: float) -> ModelInfo:
    refs = [slot.handle.ready.remote() for slot in slots]
    deadline = time.monotonic() + timeout
    pending = list(refs)
    while pending:  # short waits, so that Ctrl-C gets through
        _, pending = ray.wait(pending, num_returns=len(pending), timeout=1.0)
        if pending and time.monotonic() > deadline:
            raise IndexerError(
                f"{len(pending)} of {len(slots)} Ray workers did not start within {timeout:.0f}s. Each asks "
                f"for {reserve:g} CPU and {gpw:g} GPU; the cluster has {ray.available_resources()} free. "
                "Use fewer --workers, or add nodes.")
    infos: list[ModelInfo] = []
    for slot, ref in zip(slots, refs, strict=True):
        try:
            info, error, slot.pid, slot.host, slot.node = ray.get(ref)
        except ray.exceptions.RayError as exc:
            raise ModelLoadError(f"Ray worker {slot.index} failed to start: {first_line(exc)}") from exc
        if error is not None or info is None:
            raise ModelLoadError(f"model {model!r} could not be loaded in Ray worker {slot.index} "
                                 f"on {slot.host}: {error}")
        infos.append(info)
    for slot, info in zip(slots, infos, strict=True):
        if info != infos[0]:
            raise IndexerError(
                f"Ray workers disagree about model {model!r}: worker 0 has {infos[0]}, worker "
                f"{slot.index} on {slot.host} has {info}. Install the same model and versions on every node.")
    return infos[0]
