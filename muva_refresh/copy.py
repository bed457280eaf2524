"""The load: one exported source snapshot, truncate, COPY streaming, index rebuilds, sequences,
materialized views.

Everything here runs after the guards. The default load is one target transaction, so a
failure leaves staging exactly as it was; the parallel load commits a table (or an FK cycle)
at a time, level by level, so a failure never leaves a loaded table without its parents.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Callable, Iterable, Iterator, Mapping

import psycopg
from psycopg import sql

from .catalog import Catalog, Index, MaterializedView, Table, TableRef
from .endpoint import Endpoint, describe
from .errors import CopyError, RefreshError
from .graph import Plan, strongly_connected

EXPORT_SNAPSHOT = sql.SQL("SELECT pg_export_snapshot()")
SET_SNAPSHOT = sql.SQL("SET TRANSACTION SNAPSHOT {}")  # takes no parameters, so a Literal
REPLICA_ROLE = sql.SQL("SET LOCAL session_replication_role = replica")
TRUNCATE = sql.SQL("TRUNCATE {tables}")  # never CASCADE: the selection guard names what's missing
ROWS = sql.SQL("{ctes}SELECT {columns} FROM {table} AS t{where}")  # what COPY sends and the digest hashes
COPY_OUT = sql.SQL("COPY ({rows}) TO STDOUT (FORMAT {format})")
COPY_IN = sql.SQL("COPY {table} ({columns}) FROM STDIN (FORMAT {format}{freeze})")
# Each server hashes its own rows: a 64-bit hash of each row, summed mod 2**64, so equal multisets
# of rows hash equal in any order (duplicates count) and neither side sorts. A row's hash XORs
# its columns' hashes, each seeded with the column's position (so two columns that swap values
# differ) and a NULL standing as the position itself: no row text is built and quoted. Types
# whose values have one representation each (integers, timestamps, uuids) hash their values;
# every other type its text output, in collation "C" so that a case-insensitive collation does
# not make "A" equal "a". Both are exact: equal hashes mean equal representations, not values
# equal under the type's own equality (1.0 is not 1.00). The functions are PostgreSQL's own hash
# support, alike from version 11 on, so two major versions hash alike.
ROW_DIGEST = sql.SQL("SELECT count(*), sum({row_hash}) FROM ({rows}) AS s")
INTEGER_HASH = sql.SQL("hashint8extended({}, {})")
VALUE_HASHES = {
    "smallint": INTEGER_HASH,
    "integer": INTEGER_HASH,
    "bigint": INTEGER_HASH,
    "timestamp without time zone": sql.SQL("timestamp_hash_extended({}, {})"),
    # The instant as UTC, whatever the session's time zone (PostgreSQL 15 has no timestamptz_hash_extended).
    "timestamp with time zone": sql.SQL("timestamp_hash_extended({} AT TIME ZONE 'UTC', {})"),
    "uuid": sql.SQL("uuid_hash_extended({}, {})"),
}
TEXT_HASH = sql.SQL('hashtextextended({}::text COLLATE "C", {})')
DROP_INDEX = sql.SQL("DROP INDEX {index}")
# The workers the server allows an index build, unless the table names its own number.
REBUILD_WORKERS = sql.SQL(
    "SELECT current_setting('max_parallel_maintenance_workers')::int FROM pg_class AS c WHERE c.oid = %s::regclass "
    "AND NOT EXISTS (SELECT FROM pg_options_to_table(c.reloptions) WHERE option_name = 'parallel_workers')"
)
SET_PARALLEL_WORKERS = sql.SQL("ALTER TABLE {table} SET (parallel_workers = {workers})")
RESET_PARALLEL_WORKERS = sql.SQL("ALTER TABLE {table} RESET (parallel_workers)")
# PostgreSQL's own min_parallel_table_scan_size, applied to the bytes copied instead of the heap.
PARALLEL_REBUILD_BYTES = 8 * 1024 * 1024
READ_SEQUENCE = sql.SQL("SELECT last_value, is_called FROM {sequence}")
SET_SEQUENCE = sql.SQL("SELECT setval(%s::regclass, %s, %s)")
REFRESH_VIEW = sql.SQL("REFRESH MATERIALIZED VIEW {view}")
COUNT_ROWS = sql.SQL("SELECT count(*) FROM {table}")
TICK_SECONDS = 0.5
WRITE_BYTES = 128 * 1024


@dataclass(frozen=True)
class CopyStats:
    rows: int
    bytes: int
    seconds: float
    format: str  # "binary" or "text"

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class ViewStats:
    rows: int
    seconds: float


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

# Binary arrays and composites carry their element and field type OIDs, which differ between
# databases for user-defined types. Servers before this version refuse a mismatch ("wrong element
# type"); later ones check only built-in OIDs and read the value as the column's type. 15 and 18
# are the versions the tests prove it on.
USER_TYPE_OIDS_IGNORED = 150000


def copy_format(table: Table, source: Catalog, target: Catalog) -> str:
    """Binary where both servers read it alike: one major version, and for arrays and composites
    of user-defined types a target that ignores their OIDs. Text otherwise, which costs both
    servers more CPU."""
    if not source.same_major(target):
        return "text"
    return "binary" if table.binary_safe or target.server_version >= USER_TYPE_OIDS_IGNORED else "text"


def column_list(table: Table) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(c.name) for c in table.copied_columns)


@dataclass(frozen=True)
class Shape:
    """What the source sends of a table: masked columns as expressions, and a subset's rows.

    The source server evaluates both inside the snapshot, so unmasked values never leave it.
    """

    expressions: Mapping[str, sql.Composable] = field(default_factory=dict)  # column -> masked value
    ctes: sql.Composable | None = None  # WITH …, the subset's row sets the filter reads
    where: sql.Composable | None = None  # the subset's filter on `t`

    def select_list(self, table: Table) -> sql.Composable:
        return sql.SQL(", ").join(
            sql.SQL("{} AS {}").format(self.expressions[c.name], sql.Identifier(c.name))
            if c.name in self.expressions else sql.Identifier(c.name)
            for c in table.copied_columns
        )

    def row_hash(self, table: Table) -> sql.Composable:
        """ROW_DIGEST's hash of a row of `rows`, its columns as the target stores them (a masked
        value cast to its column's type)."""
        hashes = []
        for position, c in enumerate(table.copied_columns, start=1):
            value = (sql.SQL("s.{}::{}").format(sql.Identifier(c.name), sql.SQL(c.type))  # format_type's own text
                     if c.name in self.expressions else sql.SQL("s.{}").format(sql.Identifier(c.name)))
            hashed = VALUE_HASHES.get(c.type, TEXT_HASH)
            hashes.append(sql.SQL("coalesce({}, {})").format(hashed.format(value, position), position))
        return sql.SQL(" # ").join(hashes) if hashes else sql.SQL("0")

    def rows(self, table: Table) -> sql.Composed:
        return ROWS.format(
            ctes=sql.SQL("{} ").format(self.ctes) if self.ctes else sql.SQL(""),
            columns=self.select_list(table),
            table=table.ref.ident(),
            where=sql.SQL(" WHERE {}").format(self.where) if self.where else sql.SQL(""),
        )


