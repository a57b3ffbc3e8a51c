"""The CPUs a worker may use, how the process pool shares them out, and the pinning of a worker's math
libraries, shared by the local process pool (processes.py, gpus.py, auto.py) and the Ray actors
(ray_actors.py).

The process pool's default workers x threads, with C the CPUs this process may use (its affinity mask):
    threads per worker   T = 1 below 8 CPUs, 2 below 16, else 4. One process's intra-op threads
                         scale below linear (bench/RESULTS.md, "backends"), so small machines get
                         one thread per process; on big ones a few threads per process keep the
                         number of model copies (each holds the model's memory) down
    workers              N = max(1, C // T), so N x T = C
With only --workers, T = max(1, C // N); with only --threads-per-worker, N = max(1, C // T). On 2 CPUs
the default is therefore 2 workers x 1 thread.

A worker pins its libraries in two steps: `pin_threads` sets the environment variables that OpenMP,
MKL, OpenBLAS and the Rust tokenizer read once when they start, so it must run before the model (and
torch) is loaded; `set_torch_threads` then sets torch's own pools, once torch has been imported.
"""

from __future__ import annotations

import contextlib
import os
import sys

__all__ = ["THREAD_VARS", "default_layout", "pin_threads", "set_torch_threads", "usable_cpus"]

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
               "NUMEXPR_NUM_THREADS")


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_layout(cpus: int, workers: int | None, threads: int | None) -> tuple[int, int]:
    """(workers, threads per worker) for the process pool on `cpus` CPUs; see the module docstring."""
    if workers is not None and threads is not None:
        return workers, threads
    if workers is not None:
        return workers, max(1, cpus // workers)
    if threads is None:
        threads = 1 if cpus < 8 else 2 if cpus < 16 else 4
    return max(1, cpus // threads), threads


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
