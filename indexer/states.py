"""The states the manifest records, as Python code compares and writes them.

The SQL (indexer/manifest/sql/, migrations/) spells the same values as literals; migrations/schema.sql's
CHECK constraints list them. Each member is its string (StrEnum): it compares equal to the value read
from SQLite and is written to it as that value.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ClaimState", "ContentState", "DocumentState", "RunState"]


class ContentState(StrEnum):
    """A content (one text, by hash): waiting to be embedded, embedded and served, or failed for good."""

    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


class DocumentState(StrEnum):
    """What `indexer status` counts a document as (the rows of state_counts): the state of its content,
    or deleted."""

    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"
    DELETED = "deleted"


class ClaimState(StrEnum):
    """A claim (a lease on one chunk's contents): held, committed, given back, or lost to its lease."""

    ACTIVE = "active"
    COMMITTED = "committed"
    RELEASED = "released"
    EXPIRED = "expired"


class RunState(StrEnum):
    """A sync's run: under way, or how it ended (a run whose owner died while running reads as
    interrupted)."""

    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
