"""The copy engine, without Dagster: equality after a refresh, every refusal, atomicity."""


import psycopg
import pytest

from muva_refresh import indexes, stream
from muva_refresh.catalog import TableRef
from muva_refresh.checks import validate_live
from muva_refresh.endpoint import Endpoint
from muva_refresh.errors import (
    ConcurrentRefreshError,
    ConfigError,
    CopyError,
    SchemaDriftError,
    SelectionError,
    UnsafeTargetError,
)
from muva_refresh.guards import REFRESH_LOCK_KEY
from muva_refresh.load import TableCopied, TableStreaming
from muva_refresh.refresh import RefreshOptions, refresh, refresh_events

from .support import (
    HOSTILE,
    TWISTS,
    count,
    plant_copy_failure,
    role_without_bypassrls,
    saved_catalog,
    table_fingerprints,
)


@pytest.fixture
def pair(pg):
    """A source and a target with the twists schema; the target holds stale rows."""
    source = pg.database_from_sql("src", "twists.sql")
    target = pg.database_from_sql("dst", "twists.sql")
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute("INSERT INTO region VALUES (9, 'stale region')")
        conn.execute("INSERT INTO customer (region_id, name) VALUES (9, 'stale customer')")
    return Endpoint("source", source), Endpoint("target", target)

WHOLE = RefreshOptions(full=True)  # every table copied, whatever it holds


def test_refresh_makes_every_table_equal_and_removes_stale_rows(pair):
    source, target = pair
    report = refresh(source, target)
    assert table_fingerprints(target.dsn) == table_fingerprints(source.dsn)
    assert count(target.dsn, "region", "name = 'stale region'") == 0
    assert report.tables[TableRef("public", "customer")].rows == 50
    assert report.tables[TableRef("public", "person")].format == "binary"  # an enum array, on 18
    assert report.tables[TableRef("public", "region")].format == "binary"
    assert report.snapshot_id


def test_sequences_follow_the_source_and_triggers_stay_enabled(pair):
    source, target = pair
    refresh(source, target)
    with psycopg.connect(target.dsn, autocommit=True) as conn:
        new_id = conn.execute("INSERT INTO customer (name) VALUES ('new') RETURNING id").fetchone()[0]
        assert new_id > 50
        item_id = conn.execute("INSERT INTO item (aisle, slot) VALUES (1, 1) RETURNING id").fetchone()[0]
        assert item_id > 41
        disabled = conn.execute("SELECT count(*) FROM pg_trigger WHERE tgenabled <> 'O'").fetchone()[0]
        assert disabled == 0
        assert conn.execute("SHOW session_replication_role").fetchone()[0] == "origin"


def test_hostile_identifiers_are_quoted_everywhere(pg):
    source = Endpoint("source", pg.database_from_sql("src", "hostile.sql"))
    target = Endpoint("target", pg.database_from_sql("dst", "hostile.sql"))
    report = refresh(source, target, RefreshOptions(table_filter=HOSTILE))
    assert report.tables[TableRef("Billing Ops", 'Invoice "Line".v2')].rows == 25
    assert table_fingerprints(target.dsn, HOSTILE) == table_fingerprints(source.dsn, HOSTILE)
    with psycopg.connect(target.dsn, autocommit=True) as conn:
        line_no = conn.execute(
            'INSERT INTO "Billing Ops"."Invoice ""Line"".v2" ("Customer ID") VALUES (1) RETURNING "Line No"'
        ).fetchone()[0]
    assert line_no > 25


def test_a_table_selection_copies_only_the_selection(pair):
    source, target = pair
    selected = [TableRef("public", n) for n in ("customer", "audit_log")]
    report = refresh(source, target, RefreshOptions(selected=tuple(selected)))
    assert set(report.tables) == set(selected)
    assert count(target.dsn, "region", "name = 'stale region'") == 1  # outside the selection: untouched


def test_refuses_the_same_database_even_spelled_differently(pair):
    source, _ = pair
    respelled = psycopg.conninfo.make_conninfo(source.dsn, application_name="other spelling")
    for dsn in (source.dsn, respelled):
        with pytest.raises(UnsafeTargetError, match="target is the source"):
            refresh(source, Endpoint("target", dsn))


def test_a_selection_that_would_orphan_children_is_refused_before_anything_is_touched(pair):
    source, target = pair
    with pytest.raises(SelectionError, match=r"public\.audit_log") as err:
        refresh(source, target, RefreshOptions(selected=(TableRef("public", "customer"),)))
    assert "public.customer" not in str(err.value).split("add ")[1]
    assert count(target.dsn, "customer", "name = 'stale customer'") == 1


