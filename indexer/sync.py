"""One sync: scan -> claim (lease) -> embed -> write whole chunk -> commit (fenced).

Scan streams the sources in batches of `settings.scan_batch` records, so memory stays flat in the number
of documents. The embed loop is the one mechanism every worker backend shares: a claim is leased,
embedded, its chunk written durably, and only then committed.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import queue
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import ExitStack, closing, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TypeVar, cast

import numpy as np
import psutil

from ._faults import crash_point
from ._gc import fewer_collections
from ._signals import stoppable
from .chunking import Chunker, make_chunker
from .config import DTYPES, RUNTIMES, EmbeddingConfig, difference_line, equivalent, same_weights
from .embedders import Embedder, ModelInfo, check_loadable, truncation_warning
from .embedders.sentence_transformers import DEFAULT_MODEL_NAMES
from .errors import (
    BackendUnavailableError,
    ConfigMismatchError,
    DeleteRefusedError,
    IncompleteSourceError,
    IndexerError,
    LeaseLostError,
    SourceError,
)
from .index import Index
from .manifest import Claim, Finished, Manifest, ScanCounts, ScanInput, scan_input
from .runners import BackendFailure, Runner, WorkerHung, WorkerLost, make_runner
from .runners._liveness import HangRule
from .runners.inline import InlineRunner
from .settings import DEFAULT_MODEL, Settings
from .sources import FolderFilter, IterableSource, Record, Skip, Source, Template, open_sources
from .store import VectorStore

__all__ = ["DEFAULT_MAX_DELETE", "Progress", "SyncSummary", "sync", "write_chunk"]

# A sync may delete at most this fraction of the live documents unless told otherwise: an empty or cut
# source must not wipe the index.
DEFAULT_MAX_DELETE = 0.5
MISSING_IDS_LISTED = 10_000

T = TypeVar("T")


@dataclass(frozen=True)
class Progress:
    """What a sync reports to `on_progress`: after each scan batch; in the embed phase after each
    committed claim and, within claims, as workers finish batches (about twice a second at most).

    In the embed phase `processed` counts texts embedded (committed, or in a finished batch of a claim
    in flight) and `eta_s` comes from characters done vs left: claims go shortest texts first, so a
    rate in documents would promise too early an end."""

    phase: str  # "load" (the model starts; once, before its first use), "scan" or "embed"
    processed: int
    total: int | None
    docs_per_s: float  # `unit`s a second
    eta_s: float | None
    rss_mb: float
    detail: str = ""  # "load": what is loading (model, runtime, backend and its workers)
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
    # What would_embed counts: chunks (a document that fits the window is one), or documents for a dry
    # run before the index exists, which loads no model and so cannot split long documents yet.
    would_embed_unit: str = "chunks"
    model: str = ""  # the name this sync knew the model by (another name of the index's weights is fine)
    # The backend that ran the model and its layout (workers, threads, devices), as chosen by
    # --backend auto where asked; empty when no model was loaded.
    backend: str = ""
    backend_settings: dict[str, object] = field(default_factory=dict)
    # Live documents the sources no longer hold (counted when deleting, and by a dry run); a dry run
    # lists the first MISSING_IDS_LISTED of their ids.
    missing: int = 0
    missing_ids: list[str] = field(default_factory=list)
    claims: int = 0
    fencing_refusals: int = 0
    workers_lost: int = 0  # worker deaths (however many claims each took), hangs included
    returned: int = 0  # documents the backend failed (outage, timeout, ...): pending again, no attempt used
    workers_hung: int = 0  # workers killed because they finished no batch within the hang deadline
    peak_rss_mb: float = 0.0  # this (the driver's) process
    # Worker processes (processes, gpus, ray backends): the sum of each worker's peak, an upper bound of
    # their peak together; per worker in backend_stats["peak_rss_mb_per_worker"].
    workers_peak_rss_mb: float = 0.0
    warnings: list[str] = field(default_factory=list)
    # Sources that cannot tell which documents are missing (cut mid-record, or no record read), each
    # as "file:line: why": with any, --delete-missing deletes nothing.
    incomplete_sources: list[str] = field(default_factory=list)
    # What the runner says about its work when it has a `stats()` method (the openai backend: requests,
    # retries, tokens sent, achieved tokens/minute, truncations); its "warnings" join `warnings`.
    backend_stats: dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class _Meter:
    """A phase's progress: what is committed plus, in the embed phase, the finished batches of groups of
    claims (`_Group`) in flight (reported by the runner's threads through `on_batch`, so under a lock).
    Reports go to the callback from the driver's thread only, at most every `interval` seconds between
    commits. `unit` is what it counts: documents scanned, or chunks (plain documents and long
    documents' chunks) embedded."""

    def __init__(self, phase: str, total: int | None, callback: Callable[[Progress], None] | None,
                 total_chars: int | None = None, interval: float = 0.5, unit: str = "documents") -> None:
        self.phase, self.total, self.callback, self.unit = phase, total, callback, unit
        self.total_chars, self.interval = total_chars, interval
        self.start = time.perf_counter()
        self.processed = 0
        self.chars = 0
        self.peak_rss_mb = 0.0
        self._partial: dict[int, tuple[int, int]] = {}  # claim id -> (texts, chars) of finished batches
        self._lock = threading.Lock()
        self._driver = threading.get_ident()
        self._last_report = self.start
        self._last_processed = -1

    def add(self, n: int, chars: int = 0) -> None:
        """`n` documents committed (`chars`: the characters of the texts their claim finished)."""
        self.processed += n
        self.chars += chars
        self._report()

    def on_batch(self, claim: Claim | _Group) -> Callable[[int], None]:
        """The runner's callback for `claim`: a batch of n of its texts finished. The worker sorts a
        claim by length, so the n done are counted as its n shortest texts."""
        lengths = np.fromiter((len(t) for t in claim.texts), np.int64, len(claim.texts))
        done_chars = np.cumsum(np.sort(lengths))

        def batch_done(n: int) -> None:
            with self._lock:
                texts = min(self._partial.get(claim.id, (0, 0))[0] + n, len(done_chars))
                self._partial[claim.id] = (texts, int(done_chars[texts - 1]) if texts else 0)
            if threading.get_ident() == self._driver:  # the inline runner: no other chance to report
                self.tick()

        return batch_done

    def settle(self, claim: Claim | _Group) -> None:
        """The claim is committed or lost: its batches no longer count as in flight."""
        with self._lock:
            self._partial.pop(claim.id, None)

    def tick(self) -> None:
        if time.perf_counter() - self._last_report >= self.interval:
            self._report()

    def _report(self) -> None:
        self._last_report = time.perf_counter()
        rss = psutil.Process().memory_info().rss / 2**20
        self.peak_rss_mb = max(self.peak_rss_mb, rss)
        if self.callback is None:
            return
        with self._lock:
            processed = self.processed + sum(t for t, _ in self._partial.values())
            chars = self.chars + sum(c for _, c in self._partial.values())
        if processed == self._last_processed:  # e.g. a claim's batches were all reported: its commit
            return
        self._last_processed = processed
        elapsed = max(self._last_report - self.start, 1e-9)
        rate = processed / elapsed
        if self.total_chars and chars > 0:
            eta: float | None = max(0, self.total_chars - chars) / (chars / elapsed)
        else:
            eta = (self.total - processed) / rate if self.total is not None and rate > 0 else None
        self.callback(Progress(self.phase, processed, self.total, rate, eta, rss, self.unit))


def _batches(items: Iterable[Record | Skip], size: int) -> Generator[list[Record | Skip], None, None]:
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


def _scan_inputs(batches: Generator[list[Record | Skip], None, None]) -> Iterator[ScanInput]:
    """Each batch as the scan takes it (`scan_input`: hashes, ids checked), made in the thread that
    reads them."""
    with closing(batches):
        for batch in batches:
            yield scan_input(batch)


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

# A real embedding is never (nearly) all zeros: a model or an API that answers zeros has failed (an API
# answering zeros for an outage, a model that overflowed to zero in float16). Norms of real vectors are
# about 1 (normalized) or at least orders of magnitude above this.
MIN_VECTOR_NORM = 1e-6


def unusable_vectors(rows: np.ndarray) -> dict[int, str]:
    """The rows (as stored: after the cast to the store's dtype) that must not be marked done, with
    their reason: a non-finite value, or a norm of (nearly) zero."""
    # One pass over the block: a row's sum of squares is finite and clear of zero unless the row is
    # bad, or its values so large or small that the square overflows or underflows. Those few rows are
    # looked at one by one.
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        squares = np.einsum("ij,ij->i", rows, rows, dtype=np.float32)
    bad: dict[int, str] = {}
    for i in np.flatnonzero(~(squares > MIN_VECTOR_NORM ** 2) | ~(squares < np.inf)):
        row = rows[i].astype(np.float64)
        norm = float(np.linalg.norm(row))
        if not np.isfinite(row).all():
            bad[int(i)] = "the model produced a non-finite vector; not stored"
        elif not norm > MIN_VECTOR_NORM:
            bad[int(i)] = f"the model produced a zero vector (norm {norm:.3g}); not stored"
    return bad


def write_chunk(store: VectorStore, claim: Claim, vectors: np.ndarray, failures: dict[int, str]) -> Finished:
    """Write the claim's chunk whole and durably (when any of its rows is usable): what a commit of
    the claim then records. A vector that cannot be stored joins `failures` with its reason."""
    block = np.full((store.chunk_rows, store.dim), np.nan, dtype=store.dtype)
    with np.errstate(over="ignore"):  # a value too large for float16 becomes inf: failed just below
        block[:len(vectors)] = vectors
    for i, reason in unusable_vectors(block[:len(vectors)]).items():
        failures.setdefault(i, reason)
    block[list(failures)] = np.nan
    done = [(h, claim.chunk * store.chunk_rows + i) for i, h in enumerate(claim.hashes)
            if i not in failures]
    checksum = None
    if done:
        checksum = store.write_chunk(claim.chunk, block)
        crash_point("after-chunk-write")
    return Finished(claim, done, [(claim.hashes[i], r) for i, r in failures.items()
                                  if not isinstance(r, BackendFailure)], checksum)


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


def _check_names(index: Index, asked: dict[str, object], revision: str | None = None) -> bool:
    """Refuse a different dtype, runtime, truncation, prompt or template (`asked`: field -> value, None:
    not asked), or a model whose weights are known to differ, before anything is read or loaded. A model
    is bound by its weights, not its name: another name of the default model passes at once; another
    name with a known `revision` (an embedder given) passes if the weights hash is the index's. Returns
    True when the model goes by another name whose weights must be loaded to tell (a local path,
    another hub name)."""
    config = index.config
    model = asked.get("model")
    diffs = [difference_line(name, getattr(config, name), value) for name, value in asked.items()
             if name != "model" and value is not None and not equivalent(name, getattr(config, name), value)]
    load_to_compare = False
    if isinstance(model, str) and model != config.model \
            and not {model, config.model} <= set(DEFAULT_MODEL_NAMES):
        if revision is not None:
            if not same_weights(config, replace(config, model=model, revision=revision)):
                diffs.insert(0, difference_line("model", config.model, model))
        elif same_weights(config, config) and not model.startswith("fake:"):
            load_to_compare = True
        else:  # the fake and API models have no weights hash: their names bind
            diffs.insert(0, difference_line("model", config.model, model))
    if diffs:
        raise ConfigMismatchError(
            f"index {index.path} is bound to another embedding configuration; nothing was changed.\n  "
            + "\n  ".join(diffs)
            + "\nSync with the index's settings, or build a new index in another --index directory.")
    return load_to_compare


def _bind_to_index(index: Index, seam: Runner | Embedder | None, dry_run: bool, summary: SyncSummary,
                   make_runner: Callable[[], Runner], **asked: object) -> Runner | None:
    """Refuse a configuration the index is not bound to (see _check_names; `asked`: its keywords). A
    model given by another name is loaded now (by `make_runner`, returned for the sync to use), so that
    other weights are refused even by a sync with nothing to embed; a dry run loads nothing and says
    so."""
    config = index.config
    if seam is not None:
        _check_names(index, {**asked, "model": seam.info.model, "runtime": seam.info.runtime,
                             "truncate_dim": seam.info.truncate_dim, "prompt": seam.info.prompt},
                     seam.info.revision)
        return None
    model = asked.get("model")
    if not _check_names(index, asked) or not isinstance(model, str):
        return None
    if dry_run:
        summary.warnings.append(f"model {model!r} is another name than the index's {config.model!r}; "
                                "a sync loads it and compares their weights")
        return None
    runner = make_runner()
    try:
        # the weights and what the model reports; the chunking settings were compared by name above
        loaded = _requested_config(runner.info, config.dtype, config.query_prompt, config.template)
        config.require_same(replace(loaded, chunking=config.chunking, chunk_tokens=config.chunk_tokens,
                                    chunk_overlap=config.chunk_overlap), index.path)
    except BaseException:
        runner.close()
        raise
    return runner


@stoppable  # SIGTERM and SIGHUP stop a sync like Ctrl-C (indexer/_signals.py)
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
         query_prompt: str | None = None, template: str | None = None,
         folder: FolderFilter | None = None, max_delete: float = DEFAULT_MAX_DELETE,
         chunking: bool | None = None, chunk_tokens: int | None = None,
         chunk_overlap: int | None = None) -> SyncSummary:
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

    With `delete_missing`, a sync that would delete more than `max_delete` (a fraction) of the live
    documents is refused (DeleteRefusedError) before it deletes or embeds anything.

    `folder` picks the files of directory sources (include/exclude patterns, hidden files); the index's
    own directory is never read as a source, whatever `folder` says.

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
    if not 0 <= max_delete <= 1:
        raise IndexerError(f"--max-delete must be a fraction from 0 to 1 (got {max_delete})")
    _check_chunking(chunking, chunk_tokens, chunk_overlap)
    seam = runner or embedder
    if seam is not None and (runtime is not None or truncate_dim is not None or prompt is not None
                             or prompt_name is not None):
        raise IndexerError("runtime, truncate_dim and prompt choose how a model is loaded by name; with "
                           "your own embedder or runner, give them to load_embedder(name, runtime=..., "
                           "truncate_dim=..., prompt=...) instead")
    index_dir = Path(index_dir)
    existing = Index.bound_config(index_dir, settings)
    if prompt_name is not None:
        if prompt is not None:
            raise IndexerError("give --prompt or --prompt-name, not both")
        prompt = _named_prompt(model or (existing.model if existing else DEFAULT_MODEL), prompt_name)
    if template is None and existing is not None:
        template = existing.template
    parsed_template = Template.parse(template) if template else None  # a bad one stops us here
    readers: list[Source | IterableSource] = []
    if paths is not None:
        folder = folder or FolderFilter()
        folder = replace(folder, skip_dirs=(*folder.skip_dirs, index_dir))
        readers.extend(open_sources(paths, id_field, text_field, parsed_template, folder))
    if sources is not None:
        readers.append(IterableSource(sources, id_field, text_field, parsed_template))
    t0 = time.perf_counter()
    summary = SyncSummary(dry_run=dry_run)
    index: Index | None = None
    asked = {"model": model, "dtype": dtype, "runtime": runtime, "truncate_dim": truncate_dim,
             "prompt": prompt, "query_prompt": query_prompt, "template": template, "chunking": chunking,
             "chunk_tokens": chunk_tokens, "chunk_overlap": chunk_overlap}
    chunker: Chunker | None = None
    if existing is not None:
        index = opened = Index.open(index_dir, settings)
        if not dry_run and opened.manifest.read_only:
            opened.close()
            opened.require_writable("sync")
        try:
            runner = _bind_to_index(opened, seam, dry_run, summary, lambda: _make_runner(
                model or opened.config.model, batch_size or settings.batch_size, batch_tokens, None,
                backend, backend_options, _with_runtime(
                    embedder_options, runtime or opened.config.runtime,
                    truncate_dim or opened.config.truncate_dim,
                    opened.config.prompt if prompt is None else prompt),
                summary, on_progress), **asked) or runner
        except BaseException:
            opened.close()
            raise
    elif truncate_dim:
        warning = truncation_warning(model or DEFAULT_MODEL, truncate_dim)
        if warning:
            summary.warnings.append(warning)
    if index is None and not dry_run:
        if runner is None:
            runner = _make_runner(model or DEFAULT_MODEL, batch_size or settings.batch_size, batch_tokens,
                                  embedder, backend, backend_options,
                                  _with_runtime(embedder_options, runtime, truncate_dim, prompt), summary,
                                  on_progress)
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
    seam = runner or embedder
    summary.model = seam.info.model if seam else model or (index.config.model if index else DEFAULT_MODEL)
    if dry_run and runner is None and embedder is None and backend != "openai":
        # The dry run embeds nothing, but must not promise work with a model that cannot be loaded.
        try:
            check_loadable(model or (index.config.model if index else DEFAULT_MODEL),
                           runtime or (index.config.runtime if index else "torch"))
        except BaseException:
            if index is not None:
                index.close()
            raise
    manifest = index.manifest if index is not None else Manifest(Path(":memory:"), settings, create=True)
    if chunker is None and index is not None:
        chunker = _chunker_for(index.config)
    # Held shared for the whole run: a compact (exclusive) never runs next to a sync.
    held = ExitStack()
    if index is not None:
        held.enter_context(index.maintenance())
    held.enter_context(fewer_collections())
    try:
        run_id = None if dry_run else manifest.start_run()
    except BaseException:
        held.close()
        raise
    state = "failed"
    try:
        _scan(manifest, readers, summary, settings, dry_run, delete_missing, max_delete, on_progress, chunker,
              index is not None and index.config.chunking)
        if dry_run and index is None:
            summary.would_embed_unit = "documents"
        if not dry_run:
            assert index is not None
            _embed_all(index, summary, on_progress, runner or (lambda: _make_runner(
                model or index.config.model, batch_size or settings.batch_size, batch_tokens, embedder,
                backend, backend_options, _with_runtime(embedder_options, runtime or index.config.runtime,
                                               truncate_dim or index.config.truncate_dim,
                                               index.config.prompt if prompt is None else prompt),
                summary, on_progress)))
        state = "finished"
        if delete_missing and summary.incomplete_sources:
            raise IncompleteSourceError(
                "--delete-missing deleted nothing: " + "; ".join(summary.incomplete_sources)
                + ". The documents read were synced; re-create the source whole and sync again", summary)
    except KeyboardInterrupt:
        state = "interrupted"
        raise
    finally:
        summary.seconds = time.perf_counter() - t0
        summary.peak_rss_mb = max(summary.peak_rss_mb, psutil.Process().memory_info().rss / 2**20)
        if run_id is not None:
            manifest.finish_run(run_id, state, {k: v for k, v in summary.to_dict().items()
                                                if k not in ("warnings", "missing_ids")})
        manifest.close()
        held.close()
    return summary


def _scan(manifest: Manifest, readers: list[Source | IterableSource], summary: SyncSummary,
          settings: Settings, dry_run: bool, delete_missing: bool, max_delete: float,
          on_progress: Callable[[Progress], None] | None, chunker: Chunker | None = None,
          split: bool = False) -> None:
    t = time.perf_counter()
    live_before = manifest.live_count() if delete_missing else 0
    counts = ScanCounts()
    meter = _Meter("scan", None, on_progress)
    with manifest.scanning():
        for reader in readers:
            # Files are read (parsed, validated, hashed) by a second thread while SQLite, which lets go of the
            # GIL, works on the batch before. A Python iterable is read in the caller's thread: it may
            # not allow another (a sqlite3 cursor does not).
            batches = _scan_inputs(_batches(reader, settings.scan_batch))
            records_before = counts.scanned + counts.duplicates
            last: Record | Skip | None = None
            in_thread = isinstance(reader, IterableSource)
            with nullcontext(batches) if in_thread else _read_ahead(batches) as it:
                for batch in it:
                    manifest.scan_batch(batch, counts, dry_run=dry_run, chunker=chunker, split=split)
                    meter.add(len(batch.items))
                    last = batch.items[-1]
            why = why_incomplete(reader.name, last, counts.scanned + counts.duplicates - records_before)
            if why is not None:
                summary.incomplete_sources.append(why)
    # Only a scan that read every source whole, to its end, may decide what is missing.
    if delete_missing or dry_run:
        summary.missing = manifest.missing_ids_count()
    if dry_run:
        summary.missing_ids = manifest.missing_ids(MISSING_IDS_LISTED)
    if delete_missing and not summary.incomplete_sources:
        refuse_large_delete(summary.missing, live_before, max_delete, dry_run)
        summary.deleted = summary.missing if dry_run else manifest.delete_missing()
    for name in ("scanned", "new", "changed", "unchanged", "skipped", "duplicates", "chunks", "truncated"):
        setattr(summary, name, getattr(counts, name))
    summary.warnings.extend([*counts.warnings, *counts.summary_warnings()])
    if not dry_run:
        manifest.remember_skips()
    if counts.truncated:
        summary.warnings.append(
            f"{counts.truncated} document(s) are longer than the model's window: this index embeds one "
            "vector a document (--no-chunking, or built before chunking), so their text past the window "
            "is not embedded. A new index chunks long documents by default.")
    summary.would_embed = counts.to_embed
    summary.peak_rss_mb = meter.peak_rss_mb
    summary.scan_seconds = time.perf_counter() - t


def why_incomplete(source: str, last: Record | Skip | None, records: int) -> str | None:
    """Why a source read to its end still cannot tell which documents are missing ("file:line: why"),
    or None when it can. It cannot when its last record is cut (the reader marks that Skip `cut`: a
    JSONL line that is not a whole object, a CSV quote never closed or last row without a line end)
    or when it held no record at all (an empty stdin, `< /dev/null`, a producer that died first):
    --delete-missing on it would delete every document it did not reach."""
    if isinstance(last, Skip) and last.cut:
        return f"{last.where}: {last.reason}"
    if records == 0:
        return f"{source}: no record was read, so the source is empty or cut before its first record"
    return None


def refuse_large_delete(missing: int, live: int, max_delete: float, dry_run: bool) -> None:
    """Refuse to delete more than `max_delete` of the `live` documents: an empty, truncated or wrong
    source looks like a mass deletion."""
    if missing == 0 or missing <= max_delete * live:
        return
    done = ("nothing was written" if dry_run else
            "nothing was deleted or embedded (new and changed documents were recorded as pending)")
    raise DeleteRefusedError(
        f"this sync would delete {missing} of {live} live documents ({missing / live:.0%}), more than "
        f"--max-delete {max_delete:g} allows; {done}. Check that the sources are complete; if the "
        "documents are really gone, run the same command with --max-delete 1.")


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
                 embedder_options: dict[str, object] | None, summary: SyncSummary | None = None,
                 on_progress: Callable[[Progress], None] | None = None) -> Runner:
    """The runner that loads `model` (or runs `embedder`). `--backend auto` is decided here, so that
    the summary and the "load" progress event can say what was chosen."""
    if embedder is not None:
        return InlineRunner(embedder)
    embedder_options = dict(embedder_options or {})
    if batch_tokens and backend != "openai":  # the API packs its own requests
        embedder_options["batch_tokens"] = batch_tokens
    options = dict(options or {})
    runtime = str(embedder_options.get("runtime", "torch"))
    chosen = backend
    if backend == "auto":
        from .runners import auto

        chosen, options = auto.choose(model, options, runtime)
    layout = _layout(chosen, options)
    if backend == "auto":
        layout["chosen_by"] = "auto"
    if summary is not None:
        summary.backend, summary.backend_settings = chosen, layout
    if on_progress is not None:
        how = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in layout.items())
        on_progress(Progress("load", 0, None, 0.0, None, psutil.Process().memory_info().rss / 2**20,
                             detail=f"model {model} (runtime {runtime}; backend {chosen}"
                                    + (f": {how}" if how else "") + ")"))
    return make_runner(chosen, model, batch_size=batch_size, embedder_options=embedder_options, **options)


