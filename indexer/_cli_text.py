"""What the `indexer` command prints: the progress bar and each command's report as text."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from ._progress import Progress, SyncSummary
from .search import Hit, snippet

if TYPE_CHECKING:
    from ._compact import CompactReport
    from ._verify import VerifyReport
    from .index import Status
    from .push import PushReport


class ProgressBar:
    """A progress bar on stderr (tqdm), shown only on a terminal."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        self.bar: Any = None
        self.phase = ""

    def __call__(self, p: Progress) -> None:
        if p.phase == "load":  # a line of its own: the scan's bar stops before the model starts
            self.close()
            self.phase = p.phase
            self._tqdm.write(f"indexer: loading {p.detail} ...", file=sys.stderr)
            return
        if p.phase != self.phase:
            self.close()
            self.phase = p.phase
            # The time left is the sync's own estimate (from characters left; tqdm's would count
            # documents, and claims go shortest first), so tqdm's {remaining} is left out.
            with_total = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}, {rate_fmt}{postfix}]"
            unit = "chunk" if p.unit == "chunks" else "doc"
            self.bar = self._tqdm(total=p.total, unit=unit, desc=p.phase, file=sys.stderr,
                                  dynamic_ncols=True, smoothing=0.1,
                                  bar_format=with_total if p.total is not None else None)
        self.bar.update(p.processed - self.bar.n)
        left = f"left {self._tqdm.format_interval(p.eta_s)}, " if p.eta_s is not None else ""
        self.bar.set_postfix_str(f"{left}rss {p.rss_mb:.0f} MB", refresh=False)

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def sync_report(s: SyncSummary, index_dir: str, network_filesystem: str | None) -> list[str]:
    """What `indexer sync` says on stderr when it ends: its warnings (the first 20), a warning if the
    index lies on a network filesystem, and its last line."""
    lines = [f"indexer: warning: {w}" for w in s.warnings[:20]]
    if s.skipped > 20:
        lines.append(f"indexer: warning: ... {s.skipped - 20} more skipped record(s) "
                     "(all are listed in --json)")
    if network_filesystem:
        lines.append(f"indexer: warning: {index_dir} is on a network filesystem ({network_filesystem}); "
                     "SQLite locking is unsafe there. Keep the index on a local disk.")
    return [*lines, sync_line(s, index_dir)]


def sync_line(s: SyncSummary, index_dir: str) -> str:
    if s.dry_run:
        kept = s.missing - s.deleted
        return (f"dry run: scanned {s.scanned}: {s.new} new, {s.changed} changed, {s.unchanged} unchanged; "
                f"would embed {s.would_embed} {s.would_embed_unit}"
                + (" (no index yet: its model is not loaded, so long documents are not yet counted "
                   "as the chunks they become)" if s.would_embed_unit == "documents" else "")
                + f", would delete {s.deleted}"
                + (f"; {kept} live document(s) missing from the sources would be kept (--delete-missing "
                   "deletes them; --json lists their ids)" if kept else "")
                + "; nothing was written")
    line = (f"synced {index_dir}: scanned {s.scanned} ({s.new} new, {s.changed} changed, "
            f"{s.unchanged} unchanged), embedded {s.embedded}, deleted {s.deleted}")
    if s.chunks > s.new + s.changed:  # some are long documents: say what `embedded` counts
        line += f" ({s.chunks} chunks in the new and changed documents; embedded counts chunks)"
    if s.truncated:
        line += f", {s.truncated} TRUNCATED at the model's window"
    if s.failed:
        line += f", {s.failed} FAILED (see `indexer status {index_dir} --failed`, then `indexer retry`)"
    if s.skipped:
        line += f", skipped {s.skipped} input record(s)"
    if s.backend and s.backend_settings:
        line += f"; backend {s.backend} (" + ", ".join(
            f"{k.replace('_', ' ')} {v}" for k, v in s.backend_settings.items()) + ")"
    b = s.backend_stats
    if "tokens_per_minute" in b:
        line += (f"; API: {b['requests']} requests, {b['retries']} retries, {b['tokens_sent']} tokens sent, "
                 f"{b['tokens_per_minute']} tokens/min")
    return line + f" in {s.seconds:.1f}s"


