"""The repository's dagster.yaml: history in PostgreSQL, one refresh at a time."""

import shutil
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from .support import cli

REPO_INSTANCE = Path(__file__).resolve().parents[1] / "dagster.yaml"


@pytest.fixture
def postgres_instance(env, pg15, tmp_path, monkeypatch):
    """DAGSTER_HOME holding the repo's dagster.yaml, storage in a fresh database on the second server."""
    dsn = pg15.create_database("dagster_history")
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    home = tmp_path / "pg_home"
    home.mkdir()
    shutil.copy(REPO_INSTANCE, home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("DAGSTER_PG_HOST", info.get("host", "127.0.0.1"))
    monkeypatch.setenv("DAGSTER_PG_PORT", str(info.get("port", 5432)))
    monkeypatch.setenv("DAGSTER_PG_USER", info.get("user", "postgres"))
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", info.get("password", ""))
    monkeypatch.setenv("DAGSTER_PG_DB", info["dbname"])
    return dsn


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
