"""What the catalog reads from pg_catalog, which tables the filter admits, and the saved state."""

import psycopg
import pytest

from muva_refresh.catalog import Catalog, TableRef, read_catalog
from muva_refresh.definitions import defs
from muva_refresh.errors import ConfigError
from muva_refresh.graph import make_plan
from muva_refresh.settings import TableFilter
from muva_refresh.translator import TableTranslator

from .support import cli, saved_catalog


def refs(catalog: Catalog) -> set[str]:
    return {str(r) for r in catalog.refs}


@pytest.fixture(scope="module")
def mixed(pg) -> str:
    return pg.database_from_sql("cat", "twists.sql", "hostile.sql", "index_keys.sql")


def test_the_filter_takes_schemas_then_include_then_exclude_patterns(mixed):
    everything = saved_catalog(mixed, TableFilter(("public", "Billing Ops")))
    assert 'Billing Ops.Invoice "Line".v2' in refs(everything) and "public.member" in refs(everything)
    public_only = saved_catalog(mixed, TableFilter(("public",)))
    assert not any(r.startswith("Billing Ops.") for r in refs(public_only))
    included = saved_catalog(mixed, TableFilter(("public", "Billing Ops"), include=("Billing Ops.*", "public.region")))
    assert refs(included) == {"Billing Ops.Customer", 'Billing Ops.Invoice "Line".v2', "public.region"}
    excluded = saved_catalog(mixed, TableFilter(("public",), exclude=("public.audit_*", "public.Plain*")))
    assert refs(excluded) == refs(public_only) - {"public.audit_log", "public.Plain Notes"}


def test_an_fk_to_a_filtered_out_table_is_kept_as_external(mixed):
    catalog = saved_catalog(mixed, TableFilter(("public",)))
    external = [str(fk) for fk in catalog.external_foreign_keys]
    assert external == ['public.Plain Notes(Line No) -> Billing Ops.Invoice "Line".v2(Line No)']
    assert catalog.foreign_keys_of(TableRef("public", "Plain Notes")) == catalog.external_foreign_keys


def test_index_key_columns_leave_out_include_columns_and_keep_expressions(mixed):
    member = saved_catalog(mixed, TableFilter(("public",))).table(TableRef("public", "member"))
    keys = {i.name: i.key_columns for i in member.indexes}
    assert keys == {"member_pkey": ("id",), "member_email": ("email",),
                    "member_nick_lower": ("lower(nick)",), "member_name_email": ("name", "email")}
    columns = {c.name: c for c in TableTranslator().column_schema(member).columns}
    assert columns["email"].constraints.unique and columns["id"].constraints.unique
    assert not columns["name"].constraints.unique  # only INCLUDEd in member_email
    assert not columns["nick"].constraints.unique  # unique through an expression, not as itself


def test_the_state_round_trips_with_its_filter(mixed, tmp_path):
    table_filter = TableFilter(("public", "Billing Ops"), include=("*",), exclude=("public.audit_*",))
    with psycopg.connect(mixed) as conn:
        live = read_catalog(conn, table_filter)
    live.save(tmp_path / "state.json")
    loaded = Catalog.load(tmp_path / "state.json", table_filter)
    assert loaded == live and loaded.table_filter == table_filter
    assert loaded.fingerprint() == live.fingerprint()
    assert make_plan(loaded).level == make_plan(live).level


def test_a_state_read_with_another_filter_is_refused_with_the_way_out(mixed, tmp_path):
    saved_catalog(mixed, TableFilter(("public",)), tmp_path / "state.json")
    with pytest.raises(ConfigError, match=r"was read with a different table filter \(schemas public; "
                                          r"configured now: schemas public; include public\.region\)"
                                          r"\nfix: run `muva-refresh introspect`"):
        Catalog.load(tmp_path / "state.json", TableFilter(("public",), include=("public.region",)))


def test_changing_the_include_filter_after_introspect_asks_for_introspect_not_a_drift_report(env, monkeypatch):
    monkeypatch.setenv("MUVA_INCLUDE", "public.region,public.customer")
    for argv in (("refresh",), ("validate",), ("plan", "--from-state"), ("history",)):
        run = cli(*argv)
        assert run.code == 2, argv
        assert "was read with a different table filter" in run.err and "run `muva-refresh introspect`" in run.err
        assert "schema changed" not in run.err
    with pytest.raises(ConfigError, match="different table filter"):
        defs()
    assert cli("introspect").code == 0
    assert [t["name"] for t in cli("plan", "--from-state", "--json").json["tables"]] == ["public.region", "public.customer"]
