"""Masked and subsetted refreshes of the MUVA demo, end to end through the command line."""

import psycopg
from psycopg import sql

from .support import cli

SALT = "demo-salt-Never-Shown-7"
# Source values that must appear nowhere on a masked staging.
PERSONAL = {
    "guest_reservations": ["guest_email", "document_number", "guest_name"],
    "guest_conversations": ["guest_phone"],
    "staff_users": ["email", "password_hash"],
    "whatsapp_messages": ["counterpart_number"],
    "whatsapp_phone_numbers": ["phone_number"],
    "tenant_compliance_credentials": ["username"],
    "prospective_sessions": ["session_token"],
}
TEXT_COLUMNS = """
SELECT c.table_name, c.column_name FROM information_schema.columns c
JOIN information_schema.tables t USING (table_schema, table_name)
WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'
  AND c.data_type IN ('text', 'character varying', 'jsonb', 'json', 'ARRAY')
"""


def source_sample(dsn: str) -> list[str]:
    found = []
    with psycopg.connect(dsn) as conn:
        for table, columns in PERSONAL.items():
            for column in columns:
                query = sql.SQL("SELECT {c} FROM {t} WHERE {c} IS NOT NULL ORDER BY 1 LIMIT 15").format(
                    c=sql.Identifier(column), t=sql.Identifier(table))
                found += [v for (v,) in conn.execute(query)]
    return found


def appearances(dsn: str, values: list[str]) -> list[str]:
    """Every text column of every table, searched for each value, also inside longer text."""
    patterns = ["%" + v.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%" for v in values]
    hits = []
    with psycopg.connect(dsn) as conn:
        for table, column in conn.execute(TEXT_COLUMNS).fetchall():
            query = sql.SQL("SELECT count(*) FROM {t} WHERE {c}::text LIKE ANY(%s)").format(
                t=sql.Identifier(table), c=sql.Identifier(column))
            if conn.execute(query, (patterns,)).fetchone()[0]:
                hits.append(f"{table}.{column}")
    return hits


def digest(dsn: str, table: str) -> str:
    with psycopg.connect(dsn) as conn:
        query = sql.SQL("SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM {} t").format(sql.Identifier(table))
        return conn.execute(query).fetchone()[0]


def test_a_masked_refresh_leaves_no_personal_value_on_staging(muva_env, monkeypatch):
    source, target = muva_env
    monkeypatch.setenv("MUVA_MASK_SALT", SALT)
    run = cli("refresh", "--policy", "demo", "--json")
    assert run.code == 0, run.err
    failed = [c for c in run.json["checks"] if not c["passed"] and c["severity"] == "ERROR"]
    assert failed == []  # unique and CHECK constraints held, no orphans, masking proven row by row
    masking = {c["asset"]: c for c in run.json["checks"] if c["check"] == "masking"}
    assert masking["guest_reservations"]["passed"] and masking["guest_reservations"]["metadata"]["unchanged.guest_email"] == 0
    # the demo policy covers the demo: no production value of a masked column elsewhere, no warning
    assert [c["summary"] for c in masking.values() if not c["passed"]] == []
    assert {c["metadata"]["leaks"] for c in masking.values()} == {0}
    sample = source_sample(source)
    assert len(sample) > 100
    assert appearances(target, sample) == []
    with psycopg.connect(source) as src, psycopg.connect(target) as dst:
        secrets = "SELECT encrypted_secret FROM tenant_compliance_credentials"
        assert not {s for (s,) in src.execute(secrets)} & {s for (s,) in dst.execute(secrets)}
        joined = "SELECT count(*) FROM guest_reservations r JOIN guest_conversations c ON c.id = r.conversation_id"
        assert src.execute(joined).fetchone() == dst.execute(joined).fetchone()
    first = digest(target, "guest_reservations")
    assert cli("refresh", "--policy", "demo").code == 0
    assert digest(target, "guest_reservations") == first  # the same salt masks alike, run after run
    assert SALT not in run.out + run.err


def test_masking_that_leaves_values_unchanged_fails_and_rolls_back(muva_env, monkeypatch, tmp_path):
    _, target = muva_env
    policy = tmp_path / "leaky.toml"
    policy.write_text('[mask]\n"public.staff_users.email" = { rule = "sql", expression = "lower({column})" }\n')
    before = digest(target, "staff_users")
    run = cli("refresh", "--policy", str(policy))
    assert run.code == 1
    assert "masked values equal the source's in email" in run.err and "rolled back" in run.err
    assert digest(target, "staff_users") == before


def test_columns_that_look_personal_without_a_rule_are_a_warning(muva_env, tmp_path, monkeypatch):
    monkeypatch.setenv("MUVA_MASK_SALT", SALT)
    policy = tmp_path / "partial.toml"
    # Password hashes appear nowhere else; staff names would (guests share them), which is a leak.
    policy.write_text('[mask]\n"public.staff_users.password_hash" = { rule = "fixed", value = "x" }\n')
    run = cli("refresh", "--policy", str(policy), "--json")
    assert run.code == 0, run.err
    staff = next(c for c in run.json["checks"] if c["asset"] == "staff_users" and c["check"] == "masking")
    assert not staff["passed"] and staff["severity"] == "WARN"
    assert "email" in staff["metadata"]["uncovered_personal_columns"]


def test_a_policy_with_keyed_rules_and_no_salt_is_refused(muva_env):
    run = cli("refresh", "--policy", "demo")
    lines = run.err.splitlines()
    assert run.code == 2 and len(lines) == 2 and "hashes values, which needs a secret salt" in lines[0]
    assert lines[1] == "fix: set MUVA_MASK_SALT (keep it secret: the masked values are only as safe as the salt)"


def test_a_one_tenant_subset_holds_only_that_tenants_rows(muva_env):
    source, target = muva_env
    run = cli("refresh", "--policy", "demo-tenant", "--json")
    assert run.code == 0, run.err
    assert all(c["passed"] or c["severity"] == "WARN" for c in run.json["checks"])  # no orphans, counts, content
    rows = {t["name"]: t["rows"] for t in run.json["tables"]}
    with psycopg.connect(source) as src, psycopg.connect(target) as dst:
        tenant = src.execute("SELECT id FROM tenant_registry WHERE subdomain = 'brisamar'").fetchone()[0]
        scoped = [t for (t,) in src.execute(
            "SELECT table_name FROM information_schema.columns WHERE table_schema = 'public' AND column_name = 'tenant_id'")]
        assert len(scoped) == 27
        for table in scoped:
            query = sql.SQL("SELECT count(*) FILTER (WHERE tenant_id = %(t)s), count(*) FROM {}").format(sql.Identifier(table))
            on_source, _ = src.execute(query, {"t": tenant}).fetchone()
            mine, total = dst.execute(query, {"t": tenant}).fetchone()
            assert mine == total == on_source == rows[table], table
        assert dst.execute("SELECT subdomain FROM tenant_registry").fetchall() == [("brisamar",)]
        assert rows["sire_countries"] == src.execute("SELECT count(*) FROM sire_countries").fetchone()[0]
