"""The MUVA demo, end to end: the computed plan against the seed's, and a full refresh via the CLI."""

import psycopg

from muva_refresh.checks import CHECKS

from .support import cli, table_fingerprints

# The hand-kept plan (../shared/seed/migration-order.md), level by level, as written there.
SEED_LEVELS = {
    0: ["tenant_registry", "sire_countries", "sire_document_types", "meal_plans", "room_types",
        "accommodation_types", "sire_content", "sire_cities"],
    1: ["staff_users", "settings", "accommodations", "guest_conversations", "prospective_sessions",
        "whatsapp_business_accounts", "compliance_submissions", "tenant_compliance_credentials",
        "motopress_accommodations", "airbnb_accommodations", "muva_content", "airbnb_sync_log",
        "motopress_sync_log", "sync_status_log", "calendar_events", "hotels", "tenant_subdomain_logs"],
    2: ["user_tenant_permissions", "accommodation_units", "chat_messages", "prospective_messages",
        "whatsapp_phone_numbers", "motopress_accommodation_units", "airbnb_calendar_sync_status"],
    3: ["guest_reservations", "whatsapp_messages", "whatsapp_message_templates",
        "accommodation_units_manual_chunks", "motopress_room_types", "airbnb_motopress_accommodation_comparison"],
    4: ["reservation_accommodations", "calendar_event_conflicts", "airbnb_motopress_unit_comparison"],
    "special case": ["code_embeddings"],
}
# Where the seed is wrong, and why (the README lists the same): the longest FK path decides.
CORRECTIONS = {
    "code_embeddings": 0,  # no FKs at all: a root, not a "special case"
    "whatsapp_message_templates": 2,  # its parents are whatsapp_business_accounts (1) and tenant_registry (0)
    "airbnb_motopress_accommodation_comparison": 2,  # accommodations (1), motopress_accommodations (1)
    "airbnb_motopress_unit_comparison": 3,  # accommodation_units (2), motopress_accommodation_units (2)
}


def test_the_computed_plan_is_the_seed_plan_with_its_mistakes_fixed(muva_env):
    plan = cli("plan", "--json").json
    computed = {t["name"].removeprefix("public."): t["level"] for t in plan["tables"]}
    expected = {name: level for level, names in SEED_LEVELS.items() for name in names}
    expected.update(CORRECTIONS)
    assert computed == expected
    assert len(computed) == 42 and plan["fk_count"] == 49 and plan["cycles"] == []
    per_level = [sum(1 for lvl in computed.values() if lvl == n) for n in range(5)]
    assert per_level == [9, 17, 9, 5, 2]  # the seed says 8, 17, 7, 6, "2" (listing 3), and 41 in all
    parents = {t["name"]: t["parents"] for t in plan["tables"]}
    assert parents["public.guest_reservations"] == [
        "public.accommodation_units", "public.guest_conversations", "public.tenant_registry"]


def test_a_full_refresh_makes_staging_equal_production_and_drops_stale_rows(muva_env):
    source, target = muva_env
    run = cli("refresh", "--json")
    assert run.code == 0, run.err
    report = run.json
    assert len(report["tables"]) == 42
    rows = {t["name"]: t["rows"] for t in report["tables"]}
    assert rows["code_embeddings"] == 4333 and rows["muva_content"] == 742  # no 1,000-row cap
    assert table_fingerprints(target) == table_fingerprints(source)
    errors = [c for c in report["checks"] if not c["passed"] and c["severity"] == "ERROR"]
    assert errors == []
    warnings = [(c["asset"], c["check"]) for c in report["checks"] if not c["passed"]]
    assert warnings == [("code_embeddings", "rls")]
    assert len(report["checks"]) == 42 * (len(CHECKS) - 1)  # masking runs only under a policy


def test_a_selected_refresh_copies_the_vectors_byte_for_byte(muva_env):
    source, target = muva_env
    assert cli("refresh", "--select", "code_embeddings").code == 0
    query = "SELECT md5(string_agg(embedding::text, '' ORDER BY id)) FROM code_embeddings"
    with psycopg.connect(source) as src, psycopg.connect(target) as dst:
        assert src.execute(query).fetchone() == dst.execute(query).fetchone()


def test_dropping_the_hnsw_index_on_staging_is_a_warning(muva_env):
    source, target = muva_env
    assert cli("refresh").code == 0
    with psycopg.connect(target, autocommit=True) as conn:
        name = conn.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'code_embeddings' AND indexdef LIKE '%hnsw%'"
        ).fetchone()[0]
        conn.execute(psycopg.sql.SQL("DROP INDEX {}").format(psycopg.sql.Identifier(name)))
    run = cli("validate", "--select", "code_embeddings", "--json")
    assert run.code == 0  # a WARN never fails the command
    matches = next(r for r in run.json if r["check"] == "matches_source")
    assert not matches["passed"] and matches["severity"] == "WARN" and name in matches["summary"]
