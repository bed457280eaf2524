"""Dagster event-log storages that keep their database connections, named in dagster.yaml.

A refresh stores about a thousand events: a planned event, an output and a result for every
table and every check. Dagster 1.13.27's storages open a new connection for each write (NullPool),
three or four per check event, and SQLite also syncs and checkpoints its file on every close;
that costs 6 to 30 ms an event, more than the copy itself at seed size. These subclasses change
how connections are held, write on a thread of their own while the process goes on, and leave
out a NOTIFY no reader of this release listens to, so every process that reads dagster.yaml (the
CLI, the webserver, the daemon, a run worker) writes the same tables the same way.

They override private methods of Dagster's storages, checked against one release only. Under any
other, or when a private name they import is gone, building one builds Dagster's own storage
instead, with one warning per process: an upgrade makes refreshes slower, never stops them.
This is the only module of the package that imports Dagster's private names.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import queue
import threading
from collections import OrderedDict
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

import dagster as dg
import sqlalchemy as db

# Dagster's SQLite event log has no public import; this is the path Dagster's own docs give
# dagster.yaml for it. Without it there is no SQLite storage to fall back to either.
from dagster._core.storage.event_log import SqliteEventLogStorage
from dagster_postgres import PostgresEventLogStorage
from sqlalchemy.pool import StaticPool

from .errors import ConfigError

try:  # the tuned storages' private helpers; without any of them, the storages are Dagster's own
    from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
    from dagster_postgres.event_log.event_log import CHANNEL_NAME
    from dagster_postgres.utils import create_pg_engine, get_token_provider_from_config, pg_url_from_config
except ImportError as missing:
    MISSING_PRIVATE_NAME: str | None = str(missing)
else:
    MISSING_PRIVATE_NAME = None
    NOTIFY_EVENT = f"NOTIFY {CHANNEL_NAME},"

if TYPE_CHECKING:
    from dagster._serdes import ConfigurableClassData

WRITTEN_FOR_DAGSTER = "1.13.27"  # pyproject.toml pins dagster to this release
DAGSTER_VERSION = dg.__version__
OPEN_SHARDS = 8  # SQLite run files kept open at once; the webserver reads many runs
# As dagster-postgres pools the webserver's connections (optimize_for_webserver): no ping per checkout.
POSTGRES_POOL = {"pool_size": 2, "max_overflow": 8, "pool_recycle": 600}
WRITE_QUEUE_EVENTS = 512  # how far the writer may fall behind before Dagster waits for it
WRITER_STARTING = threading.Lock()  # one writer thread per storage, whichever thread stores first
PROBING = threading.local()  # set while a thread asks the schema, which no queued event changes
LOGGER = logging.getLogger(__name__)


@functools.cache
def fallback_reason() -> str | None:
    """Why this process builds Dagster's own storages instead of these, or None on the release
    they were checked against. Decided, and warned about, once per process."""
    if DAGSTER_VERSION == WRITTEN_FOR_DAGSTER and MISSING_PRIVATE_NAME is None:
        return None
    lacking = f" and lacks a name they import ({MISSING_PRIVATE_NAME})" if MISSING_PRIVATE_NAME else ""
    reason = (
        f"muva_refresh's event-log storages were checked against dagster {WRITTEN_FOR_DAGSTER}; dagster "
        f"{DAGSTER_VERSION} is installed{lacking}"
    )
    LOGGER.warning(
        "%s: they run as Dagster's own storages (the same tables and history, without kept connections or "
        "background writes, so refreshes are slower). Install dagster==%s as pyproject.toml pins it, or check "
        "muva_refresh/storage.py against dagster %s and set WRITTEN_FOR_DAGSTER to it.",
        reason, WRITTEN_FOR_DAGSTER, DAGSTER_VERSION,
    )
    return reason


class CachedSchemaProbes:
    """Dagster asks whether a table exists before every check event, and whether a column of its
    asset-key table exists before every asset event. Migrations only ever add them, so a yes is
    kept for the life of the storage. A probe reads the schema, not the events, so it does not
    wait for the events this process has yet to write (WrittenInBackground)."""

    def has_table(self, table_name: str) -> bool:
        seen = self.__dict__.setdefault("_tables_seen", set())
        if table_name not in seen:
            with schema_probe():
                if super().has_table(table_name):  # type: ignore[misc]
                    seen.add(table_name)
        return table_name in seen

    def has_asset_key_col(self, column_name: str) -> bool:
        if column_name in self.__dict__.get("_asset_key_columns_seen", ()):
            return True  # without opening a connection to ask again
        with schema_probe():
            return super().has_asset_key_col(column_name)  # type: ignore[misc]

    def _has_asset_key_col_on_connection(self, conn: Any, column_name: str) -> bool:
        seen = self.__dict__.setdefault("_asset_key_columns_seen", set())
        if column_name not in seen and super()._has_asset_key_col_on_connection(conn, column_name):  # type: ignore[misc]
            seen.add(column_name)
        return column_name in seen


@contextmanager
def schema_probe() -> Iterator[None]:
    outer = getattr(PROBING, "schema", False)
    PROBING.schema = True
    try:
        yield
    finally:
        PROBING.schema = outer


class WrittenInBackground:
    """Events stored on a thread of the storage's own, in the order they came, while the process
    goes on: a refresh's events mostly arrive while the load waits on the servers, or in bursts
    whose SQL waits on a disk or a socket.

    Anything else the storage does (every read, from any thread of this process) first waits for
    the queue to empty, so the process reads what it wrote. Run-level events other than the run's
    start are written at once, after the queue: another process acts on them (the daemon
    dequeues a run, a reader sees it end), so the events before them are stored by then. A failed
    write is raised by the next call, and exit and dispose() wait for the queue.
    """

    def store_event(self, event: dg.EventLogEntry) -> None:
        writer = self._writer()
        writer.raise_failure()
        if written_at_once(event):
            self.wait_for_writes()
            self.write_event(event)
        else:
            writer.queue.put(event)

    def write_event(self, event: dg.EventLogEntry) -> None:
        super().store_event(event)  # type: ignore[misc]

    def wait_for_writes(self) -> None:
        if getattr(PROBING, "schema", False):
            return
        writer = self.__dict__.get("_event_writer")
        if writer is not None and threading.current_thread() is not writer.thread:
            writer.queue.join()
            writer.raise_failure()

    def _writer(self) -> "EventWriter":
        with WRITER_STARTING:
            writer = self.__dict__.get("_event_writer")
            if writer is None:
                writer = self.__dict__["_event_writer"] = EventWriter(self.write_event)
            return writer

    def stop_writer(self) -> None:
        writer = self.__dict__.pop("_event_writer", None)
        if writer is not None:
            writer.stop()


class EventWriter:
    """The thread behind WrittenInBackground: one queue, written in order."""

    def __init__(self, write: Callable[[dg.EventLogEntry], None]):
        self.queue: queue.Queue[dg.EventLogEntry | None] = queue.Queue(WRITE_QUEUE_EVENTS)
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self.run, args=(write,), name="muva-event-writer", daemon=True)
        self.thread.start()
        atexit.register(self.stop)  # a process that never disposes its instance still stores everything

    def run(self, write: Callable[[dg.EventLogEntry], None]) -> None:
        while True:
            event = self.queue.get()
            try:
                if event is None:
                    return
                write(event)
            except BaseException as exc:  # raised to the process by its next call
                if self.failure is None:
                    self.failure = exc
            finally:
                self.queue.task_done()

    def raise_failure(self) -> None:
        failure, self.failure = self.failure, None
        if failure is not None:
            raise failure

    def stop(self) -> None:
        if self.thread.is_alive():
            self.queue.put(None)
            self.thread.join()
        atexit.unregister(self.stop)
        self.raise_failure()


def written_at_once(event: dg.EventLogEntry) -> bool:
    dagster_event = event.dagster_event
    return (dagster_event is not None and dagster_event.is_job_event
            and dagster_event.event_type != dg.DagsterEventType.RUN_START)


class KeptOpenSqliteEventLogStorage(WrittenInBackground, CachedSchemaProbes, SqliteEventLogStorage):
    """SQLite event log (a file per run plus an index file) with one open connection per file.

    Commits are synchronous=NORMAL, which WAL makes safe against a crash of the process; the
    last events before a power loss may be lost. Dagster's own watcher (the UI's live run log)
    waits for the run file to change, which used to happen at each close's checkpoint; a
    touch of the file after each event tells it instead.
    """

    def __new__(cls, base_dir: str | None = None, inst_data: ConfigurableClassData | None = None) -> Any:
        """Dagster's own storage instead, on a release this class was not checked against."""
        if fallback_reason() is None:
            return super().__new__(cls)
        return SqliteEventLogStorage(base_dir or default_event_log_dir(), inst_data)

    def __init__(self, base_dir: str | None = None, inst_data: ConfigurableClassData | None = None):
        self._engines: OrderedDict[str, Any] = OrderedDict()
        self._engines_lock = threading.Lock()
        super().__init__(base_dir or default_event_log_dir(), inst_data)

    @classmethod
    def config_type(cls) -> Mapping[str, Any]:
        return {"base_dir": dg.Field(dg.StringSource, is_required=False)}

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
                          ) -> SqliteEventLogStorage:
        return cls(config_value.get("base_dir"), inst_data=inst_data)

    def engine_for(self, shard: str) -> Any:
        with self._engines_lock:
            engine = self._engines.pop(shard, None)
            if engine is None:
                engine = db.create_engine(
                    self.conn_string_for_shard(shard),
                    poolclass=StaticPool,  # _db_lock already lets one thread in at a time
                    connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
                )
                db.event.listen(engine, "connect", relaxed_sync)
            self._engines[shard] = engine
            while len(self._engines) > OPEN_SHARDS:
                self._engines.popitem(last=False)[1].dispose()
            return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Any]:
        self.wait_for_writes()
        with self._db_lock:
            engine = self.engine_for(shard)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def write_event(self, event: dg.EventLogEntry) -> None:
        super().write_event(event)
        path = self.path_for_shard(event.run_id)
        if os.path.exists(path):
            os.utime(path)  # wakes the watchers of this run, as a checkpoint on close used to

    def dispose(self) -> None:
        self.stop_writer()
        super().dispose()
        with self._engines_lock:
            while self._engines:
                self._engines.popitem()[1].dispose()