WHOLE = Shape()


def copy_out_sql(table: Table, fmt: str, shape: Shape = WHOLE) -> sql.Composed:
    """In heap order, a sequential scan: the row digest does not depend on the order."""
    return COPY_OUT.format(rows=shape.rows(table), format=sql.SQL(fmt.upper()))


def copy_in_sql(table: Table, fmt: str, freeze: bool = False) -> sql.Composed:
    return COPY_IN.format(table=table.ref.ident(), columns=column_list(table), format=sql.SQL(fmt.upper()),
                          freeze=sql.SQL(", FREEZE") if freeze else sql.SQL(""))


def row_digest(conn: psycopg.Connection, table: Table, shape: Shape = WHOLE) -> tuple[int, str]:
    """(rows, digest) of `table` as `shape` sends it, computed by the server `conn` reaches."""
    query = ROW_DIGEST.format(row_hash=shape.row_hash(table), rows=shape.rows(table))
    rows, total = conn.execute(query).fetchone()  # a numeric sum, None for no rows
    return rows, f"{int(total or 0) % 2**64:016x}"


def pump(
    conn: psycopg.Connection,
    table: Table,
    fmt: str,
    sink: Callable[[memoryview], object],
    tick: Callable[[int, "int | None"], None] | None = None,
    shape: Shape = WHOLE,
) -> CopyStats:
    """Read the COPY stream of `table` (as `shape` makes it) on `conn`, passing each block to
    `sink`; `tick` hears the bytes (and text rows) so far, at most every TICK_SECONDS."""
    started = time.perf_counter()
    next_tick = started + TICK_SECONDS  # a table that takes less never ticks
    size = rows = 0
    cur = conn.cursor()
    with cur.copy(copy_out_sql(table, fmt, shape)) as out:
        for block in out:
            size += len(block)
            sink(block)
            if tick is not None:
                rows += bytes(block).count(b"\n") if fmt == "text" else 0
                if time.perf_counter() >= next_tick:
                    tick(size, rows if fmt == "text" else None)
                    next_tick = time.perf_counter() + TICK_SECONDS
    return CopyStats(cur.rowcount, size, time.perf_counter() - started, fmt)


