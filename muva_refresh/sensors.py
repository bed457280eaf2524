"""The deploy sensor: one staging refresh per production deploy, read from a migration marker, and
the sensor that closes refresh runs whose process is gone."""


# No `from __future__ import annotations`: Dagster reads the sensor functions' annotations.
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import dagster as dg
import psycopg
from psycopg import sql

from .catalog import Catalog, graph_drift, read_catalog
from .endpoint import Endpoint, describe
from .errors import ConfigError, RefreshError
from .graph import make_plan
from .guards import lag_message, listed, schema_lag
from .liveness import DeadRefreshes, DeadRun, refresh_runs
from .resources import PostgresDatabase
from .settings import DAGSTER_URL_VAR, MARKER_SQL_VAR, SENSOR_INTERVAL_VAR, Settings, TableFilter
from .translator import TableTranslator

SENSOR_NAME = "prod_deploy_sensor"
DEAD_RUN_SENSOR_NAME = "dead_refresh_sensor"
DEPLOY_TAG = "muva_refresh/deploy"
ACTIVE_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,  # may still hold the target until it stops
]
# A tick gets about 60 s from the daemon; fail fast with a reason instead of timing out.
CONNECT_TIMEOUT_S = 10
RELOAD_TIMEOUT_S = 60
RELOAD_PATIENCE_S = 60
STATEMENT_TIMEOUT = sql.SQL("SET statement_timeout = '20s'")  # the session: marker and catalog

DESCRIPTION = " ".join([
    "Requests one `{job}` run per production deploy.",
    "Each tick reads a deploy marker from production over a read-only connection",
    f"(set {MARKER_SQL_VAR} to a query returning one text value that changes with each deploy)",
    "and compares it with the cursor. A new marker requests a refresh with run key `deploy-<marker>`,",
    "so a deploy is refreshed once, even across daemon restarts. It skips, saying why, without",
    "advancing the cursor: while a refresh is queued or running (a run whose process is gone is",
    "marked failed first); while staging lacks a migration production has (it names the columns);",
    "and when production's graph changed (tables, FKs, materialized views): it saves the new catalog",
    f"state and reloads the code location through the webserver ({DAGSTER_URL_VAR}), and refreshes",
    "the deploy on the first tick the definitions show it. Off by default: a refresh rewrites staging.",
])


def read_marker(conn: psycopg.Connection, query: str) -> str | None:
    """The first column of the first row, as text; None when there is no row or it is NULL/empty."""
    conn.execute(STATEMENT_TIMEOUT)
    row = conn.execute(sql.SQL(query)).fetchone()  # operator-supplied, whole: nothing is interpolated
    if not row or row[0] is None:
        return None
    return str(row[0]).strip() or None


def connect_or_skip(endpoint: Endpoint, purpose: str) -> psycopg.Connection | dg.SkipReason:
    try:
        return endpoint.with_connect_timeout(CONNECT_TIMEOUT_S).connect(read_only=True)
    except (RefreshError, psycopg.Error) as exc:
        return dg.SkipReason(f"cannot {purpose}: {describe(exc, endpoint)}")


def marker_or_skip(conn: psycopg.Connection, query: str, endpoint: Endpoint) -> str | dg.SkipReason:
    """The deploy marker, or why there is none to act on."""
    try:
        marker = read_marker(conn, query)
    except psycopg.errors.UndefinedTable as exc:
        return dg.SkipReason(
            f"the deploy marker query `{query}` failed: {describe(exc, endpoint)}. "
            f"Set {MARKER_SQL_VAR} to a query returning one text value that changes with "
            f"each production deploy (e.g. from your migration tool's history table)."
        )
    except psycopg.Error as exc:
        return dg.SkipReason(
            f"the deploy marker query `{query}` failed: {describe(exc, endpoint)}; "
            f"check {MARKER_SQL_VAR}."
        )
    if marker is None:
        return dg.SkipReason(
            f"the deploy marker query `{query}` returned no value (no rows or NULL); "
            f"record a migration there, or set {MARKER_SQL_VAR} to a query that returns "
            f"one text value per deploy."
        )
    return marker


def catalog_or_skip(conn: psycopg.Connection, table_filter: TableFilter, endpoint: Endpoint,
                    side: str) -> Catalog | dg.SkipReason:
    try:
        conn.execute(STATEMENT_TIMEOUT)
        return read_catalog(conn, table_filter)
    except psycopg.Error as exc:
        return dg.SkipReason(f"cannot read {side}'s catalog: {describe(exc, endpoint)}")


def closed_note(closed: list[DeadRun]) -> str:
    return "".join(f"Marked run {dead.run_id} failed: {dead.reason} " for dead in closed)


