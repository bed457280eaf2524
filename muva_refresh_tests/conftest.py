"""Real PostgreSQL for every test: one embedded PostgreSQL 18 per run, a database per test.

The machine's PostgreSQL (127.0.0.1:5432 by default, MUVA_TEST_PG15_DSN to override) is the
second major version; tests that need it skip with the reason when it is not there.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

SQL_DIR = Path(__file__).parent / "sql"
SECOND_SERVER_DSN = os.environ.get("MUVA_TEST_PG15_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
_names = itertools.count()


class Server:
    """A PostgreSQL server on which tests create and drop their own databases."""

    def __init__(self, admin_dsn: str):
        self.admin_dsn = admin_dsn
        self.created: list[str] = []

    def dsn(self, dbname: str) -> str:
        return psycopg.conninfo.make_conninfo(self.admin_dsn, dbname=dbname)

    def create_database(self, prefix: str, template: str | None = None) -> str:
        name = f"{prefix}_{os.getpid()}_{next(_names)}"
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
            if template:
                create = sql.SQL("{} TEMPLATE {}").format(create, sql.Identifier(template))
            conn.execute(create)
        self.created.append(name)
        return self.dsn(name)

    def drop_created(self) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            for name in self.created:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        self.created.clear()

    def database_from_sql(self, prefix: str, *sql_files: str) -> str:
        dsn = self.create_database(prefix)
        with psycopg.connect(dsn, autocommit=True) as conn:
            for name in sql_files:
                conn.execute((SQL_DIR / name).read_text())
        return dsn

    @property
    def major(self) -> int:
        with psycopg.connect(self.admin_dsn) as conn:
            return conn.info.server_version // 10000


@pytest.fixture(scope="session")
def pg() -> Server:
    """The embedded PostgreSQL 18 (with pgvector), on a Unix socket in a private directory.

    MUVA_TEST_DSN points the tests at an already running server instead.
    """
    if os.environ.get("MUVA_TEST_DSN"):
        server = Server(os.environ["MUVA_TEST_DSN"])
        yield server
        server.drop_created()
        return
    from muva_refresh.demo import server as demo_server

    root = Path(tempfile.mkdtemp(prefix="muva-t-"))
    embedded = demo_server.start(data_dir=root / "pg")
    yield Server(embedded.dsn("postgres"))
    demo_server.stop(data_dir=root / "pg")
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg15() -> Server:
    """The machine's own PostgreSQL, a different major version from the embedded one."""
    try:
        with psycopg.connect(SECOND_SERVER_DSN, connect_timeout=3) as conn:
            major = conn.info.server_version // 10000
    except psycopg.Error as exc:
        pytest.skip(f"no second PostgreSQL server at {SECOND_SERVER_DSN.split('@')[-1]}: {exc}".splitlines()[0])
    if major == 18:
        pytest.skip("the second server is also PostgreSQL 18; cross-version tests need another major")
    server = Server(SECOND_SERVER_DSN)
    yield server
    server.drop_created()


@pytest.fixture(autouse=True)
def clean_settings(monkeypatch):
    """No test sees the developer's own configuration."""
    for var in ("MUVA_SCHEMAS", "MUVA_INCLUDE", "MUVA_EXCLUDE", "MUVA_DEPLOY_MARKER_SQL", "MUVA_STATE_PATH",
                "MUVA_POLICY", "MUVA_MASK_SALT", "MUVA_RLS_EXPECTED"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def env(pg, tmp_path, monkeypatch):
    """The twists schema as source and target, DSNs with a password, a saved state and a Dagster home."""
    from .support import SECRET, cli

    source = pg.database_from_sql("src", "twists.sql")
    target = pg.database_from_sql("dst", "twists.sql")
    monkeypatch.setenv("MUVA_SOURCE_DSN", psycopg.conninfo.make_conninfo(source, password=SECRET))
    monkeypatch.setenv("MUVA_TARGET_DSN", psycopg.conninfo.make_conninfo(target, password=SECRET))
    monkeypatch.setenv("MUVA_STATE_PATH", str(tmp_path / "state" / "catalog.json"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    assert cli("introspect").code == 0
    return source, target


@pytest.fixture(scope="session")
def muva(pg):
    """MUVA production at scale 1 and a staging with stale rows, built once as templates."""
    from muva_refresh.demo import create_schema, load_data, plant_stale_rows

    prod = pg.create_database("muva_prod_tpl")
    staging = pg.create_database("muva_staging_tpl")
    with psycopg.connect(prod) as conn:
        create_schema(conn)
        load_data(conn, 1)
    with psycopg.connect(staging) as conn:
        create_schema(conn)
        plant_stale_rows(conn)
    return prod, staging


@pytest.fixture
def muva_env(pg, muva, tmp_path, monkeypatch):
    """A fresh MUVA pair from the templates, its DSNs and state set, introspected."""
    from .support import cli

    prod_template, staging_template = (psycopg.conninfo.conninfo_to_dict(d)["dbname"] for d in muva)
    source = pg.create_database("muva_prod", template=prod_template)
    target = pg.create_database("muva_staging", template=staging_template)
    monkeypatch.setenv("MUVA_SOURCE_DSN", source)
    monkeypatch.setenv("MUVA_TARGET_DSN", target)
    monkeypatch.setenv("MUVA_STATE_PATH", str(tmp_path / "catalog.json"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    assert cli("introspect").code == 0
    return source, target


REPO_INSTANCE = Path(__file__).resolve().parents[1] / "dagster.yaml"


def use_postgres_instance(server: Server, home: Path, monkeypatch) -> str:
    """DAGSTER_HOME at `home`, holding the repo's dagster.yaml, storage in a fresh database on `server`."""
    dsn = server.create_database("dagster_history")
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    home.mkdir()
    shutil.copy(REPO_INSTANCE, home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("DAGSTER_PG_HOST", info.get("host", "127.0.0.1"))
    monkeypatch.setenv("DAGSTER_PG_PORT", str(info.get("port", 5432)))
    monkeypatch.setenv("DAGSTER_PG_USER", info.get("user", "postgres"))
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", info.get("password", ""))
    monkeypatch.setenv("DAGSTER_PG_DB", info["dbname"])
    return dsn


@pytest.fixture
def postgres_instance(env, pg15, tmp_path, monkeypatch):
    """DAGSTER_HOME holding the repo's dagster.yaml, storage in a fresh database on the second server."""
    return use_postgres_instance(pg15, tmp_path / "pg_home", monkeypatch)