def test_a_missing_target_table_is_named_and_nothing_is_truncated(pair):
    source, target = pair
    with psycopg.connect(target.dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE audit_log")
    with pytest.raises(SchemaDriftError, match=r"table public\.audit_log is missing on the target"):
        refresh(source, target)
    assert count(target.dsn, "region", "name = 'stale region'") == 1


def test_a_column_mismatch_names_the_table_and_column_and_nothing_is_truncated(pair):
    source, target = pair
    with psycopg.connect(target.dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE shelf ALTER COLUMN label TYPE varchar(40)")
        conn.execute("ALTER TABLE region ADD COLUMN code text NOT NULL DEFAULT 'x'")  # has a default: fine
    with pytest.raises(SchemaDriftError, match=r"staging lacks a migration production has: column public\.shelf\.label is text on the source, "
                                             r"character varying\(40\) on the target"):
        refresh(source, target)
    assert count(target.dsn, "region", "name = 'stale region'") == 1


def test_a_bad_dsn_fails_with_a_clear_message_and_no_password(pair):
    source, target = pair
    bad = Endpoint("target", "postgresql://muva:Sup3rSecret@/nope?host=/nonexistent-socket-dir")
    with pytest.raises(ConfigError) as err:
        refresh(source, bad)
    assert "cannot connect to the target" in str(err.value)
    assert "Sup3rSecret" not in str(err.value) and "Sup3rSecret" not in repr(bad) and "Sup3rSecret" not in str(bad)
    with pytest.raises(ConfigError, match="set MUVA_SOURCE_DSN"):
        refresh(Endpoint("source", ""), target)


def test_the_source_connection_cannot_write(pair):
    source, _ = pair
    conn = source.connect(read_only=True)
    try:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("INSERT INTO region VALUES (77, 'written through the source')")
        conn.rollback()
        conn.autocommit = True
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("DELETE FROM region")
    finally:
        conn.close()


def test_a_failed_copy_rolls_back_and_leaves_the_target_as_it_was(pair):
    source, target = pair
    before = table_fingerprints(target.dsn)
    plant_copy_failure(target.dsn)
    with pytest.raises(CopyError, match=r"public\.customer.*rolled back"):
        refresh(source, target, WHOLE)
    assert table_fingerprints(target.dsn) == before


def test_a_parallel_failure_leaves_no_table_without_its_parents(pair):
    source, target = pair
    plant_copy_failure(target.dsn)
    with pytest.raises(CopyError, match=r"1 table\(s\) failed, first public\.customer: .*every loaded table has its parents"):
        refresh(source, target, RefreshOptions(workers=2))
    assert count(target.dsn, "audit_log") == 0  # its parent failed, so it was not loaded
    assert count(target.dsn, "region") == 2


def test_parallel_mode_produces_the_same_target(pair):
    source, target = pair
    report = refresh(source, target, RefreshOptions(workers=3))
    assert not report.failed and not report.atomic
    assert table_fingerprints(target.dsn) == table_fingerprints(source.dsn)


@pytest.mark.parametrize("direction", ["15 to 18", "18 to 15"])
def test_cross_version_refresh_uses_text_and_matches(pg, pg15, direction):
    old = pg15.database_from_sql("x15", "twists.sql")
    new = pg.database_from_sql("x18", "twists.sql")
    source, target = (old, new) if direction == "15 to 18" else (new, old)
    report = refresh(Endpoint("source", source), Endpoint("target", target))
    assert {s.format for s in report.tables.values()} == {"text"}
    assert report.source_version // 10000 != report.target_version // 10000
    assert table_fingerprints(target) == table_fingerprints(source)
    # Both major versions hash rows alike (timestamps by value among them), so the content matches.
    checked = validate_live(Endpoint("source", source), Endpoint("target", target),
                            {ref: ["matches_source"] for ref in report.tables})
    assert [o.summary for o in checked if not o.passed] == []


USER_TYPES = """
CREATE TYPE mood AS ENUM ('happy', 'sad', 'curious');
CREATE TYPE address AS (street text, moods mood[]);
CREATE TABLE visit (id int PRIMARY KEY, moods mood[], at address, trail address[]);
"""


@pytest.mark.parametrize("server", ["pg", "pg15"])
def test_arrays_and_composites_of_user_types_go_binary_where_the_oids_differ(server, request):
    """Binary values carry the element and field type OIDs, which differ between the databases."""
    pg = request.getfixturevalue(server)
    source, target = pg.create_database("usrc"), pg.create_database("udst")
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute("CREATE TYPE filler AS ENUM ('x'); CREATE TYPE filler_row AS (a int)")  # other OIDs
        conn.execute(USER_TYPES)
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute(USER_TYPES)
        conn.execute("INSERT INTO visit VALUES (1, '{happy,curious}', ROW('Main St', '{sad}'), "
                     "ARRAY[ROW('A', '{happy}'), ROW(NULL, NULL)]::address[]), (2, '{}', NULL, '{}'), (3, NULL, NULL, NULL)")
        oid = "SELECT 'mood'::regtype::oid"
        assert conn.execute(oid).fetchone() != psycopg.connect(target).execute(oid).fetchone()
    report = refresh(Endpoint("source", source), Endpoint("target", target))
    assert report.tables[TableRef("public", "visit")].format == "binary"
    assert table_fingerprints(target) == table_fingerprints(source)


def test_a_second_refresh_of_the_same_target_is_refused_while_the_first_runs(pair):
    source, target = pair
    refused = []
    for event in refresh_events(source, target):
        if isinstance(event, TableCopied) and not refused:
            with pytest.raises(ConcurrentRefreshError, match="another refresh is running against the target") as err:
                refresh(source, target)
            refused.append(str(err.value))
    assert refused and "muva_refresh target" in refused[0]  # names the holder's application
    assert table_fingerprints(target.dsn) == table_fingerprints(source.dsn)
    assert refresh(source, target).tables  # the lock went with the first refresh's connection


def test_a_held_refresh_lock_refuses_before_anything_is_touched(pair):
    source, target = pair
    with psycopg.connect(target.dsn) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (REFRESH_LOCK_KEY,))
        with pytest.raises(ConcurrentRefreshError):
            refresh(source, target)
    assert count(target.dsn, "region", "name = 'stale region'") == 1


def test_a_refresh_interrupted_midway_leaves_the_target_as_it_was(pair):
    """A cancelled run stops the step's process mid-load: nothing was committed, so nothing changed."""
    source, target = pair
    before = table_fingerprints(target.dsn)

    seen = []
    with pytest.raises(KeyboardInterrupt):
        for event in refresh_events(source, target):
            if isinstance(event, TableCopied):
                seen.append(event.ref)
                if len(seen) == 2:
                    raise KeyboardInterrupt
    assert table_fingerprints(target.dsn) == before
    refresh(source, target)  # and the target's lock was released with the interrupted connection


def test_a_source_role_that_cannot_bypass_rls_is_refused_before_anything_is_touched(pair):
    """Through RLS, COPY would read only the rows the policies show, and every count would agree."""
    source, target = pair
    with role_without_bypassrls(source.dsn) as restricted_dsn:
        role = psycopg.conninfo.conninfo_to_dict(restricted_dsn)["user"]
        restricted = Endpoint("source", restricted_dsn)
        with pytest.raises(ConfigError, match=rf"role '{role}' on the source cannot bypass row-level security.*public\.customer"):
            refresh(restricted, target)
        assert count(target.dsn, "region", "name = 'stale region'") == 1


@pytest.mark.parametrize("across_versions", [False, True])
def test_a_copy_reports_its_progress_while_it_streams(pair, pg15, monkeypatch, across_versions):
    source, target = pair
    if across_versions:  # text format
        source = Endpoint("source", pg15.database_from_sql("x15", "twists.sql"))
    monkeypatch.setattr(stream, "TICK_SECONDS", 0)  # every block ticks, as a large table's would
    ticks = [e for e in refresh_events(source, target, WHOLE) if isinstance(e, TableStreaming)]
    by_table = {e.ref.name: (e.bytes, e.rows) for e in ticks}
    if across_versions:
        assert by_table["customer"][1] == 50 and by_table["customer"][0] > 0  # text: rows are counted
    else:
        assert by_table["customer"][1] is None and by_table["customer"][0] > 0  # binary: bytes only


def test_rows_are_gathered_into_writes_of_a_bounded_size():
    """COPY TO sends a message per row; the target gets them in writes of WRITE_BYTES, the rest at the end."""
    written: list[bytes] = []
    gathered = stream.Gathered(lambda chunk: written.append(bytes(chunk)))
    row = b"x" * 1000
    for _ in range(300):
        gathered.write(memoryview(row))
    assert len(written) == 300_000 // stream.WRITE_BYTES
    assert all(len(w) < stream.WRITE_BYTES + len(row) for w in written)
    gathered.flush()
    gathered.flush()  # nothing left: no empty write
    assert b"".join(written) == row * 300 and len(written) == 300_000 // stream.WRITE_BYTES + 1



TOASTED = """
CREATE TABLE doc (id int PRIMARY KEY, tag int NOT NULL, body text NOT NULL);
CREATE INDEX doc_tag ON doc (tag);
CREATE TABLE noted (id int PRIMARY KEY, tag int NOT NULL, body text NOT NULL) WITH (parallel_workers = 0);
CREATE INDEX noted_tag ON noted (tag);
"""
# On the target, outside the copied schema: each CREATE INDEX notes its table's options as it runs.
NOTE_BUILDS = """
CREATE SCHEMA audit;
CREATE TABLE audit.builds (tbl name, options text[]);
CREATE FUNCTION audit.note_build() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO audit.builds
  SELECT c.relname, c.reloptions FROM pg_event_trigger_ddl_commands() AS d
  JOIN pg_index AS i ON i.indexrelid = d.objid JOIN pg_class AS c ON c.oid = i.indrelid;
END $$;
CREATE EVENT TRIGGER note_build ON ddl_command_end WHEN TAG IN ('CREATE INDEX') EXECUTE FUNCTION audit.note_build();
ALTER EVENT TRIGGER note_build ENABLE ALWAYS;  -- the load runs as a replica
"""


def test_a_table_whose_rows_live_in_toast_rebuilds_its_indexes_in_parallel_and_keeps_its_options(pg):
    """PostgreSQL judges a parallel build by the heap, which TOAST keeps small: the load asks for
    the server's workers through the table's parallel_workers, for the rebuild only. A table
    that names its own setting keeps it in charge."""
    source, target = pg.create_database("src"), pg.create_database("dst")
    for dsn in (source, target):
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(TOASTED)
    with psycopg.connect(source, autocommit=True) as conn:
        for table in ("doc", "noted"):  # 9 MB each as COPY sends it, a few pages of heap
            conn.execute(f"INSERT INTO {table} SELECT g, g % 7, repeat('x', 4000) FROM generate_series(1, 2300) g")
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute(NOTE_BUILDS)
        workers = int(conn.execute("SHOW max_parallel_maintenance_workers").fetchone()[0])
    assert workers > 0

    report = refresh(Endpoint("source", source), Endpoint("target", target))

    assert report.tables[TableRef("public", "doc")].bytes >= indexes.PARALLEL_REBUILD_BYTES
    with psycopg.connect(target, autocommit=True) as conn:
        builds = conn.execute("SELECT tbl, options FROM audit.builds ORDER BY tbl").fetchall()
        options = dict(conn.execute("SELECT relname, reloptions FROM pg_class WHERE relname IN ('doc', 'noted')"))
    assert builds == [("doc", [f"parallel_workers={workers}"]), ("noted", ["parallel_workers=0"])]
    assert options == {"doc": None, "noted": ["parallel_workers=0"]}


def migrate_both(pair, *statements: str) -> None:
    for endpoint in pair:
        with psycopg.connect(endpoint.dsn, autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement)


def test_a_refresh_of_every_table_on_an_older_state_takes_productions_graph(pair):
    source, target = pair
    state = saved_catalog(source.dsn, TWISTS)
    migrate_both(pair, "CREATE TABLE visit (id int PRIMARY KEY, region_id int REFERENCES region (id))",
                 "ALTER TABLE region ADD COLUMN code text")
    with psycopg.connect(source.dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO visit VALUES (1, 1), (2, 2)")
        conn.execute("UPDATE region SET code = upper(name)")
    report = refresh(source, target, RefreshOptions.resolve(state, None, None, None))
    assert TableRef("public", "visit") in report.tables
    assert table_fingerprints(target.dsn) == table_fingerprints(source.dsn)


def test_a_selection_on_an_older_state_keeps_its_tables_and_refuses_one_that_is_gone(pair):
    source, target = pair
    state = saved_catalog(source.dsn, TWISTS)
    migrate_both(pair, "CREATE TABLE visit (id int PRIMARY KEY, region_id int REFERENCES region (id))")
    chain = [TableRef("public", t) for t in ("region", "customer", "audit_log")]
    # region's new child is not in the selection: refused by name, as any selection that would orphan it
    with pytest.raises(SelectionError, match=r"public\.visit"):
        refresh(source, target, RefreshOptions.resolve(state, chain, None, None))
    with psycopg.connect(source.dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE visit")
        conn.execute("ALTER TABLE audit_log RENAME TO audit_entries")
    with pytest.raises(SchemaDriftError, match=r"public\.audit_log is selected but gone from the source"):
        refresh(source, target, RefreshOptions.resolve(state, chain, None, None))
    assert count(target.dsn, "region", "name = 'stale region'") == 1


def test_a_policy_rule_masks_a_column_added_after_the_state_was_saved(pair, tmp_path):
    source, target = pair
    migrate_both(pair, "ALTER TABLE customer ADD COLUMN email text")
    state = saved_catalog(source.dsn, TWISTS)
    migrate_both(pair, "ALTER TABLE person ADD COLUMN email text")  # the next deploy's
    with psycopg.connect(source.dsn, autocommit=True) as conn:
        conn.execute("UPDATE person SET email = 'person' || id || '@mail.example'")
    spec = tmp_path / "policy.toml"
    spec.write_text('[mask]\n"*.*.email" = "email"\n')
    refresh(source, target, RefreshOptions.resolve(state, None, str(spec), "a salt"))
    assert count(target.dsn, "person", "email LIKE '%@mail.example'") == 0
    assert count(target.dsn, "person", "email LIKE '%@example.invalid'") == count(source.dsn, "person")
