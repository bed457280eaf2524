"""One snapshot for the whole run, while production keeps taking writes."""

import psycopg
import pytest

from muva_refresh.catalog import TableRef
from muva_refresh.endpoint import Endpoint
from muva_refresh.load import TableCopied
from muva_refresh.refresh import Committed, RefreshOptions, refresh_events

from .support import COUNTS, ORPHANS, write_family


@pytest.mark.parametrize("workers", [1, 3])
def test_writes_committed_between_table_copies_never_reach_the_target(pg, workers):
    source = pg.database_from_sql("src", "twists.sql")
    target = pg.database_from_sql("dst", "twists.sql")
    with psycopg.connect(source) as conn:
        at_snapshot = conn.execute(COUNTS).fetchone()
    writer = psycopg.connect(source, autocommit=True)
    written = []

    try:
        for event in refresh_events(Endpoint("source", source), Endpoint("target", target),
                                    RefreshOptions(workers=workers)):
            if isinstance(event, TableCopied):  # production writes while the load goes on
                write_family(writer, len(written))
                written.append(event.ref)
            elif isinstance(event, Committed):
                report = event.report
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