class PooledPostgresEventLogStorage(WrittenInBackground, CachedSchemaProbes, PostgresEventLogStorage):
    """dagster-postgres's event log with a small connection pool instead of a connection per write,
    and without the NOTIFY after each event."""

    def __new__(cls, postgres_url: str, should_autocreate_tables: bool = True,
                inst_data: ConfigurableClassData | None = None, token_provider: Any = None) -> Any:
        """Dagster's own storage instead, on a release this class was not checked against."""
        if fallback_reason() is None:
            return super().__new__(cls)
        return PostgresEventLogStorage(postgres_url, should_autocreate_tables, inst_data, token_provider)

    def __init__(self, postgres_url: str, should_autocreate_tables: bool = True,
                 inst_data: ConfigurableClassData | None = None, token_provider: Any = None):
        super().__init__(postgres_url, should_autocreate_tables, inst_data, token_provider)
        self._engine.dispose()
        self._engine = create_pg_engine(postgres_url, token_provider, isolation_level="AUTOCOMMIT", **POSTGRES_POOL)
        tune(self._engine)

    def optimize_for_webserver(self, statement_timeout: int, pool_recycle: int, max_overflow: int) -> None:
        """The webserver's own pool, which writes the planned events of a run launched from the UI."""
        super().optimize_for_webserver(statement_timeout, pool_recycle, max_overflow)
        tune(self._engine)

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
                          ) -> PostgresEventLogStorage:
        if fallback_reason() is not None:  # dagster-postgres's own reading of the config
            return PostgresEventLogStorage.from_config_value(inst_data, config_value)
        return cls(
            pg_url_from_config(config_value),
            config_value.get("should_autocreate_tables", True),
            inst_data=inst_data,
            token_provider=get_token_provider_from_config(config_value),
        )

    @contextmanager
    def _connect(self) -> Iterator[Any]:
        self.wait_for_writes()
        with super()._connect() as conn:
            yield conn

    def dispose(self) -> None:
        self.stop_writer()
        super().dispose()
        self._engine.dispose()


