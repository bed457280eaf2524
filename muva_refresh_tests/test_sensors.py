"""The deploy sensor against real source and target databases: markers, cursor, migrations that
staging lacks, graph changes, busy and dead runs, failures; and the sensor that closes dead runs."""

import subprocess
from dataclasses import replace

import dagster as dg
import psycopg
import pytest

from muva_refresh import liveness
from muva_refresh.catalog import Catalog
from muva_refresh.definitions import REFRESH_JOB, build_definitions, defs
from muva_refresh.errors import ConfigError
from muva_refresh.guards import TAKE_REFRESH_LOCK
from muva_refresh.liveness import PROCESS_TAG, ProcessIdentity, process_start
from muva_refresh.resources import PostgresDatabase
from muva_refresh.sensors import DEAD_RUN_SENSOR_NAME, DEPLOY_TAG, SENSOR_NAME, build_deploy_sensor
from muva_refresh.settings import MARKER_SQL_VAR, SENSOR_INTERVAL_VAR, Settings

from .support import saved_catalog

MIGRATIONS = """
CREATE SCHEMA supabase_migrations;
CREATE TABLE supabase_migrations.schema_migrations (version text PRIMARY KEY, name text);
"""


def execute(dsn: str, statement: str, params: tuple = ()) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(statement, params or None)


def deploy(dsn: str, version: str) -> None:
    execute(dsn, "INSERT INTO supabase_migrations.schema_migrations VALUES (%s, 'deploy')", (version,))


def sensor_for(dsn: str) -> dg.SensorDefinition:
    """The deploy sensor as the definitions build it, from the saved catalog and the settings."""
    settings = Settings.load()
    return build_deploy_sensor(saved_catalog(dsn, settings.table_filter, settings.state_path), REFRESH_JOB, settings)


def tick(sensor: dg.SensorDefinition, dsn: str, target: str, cursor: str | None = None,
         instance: dg.DagsterInstance | None = None):
    context = dg.build_sensor_context(
        instance=instance or dg.DagsterInstance.ephemeral(),
        cursor=cursor,
        resources={"source": PostgresDatabase(dsn=dsn, role="source"),
                   "target": PostgresDatabase(dsn=target, role="target")},
    )
    return sensor.evaluate_tick(context)


@pytest.fixture
def pair(pg, tmp_path, monkeypatch):
    monkeypatch.setenv("MUVA_STATE_PATH", str(tmp_path / "catalog.json"))
    source = pg.database_from_sql("src", "twists.sql")
    execute(source, MIGRATIONS)
    return source, pg.database_from_sql("dst", "twists.sql")


def test_one_run_per_deploy_and_the_cursor_follows(pair):
    source, target = pair
    sensor = sensor_for(source)
    deploy(source, "20251101000000")

    first = tick(sensor, source, target)
    assert [r.run_key for r in first.run_requests] == ["deploy-20251101000000"]
    assert first.run_requests[0].tags[DEPLOY_TAG] == "20251101000000"
    assert first.cursor == "20251101000000"

    again = tick(sensor, source, target, cursor=first.cursor)
    assert again.run_requests == [] and "no new deploy" in again.skip_message
    assert again.cursor == first.cursor

    deploy(source, "20251102000000")
    second = tick(sensor, source, target, cursor=first.cursor)
    assert [r.run_key for r in second.run_requests] == ["deploy-20251102000000"]
    assert second.cursor == "20251102000000"


def test_a_missing_marker_table_skips_and_says_what_to_set(pg, pair, monkeypatch):
    _, target = pair
    monkeypatch.delenv(MARKER_SQL_VAR, raising=False)
    bare = pg.database_from_sql("src", "twists.sql")
    result = tick(sensor_for(bare), bare, target, cursor="old")
    assert result.run_requests == [] and result.cursor == "old"
    assert MARKER_SQL_VAR in result.skip_message
    assert "supabase_migrations.schema_migrations" in result.skip_message


def test_an_empty_marker_table_skips(pair):
    source, target = pair
    result = tick(sensor_for(source), source, target)
    assert result.run_requests == [] and "returned no value" in result.skip_message


