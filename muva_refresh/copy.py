"""The load: one exported source snapshot, truncate, COPY streaming, index rebuilds, sequences.

Everything here runs after the guards. The default load is one target transaction, so a
failure leaves staging exactly as it was; the parallel load commits a table (or an FK cycle)
at a time, level by level, so a failure never leaves a loaded table without its parents.
"""

from __future__ import annotations

import hashlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Callable, Iterator, Mapping

import psycopg
from psycopg import sql

from .catalog import Catalog, Index, Table, TableRef
from .endpoint import Endpoint, describe
from .errors import CopyError, RefreshError
from .graph import Plan, strongly_connected

EXPORT_SNAPSHOT = sql.SQL("SELECT pg_export_snapshot()")
SET_SNAPSHOT = sql.SQL("SET TRANSACTION SNAPSHOT {}")  # takes no parameters, so a Literal
REPLICA_ROLE = sql.SQL("SET LOCAL session_replication_role = replica")
TRUNCATE = sql.SQL("TRUNCATE {tables}")  # never CASCADE: the selection guard names what's missing
COPY_OUT = sql.SQL("COPY (SELECT {columns} FROM {table}{order}) TO STDOUT (FORMAT {format})")
COPY_IN = sql.SQL("COPY {table} ({columns}) FROM STDIN (FORMAT {format})")
DROP_INDEX = sql.SQL("DROP INDEX {index}")
READ_SEQUENCE = sql.SQL("SELECT last_value, is_called FROM {sequence}")
SET_SEQUENCE = sql.SQL("SELECT setval(%s::regclass, %s, %s)")


@dataclass(frozen=True)
class CopyStats:
    rows: int
    bytes: int
    seconds: float
    format: str  # "binary" or "text"
    digest: str  # blake2b of the key-ordered COPY stream, for comparing content later

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0


# --- snapshot -------------------------------------------------------------------------------

def begin_snapshot_reader(conn: psycopg.Connection) -> None:
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    conn.read_only = True


@contextmanager
def exported_snapshot(source: Endpoint) -> Iterator[tuple[psycopg.Connection, str]]:
    """A REPEATABLE READ, READ ONLY transaction whose snapshot others import by id.

    The snapshot lives as long as this transaction; every copy of the run reads through it.
    """
    conn = source.connect(read_only=True)
    try:
        begin_snapshot_reader(conn)
        snapshot_id = conn.execute(EXPORT_SNAPSHOT).fetchone()[0]
        yield conn, snapshot_id
    finally:
        conn.rollback()
        conn.close()


def attach_snapshot(conn: psycopg.Connection, snapshot_id: str) -> None:
    """Make `conn`'s next transaction read exactly what the exporting transaction reads."""
    begin_snapshot_reader(conn)
    conn.execute(SET_SNAPSHOT.format(sql.Literal(snapshot_id)))


# --- streaming ------------------------------------------------------------------------------

def copy_format(table: Table, same_major: bool) -> str:
    return "binary" if same_major and table.binary_safe else "text"


def column_list(table: Table) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(c.name) for c in table.copied_columns)


def copy_out_sql(table: Table, fmt: str) -> sql.Composed:
    """Key-ordered, so the stream's digest can be compared with a read-back of the target."""
    order_cols = table.primary_key or tuple(c.name for c in table.copied_columns)
    order = sql.SQL(" ORDER BY {}").format(sql.SQL(", ").join(map(sql.Identifier, order_cols))) if order_cols else sql.SQL("")
    return COPY_OUT.format(columns=column_list(table), table=table.ref.ident(), order=order, format=sql.SQL(fmt.upper()))


def copy_in_sql(table: Table, fmt: str) -> sql.Composed:
    return COPY_IN.format(table=table.ref.ident(), columns=column_list(table), format=sql.SQL(fmt.upper()))


