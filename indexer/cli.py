"""The `indexer` command: a thin click shell over the library. Errors become one line and an exit code."""

from __future__ import annotations

import json
import sqlite3
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any, cast

import click
from click.core import ParameterSource

from . import Index, IndexerError, SyncSummary, sync
from ._cli_options import backend_flags, sync_options
from ._cli_text import (
    ProgressBar,
    compact_line,
    push_report,
    search_text,
    status_text,
    sync_report,
    verify_text,
)
from .config import DTYPES, RUNTIMES
from .embedders import quiet_libraries
from .errors import IncompleteSourceError, StopSignal
from .index import EXPORT_FORMATS
from .runners import BACKENDS
from .search import QueryTruncatedWarning
from .settings import DEFAULT_MODEL, Settings
from .sync_options import DEFAULT_MAX_DELETE

_DEFAULTS = Settings()


def _fail(message: str, code: int) -> None:
    click.echo(f"indexer: error: {message}", err=True)
    sys.exit(code)


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except IndexerError as exc:
        _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt as exc:  # Ctrl-C, or a StopSignal (SIGTERM, SIGHUP): exit 128 + signal
        by, code = (f" by {exc.name}", exc.exit_code) if isinstance(exc, StopSignal) else ("", 130)
        _fail(f"interrupted{by}; claims in flight were released. Run the same command to resume.", code)
    except sqlite3.OperationalError as exc:
        # e.g. "database or disk is full": what was committed stays; the same command resumes.
        _fail(f"manifest: {exc}; free space (or wait for the other writer) and run the same command "
              "again to resume", 1)
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        _fail(f"{where}{exc.strerror or exc}; fix that and run the same command again to resume", 1)


def _open(index_dir: str) -> Index:
    return Index.open(index_dir, Settings.from_env())


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="indexer")
def cli() -> None:
    """Keep the embeddings of a large, changing document collection in sync on disk.

    Run `indexer sync` as often as you like: only new and changed documents are embedded.

    \b
    Exit codes:
      0    done
      1    error (verify: problems found)
      2    bad input: unreadable source, missing index or model, bad option
      3    the index is bound to another embedding configuration
      4    the embedding backend is unavailable (nothing lost; run the same command later)
      5    sync refused to delete more than --max-delete of the documents
      129  stopped by SIGHUP, 130 by Ctrl-C, 143 by SIGTERM (claims released; run the same
           command to resume)
    """


@cli.command("sync")
@click.argument("sources", nargs=-1, required=True)
@click.option("--index", "index_dir", required=True, metavar="DIR",
              help="Index directory; created on the first sync.")
@click.option("--model", default=None, metavar="NAME",
              help=f"sentence-transformers model name or path, or fake:DIM. New index: {DEFAULT_MODEL}; "
                   "existing index: the model it is bound to.")
@click.option("--dtype", type=click.Choice(DTYPES), default=None,
              help=f"Stored vector type. New index: {_DEFAULTS.dtype}; existing: its own.")
@click.option("--runtime", type=click.Choice(RUNTIMES), default=None,
              help="What runs the model. torch: sentence-transformers. onnx: ONNX Runtime (CPU), fp32, the "
                   "same vectors (cosine >= 0.9999 to torch), so torch and onnx serve the same index. "
                   "onnx-int8: int8 weights, other vectors (mean cosine about 0.998 to torch), an index of "
                   "its own. Speed and quality measured: docs/RUNTIMES.md. The onnx runtimes export the "
                   "model once (seconds) to INDEXER_CACHE_DIR or ~/.cache/indexer/onnx and need pip install "
                   "'indexer[onnx]'. New index: torch; existing: its own.")
@click.option("--truncate-dim", type=click.IntRange(min=1), default=None, metavar="D",
              help="Keep the first D dimensions of each vector, renormalized (Matryoshka-style): less "
                   "disk and faster search, some loss of quality unless the model was trained for it. "
                   "New index: the model's full dimension; existing: its own.")
@click.option("--prompt", default=None, metavar="TEXT",
              help="Prepended to every document before embedding, as sentence-transformers' encode(text, "
                   "prompt=...) does, e.g. \"passage: \" for e5 models. New index: none; existing: its own.")
@click.option("--prompt-name", default=None, metavar="NAME",
              help="Take the document prompt from the prompts the model defines in its sentence-transformers "
                   "configuration (e.g. document).")
@click.option("--query-prompt", default=None, metavar="TEXT",
              help="The prompt queries get (e.g. \"query: \"), recorded in the index for search. New "
                   "index: none; existing: its own.")
@click.option("--template", default=None, metavar="TEMPLATE",
              help="Compose the embedded text from fields of each record, e.g. \"{title}: {text}\" (JSONL "
                   "keys, CSV/Parquet columns; {{ }} for literal braces). A record missing a field is "
                   "skipped with a warning. New index: the --text-field alone; existing: its own.")
