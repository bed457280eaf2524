"""The demo databases, against a real embedded PostgreSQL server."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from muva_refresh import demo
from muva_refresh.demo import server as demo_server
from muva_refresh.settings import read_env_file

SEED_ROW_COUNTS = {
    "tenant_registry": 3,
    "sire_countries": 45,
    "sire_document_types": 4,
    "muva_content": 742,
    "chat_messages": 319,
    "prospective_sessions": 412,
    "code_embeddings": 4333,
}

PUBLIC_TABLES_SQL = """
    SELECT c.relname
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
    ORDER BY c.relname
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[demo.EmbeddedServer]:
    # Short path: the Unix socket lives in the data directory.
    data_dir = tmp_path_factory.mktemp("pg") / "data"
    running = demo_server.start(data_dir)
    try:
        yield running
    finally:
        demo_server.stop(data_dir)


@pytest.fixture(scope="module")
def loaded_dsn(server: demo.EmbeddedServer) -> str:
    return _fresh_loaded_database(server, "demo_t")


@pytest.fixture
def conn(loaded_dsn: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(loaded_dsn) as connection:
        yield connection


def _fresh_loaded_database(server: demo.EmbeddedServer, database: str) -> str:
    with psycopg.connect(server.dsn("postgres"), autocommit=True) as admin:
        name = sql.Identifier(database)
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(name))
    dsn = server.dsn(database)
    with psycopg.connect(dsn) as connection:
        demo.create_schema(connection)
        demo.load_data(connection, scale=1)
    return dsn


def _public_tables(conn: psycopg.Connection) -> list[str]:
    return [name for (name,) in conn.execute(PUBLIC_TABLES_SQL)]


def _count(conn: psycopg.Connection, table: str) -> int:
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("public", table))
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_schema_has_42_tables_and_49_foreign_keys(conn: psycopg.Connection) -> None:
    assert len(_public_tables(conn)) == 42
    foreign_keys = conn.execute(
        "SELECT count(*) FROM pg_constraint "
        "WHERE contype = 'f' AND connamespace = 'public'::regnamespace"
    ).fetchone()
    assert foreign_keys == (49,)


def test_every_table_is_filled_and_seed_counts_match(conn: psycopg.Connection) -> None:
    counts = {table: _count(conn, table) for table in _public_tables(conn)}
    assert {table: counts[table] for table in SEED_ROW_COUNTS} == SEED_ROW_COUNTS
    assert counts == demo.row_counts(1)
    markers = conn.execute("SELECT count(*) FROM supabase_migrations.schema_migrations").fetchone()
    assert markers == (2,)


def test_no_foreign_key_has_orphans(conn: psycopg.Connection) -> None:
    foreign_keys = conn.execute(
        """
        SELECT con.conname, child.relname, parent.relname,
               array_agg(child_col.attname ORDER BY k.position),
               array_agg(parent_col.attname ORDER BY k.position)
        FROM pg_constraint con
        JOIN pg_class child ON child.oid = con.conrelid
        JOIN pg_class parent ON parent.oid = con.confrelid
        CROSS JOIN LATERAL unnest(con.conkey, con.confkey)
            WITH ORDINALITY AS k (child_attnum, parent_attnum, position)
        JOIN pg_attribute child_col
          ON child_col.attrelid = con.conrelid AND child_col.attnum = k.child_attnum
        JOIN pg_attribute parent_col
          ON parent_col.attrelid = con.confrelid AND parent_col.attnum = k.parent_attnum
        WHERE con.contype = 'f' AND con.connamespace = 'public'::regnamespace
        GROUP BY con.conname, child.relname, parent.relname
        """
    ).fetchall()
    assert len(foreign_keys) == 49

    orphans = {}
    for name, child, parent, child_columns, parent_columns in foreign_keys:
        joined = sql.SQL(" AND ").join(
            sql.SQL("p.{} = c.{}").format(sql.Identifier(p), sql.Identifier(c))
            for c, p in zip(child_columns, parent_columns)
        )
        # MATCH SIMPLE: a row with any NULL key column references nothing.
        filled = sql.SQL(" AND ").join(
            sql.SQL("c.{} IS NOT NULL").format(sql.Identifier(c)) for c in child_columns
        )
        query = sql.SQL(
            "SELECT count(*) FROM {child} c LEFT JOIN {parent} p ON {joined} "
            "WHERE {filled} AND p.{first} IS NULL"
        ).format(
            child=sql.Identifier("public", child),
            parent=sql.Identifier("public", parent),
            joined=joined,
            filled=filled,
            first=sql.Identifier(parent_columns[0]),
        )
        row = conn.execute(query).fetchone()
        assert row is not None
        if row[0]:
            orphans[name] = row[0]
    assert orphans == {}


