"""The manifest's schema: `migrations/NNNN_name.sql` applied in order, each in one transaction with its
row in the `schema_migrations` ledger; a new manifest made from `migrations/schema.sql` in one step."""

from __future__ import annotations

import re
import sqlite3
import time
from importlib import resources
from pathlib import Path

from .._faults import crash_point
from ..errors import ManifestError

LEDGER = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"""


def migrations_dir() -> Path:
    packaged = resources.files("indexer") / "migrations"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / "migrations"  # a source checkout


def numbered_migrations() -> list[tuple[int, str, str]]:
    out = []
    for path in sorted(migrations_dir().glob("[0-9][0-9][0-9][0-9]_*.sql")):
        out.append((int(path.name[:4]), path.stem, path.read_text(encoding="utf-8")))
    return out


def refuse_newer(path: Path, applied: set[int], migrations: list[tuple[int, str, str]]) -> None:
    """Raise ManifestError if a migration this indexer does not know was applied to the manifest."""
    known = {v for v, _, _ in migrations}
    if applied - known:
        raise ManifestError(f"{path} was written by a newer indexer (schema version "
                            f"{max(applied)}); upgrade indexer to open it")


def migrate(conn: sqlite3.Connection, path: Path, *, fresh: bool, config_text: str | None) -> bool:
    """Bring the manifest at `path` to the current schema. A `fresh` one without a ledger is made from
    schema.sql, with the copy of index.toml (`config_text`) in the same transaction. Returns whether
    it made it so (the caller keeps `config_text` otherwise)."""
    conn.execute(LEDGER)
    applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
    migrations = numbered_migrations()
    refuse_newer(path, applied, migrations)
    if fresh and not applied:
        schema = (migrations_dir() / "schema.sql").read_text(encoding="utf-8")
        ledger = "".join(f"INSERT INTO schema_migrations VALUES ({v}, '{n}', {time.time()});\n"
                         for v, n, _ in migrations)
        if config_text is not None:
            quoted = config_text.replace("'", "''")
            ledger += f"INSERT INTO config VALUES ('index.toml', '{quoted}');\n"
        _run_script(conn, schema + ledger)
        return True
    for version, name, sql in migrations:
        if version not in applied:
            # The ledger row first: if another process applied this migration while we waited for
            # the write lock, the row's primary key stops us before any of the script runs.
            try:
                _run_script(conn, f"INSERT INTO schema_migrations VALUES ({version}, '{name}', "
                                  f"{time.time()});\n" + sql)
            except sqlite3.IntegrityError:
                if conn.execute("SELECT 1 FROM schema_migrations WHERE version = ?",
                                (version,)).fetchone() is None:
                    raise
    return False


def _run_script(conn: sqlite3.Connection, sql: str) -> None:
    """Run a migration script and its ledger row in one transaction."""
    try:
        conn.executescript("BEGIN IMMEDIATE;\n" + sql)
        crash_point("mid-migration")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def normalize_sql(sql: str) -> str:
    """A schema object's SQL without comments and with its white space collapsed, for comparing."""
    sql = re.sub(r"--[^\n]*", "", sql)
    return re.sub(r"\s+", " ", sql).replace("( ", "(").replace(" )", ")").strip()
