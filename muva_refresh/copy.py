"""The copy: guards, one exported source snapshot, truncate, COPY streaming, sequences.

The order of the calls in `refresh` is the safety argument: every guard runs before the
first write, the source is only ever read, and the default load is one target transaction,
so a failure leaves staging exactly as it was.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator, Mapping, Sequence

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from .catalog import Catalog, Index, Table, TableFilter, TableRef, catalog_drift, read_catalog
from .errors import ConcurrentRefreshError, ConfigError, CopyError, RefreshError, SchemaDriftError, UnsafeTargetError
from .graph import Plan, make_plan, strongly_connected

EXPORT_SNAPSHOT = sql.SQL("SELECT pg_export_snapshot()")
SET_SNAPSHOT = sql.SQL("SET TRANSACTION SNAPSHOT {}")  # takes no parameters, so a Literal
READ_ONLY_SESSION = sql.SQL("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
REPLICA_ROLE = sql.SQL("SET LOCAL session_replication_role = replica")
SERVER_IDENTITY = sql.SQL(
    "SELECT pg_postmaster_start_time()::text, current_database(), "
    "(SELECT oid FROM pg_database WHERE datname = current_database())::int, "
    "current_setting('server_version_num')::int"
)
# One key per target database: session-level, so it is released when the connection closes.
REFRESH_LOCK_KEY = 0x6D757661  # "muva"
TAKE_REFRESH_LOCK = sql.SQL("SELECT pg_try_advisory_lock({key})").format(key=sql.Literal(REFRESH_LOCK_KEY))
REFRESH_LOCK_HOLDER = sql.SQL(
    "SELECT l.pid, a.application_name, a.backend_start::text FROM pg_locks l "
    "LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.classid = 0 AND l.objid = {key} AND l.granted"
).format(key=sql.Literal(REFRESH_LOCK_KEY))
BYPASSES_RLS = sql.SQL("SELECT current_user, rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user")
TRUNCATE = sql.SQL("TRUNCATE {tables}")  # never CASCADE: the selection guard names what's missing
COPY_OUT = sql.SQL("COPY (SELECT {columns} FROM {table}{order}) TO STDOUT (FORMAT {format})")
COPY_IN = sql.SQL("COPY {table} ({columns}) FROM STDIN (FORMAT {format})")
DROP_INDEX = sql.SQL("DROP INDEX {index}")
READ_SEQUENCE = sql.SQL("SELECT last_value, is_called FROM {sequence}")
SET_SEQUENCE = sql.SQL("SELECT setval(%s::regclass, %s, %s)")


@dataclass(frozen=True)
class Endpoint:
    """A database the tool talks to. Its str and repr never contain the password."""

    role: str  # "source" or "target"
    dsn: str = field(repr=False)

    def __str__(self) -> str:
        try:
            info = conninfo_to_dict(self.dsn)
        except psycopg.Error:
            return f"{self.role} (unparsable DSN)"
        return f"{self.role} {info.get('user', '?')}@{info.get('host', 'localhost')}/{info.get('dbname', '?')}"

    @property
    def password(self) -> str | None:
        try:
            return conninfo_to_dict(self.dsn).get("password") or None
        except psycopg.Error:
            return None

    def scrub(self, text: str) -> str:
        """Remove the password (and any DSN-looking secret) from a message."""
        secret = self.password
        if secret:
            text = text.replace(secret, "***")
        return re.sub(r"(password\s*=\s*)\S+", r"\1***", text)

    def connect(self, *, read_only: bool) -> psycopg.Connection:
        if not self.dsn:
            raise ConfigError(f"no DSN for the {self.role}; set MUVA_{self.role.upper()}_DSN")
        try:
            conn = psycopg.connect(self.dsn, application_name=f"muva_refresh {self.role}")
        except psycopg.Error as exc:
            raise ConfigError(f"cannot connect to the {self}: {describe(exc, self)}") from None
        if read_only:
            # Session-wide: even a statement sent outside our transactions cannot write.
            conn.execute(READ_ONLY_SESSION)
            conn.commit()
            conn.read_only = True
        return conn


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


@dataclass(frozen=True)
class RefreshReport:
    snapshot_id: str
    tables: Mapping[TableRef, CopyStats]
    failed: Mapping[TableRef, str]
    seconds: float
    source_catalog: Catalog  # as read inside the snapshot
    target_catalog: Catalog
    atomic: bool

    @property
    def source_version(self) -> int:
        return self.source_catalog.server_version

    @property
    def target_version(self) -> int:
        return self.target_catalog.server_version

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.tables.values())

    @property
    def bytes(self) -> int:
        return sum(s.bytes for s in self.tables.values())

    def raise_for_failures(self) -> None:
        if self.failed:
            first, reason = next(iter(self.failed.items()))
            raise CopyError(
                f"{len(self.failed)} table(s) failed, first {first}: {reason}; "
                f"{len(self.tables)} table(s) were loaded, and every loaded table has its parents"
            )


def describe(exc: BaseException, *endpoints: Endpoint) -> str:
    """One line for people: the primary message only, since DETAIL can quote production rows."""
    text = str(exc)
    if isinstance(exc, psycopg.Error) and exc.diag.message_primary:
        text = exc.diag.message_primary
    for endpoint in endpoints:
        text = endpoint.scrub(text)
    return text.strip()


# --- guards: all of them run before the first write ------------------------------------------

def server_identity(conn: psycopg.Connection) -> tuple:
    return conn.execute(SERVER_IDENTITY).fetchone()


def guard_single_refresh(target: Endpoint, dst: psycopg.Connection) -> None:
    """Take the target's refresh lock, or refuse: a CLI and a UI refresh must never overlap."""
    if dst.execute(TAKE_REFRESH_LOCK).fetchone()[0]:
        dst.commit()
        return
    holder = dst.execute(REFRESH_LOCK_HOLDER).fetchone()
    dst.rollback()
    who = f" (backend pid {holder[0]}, {holder[1] or 'unnamed'}, since {holder[2]})" if holder else ""
    raise ConcurrentRefreshError(
        f"another refresh is running against the {target}{who}; wait for it to finish, nothing was touched"
    )


