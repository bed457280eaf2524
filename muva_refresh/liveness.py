"""Which refresh runs the instance shows in progress still have a process, and closing those that do not.

A refresh in progress holds the target's refresh lock from its guards to its last check, in a
session that names its run (application_name `muva_refresh target run <id>`); the lock goes with
the connection, so a killed process cannot keep it. A run without it is starting, finishing, or
dead: the process tag it wrote at its start tells which at once on the same host; from another
host, a run that has logged nothing for DEAD_AFTER_SILENT_S is taken for dead. Runs that never
started are Dagster's run monitoring's (start_timeout_seconds in both instance configs).
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from typing import AbstractSet, Iterable

import dagster as dg
import psycopg

from .catalog import Catalog, Table, TableRef
from .compare import has_rows
from .endpoint import Endpoint
from .graph import make_plan
from .guards import refresh_lock_holder
from .translator import TableTranslator

PROCESS_TAG = "muva_refresh/process"
# From another host a process cannot be looked at: a run with no lock and no event for this long
# is dead. Long enough for a run to start (code loaded, production reached) or finish writing its
# events (the storages write on a thread of their own) without either.
DEAD_AFTER_SILENT_S = 120
IN_PROGRESS = [dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


@dataclass(frozen=True)
class ProcessIdentity:
    """A process as another process on the same host can check it: a pid means one process only
    within its pid namespace, and only until it ends (its start time tells a reused pid apart)."""

    pid: int
    host: str
    namespace: str = ""  # /proc/self/ns/pid, where there is one
    started: str = ""  # clock ticks after boot, from /proc/<pid>/stat

    @classmethod
    def current(cls) -> ProcessIdentity:
        return cls(os.getpid(), socket.gethostname(), pid_namespace(), process_start(os.getpid()) or "")

    def text(self) -> str:
        return " ".join([f"{self.pid}@{self.host}", self.namespace or "-", self.started or "-"])

    @classmethod
    def parse(cls, text: str) -> ProcessIdentity | None:
        parts = text.split()
        pid, _, host = parts[0].partition("@") if parts else ("", "", "")
        if len(parts) != 3 or not pid.isdigit() or not host:
            return None
        return cls(int(pid), host, *("" if p == "-" else p for p in parts[1:]))

    def ended(self) -> bool | None:
        """True when this host shows the process has ended, False while it runs, None when it
        cannot tell (another host or pid namespace)."""
        if self.host != socket.gethostname() or self.namespace != pid_namespace():
            return None
        if self.started:
            return process_start(self.pid) != self.started
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


def pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def process_start(pid: int) -> str | None:
    """The process's start time after boot, in clock ticks; None without /proc, or when the
    process has ended (a zombie not yet reaped has ended too)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()  # past the command name, which may hold spaces
    except OSError:
        return None
    if len(fields) <= 19 or fields[0] in ("Z", "X"):
        return None
    return fields[19]  # field 22 of stat, the 20th after the name


@dataclass(frozen=True)
class DeadRun:
    run_id: str
    reason: str  # also the failure message the run now carries


def refresh_runs(instance: dg.DagsterInstance, job_name: str, table_keys: AbstractSet[dg.AssetKey],
                 statuses: list[dg.DagsterRunStatus]) -> list[dg.DagsterRun]:
    """Runs of `job_name`, or any that materialize a table, whatever its job: the UI's "Materialize
    all" launches the tables under a job of Dagster's own."""
    return [run for run in instance.get_runs(filters=dg.RunsFilter(statuses=statuses))
            if run.job_name == job_name or not table_keys.isdisjoint(run.asset_selection or ())]


def last_heard(instance: dg.DagsterInstance, run: dg.DagsterRun) -> float:
    records = instance.get_records_for_run(run.run_id, limit=1, ascending=False).records
    if records:
        return records[0].event_log_entry.timestamp
    record = instance.get_run_record_by_id(run.run_id)
    return record.update_timestamp.timestamp() if record else 0.0


