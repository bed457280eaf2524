"""One snapshot for the whole run, while production keeps taking writes."""

import psycopg
import pytest

from muva_refresh.catalog import TableRef
from muva_refresh.copy import Endpoint, refresh

ORPHANS = """
SELECT (SELECT count(*) FROM customer c WHERE c.region_id IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM region r WHERE r.id = c.region_id))
     + (SELECT count(*) FROM audit_log a WHERE a.customer_id IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM customer c WHERE c.id = a.customer_id))
"""
COUNTS = "SELECT (SELECT count(*) FROM region), (SELECT count(*) FROM customer), (SELECT count(*) FROM audit_log)"


def write_family(conn: psycopg.Connection, n: int) -> None:
    """A parent, a child and a grandchild, committed together, as the app would."""
    with conn.transaction():
        conn.execute("INSERT INTO region VALUES (%s, %s)", (1000 + n, f"region {n}"))
        customer = conn.execute(
            "INSERT INTO customer (region_id, name) VALUES (%s, %s) RETURNING id", (1000 + n, f"late {n}")
        ).fetchone()[0]
        conn.execute("INSERT INTO audit_log VALUES (now(), 'late', %s)", (customer,))


@pytest.mark.parametrize("workers", [1, 3])
def test_writes_committed_between_table_copies_never_reach_the_target(pg, workers):
    source = pg.database_from_sql("src", "twists.sql")
    target = pg.database_from_sql("dst", "twists.sql")
    with psycopg.connect(source) as conn:
        at_snapshot = conn.execute(COUNTS).fetchone()
    writer = psycopg.connect(source, autocommit=True)
    written = []

    def write_after_each_table(ref, stats):
        write_family(writer, len(written))
        written.append(ref)

    try:
        report = refresh(Endpoint("source", source), Endpoint("target", target),
                         workers=workers, on_table=write_after_each_table)
    finally:
        writer.close()
    assert len(written) == len(report.tables) > 3
    with psycopg.connect(target) as conn:
        assert conn.execute(ORPHANS).fetchone()[0] == 0
        assert conn.execute(COUNTS).fetchone() == at_snapshot
    names = ("region", "customer", "audit_log")
    assert tuple(report.tables[TableRef("public", n)].rows for n in names) == at_snapshot
    with psycopg.connect(source) as conn:  # the writes did land in production
        assert conn.execute(COUNTS).fetchone()[0] == at_snapshot[0] + len(written)