def _layout(backend: str, options: dict[str, object]) -> dict[str, object]:
    """What a backend will run: workers and threads, devices, or the options given."""
    if backend == "processes":
        from .runners._cpus import usable_cpus
        from .runners.processes import default_layout

        workers, threads = options.get("workers"), options.get("threads_per_worker")
        n, t = default_layout(usable_cpus(), workers if isinstance(workers, int) else None,
                              threads if isinstance(threads, int) else None)
        return {"workers": n, "threads_per_worker": t}
    if backend == "gpus":
        return {"devices": options.get("devices") or "all"}
    return {k: v for k, v in options.items() if k in ("workers", "threads_per_worker", "devices",
                                                       "concurrency", "ray_address")}


def _embed_all(index: Index, summary: SyncSummary, on_progress: Callable[[Progress], None] | None,
               runner: Runner | Callable[[], Runner]) -> None:
    t = time.perf_counter()
    manifest, store = index.manifest, index.store
    # Claims of a killed or timed-out worker go back to pending first: they may be all that is left.
    manifest.expire_claims()
    pending, pending_chars = (int(v) for v in manifest.conn.execute(
        "SELECT count(*), coalesce(sum(c.chars), 0) FROM contents c JOIN staged s USING (seq) "
        "WHERE c.state = 'pending'").fetchone())
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
        _drive(manifest, store, runner, summary,
               _Meter("embed", pending, on_progress, pending_chars, unit="chunks"))
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
    peaks = found.get("peak_rss_mb_per_worker")
    if isinstance(peaks, list):
        summary.workers_peak_rss_mb = round(sum(float(p) for p in peaks), 1)
    summary.backend_stats = found


