"""The load: truncate the selected tables, stream each one, rebuild its indexes, gate, refresh
the materialized views, set the sequences; yielding an event as each table streams and is copied.

Everything here runs after the guards. The default load is one target transaction, so a
failure leaves staging exactly as it was; the parallel load commits a table (or an FK cycle)
at a time, level by level, so a failure never leaves a loaded table without its parents.
"""

from __future__ import annotations

import queue
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from typing import Callable, Generator, Iterable, Iterator, Mapping, TypeVar

import psycopg
from psycopg import sql

from .catalog import Catalog, Table, TableRef
from .digest import NOT_HASHED, SnapshotDigests
from .endpoint import Endpoint, ThreadConnections, describe
from .errors import CopyError, RefreshError
from .graph import Plan, strongly_connected
from .indexes import build_indexes, drop_indexes, rebuilt_indexes
from .sequences import sequence_pairs, sync_sequences
from .shape import WHOLE, Shape
from .snapshot import attach_snapshot
from .stream import CopyStats, copy_format, stream_table
from .views import ViewStats, refresh_views

REPLICA_ROLE = sql.SQL("SET LOCAL session_replication_role = replica")
TRUNCATE = sql.SQL("TRUNCATE {tables}")  # never CASCADE: the selection guard names what's missing

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class TableStreaming:
    """A large table is still being copied: at most twice a second, for one that takes longer."""

    ref: TableRef
    bytes: int
    rows: int | None  # None where the format does not show them
    estimated_rows: int  # pg_class's estimate


@dataclass(frozen=True)
class TableCopied:
    """A table is loaded; readers of the target see it at the commit."""

    ref: TableRef
    stats: CopyStats


@dataclass(frozen=True)
class TableCopy:
    """One table of a run: its catalog entry on both sides, and what COPY read at the snapshot."""

    source: Table
    target: Table
    stats: CopyStats
    snapshot_id: str
    source_catalog: Catalog  # for the FKs that point out of the table
    source_digest: Callable[[], str] = lambda: NOT_HASHED  # waits for it


def table_copy(source: Catalog, target: Catalog, ref: TableRef, stats: CopyStats, snapshot_id: str,
               digests: SnapshotDigests | None = None) -> TableCopy:
    copy = TableCopy(source.table(ref), target.table(ref), stats, snapshot_id, source)
    return replace(copy, source_digest=partial(digests.digest, ref)) if digests else copy


# Called inside the load transaction with the source (in the snapshot) and target connections,
# once, with every table the transaction loaded; it yields what it found, and raising rolls the
# load back. The blocking checks plug in here.
GateFn = Callable[[psycopg.Connection, psycopg.Connection, list[TableCopy]], Iterator[object]]


@dataclass(frozen=True)
class Loaded:
    tables: dict[TableRef, CopyStats]
    failed: dict[TableRef, str]  # with the reason; only the parallel load reports failures here
    views: dict[TableRef, ViewStats]


def mapped(events: Generator[T, None, R], label: Callable[[T], object]) -> Generator[object, None, R]:
    """`events` relabelled one by one, and its return value returned."""
    while True:
        try:
            item = next(events)
        except StopIteration as end:
            return end.value
        yield label(item)


def pushed(events: Generator[object, None, R], heard: queue.SimpleQueue) -> R:
    """Run `events` to the end on this thread, handing each one to the queue another thread drains."""
    while True:
        try:
            heard.put(next(events))
        except StopIteration as end:
            return end.value


UNIT_DONE = object()  # a parallel worker's last word on its unit


