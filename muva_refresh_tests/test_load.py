"""The load's speed levers keep their guarantees: frozen rows, row digests hashed in the snapshot."""

from dataclasses import replace

import psycopg
import pytest

from muva_refresh.catalog import TableRef
from muva_refresh.checks import CheckOutcome, Verifier
from muva_refresh.endpoint import Endpoint
from muva_refresh.load import TableCopied
from muva_refresh.refresh import Committed, RefreshOptions, refresh, refresh_events

from .support import checked_refresh, frozen_pages, write_family

PERSON = TableRef("public", "person")


@pytest.fixture
def pair(pg):
    return (Endpoint("source", pg.database_from_sql("src", "twists.sql")),
            Endpoint("target", pg.database_from_sql("dst", "twists.sql")))


def test_the_atomic_load_freezes_what_it_copies_and_the_parallel_load_does_not(pair):
    source, target = pair
    refresh(source, target, RefreshOptions(full=True))
    frozen, pages = frozen_pages(target.dsn, "customer")
    assert pages > 0 and frozen == pages  # COPY FREEZE: TRUNCATE was in the same transaction
    refresh(source, target, RefreshOptions(workers=2))  # its TRUNCATE committed before the copies
    assert frozen_pages(target.dsn, "customer")[0] == 0


@pytest.mark.parametrize("workers", [1, 2])
def test_the_snapshot_digest_catches_one_changed_value(pair, workers):
    source, target = pair
    # Whole, so that the check hashes the target after the commit (an unchanged table's digest is
    # held from its comparison, see test_delta).
    report, outcomes = checked_refresh(source, target, RefreshOptions(workers=workers, full=True))
    assert all(o.passed for o in outcomes if o.check == "matches_source")
    with psycopg.connect(target.dsn, autocommit=True) as conn:
        conn.execute("UPDATE person SET tags = '{changed}' WHERE id = 10")
    found = Verifier().after_commit(target, report.copies())
    failed = {(o.table.name, o.check) for o in found if not o.passed and o.severity == "ERROR"}
    assert failed == {("person", "matches_source")}


def test_the_source_digest_reads_the_snapshot_while_production_writes(pair):
    """Digests are computed after COMMIT, on their own connection: it imported the snapshot at the start."""
    source, target = pair
    writer = psycopg.connect(source.dsn, autocommit=True)
    written = []

    outcomes = []
    try:
        for event in refresh_events(source, target):
            if isinstance(event, TableCopied):
                write_family(writer, len(written))
                writer.execute("UPDATE person SET tags = '{late}' WHERE id = 10")
                written.append(event.ref)
            elif isinstance(event, Committed):
                report = event.report
            elif isinstance(event, CheckOutcome):
                outcomes.append(event)
    finally:
        writer.close()
    assert len(written) > 3
    assert {o.check for o in outcomes} >= {"row_count", "matches_source"}
    assert all(o.passed for o in outcomes if o.check == "matches_source")
    assert not report.digests.digest(PERSON).startswith("unavailable")


def test_a_digest_the_source_could_not_compute_fails_content(pair):
    source, target = pair
    report = refresh(source, target)
    copy = next(c for c in report.copies() if c.source.ref == PERSON)
    lost = replace(copy, source_digest=lambda: "unavailable: the source went away")
    outcome = next(o for o in Verifier().after_commit(target, [lost]) if o.check == "matches_source")
    assert not outcome.passed and "content differs" in outcome.summary