class _OutageWatch:
    """Stops a sync whose backend keeps failing claims for reasons not the documents' own: their
    contents go back to pending without an attempt and are claimed again, so without this a backend
    that is down would be asked for ever. (The openai runner stops sooner, by its own count of
    requests; this is the rule for every backend.)"""

    LIMIT = 3  # claims in a row that came back with nothing embedded and something returned

    def __init__(self) -> None:
        self.in_a_row = 0

    def after_claim(self, done: int, reasons: Iterable[str]) -> None:
        """A claim (or a group of them) committed `done` rows and failed the others for `reasons`."""
        returned = [r for r in reasons if isinstance(r, BackendFailure)]
        if done or not returned:
            self.in_a_row = 0
            return
        self.in_a_row += 1
        if self.in_a_row >= self.LIMIT:
            last = returned[-1]
            raise BackendUnavailableError(
                f"the embedding backend keeps failing: {last}; {self.in_a_row} claims in a row came back "
                "with nothing embedded. Nothing is lost and no document used up an attempt: run the same "
                "sync again once the backend answers")


class _Group:
    """Claims taken in one transaction and handed to the runner as one submission (their texts end to
    end), then written chunk by chunk and committed in one transaction. `lost`: ids of its claims
    taken over while in flight (their results are dropped)."""

    def __init__(self, claims: list[Claim]) -> None:
        self.claims = claims
        self.id = claims[0].id  # the meter's key while in flight
        self.texts = [t for c in claims for t in c.texts]
        self.submitted = time.perf_counter()
        self.lost: set[int] = set()

    def parts(self, vectors: np.ndarray, failures: dict[int, str]
              ) -> Iterator[tuple[Claim, np.ndarray, dict[int, str]]]:
        """Each live claim with its own rows of the group's result (failures by position in it)."""
        start = 0
        for claim in self.claims:
            end = start + len(claim.texts)
            if claim.id not in self.lost:
                yield claim, vectors[start:end], {i - start: r for i, r in failures.items()
                                                  if start <= i < end}
            start = end


