"""The event-log storages dagster.yaml names: connections kept between events, the same tables and
the same watchers as Dagster's own storages, and Dagster's own storages under any other release."""

import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import dagster as dg
import psycopg
import pytest
import sqlalchemy as db
from dagster_postgres import PostgresEventLogStorage

from muva_refresh import storage as storage_module
from muva_refresh.instance import CLI_INSTANCE
from muva_refresh.storage import (
    OPEN_SHARDS,
    WRITTEN_FOR_DAGSTER,
    KeptOpenSqliteEventLogStorage,
    PooledPostgresEventLogStorage,
    fallback_reason,
)

from .support import cli

ANOTHER_RELEASE = "1.13.99"


def message(run_id: str, text: str) -> dg.EventLogEntry:
    return dg.EventLogEntry(error_info=None, level="INFO", user_message=text, run_id=run_id, timestamp=time.time())


def test_the_cli_instance_stores_events_with_kept_open_files(env, tmp_path):
    first, second = cli("refresh", "--json"), cli("refresh", "--json")
    assert first.code == second.code == 0
    with dg.DagsterInstance.get() as instance:
        assert type(instance.event_log_storage) is KeptOpenSqliteEventLogStorage
    assert (tmp_path / "dagster_home" / "dagster.yaml").read_text() == CLI_INSTANCE
    entries = cli("history", "customer", "--check", "row_count", "--json").json
    assert [e["run_id"] for e in entries] == [first.json["run_id"], second.json["run_id"]]


def test_a_watcher_hears_events_another_instance_stores(tmp_path):
    """The UI's live run log: the webserver watches a run file that the run worker writes."""
    reader = KeptOpenSqliteEventLogStorage(str(tmp_path))
    writer = KeptOpenSqliteEventLogStorage(str(tmp_path))
    run_id = str(uuid.uuid4())
    writer.store_event(message(run_id, "first"))
    heard: list[str] = []
    arrived = threading.Event()

    def on_event(entry, _cursor):
        heard.append(entry.user_message)
        if entry.user_message == "second":  # the first may be heard alone when its write comes late
            arrived.set()

    reader.watch(run_id, None, on_event)
    try:
        writer.store_event(message(run_id, "second"))
        assert arrived.wait(10), "the watcher never heard the second event"
        assert "second" in heard
        assert messages(reader, run_id) == ["first", "second"]
    finally:
        reader.end_watch(run_id, on_event)
        reader.dispose()
        writer.dispose()


def open_database_files(directory: Path) -> set[str]:
    """The SQLite files under `directory` that this process holds open, as the OS lists them."""
    held = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            path = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed since the listing
            continue
        if path.startswith(str(directory)) and path.endswith(".db"):
            held.add(path)
    return held


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts open files through /proc")
def test_the_sqlite_storage_keeps_a_bounded_number_of_files_open(tmp_path):
    storage = KeptOpenSqliteEventLogStorage(str(tmp_path))
    try:
        for _ in range(12):
            storage.store_event(message(str(uuid.uuid4()), "hello"))
        storage.wait_for_writes()
        assert 0 < len(open_database_files(tmp_path)) <= OPEN_SHARDS
    finally:
        storage.dispose()
    assert open_database_files(tmp_path) == set()


def test_a_refresh_on_the_pooled_postgres_storage_reads_back_through_dagsters_own(postgres_instance):
    done = cli("refresh", "--json")
    assert done.code == 0, done.err
    with dg.DagsterInstance.get() as instance:
        storage = instance.event_log_storage
        assert type(storage) is PooledPostgresEventLogStorage
        with storage.index_connection() as conn:
            assert conn.exec_driver_sql("SHOW synchronous_commit").scalar() == "off"
    plain = PostgresEventLogStorage(storage.postgres_url)
    try:
        key = dg.AssetCheckKey(dg.AssetKey(["customer"]), "row_count")
        records = plain.get_asset_check_execution_history(key, limit=5)
        assert [r.run_id for r in records] == [done.json["run_id"]]
        assert records[0].status.value == "SUCCEEDED"
    finally:
        plain.dispose()