def guard_distinct(source: Endpoint, target: Endpoint, src: psycopg.Connection, dst: psycopg.Connection) -> None:
    """Refuse when both DSNs reach the same database, however differently they are spelled."""
    same_server_and_db = server_identity(src)[:3] == server_identity(dst)[:3]
    if source.dsn == target.dsn or same_server_and_db:
        raise UnsafeTargetError(
            f"the target is the source ({target} reaches the same database as {source}); "
            "point MUVA_TARGET_DSN at staging"
        )


def guard_schema(plan: Plan, target_catalog: Catalog) -> None:
    """Every selected table exists on the target with the same copied columns and types."""
    problems: list[str] = []
    for ref in plan.selected:
        source_table = plan.catalog.table(ref)
        target_table = target_catalog.by_ref.get(ref)
        if target_table is None:
            problems.append(f"table {ref} is missing on the target")
            continue
        problems.extend(column_drift(source_table, target_table))
    if problems:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise SchemaDriftError(
            "source and target schemas differ; migrate staging first, nothing was touched:\n  "
            + "\n  ".join(shown)
        )


def guard_unchanged(saved: Catalog, live: Catalog) -> None:
    """The graph the run was planned on (the saved state) must still be the source's."""
    changes = catalog_drift(saved, live)
    if changes:
        raise SchemaDriftError(
            "the source schema changed since the catalog state was saved: " + "; ".join(changes[:10])
            + ". Run `muva-refresh introspect` and reload the code location; nothing was touched"
        )


