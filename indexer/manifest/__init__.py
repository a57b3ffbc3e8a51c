"""The manifest: one SQLite file that knows every document's state. Hashes, slots and states; never vectors.

`Manifest` is one class made of the manifest's roles, each in a module of its own over the connection
they share (`_connection`: opening, PRAGMAs, transactions; `_migrations`: the schema):

- `_scan`: the scan's upserts of source records, and what it did not see;
- `_claims`: claims and their leases, fenced commits, releases, expiry;
- `_reports`: status counts, the run log, failures, served slots, checksums;
- `_maintenance`: `verify --repair` and `compact`;
- `_push`: what each push target holds.

A role's fixed statements are named queries in `sql/<role>.sql` (`_queries`), so that its Python
reads as what it does.

Below them, functions that run inside their transactions: `_staging` (texts waiting to be embedded),
`_wholes` (long documents and their chunks), `_counts` (the status counts kept per statement).
Open a Manifest in the process that uses it: a connection is never shared across processes.

Beside the Manifest, for tests and checks: `_inspect` (`Inspection`: read-only answers about its rows
and schema, as plain values) and `_tamper` (`Tamper`: test seams that damage or age a manifest).
"""

from __future__ import annotations

from ._claims import Claims
from ._identify import APPLICATION_ID, identify
from ._inspect import Inspection
from ._maintenance import Maintenance
from ._migrations import migrations_dir
from ._push import PUSH_DELETES_SQL, PUSH_UPSERTS_SQL, SERVED_COUNT_SQL, PushState
from ._records import Claim, Finished, ScanCounts, content_hash
from ._reports import Reports
from ._scan import Scan
from ._scan_input import ScanInput, scan_input
from ._tamper import Tamper

__all__ = ["APPLICATION_ID", "PUSH_DELETES_SQL", "PUSH_UPSERTS_SQL", "SERVED_COUNT_SQL", "Claim", "Finished",
           "Inspection", "Manifest", "ScanCounts", "ScanInput", "Tamper", "content_hash", "identify",
           "migrations_dir", "scan_input"]


class Manifest(Scan, Claims, Reports, Maintenance, PushState):
    """An open manifest (`ManifestConnection.__init__` opens, makes or migrates it)."""
