"""The run's one moment of production: a REPEATABLE READ, READ ONLY transaction exports its
snapshot, and every other source connection of the run imports it by id."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import psycopg
from psycopg import sql

from .endpoint import Endpoint

EXPORT_SNAPSHOT = sql.SQL("SELECT pg_export_snapshot()")
SET_SNAPSHOT = sql.SQL("SET TRANSACTION SNAPSHOT {}")  # takes no parameters, so a Literal


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
