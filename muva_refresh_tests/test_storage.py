"""The event-log storages dagster.yaml names: connections kept between events, the same tables and
the same watchers as Dagster's own storages, and only under the Dagster release they were written for."""

import subprocess
import sys
import threading
import time
import uuid

import dagster as dg
import psycopg
import pytest
from dagster._core.events import DagsterEvent, DagsterEventType, StepMaterializationData
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage
from dagster_postgres import PostgresEventLogStorage

from muva_refresh.errors import ConfigError
from muva_refresh.instance import CLI_INSTANCE
from muva_refresh.storage import (
    WRITTEN_FOR_DAGSTER,
    KeptOpenSqliteEventLogStorage,
    PooledPostgresEventLogStorage,
    require_pinned_dagster,
)

from .support import cli
from .test_instance import postgres_instance  # noqa: F401  (a fixture)


def message(run_id: str, text: str) -> EventLogEntry:
    return EventLogEntry(error_info=None, level="INFO", user_message=text, run_id=run_id, timestamp=time.time())


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


def test_the_sqlite_storage_keeps_a_bounded_number_of_files_open(tmp_path):
    storage = KeptOpenSqliteEventLogStorage(str(tmp_path))
    try:
        for _ in range(12):
            storage.store_event(message(str(uuid.uuid4()), "hello"))
        assert len(storage._engines) <= 8
    finally:
        storage.dispose()


def test_a_refresh_on_the_pooled_postgres_storage_reads_back_through_dagsters_own(postgres_instance):  # noqa: F811
    done = cli("refresh", "--json")
    assert done.code == 0, done.err
    with dg.DagsterInstance.get() as instance:
        storage = instance.event_log_storage
        assert type(storage) is PooledPostgresEventLogStorage
        with storage._connect() as conn:
            assert conn.exec_driver_sql("SHOW synchronous_commit").scalar() == "off"
    plain = PostgresEventLogStorage(storage.postgres_url)
    try:
        key = dg.AssetCheckKey(dg.AssetKey(["customer"]), "row_count")
        records = plain.get_asset_check_execution_history(key, limit=5)
        assert [r.run_id for r in records] == [done.json["run_id"]]
        assert records[0].status.value == "SUCCEEDED"
    finally:
        plain.dispose()


def test_the_storages_refuse_another_dagster_release():
    require_pinned_dagster(WRITTEN_FOR_DAGSTER)
    with pytest.raises(ConfigError) as refused:
        require_pinned_dagster("1.14.0")
    assert f"written for dagster {WRITTEN_FOR_DAGSTER}" in str(refused.value)
    assert "dagster 1.14.0 is installed" in str(refused.value)


def materialization(run_id: str, asset: str) -> EventLogEntry:
    event = DagsterEvent(DagsterEventType.ASSET_MATERIALIZATION.value, "refresh_staging",
                         event_specific_data=StepMaterializationData(dg.AssetMaterialization(asset)))
    return EventLogEntry(error_info=None, level="DEBUG", user_message="", run_id=run_id, timestamp=time.time(),
                         dagster_event=event)


def test_the_asset_key_columns_are_probed_once_per_storage(tmp_path, monkeypatch):
    """Dagster reads the asset-key table's columns back before every asset event; a yes is kept."""
    probed: list[str] = []
    probe = SqlEventLogStorage._has_asset_key_col_on_connection
    monkeypatch.setattr(SqlEventLogStorage, "_has_asset_key_col_on_connection",
                        lambda self, conn, column: probed.append(column) or probe(self, conn, column))
    storage = KeptOpenSqliteEventLogStorage(str(tmp_path))
    try:
        run_id = str(uuid.uuid4())
        for asset in ("region", "customer", "region", "person"):
            storage.store_event(materialization(run_id, asset))
        storage.wait_for_writes()
        assert probed and len(probed) == len(set(probed))
        assert {r.asset_entry.asset_key.to_user_string() for r in storage.get_asset_records()} == {
            "region", "customer", "person"}
    finally:
        storage.dispose()


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


def run_event(run_id: str, event_type: DagsterEventType) -> EventLogEntry:
    return EventLogEntry(error_info=None, level="DEBUG", user_message="", run_id=run_id, timestamp=time.time(),
                         dagster_event=DagsterEvent(event_type.value, "refresh_staging"))


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
    writer.store_event(run_event(run_id, DagsterEventType.RUN_SUCCESS))
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
        "from dagster._core.events.log import EventLogEntry\n"
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
