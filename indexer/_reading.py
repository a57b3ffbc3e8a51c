"""How the scan reads its sources: in batches, each made into its scan input, read ahead in a second
thread while the scan writes the batch before."""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Generator, Iterable, Iterator
from contextlib import closing, contextmanager
from typing import TypeVar, cast

from .errors import (
    SourceError,
)
from .manifest import ScanInput, scan_input
from .sources import Record, Skip

T = TypeVar("T")


def in_batches(items: Iterable[Record | Skip], size: int) -> Generator[list[Record | Skip], None, None]:
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


def scan_inputs(batches: Generator[list[Record | Skip], None, None]) -> Iterator[ScanInput]:
    """Each batch as the scan takes it (`scan_input`: hashes, ids checked), made in the thread that
    reads them."""
    with closing(batches):
        for batch in batches:
            yield scan_input(batch)


@contextmanager
def read_ahead(items: Iterator[T], depth: int = 2) -> Iterator[Iterator[T]]:
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