class Gathered:
    """Blocks joined into writes of WRITE_BYTES: COPY TO sends a message per row, and writing
    each on its own costs a call into the target's connection per row."""

    def __init__(self, sink: Callable[[bytearray], object]):
        self.sink = sink
        self.buffer = bytearray()

    def write(self, block: memoryview) -> None:
        self.buffer += block
        if len(self.buffer) >= WRITE_BYTES:
            self.flush()

    def flush(self) -> None:
        if self.buffer:
            self.sink(self.buffer)
            self.buffer = bytearray()  # the writer may still hold the last one


def stream_table(src: psycopg.Connection, dst: psycopg.Connection, table: Table, fmt: str,
                 tick: Callable[[int, "int | None"], None] | None = None, shape: Shape = WHOLE,
                 freeze: bool = False) -> CopyStats:
    """COPY TO STDOUT -> COPY FROM STDIN, gathered into writes of WRITE_BYTES; memory stays at that
    and psycopg's bounded writer queue."""
    with dst.cursor().copy(copy_in_sql(table, fmt, freeze)) as into:
        gathered = Gathered(into.write)
        stats = pump(src, table, fmt, gathered.write, tick, shape)
        gathered.flush()
        return stats


def count_rows(conn: psycopg.Connection, ref: TableRef) -> int:
    return conn.execute(COUNT_ROWS.format(table=ref.ident())).fetchone()[0]


def sequence_pairs(plan: Plan, target_catalog: Catalog) -> list[tuple[TableRef, TableRef]]:
    """(source sequence, target sequence) for every sequence the selected tables use, owned or
    not, each target sequence once; a sequence in a schema that is not configured is left alone."""
    pairs: dict[TableRef, TableRef] = {}
    for sequence, uses in plan.catalog.sequence_uses(plan.selected).items():
        if sequence.schema not in plan.catalog.schemas:
            continue  # the plan says so
        for ref, used in uses:
            on_target = {u.sequence for u in target_catalog.table(ref).sequences if u.column == used.column}
            dest = sequence if sequence in on_target else next(iter(on_target)) if len(on_target) == 1 else None
            if dest is not None:
                pairs.setdefault(dest, sequence)
    return [(source_seq, target_seq) for target_seq, source_seq in pairs.items()]


def sync_sequences(src: psycopg.Connection, dst: psycopg.Connection, pairs: list[tuple[TableRef, TableRef]]) -> None:
    """Set each target sequence from its source sequence (setval is not transactional: call it last)."""
    for source_seq, target_seq in pairs:
        last_value, is_called = src.execute(READ_SEQUENCE.format(sequence=source_seq.ident())).fetchone()
        dst.execute(SET_SEQUENCE, (target_seq.ident().as_string(dst), last_value, is_called))


