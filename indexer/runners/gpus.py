"""The per-GPU runner: one worker process per device, each with the model on its device.

    make(model, batch_size, embedder_options, devices=None, threads_per_worker=None, batch_tokens=None,
         max_batch_texts=None, half=True, prefetch=1, claims_per_worker=2, max_restarts=None,
         embedder_factory="indexer.embedders:load_embedder")

`devices` is "0,1" (CUDA device numbers), "cuda:0,cuda:1", a list, or None for every CUDA device this
machine has. "cpu" entries are accepted too ("cpu,cpu": two CPU workers with this runner's batching),
which is how the tests exercise it without a GPU. It is the process-pool runner (runners/processes.py)
with one worker per device; the differences are all in the worker's WorkerSpec:

- the model loads with `device=` its device, and on CUDA is cast to fp16 (`half=False` keeps fp32);
- on CUDA, batches are formed by token budget, not by count: the claim's texts, sorted by token
  length, are cut into batches of at most `batch_tokens` padded tokens (default CUDA_BATCH_TOKENS) and
  at most `max_batch_texts` texts (--batch-size when given, else CUDA_MAX_BATCH_TEXTS). CPU devices
  keep --batch-size texts per batch (and `batch_tokens` if given);
- when a batch runs out of GPU memory, the worker halves both limits (down to one text), redoes only
  that batch, and keeps the smaller limits for the rest of the run, a restarted worker included. The
  claim is not lost: it completes;
- the tokenizer runs ahead: each worker holds two claims (`claims_per_worker`), and a thread
  tokenizes the next while the current one is on the GPU, with the worker's share of the CPUs (the
  Rust tokenizer releases the GIL). A worker that dies loses both claims to pending, where they are
  embedded again;
- torch threads per worker: --threads-per-worker, else the CPUs shared out between the devices (at
  most 4 a CUDA worker, which only feeds the GPU).

`embedder_factory` ("module:function", imported in each worker) loads the embedder instead of
load_embedder, with the same arguments; the tests name one that makes the model run out of memory on
demand (tests/injected_oom.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import IndexerError
from ._cpus import usable_cpus
from ._flags import check_options
from ._messages import DEFAULT_EMBEDDER_FACTORY
from .processes import ProcessRunner, WorkerSpec

__all__ = ["make", "parse_devices"]

# On CUDA a batch is as many texts of similar token length as fit in CUDA_BATCH_TOKENS padded tokens
# (bench/bench_gpu.py measured the choice); the text cap only stops very short texts from making one
# huge batch.
CUDA_BATCH_TOKENS = 65_536
CUDA_MAX_BATCH_TEXTS = 2_048


def _cuda_count() -> int:
    import torch

    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def parse_devices(devices: str | Sequence[str | int] | None) -> list[str]:
    """Device names ("cuda:N" or "cpu") from --devices; None: every CUDA device (an error if none)."""
    if devices is None:
        count = _cuda_count()
        if count == 0:
            raise IndexerError("backend gpus: torch sees no CUDA device here. Use --backend processes for "
                               "the CPUs, or name devices with --devices (e.g. 0,1, or cpu)")
        return [f"cuda:{i}" for i in range(count)]
    items = devices.split(",") if isinstance(devices, str) else list(devices)
    names: list[str] = []
    for item in items:
        text = str(item).strip().lower()
        if text.isdigit():
            text = f"cuda:{text}"
        elif text == "cuda":
            text = "cuda:0"
        if text != "cpu" and not (text.startswith("cuda:") and text[5:].isdigit()):
            raise IndexerError(f"--devices: {str(item).strip()!r} is not a device; give CUDA device numbers "
                               "(0,1), cuda:N, or cpu")
        names.append(text)
    if not names:
        raise IndexerError("--devices: no device given")
    cuda = [int(n[5:]) for n in names if n.startswith("cuda:")]
    if cuda:
        count = _cuda_count()
        missing = sorted({i for i in cuda if i >= count})
        if missing:
            raise IndexerError(f"--devices: CUDA device {missing[0]} does not exist here (torch sees {count} "
                               f"CUDA device{'s' if count != 1 else ''})")
    return names


def make(model: str, batch_size: int, embedder_options: dict[str, object],
         devices: str | Sequence[str | int] | None = None, threads_per_worker: int | None = None,
         batch_tokens: int | None = None, max_batch_texts: int | None = None, half: bool = True,
         prefetch: int = 1, claims_per_worker: int = 2, max_restarts: int | None = None,
         embedder_factory: str = DEFAULT_EMBEDDER_FACTORY, **options: object) -> ProcessRunner:
    check_options("gpus", options, "--devices, --threads-per-worker and --batch-tokens")
    if "device" in embedder_options:
        raise IndexerError("backend gpus places the model itself; give devices with --devices, not as an "
                           "embedder option")
    runtime = embedder_options.get("runtime", "torch")
    if runtime != "torch":
        raise IndexerError(f"backend gpus runs torch on each device; --runtime {runtime} runs on the CPU "
                           "(ONNX Runtime): use --backend processes or inline with it")
    names = parse_devices(devices)
    if threads_per_worker is not None and threads_per_worker < 1:
        raise IndexerError("--threads-per-worker must be at least 1")
    if batch_tokens is not None and batch_tokens < 0:
        raise IndexerError("--batch-tokens must be at least 1 (or 0: batches by --batch-size alone)")
    share = max(1, usable_cpus() // len(names))
    specs = []
    for name in names:
        cuda = name.startswith("cuda")
        specs.append(WorkerSpec(
            model=model, embedder_options=dict(embedder_options), device=name, half=half and cuda,
            threads=threads_per_worker or (min(4, share) if cuda else share),
            tokenizer_threads=share if cuda else 1,
            batch_size=max_batch_texts or (CUDA_MAX_BATCH_TEXTS if cuda else batch_size),
            # None: the CUDA default; 0: by count alone, like every other backend.
            batch_tokens=((CUDA_BATCH_TOKENS if cuda else None) if batch_tokens is None
                          else batch_tokens or None),
            adaptive=True, embedder_factory=embedder_factory))
    return ProcessRunner(specs, [f"worker {i} on {name}" for i, name in enumerate(names)], kind="gpus",
                         prefetch=prefetch, claims_per_worker=claims_per_worker, max_restarts=max_restarts)
