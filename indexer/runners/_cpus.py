"""The CPUs a worker may use and the pinning of its math libraries, shared by the local process pool
(processes.py, gpus.py, auto.py) and the Ray actors (ray_actors.py).

A worker pins its libraries in two steps: `pin_threads` sets the environment variables that OpenMP,
MKL, OpenBLAS and the Rust tokenizer read once when they start, so it must run before the model (and
torch) is loaded; `set_torch_threads` then sets torch's own pools, once torch has been imported.
"""

from __future__ import annotations

import contextlib
import os
import sys

__all__ = ["THREAD_VARS", "pin_threads", "set_torch_threads", "usable_cpus"]

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
               "NUMEXPR_NUM_THREADS")


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def pin_threads(threads: int, tokenizer_threads: int = 1) -> None:
    """Limit this process's math libraries to `threads` threads and the tokenizer to
    `tokenizer_threads`; call it before the model is loaded."""
    for var in THREAD_VARS:
        os.environ[var] = str(threads)
    os.environ["TOKENIZERS_PARALLELISM"] = "true" if tokenizer_threads > 1 else "false"
    os.environ["RAYON_NUM_THREADS"] = str(tokenizer_threads)


def set_torch_threads(threads: int) -> None:
    """Torch's intra-op pool to `threads` threads and its inter-op pool to one, if torch is loaded."""
    torch = sys.modules.get("torch")  # only a model that uses torch has imported it
    if torch is None:
        return
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # only settable before the first parallel work
        torch.set_num_interop_threads(1)