def tune(engine: Any) -> None:
    db.event.listen(engine, "connect", asynchronous_commit)
    db.event.listen(engine, "do_execute", skip_event_notify)


def skip_event_notify(_cursor: Any, statement: str, _parameters: Any, _context: Any) -> bool | None:
    """dagster-postgres sends a NOTIFY after each event it stores, kept only for readers of older
    releases: its own watchers poll. Every process that reads this dagster.yaml runs the pinned
    release, so the NOTIFY is reported done without reaching the server (SQLAlchemy's do_execute
    event): a third of a refresh's statements, each a round trip."""
    return True if statement.startswith(NOTIFY_EVENT) else None


def asynchronous_commit(dbapi_connection: Any, _record: Any) -> None:
    """Each event is several autocommitted statements; not waiting for each WAL flush is what
    makes them cheap. A crash of the server may lose the last events, never corrupt the log."""
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit = off")
    dbapi_connection.commit()


def relaxed_sync(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.execute("PRAGMA synchronous=NORMAL")


def default_event_log_dir() -> str:
    """Where Dagster's default SQLite storage keeps the event log, so history carries over."""
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        raise ConfigError("DAGSTER_HOME is not set", "set it, or give the event-log storage a base_dir in dagster.yaml")
    return os.path.join(home, "storage", "history", "runs", "")
