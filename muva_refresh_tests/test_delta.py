"""The default refresh compares each table with staging and copies only the difference."""

from pathlib import Path

import psycopg
import pytest

from muva_refresh.catalog import TableRef
from muva_refresh.checks import CheckOutcome
from muva_refresh.endpoint import Endpoint
from muva_refresh.load import TableCopied
from muva_refresh.refresh import Committed, RefreshOptions, refresh, refresh_events
from muva_refresh.settings import TableFilter
from muva_refresh.shaping import shaping_for
from muva_refresh.stream import DELTA, FULL, UNCHANGED

from .support import checked_refresh, saved_catalog, table_fingerprints

ALL = TableFilter(("public",))
ACCOUNT, READING, MEMBERSHIP, PAYMENT, LOOSE, TAG = (
    TableRef("public", n) for n in ("account", "reading", "membership", "payment", "loose", "tag"))
# On production: updates, deletes of a parent and its children, inserts, a key change, in every key type.
PRODUCTION_CHANGES = """
UPDATE account SET note = 'changed' WHERE email IN ('user1@example.com', 'user2@example.com');
UPDATE account SET note = NULL WHERE email = 'user4@example.com';
DELETE FROM membership WHERE account_id = md5('200')::uuid;
DELETE FROM reading WHERE account_id = md5('200')::uuid;
DELETE FROM payment WHERE account_id = md5('200')::uuid;
DELETE FROM account WHERE id = md5('200')::uuid;
INSERT INTO account VALUES (md5('201')::uuid, 'user201@example.com', 'new', NULL);
INSERT INTO reading VALUES ('2030-01-01 00:00+00', 7, md5('201')::uuid);
UPDATE tag SET name = 'gray' WHERE name = 'spare';
UPDATE membership SET tag = 'blue' WHERE account_id = md5('1')::uuid;
UPDATE membership SET since = since + 1 WHERE account_id = md5('5')::uuid;
UPDATE payment SET amount = amount + 1 WHERE id = 7;
UPDATE payment SET month = '2025-02-03' WHERE id = 8;
"""
# On staging: a tester's own edits, which the refresh repairs.
STAGING_EDITS = """
UPDATE reading SET value = -1 WHERE at = '2025-01-01 00:10+00';
INSERT INTO tag VALUES ('tester', 'fff');
"""


@pytest.fixture
def pair(pg):
    return (Endpoint("source", pg.database_from_sql("src", "delta.sql")),
            Endpoint("target", pg.database_from_sql("dst", "delta.sql")))