@click.option("--batch-size", type=click.IntRange(min=1), default=_DEFAULTS.batch_size, show_default=True,
              help="At most this many texts per forward pass ([gpus] on CUDA and [openai]: only when "
                   "given).")
@click.option("--batch-tokens", type=click.IntRange(min=0), default=None,
              help=f"Padded tokens (texts x longest) per forward pass, texts of similar token length "
                   f"together; 0: --batch-size alone. Default {_DEFAULTS.batch_tokens}; [gpus] on CUDA "
                   "65536, halved on out-of-memory.")
@click.option("--id-field", default="id", show_default=True, help="Id field or column.")
@click.option("--text-field", default="text", show_default=True, help="Text field or column.")
@click.option("--include", "include", multiple=True, metavar="GLOB",
              help="[directory sources] Take only files whose relative path matches GLOB (gitignore-style: "
                   "'*.md' at any depth, 'docs/' a directory, '/top.txt' at the top). Repeatable.")
@click.option("--exclude", "exclude", multiple=True, metavar="GLOB",
              help="[directory sources] Leave out files and directories matching GLOB (gitignore-style). "
                   "Repeatable.")
@click.option("--hidden", is_flag=True,
              help="[directory sources] Also read hidden files and directories (names starting with '.'); "
                   ".git/ and the index's own directory are never read.")
@click.option("--delete-missing", is_flag=True,
              help="Mark documents absent from the sources deleted (default: keep them).")
@click.option("--max-delete", type=click.FloatRange(0, 1), default=DEFAULT_MAX_DELETE, show_default=True,
              metavar="FRACTION",
              help="With --delete-missing: refuse (exit 5) a sync that would delete more than this "
                   "fraction of the live documents, as an empty or cut source would. 1: no limit.")