class _GroupSizer:
    """How many chunks the next group claims: as many as the worker embeds in `seconds`, judged by
    the groups before (submission to result, as the driver sees it, per text); one to start with, at
    most doubling from one group to the next, at most `most`."""

    def __init__(self, seconds: float, most: int, chunk_rows: int) -> None:
        self.seconds, self.most, self.chunk_rows = seconds, max(1, most), chunk_rows
        self.chunks = 1

    def observe(self, texts: int, seconds: float) -> None:
        if texts == 0 or self.seconds <= 0:
            return
        per_chunk = max(seconds / texts * self.chunk_rows, 1e-9)
        self.chunks = max(1, min(self.most, 2 * self.chunks, int(self.seconds / per_chunk)))


# A group's vectors in flight are bounded to this many bytes (float32), whatever the dimension.
GROUP_BYTES_MAX = 32 * 2**20
# Chunk files of a group written at once.
CHUNK_WRITERS = 4


class _Writing:
    """A group whose chunks are being written, each whole and durably, side by side (the disk takes
    several flushes at once for little more than one), while the driver claims and embeds the next
    group; committed before it."""

    def __init__(self, writers: ThreadPoolExecutor, store: VectorStore, group: _Group,
                 parts: Iterable[tuple[Claim, np.ndarray, dict[int, str]]]) -> None:
        self.group = group
        self.chunks = [(writers.submit(write_chunk, store, *part), part[2]) for part in parts]

    def written(self) -> list[tuple[Finished, dict[int, str]]]:
        """Each chunk's claim as written, with its failures, once all are."""
        return [(future.result(), failures) for future, failures in self.chunks]


