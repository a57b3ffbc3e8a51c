"""The openai backend against a rate-limited OpenAI-compatible server, in real time.

The test server (tests/openai_server.py) runs in its own process, limited to R requests/minute and T
tokens/minute by token buckets that hold one minute's worth and START EMPTY, so no burst credit can
inflate a measured rate: the best any client can do over a run is the limit itself. It answers 429 with
Retry-After when a request does not fit, and takes `--latency` seconds per answer.

Each scenario embeds one corpus three ways, each against a fresh server:

- indexer: `indexer.sync(..., SyncOptions(backend="openai", backend_options={"rpm": R, "tpm": T}))`, the
  whole pipeline (claims, Zarr chunk writes, commits). The index is created first by an empty sync, so
  the measured sync starts its limiter when its claims start (no credit from the scan).
- gather: the usual approach, a plain `asyncio.gather` over fixed 100-input batches with a semaphore of
  10, AsyncOpenAI with its default retries (2; it honours Retry-After).
- gather, patient: the same with max_retries=20.

Achieved rates are the tokens and requests the server answered with vectors, over the time from the
first request asked for to the last answer (indexer: its own stats; gather: the gather's time). The
gather runs get at most 1.5x the time indexer took, then are cut off (reported as not finished).

Scenarios: `tpm` (documents of 50-1,500 tokens: the token limit binds) and `rpm` (documents of ~20
tokens: the request limit binds). Pass: indexer reaches >= 90% of the binding limit with zero failed.

    python -m bench openai_backend                      # both scenarios, about 10 minutes
    python -m bench openai_backend --scenario tpm --minutes 1 --no-results
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._common import ROOT, Report, Result, case_parser, table

SERVER = ROOT / "tests" / "openai_server.py"
KEY = "bench-key"
MODEL = "text-embedding-3-small"
_TEXT = ("the of and to in is was for on that with as by at from his an were are which this be or has had "
         "not but also first one their its new after who they have her she two been other when there all "
         "during into school time may years more most only over city some world would where later up such "
         "used many can state about national out known university united then made")
WORDS = _TEXT.split()


@dataclass
class Scenario:
    name: str
    rpm: int
    tpm: int | None
    tokens: tuple[int, int]  # document length range, in server tokens (4 bytes each)
    docs: int


def scenarios(minutes: float) -> dict[str, Scenario]:
    tpm, rpm = 300_000, 600
    # ~log-uniform 50..1500 tokens: mean ~ 430
    n_tpm = int(minutes * tpm / 430)
    rpm_small = 60
    n_rpm = int(minutes * rpm_small * 1024)  # one request carries one claim of 1,024 documents
    return {"tpm": Scenario("tpm", rpm, tpm, (50, 1500), n_tpm),
            "rpm": Scenario("rpm", rpm_small, None, (15, 25), n_rpm)}


def corpus(sc: Scenario, seed: int = 1) -> list[dict[str, str]]:
    rng = np.random.default_rng(seed)
    lo, hi = sc.tokens
    lengths = np.exp(rng.uniform(np.log(lo), np.log(hi), sc.docs)).astype(int)
    vocab = np.array(WORDS)
    docs = []
    for i, n in enumerate(lengths):
        text = f"{sc.name} {i} " + " ".join(rng.choice(vocab, size=int(n)))
        docs.append({"id": f"{sc.name}{i}", "text": text[: 4 * int(n)]})
    return docs


class Server:
    def __init__(self, sc: Scenario, latency: float) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        cmd = [sys.executable, str(SERVER), "--port", str(self.port), "--rpm", str(sc.rpm), "--dim", "64",
               "--latency", str(latency), "--api-key", KEY]
        if sc.tpm:
            cmd += ["--tpm", str(sc.tpm)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "serving" not in line:
            raise RuntimeError(f"the test server did not start: {line!r}")
        self.base_url = f"http://127.0.0.1:{self.port}/v1"

    def stats(self) -> Result:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/stats", timeout=10) as r:
            return dict(json.loads(r.read()))

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def run_indexer(sc: Scenario, docs: list[dict[str, str]], latency: float, workdir: Path) -> Result:
    import indexer
    from indexer import Settings

    server = Server(sc, latency)
    try:
        options: dict[str, object] = {"base_url": server.base_url, "rpm": sc.rpm}
        if sc.tpm:
            options["tpm"] = sc.tpm
        index = workdir / f"idx-{sc.name}"
        indexer.sync(index, [],
                     indexer.SyncOptions(model=MODEL, backend="openai", backend_options=options,
                                         settings=Settings()))
        probe = server.stats()  # exactly the start-up probe of that empty sync; the next sync sends one too
        t0 = time.perf_counter()
        summary = indexer.sync(index, docs,
                               indexer.SyncOptions(model=MODEL, backend="openai", backend_options=options,
                                                   settings=Settings()))
        wall = time.perf_counter() - t0
        st: dict[str, Any] = dict(summary.backend_stats)
        server_stats = server.stats()
    finally:
        server.close()
    for k in ("ok_tokens", "ok_requests"):  # the claims' work only, as the server counted it
        server_stats[k] = int(server_stats[k]) - 2 * int(probe[k])
    active = float(st["active_seconds"])
    return {"approach": "indexer (--rpm/--tpm given)", "docs": len(docs), "embedded": summary.embedded,
            "failed": summary.failed, "not_finished": len(docs) - summary.embedded - summary.failed,
            "wall_s": wall, "active_s": active, "ok_tokens": server_stats["ok_tokens"],
            "ok_requests": server_stats["ok_requests"], "outcomes": server_stats["outcomes"],
            "tokens_per_min": float(server_stats["ok_tokens"]) / active * 60,
            "requests_per_min": float(server_stats["ok_requests"]) / active * 60,
            "client": {k: st[k] for k in ("requests", "retries", "rate_limited", "tokens_sent",
                                          "tokens_per_minute", "limiter_wait_s")}}


async def _gather(base_url: str, docs: list[dict[str, str]], max_retries: int,
                  budget: float) -> Result:
    import openai

    client = openai.AsyncOpenAI(api_key=KEY, base_url=base_url, max_retries=max_retries)
    sem = asyncio.Semaphore(10)
    batches = [docs[i:i + 100] for i in range(0, len(docs), 100)]
    done = {"embedded": 0, "failed": 0}
    last = [0.0]
    t0 = time.monotonic()

    async def one(batch: list[dict[str, str]]) -> None:
        async with sem:
            try:
                r = await client.embeddings.create(model=MODEL, input=[d["text"] for d in batch])
                assert len(r.data) == len(batch)
                done["embedded"] += len(batch)
            except openai.OpenAIError:
                done["failed"] += len(batch)
            last[0] = time.monotonic()

    try:
        await asyncio.wait_for(asyncio.gather(*(one(b) for b in batches)), timeout=budget)
        cut = False
    except TimeoutError:
        cut = True
        last[0] = time.monotonic()
    await client.close()
    return {**done, "seconds": last[0] - t0, "cut_off": cut}


def run_gather(sc: Scenario, docs: list[dict[str, str]], latency: float, max_retries: int,
               budget: float) -> Result:
    server = Server(sc, latency)
    try:
        t0 = time.perf_counter()
        out = asyncio.run(_gather(server.base_url, docs, max_retries, budget))
        wall = time.perf_counter() - t0
        server_stats = server.stats()
    finally:
        server.close()
    seconds = float(out["seconds"])
    embedded, failed = int(out["embedded"]), int(out["failed"])
    name = "gather, 100/batch, sem 10" + (f", max_retries={max_retries}" if max_retries != 2 else "")
    return {"approach": name, "docs": len(docs), "embedded": embedded, "failed": failed,
            "not_finished": len(docs) - embedded - failed, "wall_s": wall, "active_s": seconds,
            "ok_tokens": server_stats["ok_tokens"], "ok_requests": server_stats["ok_requests"],
            "outcomes": server_stats["outcomes"],
            "tokens_per_min": float(server_stats["ok_tokens"]) / seconds * 60,
            "requests_per_min": float(server_stats["ok_requests"]) / seconds * 60,
            "cut_off": out["cut_off"]}


def main(argv: list[str] | None = None) -> None:
    p = case_parser(__name__, __doc__)
    p.add_argument("--scenario", choices=["all", "tpm", "rpm"], default="all")
    p.add_argument("--minutes", type=float, default=2.0, help="minutes of load at the binding limit")
    p.add_argument("--latency", type=float, default=0.1, help="seconds the server takes per answer")
    args = p.parse_args(argv)
    os.environ["OPENAI_API_KEY"] = KEY
    report = Report()
    names = ["tpm", "rpm"] if args.scenario == "all" else [args.scenario]
    sections: list[str] = []
    verdicts: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-openai-") as tmp:
        for name in names:
            sc = scenarios(args.minutes)[name]
            docs = corpus(sc)
            print(f"[{name}] {len(docs)} documents, limits {sc.rpm} requests/min, "
                  f"{sc.tpm or 'no'} tokens/min", file=sys.stderr, flush=True)
            rows = [run_indexer(sc, docs, args.latency, Path(tmp))]
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
            budget = 1.5 * float(rows[0]["active_s"])
            for retries in (2, 20):
                rows.append(run_gather(sc, docs, args.latency, retries, budget))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
            sections.append(scenario_section(sc, rows))
            ours = rows[0]
            fraction = max(float(ours["tokens_per_min"]) / sc.tpm if sc.tpm else 0.0,
                           float(ours["requests_per_min"]) / sc.rpm)
            ok = fraction >= 0.9 and ours["failed"] == 0 and ours["not_finished"] == 0
            verdicts.append(f"{name}: indexer reached {fraction:.1%} of the binding limit, "
                            f"{ours['failed']} failed -> {'PASS' if ok else 'FAIL'}")
    body = [
        "The test server in its own process, token buckets of one minute's worth starting empty, 429 "
        f"with Retry-After, {args.latency:g} s per answer, 64-dim vectors; the client on the same machine "
        "over loopback. Achieved = tokens (requests) the server answered with vectors per minute, from the "
        "first request asked for to the last answer.",
        *sections, "Verdict:\n\n" + "\n".join(f"- {v}" for v in verdicts)]
    report.publish("openai", "OpenAI-compatible API backend: rate-limited throughput (openai_backend)", body,
                   write=not args.no_results)


def scenario_section(sc: Scenario, rows: list[Result]) -> str:
    limit = f"{sc.rpm} requests/min" + (f", {sc.tpm:,} tokens/min" if sc.tpm else "")
    headers = ["approach", "embedded", "failed", "not finished", "seconds", "tokens/min", "% of TPM",
               "requests/min", "% of RPM", "429s"]
    table_rows: list[list[object]] = []
    for r in rows:
        tpm, rpm = float(r["tokens_per_min"]), float(r["requests_per_min"])
        outcomes = r["outcomes"]
        assert isinstance(outcomes, dict)
        table_rows.append([r["approach"], r["embedded"], r["failed"], r["not_finished"],
                           float(r["active_s"]), tpm,
                           f"{tpm / sc.tpm:.1%}" if sc.tpm else "-", rpm, f"{rpm / sc.rpm:.1%}",
                           outcomes.get("429", 0)])
    lo, hi = sc.tokens
    return (f"### Scenario `{sc.name}`: {len(rows) and rows[0]['docs']:,} documents of {lo}-{hi} tokens; "
            f"server limits {limit}\n\n" + table(headers, table_rows)
            + "\n\nindexer's own counters: " + json.dumps(rows[0].get("client")))