@click.option("--dry-run", is_flag=True,
              help="Scan and report what would change, and how many documents the sources no longer "
                   "hold (their ids with --json); write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
@click.option("--quiet", "-q", is_flag=True,
              help="Nothing on stderr but errors: no progress, warnings or final line.")
@click.option("--backend", type=click.Choice(BACKENDS), default="inline", show_default=True,
              help="Where the model runs: this process, a CPU process pool, one process per GPU, Ray "
                   "actors, an OpenAI-compatible API, or auto.")
@backend_flags
@click.option("--chunking/--no-chunking", default=None,
              help="Split documents longer than the model's window into chunks at paragraph, sentence and "
                   "word breaks, each embedded (an edit re-embeds only the chunks it changed); a document "
                   "that fits is one chunk, with the vector it gets unchunked. --no-chunking: one vector a "
                   "document, its text past the window not embedded (counted and warned about). New index: "
                   "on; existing: its own.")
@click.option("--chunk-tokens", type=click.IntRange(min=1), default=None, metavar="N",
              help="Chunks of at most N tokens of the model's tokenizer (less than its window: more, "
                   "shorter chunks). The fake model chunks only when given, counting words. New index: the "
                   "model's window less its special tokens; existing: its own.")
@click.option("--chunk-overlap", type=click.IntRange(min=0), default=None, metavar="T",
              help="Repeat up to T tokens of the text before each chunk at its start, so that a passage "
                   "cut by a boundary is whole in one chunk; costs about N/(N-T) times the chunks, and an "
                   "edit may re-embed one more. New index: 0; existing: its own.")
def sync_cmd(sources: tuple[str, ...], index_dir: str, as_json: bool, quiet: bool, **flags: Any) -> None:
    """Embed new and changed documents of SOURCES into the index at --index DIR.

    SOURCES are .jsonl, .jsonl.gz, .csv or .parquet files, single .txt/.md/.rst files (one document,
    id = file name), directories of text files (id = relative path; hidden files, .git/, binary files
    and the index's own directory are left out), or - for JSONL on stdin. Records that cannot be used
    (bad JSON, missing fields, empty text, duplicate ids) are skipped with a warning naming the file
    and line; a file that cannot be read at all stops the sync before anything is written.
    --delete-missing deletes nothing when a source is cut (its last record unterminated: a JSONL line
    that is not a whole object, a CSV quote never closed or last row without a line end) or held no
    record: the documents read are synced, a warning names the file and line, and the sync exits 2.

    Exit codes: 0 done; 1 error; 2 bad input (source, model, option) or missing index; 3 configuration
    mismatch; 4 the backend is unavailable (outage, timeouts, rate limits: nothing lost, no document's
    attempt used up; run the same command again later); 5 deletion refused (--max-delete); 130
    interrupted by Ctrl-C, 143 by SIGTERM, 129 by SIGHUP (run the same command to resume).
    """
    on_terminal = sys.stderr.isatty()
    bar = ProgressBar() if not quiet and on_terminal else None
    given = click.get_current_context().get_parameter_source("batch_size") is ParameterSource.COMMANDLINE
    refused: IncompleteSourceError | None = None
    with _errors(), quiet_libraries(quiet or not on_terminal, errors_only=quiet), bar or nullcontext():
        try:
            summary = sync(index_dir, paths=sources, options=sync_options(flags, given), on_progress=bar)
        except IncompleteSourceError as exc:  # synced, but not deleted: report both, then exit 2
            refused, summary = exc, cast(SyncSummary, exc.summary)
    if not quiet:
        for line in sync_report(summary, index_dir, _network_filesystem(index_dir)):
            click.echo(line, err=True)
    if as_json:
        click.echo(json.dumps(summary.to_dict()))
    if refused is not None:
        _fail(str(refused), refused.exit_code)


def _network_filesystem(index_dir: str) -> str | None:
    if not Index.exists(index_dir):
        return None
    with Index.open(index_dir) as idx:
        return idx.network_filesystem()


@cli.command()
@click.argument("index_dir", metavar="DIR")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.option("--failed", is_flag=True, help="List failed documents and their reasons.")
def status(index_dir: str, as_json: bool, failed: bool) -> None:
    """Where the index stands: documents pending, done, failed, deleted. Safe while a sync runs."""
    with _errors(), _open(index_dir) as idx:
        st = idx.status()
        failures = idx.failures(limit=1000) if failed else []
    if as_json:
        listed = {"failures": [{"id": i, "reason": r} for i, r in failures]} if failed else {}
        click.echo(json.dumps({**st, **listed}))
        return
    click.echo(status_text(st, failures))


@cli.command()
@click.argument("index_dir", metavar="DIR")
def retry(index_dir: str) -> None:
    """Send failed documents back to pending; the next sync embeds them again."""
    with _errors(), _open(index_dir) as idx:
        n = idx.retry()
    click.echo(f"re-queued {n} failed content(s); run `indexer sync` to embed them", err=True)


@cli.command()
@click.argument("index_dir", metavar="DIR")
@click.option("--repair", is_flag=True, help="Re-queue documents whose vectors are missing or bad.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def verify(index_dir: str, repair: bool, as_json: bool) -> None:
    """Check that manifest and store agree: every done document has a whole, finite vector.

    Exits 1 with a report if not.
    """
    with _errors(), _open(index_dir) as idx:
        report = idx.verify(repair=repair)
    click.echo(json.dumps(report.to_dict()) if as_json else verify_text(report))
    if not report.ok and not report.repaired:
        sys.exit(1)


@cli.command()
@click.argument("index_dir", metavar="DIR")
@click.option("--out", required=True, metavar="FILE",
              help="Where to write the vectors (its directory must exist): FILE.npy (a matrix), or "
                   "FILE.parquet (id and vector columns, readable by pyarrow, DuckDB, Polars).")
@click.option("--format", "fmt", type=click.Choice(EXPORT_FORMATS), default=None,
              help="npy or parquet; default: by the extension of --out, which must then be .npy or "
                   ".parquet.")
@click.option("--ids", "ids_out", default=None, metavar="FILE.jsonl",
              help="[npy] Also write the ids in row order (an output), as JSON lines: one JSON string a "
                   "line, e.g. \"doc-1\" (ASCII, escaped, so an id holding a line break cannot shift the "
                   "rows). Read them with json.loads per line, or indexer.read_ids(FILE). With --level "
                   'chunks, one JSON object a line, {"id", "chunk", "start", "end"}: the chunk\'s number and '
                   "character span in the text.")
@click.option("--level", type=click.Choice(["documents", "chunks"]), default="documents", show_default=True,
              help="One row a document (a long one: the normalized mean of its chunk vectors) or one row "
                   "a chunk (npy only).")
def export(index_dir: str, out: str, fmt: str | None, ids_out: str | None, level: str) -> None:
    """Write every served vector to a .npy matrix (with --ids, their ids in the same order) or a
    Parquet file (an id and a vector column)."""
    with _errors(), _open(index_dir) as idx:
        n = idx.export(out, ids_out, fmt, level=level)
    what = "chunk vectors" if level == "chunks" else "vectors"
    click.echo(f"exported {n} {what} to {out}" + (f" and their ids to {ids_out}" if ids_out else ""),
               err=True)


def _read_queries(path: str) -> list[str]:
    try:
        text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()  # noqa: SIM115
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}",
                                 param_hint="--queries") from exc
    return [line.strip() for line in text.splitlines() if line.strip()]


@cli.command()
@click.argument("index_dir", metavar="DIR")
@click.argument("queries", nargs=-1)
@click.option("-k", "k", type=click.IntRange(min=1), default=10, show_default=True,
              help="Documents to return per query.")
