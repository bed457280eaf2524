"""The command line, end to end through Dagster on a real instance and real databases."""

import gc

import psycopg

from muva_refresh import cli as cli_module
from muva_refresh.guards import REFRESH_LOCK_KEY

from .support import SECRET, cli


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
    # masking runs only under a policy
    assert {r["check"] for r in rows} == {"row_count", "no_orphans", "rls", "unique_indexes", "matches_source"}
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


def test_a_failed_blocking_check_exits_1_and_names_the_table(env):
    _, target = env
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute("CREATE FUNCTION drop_all() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$")
        conn.execute("CREATE TRIGGER drop_all BEFORE INSERT ON region FOR EACH ROW EXECUTE FUNCTION drop_all()")
        conn.execute("ALTER TABLE region ENABLE ALWAYS TRIGGER drop_all")
    run = cli("refresh", "--full")  # the rows pass through the trigger only when copied
    assert run.code == 1
    assert "public.region: 0 rows on the target, 2 on the source" in run.err and "rolled back" in run.err


def test_refusals_before_any_write_exit_2(env, monkeypatch):
    source, target = env
    with psycopg.connect(target) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (REFRESH_LOCK_KEY,))
        locked = cli("refresh")
    assert locked.code == 2 and "another refresh is running against the target" in locked.err
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute("ALTER TABLE region ADD COLUMN added_by_deploy text")
    drifted = cli("refresh")
    assert drifted.code == 2 and "column public.region.added_by_deploy (text) is missing on the target" in drifted.err
    assert cli("demo", "up", "--scale", "0").code == 2
    monkeypatch.setenv("MUVA_STATE_PATH", "/nonexistent/catalog.json")
    missing = cli("refresh")
    assert missing.code == 2 and "run `muva-refresh introspect`" in missing.err


def test_the_command_exits_with_mains_code_and_leaves_its_objects_to_the_os(monkeypatch):
    """Python's exit would collect every object a refresh left, several times over; frozen, it skips them."""
    monkeypatch.setattr(cli_module, "main", lambda: 3)
    threshold = gc.get_threshold()
    try:
        assert cli_module.command() == 3
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == cli_module.GC_THRESHOLDS
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
