"""The deploy sensor against a real source database: markers, cursor, drift, busy runs, failures."""

import dagster as dg
import psycopg
import pytest

from muva_refresh.definitions import REFRESH_JOB, build_definitions
from muva_refresh.resources import PostgresDatabase
from muva_refresh.sensors import DEPLOY_TAG, SENSOR_NAME, build_deploy_sensor
from muva_refresh.settings import MARKER_SQL_VAR, Settings

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
    return build_deploy_sensor(saved_catalog(dsn, settings.table_filter), REFRESH_JOB, settings.deploy_marker_sql)


def tick(sensor: dg.SensorDefinition, dsn: str, cursor: str | None = None,
         instance: dg.DagsterInstance | None = None):
    context = dg.build_sensor_context(
        instance=instance or dg.DagsterInstance.ephemeral(),
        cursor=cursor,
        resources={"source": PostgresDatabase(dsn=dsn, role="source")},
    )
    return sensor.evaluate_tick(context)


@pytest.fixture
def source(pg, monkeypatch):
    dsn = pg.database_from_sql("src", "twists.sql")
    execute(dsn, MIGRATIONS)
    return dsn


def test_one_run_per_deploy_and_the_cursor_follows(source):
    sensor = sensor_for(source)
    deploy(source, "20251101000000")

    first = tick(sensor, source)
    assert [r.run_key for r in first.run_requests] == ["deploy-20251101000000"]
    assert first.run_requests[0].tags[DEPLOY_TAG] == "20251101000000"
    assert first.cursor == "20251101000000"

    again = tick(sensor, source, cursor=first.cursor)
    assert again.run_requests == [] and "no new deploy" in again.skip_message
    assert again.cursor == first.cursor

    deploy(source, "20251102000000")
    second = tick(sensor, source, cursor=first.cursor)
    assert [r.run_key for r in second.run_requests] == ["deploy-20251102000000"]
    assert second.cursor == "20251102000000"


def test_a_missing_marker_table_skips_and_says_what_to_set(pg, monkeypatch):
    monkeypatch.delenv(MARKER_SQL_VAR, raising=False)
    bare = pg.database_from_sql("src", "twists.sql")
    result = tick(sensor_for(bare), bare, cursor="old")
    assert result.run_requests == [] and result.cursor == "old"
    assert MARKER_SQL_VAR in result.skip_message
    assert "supabase_migrations.schema_migrations" in result.skip_message


def test_an_empty_marker_table_skips(source):
    result = tick(sensor_for(source), source)
    assert result.run_requests == [] and "returned no value" in result.skip_message


def test_a_custom_marker_query(source, monkeypatch):
    execute(source, "CREATE TABLE flyway_schema_history (installed_rank int PRIMARY KEY, version text, success bool)")
    monkeypatch.setenv(MARKER_SQL_VAR, "SELECT max(installed_rank)::text FROM flyway_schema_history WHERE success")
    sensor = sensor_for(source)
    execute(source, "INSERT INTO flyway_schema_history VALUES (1, '1.0', true), (2, '1.1', false)")

    result = tick(sensor, source)
    assert [r.run_key for r in result.run_requests] == ["deploy-1"] and result.cursor == "1"


def test_drift_reports_and_requests_nothing(source):
    sensor = sensor_for(source)
    execute(source, "ALTER TABLE region ADD COLUMN added text")
    deploy(source, "20251103000000")

    result = tick(sensor, source, cursor="20251101000000")
    assert result.run_requests == []
    assert result.cursor == "20251101000000"
    assert "public.region.added" in result.skip_message
    assert "muva-refresh introspect" in result.skip_message

    # Once the state is current (introspect + reload rebuild the sensor), the deploy is refreshed.
    current = tick(sensor_for(source), source, cursor=result.cursor)
    assert [r.run_key for r in current.run_requests] == ["deploy-20251103000000"]


def test_a_refresh_in_progress_holds_the_deploy_back(source):
    sensor = sensor_for(source)
    deploy(source, "20251104000000")
    instance = dg.DagsterInstance.ephemeral()
    busy = instance.add_run(dg.DagsterRun(job_name=REFRESH_JOB, status=dg.DagsterRunStatus.STARTED))

    result = tick(sensor, source, cursor="20251101000000", instance=instance)
    assert result.run_requests == [] and result.cursor == "20251101000000"
    assert "already queued or running" in result.skip_message and busy.run_id in result.skip_message

    # The UI's "Materialize all" runs the tables under a job of Dagster's own; it counts too.
    instance.delete_run(busy.run_id)
    ui_run = instance.add_run(dg.DagsterRun(job_name="launched_from_the_ui", status=dg.DagsterRunStatus.STARTING,
                                            asset_selection=frozenset({dg.AssetKey("region"), dg.AssetKey("customer")})))
    assert ui_run.run_id in tick(sensor, source, cursor="20251101000000", instance=instance).skip_message

    # Runs of other assets, or of no assets, and finished refreshes do not.
    instance.delete_run(ui_run.run_id)
    instance.add_run(dg.DagsterRun(job_name="launched_from_the_ui", status=dg.DagsterRunStatus.STARTED,
                                   asset_selection=frozenset({dg.AssetKey("unrelated")})))
    instance.add_run(dg.DagsterRun(job_name="some_other_job", status=dg.DagsterRunStatus.STARTED))
    instance.add_run(dg.DagsterRun(job_name=REFRESH_JOB, status=dg.DagsterRunStatus.SUCCESS))
    assert len(tick(sensor, source, cursor="20251101000000", instance=instance).run_requests) == 1


def test_an_unreachable_source_skips_without_the_password(source):
    sensor = sensor_for(source)
    result = tick(sensor, "postgresql://u:S3cretPw@/x?host=/nonexistent")
    assert result.run_requests == [] and "cannot" in result.skip_message
    assert "S3cretPw" not in result.skip_message
    assert "set MUVA_SOURCE_DSN" in tick(sensor, "").skip_message


def test_the_definitions_carry_the_sensor_stopped(source, monkeypatch):
    deploy(source, "20251105000000")
    monkeypatch.setenv("MUVA_SOURCE_DSN", source)
    monkeypatch.setenv("MUVA_TARGET_DSN", source)
    defs = build_definitions(saved_catalog(source, Settings.load().table_filter))
    sensor = defs.resolve_sensor_def(SENSOR_NAME)
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
    assert sensor.minimum_interval_seconds == 60
    assert sensor.job_name == REFRESH_JOB and defs.resolve_job_def(sensor.job_name)

    # Through the definitions' own resources (the DSN from the environment), as the daemon does;
    # build_sensor_context does not take them from `definitions` by itself.
    context = dg.build_sensor_context(
        instance=dg.DagsterInstance.ephemeral(), definitions=defs, resources=defs.resources
    )
    result = sensor.evaluate_tick(context)
    assert [r.run_key for r in result.run_requests] == ["deploy-20251105000000"]