def execute(dsn: str, statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(statements)


def row_versions(dsn: str, table: str) -> list[tuple]:
    """Each row's physical place and creating transaction: equal when no row was written."""
    with psycopg.connect(dsn) as conn:
        return conn.execute(f"SELECT ctid::text, xmin::text FROM {table} ORDER BY 1").fetchall()


def paths(report) -> dict[str, str]:
    return {ref.name: stats.path for ref, stats in report.tables.items()}


def test_changed_rows_are_deleted_and_copied_again_and_the_rest_is_left_alone(pair):
    source, target = pair
    execute(source.dsn, PRODUCTION_CHANGES)
    execute(target.dsn, STAGING_EDITS)
    loose_before = row_versions(target.dsn, "loose")
    report, outcomes = checked_refresh(source, target)
    assert table_fingerprints(target.dsn, ALL) == table_fingerprints(source.dsn, ALL)
    assert [o.summary for o in outcomes if not o.passed] == []  # matches_source proves every whole table
    assert paths(report) == {"account": DELTA, "tag": DELTA, "reading": DELTA, "membership": DELTA,
                             "payment": DELTA, "loose": FULL}
    account = report.tables[ACCOUNT]
    assert (account.deleted_rows, account.copied, account.rows) == (4, 4, 200)  # 3 changed, 1 gone, 1 new
    assert report.tables[TAG].deleted_rows == 2 and report.tables[TAG].copied == 1  # spare, tester; gray
    assert (report.tables[MEMBERSHIP].deleted_rows, report.tables[MEMBERSHIP].copied) == (3, 2)  # 200's too
    assert report.tables[LOOSE].reason == "it has no primary key or unique index of NOT NULL columns"
    assert row_versions(target.dsn, "loose") != loose_before  # copied whole, as it says
    assert report.tables[READING].copied == 2  # the new reading and the tester's edit undone


def test_with_nothing_changed_no_row_is_written_and_no_view_is_refreshed(pair):
    source, target = pair
    before = {t: row_versions(target.dsn, t) for t in ("account", "reading", "payment")}
    report, outcomes = checked_refresh(source, target)
    assert set(paths(report).values()) == {UNCHANGED, FULL}  # the keyless table is the FULL one
    assert {t: row_versions(target.dsn, t) for t in before} == before
    assert report.views == {}
    assert all(o.passed for o in outcomes)
    assert report.tables[ACCOUNT].source_digest == report.digests.digest(ACCOUNT)


def relation_locks(dsn: str, table: str) -> set[str]:
    """The locks the refresh's own target session holds on `table`, asked from another session."""
    with psycopg.connect(dsn) as conn:
        return {mode for (mode,) in conn.execute(
            "SELECT l.mode FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
            "WHERE a.application_name = 'muva_refresh target' AND l.relation = %s::regclass", (table,))}


def test_readers_of_unchanged_and_changed_tables_are_never_locked_out(pair):
    source, target = pair
    execute(source.dsn, "UPDATE account SET note = 'x' WHERE email = 'user1@example.com'")
    seen = {}
    for event in refresh_events(source, target, RefreshOptions(table_filter=ALL)):
        if isinstance(event, TableCopied) and event.ref == PAYMENT:
            seen = {t: relation_locks(target.dsn, t) for t in ("account", "reading", "tag")}
            with psycopg.connect(target.dsn, autocommit=True) as reader:
                reader.execute("SET lock_timeout = '100ms'")
                for table in seen:
                    reader.execute(f"SELECT count(*) FROM {table}").fetchone()  # raises if it had to wait
    # Only ACCESS EXCLUSIVE keeps a reader out; the load holds it on none of them.
    assert "RowExclusiveLock" in seen["account"]  # changed: row-level writes
    assert "ShareLock" in seen["tag"] and "RowExclusiveLock" not in seen["tag"]  # unchanged: held
    assert all("AccessExclusiveLock" not in modes for modes in seen.values())


def test_every_compared_table_is_held_before_the_first_is_compared(pair):
    """In one statement: an autovacuum that a table's lock waits on is cancelled once and then
    skips the held tables, rather than moving on to the next table the load will lock."""
    source, target = pair
    held = None
    for event in refresh_events(source, target, RefreshOptions(table_filter=ALL)):
        if isinstance(event, TableCopied) and held is None:
            held = {t: relation_locks(target.dsn, t) for t in ("account", "tag", "reading", "membership", "payment")}
    assert all("ShareLock" in modes for modes in held.values()), held


def test_an_empty_staging_is_copied_whole_without_comparing(pair):
    source, target = pair
    execute(target.dsn, "TRUNCATE account, tag, reading, membership, payment, loose")
    report = refresh(source, target)
    assert {s.path for s in report.tables.values()} == {FULL}
    assert {s.reason for ref, s in report.tables.items() if ref != LOOSE} == {"staging held no rows"}
    assert all(s.compared_rows == 0 for s in report.tables.values())
    assert table_fingerprints(target.dsn, ALL) == table_fingerprints(source.dsn, ALL)


def test_a_key_that_may_repeat_on_staging_makes_the_table_go_whole(pair):
    source, target = pair
    execute(target.dsn, "ALTER TABLE tag DROP CONSTRAINT tag_pkey CASCADE; INSERT INTO tag VALUES ('red', 'dup')")
    report, outcomes = checked_refresh(source, target)
    assert report.tables[TAG].path == FULL and "staging has no unique index on (name)" in report.tables[TAG].reason
    with psycopg.connect(target.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM tag WHERE name = 'red'").fetchone()[0] == 1


def test_when_most_rows_changed_the_table_goes_whole(pair):
    source, target = pair
    execute(source.dsn, "UPDATE reading SET value = value + 1 WHERE extract(minute FROM at)::int % 2 = 0")
    report, outcomes = checked_refresh(source, target)
    assert report.tables[READING].path == FULL and "more than 25% of its rows changed" in report.tables[READING].reason
    assert report.tables[READING].deleted_rows == 500
    assert table_fingerprints(target.dsn, ALL) == table_fingerprints(source.dsn, ALL)
    assert all(o.passed for o in outcomes)


def test_a_full_refresh_copies_every_table_whole_when_asked(pair):
    source, target = pair
    report = refresh(source, target, RefreshOptions(full=True))
    assert {s.reason for s in report.tables.values()} == {"a full refresh was asked for"}


def test_a_delta_refresh_stopped_midway_leaves_staging_as_it_was(pair):
    source, target = pair
    execute(source.dsn, PRODUCTION_CHANGES)
    before = table_fingerprints(target.dsn, ALL)
    with pytest.raises(KeyboardInterrupt):
        for event in refresh_events(source, target):
            if isinstance(event, TableCopied) and event.stats.path == DELTA:
                raise KeyboardInterrupt
    assert table_fingerprints(target.dsn, ALL) == before


@pytest.mark.parametrize("direction", ["15 to 18", "18 to 15"])
def test_a_delta_across_major_versions_hashes_alike_on_both(pg, pg15, direction):
    older = Endpoint("older", pg15.database_from_sql("d15", "delta.sql"))
    newer = Endpoint("newer", pg.database_from_sql("d18", "delta.sql"))
    source, target = (older, newer) if direction == "15 to 18" else (newer, older)
    source, target = Endpoint("source", source.dsn), Endpoint("target", target.dsn)
    unchanged = refresh(source, target)
    assert {ref.name for ref, s in unchanged.tables.items() if s.path != UNCHANGED} == {"loose"}
    execute(source.dsn, PRODUCTION_CHANGES)
    report, outcomes = checked_refresh(source, target)
    assert report.tables[ACCOUNT].path == DELTA
    assert table_fingerprints(target.dsn, ALL) == table_fingerprints(source.dsn, ALL)
    assert all(o.passed for o in outcomes if o.check == "matches_source")


def policy(tmp_path: Path, text: str) -> str:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    return str(path)


def test_masked_columns_compare_as_staging_holds_them(pair, tmp_path):
    source, target = pair
    spec = policy(tmp_path, '[mask]\n"public.account.note" = "hash"\n')
    catalog = saved_catalog(source.dsn, ALL)

    def masked(salt: str):
        return checked_refresh(source, target, RefreshOptions(shaping=shaping_for(spec, catalog, salt)))

    first, _ = masked("salt one")
    assert first.tables[ACCOUNT].path == FULL  # every non-NULL note changes: most of the table
    again, outcomes = masked("salt one")
    assert again.tables[ACCOUNT].path == UNCHANGED  # the same salt gives the same masked values
    assert [o.summary for o in outcomes if o.fails_run] == []
    new_salt, _ = masked("salt two")
    assert new_salt.tables[ACCOUNT].path == FULL


def test_a_subset_whose_root_now_matches_new_rows_copies_them(pg, tmp_path):
    source = Endpoint("source", pg.database_from_sql("src", "subset.sql"))
    target = Endpoint("target", pg.database_from_sql("dst", "subset.sql"))
    catalog = saved_catalog(source.dsn, TableFilter())
    options = RefreshOptions(shaping=shaping_for(policy(tmp_path, '[subset]\n"public.tenant" = "name = \'one\'"\n'),
                                                 catalog, None))
    refresh(source, target, options)
    with psycopg.connect(source.dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO guest (id, tenant_id, unit_id) SELECT 103, 1, unit_id FROM guest WHERE id = 100")
    report, outcomes = checked_refresh(source, target, options)
    assert report.tables[TableRef("public", "guest")].path == DELTA
    assert report.tables[TableRef("public", "guest")].copied == 1
    with psycopg.connect(target.dsn) as conn:
        assert conn.execute("SELECT id FROM guest ORDER BY id").fetchall()[-1] == (103,)
    assert all(o.passed for o in outcomes)


def test_the_committed_report_carries_each_tables_path(pair):
    source, target = pair
    execute(source.dsn, "UPDATE tag SET color = 'ff0' WHERE name = 'red'")
    committed = next(e for e in refresh_events(source, target) if isinstance(e, Committed))
    assert committed.report.tables[TAG].path == DELTA and committed.report.tables[ACCOUNT].path == UNCHANGED


def test_writers_of_a_compared_table_wait_for_the_commit_so_its_held_digest_is_the_committed_one(pair):
    source, target = pair
    refused = []
    outcomes = []
    for event in refresh_events(source, target):
        if isinstance(event, TableCopied) and event.ref == PAYMENT and not refused:
            with psycopg.connect(target.dsn, autocommit=True) as writer:
                writer.execute("SET lock_timeout = '200ms'")
                with pytest.raises(psycopg.errors.LockNotAvailable):
                    writer.execute("UPDATE account SET note = 'tester' WHERE email = 'user1@example.com'")
                refused.append(True)
                assert writer.execute("SELECT count(*) FROM account").fetchone()[0] == 200  # readers do not wait
        elif isinstance(event, CheckOutcome) and event.table == ACCOUNT and event.check == "matches_source":
            outcomes.append(event)
    assert refused
    assert outcomes[0].passed and outcomes[0].metadata["target_hashed"].startswith("hashed in the load")
