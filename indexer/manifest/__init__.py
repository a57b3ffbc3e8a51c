"""The manifest: one SQLite file that knows every document's state. Hashes, slots and states; never vectors.

`Manifest` is one class made of the manifest's roles, each in a module of its own over the connection
they share (`_connection`: opening, PRAGMAs, transactions; `_migrations`: the schema):

- `_scan`: the scan's upserts of source records, and what it did not see;
- `_claims`: claims and their leases, fenced commits, releases, expiry;
- `_reports`: status counts, the run log, failures, served slots, checksums;
- `_maintenance`: `verify --repair` and `compact`;
- `_push`: what each push target holds, and what a push reads.

Readers read on connections of their own, each holding one snapshot (`_reads`: the served documents and
chunks, checksums, relocation; `_read_snapshot`: the snapshot behind `Index.vectors` and
`Index.chunks`); what they read is joined on hashes in numpy (`_hash_join`).

A role's fixed statements are named queries in `sql/<role>.sql` (`_queries`), so that its Python
reads as what it does.

Below them, functions that run inside their transactions: `_staging` (texts waiting to be embedded),
`_wholes` (long documents and their chunks), `_counts` (the status counts kept per statement); and what
the modules share about writing SQL (`_sql`: the content a document serves, `IN (...)` lists).
Open a Manifest in the process that uses it: a connection is never shared across processes.

Beside the Manifest, for tests and checks: `_inspect` (`Inspection`: read-only answers about its rows
and schema, as plain values). Writes that only tests make (damage, older schemas) live in the tests
(tests/manifest_surgery.py).
"""

from __future__ import annotations

from ._claims import Claims
from ._identify import APPLICATION_ID, identify
from ._inspect import Inspection
from ._maintenance import Maintenance
from ._migrations import migrations_dir
from ._push import PushState, push_deletes, push_upserts, served_count
from ._read_snapshot import ReadSnapshot, chunks_snapshot, documents_snapshot
from ._reads import (
    ServedRows,
    chunk_file_checksums,
    served_chunk_count,
    served_chunks_among,
    served_documents_among,
    served_hashes,
    snapshot,
    whole_chunk_slots,
)
from ._records import Claim, Finished, ScanCounts, content_hash
from ._reports import Reports
from ._scan import Scan
from ._scan_input import ScanInput, scan_input

__all__ = ["APPLICATION_ID", "Claim", "Finished", "Inspection", "Manifest", "ReadSnapshot", "ScanCounts",
           "ScanInput", "ServedRows", "chunk_file_checksums", "chunks_snapshot", "content_hash",
           "documents_snapshot", "identify", "migrations_dir", "push_deletes", "push_upserts",
           "scan_input", "served_chunk_count", "served_chunks_among", "served_count",
           "served_documents_among", "served_hashes", "snapshot", "whole_chunk_slots"]


class Manifest(Scan, Claims, Reports, Maintenance, PushState):
    """An open manifest (`ManifestConnection.__init__` opens, makes or migrates it)."""
