"""Where a no-change resync spends its time: cProfile of the call, and the time of each SQL statement.

    python -m bench profile_resync --n 1000000       # needs the resync case's cached index
    python -m bench profile_resync --n 100000 --top 25

Uses the index the resync case built (bench/data/resync_index_fakeDIM_N). Two runs, each its own
process: one under cProfile (which slows Python code, not SQLite or C), one plain with every statement
on the manifest's connection timed (execute/executemany plus the fetches of its cursor). Both read the
source in the calling thread (no read-ahead thread: `indexer.sync.read_ahead` replaced), so that each
cost is seen alone. A profiler, so it reaches into the library's internals on purpose. Prints only;
RESULTS.md is not touched.
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from .._common import DATA, ROOT, case_parser, child_command, child_env


def _timed_sql() -> dict[str, list[float]]:
    """Wrap each new Manifest's connection so that every statement's time (fetches included) is kept."""
    import re

    from indexer import manifest as mf

    spent: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])

    def key(sql: str) -> str:
        sql = re.sub(r"\s+", " ", sql).strip()
        # the statements over the batch share one WITH prefix (manifest._scan._ITEMS): name them by the rest
        return re.sub(r"^WITH items .*? FROM scan_odd\) ", "[WITH items] ", sql)[:110]

    class Cursor:
        def __init__(self, cur: Any, k: str) -> None:
            self._cur, self._k = cur, k

        def _t(self, name: str, *a: Any) -> Any:
            t = time.perf_counter()
            try:
                return getattr(self._cur, name)(*a)
            finally:
                spent[self._k][0] += time.perf_counter() - t

        def fetchall(self) -> Any:
            return self._t("fetchall")

        def fetchone(self) -> Any:
            return self._t("fetchone")

        def __iter__(self) -> Any:
            return iter(self._t("fetchall"))

        def __getattr__(self, name: str) -> Any:
            return getattr(self._cur, name)

    class Conn:
        def __init__(self, conn: Any) -> None:
            self._conn = conn

        def _run(self, name: str, sql: str, *a: Any) -> Cursor:
            k = key(sql)
            t = time.perf_counter()
            try:
                cur = getattr(self._conn, name)(sql, *a)
            finally:
                spent[k][0] += time.perf_counter() - t
                spent[k][1] += 1
            return Cursor(cur, k)

        def execute(self, sql: str, *a: Any) -> Cursor:
            return self._run("execute", sql, *a)

        def executemany(self, sql: str, *a: Any) -> Cursor:
            return self._run("executemany", sql, *a)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._conn, name)

    init = mf.Manifest.__init__

    def patched(self: Any, *a: Any, **k: Any) -> None:
        init(self, *a, **k)
        self.conn = Conn(self.conn)

    setattr(mf.Manifest, "__init__", patched)  # noqa: B010 (a method replaced, which mypy would refuse)
    return spent


def child(corpus: Path, index: Path, mode: str, top: int) -> None:
    import importlib
    from contextlib import nullcontext

    import indexer

    sync_module = importlib.import_module("indexer.sync")  # (indexer.sync is also the function)

    # Serial: the source is read in this thread, so that cProfile sees it and a statement's time is
    # its own (with the read-ahead thread it would include waiting for the GIL to come back).
    setattr(sync_module, "read_ahead", lambda items, depth=2: nullcontext(items))  # noqa: B010

    if mode == "profile":
        import cProfile
        import pstats

        prof = cProfile.Profile()
        t = time.perf_counter()
        prof.runcall(indexer.sync, index, paths=[str(corpus)])
        print(f"under cProfile: {time.perf_counter() - t:.2f}s")
        pstats.Stats(prof).sort_stats("tottime").print_stats(top)
        return
    spent = _timed_sql()
    t = time.perf_counter()
    s = indexer.sync(index, paths=[str(corpus)])
    total = time.perf_counter() - t
    in_sql = sum(v[0] for v in spent.values())
    print(f"plain run: {total:.2f}s for {s.unchanged:,} unchanged documents; scan {s.scan_seconds:.2f}s; "
          f"{in_sql:.2f}s ({in_sql / total:.0%}) in SQLite statements (fetches included):")
    print("| seconds | calls | statement |\n|---|---|---|")
    for k, (sec, calls) in sorted(spent.items(), key=lambda kv: -kv[1][0])[:top]:
        print(f"| {sec:.3f} | {calls} | `{k}` |")


def main(argv: list[str] | None = None) -> None:
    ap = case_parser(__name__, __doc__, children=["profile", "sql"], results=False)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--top", type=int, default=20)
    args = ap.parse_args(argv)
    corpus = DATA / f"corpus_{args.n}.jsonl"
    index = DATA / f"resync_index_fake{args.dim}_{args.n}"
    if args.child:
        child(corpus, index, args.child, args.top)
        return
    if not (index / "bench-build.json").exists():
        sys.exit(f"no cached index at {index}; run python -m bench resync --sizes {args.n} first")
    import subprocess

    for mode in ("sql", "profile"):  # each in a process of its own; they print, nothing is returned
        subprocess.run(child_command(__name__, mode, ["--n", str(args.n), "--dim", str(args.dim),
                                                      "--top", str(args.top)]),
                       cwd=ROOT, env=child_env(), check=True)
        print()

