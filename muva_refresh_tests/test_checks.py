"""Every check is proven by planting the fault it exists to catch, then running it live."""

import psycopg
import pytest

from muva_refresh.catalog import TableRef
from muva_refresh.checks import CHECKS, ERROR, WARN, CheckOutcome, CheckSettings, validate_live
from muva_refresh.endpoint import Endpoint
from muva_refresh.errors import BlockingCheckError
from muva_refresh.refresh import RefreshOptions, refresh_events
from muva_refresh.settings import TableFilter

from .support import checked_refresh

ALL_CHECKS = [c.name for c in CHECKS]
T = {name: TableRef("public", name) for name in ("region", "customer", "person", "team", "shelf", "item", "audit_log")}


@pytest.fixture
def refreshed(pg):
    source = Endpoint("source", pg.database_from_sql("src", "twists.sql"))
    target = Endpoint("target", pg.database_from_sql("dst", "twists.sql"))
    _, outcomes = checked_refresh(source, target)
    return source, target, outcomes


def on_target(target: Endpoint, *statements: str) -> None:
    with psycopg.connect(target.dsn, autocommit=True) as conn:
        with conn.transaction():
            conn.execute("SET LOCAL session_replication_role = replica")  # plant past FKs and triggers
            for statement in statements:
                conn.execute(statement)


def run_checks(source: Endpoint, target: Endpoint) -> dict[tuple[str, str], object]:
    outcomes = validate_live(source, target, {ref: ALL_CHECKS for ref in T.values()})
    return {(o.table.name, o.check): o for o in outcomes}


def failures(outcomes: dict) -> set[tuple[str, str]]:
    """What did not pass, leaving out the expected warnings for the fixture's tables without RLS."""
    return {key for key, o in outcomes.items() if not o.passed and not (key[1] == "rls" and o.severity == WARN)}


def test_right_after_a_refresh_every_check_passes_but_the_rls_warning(refreshed):
    _, _, outcomes = refreshed
    assert len(outcomes) == len(T) * (len(CHECKS) - 1)  # masking runs only under a policy
    assert "masking" not in {o.check for o in outcomes}
    not_passed = {(o.table.name, o.check, o.severity) for o in outcomes if not o.passed}
    assert not_passed == {("person", "rls", WARN), ("team", "rls", WARN), ("shelf", "rls", WARN),
                          ("item", "rls", WARN), ("audit_log", "rls", WARN)}
    assert all(o.metadata["basis"] == "snapshot" for o in outcomes if o.check in ("row_count", "matches_source"))


def test_a_live_run_says_it_compared_the_current_databases(refreshed):
    source, target, _ = refreshed
    outcomes = run_checks(source, target)
    assert failures(outcomes) == set()
    assert outcomes[("region", "row_count")].metadata["basis"].startswith("live")


def test_no_orphans_fails_when_a_parent_row_is_deleted(refreshed):
    source, target, _ = refreshed
    on_target(target, "DELETE FROM region WHERE id = 1")
    outcomes = run_checks(source, target)
    orphans = outcomes[("customer", "no_orphans")]
    assert not orphans.passed and orphans.severity == ERROR
    assert "25 orphans in public.customer" in orphans.summary
    assert orphans.metadata["orphans.customer_region_id_fkey"] == 25
    assert orphans.metadata["orphans.customer_referred_by_fkey"] == 0  # counted in the same scan
    assert len(orphans.metadata["orphan_sample"]) == 10
    assert set(orphans.metadata["orphan_sample"]["key"]) == {"region_id=1"}
    # the deleted row itself shows as the parent's count and content gap, nothing else fails
    assert failures(outcomes) == {("customer", "no_orphans"), ("region", "row_count"), ("region", "matches_source")}


def test_no_orphans_tells_apart_the_fks_of_one_table(refreshed):
    """customer has two FKs, counted in one scan: only the self-reference loses its parent here."""
    source, target, _ = refreshed
    on_target(target, "UPDATE customer SET referred_by = referred_by + 100000 WHERE id IN (5, 6, 7)")
    outcomes = run_checks(source, target)
    orphans = outcomes[("customer", "no_orphans")]
    assert not orphans.passed
    assert orphans.metadata["orphans.customer_referred_by_fkey"] == 3
    assert orphans.metadata["orphans.customer_region_id_fkey"] == 0
    assert set(orphans.metadata["orphan_sample"]["fk"]) == {"customer_referred_by_fkey"}


def test_no_orphans_covers_composite_keys(refreshed):
    source, target, _ = refreshed
    on_target(target, "DELETE FROM shelf WHERE aisle = 2 AND slot = 3")
    outcomes = run_checks(source, target)
    orphans = outcomes[("item", "no_orphans")]
    assert not orphans.passed and orphans.metadata["orphans"] > 0
    assert set(orphans.metadata["orphan_sample"]["key"]) == {"aisle=2, slot=3"}
    assert failures(outcomes) == {("item", "no_orphans"), ("shelf", "row_count"), ("shelf", "matches_source")}


