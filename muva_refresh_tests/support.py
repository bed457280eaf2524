"""Plain helpers the test modules share (fixtures live in conftest.py)."""

from __future__ import annotations

import io
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import psycopg
from psycopg import sql

from muva_refresh.catalog import Catalog, TableRef, read_catalog
from muva_refresh.checks import CheckOutcome
from muva_refresh.cli import Printer, main
from muva_refresh.endpoint import Endpoint
from muva_refresh.refresh import Committed, RefreshOptions, RefreshReport, refresh_events
from muva_refresh.settings import TableFilter

SECRET = "pw-Never-Shown-42"  # trust auth ignores it, so it rides along in every DSN
TWISTS = TableFilter(("public",))
HOSTILE = TableFilter(("public", "Billing Ops"))

# Orphans and counts of the twists schema's region <- customer <- audit_log chain.
ORPHANS = """
SELECT (SELECT count(*) FROM customer c WHERE c.region_id IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM region r WHERE r.id = c.region_id))
     + (SELECT count(*) FROM audit_log a WHERE a.customer_id IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM customer c WHERE c.id = a.customer_id))
"""
COUNTS = "SELECT (SELECT count(*) FROM region), (SELECT count(*) FROM customer), (SELECT count(*) FROM audit_log)"


class Run:
    """One CLI invocation: its exit code and what it printed."""

    def __init__(self, code: int, out: str, err: str):
        self.code, self.out, self.err = code, out, err

    @property
    def json(self):
        return json.loads(self.out)


def cli(*argv: str) -> Run:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), Printer(out, err))
    return Run(code, out.getvalue(), err.getvalue())


def saved_catalog(dsn: str, table_filter: TableFilter, path: Path | None = None) -> Catalog:
    """The source's catalog, through a save and load round trip when `path` is given."""
    with psycopg.connect(dsn) as conn:
        catalog = read_catalog(conn, table_filter)
    if path is None:
        return catalog
    catalog.save(path)
    return Catalog.load(path)


def table_fingerprints(dsn: str, table_filter: TableFilter = TWISTS) -> dict[TableRef, tuple[int, str]]:
    """Row count and an ordered content hash per table, generated columns included."""
    with psycopg.connect(dsn) as conn:
        catalog = read_catalog(conn, table_filter)
        found = {}
        for table in catalog.tables:
            query = sql.SQL("SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {} t")
            found[table.ref] = tuple(conn.execute(query.format(table.ref.ident())).fetchone())
        return found


def count(dsn: str, table: str, where: str = "true") -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE " + where).format(sql.Identifier(table))).fetchone()[0]


def write_family(conn: psycopg.Connection, n: int) -> None:
    """A parent, a child and a grandchild, committed together, as the app would."""
    with conn.transaction():
        conn.execute("INSERT INTO region VALUES (%s, %s)", (1000 + n, f"region {n}"))
        customer = conn.execute(
            "INSERT INTO customer (region_id, name) VALUES (%s, %s) RETURNING id", (1000 + n, f"late {n}")
        ).fetchone()[0]
        conn.execute("INSERT INTO audit_log VALUES (now(), 'late', %s)", (customer,))


@contextmanager
def role_without_bypassrls(dsn: str) -> Iterator[str]:
    """A login role that can read every table of `dsn` but not past row-level security; its DSN."""
    role = f"reader_{os.getpid()}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN NOBYPASSRLS").format(sql.Identifier(role)))
        conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO {}").format(sql.Identifier(role)))
    try:
        yield psycopg.conninfo.make_conninfo(dsn, user=role)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def plant_copy_failure(dsn: str) -> None:
    """A CHECK on the target that one source row violates: the guards pass, the copy fails."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE customer ADD CONSTRAINT no_seven CHECK (name <> 'customer 7') NOT VALID")


def checked_refresh(source: Endpoint, target: Endpoint,
                    options: RefreshOptions = RefreshOptions()) -> tuple[RefreshReport, list[CheckOutcome]]:
    """A refresh as the table assets run it: its report, and every check's outcome it yielded."""
    report, outcomes = None, []
    for event in refresh_events(source, target, options):
        if isinstance(event, Committed):
            report = event.report
        elif isinstance(event, CheckOutcome):
            outcomes.append(event)
    return report, outcomes


def rows_and_xmins(dsn: str, table_filter: TableFilter = TWISTS) -> dict[TableRef, tuple[int, str]]:
    """Per table, its row count and a hash of every row with its xmin: equal only when no row was
    written, not even rewritten with the same values."""
    with psycopg.connect(dsn) as conn:
        found = {}
        for table in read_catalog(conn, table_filter).tables:
            query = sql.SQL("SELECT count(*), md5(coalesce(string_agg(r, '|' ORDER BY r), '')) "
                            "FROM (SELECT t.xmin::text || ' ' || t::text AS r FROM {} t) rows")
            found[table.ref] = tuple(conn.execute(query.format(table.ref.ident())).fetchone())
        return found


def frozen_pages(dsn: str, table: str) -> tuple[int, int]:
    """(all-frozen pages, pages) of `table`, from the visibility map."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_visibility")
        frozen = conn.execute("SELECT all_frozen FROM pg_visibility_map_summary(%s::regclass)", (table,)).fetchone()[0]
        return frozen, conn.execute("SELECT pg_relation_size(%s::regclass) / 8192", (table,)).fetchone()[0]
