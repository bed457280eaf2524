"""Materialized views: refreshed after the tables they read, in the load transaction, and as assets."""

import dagster as dg
import psycopg
import pytest

from muva_refresh.catalog import TableRef
from muva_refresh.definitions import REFRESH_JOB, build_definitions
from muva_refresh.endpoint import Endpoint
from muva_refresh.errors import SchemaDriftError
from muva_refresh.refresh import RefreshOptions, refresh
from muva_refresh.settings import TableFilter

from .support import cli, count, saved_catalog

SHOP_TOTALS = "SELECT name, sum(amount) AS total, count(*) AS sales FROM sale_named GROUP BY name"
TOP_SHOP = f"SELECT name, total FROM ({SHOP_TOTALS}) t WHERE total = (SELECT max(total) FROM ({SHOP_TOTALS}) u)"
SOURCE_ROWS = """
INSERT INTO shop VALUES (1, 'north'), (2, 'south'), (3, 'east');
INSERT INTO sale SELECT i, 1 + i % 3, i * 1.5 FROM generate_series(1, 90) i;
REFRESH MATERIALIZED VIEW shop_totals;
REFRESH MATERIALIZED VIEW top_shop;
"""


def same_rows(conn: psycopg.Connection, view: str, query: str) -> bool:
    return conn.execute(f"SELECT count(*) FROM (({query}) EXCEPT ALL (SELECT * FROM {view})) a").fetchone()[0] == 0 \
        and conn.execute(f"SELECT count(*) FROM ((SELECT * FROM {view}) EXCEPT ALL ({query})) b").fetchone()[0] == 0


@pytest.fixture
def pair(pg):
    source = pg.database_from_sql("src", "matviews.sql")
    target = pg.database_from_sql("dst", "matviews.sql")
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute(SOURCE_ROWS)
    with psycopg.connect(target, autocommit=True) as conn:  # stale staging; its views never populated
        conn.execute("INSERT INTO shop VALUES (9, 'stale'); INSERT INTO sale VALUES (1, 9, 100)")
    return Endpoint("source", source), Endpoint("target", target)


def test_the_catalog_reads_what_each_view_reads_through_views(pair):
    source, _ = pair
    views = {str(v.ref): sorted(map(str, v.reads)) for v in saved_catalog(source.dsn, TableFilter()).materialized_views}
    assert views == {"public.shop_totals": ["public.sale", "public.shop"], "public.top_shop": ["public.shop_totals"]}


@pytest.mark.parametrize("workers", [1, 2])
def test_views_are_refreshed_after_their_tables_in_order(pair, workers):
    source, target = pair
    report = refresh(source, target, RefreshOptions(workers=workers))
    assert list(report.views) == [TableRef("public", "shop_totals"), TableRef("public", "top_shop")]
    assert report.views[TableRef("public", "shop_totals")].rows == 3
    with psycopg.connect(target.dsn) as conn:
        assert same_rows(conn, "shop_totals", SHOP_TOTALS) and same_rows(conn, "top_shop", TOP_SHOP)
        assert conn.execute("SELECT name FROM top_shop").fetchall() == [("north",)]


def test_a_view_missing_on_the_target_is_refused_before_anything_is_touched(pair):
    source, target = pair
    with psycopg.connect(target.dsn, autocommit=True) as conn:
        conn.execute("DROP MATERIALIZED VIEW top_shop")
    with pytest.raises(SchemaDriftError, match=r"materialized view public\.top_shop is missing on the target"):
        refresh(source, target)
    assert count(target.dsn, "shop", "name = 'stale'") == 1


def test_views_are_assets_downstream_of_their_tables_and_the_plan_lists_them(pair, tmp_path, monkeypatch):
    source, target = pair
    monkeypatch.setenv("MUVA_SOURCE_DSN", source.dsn)
    monkeypatch.setenv("MUVA_TARGET_DSN", target.dsn)
    monkeypatch.setenv("MUVA_STATE_PATH", str(tmp_path / "catalog.json"))
    assert cli("introspect").code == 0
    assert "  top_shop -> shop_totals" in cli("plan").out
    defs = build_definitions(saved_catalog(source.dsn, TableFilter(), tmp_path / "catalog.json"))
    specs = {s.key.to_user_string(): s for s in defs.resolve_all_asset_specs()}
    assert {d.asset_key.to_user_string() for d in specs["shop_totals"].deps} == {"sale", "shop"}
    assert [d.asset_key.to_user_string() for d in specs["top_shop"].deps] == ["shop_totals"]
    instance = dg.DagsterInstance.ephemeral()
    result = defs.resolve_job_def(REFRESH_JOB).execute_in_process(instance=instance)
    assert result.success
    metadata = {e.asset_key.to_user_string(): e.step_materialization_data.materialization.metadata
                for e in result.get_asset_materialization_events()}
    assert metadata["shop_totals"]["dagster/row_count"].value == 3 and "seconds" in metadata["top_shop"]
    # The run log names each table as it is copied, before the materializations come at COMMIT.
    logged = [entry.user_message for entry in instance.all_logs(result.run_id)]
    copied_at = next(i for i, m in enumerate(logged) if m.startswith("copied ") and "public.sale: 90 rows" in m)
    assert copied_at < min(i for i, entry in enumerate(instance.all_logs(result.run_id))
                           if entry.dagster_event and entry.dagster_event.event_type_value == "ASSET_MATERIALIZATION")
