"""What a table holds, measured by the server that holds it: its row count and its row digest.

Each server hashes its own rows: a 64-bit hash of each row, summed mod 2**64, so equal multisets
of rows hash equal in any order (duplicates count) and neither side sorts. A row's hash XORs
its columns' hashes, each seeded with the column's position (so two columns that swap values
differ) and a NULL standing as the position itself: no row text is built and quoted. Types
whose values have one representation each (integers, timestamps, uuids) hash their values;
every other type its text output, in collation "C" so that a case-insensitive collation does
not make "A" equal "a". Both are exact: equal hashes mean equal representations, not values
equal under the type's own equality (1.0 is not 1.00). The functions are PostgreSQL's own hash
support, alike from version 11 on, so two major versions hash alike.
"""

from __future__ import annotations

import re
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Collection, Iterable, Mapping

import psycopg
from psycopg import sql

from .catalog import Table, TableRef
from .endpoint import Endpoint, describe
from .errors import RefreshError
from .shape import WHOLE, Shape
from .snapshot import attach_snapshot

ROW_DIGEST = sql.SQL("SELECT count(*), sum({row_hash}) FROM ({rows}) AS s")
COUNT_ROWS = sql.SQL("SELECT count(*) FROM {table}")
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
# Bytes, and pgvector's types by their binary form (what COPY BINARY sends): reading a vector is
# cheap, printing its every float is not. md5 reads bytes on every version; its hex, then hashed.
BYTES_HASH = sql.SQL("hashtextextended(md5({}), {})")
SENT_BYTES_HASH = sql.SQL("hashtextextended(md5({send}({value})), {seed})")
SENT_AS_BYTES = frozenset({"vector", "halfvec", "sparsevec"})
TYPE_NAME = re.compile(r"^(?:(?P<schema>[a-z_][a-z0-9_$]*)\.)?(?P<name>[a-z_][a-z0-9_$]*)(?:\(.*\))?$")
NOT_HASHED = "unavailable: not hashed in this run"
# A cheap signal that a table's rows may have changed, without reading them: the server's
# statistics counters of the table (its partitions' for a partitioned one) and the file behind
# each, which TRUNCATE, VACUUM FULL and CLUSTER replace. Every write moves it; a move without a
# change (an aborted insert, a reset of the statistics) only costs a refresh that finds nothing.
CHANGE_SIGNAL = sql.SQL(
    "SELECT md5(string_agg(concat_ws(':', s.relid, s.n_tup_ins, s.n_tup_upd, s.n_tup_del, s.n_live_tup, "
    "pg_relation_filenode(s.relid)), ',' ORDER BY s.relid)) FROM pg_stat_all_tables AS s "
    "WHERE s.relid = %(table)s::regclass OR s.relid IN (SELECT relid FROM pg_partition_tree(%(table)s::regclass))"
)


def row_hash(table: Table, shape: Shape = WHOLE, only: Collection[str] | None = None) -> sql.Composable:
    """ROW_DIGEST's hash of a row of `shape.rows(table)`, its columns as the target stores them
    (a masked value cast to its column's type); of the columns in `only`, when given (a key)."""
    hashes = []
    for position, c in enumerate(table.copied_columns, start=1):
        if only is not None and c.name not in only:
            continue
        value = (sql.SQL("s.{}::{}").format(sql.Identifier(c.name), sql.SQL(c.type))  # format_type's own text
                 if shape.masks(c.name) else sql.SQL("s.{}").format(sql.Identifier(c.name)))
        hashes.append(sql.SQL("coalesce({}, {})").format(value_hash(c.type, value, position), position))
    return sql.SQL(" # ").join(hashes) if hashes else sql.SQL("0")


def value_hash(column_type: str, value: sql.Composable, seed: int) -> sql.Composable:
    """A 64-bit hash of one value of `column_type` (format_type's text), seeded with `seed`."""
    if column_type in VALUE_HASHES:
        return VALUE_HASHES[column_type].format(value, seed)
    if column_type == "bytea":
        return BYTES_HASH.format(value, seed)
    found = TYPE_NAME.match(column_type)
    if found and found["name"] in SENT_AS_BYTES:
        send = sql.Identifier(*filter(None, (found["schema"], f"{found['name']}_send")))
        return SENT_BYTES_HASH.format(send=send, value=value, seed=seed)
    return TEXT_HASH.format(value, seed)


def row_digest(conn: psycopg.Connection, table: Table, shape: Shape = WHOLE) -> tuple[int, str]:
    """(rows, digest) of `table` as `shape` sends it, computed by the server `conn` reaches."""
    query = ROW_DIGEST.format(row_hash=row_hash(table, shape), rows=shape.rows(table))
    rows, total = conn.execute(query).fetchone()  # a numeric sum, None for no rows
    return rows, digest_text(total)


def digest_text(total: object) -> str:
    """A sum of row hashes (numeric, None for no rows) as the digest: mod 2**64, in hex."""
    return f"{int(total or 0) % 2**64:016x}"


def change_signal(conn: psycopg.Connection, ref: TableRef) -> str:
    """CHANGE_SIGNAL of one table; it changes whenever its rows may have."""
    return conn.execute(CHANGE_SIGNAL, {"table": ref.ident().as_string(conn)}).fetchone()[0] or "no statistics"


def count_rows(conn: psycopg.Connection, ref: TableRef) -> int:
    return conn.execute(COUNT_ROWS.format(table=ref.ident())).fetchone()[0]


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

    def start(self, tables: Iterable[Table], known: Mapping[TableRef, str] | None = None) -> None:
        """Hash `tables` in the background, then close the connection; `known` digests, already
        computed in the snapshot, are not hashed again. Call it while the exporting transaction
        lives: a short load can end before the import did."""
        wait([self.attached])
        known = known or {}
        for table in tables:
            if table.ref in known:
                self.pending[table.ref] = Future()
                self.pending[table.ref].set_result(known[table.ref])
            else:
                self.pending[table.ref] = self.pool.submit(self.compute, table)
        self.pool.submit(self.close)
        self.pool.shutdown(wait=False)

    def compute(self, table: Table) -> str:
        self.attached.result()  # raises what the import raised
        return row_digest(self.conn, table, self.shapes.get(table.ref, WHOLE))[1]

    def digest(self, ref: TableRef) -> str:
        if ref not in self.pending:
            return NOT_HASHED
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