class DeploySensor:
    """What one tick of the deploy sensor does, step by step; each step returns a SkipReason to stop."""

    def __init__(self, catalog: Catalog, job_name: str, settings: Settings, translator: TableTranslator):
        self.catalog, self.job_name, self.settings = catalog, job_name, settings
        self.dead = DeadRefreshes(catalog, job_name, translator)
        self.reload = CodeLocationReload()

    def busy(self, context: dg.SensorEvaluationContext, target: Endpoint, marker: str) -> dg.SkipReason | None:
        """Why the deploy must wait for a refresh in progress; dead ones are closed first, and said so."""
        closed: list[DeadRun] = []
        if self.dead.in_progress(context.instance):
            try:
                closed = self.dead.close(context.instance, target)
            except (RefreshError, psycopg.Error) as exc:
                context.log.warning(f"cannot tell whether a refresh in progress is alive: {describe(exc, target)}")
        for dead in closed:
            context.log.info(f"marked run {dead.run_id} failed: {dead.reason}")
        running = refresh_runs(context.instance, self.job_name, self.dead.table_keys, ACTIVE_STATUSES)
        if not running:
            return None
        return dg.SkipReason(
            f"{closed_note(closed)}deploy {marker} is waiting: a refresh is already queued or running "
            f"(run id {running[0].run_id}, {running[0].status.value}); the next tick retries"
        )

    def follow_graph(self, context: dg.SensorEvaluationContext, live: Catalog, marker: str) -> dg.SkipReason | None:
        """Production's graph against the one this code location loaded: the same, or a reload to wait for."""
        saved = save_state(live, self.settings.state_path)
        changes = graph_drift(self.catalog, live)
        if not changes:
            return None
        reloaded = self.reload.request(self.settings.dagster_url, context)
        return dg.SkipReason(
            f"production's graph changed: {'; '.join(listed(changes))}. {saved} {reloaded} Deploy {marker} "
            "is refreshed on the first tick after the code location has loaded the new graph."
        )

    def staging_lag(self, live: Catalog, target: Endpoint, marker: str) -> dg.SkipReason | None:
        """Why staging cannot take production's rows yet: the migrations it lacks."""
        conn = connect_or_skip(target, "read staging's catalog")
        if isinstance(conn, dg.SkipReason):
            return conn
        try:
            target_catalog = catalog_or_skip(conn, TableFilter(live.schemas), target, "staging")
        finally:
            conn.close()
        if isinstance(target_catalog, dg.SkipReason):
            return target_catalog
        problems = schema_lag(make_plan(live), target_catalog)
        if not problems:
            return None
        return dg.SkipReason(
            f"deploy {marker} is waiting: {lag_message(problems)}. Nothing was touched; the first tick after "
            "staging has caught up refreshes this deploy."
        )

    def tick(self, context: dg.SensorEvaluationContext, source: Endpoint,
             target: Endpoint) -> dg.SensorResult | dg.SkipReason:
        conn = connect_or_skip(source, "read the deploy marker")
        if isinstance(conn, dg.SkipReason):
            return conn
        try:
            marker = marker_or_skip(conn, self.settings.deploy_marker_sql, source)
            if isinstance(marker, dg.SkipReason):
                return marker
            if marker == context.cursor:
                return dg.SkipReason(f"no new deploy: {marker} was already requested")
            busy = self.busy(context, target, marker)
            if busy is not None:
                return busy
            live = catalog_or_skip(conn, self.catalog.table_filter, source, "production")
        finally:
            conn.close()
        if isinstance(live, dg.SkipReason):
            return live
        waiting = self.follow_graph(context, live, marker)
        if waiting is None:
            waiting = self.staging_lag(live, target, marker)
        if waiting is not None:
            return waiting
        return dg.SensorResult(
            run_requests=[dg.RunRequest(run_key=f"deploy-{marker}", tags={DEPLOY_TAG: marker})], cursor=marker
        )


def save_state(live: Catalog, path: Path) -> str:
    """Keep the state file as production is now (the graph, and the columns the asset metadata
    shows), writing it only when it differs; a sentence for the tick's reason."""
    try:
        if Catalog.load(path, live.table_filter).fingerprint() == live.fingerprint():
            return f"The catalog state at {path} is current."
    except ConfigError:
        pass  # missing, unreadable or of another filter: write it
    try:
        live.save(path)
    except OSError as exc:
        return f"The catalog state at {path} could not be saved ({exc.strerror}); run `muva-refresh introspect`."
    return f"Saved the new catalog state to {path}."


