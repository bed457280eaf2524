"""Which rows of a table differ between what the source sends and what the target holds.

Each server hashes its own rows, two 64-bit hashes per row: one of the row's key, one of the
whole row (digest.row_hash, so each side's sum is also its digest for `matches_source`). Both
hash at once: the target into a temporary table, the source into a local file (16 bytes a row,
never in memory), which then goes into a second temporary table on the target. The target joins
the two: a key whose row hash differs, or that only one side has, is a changed key. Only hashes
cross between the servers.

Replacing the target's rows of the changed keys with the source's rows of the same keys is
right whatever the hashes: the keys are split by their hash, so a collision only replaces a
few more rows than needed.
"""

from __future__ import annotations

import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Sequence

import psycopg
from psycopg import sql

from .catalog import Table, TableRef
from .digest import digest_text, row_hash
from .shape import WHOLE, Shape

SOURCE_HASHES, TARGET_HASHES = sql.Identifier("muva_source_hashes"), sql.Identifier("muva_target_hashes")
CREATE_HASHES = sql.SQL("CREATE TEMPORARY TABLE IF NOT EXISTS {hashes} (key_hash bigint, row_hash bigint) ON COMMIT DROP")
EMPTY_HASHES = sql.SQL("TRUNCATE {source}, {target}").format(source=SOURCE_HASHES, target=TARGET_HASHES)
# Writers wait for the commit, so what the comparison found still holds then; readers never wait.
HOLD_FOR_COMPARISON = sql.SQL("LOCK TABLE {tables} IN SHARE MODE")
ROW_HASHES = sql.SQL("SELECT {key_hash} AS key_hash, {row_hash} AS row_hash FROM ({rows}) AS s")
COPY_HASHES_OUT = sql.SQL("COPY ({hashes}) TO STDOUT (FORMAT BINARY)")
COPY_HASHES_IN = sql.SQL("COPY {hashes} (key_hash, row_hash) FROM STDIN (FORMAT BINARY)").format(hashes=SOURCE_HASHES)
FILL_TARGET_HASHES = sql.SQL("INSERT INTO {hashes} (key_hash, row_hash) {row_hashes}")
HASH_TOTALS = sql.SQL("SELECT count(*), sum(row_hash) FROM {hashes}")
CHANGED_KEYS = sql.SQL(
    "SELECT DISTINCT coalesce(s.key_hash, t.key_hash) FROM {source} AS s FULL JOIN {target} AS t "
    "ON s.key_hash = t.key_hash WHERE s.row_hash IS DISTINCT FROM t.row_hash LIMIT {limit}"
).format(source=SOURCE_HASHES, target=TARGET_HASHES, limit=sql.Placeholder())
HAS_ROWS = sql.SQL("SELECT EXISTS (SELECT FROM {table})")
DELETE_KEYS = sql.SQL("DELETE FROM {table} AS s WHERE {key_hash} = ANY(%s)")
# The source session is read only and COPY takes no parameters, so the keys travel as a literal.
ROWS_OF_KEYS = sql.SQL("SELECT * FROM ({rows}) AS s WHERE {key_hash} = ANY({keys})")
# The comparison's join spills to disk past work_mem; the default 4 MB is small for a million rows.
COMPARE_MEMORY = sql.SQL("SET LOCAL work_mem = '64MB'")

# A table with more changed keys than this goes whole: past it the literal of keys grows large,
# and copying most of a table row by row costs more than copying it whole.
MAX_CHANGED_KEYS = 200_000
MAX_CHANGED_SHARE = 0.25
SPOOL_BLOCK = 1024 * 1024
MIN_CHANGED_LIMIT = 100  # a small table's changes go row by row whatever their share: its readers never wait


@dataclass(frozen=True)
class Comparison:
    source_rows: int
    source_digest: str  # the sum of the source's row hashes: matches_source's digest, hashed once
    target_digest: str  # the target's, before the load writes the table
    changed: tuple[int, ...] | None  # the changed keys' hashes; None: too many to copy one by one

    @property
    def unchanged(self) -> bool:
        return self.changed == ()


def range_key(source: Table, target: Table) -> tuple[tuple[str, ...], str]:
    """The columns that identify a row on both sides (a primary key, or a unique, non-partial
    index of NOT NULL columns), or () and why there are none."""
    copied = {c.name: c for c in source.copied_columns}

    def usable(columns: tuple[str, ...]) -> bool:
        return bool(columns) and all(n in copied and copied[n].not_null for n in columns)

    candidates = [source.primary_key] + [i.key_columns for i in source.indexes
                                         if i.unique and " WHERE " not in i.definition]
    keys = [cols for cols in candidates if usable(cols)]
    if not keys:
        return (), "it has no primary key or unique index of NOT NULL columns"
    on_target = {frozenset(target.primary_key)} | {frozenset(i.key_columns) for i in target.indexes
                                                   if i.unique and " WHERE " not in i.definition}
    for cols in keys:
        if frozenset(cols) in on_target:
            return cols, ""
    return (), f"staging has no unique index on ({', '.join(keys[0])}), so its key may repeat"