def guard_rls_bypass(plan: Plan, conns: Mapping[Endpoint, psycopg.Connection]) -> None:
    """RLS would hide rows from COPY silently on the source (and reject COPY FROM on the target)."""
    guarded = [str(r) for r in plan.selected if plan.catalog.table(r).rls_enabled]
    if not guarded:
        return
    for endpoint, conn in conns.items():
        user, bypasses = conn.execute(BYPASSES_RLS).fetchone()
        if not bypasses:
            shown = ", ".join(guarded[:5]) + (f" and {len(guarded) - 5} more" if len(guarded) > 5 else "")
            raise ConfigError(
                f"role {user!r} on the {endpoint.role} cannot bypass row-level security, so its copy of "
                f"{shown} would silently miss rows; connect as a role with BYPASSRLS (on Supabase: postgres)"
            )


def column_drift(source: Table, target: Table) -> list[str]:
    src = {c.name: c for c in source.copied_columns}
    dst = {c.name: c for c in target.copied_columns}
    problems = []
    for name, col in src.items():
        other = dst.get(name)
        if other is None:
            problems.append(f"column {source.ref}.{name!r} ({col.type}) is missing on the target")
        elif other.type != col.type:
            problems.append(f"column {source.ref}.{name!r} is {col.type} on the source, {other.type} on the target")
    for name, col in dst.items():
        if name not in src and col.not_null and not col.has_default:
            problems.append(f"column {target.ref}.{name!r} ({col.type}) exists only on the target and is NOT NULL")
    return problems


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


def copy_out_sql(table: Table, fmt: str) -> sql.Composed:
    """Key-ordered, so the stream's digest can be compared with a read-back of the target."""
    order_cols = table.primary_key or tuple(c.name for c in table.copied_columns)
    order = sql.SQL(" ORDER BY {}").format(sql.SQL(", ").join(map(sql.Identifier, order_cols))) if order_cols else sql.SQL("")
    return COPY_OUT.format(columns=column_list(table), table=table.ref.ident(), order=order, format=sql.SQL(fmt.upper()))


def copy_in_sql(table: Table, fmt: str) -> sql.Composed:
    return COPY_IN.format(table=table.ref.ident(), columns=column_list(table), format=sql.SQL(fmt.upper()))


def column_list(table: Table) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(c.name) for c in table.copied_columns)


def _pump(src: psycopg.Connection, table: Table, fmt: str, sink: Callable[[memoryview], object] | None) -> CopyStats:
    """Read the key-ordered COPY stream, hashing each block as it passes to `sink`."""
    started = time.perf_counter()
    digest = hashlib.blake2b(digest_size=16)
    size = 0
    cur = src.cursor()
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
        return _pump(src, table, fmt, into.write)


def read_digest(conn: psycopg.Connection, table: Table, fmt: str) -> tuple[str, int, int]:
    """The same hash as the copy computed, over what `conn` holds now: (digest, rows, bytes)."""
    stats = _pump(conn, table, fmt, None)
    return stats.digest, stats.rows, stats.bytes


def sync_sequences(src: psycopg.Connection, dst: psycopg.Connection, source_table: Table, target_table: Table) -> None:
    """Set each serial/identity sequence on the target from the source's."""
    target_seq = {s.column: s.sequence for s in target_table.sequences}
    for owned in source_table.sequences:
        dest = target_seq.get(owned.column)
        if dest is None:
            continue  # a column without a sequence on the target was already reported as drift, or is fine
        last_value, is_called = src.execute(READ_SEQUENCE.format(sequence=owned.sequence.ident())).fetchone()
        dst.execute(SET_SEQUENCE, (dest.ident().as_string(dst), last_value, is_called))


# --- the refresh ----------------------------------------------------------------------------

ProgressFn = Callable[[TableRef, CopyStats], None]
# Called inside the load transaction with (target conn, table, rows at snapshot, snapshot id,
# source catalog); raising rolls the load back. The blocking checks plug in here.
GateFn = Callable[[psycopg.Connection, Table, int, str, Catalog], None]