def refresh_views(dst: psycopg.Connection, views: list[MaterializedView]) -> dict[TableRef, ViewStats]:
    """REFRESH each view in the given (dependency) order, inside the caller's transaction."""
    done = {}
    for view in views:
        started = time.perf_counter()
        dst.execute(REFRESH_VIEW.format(view=view.ref.ident()))
        done[view.ref] = ViewStats(count_rows(dst, view.ref), time.perf_counter() - started)
    return done


def rebuilt_indexes(table: Table) -> tuple[Index, ...]:
    """Indexes cheaper to build once than to maintain row by row (HNSW above all).

    Only plain ones: unique and constraint-backed indexes stay, since FKs and the PK rely on them.
    """
    if table.partitioned:
        return ()
    return tuple(i for i in table.indexes if not i.unique and i.constraint is None)


@contextmanager
def parallel_rebuild(dst: psycopg.Connection, table: Table, copied_bytes: int) -> Iterator[None]:
    """Index builds on the server's parallel maintenance workers for a table that copied at least
    PARALLEL_REBUILD_BYTES.

    PostgreSQL sizes a parallel build by the table's heap alone, and rows whose values live in
    TOAST look small to it: pgvector's embeddings do, and their HNSW build then takes one core.
    The table's own parallel_workers setting asks for the workers; it is reset in the same
    transaction, so the table keeps its options, and a table that sets its own is left alone.
    """
    workers = 0
    if copied_bytes >= PARALLEL_REBUILD_BYTES:
        row = dst.execute(REBUILD_WORKERS, (table.ref.ident().as_string(dst),)).fetchone()
        workers = row[0] if row else 0
    if workers:
        dst.execute(SET_PARALLEL_WORKERS.format(table=table.ref.ident(), workers=sql.Literal(workers)))
    yield
    if workers:
        dst.execute(RESET_PARALLEL_WORKERS.format(table=table.ref.ident()))


class SnapshotDigests:
    """The source's row digest of each copied table, on one more connection in the snapshot.

    The connection imports the snapshot at once, while the exporting transaction lives; the
    hashing starts only after COMMIT (`start`), so it does not take the cores the load needs,
    and runs while the checks after COMMIT hash the target. The connection closes itself after
    the last digest. A digest that failed reads "unavailable: …", which no target digest equals.
    """

    def __init__(self, source: Endpoint, snapshot_id: str, shapes: Mapping[TableRef, Shape]):
        self.source, self.snapshot_id, self.shapes = source, snapshot_id, shapes
        self.pending: dict[TableRef, Future] = {}
        self.conn: psycopg.Connection | None = None
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="muva-digest")
        self.attached = self.pool.submit(self.attach)

    def attach(self) -> None:
        self.conn = self.source.connect(read_only=True)
        attach_snapshot(self.conn, self.snapshot_id)

    def start(self, tables: Iterable[Table]) -> None:
        """Hash `tables` in the background, then close the connection. Call it while the exporting
        transaction lives: a short load can end before the import did."""
        wait([self.attached])
        for table in tables:
            self.pending[table.ref] = self.pool.submit(self.compute, table)
        self.pool.submit(self.close)
        self.pool.shutdown(wait=False)

    def compute(self, table: Table) -> str:
        self.attached.result()  # raises what the import raised
        return row_digest(self.conn, table, self.shapes.get(table.ref, WHOLE))[1]

    def digest(self, ref: TableRef) -> str:
        if ref not in self.pending:
            return "unavailable: not hashed in this run"
        try:
            return self.pending[ref].result()
        except (psycopg.Error, RefreshError) as exc:
            return f"unavailable: {describe(exc, self.source)}"

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()

    def abandon(self) -> None:
        """After a failed load: no digest will be read."""
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.close()


# --- the load -------------------------------------------------------------------------------

@dataclass(frozen=True)
class TableCopy:
    """One table of a run: its catalog entry on both sides, and what COPY read at the snapshot."""

    source: Table
    target: Table
    stats: CopyStats
    snapshot_id: str
    source_catalog: Catalog  # for the FKs that point out of the table
    source_digest: Callable[[], str] = lambda: "unavailable: not hashed in this run"  # waits for it


