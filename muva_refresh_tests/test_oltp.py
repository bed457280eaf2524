"""A real-world OLTP schema: the benchmark's oltp shape (bench/shapes.py) at a few rows a table,
refreshed through the engine. Two schemas, a payments table partitioned by month, deferrable FKs
(one initially deferred) in a cycle, a self-reference, a composite FK across schemas, a stored
generated column, a user trigger, a keyless table with duplicates, RLS, a materialized view."""

import psycopg
import pytest

from bench.shapes import OLTP_SCHEMAS, PAYMENT_MONTHS, fill_oltp
from muva_refresh.catalog import TableRef
from muva_refresh.endpoint import Endpoint
from muva_refresh.refresh import RefreshOptions
from muva_refresh.settings import TableFilter
from muva_refresh.stream import DELTA, FULL, UNCHANGED

from .support import checked_refresh, frozen_pages, table_fingerprints

OLTP = TableFilter(OLTP_SCHEMAS)
TINY = 0.0005  # 500 audit events, 320 payments; the small lookup tables keep their size
PAYMENTS = TableRef("public", "payments")
FIRST_MONTH = "payments_2021_01"


@pytest.fixture
def oltp(pg):
    source, target = pg.create_database("oltp_src"), pg.create_database("oltp_dst")
    fill_oltp(source, TINY, "prod")
    fill_oltp(target, TINY / 10, "stale")
    return Endpoint("source", source), Endpoint("target", target)


def refreshed(source: Endpoint, target: Endpoint) -> dict[tuple[str, str], bool]:
    report, outcomes = checked_refresh(source, target, RefreshOptions(table_filter=OLTP, full=True))
    assert len(report.tables) == 18 and report.views
    return {(str(o.table), o.check): o.passed for o in outcomes if o.severity == "ERROR" or o.passed}


def facts(dsn: str) -> tuple:
    """What the twists of the shape look like on one side."""
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            """
            SELECT (SELECT count(*) FROM pg_inherits WHERE inhparent = 'payments'::regclass),
                   (SELECT count(*) FROM audit.events WHERE path_key IS DISTINCT FROM lower(payload ->> 'path')),
                   (SELECT count(*) FROM audit.events WHERE recorded_by = current_user),
                   (SELECT count(*) - count(DISTINCT p) FROM price_imports p),
                   (SELECT count(*) FROM monthly_revenue), (SELECT sum(total) FROM monthly_revenue),
                   (SELECT relrowsecurity FROM pg_class WHERE oid = 'customers'::regclass),
                   (SELECT tgenabled FROM pg_trigger WHERE tgname = 'events_stamp')
            """
        ).fetchone()


def test_the_oltp_shape_refreshes_equal_and_passes_its_checks(oltp):
    source, target = oltp
    passed = refreshed(source, target)
    assert all(passed.values()), [k for k, ok in passed.items() if not ok]
    assert {table for table, check in passed if check == "matches_source"} >= {"public.payments", "audit.events",
                                                                               "public.price_imports", "public.staff"}
    assert table_fingerprints(target.dsn, OLTP) == table_fingerprints(source.dsn, OLTP)
    months, mismatched, stamped, duplicates, *view, rls, trigger = facts(target.dsn)
    assert (months, mismatched, stamped) == (PAYMENT_MONTHS, 0, 0)  # generated column recomputed; trigger quiet
    assert duplicates > 0 and rls and trigger == "O"  # keyless duplicates kept; RLS and the trigger still on
    assert tuple(view) == facts(source.dsn)[4:6]  # the materialized view refreshed from the new rows


def test_a_partitioned_table_loads_leaf_by_leaf_frozen_or_through_its_parent_when_the_leaves_differ(oltp):
    source, target = oltp
    refreshed(source, target)
    frozen, pages = frozen_pages(target.dsn, FIRST_MONTH)
    assert pages > 0 and frozen == pages  # COPY FREEZE into the leaf: the TRUNCATE was in the same transaction
    with psycopg.connect(target.dsn, autocommit=True) as conn:  # staging names one month differently
        conn.execute(f"ALTER TABLE payments DETACH PARTITION {FIRST_MONTH}")
        conn.execute(f"ALTER TABLE {FIRST_MONTH} RENAME TO january_2021")
        conn.execute("ALTER TABLE payments ATTACH PARTITION january_2021 "
                     "FOR VALUES FROM ('2021-01-01 00:00+00') TO ('2021-02-01 00:00+00')")
    passed = refreshed(source, target)
    assert passed[str(PAYMENTS), "matches_source"] and passed[str(PAYMENTS), "row_count"]
    assert frozen_pages(target.dsn, "january_2021")[0] == 0  # routed by the parent, which cannot FREEZE


# Production moves after a refresh: the FK cycle's members, the cross-schema audit table (its
# identity key is GENERATED ALWAYS, its path_key generated), a payment moved to another month,
# and a duplicate of the keyless table gone.
OLTP_CHANGES = """
UPDATE staff SET reports_to = NULL, name = 'promoted' WHERE id = 250;
UPDATE stores SET manager_staff_id = 250 WHERE id = (SELECT store_id FROM staff WHERE id = 250);
INSERT INTO audit.events (occurred_at, store_id, staff_id, client_id, kind, payload, recorded_by)
    SELECT occurred_at, store_id, staff_id, client_id, kind, payload || '{"path": "/New"}', 'app'
    FROM audit.events ORDER BY id LIMIT 3;
DELETE FROM audit.events WHERE id = (SELECT min(id) FROM audit.events);
UPDATE payments SET paid_at = paid_at + interval '40 days' WHERE id = (SELECT min(id) FROM payments);
DELETE FROM price_imports WHERE ctid = (SELECT min(ctid) FROM price_imports);
"""


def test_a_later_default_refresh_copies_only_what_moved_and_ends_equal(oltp):
    source, target = oltp
    refreshed(source, target)
    with psycopg.connect(source.dsn, autocommit=True) as conn:
        conn.execute(OLTP_CHANGES)
    report, outcomes = checked_refresh(source, target, RefreshOptions(table_filter=OLTP))
    assert [o.summary for o in outcomes if o.severity == "ERROR" and not o.passed] == []
    assert table_fingerprints(target.dsn, OLTP) == table_fingerprints(source.dsn, OLTP)
    paths = {ref.name: stats.path for ref, stats in report.tables.items()}
    assert {paths[t] for t in ("staff", "stores", "events", "payments")} == {DELTA}
    assert paths["price_imports"] == FULL and paths["rentals"] == UNCHANGED
    assert facts(target.dsn)[1:4] == facts(source.dsn)[1:4]  # path_key recomputed, nothing stamped, duplicates
    assert facts(target.dsn)[4:6] == facts(source.dsn)[4:6]  # the view read the moved payment
