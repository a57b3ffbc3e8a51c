"""One sync: scan -> claim (lease) -> embed -> write whole chunk -> commit (fenced).

Scan streams the sources in batches of `settings.scan_batch` records, so memory stays flat in the number
of documents. The embed loop is the one mechanism every worker backend shares: a claim is leased,
embedded, its chunk written durably, and only then committed.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TypeVar, cast

import numpy as np
import psutil

from ._faults import crash_point
from .chunking import Chunker, make_chunker
from .config import DTYPES, RUNTIMES, EmbeddingConfig, difference_line, read_config
from .embedders import Embedder, ModelInfo
from .errors import ConfigMismatchError, IndexerError, LeaseLostError, SourceError
from .index import CONFIG, Index
from .manifest import Claim, Manifest, ScanCounts
from .runners import Runner, WorkerLost, make_runner
from .runners.inline import InlineRunner
from .settings import DEFAULT_MODEL, Settings
from .sources import IterableSource, Record, Skip, Source, Template, open_sources
from .store import VectorStore

__all__ = ["Progress", "SyncSummary", "sync", "write_and_commit"]

T = TypeVar("T")


@dataclass(frozen=True)
class Progress:
    """What a sync reports to `on_progress` after each scan batch and each committed claim."""

    phase: str  # "scan" or "embed"
    processed: int
    total: int | None
    docs_per_s: float  # `unit`s a second
    eta_s: float | None
    rss_mb: float
    unit: str = "documents"  # what `processed` counts: documents scanned, or chunks embedded


@dataclass
class SyncSummary:
    scanned: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    deleted: int = 0
    embedded: int = 0  # chunks embedded (a document that fits the model's window is one chunk)
    chunks: int = 0  # chunks of the new and changed documents
    truncated: int = 0  # new and changed documents cut at the model's window (an unchunked index)
    failed: int = 0
    skipped: int = 0
    duplicates: int = 0
    seconds: float = 0.0
    scan_seconds: float = 0.0
    embed_seconds: float = 0.0
    dry_run: bool = False
    would_embed: int = 0
    claims: int = 0
    fencing_refusals: int = 0
    workers_lost: int = 0
    peak_rss_mb: float = 0.0
    warnings: list[str] = field(default_factory=list)
    # What the runner says about its work when it has a `stats()` method (the openai backend: requests,
    # retries, tokens sent, achieved tokens/minute, truncations); its "warnings" join `warnings`.
    backend_stats: dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class _Meter:
    def __init__(self, phase: str, total: int | None, callback: Callable[[Progress], None] | None,
                 unit: str = "documents") -> None:
        self.phase, self.total, self.callback, self.unit = phase, total, callback, unit
        self.start = time.perf_counter()
        self.processed = 0
        self.peak_rss_mb = 0.0

    def add(self, n: int) -> None:
        self.processed += n
        rss = psutil.Process().memory_info().rss / 2**20
        self.peak_rss_mb = max(self.peak_rss_mb, rss)
        if self.callback is None:
            return
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        rate = self.processed / elapsed
        eta = (self.total - self.processed) / rate if self.total is not None and rate > 0 else None
        self.callback(Progress(self.phase, self.processed, self.total, rate, eta, rss, self.unit))


def _batches(items: Iterable[Record | Skip], size: int) -> Iterator[list[Record | Skip]]:
    """Batches of `size` items. When a source breaks off (SourceError), the records read before the
    break are handed on as a last batch first, so that they are scanned, and then the error is raised."""
    it = iter(items)
    while True:
        batch: list[Record | Skip] = []
        try:
            for item in itertools.islice(it, size):
                batch.append(item)
        except SourceError:
            if batch:
                yield batch
            raise
        if not batch:
            return
        yield batch


@contextmanager
def _read_ahead(items: Iterator[T], depth: int = 2) -> Iterator[Iterator[T]]:
    """Iterate `items` in a second thread, at most `depth` items ahead of the caller. An exception of
    the reader is raised in the caller's thread at the point where it happened in the sequence; when
    the caller stops (an error, Ctrl-C), the reader stops at its next item and `items` is closed."""
    ahead: queue.Queue[tuple[bool, object]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(done: bool, value: object) -> None:
        while not stop.is_set():
            try:
                ahead.put((done, value), timeout=0.1)
                return
            except queue.Full:
                continue

    def read() -> None:
        try:
            for item in items:
                put(False, item)
                if stop.is_set():
                    break
            else:
                put(True, None)
        except BaseException as exc:  # handed to the caller's thread, raised there
            put(True, exc)
        finally:
            close = getattr(items, "close", None)
            if callable(close):
                close()

    def consume() -> Iterator[T]:
        while True:
            done, value = ahead.get()
            if done:
                if isinstance(value, BaseException):
                    raise value
                return
            yield cast(T, value)

    reader = threading.Thread(target=read, name="indexer-scan-reader", daemon=True)
    reader.start()
    try:
        yield consume()
    finally:
        stop.set()
        # A reader blocked on a slow source (a pipe) cannot be woken; it ends at its next item.
        reader.join(timeout=1.0)


# -- the shared claim -> embed -> write -> commit step ------------------------------------------------

def write_and_commit(manifest: Manifest, store: VectorStore, claim: Claim, vectors: np.ndarray,
                     failures: dict[int, str]) -> tuple[int, int]:
    """Write the claim's chunk whole and durably, then commit (fenced).
    Returns (done, failed for good): a failure with attempts left goes back to pending."""
    block = np.full((store.chunk_rows, store.dim), np.nan, dtype=store.dtype)
    block[:len(vectors)] = vectors
    finite = np.isfinite(block[:len(vectors)]).all(axis=1)
    for i in np.flatnonzero(~finite):
        failures.setdefault(int(i), "the model produced a non-finite vector")
    block[list(failures)] = np.nan
    done = [(h, claim.chunk * store.chunk_rows + i) for i, h in enumerate(claim.hashes)
            if i not in failures]
    if done:
        store.write_chunk(claim.chunk, block)
        crash_point("after-chunk-write")
    gave_up = manifest.commit(claim, done, [(claim.hashes[i], r) for i, r in failures.items()])
    return len(done), gave_up


# -- the sync ------------------------------------------------------------------------------------------

def _requested_config(i: ModelInfo, dtype: str, query_prompt: str, template: str) -> EmbeddingConfig:
    return EmbeddingConfig(model=i.model, revision=i.revision, dim=i.dim, dtype=dtype,
                           normalize=i.normalize, max_seq_length=i.max_seq_length, prompt=i.prompt,
                           runtime=i.runtime, truncate_dim=i.truncate_dim, query_prompt=query_prompt,
                           template=template)


def _chunking_of(config: EmbeddingConfig, chunking: bool | None, chunk_tokens: int | None,
                 chunk_overlap: int | None) -> EmbeddingConfig:
    """`config` with the chunking settings of a new index: on unless turned off, at the window."""
    return replace(config, chunking=True if chunking is None else chunking,
                   chunk_tokens=chunk_tokens or 0, chunk_overlap=chunk_overlap or 0)


def _chunker_for(config: EmbeddingConfig) -> Chunker | None:
    """What cuts (or, in an unchunked index, counts) the long texts of an index. An API model
    (revision "api:HOST") is chunked at its per-input limit, counted as its backend counts."""
    return make_chunker(config.model, config.max_seq_length, config.prompt, config.chunk_tokens,
                        config.chunk_overlap, api=config.revision.startswith("api:"))


def _check_chunking(chunking: bool | None, chunk_tokens: int | None, chunk_overlap: int | None) -> None:
    for name, value, least in (("--chunk-tokens", chunk_tokens, 1), ("--chunk-overlap", chunk_overlap, 0)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
            raise IndexerError(f"{name} must be a whole number of tokens, at least {least} (got {value!r})")
    if chunking is False and (chunk_tokens or chunk_overlap):
        raise IndexerError("--no-chunking embeds whole documents: --chunk-tokens and --chunk-overlap apply "
                           "to chunked indexes only; give one or the other")


def _check_names(index: Index, **asked: object) -> None:
    """Refuse a different model, dtype, runtime, truncation, prompt, template or chunking (each given as
    a keyword, None: not asked) before anything is read or loaded."""
    diffs = [difference_line(name, getattr(index.config, name), value) for name, value in asked.items()
             if value is not None and value != getattr(index.config, name)]
    if diffs:
        raise ConfigMismatchError(
            f"index {index.path} is bound to another embedding configuration; nothing was changed.\n  "
            + "\n  ".join(diffs)
            + "\nSync with the index's settings, or build a new index in another --index directory.")


def sync(index_dir: str | Path, sources: Iterable[object] | Iterable[str] | None = None, *,
         paths: Iterable[str] | None = None, model: str | None = None, dtype: str | None = None,
         batch_size: int | None = None, delete_missing: bool = False, dry_run: bool = False,
         id_field: str = "id", text_field: str = "text", settings: Settings | None = None,
         on_progress: Callable[[Progress], None] | None = None,
         backend: str = "inline", backend_options: dict[str, object] | None = None,
         embedder_options: dict[str, object] | None = None,
         embedder: Embedder | None = None, runner: Runner | None = None,
         runtime: str | None = None, truncate_dim: int | None = None,
         batch_tokens: int | None = None, prompt: str | None = None, prompt_name: str | None = None,
         query_prompt: str | None = None, template: str | None = None, chunking: bool | None = None,
         chunk_tokens: int | None = None, chunk_overlap: int | None = None) -> SyncSummary:
    """Bring the index at `index_dir` in line with the documents.

    Give documents either as `sources` (any iterable of {"id", "text"} dicts or (id, text) pairs) or as
    `paths` (files, directories, "-" for stdin). `embedder` replaces the model loaded by name, and
    `runner` the one `backend` names: the seams for tests and custom models. A runner is made only
    when there is something to embed, so a sync with no change never loads a model.

    `runtime` ("torch", "onnx", "onnx-int8") and `truncate_dim` (keep the first D dims, renormalized)
    are part of the index's configuration, like `model` and `dtype`: None means the default for a new
    index (torch, no truncation) and the index's own for an existing one; anything else must match.

    A forward pass takes at most `batch_size` texts and `batch_tokens` padded tokens (count x longest)
    of texts of similar token length; `batch_tokens=0` batches by count alone. Neither changes a vector.

    `prompt` is prepended to every document as sentence-transformers' `encode(text, prompt=...)` does;
    `prompt_name` takes it from the prompts the model defines; `query_prompt` is the one queries get.
    `template` ("{title}: {text}") composes the embedded text from each record's fields. All four are
    part of the index's configuration, like `runtime`: None means "" for a new index and the index's
    own for an existing one; anything else must match.

    `chunking` (default True for a new index), `chunk_tokens` (default: the model's window) and
    `chunk_overlap` (default 0) are part of the configuration too: a document longer than the budget
    is embedded as chunks cut at paragraph, sentence and word breaks (indexer/chunking.py). None means
    the index's own for an existing index. The fake model chunks only by `chunk_tokens` (words).
    """
    settings = settings or Settings()
    if batch_tokens is not None and batch_tokens < 0:
        raise IndexerError("--batch-tokens must be at least 1 (or 0: batches by --batch-size alone)")
    batch_tokens = settings.batch_tokens if batch_tokens is None else batch_tokens
    if dtype is not None and dtype not in DTYPES:
        raise IndexerError(f"dtype {dtype!r} is not supported; use float32 or float16")
    if runtime is not None and runtime not in RUNTIMES:
        raise IndexerError(f"runtime {runtime!r} is not known; choose one of {', '.join(RUNTIMES)}")
    if truncate_dim is not None and (isinstance(truncate_dim, bool) or not isinstance(truncate_dim, int)
                                     or truncate_dim < 1):
        raise IndexerError(f"--truncate-dim must be a whole number of dimensions, at least 1 (got "
                           f"{truncate_dim!r})")
    if batch_size is not None and batch_size < 1:
        raise IndexerError("--batch-size must be at least 1")
    _check_chunking(chunking, chunk_tokens, chunk_overlap)
    seam = runner or embedder
    if seam is not None and (runtime is not None or truncate_dim is not None or prompt is not None
                             or prompt_name is not None):
        raise IndexerError("runtime, truncate_dim and prompt choose how a model is loaded by name; with "
                           "your own embedder or runner, give them to load_embedder(name, runtime=..., "
                           "truncate_dim=..., prompt=...) instead")
    index_dir = Path(index_dir)
    existing = read_config(index_dir / CONFIG) if Index.exists(index_dir) else None
    if prompt_name is not None:
        if prompt is not None:
            raise IndexerError("give --prompt or --prompt-name, not both")
        prompt = _named_prompt(model or (existing.model if existing else DEFAULT_MODEL), prompt_name)
    if template is None and existing is not None:
        template = existing.template
    parsed_template = Template.parse(template) if template else None  # a bad one stops us here
    readers: list[Source | IterableSource] = []
    if paths is not None:
        readers.extend(open_sources(paths, id_field, text_field, parsed_template))
    if sources is not None:
        readers.append(IterableSource(sources, id_field, text_field, parsed_template))
    t0 = time.perf_counter()
    summary = SyncSummary(dry_run=dry_run)
    index: Index | None = None
    chunker: Chunker | None = None
    if existing is not None:
        index = Index.open(index_dir, settings)
        chunk_asked = {"chunking": chunking, "chunk_tokens": chunk_tokens, "chunk_overlap": chunk_overlap}
        if seam is None:
            _check_names(index, model=model, dtype=dtype, runtime=runtime, truncate_dim=truncate_dim,
                         prompt=prompt, query_prompt=query_prompt, template=template, **chunk_asked)
        else:
            _check_names(index, model=seam.info.model, dtype=dtype, runtime=seam.info.runtime,
                         truncate_dim=seam.info.truncate_dim, prompt=seam.info.prompt,
                         query_prompt=query_prompt, template=template, **chunk_asked)
    elif not dry_run:
        if runner is None:
            runner = _make_runner(model or DEFAULT_MODEL, batch_size or settings.batch_size, batch_tokens,
                                  embedder, backend, backend_options,
                                  _with_runtime(embedder_options, runtime, truncate_dim, prompt))
        requested = _chunking_of(_requested_config(runner.info, dtype or settings.dtype, query_prompt or "",
                                                   template or ""), chunking, chunk_tokens, chunk_overlap)
        chunker = _chunker_for(requested)
        if chunker is not None and chunk_tokens:
            chunker.budget  # noqa: B018 (loads the tokenizer: a budget over the window is refused here)
        try:
            index = Index.create(index_dir, requested, settings)
        except FileExistsError:  # another sync created it meanwhile
            index = Index.open(index_dir, settings)
            index.config.require_same(requested, index_dir)
    manifest = index.manifest if index is not None else Manifest(Path(":memory:"), settings, create=True)
    if chunker is None and index is not None:
        chunker = _chunker_for(index.config)
    run_id = None if dry_run else manifest.start_run()
    state = "failed"
    try:
        _scan(manifest, readers, summary, settings, dry_run, delete_missing, on_progress, chunker,
              index is not None and index.config.chunking)
        if not dry_run:
            assert index is not None
            _embed_all(index, summary, on_progress, runner or (lambda: _make_runner(
                model or index.config.model, batch_size or settings.batch_size, batch_tokens, embedder,
                backend, backend_options, _with_runtime(embedder_options, runtime or index.config.runtime,
                                               truncate_dim or index.config.truncate_dim,
                                               index.config.prompt if prompt is None else prompt))))
        state = "finished"
    except KeyboardInterrupt:
        state = "interrupted"
        raise
    finally:
        summary.seconds = time.perf_counter() - t0
        summary.peak_rss_mb = max(summary.peak_rss_mb, psutil.Process().memory_info().rss / 2**20)
        if run_id is not None:
            manifest.finish_run(run_id, state, {k: v for k, v in summary.to_dict().items()
                                                if k != "warnings"})
        manifest.close()
    return summary


def _scan(manifest: Manifest, readers: list[Source | IterableSource], summary: SyncSummary,
          settings: Settings, dry_run: bool, delete_missing: bool,
          on_progress: Callable[[Progress], None] | None, chunker: Chunker | None = None,
          split: bool = False) -> None:
    t = time.perf_counter()
    counts = ScanCounts()
    meter = _Meter("scan", None, on_progress)
    manifest.begin_scan()
    for reader in readers:
        # Files are read (parsed, validated) by a second thread while SQLite, which lets go of the GIL,
        # works on the batch before. A Python iterable is read in the caller's thread: it may not
        # allow another (a sqlite3 cursor does not).
        batches = _batches(reader, settings.scan_batch)
        with _read_ahead(batches) if not isinstance(reader, IterableSource) else nullcontext(batches) as it:
            for batch in it:
                manifest.scan_batch(batch, counts, dry_run=dry_run, chunker=chunker, split=split)
                meter.add(len(batch))
    # Only a scan that read every source to its end may decide what is missing.
    if delete_missing:
        summary.deleted = manifest.missing_ids_count() if dry_run else manifest.delete_missing()
    for name in ("scanned", "new", "changed", "unchanged", "skipped", "duplicates", "warnings", "chunks",
                 "truncated"):
        setattr(summary, name, getattr(counts, name))
    if counts.truncated:
        summary.warnings.append(
            f"{counts.truncated} document(s) are longer than the model's window: this index embeds one "
            "vector a document (--no-chunking, or built before chunking), so their text past the window "
            "is not embedded. A new index chunks long documents by default.")
    summary.would_embed = counts.to_embed
    summary.peak_rss_mb = meter.peak_rss_mb
    summary.scan_seconds = time.perf_counter() - t


def _with_runtime(options: dict[str, object] | None, runtime: str | None,
                  truncate_dim: int | None, prompt: str | None = None) -> dict[str, object]:
    """The embedder options with the runtime, the truncation and the prompt, where they are not the
    defaults (so that a backend which takes no embedder options is asked for none by default)."""
    out = dict(options or {})
    if runtime is not None and runtime != "torch":
        out["runtime"] = runtime
    if truncate_dim:
        out["truncate_dim"] = truncate_dim
    if prompt:
        out["prompt"] = prompt
    return out


def _named_prompt(model: str, name: str) -> str:
    """The prompt called `name` in the model's sentence-transformers configuration."""
    from .embedders.sentence_transformers import model_prompts
    from .errors import ModelLoadError

    prompts = {} if model.startswith("fake:") else model_prompts(model)
    if name not in prompts:
        have = ", ".join(repr(k) for k in prompts) if prompts else "none"
        raise ModelLoadError(f"--prompt-name {name!r}: model {model!r} defines no prompt of that name "
                             f"(its prompts: {have}); give the text with --prompt instead")
    return prompts[name]


def _make_runner(model: str, batch_size: int, batch_tokens: int | None, embedder: Embedder | None,
                 backend: str, options: dict[str, object] | None,
                 embedder_options: dict[str, object] | None) -> Runner:
    if embedder is not None:
        return InlineRunner(embedder)
    embedder_options = dict(embedder_options or {})
    if batch_tokens and backend != "openai":  # the API packs its own requests
        embedder_options["batch_tokens"] = batch_tokens
    return make_runner(backend, model, batch_size=batch_size, embedder_options=embedder_options,
                       **(options or {}))


def _embed_all(index: Index, summary: SyncSummary, on_progress: Callable[[Progress], None] | None,
               runner: Runner | Callable[[], Runner]) -> None:
    t = time.perf_counter()
    manifest, store = index.manifest, index.store
    # Claims of a killed or timed-out worker go back to pending first: they may be all that is left.
    manifest.expire_claims()
    pending = int(manifest.conn.execute("SELECT count(*) FROM contents WHERE state = 'pending' "
                                        "AND parts = 0 AND text IS NOT NULL").fetchone()[0])
    if pending == 0:
        if not callable(runner):  # made for a new index that has nothing to embed: let it go
            runner.close()
        return
    if callable(runner):
        runner = runner()
    try:
        ours = index.config
        ours.require_same(_chunking_of(_requested_config(runner.info, ours.dtype, ours.query_prompt,
                                                         ours.template),
                                       ours.chunking, ours.chunk_tokens, ours.chunk_overlap), index.path)
        manifest.prepare_for_claims()
        _drive(manifest, store, runner, summary, _Meter("embed", pending, on_progress, "chunks"))
    finally:
        _collect_stats(runner, summary)
        runner.close()
    summary.embed_seconds = time.perf_counter() - t


def _collect_stats(runner: Runner, summary: SyncSummary) -> None:
    stats = getattr(runner, "stats", None)
    if not callable(stats):
        return
    found = dict(stats())
    warnings = found.pop("warnings", [])
    if isinstance(warnings, list):
        summary.warnings.extend(str(w) for w in warnings)
    summary.backend_stats = found


def _drive(manifest: Manifest, store: VectorStore, runner: Runner, summary: SyncSummary,
           meter: _Meter) -> None:
    """Keep `runner.capacity` claims in flight; write and commit each as its vectors arrive."""
    # Grow the shape ahead of the claims (unwritten chunks cost nothing and read as NaN): rewriting
    # zarr.json for every claim cost 4-8 ms a claim (cProfile of a 20k and a 100k sync).
    grow = lambda chunk: store.ensure_chunks(chunk + 1, spare=16 + chunk // 8)  # noqa: E731
    in_flight: dict[Future[tuple[np.ndarray, dict[int, str]]], Claim] = {}
    renew_every = manifest.settings.lease_seconds / 3
    last_renew = time.monotonic()
    exhausted = False
    try:
        while True:
            while not exhausted and len(in_flight) < runner.capacity:
                claim = manifest.claim(store.chunk_rows, on_chunk=grow)
                if claim is None:
                    exhausted = True
                    break
                try:
                    in_flight[runner.submit(claim.texts)] = claim
                except BaseException:  # Ctrl-C (or a runner error) before the claim was in flight
                    manifest.release(claim)
                    raise
            if not in_flight:
                break
            finished, _ = wait(in_flight, timeout=renew_every, return_when=FIRST_COMPLETED)
            if time.monotonic() - last_renew > renew_every:
                for future, claim in list(in_flight.items()):
                    try:
                        manifest.renew(claim)
                    except LeaseLostError:  # taken over while this worker was stalled: drop it alone
                        summary.fencing_refusals += 1
                        del in_flight[future]
                last_renew = time.monotonic()
            for future in finished:
                if future not in in_flight:
                    continue
                claim = in_flight.pop(future)
                try:
                    vectors, failures = future.result()
                except WorkerLost as exc:
                    summary.workers_lost += 1
                    summary.warnings.append(f"claim {claim.id}: {exc}; its documents go back to pending")
                    manifest.release(claim)
                    exhausted = False
                    continue
                except BaseException:  # the runner gave up: this claim, popped already, goes back too
                    manifest.release(claim)
                    raise
                try:
                    done, failed = write_and_commit(manifest, store, claim, vectors, failures)
                except LeaseLostError:
                    summary.fencing_refusals += 1
                    continue
                except BaseException:  # Ctrl-C mid-write: the claim, popped already, goes back too
                    manifest.release(claim)  # (a no-op if its commit went through)
                    raise
                summary.claims += 1
                summary.embedded += done
                summary.failed += failed
                meter.add(done)
    finally:
        for claim in in_flight.values():
            manifest.release(claim)
        summary.peak_rss_mb = max(summary.peak_rss_mb, meter.peak_rss_mb)
