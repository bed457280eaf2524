"""Every run says where its time went: the engine's phases add up to at most its wall time, every
table has its copy and index rebuild, and the CLI prints it with --timings and always in --json."""

import dagster as dg
import pytest

from muva_refresh.endpoint import Endpoint
from muva_refresh.refresh import Committed, Finished, RefreshOptions, refresh_events
from muva_refresh.timings import Phase
from muva_refresh.translator import TIMINGS, TIMINGS_TABLE

from .support import cli

IN_ORDER = [Phase.SNAPSHOT, Phase.GUARDS, Phase.TRUNCATE, Phase.COPY, Phase.REBUILD, Phase.check("row_count"),
            Phase.check("no_orphans"), Phase.VIEWS, Phase.SEQUENCES, Phase.COMMIT, Phase.CHECKS_AFTER_COMMIT]
AFTER_COMMIT = {Phase.check("rls"), Phase.check("unique_indexes"), Phase.check("matches_source")}


@pytest.fixture
def pair(pg):
    return (Endpoint("source", pg.database_from_sql("src", "twists.sql")),
            Endpoint("target", pg.database_from_sql("dst", "twists.sql")))


def finished(source: Endpoint, target: Endpoint, options: RefreshOptions = RefreshOptions()):
    events = list(refresh_events(source, target, options))
    report = next(e.report for e in events if isinstance(e, Committed))
    assert isinstance(events[-1], Finished)
    return report, events[-1].timings


def test_the_phases_add_up_to_at_most_the_wall_time_and_every_table_appears(pair):
    report, timings = finished(*pair, RefreshOptions(full=True))
    assert 0 < timings.accounted <= timings.wall_seconds
    added = [p for p in timings.phases if not p.beside]
    assert list(dict.fromkeys(p.phase for p in added)) == IN_ORDER
    for phase in (Phase.COPY, Phase.REBUILD):
        assert {p.table for p in added if p.phase == phase} == set(report.tables)
    assert {p.phase for p in timings.phases if p.beside} == AFTER_COMMIT  # on the checks' own connections
    rows = timings.rows()
    assert sum(r.seconds for r in rows if not r.beside) == pytest.approx(timings.wall_seconds)
    assert [r.phase for r in rows if r.phase.startswith("check ")].count(Phase.check("row_count")) == 1  # summed


def test_a_delta_refresh_times_each_compared_table(pair):
    report, timings = finished(*pair)
    compared = {p.table for p in timings.phases if p.phase == Phase.COMPARE}
    assert compared == {ref for ref, stats in report.tables.items() if stats.compared_rows}
    assert compared and 0 < timings.accounted <= timings.wall_seconds


def test_a_parallel_load_counts_its_tables_beside_the_load(pair):
    report, timings = finished(*pair, RefreshOptions(workers=2))
    assert timings.accounted <= timings.wall_seconds
    assert Phase.PARALLEL_LOAD in {p.phase for p in timings.phases if not p.beside}
    assert {p.table for p in timings.phases if p.phase == Phase.COPY and p.beside} == set(report.tables)


def test_the_cli_prints_the_breakdown_with_timings_and_always_in_json(env):
    run = cli("refresh", "--full", "--timings")
    assert run.code == 0, run.err
    text = run.out[run.out.index("Where the"):]
    for line in ("copy customer", "index rebuild", "check no_orphans", "commit", "checks after commit", "Dagster",
                 "beside the phases above", "check matches_source"):
        assert line in text
    assert "Where the" not in cli("refresh").out
    report = cli("refresh", "--full", "--json").json
    timings = report["timings"]
    added = [p for p in timings["phases"] if not p["beside"]]
    assert sum(p["seconds"] for p in added) == pytest.approx(timings["wall_seconds"], abs=0.01)
    assert timings["wall_seconds"] <= report["seconds"] + 0.01
    assert {tuple(p["table"]) for p in added if p["phase"] == Phase.COPY} == {
        ("public", t["name"]) for t in report["tables"]}
    assert next(p for p in added if p["phase"] == Phase.DAGSTER)["seconds"] > 0
    with dg.DagsterInstance.get() as instance:  # the run's own record: one observation with the table
        logs = instance.all_logs(report["run_id"], of_type=dg.DagsterEventType.ASSET_OBSERVATION)
    metadata = [e.dagster_event.asset_observation_data.asset_observation.metadata for e in logs]
    assert len(metadata) == 1 and {TIMINGS, TIMINGS_TABLE} <= set(metadata[0])