def refresh(
    source: Endpoint,
    target: Endpoint,
    selected: Sequence[TableRef] | None = None,
    *,
    table_filter: TableFilter | None = None,
    expected: Catalog | None = None,
    workers: int = 1,
    on_table: ProgressFn | None = None,
    gate: GateFn | None = None,
) -> RefreshReport:
    """Copy the selected tables (all by default) from one snapshot of the source into the target.

    Failures of the parallel mode come back in `report.failed`; call `raise_for_failures()`.

    workers == 1: one target transaction; all or nothing.
    workers > 1: level by level on that many connection pairs, a transaction per table
    (or per FK cycle); a failure leaves every loaded table's parents loaded, so no orphans.
    """
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    started = time.perf_counter()
    with exported_snapshot(source) as (src, snapshot_id):
        dst = target.connect(read_only=False)
        try:
            guard_distinct(source, target, src, dst)
            guard_single_refresh(target, dst)
            source_catalog = read_catalog(src, table_filter)
            if expected is not None:
                guard_unchanged(expected, source_catalog)
            plan = make_plan(source_catalog, selected)
            target_catalog = read_catalog(dst, TableFilter(source_catalog.schemas))
            guard_schema(plan, target_catalog)
            guard_rls_bypass(plan, {source: src, target: dst})
            dst.commit()  # the load must start its own top-level transaction, not a savepoint
            load = Load(
                plan, target_catalog, source, target, snapshot_id, on_table, gate,
                same_major=source_catalog.same_major(target_catalog),
            )
            tables, failed = load.atomically(src, dst) if workers == 1 else load.in_parallel(dst, workers)
        finally:
            dst.close()
    return RefreshReport(
        snapshot_id=snapshot_id,
        tables=tables,
        failed=failed,
        seconds=time.perf_counter() - started,
        source_catalog=source_catalog,
        target_catalog=target_catalog,
        atomic=workers == 1,
    )


def rebuilt_indexes(table: Table) -> tuple[Index, ...]:
    """Indexes cheaper to build once than to maintain row by row (HNSW above all).

    Only plain ones: unique and constraint-backed indexes stay, since FKs and the PK rely on them.
    """
    if table.partitioned:
        return ()
    return tuple(i for i in table.indexes if not i.unique and i.constraint is None)


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
    same_major: bool

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
                self.gate(dst, self.plan.catalog.table(ref), stats.rows, self.snapshot_id, self.plan.catalog)

    def atomically(self, src: psycopg.Connection, dst: psycopg.Connection) -> tuple[dict, dict]:
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

    def in_parallel(self, dst: psycopg.Connection, workers: int) -> tuple[dict, dict]:
        """Level by level on `workers` connection pairs that import the snapshot; a transaction per unit."""
        with dst.transaction():
            self.truncate(dst)
        done: dict[TableRef, CopyStats] = {}
        failed: dict[TableRef, str] = {}
        lock = threading.Lock()
        local = threading.local()
        opened: list[psycopg.Connection] = []

        def pair() -> tuple[psycopg.Connection, psycopg.Connection]:
            if not hasattr(local, "pair"):
                local.pair = (self.source.connect(read_only=True), self.target.connect(read_only=False))
                with lock:
                    opened.extend(local.pair)
            return local.pair

        def load_unit(unit: tuple[TableRef, ...]) -> None:
            wsrc, wdst = pair()
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
                    for ref in unit:
                        failed[ref] = describe(exc, self.source, self.target)
            finally:
                wsrc.rollback()

        try:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="muva-copy") as pool:
                for batch in self.plan.batches:
                    # An FK cycle shares a level; its members load in one transaction.
                    parents = {t: tuple(p for p in self.plan.parents[t] if p in batch) for t in batch}
                    list(pool.map(load_unit, strongly_connected(list(batch), parents)))
                    if failed:
                        break  # deeper levels would point at what failed to load
        finally:
            for conn in opened:
                conn.close()
        return done, failed
