"""A local stand-in for MUVA production and staging, to try a refresh on.

``up()`` starts (or reuses) an embedded PostgreSQL server, recreates two
databases from the same schema, fills ``muva_prod`` with synthetic data and
gives ``muva_staging`` a few rows production does not have, then writes both
DSNs to an env file. ``down()`` stops the server.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from ..settings import SOURCE_DSN_VAR, TARGET_DSN_VAR, write_env_file
from .data import (
    BASE_ROW_COUNTS,
    REFERENCE_TABLES,
    check_scale,
    create_schema,
    load_data,
    plant_stale_rows,
    row_counts,
)
from .server import EmbeddedServer, is_running, start, stop

SOURCE_DB = "muva_prod"
TARGET_DB = "muva_staging"

__all__ = [
    "BASE_ROW_COUNTS",
    "REFERENCE_TABLES",
    "SOURCE_DB",
    "TARGET_DB",
    "DemoInfo",
    "EmbeddedServer",
    "check_scale",
    "create_schema",
    "down",
    "is_running",
    "load_data",
    "plant_stale_rows",
    "public_size_bytes",
    "row_counts",
    "start",
    "stop",
    "up",
]


@dataclass(frozen=True)
class DemoInfo:
    """What ``up()`` built."""

    source_dsn: str
    target_dsn: str
    data_dir: Path
    env_file: Path | None
    scale: int
    source_rows: Mapping[str, int] = field(default_factory=dict)
    source_bytes: int = 0
    seconds: float = 0.0


def up(
    scale: int,
    data_dir: Path | str,
    env_file: Path | str | None = None,
) -> DemoInfo:
    """Start the demo server and rebuild both databases from scratch.

    ``scale`` multiplies the data tables of production. Both databases are
    dropped and recreated, so every call yields the same state. With
    ``env_file`` set, its MUVA_SOURCE_DSN and MUVA_TARGET_DSN lines are
    written or replaced and its other lines kept.
    """
    check_scale(scale)
    started = time.perf_counter()
    server = start(data_dir)
    with psycopg.connect(server.dsn("postgres"), autocommit=True) as admin:
        for database in (SOURCE_DB, TARGET_DB):
            _recreate_database(admin, database)

    source_dsn, target_dsn = server.dsn(SOURCE_DB), server.dsn(TARGET_DB)
    with psycopg.connect(source_dsn) as source:
        create_schema(source)
        load_data(source, scale)
        source_rows = _public_row_counts(source)
        source_bytes = public_size_bytes(source)
    with psycopg.connect(target_dsn) as target:
        create_schema(target)
        plant_stale_rows(target)

    if env_file is not None:
        write_env_file(Path(env_file), {SOURCE_DSN_VAR: source_dsn, TARGET_DSN_VAR: target_dsn})
    return DemoInfo(
        source_dsn=source_dsn,
        target_dsn=target_dsn,
        data_dir=server.data_dir,
        env_file=Path(env_file) if env_file is not None else None,
        scale=scale,
        source_rows=source_rows,
        source_bytes=source_bytes,
        seconds=time.perf_counter() - started,
    )


def down(data_dir: Path | str) -> bool:
    """Stop the demo server; return whether one was running. The data stays on disk."""
    return stop(data_dir)


def public_size_bytes(conn: psycopg.Connection) -> int:
    """Bytes taken by the tables of schema public, with their indexes and TOAST."""
    row = conn.execute(
        """
        SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
        """
    ).fetchone()
    assert row is not None
    return int(row[0])


def _recreate_database(admin: psycopg.Connection, database: str) -> None:
    name = sql.Identifier(database)
    # FORCE: a dagster run or psql session left connected must not block the rebuild.
    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
    admin.execute(sql.SQL("CREATE DATABASE {}").format(name))


def _public_row_counts(conn: psycopg.Connection) -> dict[str, int]:
    tables = [
        name
        for (name,) in conn.execute(
            """
            SELECT c.relname
            FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
            ORDER BY c.relname
            """
        )
    ]
    counts = sql.SQL(" UNION ALL ").join(
        sql.SQL("SELECT {}, count(*) FROM {}").format(
            sql.Literal(table), sql.Identifier("public", table)
        )
        for table in tables
    )
    return {table: int(rows) for table, rows in conn.execute(counts)}
