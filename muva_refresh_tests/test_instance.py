"""The repository's dagster.yaml: history in PostgreSQL, one refresh at a time."""

import dagster as dg
import psycopg

from .support import cli


def test_refreshes_and_check_history_live_in_postgres(postgres_instance):
    first = cli("refresh", "--json")
    assert first.code == 0, first.err
    second = cli("refresh", "--json")
    entries = cli("history", "customer", "--check", "no_orphans", "--json").json
    assert [e["run_id"] for e in entries] == [first.json["run_id"], second.json["run_id"]]
    with psycopg.connect(postgres_instance) as conn:
        stored = conn.execute("SELECT count(*) FROM runs WHERE run_id = ANY(%s)",
                              ([first.json["run_id"], second.json["run_id"]],)).fetchone()[0]
    assert stored == 2


def test_the_instance_limits_the_refresh_pool_to_one_run(postgres_instance):
    with dg.DagsterInstance.get() as instance:
        assert type(instance.event_log_storage).__name__ == "PooledPostgresEventLogStorage"
        settings = instance.get_concurrency_config()
        assert settings.pool_config.default_pool_limit == 1
        assert settings.pool_config.pool_granularity.value == "run"