@dataclass(frozen=True)
class Load:
    """One refresh's load phase; everything in it has already passed the guards."""

    plan: Plan
    target_catalog: Catalog
    source: Endpoint
    target: Endpoint
    snapshot_id: str
    shapes: Mapping[TableRef, Shape]  # masked and subsetted tables; the others go whole
    gate: GateFn | None = None

    def truncate(self, dst: psycopg.Connection) -> None:
        dst.execute(TRUNCATE.format(tables=sql.SQL(", ").join(r.ident() for r in self.plan.selected)))

    def copy_one(self, src: psycopg.Connection, dst: psycopg.Connection, ref: TableRef,
                 truncated_here: bool = False) -> Generator[TableStreaming, None, CopyStats]:
        """Inside the caller's transaction: drop plain indexes, stream, rebuild them.

        `truncated_here`: the TRUNCATE is in this transaction, so COPY may FREEZE the rows and
        no later read or vacuum rewrites the pages to set hint bits.
        """
        started = time.perf_counter()
        table = self.plan.catalog.table(ref)
        deferred = rebuilt_indexes(self.target_catalog.table(ref))
        drop_indexes(dst, table, deferred)
        streaming = stream_table(src, dst, table, copy_format(table, self.plan.catalog, self.target_catalog),
                                 self.shapes.get(ref, WHOLE), freeze=truncated_here and not table.partitioned)
        stats = yield from mapped(streaming, lambda tick: TableStreaming(ref, *tick, table.estimated_rows))
        build_indexes(dst, table, deferred, stats.bytes)
        return replace(stats, seconds=time.perf_counter() - started)  # the whole table, rebuilds included

    def gated(self, src: psycopg.Connection, dst: psycopg.Connection,
              copied: Mapping[TableRef, CopyStats]) -> Iterator[object]:
        if self.gate:
            yield from self.gate(src, dst, [table_copy(self.plan.catalog, self.target_catalog, ref, stats,
                                                       self.snapshot_id) for ref, stats in copied.items()])

    def finish(self, src: psycopg.Connection, dst: psycopg.Connection) -> dict[TableRef, ViewStats]:
        """After every table: the materialized views that read them, then the sequences (setval
        cannot be rolled back, so it comes last)."""
        views = refresh_views(dst, self.plan.views)
        sync_sequences(src, dst, sequence_pairs(self.plan, self.target_catalog))
        return views

    def atomically(self, src: psycopg.Connection, dst: psycopg.Connection) -> Generator[object, None, Loaded]:
        """One target transaction: truncate, copy every table, gate, views, sequences, commit; or roll it all back."""
        done: dict[TableRef, CopyStats] = {}
        try:
            with dst.transaction():
                dst.execute(REPLICA_ROLE)  # FK and user triggers stay quiet; SET LOCAL ends with the transaction
                self.truncate(dst)
                for batch in self.plan.batches:
                    for ref in batch:
                        done[ref] = yield from self.copy_one(src, dst, ref, truncated_here=True)
                        yield TableCopied(ref, done[ref])
                yield from self.gated(src, dst, done)  # after the last table, so a cycle's members are all loaded
                views = self.finish(src, dst)
        except psycopg.Error as exc:
            where = next((r for b in self.plan.batches for r in b if r not in done), "the materialized views")
            raise CopyError(
                f"copy failed at {where}: {describe(exc, self.source, self.target)}; "
                "the target was rolled back and is unchanged"
            ) from None
        return Loaded(done, {}, views)

    def in_parallel(self, src: psycopg.Connection, dst: psycopg.Connection,
                    workers: int) -> Generator[object, None, Loaded]:
        """Level by level on `workers` connection pairs that import the snapshot; a transaction per unit.
        The workers' events reach the caller on this thread."""
        with dst.transaction():
            self.truncate(dst)
        done: dict[TableRef, CopyStats] = {}
        failed: dict[TableRef, str] = {}
        heard: queue.SimpleQueue = queue.SimpleQueue()
        with ThreadConnections(lambda: (self.source.connect(read_only=True), self.target.connect(read_only=False))) as pairs, \
                ThreadPoolExecutor(max_workers=workers, thread_name_prefix="muva-copy") as pool:

            def load_unit(unit: tuple[TableRef, ...]) -> None:
                wsrc, wdst = pairs.mine()
                try:
                    pushed(self.unit_events(wsrc, wdst, unit, done), heard)
                except (psycopg.Error, RefreshError) as exc:
                    failed.update((ref, describe(exc, self.source, self.target)) for ref in unit)
                finally:
                    wsrc.rollback()
                    heard.put(UNIT_DONE)

            for batch in self.plan.batches:
                # An FK cycle shares a level; its members load in one transaction.
                parents = {t: tuple(p for p in self.plan.parents[t] if p in batch) for t in batch}
                units = self.largest_first(strongly_connected(list(batch), parents))
                yield from drained(heard, [pool.submit(load_unit, unit) for unit in units])
                if failed:  # deeper levels would point at what failed to load
                    return Loaded(done, failed, {})
        with dst.transaction():
            return Loaded(done, failed, self.finish(src, dst))

    def unit_events(self, wsrc: psycopg.Connection, wdst: psycopg.Connection, unit: tuple[TableRef, ...],
                    done: dict[TableRef, CopyStats]) -> Iterator[object]:
        """One transaction for the unit; its tables count as copied once it commits."""
        attach_snapshot(wsrc, self.snapshot_id)
        stats: dict[TableRef, CopyStats] = {}
        with wdst.transaction():
            wdst.execute(REPLICA_ROLE)
            for ref in unit:
                stats[ref] = yield from self.copy_one(wsrc, wdst, ref)
            yield from self.gated(wsrc, wdst, stats)
        done.update(stats)
        for ref, copied in stats.items():
            yield TableCopied(ref, copied)

    def largest_first(self, units: list[tuple[TableRef, ...]]) -> list[tuple[TableRef, ...]]:
        """The longest copies start first, so a large table does not start last and run alone."""
        return sorted(units, key=lambda unit: -sum(self.plan.catalog.table(r).estimated_rows for r in unit))


def drained(heard: queue.SimpleQueue, futures: Iterable) -> Iterator[object]:
    """The events of the running units, in the order they came, until each unit has said UNIT_DONE;
    then anything a unit raised beyond the failures it records."""
    futures = list(futures)
    remaining = len(futures)
    while remaining:
        event = heard.get()
        if event is UNIT_DONE:
            remaining -= 1
        else:
            yield event
    for future in futures:
        future.result()
