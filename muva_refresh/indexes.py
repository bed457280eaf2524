"""Indexes during a load: plain ones are dropped before the copy and built once after it, on the
server's parallel maintenance workers where the table is large."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import psycopg
from psycopg import sql

from .catalog import Index, Table

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


def rebuilt_indexes(table: Table) -> tuple[Index, ...]:
    """Indexes cheaper to build once than to maintain row by row (HNSW above all).

    Only plain ones: unique and constraint-backed indexes stay, since FKs and the PK rely on them.
    """
    if table.partitioned:
        return ()
    return tuple(i for i in table.indexes if not i.unique and i.constraint is None)


def drop_indexes(dst: psycopg.Connection, table: Table, indexes: tuple[Index, ...]) -> None:
    for index in indexes:
        dst.execute(DROP_INDEX.format(index=sql.Identifier(table.ref.schema, index.name)))


def build_indexes(dst: psycopg.Connection, table: Table, indexes: tuple[Index, ...], copied_bytes: int) -> None:
    with parallel_rebuild(dst, table, copied_bytes if indexes else 0):
        for index in indexes:
            dst.execute(sql.SQL(index.definition))  # pg_get_indexdef's own text, quoted by the server


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
