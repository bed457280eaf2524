"""A local stand-in for MUVA production and staging, to try a refresh on.

``up()`` starts (or reuses) an embedded PostgreSQL server, recreates two
databases from the same schema, fills ``muva_prod`` with synthetic data and
gives ``muva_staging`` a few rows production does not have, then writes both
DSNs to an env file. ``down()`` stops the server.
"""

from __future__ import annotations

import os
import stat
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from .data import (
    BASE_ROW_COUNTS,
    REFERENCE_TABLES,
    check_scale,
    create_schema,
    load_data,
    plant_stale_rows,
    row_counts,
)
from .server import DEFAULT_DIR, REPO_ROOT, EmbeddedServer, is_running, start, stop

SOURCE_DB = "muva_prod"
TARGET_DB = "muva_staging"

DEFAULT_ENV_FILE = REPO_ROOT / ".env"
SOURCE_DSN_KEY = "MUVA_SOURCE_DSN"
TARGET_DSN_KEY = "MUVA_TARGET_DSN"

__all__ = [
    "BASE_ROW_COUNTS",
    "DEFAULT_DIR",
    "DEFAULT_ENV_FILE",
    "REFERENCE_TABLES",
    "SOURCE_DB",
    "SOURCE_DSN_KEY",
    "TARGET_DB",
    "TARGET_DSN_KEY",
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
    "write_env_file",
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
    scale: int = 1,
    data_dir: Path | str | None = None,
    env_file: Path | str | None = DEFAULT_ENV_FILE,
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
        write_env_file(env_file, {SOURCE_DSN_KEY: source_dsn, TARGET_DSN_KEY: target_dsn})
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


def down(data_dir: Path | str | None = None) -> bool:
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


def write_env_file(path: Path | str, values: Mapping[str, str]) -> None:
    """Set ``KEY=value`` lines in an env file, keeping every other line as it was."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    pending = dict(values)
    updated: list[str] = []
    for line in lines:
        key = _env_key(line)
        if key in values:
            if key in pending:
                updated.append(f"{key}={pending.pop(key)}")
            # A repeated key would shadow the new value in some loaders; drop it.
            continue
        updated.append(line)
    updated.extend(f"{key}={value}" for key, value in pending.items())

    path.parent.mkdir(parents=True, exist_ok=True)
    # Write beside the target and rename, so a crash never leaves half a file.
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write("\n".join(updated) + "\n")
        # A new file keeps mkstemp's owner-only mode, fit for credentials.
        if path.exists():
            os.chmod(temporary, stat.S_IMODE(path.stat().st_mode))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _env_key(line: str) -> str | None:
    stripped = line.strip()
    if not stripped or stripped.startswith("#") or "=" not in stripped:
        return None
    key = stripped.split("=", 1)[0].strip()
    return key.removeprefix("export ").strip()


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