def test_composite_and_nullable_foreign_keys_are_exercised(conn: psycopg.Connection) -> None:
    composite = conn.execute(
        "SELECT conrelid::regclass::text FROM pg_constraint "
        "WHERE contype = 'f' AND connamespace = 'public'::regnamespace "
        "AND cardinality(conkey) > 1"
    ).fetchall()
    assert composite == [("reservation_accommodations",)]
    nulls = conn.execute(
        "SELECT count(*) FILTER (WHERE conversation_id IS NULL), "
        "count(*) FILTER (WHERE accommodation_unit_id IS NULL) FROM guest_reservations"
    ).fetchone()
    assert nulls is not None and all(n > 0 for n in nulls)


def test_row_level_security_everywhere_but_code_embeddings(conn: psycopg.Connection) -> None:
    rows = conn.execute(
        """
        SELECT c.relname, c.relrowsecurity,
               (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid)
        FROM pg_class c
        WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')
        """
    ).fetchall()
    protected = {name for name, rls, _ in rows if rls}
    assert len(protected) == 41
    assert {name for name, rls, _ in rows if not rls} == {"code_embeddings"}
    assert [name for name, rls, policies in rows if rls and policies == 0] == []


def test_schema_features_the_copy_engine_must_handle(conn: psycopg.Connection) -> None:
    enum_arrays = conn.execute(
        """
        SELECT a.attrelid::regclass::text, a.attname
        FROM pg_attribute a
        JOIN pg_type t ON t.oid = a.atttypid
        JOIN pg_type element ON element.oid = t.typelem
        WHERE a.attrelid IN (SELECT oid FROM pg_class WHERE relnamespace = 'public'::regnamespace)
          AND t.typcategory = 'A' AND element.typtype = 'e'
        """
    ).fetchall()
    assert ("guest_reservations", "flags") in enum_arrays

    generated = conn.execute(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = 'public' AND is_generated = 'ALWAYS'"
    ).fetchall()
    assert ("guest_reservations", "nights") in generated

    owned_sequences = conn.execute(
        "SELECT count(*) FROM pg_depend d JOIN pg_class s ON s.oid = d.objid "
        "WHERE s.relkind = 'S' AND s.relnamespace = 'public'::regnamespace "
        "AND d.deptype IN ('a', 'i')"
    ).fetchone()
    assert owned_sequences == (3,)

    hnsw = conn.execute(
        "SELECT indexdef FROM pg_indexes WHERE tablename = 'code_embeddings' AND indexdef ~ 'hnsw'"
    ).fetchall()
    assert len(hnsw) == 1 and "vector_cosine_ops" in hnsw[0][0]

    dimensions = conn.execute("SELECT DISTINCT vector_dims(embedding) FROM code_embeddings").fetchall()
    assert dimensions == [(1536,)]

    nights = conn.execute(
        "SELECT bool_and(nights = check_out - check_in) FROM guest_reservations"
    ).fetchone()
    assert nights == (True,)


