"""Every sequence staging will use after a refresh: owned or only named in a default, shared,
descending, wrapped in an expression, or in a schema of its own."""

import psycopg
import pytest

from muva_refresh import load, sequences
from muva_refresh.catalog import TableRef
from muva_refresh.checks import validate_live
from muva_refresh.endpoint import Endpoint
from muva_refresh.graph import make_plan
from muva_refresh.refresh import RefreshOptions
from muva_refresh.settings import TableFilter

from .support import checked_refresh, saved_catalog

WITH_COUNTERS = TableFilter(("public", "counters"))
FIRST_INSERTS = (
    "INSERT INTO film (title) VALUES ('new')",
    "INSERT INTO film_archive (title) VALUES ('new')",
    "INSERT INTO ticket (seat) VALUES ('new')",
    "INSERT INTO invoice (amount) VALUES (1)",
    "INSERT INTO note (body) VALUES ('new')",
)


@pytest.fixture
def pair(pg):
    source = pg.database_from_sql("src", "sequences.sql")
    target = pg.database_from_sql("dst", "sequences.sql")
    with psycopg.connect(target, autocommit=True) as conn:  # staging starts behind production
        conn.execute("TRUNCATE film, film_archive, ticket, invoice, note")
        conn.execute("ALTER SEQUENCE film_film_id_seq RESTART; ALTER SEQUENCE countdown_seq RESTART")
        conn.execute("ALTER SEQUENCE invoice_no_seq RESTART; ALTER SEQUENCE counters.note_seq RESTART")
    return Endpoint("source", source), Endpoint("target", target)


def checked(source: Endpoint, target: Endpoint, table_filter: TableFilter) -> dict[str, object]:
    _, outcomes = checked_refresh(source, target, RefreshOptions(table_filter=table_filter))
    return {o.table.name: o for o in outcomes if o.check == "matches_source"}


def sequence_state(dsn: str) -> dict[str, tuple[int, bool]]:
    with psycopg.connect(dsn) as conn:
        return {name: conn.execute(f"SELECT last_value, is_called FROM {name}").fetchone()
                for name in ("film_film_id_seq", "countdown_seq", "invoice_no_seq", "counters.note_seq")}


def test_the_catalog_finds_sequences_that_no_column_owns(pair):
    source, _ = pair
    catalog = saved_catalog(source.dsn, WITH_COUNTERS)
    uses = {str(seq): [(str(ref), u.column, u.owned) for ref, u in users]
            for seq, users in catalog.sequence_uses().items()}
    assert uses == {
        "counters.note_seq": [("public.note", "id", False)],
        "public.countdown_seq": [("public.ticket", "id", False)],
        "public.film_film_id_seq": [("public.film", "film_id", False), ("public.film_archive", "film_id", False)],
        "public.invoice_no_seq": [("public.invoice", "code", False)],
    }


def test_a_refresh_sets_every_sequence_and_staging_takes_inserts(pair):
    source, target = pair
    outcomes = checked(source, target, WITH_COUNTERS)
    assert all(o.passed for o in outcomes.values()), [o.summary for o in outcomes.values() if not o.passed]
    assert sequence_state(target.dsn) == sequence_state(source.dsn)
    with psycopg.connect(target.dsn, autocommit=True) as conn:
        for statement in FIRST_INSERTS:  # the application's first INSERT into each table
            conn.execute(statement)
    assert outcomes["ticket"].metadata["min.id"] == -20 and outcomes["ticket"].metadata["next.id"] == -21
    assert "not comparable" in outcomes["invoice"].metadata["max.code"]


def test_a_shared_sequence_is_set_once(pair):
    source, _ = pair
    catalog = saved_catalog(source.dsn, WITH_COUNTERS)
    pairs = sequences.sequence_pairs(make_plan(catalog), catalog)
    targets = [str(target) for _, target in pairs]
    assert sorted(targets) == ["counters.note_seq", "public.countdown_seq", "public.film_film_id_seq",
                               "public.invoice_no_seq"]


def test_without_sequence_syncing_the_check_fails(pair, monkeypatch):
    source, target = pair
    monkeypatch.setattr(load, "sync_sequences", lambda *args: None)  # the fault: nothing sets them
    outcomes = checked(source, target, WITH_COUNTERS)
    failed = {name for name, o in outcomes.items() if not o.passed}
    assert failed == {"film", "film_archive", "ticket", "note"}  # invoice's default is an expression
    assert "public.film_film_id_seq would hand out 1, but film_id already reaches 30" in outcomes["film"].summary
    assert "public.countdown_seq would hand out -1, but id already reaches -20" in outcomes["ticket"].summary


def test_a_descending_sequence_behind_its_column_fails(pair):
    source, target = pair
    checked(source, target, WITH_COUNTERS)
    with psycopg.connect(target.dsn, autocommit=True) as conn:
        conn.execute("SELECT setval('countdown_seq', -5)")
    outcome = next(o for o in validate_live(source, target, {TableRef("public", "ticket"): ["matches_source"]}, WITH_COUNTERS))
    assert not outcome.passed and "would hand out -6, but id already reaches -20" in outcome.summary


def test_a_sequence_in_a_schema_not_configured_is_left_alone_and_the_plan_says_so(pair, tmp_path, monkeypatch):
    source, target = pair
    outcomes = checked(source, target, TableFilter(("public",)))
    assert sequence_state(target.dsn)["counters.note_seq"] == (1, False)
    assert not outcomes["note"].passed  # and the check tells
    from .support import cli

    monkeypatch.setenv("MUVA_SOURCE_DSN", source.dsn)
    monkeypatch.setenv("MUVA_STATE_PATH", str(tmp_path / "catalog.json"))
    text = cli("plan").out
    assert "  public.film_film_id_seq <- film.film_id (default only), film_archive.film_id (default only)" in text
    assert ("  counters.note_seq <- note.id (default only)  NOT COPIED: schema counters is not configured "
            "(add it to MUVA_SCHEMAS)") in text
    assert {s["name"]: s["copied"] for s in cli("plan", "--json").json["sequences"]}["counters.note_seq"] is False