def test_a_custom_marker_query(pair, monkeypatch):
    source, target = pair
    execute(source, "CREATE TABLE flyway_schema_history (installed_rank int PRIMARY KEY, version text, success bool)")
    execute(target, "CREATE TABLE flyway_schema_history (installed_rank int PRIMARY KEY, version text, success bool)")
    monkeypatch.setenv(MARKER_SQL_VAR, "SELECT max(installed_rank)::text FROM flyway_schema_history WHERE success")
    sensor = sensor_for(source)
    execute(source, "INSERT INTO flyway_schema_history VALUES (1, '1.0', true), (2, '1.1', false)")

    result = tick(sensor, source, target)
    assert [r.run_key for r in result.run_requests] == ["deploy-1"] and result.cursor == "1"


def test_a_column_staging_lacks_waits_and_the_deploy_is_refreshed_once_staging_has_it(pair):
    source, target = pair
    sensor = sensor_for(source)
    execute(source, "ALTER TABLE region ADD COLUMN added text")
    execute(source, "ALTER TABLE shelf ALTER COLUMN label TYPE varchar(40)")
    deploy(source, "20251103000000")

    # No introspect and no reload: columns are read live, and the graph is the same.
    waiting = tick(sensor, source, target, cursor="20251101000000")
    assert waiting.run_requests == [] and waiting.cursor == "20251101000000"
    assert "staging lacks a migration production has" in waiting.skip_message
    assert "column public.region.added (text) is missing on the target" in waiting.skip_message
    assert "column public.shelf.label is character varying(40) on the source, text on the target" \
        in waiting.skip_message

    execute(target, "ALTER TABLE region ADD COLUMN added text")
    execute(target, "ALTER TABLE shelf ALTER COLUMN label TYPE varchar(40)")
    caught_up = tick(sensor, source, target, cursor=waiting.cursor)
    assert [r.run_key for r in caught_up.run_requests] == ["deploy-20251103000000"]


def test_staging_ahead_of_production_does_not_hold_a_deploy(pair):
    source, target = pair
    execute(target, "ALTER TABLE region ADD COLUMN tried_first text DEFAULT 'x'")
    execute(target, "CREATE TABLE only_on_staging (id int PRIMARY KEY, region_id int REFERENCES region (id))")
    deploy(source, "20251103000000")
    assert len(tick(sensor_for(source), source, target).run_requests) == 1


def test_a_graph_change_saves_the_state_and_the_reloaded_sensor_requests_the_run(pair, tmp_path):
    source, target = pair
    sensor = sensor_for(source)
    for dsn in (source, target):
        execute(dsn, "CREATE TABLE visit (id int PRIMARY KEY, region_id int REFERENCES region (id))")
    deploy(source, "20251104000000")

    changed = tick(sensor, source, target, cursor="20251101000000")
    assert changed.run_requests == [] and changed.cursor == "20251101000000"
    assert "production's graph changed: new table public.visit; new FK public.visit(region_id) -> " \
           "public.region(id)" in changed.skip_message
    assert f"Saved the new catalog state to {tmp_path / 'catalog.json'}" in changed.skip_message
    assert "MUVA_DAGSTER_URL" in changed.skip_message  # nothing to reload through here: it says how
    state = Catalog.load(tmp_path / "catalog.json")
    assert "public.visit" in {str(r) for r in state.refs}

    # What a reload does: the definitions, the sensor with them, built from the saved state.
    reloaded = build_definitions(state).resolve_sensor_def(SENSOR_NAME)
    result = tick(reloaded, source, target, cursor=changed.cursor)
    assert [r.run_key for r in result.run_requests] == ["deploy-20251104000000"]


def test_a_table_renamed_on_one_side_waits_and_names_it(pair, tmp_path):
    source, target = pair
    execute(target, "ALTER TABLE shelf RENAME TO rack")
    deploy(source, "20251105000000")
    result = tick(sensor_for(source), source, target)
    assert result.run_requests == [] and "table public.shelf is missing on the target" in result.skip_message


