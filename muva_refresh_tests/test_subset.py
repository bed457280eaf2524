"""Subsets: a root's rows, the rows that reach them, and every row those reference."""

import psycopg
import pytest

from muva_refresh.catalog import TableRef
from muva_refresh.endpoint import Endpoint
from muva_refresh.errors import ConfigError
from muva_refresh.refresh import RefreshOptions, refresh
from muva_refresh.settings import TableFilter
from muva_refresh.shaping import shaping_for

from .support import checked_refresh, saved_catalog


def ids(dsn: str, table: str, column: str = "id") -> list:
    with psycopg.connect(dsn) as conn:
        return [v for (v,) in conn.execute(f"SELECT {column} FROM {table} ORDER BY 1")]


def policy(tmp_path, text: str) -> str:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    return str(path)


@pytest.fixture
def pair(pg):
    return (Endpoint("source", pg.database_from_sql("src", "subset.sql")),
            Endpoint("target", pg.database_from_sql("dst", "subset.sql")))


@pytest.mark.parametrize("workers", [1, 2])
def test_a_subset_keeps_what_reaches_the_root_and_what_that_references(pair, tmp_path, workers):
    source, target = pair
    catalog = saved_catalog(source.dsn, TableFilter())
    shaping = shaping_for(policy(tmp_path, '[subset]\n"public.tenant" = "name = \'one\'"\n'), catalog, None)
    report, outcomes = checked_refresh(source, target, RefreshOptions(workers=workers, shaping=shaping))
    assert ids(target.dsn, "guest") == [100, 101, 102]  # tenant one's guests
    assert ids(target.dsn, "note") == [1, 2]  # the notes that reach them
    assert ids(target.dsn, "unit") == [10, 20]  # u20 comes along: guest 101 stays there
    assert ids(target.dsn, "tenant") == [1, 2]  # and so does its tenant
    assert ids(target.dsn, "country", "code") == ["AR", "CO", "US"]  # reached by no root: whole
    assert len(ids(target.dsn, "audit", "at")) == 2
    failed = [o.summary for o in outcomes if o.fails_run]
    assert failed == []  # row counts against the subset's stream, no orphans, content of the stream
    assert report.tables[TableRef("public", "guest")].rows == 3


def test_an_excluded_table_sends_no_rows_unless_a_copied_table_references_it(pair, tmp_path):
    source, target = pair
    catalog = saved_catalog(source.dsn, TableFilter())
    shaping = shaping_for(policy(tmp_path, 'exclude = ["public.note", "public.audit"]\n'), catalog, None)
    refresh(source, target, RefreshOptions(shaping=shaping))
    assert ids(target.dsn, "note") == [] and ids(target.dsn, "audit", "at") == []
    assert ids(target.dsn, "guest") == [100, 101, 102, 200, 300]
    with pytest.raises(ConfigError, match=r"public\.guest is excluded, but public\.note \(guest_id\) references it"):
        shaping_for(policy(tmp_path, 'exclude = ["public.guest"]\n'), catalog, None)


def test_subset_roots_must_be_copied_tables_and_reach_no_self_reference(pg, tmp_path):
    twists = pg.database_from_sql("src", "twists.sql")
    catalog = saved_catalog(twists, TableFilter())
    with pytest.raises(ConfigError, match=r"subset root\(s\) public\.nowhere are not copied tables"):
        shaping_for(policy(tmp_path, '[subset]\n"public.nowhere" = "true"\n'), catalog, None)
    with pytest.raises(ConfigError, match=r"public\.customer references itself \(customer_referred_by_fkey\)"):
        shaping_for(policy(tmp_path, '[subset]\n"public.region" = "id = 1"\n'), catalog, None)


def test_a_masked_value_a_check_would_reject_is_refused_before_anything_is_touched(pg, tmp_path):
    source = Endpoint("source", pg.database_from_sql("src", "masking.sql"))
    target = Endpoint("target", pg.database_from_sql("dst", "masking.sql"))
    with psycopg.connect(target.dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM guests WHERE id > 1")
    catalog = saved_catalog(source.dsn, TableFilter())
    rule = '[mask]\n"public.guests.doc" = { rule = "sql", expression = "\'X\' || {column}" }\n'
    shaping = shaping_for(policy(tmp_path, rule), catalog, None)
    with pytest.raises(ConfigError, match=r"breaks CHECK constraints: public\.guests\.doc: .*doc_is_four_digits"):
        refresh(source, target, RefreshOptions(shaping=shaping))
    assert ids(target.dsn, "guests") == [1]
