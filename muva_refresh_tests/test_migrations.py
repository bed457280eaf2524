"""Migrations on one side only: a type change, a dropped column, a renamed table. The CLI refuses
before writing anything and the deploy sensor waits, both naming what differs; on the CLI's SQLite
instance and on dagster-postgres."""

import dagster as dg
import psycopg
import pytest

from muva_refresh.catalog import Catalog
from muva_refresh.definitions import build_definitions
from muva_refresh.sensors import SENSOR_NAME
from muva_refresh.settings import Settings

from .support import cli, rows_and_xmins

MARKER = """
CREATE SCHEMA supabase_migrations;
CREATE TABLE supabase_migrations.schema_migrations (version text PRIMARY KEY, name text);
INSERT INTO supabase_migrations.schema_migrations VALUES ('20251201000000', 'deploy');
"""

# side, migration, what the refusal and the tick name
ONE_SIDED = {
    "type changed on production": ("source", "ALTER TABLE shelf ALTER COLUMN label TYPE varchar(40)",
                                   "column public.shelf.label is character varying(40) on the source, text on the target"),
    "type changed on staging": ("target", "ALTER TABLE region ALTER COLUMN name TYPE varchar(80)",
                                "column public.region.name is text on the source, character varying(80) on the target"),
    "column dropped on staging": ("target", "ALTER TABLE shelf DROP COLUMN label",
                                  "column public.shelf.label (text) is missing on the target"),
    "column dropped on production": ("source", "ALTER TABLE audit_log DROP COLUMN at",
                                     "column public.audit_log.at (timestamp with time zone) exists only on the "
                                     "target and is NOT NULL without a default"),
    "table renamed on staging": ("target", "ALTER TABLE shelf RENAME TO rack",
                                 "table public.shelf is missing on the target"),
    "table renamed on production": ("source", "ALTER TABLE shelf RENAME TO rack",
                                    "table public.rack is missing on the target"),
}


@pytest.fixture(params=["sqlite", "postgres"])
def instance_kind(request, env):
    if request.param == "postgres":
        request.getfixturevalue("postgres_instance")
    return request.param


def deploy_sensor_tick() -> dg.SensorResult:
    """A tick of the sensor the code location builds from the saved state, on DAGSTER_HOME's instance."""
    settings = Settings.load()
    definitions = build_definitions(Catalog.load(settings.state_path), settings)
    with dg.DagsterInstance.get() as instance:
        context = dg.build_sensor_context(instance=instance, definitions=definitions, resources=definitions.resources,
                                          cursor="20251101000000")
        return definitions.resolve_sensor_def(SENSOR_NAME).evaluate_tick(context)


@pytest.mark.parametrize("case", list(ONE_SIDED))
def test_a_migration_on_one_side_only_is_refused_and_waited_on_by_name(env, instance_kind, case):
    source, target = env
    side, migration, named = ONE_SIDED[case]
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute(MARKER)
    with psycopg.connect(env[0 if side == "source" else 1], autocommit=True) as conn:
        conn.execute(migration)
    before = rows_and_xmins(target)

    first = deploy_sensor_tick()
    if case == "table renamed on production":  # a graph change: the state follows, then staging is waited for
        assert first.run_requests == [] and "new table public.rack; table public.shelf is gone" in first.skip_message

    refused = cli("refresh")
    assert refused.code == 2 and refused.out == ""
    assert "staging lacks a migration production has" in refused.err and named in refused.err
    assert "nothing was touched" in refused.err
    assert rows_and_xmins(target) == before  # not one row written, nor rewritten

    waiting = deploy_sensor_tick()
    assert waiting.run_requests == [] and waiting.cursor == "20251101000000"
    assert f"deploy 20251201000000 is waiting: staging lacks a migration production has: {named}" \
        in waiting.skip_message