def why_dead(instance: dg.DagsterInstance, run: dg.DagsterRun, lock_run: str | None) -> str | None:
    """Why `run` has no process any more; None while it may have one."""
    if run.run_id == lock_run:
        return None
    identity = ProcessIdentity.parse(run.tags.get(PROCESS_TAG, ""))
    ended = identity.ended() if identity else None
    if ended is not None:
        return f"pid {identity.pid} on {identity.host} has ended" if ended else None
    silent = time.time() - last_heard(instance, run)
    if silent < DEAD_AFTER_SILENT_S:
        return None
    return f"not visible from this host, and nothing logged for {silent:.0f} s"


def run_workers(run: dg.DagsterRun) -> int:
    ops = (run.run_config or {}).get("ops", {})
    return max([int(op.get("config", {}).get("workers", 1)) for op in ops.values() if isinstance(op, dict)]
               or [1])


def stored_a_materialization(instance: dg.DagsterInstance, run: dg.DagsterRun) -> bool:
    return bool(instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION,
                                             limit=1).records)


def holds_rows(conn: psycopg.Connection, table: Table) -> bool:
    """False for a table staging does not have (it lags production's migrations)."""
    try:
        return has_rows(conn, table)
    except psycopg.Error:
        return False
    finally:
        conn.rollback()


class DeadRefreshes:
    """Finds the refresh runs of one catalog that have no process left and marks them failed,
    saying what staging holds now."""

    def __init__(self, catalog: Catalog, job_name: str, translator: TableTranslator | None = None):
        self.catalog, self.job_name = catalog, job_name
        self.keys = (translator or TableTranslator()).keys(catalog)
        self.table_keys = frozenset(self.keys.key_of.values())  # materialized views too: refreshing one takes the lock

    def in_progress(self, instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
        return refresh_runs(instance, self.job_name, self.table_keys, IN_PROGRESS)

    def close(self, instance: dg.DagsterInstance, target: Endpoint) -> list[DeadRun]:
        """Mark failed every refresh run without a process; a run closed meanwhile is left alone."""
        runs = self.in_progress(instance)
        if not runs:
            return []
        conn = target.connect(read_only=True)
        try:
            holder = refresh_lock_holder(conn)
            conn.rollback()
            closed = []
            for run in runs:
                why = why_dead(instance, run, holder.run_id if holder else None)
                current = instance.get_run_by_id(run.run_id) if why else None
                if current is not None and not current.is_finished:
                    reason = (f"The refresh's process is gone ({why}), and no session on the target holds the "
                              f"refresh lock for this run. {self.what_staging_holds(conn, instance, current)}")
                    instance.report_run_failed(current, reason)
                    closed.append(DeadRun(run.run_id, reason))
            return closed
        finally:
            conn.close()

    def what_staging_holds(self, conn: psycopg.Connection, instance: dg.DagsterInstance, run: dg.DagsterRun) -> str:
        if run_workers(run) > 1:
            return self.levels_loaded(conn, self.tables_of(run))
        if stored_a_materialization(instance, run):
            return ("Its load had committed (its tables' materializations are stored), so staging holds this "
                    "refresh; the checks after COMMIT may not have run: `muva-refresh validate` runs them.")
        return ("Its load was one target transaction, which ended with its connection: staging was rolled back "
                "and holds what it held before this run.")

    def tables_of(self, run: dg.DagsterRun) -> list[TableRef]:
        if not run.asset_selection:
            return list(self.catalog.refs)
        return [ref for key, ref in self.keys.table_of.items() if key in run.asset_selection and ref in self.catalog.by_ref]

    def levels_loaded(self, conn: psycopg.Connection, refs: Iterable[TableRef]) -> str:
        """In parallel mode the selection was emptied first, then each table committed on its own."""
        plan = make_plan(self.catalog)
        levels: dict[int, list[bool]] = {}
        for ref in sorted(refs):
            levels.setdefault(plan.level[ref], []).append(holds_rows(conn, self.catalog.table(ref)))
        held = "; ".join(f"level {level}: {sum(rows)} of {len(rows)} tables" for level, rows in sorted(levels.items()))
        return ("It ran in parallel mode, which empties the selected tables first and then commits each one "
                f"as it is loaded, so on staging now these hold rows: {held}. The empty ones were not loaded "
                "(or are empty on production too); \"Re-execute > From asset failure\" loads the rest.")
