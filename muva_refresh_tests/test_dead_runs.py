"""A refresh killed outright (SIGKILL: the OOM killer, a restarted container) leaves its run in
progress in the instance; the next CLI refresh finds it, marks it failed saying what staging holds,
says so, and refreshes. On the CLI's SQLite instance and on dagster-postgres."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import psycopg
import pytest
from psycopg import sql

from muva_refresh.catalog import Catalog, TableRef
from muva_refresh.graph import make_plan
from muva_refresh.settings import Settings

from .conftest import use_postgres_instance
from .support import cli, table_fingerprints

MUVA_REFRESH = Path(sys.executable).parent / "muva-refresh"
WAITING_FOR_THE_HELD_TABLE = """
SELECT application_name FROM pg_stat_activity
WHERE wait_event_type = 'Lock' AND application_name LIKE 'muva_refresh target run %'
"""
COPYING = """
SELECT application_name, query FROM pg_stat_activity
WHERE state = 'active' AND application_name LIKE 'muva_refresh target run %' AND query ILIKE 'COPY%'
"""


@pytest.fixture(params=["sqlite", "postgres"])
def muva_instance(request, muva_env, tmp_path, monkeypatch):
    if request.param == "postgres":
        use_postgres_instance(request.getfixturevalue("pg15"), tmp_path / "pg_home", monkeypatch)
    return muva_env


def copied_table(query: str) -> TableRef:
    """The table a `COPY "schema"."table" (...) FROM STDIN` loads."""
    schema, name = query.split(None, 2)[1].split(".")
    return TableRef(schema.strip('"'), name.strip('"'))


def killed_during_level(level: int, *argv: str, timeout: float = 120) -> str:
    """Run `muva-refresh refresh argv` and kill it with SIGKILL once it copies a table of `level`;
    the id of its run. Past level 0 (the parallel mode's own transactions) a table of the level is
    held with a SHARE lock once the copying has begun, so that its load waits to be seen."""
    plan = make_plan(Catalog.load(Settings.load().state_path))
    target = os.environ["MUVA_TARGET_DSN"]
    refresh = subprocess.Popen([str(MUVA_REFRESH), "refresh", *argv], cwd=Path(os.environ["DAGSTER_HOME"]).parent,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    watcher, blocker = psycopg.connect(target, autocommit=True), psycopg.connect(target)
    held = False
    try:
        while time.monotonic() < deadline and refresh.poll() is None:
            copying = watcher.execute(COPYING).fetchall()
            waiting = watcher.execute(WAITING_FOR_THE_HELD_TABLE).fetchone() if held else None
            if waiting:  # on the table held below: loading it (its indexes dropped first)
                return waiting[0].rsplit(" ", 1)[1]
            for application, query in copying:
                if plan.level.get(copied_table(query), -1) >= level:
                    return application.rsplit(" ", 1)[1]
            if copying and level > 0 and not held:
                blocker.execute(sql.SQL("LOCK TABLE {} IN SHARE MODE").format(plan.batches[level][0].ident()))
                held = True
            time.sleep(0.05)
    finally:
        refresh.send_signal(signal.SIGKILL)
        output = refresh.communicate()[0].decode(errors="replace")
        watcher.close()
        blocker.close()
    raise AssertionError(f"the refresh never copied a table of level {level}:\n{output}")


def status(run_id: str) -> dg.DagsterRunStatus:
    with dg.DagsterInstance.get() as instance:
        return instance.get_run_by_id(run_id).status


def test_a_killed_atomic_refresh_is_closed_by_the_next_one_which_says_so(muva_instance):
    source, target = muva_instance
    assert cli("refresh").code == 0
    before = table_fingerprints(target)
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute("UPDATE guest_reservations SET guest_name = guest_name || ' (moved)'")
    dead = killed_during_level(0, "--full")
    assert status(dead) == dg.DagsterRunStatus.STARTED
    assert table_fingerprints(target) == before  # its one transaction died with it

    again = cli("refresh")
    assert again.code == 0, again.err
    assert f"note: run {dead} was still shown in progress, but its process is gone; marked it failed." in again.err
    assert "staging was rolled back and holds what it held before this run" in again.err
    assert status(dead) == dg.DagsterRunStatus.FAILURE
    assert table_fingerprints(target) == table_fingerprints(source)


def test_a_killed_parallel_refresh_is_closed_saying_which_levels_hold_rows(muva_instance):
    source, target = muva_instance
    dead = killed_during_level(2, "--workers", "2")
    again = cli("refresh", "--json")
    assert again.code == 0, again.err
    assert f"note: run {dead} was still shown in progress" in again.err
    assert "It ran in parallel mode" in again.err and "level 0: 9 of 9 tables; level 1: 17 of 17 tables" in again.err
    with dg.DagsterInstance.get() as instance:
        failure = instance.get_records_for_run(dead, of_type=dg.DagsterEventType.RUN_FAILURE).records
    assert "level 0: 9 of 9 tables" in failure[0].event_log_entry.dagster_event.message
    assert table_fingerprints(target) == table_fingerprints(source)
