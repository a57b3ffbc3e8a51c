"""Crash harness: `indexer sync` in a child process, killed with SIGKILL at random moments and at every
named crash point, then run again to completion. After each kill:

- right after the kill, `indexer verify` is clean (manifest and store agree even mid-run);
- the same command, run again, finishes; every live document is served, each content is done once, and
  the resumed run embedded exactly what was not done at the kill (resume never re-embeds done work);
- at the kill at most one claim (one chunk's rows) was in flight: the work lost is at most chunk_rows;
- `PRAGMA integrity_check` is ok, `indexer verify` exits 0, and after `indexer compact` no `.partial`
  file and no orphan chunk is left;
- the vectors are bit-identical, id for id, to those of an uninterrupted run.

The corpus is chunked (the fake model with --chunk-tokens: words): one document in a hundred is long,
several chunks, so that claims, commits and kills fall between the chunks of one document too, and a
long document is served only once all its chunks are done. Counts of contents are counts of chunks.

The default run does at least 20 random kills (16 on a new index, spread over start-up, scan and
embed; 4 during an incremental sync; seeded) plus one kill at each named crash point.
`pytest -m slow tests/test_crash.py` runs the long version (many more kills, and kills of the resumed
runs too). INDEXER_CRASH_SEED and INDEXER_CRASH_KILLS change the seed and the long version's kills.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import indexer
from indexer.chunking import Chunker, make_chunker
from indexer.cli import cli
from indexer.embedders.fake import FakeEmbedder
from indexer.manifest import Inspection
from indexer.settings import Settings

from manifest_surgery import downgrade_to_schema_1

N_DOCS = 2000
CHUNK_TOKENS = 60  # words: the short documents (at most 41) are one chunk, the long ones several
_CHUNKER = make_chunker("fake:16", 0, "", CHUNK_TOKENS, 0)
assert _CHUNKER is not None
CHUNKER: Chunker = _CHUNKER
CHUNK_ROWS = 16
SCAN_BATCH = 200
SEED = int(os.environ.get("INDEXER_CRASH_SEED", "20240611"))
KILLS_FRESH = 16  # random kills of the default run: on a new index ...
KILLS_INCREMENTAL = 4  # ... and during an incremental sync; on top of the 8 named crash-point kills
SLOW_KILLS = int(os.environ.get("INDEXER_CRASH_KILLS", "120"))

# One claim per transaction (INDEXER_CLAIM_SECONDS=0), so that at most one claim is in flight at a
# kill; ENV_GROUPED lets the driver group claims (the default), as many as Settings.claim_chunks_max
# at once with the fast fake model: then at most one group is in flight (test_*_grouped).
ENV = dict(os.environ, HF_HUB_OFFLINE="1", INDEXER_CHUNK_ROWS=str(CHUNK_ROWS),
           INDEXER_SCAN_BATCH=str(SCAN_BATCH), PYTHONUNBUFFERED="1", INDEXER_CLAIM_SECONDS="0")
ENV.pop("INDEXER_CRASH_AT", None)
ENV.pop("INDEXER_PAUSE_AT", None)
ENV_GROUPED = dict(ENV, INDEXER_CLAIM_SECONDS="60")
GROUP_CHUNKS = Settings().claim_chunks_max
KILLS_GROUPED = 6

TOTALS: Counter[str] = Counter()  # what this session did, printed at the end (-s) for docs/RELIABILITY.md
_LOCK = threading.Lock()
PARALLEL = 2  # episodes at a time: the children wait on fsync much of the time


def tally(counter: Counter[str], key: str, n: int = 1) -> None:
    with _LOCK:
        counter[key] += n


def in_parallel(jobs: dict[str, Callable[[], object]]) -> dict[str, object]:
    """Run independent episodes, PARALLEL at a time; raise naming every one that failed."""
    results: dict[str, object] = {}
    errors: list[str] = []
    with ThreadPoolExecutor(PARALLEL) as pool:
        futures = {pool.submit(job): name for name, job in jobs.items()}
        for future in as_completed(futures):
            try:
                results[futures[future]] = future.result()
            except Exception:
                errors.append(f"--- {futures[future]}:\n{traceback.format_exc()}")
    assert not errors, "\n".join(errors)
    return results


def sync_cmd(source: Path, index: Path, *extra: str, chunked: bool = True) -> list[str]:
    chunking = ["--chunk-tokens", str(CHUNK_TOKENS)] if chunked else []
    return [sys.executable, "-m", "indexer", "sync", str(source), "--index", str(index),
            "--model", "fake:16", "--json", "-q", *chunking, *extra]


def chunks_of(text: str, chunked: bool = True) -> list[str]:
    return [text[a:b] for a, b in CHUNKER.split(text)] if chunked else [text]


# -- corpora and reference runs -------------------------------------------------------------------------

WORDS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa",
         "lambda", "mu", "nu", "xi", "omicron", "pi", "rho", "sigma", "tau", "upsilon", "phi", "chi",
         "psi", "omega", "index", "vector", "chunk", "claim", "lease", "token", "commit")


def make_texts(n: int, seed: int) -> dict[str, str]:
    """Short documents; about one in 25 shares its text with another id (contents are shared); one in
    100 is long: paragraphs of 10 to 30 words, several chunks."""
    rng = random.Random(seed)
    docs: dict[str, str] = {}
    for i in range(n):
        if i % 25 == 7 and i > 25:
            docs[f"doc-{i:05d}"] = docs[f"doc-{rng.randrange(i - 25):05d}"]
        elif i % 100 == 50:
            docs[f"doc-{i:05d}"] = f"{i}:\n\n" + "\n\n".join(
                " ".join(rng.choice(WORDS) for _ in range(rng.randint(10, 30))) + "."
                for _ in range(rng.randint(6, 12)))
        else:
            words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 40)))
            docs[f"doc-{i:05d}"] = f"{i}: {words}"
    return docs


def write_jsonl(path: Path, docs: dict[str, str]) -> None:
    path.write_text("".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in docs.items()),
                    encoding="utf-8")


@dataclass
class Reference:
    source: Path
    docs: dict[str, str]
    index: Path  # built by one uninterrupted run
    ids: list[str]
    vectors: np.ndarray  # rows aligned with the sorted ids
    distinct: int  # distinct chunk texts: the contents embedded
    wall_s: float  # wall time of the uninterrupted child process
    chunked: bool = True


def read_vectors(index: Path) -> tuple[list[str], np.ndarray]:
    """Served ids (sorted) and their vectors, rows aligned."""
    with indexer.open(index) as idx:
        ids, vecs = idx.vectors()
        id_list, matrix = list(ids), np.asarray(vecs)
    order = np.argsort(np.array(id_list, dtype=object), kind="stable")
    return [id_list[i] for i in order], matrix[order]


def expected_vector(text: str, chunked: bool = True) -> np.ndarray:
    """The fake model's vector of a one-chunk text; of a longer one, the normalized mean of its chunks'."""
    parts = chunks_of(text, chunked)
    vectors = FakeEmbedder(16).embed(parts)
    if len(parts) == 1:
        one: np.ndarray = vectors[0]
        return one
    mean = vectors.astype(np.float64).sum(axis=0)
    return np.asarray(mean / np.linalg.norm(mean), dtype=np.float32)


def build_reference(workdir: Path, docs: dict[str, str], name: str, chunked: bool = True) -> Reference:
    source = workdir / f"{name}.jsonl"
    write_jsonl(source, docs)
    index = workdir / f"{name}-reference"
    t = time.monotonic()
    run = subprocess.run(sync_cmd(source, index, chunked=chunked), env=ENV, capture_output=True, text=True,
                         timeout=120)
    wall = time.monotonic() - t
    assert run.returncode == 0, run.stderr
    ids, vectors = read_vectors(index)
    assert ids == sorted(docs)
    # The uninterrupted run itself is right: each vector is the fake model's vector of the text (the
    # normalized mean of its chunks' for a long one).
    expected = np.stack([expected_vector(docs[i], chunked) for i in ids])
    assert np.allclose(vectors, expected, rtol=0, atol=1e-6)
    chunks = {c for text in docs.values() for c in chunks_of(text, chunked)}
    if chunked:
        assert max(len(chunks_of(t)) for t in docs.values()) >= 3  # the corpus has long documents
    return Reference(source, docs, index, ids, vectors, len(chunks), wall, chunked)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("crash")


@pytest.fixture(scope="module")
def ref(workdir: Path) -> Reference:
    return build_reference(workdir, make_texts(N_DOCS, SEED), "v1")


@pytest.fixture(scope="module")
def ref2(workdir: Path, ref: Reference) -> Reference:
    """A later version of the source: 15% of the texts edited, 5% of the ids gone, 150 new ids."""
    rng = random.Random(SEED + 1)
    docs = dict(ref.docs)
    for doc_id in rng.sample(sorted(docs), N_DOCS * 15 // 100):
        docs[doc_id] = docs[doc_id] + " (edited)"
    for doc_id in rng.sample(sorted(docs), N_DOCS * 5 // 100):
        del docs[doc_id]
    docs.update({f"new-{i:04d}": f"new {i}: " + " ".join(rng.choice(WORDS) for _ in range(9))
                 for i in range(150)})
    return build_reference(workdir, docs, "v2")


@pytest.fixture(scope="module")
def ref_plain(workdir: Path, ref: Reference) -> Reference:
    """v1 in an unchunked index: what an index from before chunking holds."""
    return build_reference(workdir, ref.docs, "v1-plain", chunked=False)


# -- killing ---------------------------------------------------------------------------------------------

def manifest_counts(index: Path) -> tuple[int, int] | None:
    """(live documents, done contents), or None while the manifest is not readable yet."""
    db = index / "manifest.sqlite"
    if not db.exists():
        return None
    try:
        with Inspection.open(db, timeout=0.05) as look, look.snapshot():
            return look.live_documents(), look.contents_by_state()["done"]
    except sqlite3.Error:
        return None


@dataclass
class Trigger:
    """When to kill: `at` seconds after the start ("time"), or once the manifest holds `at` live
    documents ("scan") or `at` done contents ("embed"); then `delay` seconds more."""

    how: str
    at: float
    delay: float


def run_and_kill(cmd: list[str], index: Path, trigger: Trigger, env: dict[str, str] = ENV) -> bool:
    """Start `cmd`, SIGKILL it when `trigger` fires. False if it finished (exit 0) first."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    start = time.monotonic()
    try:
        if trigger.how == "time":
            time.sleep(max(0.0, start + trigger.at - time.monotonic()))
        else:
            column = 0 if trigger.how == "scan" else 1
            while proc.poll() is None:
                counts = manifest_counts(index)
                if counts is not None and counts[column] >= trigger.at:
                    break
                time.sleep(0.002)
            time.sleep(trigger.delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
    finally:
        _, err = proc.communicate(timeout=120)
    if proc.returncode == -signal.SIGKILL:
        return True
    assert proc.returncode == 0, err
    return False


@dataclass
class AtKill:
    phase: str  # "start" (no index yet), "scan", "embed" or "end" (all done, not yet exited)
    done: int  # contents done
    claimed: int  # contents in a claim: the work in flight that may be redone
    active_claims: int


def state_at_kill(index: Path, n_docs: int) -> AtKill:
    """What the kill left, read straight from the manifest (no migration, no recovery)."""
    if not (index / "index.toml").exists():
        return AtKill("start", 0, 0, 0)
    with Inspection.open(index) as look:
        if "staged" in {o.name for o in look.schema_objects()}:
            states = Counter(c.state for c in look.contents().values() if c.parts == 0)
            claims = look.claims()
            states["claimed"] = sum(1 for s in look.staged()
                                    if s.claim_id in claims and claims[s.claim_id].state == "active")
            states["pending"] = states.get("pending", 0) - states["claimed"]
        else:  # a manifest of schema 1 (a kill inside its migration), whose contents hold claims
            states = look.contents_by_state()
        live = look.live_documents()
        active = look.active_claims()
    todo = states.get("pending", 0) + states.get("claimed", 0)
    phase = "scan" if live < n_docs else "embed" if todo else "end"
    return AtKill(phase, states.get("done", 0), states.get("claimed", 0), active)


# -- checks ----------------------------------------------------------------------------------------------

def invoke(*args: str) -> tuple[int, str]:
    """Run an `indexer` command in this process (the same click command the console script runs)."""
    with _LOCK:  # CliRunner swaps sys.stdout: one at a time
        result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout


def verify_clean(index: Path) -> dict[str, object]:
    code, out = invoke("verify", str(index), "--json")
    report: dict[str, object] = json.loads(out)
    assert code == 0 and report["ok"] and report["problems"] == [], report
    return report


def integrity_ok(index: Path) -> None:
    with Inspection.open(index) as look:
        assert look.integrity_check() == ["ok"]


def check_after_kill(index: Path) -> None:
    """Straight after a kill -9: whatever was done is whole and verifiable."""
    if not (index / "index.toml").exists():
        return  # killed before the index existed: there is nothing to verify yet
    integrity_ok(index)
    verify_clean(index)


def check_resumed(index: Path, ref: Reference, at_kill: AtKill, resumed: dict[str, object],
                  done_before: int = 0, kills: int = 1, max_claims: int = 1) -> None:
    """The resumed run finished the job, redid at most one claim (one group of at most `max_claims`
    claims, where the driver groups them), and left what an uninterrupted run leaves. `done_before`:
    contents done before the first interrupted run; `kills`: runs killed since."""
    with Inspection.open(index) as look, look.snapshot():
        contents, documents = look.contents(), look.documents()
        runs = [(run.state, run.summary) for run in look.runs()]
        claims = Counter(claim.state for claim in look.claims().values())
    states = Counter(c.state for c in contents.values() if c.parts == 0)
    wholes = Counter(c.state for c in contents.values() if c.parts > 0)
    live = sum(1 for d in documents.values() if not d.deleted)
    # Served with its current content: a live document whose own content is done.
    served_ids = [i for i, d in documents.items()
                  if not d.deleted and d.hash in contents and contents[d.hash].state == "done"]
    served = (len(served_ids), len(set(served_ids)))
    done_slots = [c.slot for c in contents.values() if c.state == "done" and c.parts == 0]
    slots = (len(done_slots), len({s for s in done_slots if s is not None}))
    # Every live document is served with its current content, once; nothing pending, failed or claimed.
    assert live == len(ref.docs) and served == (live, live)
    assert set(states) == {"done"}, states
    assert set(wholes) <= {"done"} and bool(wholes) == ref.chunked, wholes  # long documents: whole
    assert states["done"] == ref.distinct
    assert slots[0] == slots[1] == states["done"]  # one slot per done content
    # Resume never re-embeds done work: it embedded exactly what was not done at the kill.
    assert resumed["embedded"] == states["done"] - at_kill.done, (resumed, at_kill, states)
    # At the kill at most one claim or group (inline: one worker) was in flight, so at most chunk_rows
    # (a group: max_claims x chunk_rows) redone: the killed run embedded at most what it committed plus
    # its work in flight.
    assert at_kill.active_claims <= max_claims and at_kill.claimed <= max_claims * CHUNK_ROWS, at_kill
    embedded_total = (at_kill.done - done_before + at_kill.claimed) + int(resumed["embedded"])
    assert embedded_total - (states["done"] - done_before) == at_kill.claimed <= max_claims * CHUNK_ROWS
    tally(TOTALS, "rows redone", at_kill.claimed)
    # The runs table: the last run finished with the summary printed; the killed ones are interrupted.
    last_state, last_summary = runs[-1]
    assert last_state == "finished" and last_summary is not None
    assert json.loads(last_summary)["embedded"] == resumed["embedded"]
    assert all(state in ("finished", "interrupted") for state, _ in runs), runs
    # A kill releases nothing: its claim in flight (if any) expired when the next run started.
    assert claims.get("active", 0) == claims.get("released", 0) == 0, claims
    assert claims.get("expired", 0) <= kills * max_claims, claims
    integrity_ok(index)
    code, out = invoke("status", str(index), "--json")
    st = json.loads(out)
    assert code == 0 and st["done"] == st["documents"] == len(ref.docs) and st["pending"] == 0
    assert st["failed"] == 0 and st["active_claims"] == 0
    check_same_then_compact(index, ref)


def check_same_then_compact(index: Path, ref: Reference) -> None:
    """verify is clean, the vectors are the uninterrupted run's, bit for bit; `compact` leaves no
    .partial file and no orphan chunk, and changes no vector."""
    verify_clean(index)
    ids, vectors = read_vectors(index)
    assert ids == ref.ids and np.array_equal(vectors, ref.vectors)
    if ref.chunked:  # the chunk rows too: each long document's chunks, in order, with their spans
        with indexer.open(index) as idx:
            chunks = idx.chunks()
            rows = sorted(zip(chunks.ids, chunks.ordinals.tolist(), chunks.starts.tolist(),
                              chunks.ends.tolist(), strict=True))
            assert len(rows) == sum(len(chunks_of(ref.docs[i])) for i in ref.ids)
            texts = [ref.docs[i][a:b] for i, _, a, b in rows]
            assert texts == [c for i in ref.ids for c in chunks_of(ref.docs[i])]
    code, out = invoke("compact", str(index), "--json")
    assert code == 0, out
    report = json.loads(out)
    tally(TOTALS, "orphan chunks removed", report["orphan_chunks_removed"])
    tally(TOTALS, "partial files removed", report["partial_files_removed"])
    store = index / "vectors.zarr"
    assert not list(store.rglob("*.partial"))
    with indexer.open(index) as idx:
        used = {slot // CHUNK_ROWS for _, slot in idx.manifest.done_slots()}
        on_disk = set(idx.store.chunk_files())
        assert all(idx.store.chunk_state(c) == "ok" for c in on_disk)
    assert on_disk == used, f"orphan chunks {sorted(on_disk - used)}, missing {sorted(used - on_disk)}"
    report = verify_clean(index)
    assert report["notes"] == [], report
    ids, vectors = read_vectors(index)
    assert ids == ref.ids and np.array_equal(vectors, ref.vectors)


def resume(ref: Reference, index: Path, *extra: str, env: dict[str, str] = ENV) -> dict[str, object]:
    run = subprocess.run(sync_cmd(ref.source, index, *extra, chunked=ref.chunked), env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    summary: dict[str, object] = json.loads(run.stdout)
    return summary


# -- random kills ----------------------------------------------------------------------------------------

def plan_triggers(rng: random.Random, n: int, ref: Reference) -> list[Trigger]:
    """A quarter of the kills during the scan, most while embedding, some at any moment from start-up
    to the end of the run."""
    out = []
    for i in range(n):
        kind = ("scan", "embed", "embed", "time")[i % 4] if i % 8 != 5 else "embed"
        if kind == "scan":
            out.append(Trigger("scan", rng.randrange(1, N_DOCS), rng.uniform(0, 0.01)))
        elif kind == "embed":
            out.append(Trigger("embed", rng.randrange(0, ref.distinct - CHUNK_ROWS), rng.uniform(0, 0.01)))
        else:
            out.append(Trigger("time", rng.uniform(0.05, ref.wall_s), 0.0))
    rng.shuffle(out)
    return out


def kill_episode(ref: Reference, index: Path, trigger: Trigger, phases: Counter[str],
                 chain: int = 0, rng: random.Random | None = None, grouped: bool = False) -> int:
    """A fresh index; run, kill at `trigger`; `chain` more runs each killed at a random moment; then run
    to completion and check. Each kill is checked straight after it. Returns the number of kills.
    `grouped`: the driver groups claims (ENV_GROUPED), so a group of them may be in flight."""
    shutil.rmtree(index, ignore_errors=True)
    cmd = sync_cmd(ref.source, index)
    env, max_claims = (ENV_GROUPED, GROUP_CHUNKS) if grouped else (ENV, 1)
    if not run_and_kill(cmd, index, trigger, env):
        tally(phases, "finished before the kill")
        return 0
    kills = 0
    while True:
        kills += 1
        tally(TOTALS, "random kills")
        at_kill = state_at_kill(index, len(ref.docs))
        tally(phases, at_kill.phase)
        assert at_kill.active_claims <= max_claims and at_kill.claimed <= max_claims * CHUNK_ROWS, at_kill
        check_after_kill(index)
        if kills > chain:
            break
        assert rng is not None
        if not run_and_kill(cmd, index, Trigger("time", rng.uniform(0.3, ref.wall_s), 0.0), env):
            tally(phases, "finished before the kill")
            check_same_then_compact(index, ref)  # this resumed run finished before its kill
            shutil.rmtree(index)
            return kills
    check_resumed(index, ref, at_kill, resume(ref, index, env=env), kills=kills, max_claims=max_claims)
    shutil.rmtree(index)
    return kills


def kill_many(ref: Reference, workdir: Path, rng: random.Random, target: int, phases: Counter[str],
              chains: bool = False, grouped: bool = False) -> int:
    """Kill episodes, PARALLEL at a time, until `target` kills were done."""
    kills = n = 0
    while kills < target:
        jobs: dict[str, Callable[[], object]] = {}
        for trigger in plan_triggers(rng, max(PARALLEL, target - kills), ref):
            chain = rng.randint(1, 3) if chains and n % 3 == 0 else 0
            sub = random.Random(rng.random())
            jobs[f"episode {n} {trigger} chain {chain}"] = partial(
                kill_episode, ref, workdir / f"idx{n}", trigger, phases, chain, sub, grouped)
            n += 1
        kills += sum(int(k) for k in in_parallel(jobs).values())  # type: ignore[call-overload]
    return kills


def test_random_kills(ref: Reference, tmp_path: Path) -> None:
    """Fresh index, one kill at a random moment (start-up, scan, embed), then the same command again."""
    phases: Counter[str] = Counter()
    kills = kill_many(ref, tmp_path, random.Random(SEED), KILLS_FRESH, phases)
    print(f"\nrandom kills: {kills}, by phase: {dict(phases)}")
    assert phases["scan"] >= 2 and phases["embed"] >= 6, phases


def incremental_episode(ref: Reference, ref2: Reference, index: Path, trigger: Trigger) -> int:
    shutil.copytree(ref.index, index)
    cmd = sync_cmd(ref2.source, index, "--delete-missing")
    if not run_and_kill(cmd, index, trigger):
        return 0
    tally(TOTALS, "random kills")
    at_kill = state_at_kill(index, len(ref2.docs))
    check_after_kill(index)
    summary = resume(ref2, index, "--delete-missing")
    check_resumed_incremental(index, ref2, at_kill, summary, ref.distinct)
    shutil.rmtree(index)
    return 1


def test_kills_during_incremental_sync(ref: Reference, ref2: Reference, tmp_path: Path) -> None:
    """An index in line with v1 synced to v2 with --delete-missing (edits, deletions, new ids), killed
    during that sync: once resumed, it equals a fresh uninterrupted index of v2."""
    rng = random.Random(SEED + 2)
    kills = n = 0
    while kills < KILLS_INCREMENTAL and n < 4 * KILLS_INCREMENTAL:
        jobs: dict[str, Callable[[], object]] = {}
        for _ in range(PARALLEL):
            trigger = (Trigger("embed", ref.distinct + rng.randrange(0, 300), rng.uniform(0, 0.01))
                       if n % 2 else Trigger("time", rng.uniform(0.3, 0.9), 0.0))
            jobs[f"incremental {n} {trigger}"] = partial(incremental_episode, ref, ref2, tmp_path / f"inc{n}",
                                                         trigger)
            n += 1
        kills += sum(int(k) for k in in_parallel(jobs).values())  # type: ignore[call-overload]
    assert kills >= KILLS_INCREMENTAL


def check_resumed_incremental(index: Path, ref2: Reference, at_kill: AtKill, resumed: dict[str, object],
                              done_before: int) -> None:
    """Old contents stay done (unreferenced) until compact; served, the index equals a fresh v2 one."""
    with Inspection.open(index) as look:
        contents = look.contents()
    done = sum(1 for c in contents.values() if c.state == "done" and c.parts == 0)
    todo = sum(1 for c in contents.values() if c.state != "done")
    assert todo == 0
    assert resumed["embedded"] == done - at_kill.done
    assert at_kill.claimed <= CHUNK_ROWS and at_kill.active_claims <= 1
    embedded_total = at_kill.done - done_before + at_kill.claimed + int(resumed["embedded"])
    assert embedded_total - (done - done_before) == at_kill.claimed <= CHUNK_ROWS
    tally(TOTALS, "rows redone", at_kill.claimed)
    integrity_ok(index)
    check_same_then_compact(index, ref2)
    # compact dropped the contents of the edited and deleted documents: only v2's are left.
    with Inspection.open(index) as look:
        assert sum(1 for c in look.contents().values() if c.parts == 0) == ref2.distinct
        # and the chunk lists of the edited and deleted long documents
        live_hashes = {d.hash for d in look.documents().values() if not d.deleted}
        assert [t for t in look.text_chunks() if t.whole not in live_hashes] == []


# -- named crash points ----------------------------------------------------------------------------------

CRASH_POINTS = [
    "mid-migration",  # creating the manifest of a new index
    "mid-scan:1", "mid-scan:6",
    "after-chunk-write:1", "after-chunk-write:60",
    "mid-commit:1", "mid-commit:90",
    "mid-commit:last",  # the last claim: only claimed work is left for the next run
]


def crash_point_episode(ref: Reference, index: Path, point: str) -> None:
    point = point.replace("last", str(-(-ref.distinct // CHUNK_ROWS)))
    env = dict(ENV, INDEXER_CRASH_AT=point)
    run = subprocess.run(sync_cmd(ref.source, index), env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == -signal.SIGKILL, (run.returncode, run.stderr)
    tally(TOTALS, "crash-point kills")
    at_kill = state_at_kill(index, len(ref.docs))
    name = point.partition(":")[0]
    if name == "mid-migration":
        assert at_kill.phase == "start"
    elif name == "mid-scan":
        assert at_kill.phase == "scan"
    else:
        # The claim in flight is whole in its chunk file (written before the commit) but not done.
        nth = int(point.partition(":")[2])
        assert at_kill.phase == "embed" and at_kill.active_claims == 1
        assert at_kill.done == (nth - 1) * CHUNK_ROWS
        assert at_kill.claimed == min(CHUNK_ROWS, ref.distinct - at_kill.done) > 0
        with Inspection.open(index) as look:
            (chunk,) = [c.chunk for c in look.claims().values() if c.state == "active"]
        assert (index / "vectors.zarr" / "c" / str(chunk) / "0").stat().st_size == CHUNK_ROWS * 16 * 4
        if at_kill.done + at_kill.claimed == ref.distinct:
            tally(TOTALS, "kills with only claimed work left")
    check_after_kill(index)
    check_resumed(index, ref, at_kill, resume(ref, index))


def old_manifest_episode(ref: Reference, index: Path) -> None:
    """A manifest at schema version 1 (no runs table, no chunks) upgraded by a sync killed inside the
    migration: the migration is atomic (still version 1 after the kill), and the next sync upgrades and
    finishes. (`ref` is unchunked: an index from before chunking.)"""
    shutil.copytree(ref.index, index)
    downgrade_to_schema_1(index / "manifest.sqlite")
    env = dict(ENV, INDEXER_CRASH_AT="mid-migration")
    run = subprocess.run(sync_cmd(ref.source, index, chunked=False), env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == -signal.SIGKILL, run.stderr
    tally(TOTALS, "crash-point kills")
    with Inspection.open(index) as look:
        versions = [version for version, _, _ in look.migrations()]
        tables = look.table_names()
    assert versions == [1] and "runs" not in tables
    at_kill = state_at_kill(index, len(ref.docs))
    summary = resume(ref, index)
    assert summary["embedded"] == 0
    with Inspection.open(index) as look:
        versions = [version for version, _, _ in look.migrations()]
    assert versions[:2] == [1, 2]
    check_resumed(index, ref, at_kill, summary, done_before=ref.distinct)


GROUPED_CRASH_POINTS = ["after-chunk-write:1", "after-chunk-write:40", "mid-commit:1", "mid-commit:4"]


def grouped_crash_point_episode(ref: Reference, index: Path, point: str) -> None:
    """A kill at a named crash point while the driver groups claims: groups of 1, 2, 4, ... chunks
    (doubling, the fake model being fast, up to half of `claim_chunks_max`), committed one transaction
    a group, each group's chunks written while the next group is embedded. At the kill exactly the
    groups before are done and the group in flight is claimed, whole, with the group after it
    (claimed while the first was written); the resumed run redoes them."""
    run = subprocess.run(sync_cmd(ref.source, index), env=dict(ENV_GROUPED, INDEXER_CRASH_AT=point),
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == -signal.SIGKILL, (run.returncode, run.stderr)
    tally(TOTALS, "crash-point kills (grouped)")
    at_kill = state_at_kill(index, len(ref.docs))
    assert at_kill.phase == "embed" and 1 <= at_kill.active_claims <= GROUP_CHUNKS, at_kill
    name, _, nth = point.partition(":")
    if name == "mid-commit":  # the n-th commit transaction: groups 1 .. n-1 are done, n and n+1 claimed
        n = int(nth)
        sizes = [min(2 ** k, GROUP_CHUNKS // 2) for k in range(n + 1)]  # chunks of groups 1 .. n+1
        assert at_kill.done == sum(sizes[:n - 1]) * CHUNK_ROWS, at_kill
        assert at_kill.active_claims == sizes[n - 1] + sizes[n] <= GROUP_CHUNKS, at_kill
        assert at_kill.claimed == at_kill.active_claims * CHUNK_ROWS
    else:  # the n-th chunk written: the chunks of earlier groups are done, this one's group is not
        assert at_kill.done % CHUNK_ROWS == 0 and at_kill.done < int(nth) * CHUNK_ROWS
    check_after_kill(index)
    check_resumed(index, ref, at_kill, resume(ref, index, env=ENV_GROUPED), max_claims=GROUP_CHUNKS)


def test_crash_points_grouped(ref: Reference, tmp_path: Path) -> None:
    in_parallel({point: partial(grouped_crash_point_episode, ref, tmp_path / f"g{i}", point)
                 for i, point in enumerate(GROUPED_CRASH_POINTS)})


def test_random_kills_grouped(ref: Reference, tmp_path: Path) -> None:
    """Random kills while the driver groups claims: at most one group is redone."""
    phases: Counter[str] = Counter()
    kills = kill_many(ref, tmp_path, random.Random(SEED + 7), KILLS_GROUPED, phases, grouped=True)
    assert kills >= KILLS_GROUPED


def test_crash_points(ref: Reference, ref_plain: Reference, tmp_path: Path) -> None:
    """One kill at each named crash point (INDEXER_CRASH_AT), and one inside the upgrade of an old
    manifest; each then resumed and checked."""
    jobs: dict[str, Callable[[], object]] = {
        point: partial(crash_point_episode, ref, tmp_path / f"idx{i}", point)
        for i, point in enumerate(CRASH_POINTS)}
    jobs["mid-migration of a version-1 manifest"] = lambda: old_manifest_episode(ref_plain, tmp_path / "old")
    in_parallel(jobs)


# -- the long version ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_many_random_kills(ref: Reference, tmp_path: Path) -> None:
    """Many more kills; one episode in three also kills the resumed runs (up to three times) before
    the last run finishes."""
    phases: Counter[str] = Counter()
    kills = kill_many(ref, tmp_path, random.Random(SEED + 100), SLOW_KILLS, phases, chains=True)
    print(f"\nslow: {kills} kills, by phase: {dict(phases)}")
    assert phases["scan"] >= 5 and phases["embed"] >= 20, phases


@pytest.mark.slow
def test_many_random_kills_grouped(ref: Reference, tmp_path: Path) -> None:
    """The long version with groups of claims: a third as many kills, chains included."""
    phases: Counter[str] = Counter()
    kills = kill_many(ref, tmp_path, random.Random(SEED + 200), SLOW_KILLS // 3, phases, chains=True,
                      grouped=True)
    print(f"\nslow, grouped: {kills} kills, by phase: {dict(phases)}")
    assert phases["embed"] >= 10, phases


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    """Prints what this module did at its end (pytest -s), for docs/RELIABILITY.md."""
    yield
    print(f"\ncrash harness totals: {dict(TOTALS)}")
