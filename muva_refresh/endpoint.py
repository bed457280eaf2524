"""A database the tool talks to: connecting, read-only sessions, and messages without secrets."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field, replace
from typing import Callable

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from .errors import ConfigError
from .settings import DSN_VARS

READ_ONLY_SESSION = sql.SQL("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
SET_SESSION_VALUE = sql.SQL("SELECT set_config(%s, %s, false)")
# Text COPY and the content hash depend on how values are written out: both sides write alike,
# whatever each server's defaults.
TEXT_SETTINGS = sql.SQL(
    "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY'; SET IntervalStyle = 'postgres'; SET extra_float_digits = 1"
)
# A server busy with a long statement (an index build) notices a killed client within seconds, ends
# the session and rolls it back, instead of holding the refresh lock until the statement is done.
NOTICE_LOST_CLIENT = sql.SQL("SET client_connection_check_interval = '5s'")
CHECKS_LOST_CLIENT_FROM = 140000  # PostgreSQL 14
APPLICATION = "muva_refresh"
# A run's sessions carry its id in application_name, which pg_stat_activity shows to every
# session of the role: "muva_refresh target run <uuid>" (at most 63 bytes).
RUN_SESSION = re.compile(rf"^{APPLICATION} \w+ run ([0-9a-f-]{{36}})$")


def run_of_session(application_name: str) -> str | None:
    """The Dagster run a session works for, from its application_name; None for other sessions."""
    found = RUN_SESSION.match(application_name or "")
    return found.group(1) if found else None


@dataclass(frozen=True)
class Endpoint:
    """A database reached by DSN. Its str and repr never contain the password."""

    role: str  # "source" or "target"
    dsn: str = field(repr=False)
    # Custom settings for every session, such as the masking key: sent as bound parameters, never shown.
    session: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    run_id: str = ""  # the Dagster run the sessions work for, shown in pg_stat_activity

    @property
    def application_name(self) -> str:
        return f"{APPLICATION} {self.role}" + (f" run {self.run_id}" if self.run_id else "")

    def __str__(self) -> str:
        try:
            info = conninfo_to_dict(self.dsn)
        except psycopg.Error:
            return f"{self.role} (unparsable DSN)"
        return f"{self.role} {info.get('user', '?')}@{info.get('host', 'localhost')}/{info.get('dbname', '?')}"

    @property
    def password(self) -> str | None:
        try:
            return conninfo_to_dict(self.dsn).get("password") or None
        except psycopg.Error:
            return None

    def scrub(self, text: str) -> str:
        """Remove the password (and any DSN-looking secret) from a message."""
        secret = self.password
        if secret:
            text = text.replace(secret, "***")
        return re.sub(r"(password\s*=\s*)\S+", r"\1***", text)

    def with_connect_timeout(self, seconds: int) -> "Endpoint":
        """The same database, bounded in how long an unreachable server can keep a caller waiting."""
        try:
            if not self.dsn or "connect_timeout" in conninfo_to_dict(self.dsn):
                return self
            return replace(self, dsn=make_conninfo(self.dsn, connect_timeout=seconds))
        except psycopg.Error:
            return self  # unparsable: let connect() report it, scrubbed

    def connect(self, *, read_only: bool) -> psycopg.Connection:
        if not self.dsn:
            raise ConfigError(f"no DSN for the {self.role}", f"set {DSN_VARS.get(self.role, 'its DSN')}")
        try:
            conn = psycopg.connect(self.dsn, application_name=self.application_name)
        except psycopg.Error as exc:
            raise ConfigError(f"cannot connect to the {self}: {describe(exc, self)}") from None
        conn.execute(TEXT_SETTINGS)
        for name, value in self.session:
            conn.execute(SET_SESSION_VALUE, (name, value))
        conn.commit()
        notice_lost_client(conn)
        if read_only:
            # Session-wide: even a statement sent outside our transactions cannot write.
            conn.execute(READ_ONLY_SESSION)
            conn.commit()
            conn.read_only = True
        return conn


def notice_lost_client(conn: psycopg.Connection) -> None:
    """Where the server can (PostgreSQL 14 and later, on Linux and others with POLLRDHUP)."""
    if conn.info.server_version < CHECKS_LOST_CLIENT_FROM:
        return
    try:
        conn.execute(NOTICE_LOST_CLIENT)
        conn.commit()
    except psycopg.Error:
        conn.rollback()


def describe(exc: BaseException, *endpoints: Endpoint) -> str:
    """One line for people: the primary message only, since DETAIL can quote production rows."""
    text = str(exc)
    if isinstance(exc, psycopg.Error) and exc.diag.message_primary:
        text = exc.diag.message_primary
    for endpoint in endpoints:
        text = endpoint.scrub(text)
    return text.strip()


class ThreadConnections:
    """The connections each worker thread opens on first use (`open` returns them as a tuple),
    all closed on exit."""

    def __init__(self, open: Callable[[], tuple[psycopg.Connection, ...]]):
        self.open = open
        self.local = threading.local()
        self.opened: list[psycopg.Connection] = []
        self.lock = threading.Lock()

    def mine(self) -> tuple[psycopg.Connection, ...]:
        if not hasattr(self.local, "conns"):
            self.local.conns = self.open()
            with self.lock:
                self.opened.extend(self.local.conns)
        return self.local.conns

    def __enter__(self) -> "ThreadConnections":
        return self

    def __exit__(self, *exc: object) -> None:
        for conn in self.opened:
            conn.close()
