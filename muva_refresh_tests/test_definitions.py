"""The Dagster edge: definitions from saved state, the job with real resources, drift, executors."""

import threading
from types import SimpleNamespace

import dagster as dg
import psycopg
import pytest

from muva_refresh.assets import CopiedLines
from muva_refresh.catalog import Catalog, TableRef
from muva_refresh.checks import CHECKS
from muva_refresh.definitions import REFRESH_JOB, build_definitions, defs
from muva_refresh.errors import ConfigError
from muva_refresh.settings import Settings
from muva_refresh.stream import CopyStats
from muva_refresh.translator import key_part

from .support import ORPHANS, saved_catalog, write_family

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@pytest.fixture
def hostile_env(pg, tmp_path, monkeypatch):
    source = pg.database_from_sql("src", "hostile.sql", "twists.sql")
    target = pg.database_from_sql("dst", "hostile.sql", "twists.sql")
    monkeypatch.setenv("MUVA_SOURCE_DSN", source)
    monkeypatch.setenv("MUVA_TARGET_DSN", target)
    monkeypatch.setenv("MUVA_SCHEMAS", "public,Billing Ops")
    monkeypatch.setenv("MUVA_STATE_PATH", str(tmp_path / "catalog.json"))
    catalog = saved_catalog(source, Settings.load().table_filter, tmp_path / "catalog.json")
    return source, target, catalog


def specs_by_table_name(definitions: dg.Definitions, group: str | None = None) -> dict[str, dg.AssetSpec]:
    """The staging tables' specs by table name; production's with group="production"."""
    return {s.metadata["dagster/table_name"]: s for s in definitions.resolve_all_asset_specs()
            if (s.group_name == "production") == (group == "production")}


def table_deps(spec: dg.AssetSpec) -> list[dg.AssetKey]:
    """The FK parents a staging table depends on, leaving out the production table it reads."""
    return [d.asset_key for d in spec.deps if d.asset_key.path[0] != "production"]


def test_key_parts_are_dagster_safe_and_distinct():
    assert key_part("reservations") == "reservations"
    odd = [key_part(n) for n in ("Invoice Line", "Invoice_Line", "invoice line", 'Invoice "Line"')]
    assert len(set(odd)) == 4
    assert all(dg.AssetKey([p]) for p in odd)


def test_definitions_come_from_the_saved_state_without_a_database(hostile_env, monkeypatch):
    monkeypatch.setenv("MUVA_SOURCE_DSN", "postgresql://nobody@/nowhere?host=/nonexistent")
    loaded = defs()
    specs = specs_by_table_name(loaded)
    invoice = specs['Billing Ops.Invoice "Line".v2']
    assert invoice.key.path[0].startswith("Billing_Ops_") and invoice.key.path[1].startswith("Invoice__Line__v2_")
    assert table_deps(invoice) == [specs["Billing Ops.Customer"].key]
    production = specs_by_table_name(loaded, "production")['Billing Ops.Invoice "Line".v2']
    assert production.key == dg.AssetKey(["production", *invoice.key.path])
    assert {d.asset_key for d in invoice.deps} - set(table_deps(invoice)) == {production.key}
    assert invoice.group_name == "level_1" and invoice.kinds == {"postgres"}
    assert "Customer ID" in invoice.description
    columns = {c.name: c for c in invoice.metadata["dagster/column_schema"].columns}
    assert columns["Line No"].constraints.other == ["primary key"]
    assert specs["public.customer"].key == dg.AssetKey(["customer"])
    assert set(table_deps(specs["public.item"])) == {dg.AssetKey(["person"]), dg.AssetKey(["shelf"])}
    assert "generated, not copied" in {
        o for c in specs["public.customer"].metadata["dagster/column_schema"].columns for o in c.constraints.other
    }
    assert loaded.resolve_job_def(REFRESH_JOB)


def test_missing_state_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MUVA_STATE_PATH", str(tmp_path / "absent.json"))
    with pytest.raises(ConfigError, match="run `muva-refresh introspect`"):
        defs()


def test_the_job_materializes_every_table_with_metadata(hostile_env):
    source, target, catalog = hostile_env
    result = build_definitions(catalog).resolve_job_def(REFRESH_JOB).execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), run_config=QUIET
    )
    assert result.success
    materialized = {e.asset_key: e.step_materialization_data.materialization.metadata
                    for e in result.get_asset_materialization_events()}
    assert len(materialized) == len(catalog.tables)
    customer = materialized[dg.AssetKey(["customer"])]
    assert customer["dagster/row_count"].value == 50
    assert {"bytes", "seconds", "MB/s", "snapshot_id", "copy_format"} <= set(customer)
    assert len({m["snapshot_id"].value for m in materialized.values()}) == 1
    # Every check, blocking or not, is recorded against this run's materialization of its table,
    # though the checks after COMMIT run while Dagster stores the materializations.
    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) == len(catalog.tables) * (len(CHECKS) - 1)  # masking runs only under a policy
    assert {e.target_materialization_data.run_id for e in evaluations} == {result.run_id}


