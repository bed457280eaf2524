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
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Callable, Generator, Iterable, Iterator, Mapping, TypeVar

import psycopg
from psycopg import sql

from .catalog import Catalog, Table, TableRef
from .compare import MAX_CHANGED_SHARE, KeyedShape, compare, delete_keys, has_rows, hold_for_comparison, range_key
from .digest import NOT_HASHED, SnapshotDigests, count_rows
from .endpoint import Endpoint, ThreadConnections, describe
from .errors import CopyError, RefreshError
from .graph import Plan, strongly_connected, views_to_refresh
from .indexes import build_indexes, drop_indexes, rebuilt_indexes
from .sequences import sequence_pairs, sync_sequences
from .shape import WHOLE, Shape
from .snapshot import attach_snapshot
from .stream import DELTA, UNCHANGED, CopyStats, copy_format, stream_table
from .timings import Phase, PhaseClock
from .views import ViewStats, refresh_views

REPLICA_ROLE = sql.SQL("SET LOCAL session_replication_role = replica")
TRUNCATE = sql.SQL("TRUNCATE {tables}")  # never CASCADE: the selection guard names what's missing
DELETE_ALL = sql.SQL("DELETE FROM {table}")  # a table others reference cannot be truncated alone
# A delta that changes at least this share of a table's rows drops its plain indexes and builds
# them again, as a whole copy does: cheaper than maintaining them row by row (HNSW above all).
INDEX_REBUILD_SHARE = 0.1
ASKED_FULL = "a full refresh was asked for"
PARALLEL_FULL = "the parallel load copies whole tables"
EMPTY_TARGET = "staging held no rows"

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
    clock: PhaseClock = field(default_factory=PhaseClock)
    # True: every table is emptied and copied whole. False (the atomic load only): each table is
    # compared with the target, and only its changed keys are deleted and copied again.
    full: bool = True

    def truncate(self, dst: psycopg.Connection, refs: Iterable[TableRef] | None = None) -> None:
        refs = list(self.plan.selected if refs is None else refs)
        if refs:
            with self.clock.measure(Phase.TRUNCATE):
                dst.execute(TRUNCATE.format(tables=sql.SQL(", ").join(r.ident() for r in refs)))

    def copy_one(self, src: psycopg.Connection, dst: psycopg.Connection, ref: TableRef,
                 truncated_here: bool = False) -> Generator[TableStreaming, None, CopyStats]:
        """Inside the caller's transaction: drop plain indexes, stream, rebuild them.

        `truncated_here`: the TRUNCATE is in this transaction, so COPY may FREEZE the rows and
        no later read or vacuum rewrites the pages to set hint bits.
        """
        table = self.plan.catalog.table(ref)
        return (yield from self.stream_rows(src, dst, table, self.shapes.get(ref, WHOLE),
                                            freeze=truncated_here, rebuild=True))

    def stream_rows(self, src: psycopg.Connection, dst: psycopg.Connection, table: Table, shape: Shape,
                    freeze: bool, rebuild: bool) -> Generator[TableStreaming, None, CopyStats]:
        """The stream of `shape`'s rows into the target's table; with `rebuild`, its plain indexes
        are dropped first and built again after."""
        started = time.perf_counter()
        deferred = rebuilt_indexes(self.target_catalog.table(table.ref)) if rebuild else ()
        with self.clock.measure(Phase.COPY, table.ref):
            drop_indexes(dst, table, deferred)
            streaming = stream_table(src, dst, table, copy_format(table, self.plan.catalog, self.target_catalog),
                                     shape, freeze=freeze)
            stats = yield from mapped(streaming, lambda tick: TableStreaming(table.ref, *tick, table.estimated_rows))
        with self.clock.measure(Phase.REBUILD, table.ref):
            build_indexes(dst, table, deferred, stats.bytes)
        return replace(stats, seconds=time.perf_counter() - started)  # the whole table, rebuilds included

    def whole_tables(self, dst: psycopg.Connection) -> tuple[dict[TableRef, str], dict[TableRef, tuple[str, ...]]]:
        """Which tables go whole, and why; the others' keys, for comparing them."""
        if self.full:
            return {ref: ASKED_FULL for ref in self.plan.selected}, {}
        whole, keys = {}, {}
        for ref in self.plan.selected:
            source, target = self.plan.catalog.table(ref), self.target_catalog.table(ref)
            key, why = range_key(source, target)
            if not key:
                whole[ref] = why
            elif not has_rows(dst, target):
                whole[ref] = EMPTY_TARGET
            else:
                keys[ref] = key
        return whole, keys

    def empty(self, dst: psycopg.Connection, whole: Iterable[TableRef]) -> set[TableRef]:
        """Empty the tables that go whole: one TRUNCATE of those no other table references, or
        that go whole with every table referencing them; DELETE for the rest. The truncated
        ones come back, for COPY FREEZE."""
        truncated = set(whole)
        kept = True
        while kept:
            kept = False
            for fk in self.plan.catalog.foreign_keys:
                if fk.parent in truncated and fk.child not in truncated:
                    truncated.discard(fk.parent)
                    kept = True
        self.truncate(dst, sorted(truncated))
        for ref in sorted(set(whole) - truncated):
            dst.execute(DELETE_ALL.format(table=ref.ident()))
        return truncated

    def copy_difference(self, src: psycopg.Connection, dst: psycopg.Connection, ref: TableRef,
                        key: tuple[str, ...]) -> Generator[TableStreaming, None, CopyStats]:
        """Compare the table with the target; delete and copy again the rows of its changed keys
        (readers keep reading the old rows until the commit), or the whole table when most changed."""
        started = time.perf_counter()
        table, shape = self.plan.catalog.table(ref), self.shapes.get(ref, WHOLE)
        with self.clock.measure(Phase.COMPARE, ref):
            compared = compare(src, dst, table, key, shape)
        known = dict(compared_rows=compared.source_rows, source_digest=compared.source_digest)
        if compared.unchanged:
            fmt = copy_format(table, self.plan.catalog, self.target_catalog)
            return CopyStats(compared.source_rows, 0, time.perf_counter() - started, fmt, UNCHANGED, copied_rows=0,
                             target_digest=compared.target_digest, **known)
        if compared.changed is None:
            deleted = count_rows(dst, ref)  # all of them go
            stats = yield from self.copy_one(src, dst, ref, truncated_here=ref in self.empty(dst, [ref]))
            return replace(stats, seconds=time.perf_counter() - started, deleted_rows=deleted,
                           reason=f"more than {MAX_CHANGED_SHARE:.0%} of its rows changed", **known)
        deleted = delete_keys(dst, table, key, compared.changed)
        rebuild = len(compared.changed) >= INDEX_REBUILD_SHARE * max(compared.source_rows, 1)
        stats = yield from self.stream_rows(src, dst, table, KeyedShape.of(shape, key, compared.changed),
                                            freeze=False, rebuild=rebuild)
        return replace(stats, rows=compared.source_rows, copied_rows=stats.rows, deleted_rows=deleted, path=DELTA,
                       reason="indexes rebuilt" if rebuild else "", seconds=time.perf_counter() - started, **known)

    def gated(self, src: psycopg.Connection, dst: psycopg.Connection,
              copied: Mapping[TableRef, CopyStats]) -> Iterator[object]:
        if self.gate:
            yield from self.gate(src, dst, [table_copy(self.plan.catalog, self.target_catalog, ref, stats,
                                                       self.snapshot_id) for ref, stats in copied.items()])

    def finish(self, src: psycopg.Connection, dst: psycopg.Connection,
               done: Mapping[TableRef, CopyStats]) -> dict[TableRef, ViewStats]:
        """After every table: the materialized views that read a table that changed, then the
        sequences (setval cannot be rolled back, so it comes last)."""
        changed = [ref for ref, stats in done.items() if stats.path != UNCHANGED]
        with self.clock.measure(Phase.VIEWS):
            views = refresh_views(dst, views_to_refresh(self.plan.catalog.materialized_views, changed))
        with self.clock.measure(Phase.SEQUENCES):
            sync_sequences(src, dst, sequence_pairs(self.plan, self.target_catalog))
        return views

    def atomically(self, src: psycopg.Connection, dst: psycopg.Connection) -> Generator[object, None, Loaded]:
        """One target transaction: truncate, copy every table, gate, views, sequences, commit; or roll it all back."""
        done: dict[TableRef, CopyStats] = {}
        try:
            with dst.transaction():
                dst.execute(REPLICA_ROLE)  # FK and user triggers stay quiet; SET LOCAL ends with the transaction
                whole, keys = self.whole_tables(dst)
                if keys:
                    with self.clock.measure(Phase.HOLD):
                        hold_for_comparison(dst, list(keys))
                truncated = self.empty(dst, whole)
                for batch in self.plan.batches:
                    for ref in batch:
                        if ref in keys:
                            done[ref] = yield from self.copy_difference(src, dst, ref, keys[ref])
                        else:
                            stats = yield from self.copy_one(src, dst, ref, truncated_here=ref in truncated)
                            done[ref] = replace(stats, reason=whole[ref])
                        yield TableCopied(ref, done[ref])
                yield from self.gated(src, dst, done)  # after the last table, so a cycle's members are all loaded
                views = self.finish(src, dst, done)
            self.clock.since_last(Phase.COMMIT)
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
            return Loaded(done, failed, self.finish(src, dst, done))

    def unit_events(self, wsrc: psycopg.Connection, wdst: psycopg.Connection, unit: tuple[TableRef, ...],
                    done: dict[TableRef, CopyStats]) -> Iterator[object]:
        """One transaction for the unit; its tables count as copied once it commits."""
        attach_snapshot(wsrc, self.snapshot_id)
        stats: dict[TableRef, CopyStats] = {}
        with wdst.transaction():
            wdst.execute(REPLICA_ROLE)
            for ref in unit:
                copied = yield from self.copy_one(wsrc, wdst, ref)
                stats[ref] = replace(copied, reason=PARALLEL_FULL)
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
