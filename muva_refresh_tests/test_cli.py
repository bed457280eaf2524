"""The command line, end to end through Dagster on a real instance and real databases."""

import io
import json

import psycopg
import pytest

from muva_refresh.cli import Printer, main

SECRET = "pw-Never-Shown-42"  # trust auth ignores it, so it rides along in every DSN


class Run:
    def __init__(self, code: int, out: str, err: str):
        self.code, self.out, self.err = code, out, err

    @property
    def json(self):
        return json.loads(self.out)


def cli(*argv: str) -> Run:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), Printer(out, err))
    return Run(code, out.getvalue(), err.getvalue())


@pytest.fixture
def env(pg, tmp_path, monkeypatch):
    source = pg.database_from_sql("src", "twists.sql")
    target = pg.database_from_sql("dst", "twists.sql")
    monkeypatch.setenv("MUVA_SOURCE_DSN", psycopg.conninfo.make_conninfo(source, password=SECRET))
    monkeypatch.setenv("MUVA_TARGET_DSN", psycopg.conninfo.make_conninfo(target, password=SECRET))
    monkeypatch.setenv("MUVA_STATE_PATH", str(tmp_path / "state" / "catalog.json"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.delenv("MUVA_SCHEMAS", raising=False)
    assert cli("introspect").code == 0
    return source, target


def test_plan_prints_levels_cycles_and_totals(env):
    text = cli("plan").out
    assert "Level 0 (4 tables)" in text and "  item -> person, shelf" in text
    assert "Cycle (loads as one unit): person <-> team" in text
    assert "Self-references (ignored for levels): customer" in text
    assert "Totals: 7 tables, 7 foreign keys, 3 levels" in text
    plan = cli("plan", "--json").json
    assert {"name": "public.audit_log", "level": 2, "parents": ["public.customer"]} in plan["tables"]
    assert plan["cycles"] == [["public.person", "public.team"]] and plan["fk_count"] == 7


def test_refresh_prints_each_table_and_exits_zero(env):
    run = cli("refresh")
    assert run.code == 0, run.err
    assert "customer" in run.out and "Refreshed 7 tables" in run.out
    assert "no_orphans" in run.out and "WARN rls: public.person: RLS is off" in run.out


def test_refresh_json_has_tables_checks_and_seconds(env):
    report = cli("refresh", "--json").json
    assert {t["name"]: t["rows"] for t in report["tables"]}["customer"] == 50
    assert report["seconds"] > 0
    check = next(c for c in report["checks"] if c["asset"] == "customer" and c["check"] == "row_count")
    assert check["passed"] and check["severity"] == "ERROR" and check["metadata"]["source_rows"] == 50


def test_bad_selections_exit_2_and_name_the_tables(env):
    unknown = cli("refresh", "--select", "customer", "nope")
    assert unknown.code == 2 and "unknown table(s): public.nope" in unknown.err
    orphaning = cli("refresh", "--select", "customer")
    assert orphaning.code == 2 and "public.audit_log" in orphaning.err


def test_refusing_the_source_as_target_exits_2(env, monkeypatch):
    source, _ = env
    monkeypatch.setenv("MUVA_TARGET_DSN", source)
    run = cli("refresh")
    assert run.code == 2 and "the target is the source" in run.err


def test_validate_exits_1_on_a_planted_fault_and_names_the_table(env):
    _, target = env
    assert cli("refresh").code == 0
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute("ALTER TABLE customer DISABLE ROW LEVEL SECURITY")
    run = cli("validate")
    assert run.code == 1
    assert "FAIL rls: public.customer: RLS enabled/forced is True/True on the source, False/True on the target" in run.out
    rows = cli("validate", "--select", "customer", "--json").json
    assert {r["check"] for r in rows} == {"row_count", "no_orphans", "rls", "unique_indexes", "indexes", "content", "sequences"}
    assert next(r for r in rows if r["check"] == "rls")["passed"] is False
    assert next(r for r in rows if r["check"] == "row_count")["metadata"]["basis"].startswith("live")


def test_warnings_alone_exit_zero(env):
    assert cli("refresh").code == 0
    run = cli("validate", "--select", "person")
    assert run.code == 0 and "warn" in run.out


def test_history_shows_both_refreshes_in_order(env):
    first = cli("refresh", "--json").json["run_id"]
    second = cli("refresh", "--json").json["run_id"]
    entries = cli("history", "customer", "--check", "row_count", "--json").json
    assert [e["run_id"] for e in entries] == [first, second]
    assert all(e["passed"] and e["metadata"]["basis"] == "snapshot" for e in entries)
    text = cli("history", "customer", "--check", "row_count").out
    assert text.count("row_count") == 2 and first[:8] in text
    assert cli("history", "--check", "nope").code == 2


def test_no_password_in_output_errors_or_the_dagster_event_log(env, tmp_path, monkeypatch):
    outputs = [cli("refresh"), cli("validate"), cli("history", "--json")]
    monkeypatch.setenv("MUVA_TARGET_DSN", f"postgresql://muva:{SECRET}@/nowhere?host=/nonexistent-dir")
    outputs.append(cli("refresh"))
    assert outputs[-1].code == 2 and "cannot connect to the target" in outputs[-1].err
    for run in outputs:
        assert SECRET not in run.out and SECRET not in run.err
    event_log = b"".join(p.read_bytes() for p in (tmp_path / "dagster_home").rglob("*") if p.is_file())
    assert SECRET.encode() not in event_log