def test_an_extra_target_row_fails_row_count_and_content(refreshed):
    source, target, _ = refreshed
    on_target(target, "INSERT INTO region VALUES (99, 'only in staging')")
    outcomes = run_checks(source, target)
    assert failures(outcomes) == {("region", "row_count"), ("region", "matches_source")}
    assert outcomes[("region", "row_count")].metadata["target_rows"] == 3
    assert "(+1)" in outcomes[("region", "row_count")].summary


def test_a_changed_value_fails_content_only(refreshed):
    source, target, _ = refreshed
    on_target(target, "UPDATE person SET tags = '{changed}' WHERE id = 10")
    outcomes = run_checks(source, target)
    assert failures(outcomes) == {("person", "matches_source")}
    outcome = outcomes[("person", "matches_source")]
    assert outcome.severity == ERROR and "content differs from the source" in outcome.summary
    assert outcome.metadata["target_digest"] != outcome.metadata["source_digest"]
    assert outcomes[("person", "row_count")].passed


@pytest.mark.parametrize("fault", [
    "ALTER TABLE customer DISABLE ROW LEVEL SECURITY",
    "ALTER TABLE customer NO FORCE ROW LEVEL SECURITY",
    "DROP POLICY customer_insert ON customer",
    "ALTER POLICY customer_by_region ON customer USING (true)",
])
def test_rls_fails_when_the_target_loses_or_changes_protection(refreshed, fault):
    source, target, _ = refreshed
    on_target(target, fault)
    outcomes = run_checks(source, target)
    assert failures(outcomes) == {("customer", "rls")}
    assert outcomes[("customer", "rls")].severity == ERROR


def test_a_table_without_rls_on_either_side_warns(refreshed):
    source, target, _ = refreshed
    warning = run_checks(source, target)[("person", "rls")]
    assert not warning.passed and warning.severity == WARN
    assert "RLS is off on the source and the target" in warning.summary


def test_a_dropped_unique_index_fails_unique_indexes(refreshed):
    source, target, _ = refreshed
    on_target(target, 'DROP INDEX "Customer name per region"')
    outcomes = run_checks(source, target)
    assert failures(outcomes) == {("customer", "unique_indexes")}
    assert "Customer name per region" in outcomes[("customer", "unique_indexes")].summary


def test_a_renamed_but_equal_index_still_counts(refreshed):
    source, target, _ = refreshed
    on_target(target, 'ALTER INDEX "Customer name per region" RENAME TO renamed')
    assert failures(run_checks(source, target)) == set()


def test_a_dropped_plain_index_is_a_warning(refreshed):
    source, target, _ = refreshed
    on_target(target, "DROP INDEX person_doc_gin")
    outcome = run_checks(source, target)[("person", "matches_source")]
    assert not outcome.passed and outcome.severity == WARN
    assert "other indexes missing on the target: person_doc_gin" in outcome.summary
    assert "content hash" not in outcome.summary and outcome.metadata["missing_other_indexes"] == 1


def test_a_missing_index_beside_changed_content_is_an_error(refreshed):
    source, target, _ = refreshed
    on_target(target, "DROP INDEX person_doc_gin", "UPDATE person SET tags = '{changed}' WHERE id = 10")
    outcome = run_checks(source, target)[("person", "matches_source")]
    assert not outcome.passed and outcome.severity == ERROR
    assert "content differs" in outcome.summary and "person_doc_gin" in outcome.summary


def test_a_sequence_behind_its_column_fails(refreshed):
    source, target, _ = refreshed
    on_target(target, "SELECT setval(pg_get_serial_sequence('customer', 'id'), 10)")
    outcomes = run_checks(source, target)
    assert failures(outcomes) == {("customer", "matches_source")}
    outcome = outcomes[("customer", "matches_source")]
    assert outcome.severity == ERROR and "would hand out 11, but id already reaches 50" in outcome.summary
    assert outcome.metadata["max.id"] == 50