def test_a_refresh_in_progress_holds_the_deploy_back(pair):
    source, target = pair
    sensor = sensor_for(source)
    deploy(source, "20251104000000")
    instance = dg.DagsterInstance.ephemeral()
    busy = instance.add_run(dg.DagsterRun(job_name=REFRESH_JOB, status=dg.DagsterRunStatus.NOT_STARTED))

    result = tick(sensor, source, target, cursor="20251101000000", instance=instance)
    assert result.run_requests == [] and result.cursor == "20251101000000"
    assert "already queued or running" in result.skip_message and busy.run_id in result.skip_message

    # The UI's "Materialize all" runs the tables under a job of Dagster's own; it counts too.
    instance.delete_run(busy.run_id)
    ui_run = instance.add_run(dg.DagsterRun(job_name="launched_from_the_ui", status=dg.DagsterRunStatus.STARTING,
                                            asset_selection=frozenset({dg.AssetKey("region"), dg.AssetKey("customer")})))
    assert ui_run.run_id in tick(sensor, source, target, cursor="20251101000000", instance=instance).skip_message

    # Runs of other assets, or of no assets, and finished refreshes do not.
    instance.delete_run(ui_run.run_id)
    instance.add_run(dg.DagsterRun(job_name="launched_from_the_ui", status=dg.DagsterRunStatus.STARTED,
                                   asset_selection=frozenset({dg.AssetKey("unrelated")})))
    instance.add_run(dg.DagsterRun(job_name="some_other_job", status=dg.DagsterRunStatus.STARTED))
    instance.add_run(dg.DagsterRun(job_name=REFRESH_JOB, status=dg.DagsterRunStatus.SUCCESS))
    assert len(tick(sensor, source, target, cursor="20251101000000", instance=instance).run_requests) == 1


def ended_process() -> ProcessIdentity:
    """The identity of a process of this host that has ended."""
    child = subprocess.Popen(["sleep", "60"])
    identity = replace(ProcessIdentity.current(), pid=child.pid, started=process_start(child.pid) or "")
    child.kill()
    child.wait()
    return identity


def started_run(instance: dg.DagsterInstance, identity: ProcessIdentity | None = None) -> dg.DagsterRun:
    tags = {PROCESS_TAG: identity.text()} if identity else {}
    return instance.add_run(dg.DagsterRun(job_name=REFRESH_JOB, status=dg.DagsterRunStatus.STARTED, tags=tags))