def test_a_column_production_has_and_staging_lacks_stops_the_run_before_any_write(hostile_env):
    source, target, catalog = hostile_env
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute("ALTER TABLE region ADD COLUMN added_by_deploy text")
    result = build_definitions(catalog).resolve_job_def(REFRESH_JOB).execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), run_config=QUIET, raise_on_error=False
    )
    assert not result.success
    message = str(result.failure_data_for_node("refresh_tables").error.cause.message)
    assert "staging lacks a migration production has: column public.region.added_by_deploy (text)" in message
    with psycopg.connect(target) as conn:
        assert conn.execute("SELECT count(*) FROM customer").fetchone()[0] == 50  # untouched (seeded)


def multiprocess_refresh_job() -> dg.JobDefinition:
    """Rebuilt in the step's own process from the state file the test wrote."""
    loaded = build_definitions(Catalog.load(Settings.load().state_path))
    job = dg.define_asset_job("refresh_multiprocess", selection=dg.AssetSelection.all(),
                              executor_def=dg.multiprocess_executor)
    return dg.Definitions(assets=loaded.assets, jobs=[job], resources=loaded.resources).resolve_job_def(job.name)


def test_the_snapshot_holds_under_the_multiprocess_executor_with_concurrent_writes(hostile_env, tmp_path):
    source, target, _ = hostile_env
    stop = threading.Event()

    def keep_writing():
        with psycopg.connect(source, autocommit=True) as conn:
            n = 0
            while not stop.is_set() and n < 5000:
                write_family(conn, n)
                n += 1

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        with dg.DagsterInstance.local_temp(str(tmp_path)) as instance:
            result = dg.execute_job(dg.reconstructable(multiprocess_refresh_job), instance=instance, run_config=QUIET)
            assert result.success
            counts = {e.asset_key.path[-1]: e.step_materialization_data.materialization.metadata["rows"].value
                      for e in result.get_asset_materialization_events()}
    finally:
        stop.set()
        writer.join()
    with psycopg.connect(target) as conn:
        assert conn.execute(ORPHANS).fetchone()[0] == 0
        for table in ("region", "customer", "audit_log"):
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == counts[table]


def reexecutable_refresh_job() -> dg.JobDefinition:
    """The refresh job, rebuilt in a fresh process from the state file the test wrote."""
    return build_definitions(Catalog.load(Settings.load().state_path)).resolve_job_def(REFRESH_JOB)


def materialized(result) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def test_reexecution_from_failure_finishes_without_redoing_what_succeeded(hostile_env, tmp_path):
    source, target, catalog = hostile_env
    with psycopg.connect(target, autocommit=True) as conn:  # one row of the source breaks a target CHECK
        conn.execute("ALTER TABLE customer ADD CONSTRAINT no_seven CHECK (name <> 'customer 7') NOT VALID")
    parallel = {"ops": {"refresh_tables": {"config": {"workers": 2}}}, **QUIET}
    with dg.DagsterInstance.local_temp(str(tmp_path)) as instance:
        job = dg.reconstructable(reexecutable_refresh_job)
        failed = dg.execute_job(job, instance=instance, run_config=parallel)
        assert not failed.success
        first = materialized(failed)
        assert "region" in first and "customer" not in first and "audit_log" not in first
        with psycopg.connect(target) as conn:
            assert conn.execute(ORPHANS).fetchone()[0] == 0  # what failed left no child without parent
        with psycopg.connect(target, autocommit=True) as conn:
            conn.execute("ALTER TABLE customer DROP CONSTRAINT no_seven")
        # What the UI's "Re-execute > From asset failure" selects: the assets the failed run did not
        # materialize (the failed table and the levels after it), with their checks.
        parent = instance.get_run_by_id(failed.run_id)
        retry_keys, _ = instance.run_domain.get_keys_to_reexecute(
            failed.run_id, instance.get_execution_plan_snapshot(parent.execution_plan_snapshot_id)
        )
        retried = dg.execute_job(
            job, instance=instance, run_config=parallel, asset_selection=sorted(retry_keys),
            tags={"dagster/parent_run_id": failed.run_id, "dagster/root_run_id": failed.run_id},
        )
        assert retried.success
        second = materialized(retried)
    assert {"customer", "audit_log"} <= second
    assert not (first & second)  # nothing that succeeded was copied again
    with psycopg.connect(target) as conn:
        assert conn.execute(ORPHANS).fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM customer").fetchone()[0] == 50


def test_the_run_log_gathers_the_copied_tables_into_a_line_at_most_every_interval():
    lines: list[str] = []
    log = SimpleNamespace(info=lines.append)
    stats = CopyStats(10, 2_000_000, 1.0, "binary")
    run_log = CopiedLines(log, every=3600)
    run_log.copied(TableRef("public", "a"), stats)
    run_log.copied(TableRef("public", "b"), stats)
    assert lines == []
    run_log.flush()
    run_log.flush()  # nothing new: no line
    assert lines == ["copied public.a: 10 rows, 2.0 MB, 2.0 MB/s, binary; public.b: 10 rows, 2.0 MB, 2.0 MB/s, binary "
                     "(visible on staging at COMMIT)"]
    CopiedLines(log, every=0).copied(TableRef("public", "c"), stats)  # a slow load: a line per table
    assert len(lines) == 2 and lines[1].startswith("copied public.c: 10 rows")