def test_updated_at_trigger_fires(conn: psycopg.Connection) -> None:
    row = conn.execute(
        "UPDATE tenant_registry SET business_name = business_name || '!' "
        "WHERE subdomain = 'brisamar' RETURNING updated_at = now()"
    ).fetchone()
    conn.rollback()
    assert row == (True,)


def test_load_is_deterministic(server: demo.EmbeddedServer, loaded_dsn: str) -> None:
    again_dsn = _fresh_loaded_database(server, "demo_t_again")
    with psycopg.connect(loaded_dsn) as first, psycopg.connect(again_dsn) as second:
        tables = _public_tables(first)
        assert _table_digests(first, tables) == _table_digests(second, tables)


def _table_digests(conn: psycopg.Connection, tables: list[str]) -> dict[str, str]:
    # Hash each row first, so the aggregate stays small even for the vectors.
    return {
        table: conn.execute(
            sql.SQL(
                "SELECT md5(string_agg(md5(t::text), ',' ORDER BY md5(t::text))) FROM {} t"
            ).format(sql.Identifier("public", table))
        ).fetchone()[0]
        for table in tables
    }


def test_up_plants_stale_rows_in_staging_and_writes_env_file(
    server: demo.EmbeddedServer, tmp_path: Path
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("DAGSTER_HOME=/srv/dagster\nMUVA_SOURCE_DSN=postgresql://old/muva\n")

    info = demo.up(scale=1, data_dir=server.data_dir, env_file=env_file)

    assert info.source_rows["code_embeddings"] == 4333
    assert 50 * 2**20 < info.source_bytes < 100 * 2**20
    assert env_file.read_text().splitlines() == [
        "DAGSTER_HOME=/srv/dagster",
        f"MUVA_SOURCE_DSN='{info.source_dsn}'",
        f"MUVA_TARGET_DSN='{info.target_dsn}'",
    ]
    sourced = subprocess.run(["bash", "-c", "set -a; . ./.env; echo \"$MUVA_SOURCE_DSN\"; jobs"],
                             cwd=tmp_path, capture_output=True, text=True, check=True)
    assert sourced.stdout == info.source_dsn + "\n" and sourced.stderr == ""  # no `&` ran in the background
    assert read_env_file(env_file)["MUVA_TARGET_DSN"] == info.target_dsn

    with psycopg.connect(info.source_dsn) as prod, psycopg.connect(info.target_dsn) as staging:
        for table in ("tenant_registry", "staff_users", "accommodations", "chat_messages",
                      "guest_reservations", "reservation_accommodations", "muva_content"):
            query = sql.SQL("SELECT id FROM {}").format(sql.Identifier("public", table))
            staging_ids = {id_ for (id_,) in staging.execute(query)}
            prod_ids = {id_ for (id_,) in prod.execute(query)}
            assert staging_ids, table
            assert staging_ids.isdisjoint(prod_ids), table

        assert staging.execute(
            "SELECT subdomain FROM tenant_registry"
        ).fetchall() == [("stale-tenant",)]
        name_query = "SELECT name FROM sire_document_types WHERE code = '3'"
        assert staging.execute(name_query).fetchone() != prod.execute(name_query).fetchone()
        assert staging.execute(
            "SELECT count(*) FROM supabase_migrations.schema_migrations"
        ).fetchone() == (0,)

        # Idempotent, and safe on a database that already holds production's rows.
        demo.plant_stale_rows(staging)
        demo.plant_stale_rows(prod)
        assert _count(staging, "chat_messages") == 6
        assert _count(prod, "tenant_registry") == 4


def test_up_rejects_a_bad_scale_before_starting_anything(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="scale"):
        demo.up(scale=0, data_dir=tmp_path / "never", env_file=None)
    assert not (tmp_path / "never").exists()


def test_stop_and_is_running_on_a_directory_without_a_server(tmp_path: Path) -> None:
    assert demo.is_running(tmp_path) is False
    assert demo.stop(tmp_path) is False