def test_the_asset_key_columns_are_probed_once_per_storage(tmp_path):
    """Dagster reads the asset-key table's columns back before every asset event; a yes is kept."""
    column_reads: list[str] = []

    def count_column_reads(conn, _cursor, statement, _parameters, _context, _executemany):
        if conn.engine.url.database.startswith(str(tmp_path)) and 'table_xinfo("asset_keys")' in statement:
            column_reads.append(statement)

    config = {"module": "muva_refresh.storage", "class": "KeptOpenSqliteEventLogStorage",
              "config": {"base_dir": str(tmp_path)}}
    db.event.listen(db.engine.Engine, "before_cursor_execute", count_column_reads)
    try:
        with dg.instance_for_test(overrides={"event_log_storage": config}) as instance:
            reads_after_each_round = []
            for _ in range(2):  # Dagster's own storage reads the columns again for every event
                for asset in ("region", "customer", "region", "person"):
                    instance.report_runless_asset_event(dg.AssetMaterialization(asset))
                instance.event_log_storage.wait_for_writes()
                reads_after_each_round.append(len(column_reads))
            records = instance.event_log_storage.get_asset_records()
    finally:
        db.event.remove(db.engine.Engine, "before_cursor_execute", count_column_reads)
    first_round, second_round = reads_after_each_round
    assert 0 < first_round < 4 and second_round == first_round
    assert {r.asset_entry.asset_key.to_user_string() for r in records} == {"region", "customer", "person"}


def storage_url(dsn: str) -> str:
    """A libpq DSN of the machine's PostgreSQL as the SQLAlchemy URL dagster-postgres takes."""
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    return (f"postgresql+psycopg2://{info.get('user', 'postgres')}@{info.get('host', '127.0.0.1')}:"
            f"{info.get('port', 5432)}/{info['dbname']}")


def test_the_pooled_postgres_storage_sends_no_notify_and_dagsters_watcher_still_hears(pg15):
    """dagster-postgres's watchers poll; its NOTIFY after each event only served older releases."""
    dsn = pg15.create_database("event_log")
    url = storage_url(dsn)
    writer = PooledPostgresEventLogStorage(url)
    reader = PostgresEventLogStorage(url)
    listener = psycopg.connect(dsn, autocommit=True)
    run_id = str(uuid.uuid4())
    heard = threading.Event()
    reader.watch(run_id, None, lambda entry, _cursor: heard.set())
    try:
        listener.execute("LISTEN run_events")
        writer.store_event(message(run_id, "first"))
        assert heard.wait(10), "Dagster's own watcher never heard the event"
        assert list(listener.notifies(timeout=1, stop_after=1)) == []
        reader.store_event(message(run_id, "second"))  # Dagster's own class still notifies
        assert len(list(listener.notifies(timeout=5, stop_after=1))) == 1
    finally:
        reader.end_watch(run_id, lambda entry, _cursor: None)
        listener.close()
        reader.dispose()
        writer.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def storages(request, tmp_path, pg15):
    """Two storages on one event log, as two processes would hold them; the first writes."""
    if request.param == "sqlite":
        made = [KeptOpenSqliteEventLogStorage(str(tmp_path)) for _ in range(2)]
    else:
        url = storage_url(pg15.create_database("event_log"))
        made = [PooledPostgresEventLogStorage(url), PostgresEventLogStorage(url)]
    yield made
    for storage in made:
        storage.dispose()


def run_event(run_id: str, event_type: dg.DagsterEventType) -> dg.EventLogEntry:
    return dg.EventLogEntry(error_info=None, level="DEBUG", user_message="", run_id=run_id, timestamp=time.time(),
                            dagster_event=dg.DagsterEvent(event_type.value, "refresh_staging"))