@click.option("--queries", "queries_file", metavar="FILE",
              help="Read queries from FILE, one a line (blank lines skipped; - for stdin), after any "
                   "given as arguments.")
@click.option("--json", "as_json", is_flag=True,
              help='One JSON line per query, in order: {"query", "hits": [{"id", "score", "chunk", '
                   '"start", "end"}]}.')
@click.option("--source", "sources", multiple=True, metavar="SOURCE",
              help="The sources the index was synced from (as given to sync; repeatable): the plain "
                   "output shows each hit's passage under it. The index keeps no text; a document whose "
                   "text changed since it was embedded shows its span only.")
@click.option("--id-field", default="id", show_default=True, help="[--source] Id field or column.")
@click.option("--text-field", default="text", show_default=True, help="[--source] Text field or column.")
def search(index_dir: str, queries: tuple[str, ...], k: int, queries_file: str | None, as_json: bool,
           sources: tuple[str, ...], id_field: str, text_field: str) -> None:
    """Find the documents most similar to each QUERY: exact search over every chunk's vector.

    Queries are embedded with the index's own model and configuration. A document scores as its best
    chunk (cosine similarity); each hit names the chunk and its character span [start, end) in the
    document's text. Each call reads every vector once (bounded memory); for fast single queries over
    millions of rows build an approximate index instead (docs/SEARCH.md).
    """
    texts = list(queries) + (_read_queries(queries_file) if queries_file else [])
    if not texts:
        raise click.UsageError("give at least one query, as an argument or with --queries FILE")
    # no Hugging Face bars off a terminal, as in sync
    with _errors(), quiet_libraries(not sys.stderr.isatty()), _open(index_dir) as idx, \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", QueryTruncatedWarning)
        results = idx.search(texts, k=k)
        found = [h for hits in results for h in hits]
        passages = idx.passages(found, sources, id_field, text_field) if sources and not as_json else {}
    for w in caught:
        if issubclass(w.category, QueryTruncatedWarning):
            click.echo(f"indexer: warning: {w.message}", err=True)
    for n, (query, hits) in enumerate(zip(texts, results, strict=True), 1):
        click.echo(json.dumps({"query": query, "hits": [h.to_dict() for h in hits]}, ensure_ascii=False)
                   if as_json else search_text(n, query, hits, passages))
    if sources and not as_json and (stale := {h.id for h in found} - set(passages)):
        click.echo(f"indexer: warning: {len(stale)} hit document(s) not found in the sources with the "
                   "text the index serves (changed or missing since the sync): spans only", err=True)


@cli.command("push")
@click.argument("index_dir", metavar="DIR")
@click.option("--to", "to", required=True, metavar="lancedb:PATH",
              help="The vector store to mirror the index into: lancedb:PATH (a LanceDB directory; needs "
                   "pip install 'indexer[lancedb]').")
@click.option("--table", default="vectors", show_default=True, help="Table name in the target.")
@click.option("--level", type=click.Choice(["documents", "chunks"]), default=None,
              help="One row a chunk (id, chunk, start, end, vector: the chunk's number and character span "
                   "in the document) or one row a document (id, vector; a long one the normalized mean of "
                   "its chunks). Default: the level the table was pushed at; for a new table chunks if "
                   "the index is chunked, else documents. Another level than the table's is refused "
                   "unless --replace.")
@click.option("--replace", is_flag=True,
              help="Drop the table and push everything (e.g. a table that was changed outside indexer).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
def push_cmd(index_dir: str, to: str, table: str, level: str | None, replace: bool, as_json: bool) -> None:
    """Mirror the index into a vector store table: the rows of every served document.

    The first push writes everything; each later one sends only what changed since the last push to
    that table: the rows of new and changed documents (a changed document's rows all replaced), and
    deletes of deleted ones. A push that stops part-way is finished by the next one. Safe while a sync
    runs (what it changes goes with the next push). --json counts documents in upserted and deleted,
    table rows in upserted_rows, rows and served_rows.
    """
    from .push import push

    with _errors(), _open(index_dir) as idx:
        report = push(idx, to, table=table, level=level, replace=replace)
    for line in push_report(report, index_dir):
        click.echo(line, err=True)
    if as_json:
        click.echo(json.dumps(report.to_dict()))


@cli.command()
@click.argument("index_dir", metavar="DIR")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def compact(index_dir: str, as_json: bool) -> None:
    """Reclaim dead slots, orphan chunks and unfinished writes, and VACUUM the manifest.

    It needs the index to itself: while a sync, a verify or another compact runs, it changes nothing
    and exits 1 saying so; run it again when they have finished.
    """
    with _errors(), _open(index_dir) as idx:
        report = idx.compact()
    click.echo(json.dumps(report.to_dict()) if as_json else compact_line(report, index_dir))


def main() -> None:
    cli(prog_name="indexer")