def pump(conn: psycopg.Connection, table: Table, fmt: str, sink: Callable[[memoryview], object] | None = None) -> CopyStats:
    """Read the key-ordered COPY stream of `table` on `conn`, hashing each block as it passes to `sink`."""
    started = time.perf_counter()
    digest = hashlib.blake2b(digest_size=16)
    size = 0
    cur = conn.cursor()
    with cur.copy(copy_out_sql(table, fmt)) as out:
        for block in out:
            digest.update(block)
            size += len(block)
            if sink is not None:
                sink(block)
    return CopyStats(cur.rowcount, size, time.perf_counter() - started, fmt, digest.hexdigest())


def stream_table(src: psycopg.Connection, dst: psycopg.Connection, table: Table, fmt: str) -> CopyStats:
    """COPY TO STDOUT -> COPY FROM STDIN, block by block; psycopg's writer queue bounds memory."""
    with dst.cursor().copy(copy_in_sql(table, fmt)) as into:
        return pump(src, table, fmt, into.write)


def sync_sequences(src: psycopg.Connection, dst: psycopg.Connection, source_table: Table, target_table: Table) -> None:
    """Set each serial/identity sequence on the target from the source's."""
    target_seq = {s.column: s.sequence for s in target_table.sequences}
    for owned in source_table.sequences:
        dest = target_seq.get(owned.column)
        if dest is None:
            continue  # a column without a sequence on the target was already reported as drift, or is fine
        last_value, is_called = src.execute(READ_SEQUENCE.format(sequence=owned.sequence.ident())).fetchone()
        dst.execute(SET_SEQUENCE, (dest.ident().as_string(dst), last_value, is_called))


def rebuilt_indexes(table: Table) -> tuple[Index, ...]:
    """Indexes cheaper to build once than to maintain row by row (HNSW above all).

    Only plain ones: unique and constraint-backed indexes stay, since FKs and the PK rely on them.
    """
    if table.partitioned:
        return ()
    return tuple(i for i in table.indexes if not i.unique and i.constraint is None)


# --- the load -------------------------------------------------------------------------------

@dataclass(frozen=True)
class TableCopy:
    """One table of a run: its catalog entry on both sides, and what COPY read at the snapshot."""

    source: Table
    target: Table
    stats: CopyStats
    snapshot_id: str
    source_catalog: Catalog  # for the FKs that point out of the table


ProgressFn = Callable[[TableRef, CopyStats], None]
# Called inside the load transaction with the target connection; raising rolls the load back.
# The blocking checks plug in here.
GateFn = Callable[[psycopg.Connection, TableCopy], None]
Loaded = tuple[dict[TableRef, CopyStats], dict[TableRef, str]]  # (copied, failed with the reason)