def messages(storage, run_id: str) -> list[str]:
    return [r.event_log_entry.user_message for r in storage.get_records_for_run(run_id).records]


def test_events_written_in_the_background_read_back_at_once_and_in_order(storages):
    """The writing process reads its own events at once; another sees them by the run's end."""
    writer, other = storages
    run_id = str(uuid.uuid4())
    texts = [f"event {i}" for i in range(300)]
    for text in texts:
        writer.store_event(message(run_id, text))
    assert messages(writer, run_id) == texts
    more = [f"event {i}" for i in range(300, 600)]
    for text in more:
        writer.store_event(message(run_id, text))
    writer.store_event(run_event(run_id, dg.DagsterEventType.RUN_SUCCESS))
    assert messages(other, run_id) == [*texts, *more, ""]


def test_a_failed_write_in_the_background_is_raised_by_the_next_call(storages):
    writer, _ = storages
    run_id = str(uuid.uuid4())
    writer.store_event(message(run_id, "kept"))
    with writer.run_connection(run_id) as conn:  # the event log refuses every row from now on
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("CREATE TRIGGER refuse BEFORE INSERT ON event_logs BEGIN SELECT RAISE(ABORT, 'refused'); END")
        else:
            conn.exec_driver_sql("ALTER TABLE event_logs ADD CONSTRAINT refused CHECK (false) NOT VALID")
    writer.store_event(message(run_id, "lost"))
    with pytest.raises(Exception, match="refused"):
        writer.store_event(message(run_id, "after"))
        writer.wait_for_writes()
    with writer.run_connection(run_id) as conn:
        conn.exec_driver_sql("DROP TRIGGER refuse" if conn.dialect.name == "sqlite"
                             else "ALTER TABLE event_logs DROP CONSTRAINT refused")
    writer.store_event(message(run_id, "again"))
    assert messages(writer, run_id)[0] == "kept" and messages(writer, run_id)[-1] == "again"


def test_a_process_that_never_disposes_its_storage_stores_every_event_before_it_exits(tmp_path):
    run_id = str(uuid.uuid4())
    script = (
        "import sys, time\n"
        "from dagster import EventLogEntry\n"
        "from muva_refresh.storage import KeptOpenSqliteEventLogStorage\n"
        "storage = KeptOpenSqliteEventLogStorage(sys.argv[1])\n"
        "for i in range(200):\n"
        "    storage.store_event(EventLogEntry(error_info=None, level='INFO', user_message=str(i),"
        " run_id=sys.argv[2], timestamp=time.time()))\n"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path), run_id], check=True)
    reader = KeptOpenSqliteEventLogStorage(str(tmp_path))
    try:
        assert messages(reader, run_id) == [str(i) for i in range(200)]
    finally:
        reader.dispose()


def test_a_schema_probe_answers_while_the_writer_waits_and_a_read_waits_for_it(pg15):
    """A run's first step asks whether the concurrency tables exist: the schema, which no queued
    event changes, so the probe does not wait for the planned events still being written."""
    dsn = pg15.create_database("event_log")
    storage = PooledPostgresEventLogStorage(storage_url(dsn))
    run_id = str(uuid.uuid4())
    answers: dict[str, object] = {}
    try:
        storage.store_event(message(run_id, "before"))
        storage.wait_for_writes()
        with psycopg.connect(dsn) as blocker:
            blocker.execute("LOCK TABLE event_logs IN ACCESS EXCLUSIVE MODE")  # the writer's next INSERT waits
            storage.store_event(message(run_id, "queued"))
            probe = threading.Thread(target=lambda: answers.update(
                slots=storage.has_table("concurrency_slots"), key_col=storage.has_asset_key_col("last_materialization")))
            read = threading.Thread(target=lambda: answers.update(read=messages(storage, run_id)))
            probe.start()
            read.start()
            probe.join(10)
            assert answers.get("slots") is True and "key_col" in answers, "the probe waited for the writer"
            read.join(1)
            assert "read" not in answers, "the read did not wait for the writer"
        read.join(10)
        assert answers["read"] == ["before", "queued"]
    finally:
        storage.dispose()