def test_a_run_whose_process_ended_is_marked_failed_and_the_deploy_goes_ahead_in_the_same_tick(pair):
    source, target = pair
    deploy(source, "20251106000000")
    instance = dg.DagsterInstance.ephemeral()
    dead = started_run(instance, ended_process())

    result = tick(sensor_for(source), source, target, cursor="20251101000000", instance=instance)
    assert [r.run_key for r in result.run_requests] == ["deploy-20251106000000"]
    closed = instance.get_run_by_id(dead.run_id)
    assert closed.status == dg.DagsterRunStatus.FAILURE
    failure = instance.get_records_for_run(dead.run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
    message = failure[0].event_log_entry.dagster_event.message
    assert f"The refresh's process is gone (pid {ProcessIdentity.parse(dead.tags[PROCESS_TAG]).pid} on " in message
    assert "staging was rolled back and holds what it held before this run" in message


def test_a_run_holding_the_lock_or_with_a_live_process_is_alive(pair, monkeypatch):
    source, target = pair
    deploy(source, "20251107000000")
    instance = dg.DagsterInstance.ephemeral()
    sensor = sensor_for(source)
    starting = started_run(instance, ProcessIdentity.current())  # no lock yet, its process runs
    assert starting.run_id in tick(sensor, source, target, cursor="x", instance=instance).skip_message
    instance.delete_run(starting.run_id)

    holding = started_run(instance, ended_process())
    application = f"muva_refresh target run {holding.run_id}"
    with psycopg.connect(target, autocommit=True, application_name=application) as conn:
        conn.execute(TAKE_REFRESH_LOCK)
        # Its process tag says ended, but the lock is held by a session working for it: alive.
        assert holding.run_id in tick(sensor, source, target, cursor="x", instance=instance).skip_message
    assert instance.get_run_by_id(holding.run_id).status == dg.DagsterRunStatus.STARTED


def test_a_run_from_another_host_is_dead_once_silent_long_enough(pair, monkeypatch):
    source, target = pair
    deploy(source, "20251108000000")
    instance = dg.DagsterInstance.ephemeral()
    elsewhere = started_run(instance, ProcessIdentity(4242, "another-host"))
    assert elsewhere.run_id in tick(sensor_for(source), source, target, cursor="x", instance=instance).skip_message
    monkeypatch.setattr(liveness, "DEAD_AFTER_SILENT_S", 0)
    result = tick(sensor_for(source), source, target, cursor="x", instance=instance)
    assert len(result.run_requests) == 1
    assert instance.get_run_by_id(elsewhere.run_id).status == dg.DagsterRunStatus.FAILURE


def test_the_dead_run_sensor_closes_dead_runs_and_is_on_by_default(pair, monkeypatch):
    source, target = pair
    monkeypatch.setenv("MUVA_SOURCE_DSN", source)
    monkeypatch.setenv("MUVA_TARGET_DSN", target)
    definitions = build_definitions(saved_catalog(source, Settings.load().table_filter))
    sensor = definitions.resolve_sensor_def(DEAD_RUN_SENSOR_NAME)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING and not sensor.targets
    instance = dg.DagsterInstance.ephemeral()
    context = dg.build_sensor_context(instance=instance, definitions=definitions, resources=definitions.resources)
    assert sensor.evaluate_tick(context).skip_message == "no refresh in progress"
    dead = started_run(instance, ended_process())
    assert dead.run_id in sensor.evaluate_tick(context).skip_message
    assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE


def test_an_unreachable_source_skips_without_the_password(pair):
    source, target = pair
    sensor = sensor_for(source)
    result = tick(sensor, "postgresql://u:S3cretPw@/x?host=/nonexistent", target)
    assert result.run_requests == [] and "cannot" in result.skip_message
    assert "S3cretPw" not in result.skip_message
    assert "set MUVA_SOURCE_DSN" in tick(sensor, "", target).skip_message


def test_the_definitions_carry_the_sensor_stopped_at_the_configured_interval(pair, monkeypatch):
    source, target = pair
    deploy(source, "20251105000000")
    monkeypatch.setenv("MUVA_SOURCE_DSN", source)
    monkeypatch.setenv("MUVA_TARGET_DSN", target)
    monkeypatch.setenv(SENSOR_INTERVAL_VAR, "5")
    definitions = build_definitions(saved_catalog(source, Settings.load().table_filter))
    sensor = definitions.resolve_sensor_def(SENSOR_NAME)
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
    assert sensor.minimum_interval_seconds == 5
    assert definitions.resolve_sensor_def(DEAD_RUN_SENSOR_NAME).minimum_interval_seconds == 5
    assert sensor.job_name == REFRESH_JOB and definitions.resolve_job_def(sensor.job_name)

    # Through the definitions' own resources (the DSNs from the environment), as the daemon does;
    # build_sensor_context does not take them from `definitions` by itself.
    context = dg.build_sensor_context(
        instance=dg.DagsterInstance.ephemeral(), definitions=definitions, resources=definitions.resources
    )
    result = sensor.evaluate_tick(context)
    assert [r.run_key for r in result.run_requests] == ["deploy-20251105000000"]


@pytest.mark.parametrize("value", ["4", "sixty", "7.5", "-60"])
def test_a_bad_sensor_interval_is_a_clear_error(pair, monkeypatch, value):
    monkeypatch.setenv(SENSOR_INTERVAL_VAR, value)
    with pytest.raises(ConfigError, match=rf"{SENSOR_INTERVAL_VAR} is '{value}'; it must be a whole number of "
                                          r"seconds, at least 5"):
        defs()
    assert Settings.load(env={}).sensor_interval_s == 60
