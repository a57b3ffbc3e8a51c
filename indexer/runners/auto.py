"""`--backend auto`: the best local setup this machine has, chosen at sync time.

    every CUDA device (backend gpus)     where torch sees CUDA, the model is not the fake one and the
                                         runtime is torch (the onnx runtimes run on the CPU)
    in-process (backend inline)          on a machine with at most INLINE_MAX_CPUS usable CPUs
    a CPU process pool (processes)       otherwise, with its default workers x threads

On 2 CPUs the process pool does not pay for itself: one process with 2 torch threads embeds as fast as
pools of 2x1 or 1x2 workers within noise (bench/RESULTS.md, "Backends on one machine"), while 2
workers need a second copy of the model and a second load. With more CPUs one process's intra-op
threads scale below linear, so the pool is chosen, with its default layout (not yet measured on a
bigger machine). Options narrow the choice:
--devices asks for gpus, --workers or --threads-per-worker for the process pool.
"""

from __future__ import annotations

import importlib

from . import Runner
from ._cpus import usable_cpus
from ._flags import check_options

__all__ = ["INLINE_MAX_CPUS", "choose", "make"]

INLINE_MAX_CPUS = 2


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def choose(model: str, options: dict[str, object], runtime: str = "torch") -> tuple[str, dict[str, object]]:
    """(backend, its options) for `auto` with these options on this machine. The onnx runtimes run on
    the CPU, so with them auto never picks gpus."""
    options = {k: v for k, v in options.items() if v is not None}
    if "devices" in options:  # gpus refuses an onnx runtime, saying why
        return "gpus", options
    if {"workers", "threads_per_worker"} & options.keys():
        return "processes", options
    check_options("auto", options, "--devices, --workers and --threads-per-worker (or name the backend "
                  "you want)")
    if not model.startswith("fake:") and runtime == "torch" and _cuda_available():
        return "gpus", {}
    if usable_cpus() <= INLINE_MAX_CPUS:
        return "inline", {}
    return "processes", {}


def make(model: str, batch_size: int, embedder_options: dict[str, object], **options: object) -> Runner:
    backend, chosen = choose(model, options, str(embedder_options.get("runtime", "torch")))
    module = importlib.import_module(f"{__package__}.{backend}")
    runner: Runner = module.make(model, batch_size, embedder_options, **chosen)
    return runner