def _drive(manifest: Manifest, store: VectorStore, runner: Runner, summary: SyncSummary,
           meter: _Meter) -> None:
    """Keep `runner.capacity` groups of claims in flight; write and commit each as its vectors arrive.

    A group holds as many one-chunk claims as the worker embeds in about `Settings.claim_seconds`
    (`_GroupSizer`): they are claimed in one transaction, embedded as one submission, their chunks
    written (each durably) and then committed in one transaction, each claim fenced alone.
    Where groups may hold two claims or more, a group's chunks are written while the next group is
    claimed and embedded (`_Writing`), and a group holds at most half of `Settings.claim_chunks_max`:
    the claims in flight stay within it, and a kill redoes no more than it did before.
    A worker that dies or hangs fails its groups with WorkerLost (WorkerHung): they go back to pending
    at once, and the summary counts the worker once however many groups it held."""
    # Grow the shape ahead of the claims (unwritten chunks cost nothing and read as NaN): rewriting
    # zarr.json for every claim cost 4-8 ms a claim (cProfile of a 20k and a 100k sync).
    grow = lambda chunk: store.ensure_chunks(chunk + 1, spare=16 + chunk // 8)  # noqa: E731
    in_flight: dict[Future[tuple[np.ndarray, dict[int, str]]], _Group] = {}
    settings = manifest.settings
    most = min(settings.claim_chunks_max, GROUP_BYTES_MAX // (store.chunk_rows * store.dim * 4))
    pipelined = settings.claim_seconds > 0 and most >= 2  # a group written while the next is embedded
    sizer = _GroupSizer(settings.claim_seconds, most // 2 if pipelined else most, store.chunk_rows)
    writing: _Writing | None = None
    watch_for_hangs = getattr(runner, "watch_for_hangs", None)
    if callable(watch_for_hangs):
        watch_for_hangs(HangRule(settings.hang_seconds, settings.hang_factor))
    renew_every = settings.lease_seconds / 3
    last_renew = time.monotonic()
    exhausted = False
    deaths: set[object] = set()
    # A runner written before `on_batch` existed still works; its progress moves once per group.
    batch_progress = "on_batch" in inspect.signature(runner.submit).parameters
    outage = _OutageWatch()

    def release(group: _Group) -> None:
        for claim in group.claims:
            manifest.release(claim)  # a no-op for a claim committed or taken over

    def commit_written() -> None:
        """Commit the group being written, once its chunks are."""
        nonlocal writing, exhausted
        if writing is None:
            return
        group = writing.group
        try:
            written = writing.written()
            results = manifest.commit_many([w for w, _ in written])
        except BaseException:  # Ctrl-C mid-write: the group goes back too
            release(group)  # (a no-op for claims whose commit went through)
            raise
        finally:
            writing = None
        reasons: list[str] = []  # the failures of the group's committed claims
        done = committed = 0
        for (w, claim_failures), gave_up in zip(written, results, strict=True):
            if isinstance(gave_up, LeaseLostError):
                summary.fencing_refusals += 1
                continue
            committed += 1
            summary.claims += 1
            summary.embedded += len(w.done)
            summary.failed += gave_up
            done += len(w.done)
            reasons += claim_failures.values()
            meter.add(len(w.done), sum(len(t) for t in w.claim.texts))
        returned = sum(isinstance(r, BackendFailure) for r in reasons)
        summary.returned += returned
        if returned:  # pending again: claim them again in this run, unless the backend is down
            exhausted = False
        if committed:
            outage.after_claim(done, reasons)

    # Threads that write a group's chunk files. After a Ctrl-C they finish the file in hand: a chunk of
    # a released claim, never committed, that `compact` removes.
    writers = ThreadPoolExecutor(max_workers=min(CHUNK_WRITERS, sizer.most),
                                 thread_name_prefix="indexer-write")
    try:
        while True:
            while not exhausted and len(in_flight) < runner.capacity:
                claims = manifest.claim_many(store.chunk_rows, sizer.chunks, on_chunk=grow)
                if not claims and writing is not None:
                    # Nothing free while a group is written: commit it and ask once more, as without
                    # the overlap (a vector its write found unusable is a failed attempt, pending again).
                    commit_written()
                    continue
                if not claims:
                    exhausted = True
                    break
                try:
                    group = _Group(claims)
                    future = runner.submit(group.texts, meter.on_batch(group)) if batch_progress \
                        else runner.submit(group.texts)
                    in_flight[future] = group
                except BaseException:  # Ctrl-C (or a runner error) before the group was in flight
                    for claim in claims:
                        manifest.release(claim)
                    raise
            if not in_flight:
                if writing is None:
                    break
                commit_written()  # (a backend's failures may bring work back: then claim again)
                continue
            # Short waits: the progress of batches within groups is reported between them.
            finished, _ = wait(in_flight, timeout=min(renew_every, meter.interval),
                               return_when=FIRST_COMPLETED)
            meter.tick()
            if time.monotonic() - last_renew > renew_every:
                for future, group in list(in_flight.items()):
                    for claim in group.claims:
                        if claim.id in group.lost:
                            continue
                        try:
                            manifest.renew(claim)
                        except LeaseLostError:  # taken over while this worker was stalled: drop it alone
                            summary.fencing_refusals += 1
                            group.lost.add(claim.id)
                    if len(group.lost) == len(group.claims):
                        del in_flight[future]
                        meter.settle(group)
                last_renew = time.monotonic()
            for future in finished:
                if future not in in_flight:
                    continue
                group = in_flight.pop(future)
                # Popped, the group is neither in flight nor written: until it is handed to _Writing,
                # whatever stops the driver (Ctrl-C included) gives it back here.
                try:
                    meter.settle(group)
                    try:
                        vectors, failures = future.result()
                    except WorkerLost as exc:
                        death = exc.death if exc.death is not None else object()
                        if death not in deaths:
                            deaths.add(death)
                            summary.workers_lost += 1
                            summary.workers_hung += isinstance(exc, WorkerHung)
                        ids = ", ".join(str(c.id) for c in group.claims)
                        summary.warnings.append(f"claim{'s' if len(group.claims) > 1 else ''} {ids}: {exc}; "
                                                "their documents go back to pending")
                        release(group)
                        exhausted = False
                        continue
                    except Exception:  # the runner gave up: this group goes back (below), but
                        # the group before came back whole: its chunks are being written, commit it
                        # rather than embed it again. Should that fail, it goes back as well (released
                        # by commit_written), and the runner's error is the one to report.
                        with contextlib.suppress(Exception):
                            commit_written()
                        raise
                    sizer.observe(len(group.texts), time.perf_counter() - group.submitted)
                    # Its chunks are written while the group before is committed (in claim order).
                    written_next = _Writing(writers, store, group, group.parts(vectors, failures))
                    commit_written()
                    writing = written_next
                except BaseException:
                    release(group)
                    raise
                if not pipelined or failures:
                    # A group the runner failed texts of is committed before the next claim, as without
                    # the overlap: a backend that is down is asked no more often than `_OutageWatch`
                    # allows, and the failed attempts are pending again for that claim.
                    commit_written()
    finally:
        writers.shutdown(wait=False, cancel_futures=True)
        for group in [*in_flight.values(), *([writing.group] if writing is not None else [])]:
            release(group)
        summary.peak_rss_mb = max(summary.peak_rss_mb, meter.peak_rss_mb)