def test_a_blocking_check_failure_rolls_the_whole_refresh_back(pg):
    source = Endpoint("source", pg.database_from_sql("src", "twists.sql"))
    target = Endpoint("target", pg.database_from_sql("dst", "twists.sql"))
    with psycopg.connect(target.dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO region VALUES (9, 'stale')")
        # A trigger that fires even in replica mode and silently drops rows: COPY succeeds, rows go missing.
        conn.execute("CREATE FUNCTION drop_odd() RETURNS trigger LANGUAGE plpgsql AS "
                     "$$ BEGIN IF NEW.id % 2 = 1 THEN RETURN NULL; END IF; RETURN NEW; END $$")
        conn.execute("CREATE TRIGGER drop_odd BEFORE INSERT ON customer FOR EACH ROW EXECUTE FUNCTION drop_odd()")
        conn.execute("ALTER TABLE customer ENABLE ALWAYS TRIGGER drop_odd")
    outcomes = []
    with pytest.raises(BlockingCheckError, match=r"public\.customer: 25 rows on the target, 50 on the source.*rolled back"):
        for event in refresh_events(source, target, RefreshOptions(full=True)):
            if isinstance(event, CheckOutcome):
                outcomes.append(event)
    failed = [o for o in outcomes if not o.passed]
    # the dropped rows were also referenced through customer.referred_by, a self-reference, and by
    # audit_log: every table is checked before the rollback, so each one named
    assert {(o.table.name, o.check) for o in failed} == {("customer", "row_count"), ("customer", "no_orphans"),
                                                         ("audit_log", "no_orphans")}
    with psycopg.connect(target.dsn) as conn:
        assert conn.execute("SELECT name FROM region WHERE id = 9").fetchall() == [("stale",)]


def test_a_table_without_a_key_with_duplicates_and_json_is_hashed_in_any_order(pg):
    source = Endpoint("source", pg.database_from_sql("src", "keyless.sql"))
    target = Endpoint("target", pg.database_from_sql("dst", "keyless.sql"))
    report, outcomes = checked_refresh(source, target)
    assert all(o.passed for o in outcomes if o.check != "rls")
    log = TableRef("public", "event_log")
    assert report.tables[log].format == "binary" and report.tables[log].rows == 64  # no key, no sort
    # The same rows in another physical order: still equal.
    on_target(target, "CREATE TEMP TABLE keep AS SELECT * FROM event_log",
              "DELETE FROM event_log", "INSERT INTO event_log SELECT * FROM keep ORDER BY random()")
    assert next(o for o in validate_live(source, target, {log: ["matches_source"]})).passed
    # One duplicate fewer and one more of another row: same count, different content.
    on_target(target, "DELETE FROM event_log WHERE ctid = (SELECT min(ctid) FROM event_log WHERE payload::text = '{\"a\": 1}')",
              "INSERT INTO event_log VALUES ('2025-02-01', 'same', '{\"a\": 2}')")
    outcomes = {o.check: o for o in validate_live(source, target, {log: ["row_count", "matches_source"]})}
    assert outcomes["row_count"].passed and not outcomes["matches_source"].passed


def test_rls_passes_where_no_table_of_the_schema_uses_it_unless_it_is_expected(pg):
    source = Endpoint("source", pg.database_from_sql("src", "twists.sql", "hostile.sql"))
    target = Endpoint("target", pg.database_from_sql("dst", "twists.sql", "hostile.sql"))
    billing = TableRef("Billing Ops", "Customer")
    schemas = TableFilter(("public", "Billing Ops"))
    plain = next(o for o in validate_live(source, target, {billing: ["rls"]}, schemas))
    assert plain.passed and plain.metadata["rls_in_schema"] == "not used in schema Billing Ops"
    expected = next(o for o in validate_live(source, target, {billing: ["rls"]}, schemas, CheckSettings(rls_expected=("Billing Ops.Cust*",))))
    assert not expected.passed and expected.severity == WARN
    assert "MUVA_RLS_EXPECTED lists it (Billing Ops.Cust*)" in expected.summary
    neighbour = next(o for o in validate_live(source, target, {T["person"]: ["rls"]}, schemas))
    assert neighbour.severity == WARN and "2 other tables in schema public use it" in neighbour.summary


EXACT = """
CREATE COLLATION nocase (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
CREATE TABLE pair (id int PRIMARY KEY, a int, b int, s text, n text COLLATE nocase, x numeric, t timestamptz, u uuid);
INSERT INTO pair VALUES (1, 1, 2, '', 'Abc', 1.0, '2025-03-30 01:30:00.5+00', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'),
                        (2, 3, 4, NULL, 'x', 2, 'infinity', NULL);
"""


@pytest.mark.parametrize("fault", [
    "UPDATE pair SET a = b, b = a WHERE id = 1",  # two columns swap values
    "UPDATE pair SET s = NULL WHERE id = 1",  # an empty string becomes NULL
    "UPDATE pair SET n = 'abc' WHERE id = 1",  # equal under its case-insensitive collation
    "UPDATE pair SET x = 1.00 WHERE id = 1",  # equal as a number
    "UPDATE pair SET t = t + interval '1 microsecond' WHERE id = 1",  # hashed by value, not text
    "UPDATE pair SET t = '-infinity' WHERE id = 2",
    "UPDATE pair SET u = 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12' WHERE id = 1",
])
def test_the_row_digest_tells_apart_what_equality_alone_would_not(pg15, fault):
    """On the machine's PostgreSQL: the embedded build has no ICU for a nondeterministic collation."""
    source = Endpoint("source", pg15.create_database("esrc"))
    target = Endpoint("target", pg15.create_database("edst"))
    for endpoint in (source, target):
        with psycopg.connect(endpoint.dsn, autocommit=True) as conn:
            conn.execute(EXACT)
    pair = TableRef("public", "pair")
    assert next(o for o in validate_live(source, target, {pair: ["matches_source"]})).passed
    on_target(target, fault)
    outcome = next(o for o in validate_live(source, target, {pair: ["matches_source"]}))
    assert not outcome.passed and "content differs" in outcome.summary