ProgressFn = Callable[[TableRef, CopyStats], None]
# (table, bytes so far, rows so far or None where the format does not show them, pg_class's
# estimate of the rows); at most twice a second, for a table that takes longer than that.
StreamFn = Callable[[TableRef, int, "int | None", int], None]
# Called inside the load transaction with the source (in the snapshot) and target connections;
# raising rolls the load back. The blocking checks plug in here.
GateFn = Callable[[psycopg.Connection, psycopg.Connection, TableCopy], None]


class Progress:
    """Where a run's progress goes besides the Dagster log; the default says nothing."""

    def copied(self, ref: TableRef, stats: CopyStats) -> None:
        pass

    def streaming(self, ref: TableRef, size: int, rows: int | None, estimated_rows: int) -> None:
        pass


@dataclass(frozen=True)
class Hooks:
    """What the caller hears during the load."""

    on_table: ProgressFn | None = None  # a table is copied (readers see it only at COMMIT)
    on_stream: StreamFn | None = None  # a large table is still being copied
    gate: GateFn | None = None


@dataclass(frozen=True)
class Loaded:
    tables: dict[TableRef, CopyStats]
    failed: dict[TableRef, str]  # with the reason; only the parallel load reports failures here
    views: dict[TableRef, ViewStats]


@dataclass(frozen=True)
class Load:
    """One refresh's load phase; everything in it has already passed the guards."""

    plan: Plan
    target_catalog: Catalog
    source: Endpoint
    target: Endpoint
    snapshot_id: str
    hooks: Hooks
    shapes: Mapping[TableRef, Shape]  # masked and subsetted tables; the others go whole

    def truncate(self, dst: psycopg.Connection) -> None:
        dst.execute(TRUNCATE.format(tables=sql.SQL(", ").join(r.ident() for r in self.plan.selected)))

    def copy_one(self, src: psycopg.Connection, dst: psycopg.Connection, ref: TableRef,
                 truncated_here: bool = False) -> CopyStats:
        """Inside the caller's transaction: drop plain indexes, stream, rebuild them.

        `truncated_here`: the TRUNCATE is in this transaction, so COPY may FREEZE the rows and
        no later read or vacuum rewrites the pages to set hint bits.
        """
        started = time.perf_counter()
        table = self.plan.catalog.table(ref)
        deferred = rebuilt_indexes(self.target_catalog.table(ref))
        for index in deferred:
            dst.execute(DROP_INDEX.format(index=sql.Identifier(ref.schema, index.name)))
        on_stream = self.hooks.on_stream
        tick = (lambda size, rows: on_stream(ref, size, rows, table.estimated_rows)) if on_stream else None
        stats = stream_table(src, dst, table, copy_format(table, self.plan.catalog, self.target_catalog), tick,
                             self.shapes.get(ref, WHOLE), freeze=truncated_here and not table.partitioned)
        with parallel_rebuild(dst, table, stats.bytes if deferred else 0):
            for index in deferred:
                dst.execute(sql.SQL(index.definition))  # pg_get_indexdef's own text, quoted by the server
        return replace(stats, seconds=time.perf_counter() - started)  # the whole table, rebuilds included

    def copied(self, ref: TableRef, stats: CopyStats) -> None:
        if self.hooks.on_table:
            self.hooks.on_table(ref, stats)

    def run_gate(self, src: psycopg.Connection, dst: psycopg.Connection, copied: Mapping[TableRef, CopyStats]) -> None:
        if self.hooks.gate:
            for ref, stats in copied.items():
                self.hooks.gate(src, dst, table_copy(self.plan.catalog, self.target_catalog, ref, stats, self.snapshot_id))

    def finish(self, src: psycopg.Connection, dst: psycopg.Connection) -> dict[TableRef, ViewStats]:
        """After every table: the materialized views that read them, then the sequences (setval
        cannot be rolled back, so it comes last)."""
        views = refresh_views(dst, self.plan.views)
        sync_sequences(src, dst, sequence_pairs(self.plan, self.target_catalog))
        return views

    def atomically(self, src: psycopg.Connection, dst: psycopg.Connection) -> Loaded:
        """One target transaction: truncate, copy every table, gate, views, sequences, commit; or roll it all back."""
        done: dict[TableRef, CopyStats] = {}
        try:
            with dst.transaction():
                dst.execute(REPLICA_ROLE)  # FK and user triggers stay quiet; SET LOCAL ends with the transaction
                self.truncate(dst)
                for batch in self.plan.batches:
                    for ref in batch:
                        done[ref] = self.copy_one(src, dst, ref, truncated_here=True)
                        self.copied(ref, done[ref])
                self.run_gate(src, dst, done)  # after the last table, so a cycle's members are all loaded
                views = self.finish(src, dst)
        except psycopg.Error as exc:
            where = next((r for b in self.plan.batches for r in b if r not in done), "the materialized views")
            raise CopyError(
                f"copy failed at {where}: {describe(exc, self.source, self.target)}; "
                "the target was rolled back and is unchanged"
            ) from None
        return Loaded(done, {}, views)

    def in_parallel(self, src: psycopg.Connection, dst: psycopg.Connection, workers: int) -> Loaded:
        """Level by level on `workers` connection pairs that import the snapshot; a transaction per unit."""
        with dst.transaction():
            self.truncate(dst)
        done: dict[TableRef, CopyStats] = {}
        failed: dict[TableRef, str] = {}
        lock = threading.Lock()
        with ThreadConnections(lambda: (self.source.connect(read_only=True), self.target.connect(read_only=False))) as pairs:

            def load_unit(unit: tuple[TableRef, ...]) -> None:
                wsrc, wdst = pairs.mine()
                try:
                    attach_snapshot(wsrc, self.snapshot_id)
                    with wdst.transaction():
                        wdst.execute(REPLICA_ROLE)
                        stats = {ref: self.copy_one(wsrc, wdst, ref) for ref in unit}
                        self.run_gate(wsrc, wdst, stats)
                    with lock:  # callbacks run one at a time, so they need not be thread-safe
                        done.update(stats)
                        for ref, s in stats.items():
                            self.copied(ref, s)
                except (psycopg.Error, RefreshError) as exc:
                    with lock:
                        failed.update((ref, describe(exc, self.source, self.target)) for ref in unit)
                finally:
                    wsrc.rollback()

            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="muva-copy") as pool:
                for batch in self.plan.batches:
                    # An FK cycle shares a level; its members load in one transaction.
                    parents = {t: tuple(p for p in self.plan.parents[t] if p in batch) for t in batch}
                    list(pool.map(load_unit, self.largest_first(strongly_connected(list(batch), parents))))
                    if failed:  # deeper levels would point at what failed to load
                        return Loaded(done, failed, {})
        with dst.transaction():
            return Loaded(done, failed, self.finish(src, dst))

    def largest_first(self, units: list[tuple[TableRef, ...]]) -> list[tuple[TableRef, ...]]:
        """The longest copies start first, so a large table does not start last and run alone."""
        return sorted(units, key=lambda unit: -sum(self.plan.catalog.table(r).estimated_rows for r in unit))


def table_copy(source: Catalog, target: Catalog, ref: TableRef, stats: CopyStats, snapshot_id: str,
               digests: SnapshotDigests | None = None) -> TableCopy:
    copy = TableCopy(source.table(ref), target.table(ref), stats, snapshot_id, source)
    return replace(copy, source_digest=partial(digests.digest, ref)) if digests else copy


class ThreadConnections:
    """The connections each worker thread opens on first use (`open` returns them as a tuple),
    all closed on exit."""

    def __init__(self, open: Callable[[], tuple[psycopg.Connection, ...]]):
        self.open = open
        self.local = threading.local()
        self.opened: list[psycopg.Connection] = []
        self.lock = threading.Lock()

    def mine(self) -> tuple[psycopg.Connection, ...]:
        if not hasattr(self.local, "conns"):
            self.local.conns = self.open()
            with self.lock:
                self.opened.extend(self.local.conns)
        return self.local.conns

    def __enter__(self) -> "ThreadConnections":
        return self

    def __exit__(self, *exc: object) -> None:
        for conn in self.opened:
            conn.close()
