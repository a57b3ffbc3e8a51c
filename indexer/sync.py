"""One sync: scan -> claim (lease) -> embed -> write whole chunk -> commit (fenced).

Scan streams the sources in batches of `settings.scan_batch` records, so memory stays flat in the number
of documents. The embed loop is the one mechanism every worker backend shares: a claim is leased,
embedded, its chunk written durably, and only then committed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import psutil

from ._driver import drive
from ._gc import fewer_collections
from ._progress import Progress, ProgressMeter, SyncSummary
from ._reading import in_batches, read_ahead, scan_inputs
from ._signals import stoppable
from ._sync_config import (
    RunnerRequest,
    bind_to_index,
    check_chunking,
    chunker_for,
    chunking_of,
    named_prompt,
    requested_config,
)
from .chunking import Chunker
from .config import DTYPES, RUNTIMES
from .embedders import Embedder, check_loadable, truncation_warning
from .errors import (
    DeleteRefusedError,
    IncompleteSourceError,
    IndexerError,
)
from .index import Index
from .manifest import Manifest, ScanCounts
from .runners import Runner
from .settings import DEFAULT_MODEL, Settings
from .sources import FolderFilter, IterableSource, Record, Skip, Source, Template, open_sources

__all__ = ["DEFAULT_MAX_DELETE", "Progress", "SyncSummary", "sync"]

# A sync may delete at most this fraction of the live documents unless told otherwise: an empty or cut
# source must not wipe the index.
DEFAULT_MAX_DELETE = 0.5
MISSING_IDS_LISTED = 10_000

T = TypeVar("T")


# -- the sync ------------------------------------------------------------------------------------------

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
    check_chunking(chunking, chunk_tokens, chunk_overlap)
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
        prompt = named_prompt(model or (existing.model if existing else DEFAULT_MODEL), prompt_name)
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
    request = RunnerRequest(model, batch_size or settings.batch_size, batch_tokens, backend, backend_options,
                            embedder_options, runtime, truncate_dim, prompt, embedder)
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
            make = lambda: request.make(opened.config, summary, on_progress)  # noqa: E731
            runner = bind_to_index(opened, seam, dry_run, summary, make, **asked) or runner
        except BaseException:
            opened.close()
            raise
    elif truncate_dim:
        warning = truncation_warning(model or DEFAULT_MODEL, truncate_dim)
        if warning:
            summary.warnings.append(warning)
    if index is None and not dry_run:
        if runner is None:
            runner = request.make(None, summary, on_progress)
        requested = chunking_of(requested_config(runner.info, dtype or settings.dtype, query_prompt or "",
                                                 template or ""), chunking, chunk_tokens, chunk_overlap)
        chunker = chunker_for(requested)
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
        chunker = chunker_for(index.config)
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
            config = index.config
            _embed_all(index, summary, on_progress,
                       runner or (lambda: request.make(config, summary, on_progress)))
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
    meter = ProgressMeter("scan", None, on_progress)
    with manifest.scanning():
        for reader in readers:
            # Files are read (parsed, validated, hashed) by a second thread while SQLite, which lets go of the
            # GIL, works on the batch before. A Python iterable is read in the caller's thread: it may
            # not allow another (a sqlite3 cursor does not).
            batches = scan_inputs(in_batches(reader, settings.scan_batch))
            records_before = counts.scanned + counts.duplicates
            last: Record | Skip | None = None
            in_thread = isinstance(reader, IterableSource)
            with nullcontext(batches) if in_thread else read_ahead(batches) as it:
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


def _embed_all(index: Index, summary: SyncSummary, on_progress: Callable[[Progress], None] | None,
               runner: Runner | Callable[[], Runner]) -> None:
    t = time.perf_counter()
    manifest, store = index.manifest, index.store
    # Claims of a killed or timed-out worker go back to pending first: they may be all that is left.
    manifest.expire_claims()
    pending, pending_chars = manifest.pending_texts()
    if pending == 0:
        if not callable(runner):  # made for a new index that has nothing to embed: let it go
            runner.close()
        return
    if callable(runner):
        runner = runner()
    try:
        ours = index.config
        ours.require_same(chunking_of(requested_config(runner.info, ours.dtype, ours.query_prompt,
                                                       ours.template),
                                      ours.chunking, ours.chunk_tokens, ours.chunk_overlap), index.path)
        manifest.prepare_for_claims()
        drive(manifest, store, runner, summary,
              ProgressMeter("embed", pending, on_progress, pending_chars, unit="chunks"))
    finally:
        _collect_stats(runner, summary)
        runner.close()
    summary.embed_seconds = time.perf_counter() - t


def _collect_stats(runner: Runner, summary: SyncSummary) -> None:
    found = dict(runner.stats())
    warnings = found.pop("warnings", [])
    if isinstance(warnings, list):
        summary.warnings.extend(str(w) for w in warnings)
    peaks = found.get("peak_rss_mb_per_worker")
    if isinstance(peaks, list):
        summary.workers_peak_rss_mb = round(sum(float(p) for p in peaks), 1)
    summary.backend_stats = found