@dataclass(frozen=True)
class Load:
    """One refresh's load phase; everything in it has already passed the guards."""

    plan: Plan
    target_catalog: Catalog
    source: Endpoint
    target: Endpoint
    snapshot_id: str
    on_table: ProgressFn | None
    gate: GateFn | None

    @property
    def same_major(self) -> bool:
        return self.plan.catalog.same_major(self.target_catalog)

    def truncate(self, dst: psycopg.Connection) -> None:
        dst.execute(TRUNCATE.format(tables=sql.SQL(", ").join(r.ident() for r in self.plan.selected)))

    def copy_one(self, src: psycopg.Connection, dst: psycopg.Connection, ref: TableRef) -> CopyStats:
        """Inside the caller's transaction: drop plain indexes, stream, rebuild them, set sequences."""
        started = time.perf_counter()
        table = self.plan.catalog.table(ref)
        target_table = self.target_catalog.table(ref)
        deferred = rebuilt_indexes(target_table)
        for index in deferred:
            dst.execute(DROP_INDEX.format(index=sql.Identifier(ref.schema, index.name)))
        stats = stream_table(src, dst, table, copy_format(table, self.same_major))
        for index in deferred:
            dst.execute(sql.SQL(index.definition))  # pg_get_indexdef's own text, quoted by the server
        sync_sequences(src, dst, table, target_table)
        return replace(stats, seconds=time.perf_counter() - started)  # the whole table, rebuilds included

    def run_gate(self, dst: psycopg.Connection, copied: Mapping[TableRef, CopyStats]) -> None:
        if self.gate:
            for ref, stats in copied.items():
                self.gate(dst, table_copy(self.plan.catalog, self.target_catalog, ref, stats, self.snapshot_id))

    def atomically(self, src: psycopg.Connection, dst: psycopg.Connection) -> Loaded:
        """One target transaction: truncate, copy every table, gate, commit; or roll it all back."""
        done: dict[TableRef, CopyStats] = {}
        try:
            with dst.transaction():
                dst.execute(REPLICA_ROLE)  # FK and user triggers stay quiet; SET LOCAL ends with the transaction
                self.truncate(dst)
                for batch in self.plan.batches:
                    for ref in batch:
                        done[ref] = self.copy_one(src, dst, ref)
                        if self.on_table:
                            self.on_table(ref, done[ref])  # progress; visible to readers only at COMMIT
                self.run_gate(dst, done)  # after the last table, so a cycle's members are all loaded
        except psycopg.Error as exc:
            where = next((r for b in self.plan.batches for r in b if r not in done), None)
            raise CopyError(
                f"copy failed at {where}: {describe(exc, self.source, self.target)}; "
                "the target was rolled back and is unchanged"
            ) from None
        return done, {}

    def in_parallel(self, dst: psycopg.Connection, workers: int) -> Loaded:
        """Level by level on `workers` connection pairs that import the snapshot; a transaction per unit."""
        with dst.transaction():
            self.truncate(dst)
        done: dict[TableRef, CopyStats] = {}
        failed: dict[TableRef, str] = {}
        lock = threading.Lock()
        with WorkerPairs(self.source, self.target) as pairs:

            def load_unit(unit: tuple[TableRef, ...]) -> None:
                wsrc, wdst = pairs.mine()
                try:
                    attach_snapshot(wsrc, self.snapshot_id)
                    with wdst.transaction():
                        wdst.execute(REPLICA_ROLE)
                        stats = {ref: self.copy_one(wsrc, wdst, ref) for ref in unit}
                        self.run_gate(wdst, stats)
                    with lock:  # callbacks run one at a time, so they need not be thread-safe
                        done.update(stats)
                        for ref, s in stats.items():
                            if self.on_table:
                                self.on_table(ref, s)
                except (psycopg.Error, RefreshError) as exc:
                    with lock:
                        failed.update((ref, describe(exc, self.source, self.target)) for ref in unit)
                finally:
                    wsrc.rollback()

            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="muva-copy") as pool:
                for batch in self.plan.batches:
                    # An FK cycle shares a level; its members load in one transaction.
                    parents = {t: tuple(p for p in self.plan.parents[t] if p in batch) for t in batch}
                    list(pool.map(load_unit, strongly_connected(list(batch), parents)))
                    if failed:
                        break  # deeper levels would point at what failed to load
        return done, failed


def table_copy(source: Catalog, target: Catalog, ref: TableRef, stats: CopyStats, snapshot_id: str) -> TableCopy:
    return TableCopy(source.table(ref), target.table(ref), stats, snapshot_id, source)


class WorkerPairs:
    """One (source, target) connection pair per worker thread, opened on first use, all closed on exit."""

    def __init__(self, source: Endpoint, target: Endpoint):
        self.source, self.target = source, target
        self.local = threading.local()
        self.opened: list[psycopg.Connection] = []
        self.lock = threading.Lock()

    def mine(self) -> tuple[psycopg.Connection, psycopg.Connection]:
        if not hasattr(self.local, "pair"):
            self.local.pair = (self.source.connect(read_only=True), self.target.connect(read_only=False))
            with self.lock:
                self.opened.extend(self.local.pair)
        return self.local.pair

    def __enter__(self) -> "WorkerPairs":
        return self

    def __exit__(self, *exc: object) -> None:
        for conn in self.opened:
            conn.close()