def hold_for_comparison(dst: psycopg.Connection, refs: Sequence[TableRef]) -> None:
    """Hold the tables for the rest of the transaction, in one statement. An autovacuum of one
    of them (which a fresh load sets off) is cancelled after the server's deadlock_timeout once
    the lock waits on it, and skips the tables already held: one wait, not one per table."""
    dst.execute(HOLD_FOR_COMPARISON.format(tables=sql.SQL(", ").join(r.ident() for r in refs)))


def has_rows(conn: psycopg.Connection, table: Table) -> bool:
    return conn.execute(HAS_ROWS.format(table=table.ref.ident())).fetchone()[0]


def compare(src: psycopg.Connection, dst: psycopg.Connection, table: Table, key: tuple[str, ...],
            shape: Shape = WHOLE) -> Comparison:
    """The keys whose rows differ, in the caller's snapshot (src) and transaction (dst), which
    already holds the table (hold_for_comparison). Both servers hash at once: the source's hashes wait in a local file while the target hashes."""
    for hashes in (SOURCE_HASHES, TARGET_HASHES):
        dst.execute(CREATE_HASHES.format(hashes=hashes))
    dst.execute(EMPTY_HASHES)
    source_hashes = ROW_HASHES.format(key_hash=row_hash(table, shape, key), row_hash=row_hash(table, shape),
                                      rows=shape.rows(table))
    target_hashes = ROW_HASHES.format(key_hash=row_hash(table, WHOLE, key), row_hash=row_hash(table),
                                      rows=WHOLE.rows(table))
    with tempfile.TemporaryFile() as spool, ThreadPoolExecutor(1, thread_name_prefix="muva-compare") as pool:
        sent = pool.submit(spool_hashes, src, COPY_HASHES_OUT.format(hashes=source_hashes), spool)
        dst.execute(FILL_TARGET_HASHES.format(hashes=TARGET_HASHES, row_hashes=target_hashes))
        sent.result()
        spool.seek(0)
        with dst.cursor().copy(COPY_HASHES_IN) as into:
            while block := spool.read(SPOOL_BLOCK):
                into.write(block)
    source_rows, source_total = dst.execute(HASH_TOTALS.format(hashes=SOURCE_HASHES)).fetchone()
    target_total = dst.execute(HASH_TOTALS.format(hashes=TARGET_HASHES)).fetchone()[1]
    limit = min(MAX_CHANGED_KEYS, max(MIN_CHANGED_LIMIT, int(source_rows * MAX_CHANGED_SHARE)))
    dst.execute(COMPARE_MEMORY)
    found = dst.execute(CHANGED_KEYS, (limit + 1,)).fetchall()
    changed = None if len(found) > limit else tuple(k for (k,) in found)
    return Comparison(source_rows, digest_text(source_total), digest_text(target_total), changed)


def spool_hashes(src: psycopg.Connection, copy_out: sql.Composed, spool: IO[bytes]) -> None:
    with src.cursor().copy(copy_out) as out:
        for block in out:
            spool.write(block)


def delete_keys(dst: psycopg.Connection, table: Table, key: tuple[str, ...], changed: tuple[int, ...]) -> int:
    """Delete the target's rows of the changed keys; how many went."""
    cur = dst.execute(DELETE_KEYS.format(table=table.ref.ident(), key_hash=row_hash(table, WHOLE, key)),
                      (list(changed),))
    return cur.rowcount


@dataclass(frozen=True)
class KeyedShape(Shape):
    """A shape narrowed to the rows of the changed keys, for the stream to copy only those."""

    key: tuple[str, ...] = ()
    changed: tuple[int, ...] = ()
    inner: Shape = WHOLE

    @classmethod
    def of(cls, shape: Shape, key: tuple[str, ...], changed: tuple[int, ...]) -> KeyedShape:
        return cls(shape.expressions, shape.ctes, shape.where, key=key, changed=changed, inner=shape)

    def rows(self, table: Table) -> sql.Composed:
        return ROWS_OF_KEYS.format(rows=self.inner.rows(table), key_hash=row_hash(table, self.inner, self.key),
                                   keys=sql.Literal(list(self.changed)))
