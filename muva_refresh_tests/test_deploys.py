"""Deploys refresh staging by themselves: `dagster dev` (webserver and daemon) on the demo pair with
the deploy sensor on, ticking every few seconds, and nobody typing a command; on the instance the
CLI writes (SQLite) and on the repository's dagster.yaml (dagster-postgres).

The tests share one `dagster dev` per instance and run in order, each deploy on top of the last.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import psycopg
import pytest

from muva_refresh.demo import dagster_dev
from muva_refresh.demo.dagster_dev import DagsterDev
from muva_refresh.instance import CLI_INSTANCE
from muva_refresh.sensors import DEAD_RUN_SENSOR_NAME, DEPLOY_TAG, SENSOR_NAME
from muva_refresh.settings import SENSOR_INTERVAL_VAR

from .conftest import REPO_INSTANCE
from .support import TWISTS, rows_and_xmins, table_fingerprints

DEMO_MARKER = "20251030143000"  # the demo's latest migration: the sensor starts from it
INTERVAL_S = 5
RUN_TIMEOUT_S = 240  # a refresh takes ~30 s from launch to SUCCESS here, several times that when busy
T = TypeVar("T")


def wait_for(found: Callable[[], T], timeout: float, what: str, dev: DagsterDev, every: float = 1) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = found()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"no {what} after {timeout} s; the sensor's ticks, newest first:\n"
                       + "\n".join(f"  {t['status']} {t['runIds']} {t['skipReason']}"
                                   for t in dev.sensor_ticks(SENSOR_NAME, 8))
                       + f"\n{dev.log_tail(20)}")


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def dev(request) -> Iterator[DagsterDev]:
    instance, instance_env = CLI_INSTANCE, {}
    if request.param == "postgres":
        info = psycopg.conninfo.conninfo_to_dict(request.getfixturevalue("pg15").create_database("dagster_deploys"))
        instance = REPO_INSTANCE.read_text()
        instance_env = {"DAGSTER_PG_HOST": info.get("host", "127.0.0.1"), "DAGSTER_PG_PORT": str(info.get("port", 5432)),
                        "DAGSTER_PG_USER": info.get("user", "postgres"), "DAGSTER_PG_PASSWORD": info.get("password", ""),
                        "DAGSTER_PG_DB": info["dbname"]}
    root = dagster_dev.make_root()
    try:
        env = dagster_dev.start_demo(root, instance, {**instance_env, SENSOR_INTERVAL_VAR: str(INTERVAL_S)})
        server = dagster_dev.start_dagster_dev(root, env)
        try:
            server.start_sensor(SENSOR_NAME, cursor=DEMO_MARKER)  # the demo's own deploy is not one to refresh
            yield server
        finally:
            dagster_dev.stop_dagster_dev(server)
    finally:
        dagster_dev.cleanup(root)


def source(dev: DagsterDev) -> str:
    return dev.env["MUVA_SOURCE_DSN"]


def target(dev: DagsterDev) -> str:
    return dev.env["MUVA_TARGET_DSN"]


def migrate(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def deploy(dev: DagsterDev, version: str) -> float:
    """Record a migration on production, as Supabase does; when it was recorded."""
    migrate(source(dev), f"INSERT INTO supabase_migrations.schema_migrations (version, name) VALUES ('{version}', 'x')")
    return time.time()


def ticks_since(dev: DagsterDev, since: float) -> list[dict[str, Any]]:
    """The sensor's ticks after `since`, oldest first."""
    return sorted((t for t in dev.sensor_ticks(SENSOR_NAME) if t["timestamp"] > since), key=lambda t: t["timestamp"])


def refreshed(dev: DagsterDev, version: str) -> str:
    """The one run of the deploy, once it has succeeded."""
    run = wait_for(lambda: dev.runs_tagged(DEPLOY_TAG, version), RUN_TIMEOUT_S, f"run for deploy {version}", dev)[0]
    status = dev.wait_for_run(run["runId"], RUN_TIMEOUT_S)
    assert status == "SUCCESS", dev.run_errors(run["runId"])
    return run["runId"]


def refreshed_once(dev: DagsterDev, version: str) -> None:
    """Two more ticks after the refresh, and still one run for the deploy."""
    settled = time.time()
    wait_for(lambda: len(ticks_since(dev, settled)) >= 2, 10 * INTERVAL_S + 60, "two more ticks", dev)
    assert len(dev.runs_tagged(DEPLOY_TAG, version)) == 1


def test_a_migration_production_has_and_staging_lacks_waits_then_one_refresh_once_staging_has_it(dev):
    before = rows_and_xmins(target(dev))
    migrate(source(dev), "ALTER TABLE guest_reservations ADD COLUMN loyalty_tier text")
    deployed = deploy(dev, "20251101000000")

    waiting = wait_for(lambda: [t for t in ticks_since(dev, deployed) if "loyalty_tier" in (t["skipReason"] or "")],
                       10 * INTERVAL_S + 60, "tick naming the column", dev)[0]
    assert "staging lacks a migration production has: column public.guest_reservations.loyalty_tier (text) is " \
           "missing on the target" in waiting["skipReason"]
    assert dev.runs_tagged(DEPLOY_TAG, "20251101000000") == []
    assert rows_and_xmins(target(dev)) == before  # untouched: the same rows, never rewritten

    migrate(target(dev), "ALTER TABLE guest_reservations ADD COLUMN loyalty_tier text")
    refreshed(dev, "20251101000000")
    refreshed_once(dev, "20251101000000")
    assert table_fingerprints(target(dev), TWISTS) == table_fingerprints(source(dev), TWISTS)


