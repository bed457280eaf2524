"""Dagster knows what changed: production's tables are observed, and each staging materialization
records the production version it copied and the path it took."""

import dagster as dg
import psycopg

from muva_refresh.cli import runner_for
from muva_refresh.definitions import OBSERVE_JOB
from muva_refresh.runs import Runner
from muva_refresh.settings import Settings
from muva_refresh.stream import DELTA, UNCHANGED

from .support import cli

PRODUCTION_CUSTOMER = dg.AssetKey(["production", "customer"])
CUSTOMER = dg.AssetKey(["customer"])


def observe(runner: Runner, instance: dg.DagsterInstance) -> dict[dg.AssetKey, str]:
    result = runner.defs.resolve_job_def(OBSERVE_JOB).execute_in_process(instance=instance)
    assert result.success
    return {e.event_specific_data.asset_observation.asset_key:
            e.event_specific_data.asset_observation.tags["dagster/data_version"]
            for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION"}


def recorded_input_version(instance: dg.DagsterInstance, key: dg.AssetKey, upstream: dg.AssetKey) -> str | None:
    tags = instance.get_latest_materialization_event(key).asset_materialization.tags
    return next((v for k, v in tags.items() if "input_data_version" in k and k.endswith(upstream.to_user_string())),
                None)


def test_a_staging_table_records_the_production_version_it_copied_and_falls_behind_when_production_moves(env):
    source, _ = env
    runner = runner_for(Settings.load())
    with dg.DagsterInstance.get() as instance:
        first = observe(runner, instance)
        run = runner.refresh(None, 1)
        assert run.success
        assert recorded_input_version(instance, CUSTOMER, PRODUCTION_CUSTOMER) == first[PRODUCTION_CUSTOMER]
        assert observe(runner, instance)[PRODUCTION_CUSTOMER] == first[PRODUCTION_CUSTOMER]  # nothing moved
        with psycopg.connect(source, autocommit=True) as conn:
            conn.execute("UPDATE customer SET name = name || '!' WHERE id = 3")
        moved = observe(runner, instance)
        assert moved[PRODUCTION_CUSTOMER] != first[PRODUCTION_CUSTOMER]  # the staging table is now unsynced
        assert moved[dg.AssetKey(["production", "region"])] == first[dg.AssetKey(["production", "region"])]


def test_each_materialization_says_which_path_it_took_and_carries_the_content_digest(env):
    source, _ = env
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute("UPDATE customer SET name = name || '!' WHERE id = 3")
    assert cli("refresh").code == 0
    with dg.DagsterInstance.get() as instance:
        customer = instance.get_latest_materialization_event(CUSTOMER).asset_materialization
        region = instance.get_latest_materialization_event(dg.AssetKey(["region"])).asset_materialization
    assert customer.metadata["path"].value == DELTA
    assert (customer.metadata["rows_deleted"].value, customer.metadata["rows_copied"].value) == (1, 1)
    assert region.metadata["path"].value == UNCHANGED and region.metadata["rows_copied"].value == 0
    assert customer.tags["dagster/data_version"]
    assert cli("refresh").code == 0
    with dg.DagsterInstance.get() as instance:
        again = instance.get_latest_materialization_event(CUSTOMER).asset_materialization
    assert again.metadata["path"].value == UNCHANGED
    assert again.tags["dagster/data_version"] == customer.tags["dagster/data_version"]