def chunking_line(st: Status) -> str:
    if not st["chunking"]:
        return "unchunked: one vector a document"
    if not st["chunk_tokens"] and str(st["model"]).startswith("fake:"):
        return "the fake model has no window: it chunks only with --chunk-tokens"
    line = f"at most {st['chunk_tokens']} tokens" if st["chunk_tokens"] else "at the model's window"
    return line + (f", {st['chunk_overlap']} tokens of overlap" if st["chunk_overlap"] else "")


def status_text(st: Status, failures: list[tuple[str, str]]) -> str:
    """`indexer status` as text: what the index holds and where its last run stands."""
    lines: list[str] = []
    run = st["last_run"]
    extra = "".join([f", runtime {st['runtime']}" if st["runtime"] != "torch" else "",
                     f", truncated to {st['truncate_dim']} dims" if st["truncate_dim"] else ""])
    lines.append(f"index     {st['index']}\nmodel     {st['model']} (dim {st['dim']}, {st['dtype']}{extra})\n"
                 f"documents {st['documents']}: {st['done']} done, {st['pending']} pending, "
                 f"{st['failed']} failed; {st['deleted']} deleted\n"
                 f"chunks    {st['chunks']} ({chunking_line(st)})")
    if st["truncated"]:
        lines.append(f"truncated {st['truncated']} document(s) longer than the model's window: their text "
                     "past it is not embedded (an unchunked index)")
    if st["prompt"] or st["query_prompt"]:
        lines.append(f"prompts   documents {st['prompt']!r}, queries {st['query_prompt']!r}")
    if st["template"]:
        lines.append(f"template  {st['template']!r}")
    if run is not None:
        lines.append(f"last run  #{run['id']} {run['state']}")
    for doc_id, reason in failures:
        lines.append(f"failed    {doc_id}: {reason}")
    return "\n".join(lines)


def verify_text(report: VerifyReport) -> str:
    """`indexer verify` as text: each problem and note, then the verdict."""
    lines = [f"problem: {p}" for p in report.problems] + [f"note: {n}" for n in report.notes]
    verdict = "ok" if report.ok else f"{len(report.problems)} problem(s)"
    lines.append(f"verify: {report.checked} vectors checked, {verdict}"
                 + (f"; re-queued {report.repaired}: sync the same sources again to embed them"
                    if report.repaired else ""))
    return "\n".join(lines)


def search_text(n: int, query: str, hits: list[Hit], passages: dict[str, str]) -> str:
    """The hits of the `n`th query (1 the first) as text: rank, score, id, span and chunk a line, each
    with its passage under it where `passages` (id -> text) has the document."""
    lines = [f"{'' if n == 1 else chr(10)}query {n}: {' '.join(query.split())}"]
    for rank, h in enumerate(hits, 1):
        lines.append(f"{rank:4d}  {h.score:.4f}  {h.id}  [{h.start}:{h.end}] chunk {h.chunk}")
        if h.id in passages:
            lines.append(f"      {snippet(passages[h.id], h)}")
    return "\n".join(lines)


def push_report(report: PushReport, index_dir: str) -> list[str]:
    """What `indexer push` says on stderr: its warnings, then what it sent."""
    sent = f" ({report.upserted_rows} chunk rows)" if report.level == "chunks" else ""
    return [*(f"indexer: warning: {w}" for w in report.warnings),
            f"pushed {index_dir} to {report.target}: upserted {report.upserted} document(s){sent}, "
            f"deleted {report.deleted}; the table has {report.rows} {report.level[:-1]} rows "
            f"({report.seconds:.1f}s)"]


def compact_line(r: CompactReport, index_dir: str) -> str:
    return (f"compacted {index_dir}: dropped {r.contents_dropped} unused content(s), removed "
            f"{r.orphan_chunks_removed} orphan chunk(s) and {r.partial_files_removed} unfinished "
            f"write(s), packed {r.chunks_packed} sparse chunk(s) into {r.chunks_written}, freed "
            f"{r.manifest_bytes_freed / 2**20:.1f} MiB of the manifest"
            + (f", recorded the checksums of {r.checksums_recorded} older chunk(s)"
               if r.checksums_recorded else "")
            + (f"; {r.damaged_chunks_left} damaged chunk(s) left: run `indexer verify {index_dir} "
               "--repair`" if r.damaged_chunks_left else ""))