@pytest.fixture
def another_dagster_release(monkeypatch, caplog):
    """This process takes the installed Dagster for a release the storages were not checked against."""
    monkeypatch.setattr(storage_module, "DAGSTER_VERSION", ANOTHER_RELEASE)
    fallback_reason.cache_clear()  # decided once per process: this test is a process of its own
    caplog.set_level(logging.WARNING, logger=storage_module.__name__)
    yield ANOTHER_RELEASE
    fallback_reason.cache_clear()


def fallback_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and f"dagster {WRITTEN_FOR_DAGSTER}" in r.getMessage()]


@pytest.mark.parametrize("instance", ["sqlite", "postgres"])
def test_under_another_dagster_release_a_refresh_runs_on_dagsters_own_storage_and_warns_once(
        instance, request, another_dagster_release, caplog):
    """After an upgrade the CLI, the webserver and the daemon still start: slower, never stopped."""
    request.getfixturevalue("env" if instance == "sqlite" else "postgres_instance")
    done = cli("refresh", "--json")
    assert done.code == 0, done.err
    assert {c["check"] for c in done.json["checks"] if c["asset"] == "customer"} >= {"row_count", "no_orphans"}
    entries = cli("history", "customer", "--check", "row_count", "--json").json
    assert [e["run_id"] for e in entries] == [done.json["run_id"]] and entries[0]["passed"]
    with dg.DagsterInstance.get() as dagster_instance:
        storage = dagster_instance.event_log_storage
        expected = "SqliteEventLogStorage" if instance == "sqlite" else "PostgresEventLogStorage"
        assert type(storage).__name__ == expected
        assert storage.inst_data.class_name in {"KeptOpenSqliteEventLogStorage", "PooledPostgresEventLogStorage"}
    [warning] = fallback_warnings(caplog)
    assert f"dagster {another_dagster_release} is installed" in warning
    assert f"install dagster=={WRITTEN_FOR_DAGSTER}" in warning.lower()


def test_under_another_dagster_release_the_classes_build_dagsters_own_and_it_notifies(
        another_dagster_release, caplog, tmp_path, pg15):
    sqlite = KeptOpenSqliteEventLogStorage(str(tmp_path))
    dsn = pg15.create_database("event_log")
    postgres = PooledPostgresEventLogStorage(storage_url(dsn))
    listener = psycopg.connect(dsn, autocommit=True)
    try:
        assert type(sqlite).__name__ == "SqliteEventLogStorage"
        assert type(postgres) is PostgresEventLogStorage
        listener.execute("LISTEN run_events")
        postgres.store_event(message(str(uuid.uuid4()), "first"))
        assert len(list(listener.notifies(timeout=5, stop_after=1))) == 1
    finally:
        listener.close()
        sqlite.dispose()
        postgres.dispose()
    assert len(fallback_warnings(caplog)) == 1


def test_a_private_name_gone_from_dagster_falls_back_too(tmp_path):
    """A later release may move a private helper the storages import; the instance still starts."""
    script = (
        "import sys\n"
        "import dagster_postgres.utils\n"
        # The planted fault: a private helper storage.py imports is gone, as in a release that moved it.
        "del dagster_postgres.utils.pg_url_from_config\n"
        "from muva_refresh.storage import KeptOpenSqliteEventLogStorage\n"
        "storage = KeptOpenSqliteEventLogStorage(sys.argv[1])\n"
        "print(type(storage).__name__)\n"
        "storage.dispose()\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "SqliteEventLogStorage"
    [warning] = [line for line in done.stderr.splitlines() if f"checked against dagster {WRITTEN_FOR_DAGSTER}" in line]
    assert "pg_url_from_config" in warning