def test_a_deploy_adding_a_column_and_a_table_with_an_fk_is_refreshed_once_and_the_table_is_an_asset(dev):
    for dsn in (source(dev), target(dev)):
        migrate(dsn, "ALTER TABLE guest_reservations ADD COLUMN stay_note text",
                "CREATE TABLE guest_loyalty (id int PRIMARY KEY, "
                "reservation_id uuid NOT NULL REFERENCES guest_reservations (id), points int NOT NULL)")
    migrate(source(dev), "UPDATE guest_reservations SET stay_note = 'late arrival' WHERE check_in < '2025-03-01'",
            "INSERT INTO guest_loyalty SELECT row_number() OVER (ORDER BY id), id, 10 FROM guest_reservations")
    deployed = deploy(dev, "20251102000000")

    refreshed(dev, "20251102000000")
    refreshed_once(dev, "20251102000000")
    assert table_fingerprints(target(dev), TWISTS) == table_fingerprints(source(dev), TWISTS)
    with psycopg.connect(target(dev)) as conn:
        assert conn.execute("SELECT count(*) FROM guest_loyalty").fetchone()[0] > 0
    nodes = {"/".join(n["assetKey"]["path"]): {"/".join(d["path"]) for d in n["dependencyKeys"]}
             for n in dev.graphql("{ assetNodes { assetKey { path } dependencyKeys { path } } }")["assetNodes"]}
    assert nodes["guest_loyalty"] == {"guest_reservations", "production/guest_loyalty"}
    reasons = [t["skipReason"] or "" for t in ticks_since(dev, deployed)]
    assert any("new table public.guest_loyalty" in r and "to reload code location" in r for r in reasons), reasons


def test_a_refresh_killed_mid_copy_is_closed_and_the_next_deploy_is_refreshed_on_the_next_tick(dev):
    output = dev.root / "killed-refresh.log"
    with output.open("wb") as log:
        refresh = subprocess.Popen([str(dagster_dev.BIN / "muva-refresh"), "refresh", "--full"], env=dev.env,
                                   cwd=dev.root, stdout=log, stderr=subprocess.STDOUT)
    try:
        run_id = wait_for(lambda: copying_run(target(dev)) or refresh.poll() is not None, 120, "refresh copying",
                          dev, every=0.1)
    finally:
        refresh.send_signal(signal.SIGKILL)
        refresh.wait()
    assert isinstance(run_id, str), f"the refresh ended before it was killed:\n{output.read_text()}"
    assert dev.run_status(run_id) == "STARTED"  # what the instance shows of a killed process

    before = time.time()
    deploy(dev, "20251103000000")
    new_run = refreshed(dev, "20251103000000")
    # The tick that read the deploy requested its run; none waited on the dead run.
    ticks = ticks_since(dev, before - INTERVAL_S)
    requesting = next(i for i, t in enumerate(ticks) if new_run in t["runIds"])
    assert all("no new deploy" in (t["skipReason"] or "") for t in ticks[:requesting]), ticks[:requesting + 1]
    assert dev.run_status(run_id) == "FAILURE"
    assert status_in_the_clis_instance(dev, run_id) == "FAILURE"
    assert "staging was rolled back and holds what it held before this run" in dev.run_errors(run_id)
    assert table_fingerprints(target(dev), TWISTS) == table_fingerprints(source(dev), TWISTS)


def copying_run(dsn: str) -> str | None:
    """The run whose session on the target is in a COPY right now."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT application_name FROM pg_stat_activity WHERE state = 'active' "
                           "AND application_name LIKE 'muva_refresh target run %' AND query ILIKE 'COPY%'").fetchone()
    return row[0].rsplit(" ", 1)[1] if row else None


def status_in_the_clis_instance(dev: DagsterDev, run_id: str) -> str:
    """The run as a command on the same DAGSTER_HOME reads it."""
    done = subprocess.run([str(dagster_dev.BIN / "python"), "-c",
                           "import sys, dagster as dg; "
                           "print(dg.DagsterInstance.get().get_run_by_id(sys.argv[1]).status.value)", run_id],
                          env=dev.env, cwd=dev.root, capture_output=True, text=True, timeout=120, check=True)
    return done.stdout.strip()


def test_a_run_queued_behind_a_killed_refresh_starts_once_the_dead_run_is_closed(dev):
    """One refresh at a time (a pool of one run): without anyone closing it, a dead run holds the
    pool, and a "Materialize all" or a launch through the API waits behind it for good."""
    from dagster_graphql import DagsterGraphQLClient

    dev.stop_sensor(DEAD_RUN_SENSOR_NAME)  # on by default: off, to see what it spares
    refresh = subprocess.Popen([str(dagster_dev.BIN / "muva-refresh"), "refresh", "--full"], env=dev.env,
                               cwd=dev.root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        dead = wait_for(lambda: copying_run(target(dev)) or refresh.poll() is not None, 120, "refresh copying",
                        dev, every=0.1)
    finally:
        refresh.send_signal(signal.SIGKILL)
        refresh.wait()
    assert isinstance(dead, str), "the refresh ended before it was killed"
    launched = DagsterGraphQLClient("127.0.0.1", port_number=dev.port).submit_job_execution(
        "refresh_staging", repository_location_name=dev.location, repository_name=dev.repository)
    time.sleep(4 * INTERVAL_S)
    assert (dev.run_status(launched), dev.run_status(dead)) == ("QUEUED", "STARTED")

    dev.start_sensor(DEAD_RUN_SENSOR_NAME)
    assert dev.wait_for_run(launched, RUN_TIMEOUT_S) == "SUCCESS", dev.run_errors(launched)
    assert dev.run_status(dead) == "FAILURE"
    assert table_fingerprints(target(dev), TWISTS) == table_fingerprints(source(dev), TWISTS)