class CodeLocationReload:
    """Asks the webserver to reload this code location, on a thread of its own: the reload replaces
    the process the sensor runs in, so the tick returns first. A request is not repeated for
    RELOAD_PATIENCE_S, while the reload it asked for takes its time."""

    def __init__(self) -> None:
        self.asked_at = 0.0

    def request(self, url: str, context: dg.SensorEvaluationContext) -> str:
        """A sentence for the tick's reason."""
        origin = context.code_location_origin
        if not url or origin is None:
            return (f"Set {DAGSTER_URL_VAR} to the webserver's address for the sensor to reload the code location "
                    "itself; until then reload it in the UI (Deployment > Reload), or restart it.")
        if time.monotonic() - self.asked_at < RELOAD_PATIENCE_S:
            return f"A reload of code location {origin.location_name} was asked for; waiting for it."
        self.asked_at = time.monotonic()
        threading.Thread(target=reload_location, args=(url, origin.location_name), daemon=True,
                         name="muva-reload").start()
        return f"Asked {url} to reload code location {origin.location_name}."


def reload_location(url: str, location: str) -> None:
    # Imported here: gql costs every CLI command about half a second, and only this sensor uses it.
    from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError, ReloadRepositoryLocationStatus

    log = dg.get_dagster_logger()  # the tick's own log has closed by now
    parts = urlsplit(url)
    client = DagsterGraphQLClient(parts.hostname or "", port_number=parts.port, use_https=parts.scheme == "https",
                                  timeout=RELOAD_TIMEOUT_S, path_prefix=parts.path.rstrip("/"))
    try:
        done = client.reload_repository_location(location)
    except DagsterGraphQLClientError as exc:
        log.warning(f"reloading code location {location} through {url} failed: {str(exc).splitlines()[0]}")
        return
    if done.status != ReloadRepositoryLocationStatus.SUCCESS:
        log.warning(f"reloading code location {location} failed: {done.message}")


def build_deploy_sensor(catalog: Catalog, job_name: str, settings: Settings | None = None,
                        translator: TableTranslator | None = None) -> dg.SensorDefinition:
    """A sensor that requests one `job_name` run per production deploy, read with the settings'
    marker query. `catalog` is the saved state the definitions were built from: when production's
    graph moves away from it, the sensor saves the new state and reloads the code location, so
    that the refresh runs on definitions that hold every table. `translator` names the table
    assets, so that a run of them under any job holds a deploy back.
    """
    settings = settings or Settings.load()
    deploys = DeploySensor(catalog, job_name, settings, translator or TableTranslator())

    @dg.sensor(
        job_name=job_name,
        name=SENSOR_NAME,
        minimum_interval_seconds=settings.sensor_interval_s,
        # Off until an operator turns it on: every refresh rewrites the staging tables.
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=DESCRIPTION.replace("{job}", job_name),
    )
    def prod_deploy_sensor(
        context: dg.SensorEvaluationContext, source: PostgresDatabase, target: PostgresDatabase
    ) -> dg.SensorResult | dg.SkipReason:
        # Every failure becomes a SkipReason: a raising sensor only fills the tick log with errors.
        return deploys.tick(context, source.endpoint(), target.endpoint().with_connect_timeout(CONNECT_TIMEOUT_S))

    return prod_deploy_sensor


def build_dead_run_sensor(catalog: Catalog, job_name: str, settings: Settings | None = None,
                          translator: TableTranslator | None = None) -> dg.SensorDefinition:
    """A sensor, on by default, that marks failed the refresh runs whose process is gone, so that
    neither the run queue (one refresh at a time) nor the deploy sensor waits on them. It reads
    runs and pg_stat_activity only; it requests nothing."""
    settings = settings or Settings.load()
    dead = DeadRefreshes(catalog, job_name, translator)

    @dg.sensor(
        name=DEAD_RUN_SENSOR_NAME,
        minimum_interval_seconds=settings.sensor_interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Marks failed a refresh run whose process is gone (killed, out of memory, a restarted "
                    "container), saying what staging holds now, so that no refresh waits on it. "
                    f"Every {SENSOR_INTERVAL_VAR} seconds; it touches no table.",
    )
    def dead_refresh_sensor(context: dg.SensorEvaluationContext, target: PostgresDatabase) -> dg.SkipReason:
        if not dead.in_progress(context.instance):
            return dg.SkipReason("no refresh in progress")
        try:
            closed = dead.close(context.instance, target.endpoint().with_connect_timeout(CONNECT_TIMEOUT_S))
        except (RefreshError, psycopg.Error) as exc:
            return dg.SkipReason(f"cannot read staging's sessions: {describe(exc, target.endpoint())}")
        return dg.SkipReason(closed_note(closed).strip() or "every refresh in progress holds the target's lock "
                             "or is starting or finishing")

    return dead_refresh_sensor
