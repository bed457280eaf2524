"""The deploy sensor: one staging refresh per production deploy, read from a migration marker."""


# No `from __future__ import annotations`: Dagster reads the sensor function's annotations.
from typing import AbstractSet

import dagster as dg
import psycopg
from psycopg import sql

from .catalog import Catalog, catalog_drift, read_catalog
from .endpoint import Endpoint, describe
from .errors import RefreshError
from .guards import listed
from .resources import PostgresDatabase
from .settings import DEFAULT_MARKER_SQL, MARKER_SQL_VAR
from .translator import TableTranslator

SENSOR_NAME = "prod_deploy_sensor"
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
STATEMENT_TIMEOUT = sql.SQL("SET statement_timeout = '20s'")  # the session: marker and catalog

DESCRIPTION = " ".join([
    "Requests one `{job}` run per production deploy.",
    "Each tick reads a deploy marker from production over a read-only connection",
    f"(default `{DEFAULT_MARKER_SQL}`; set {MARKER_SQL_VAR} to a query returning one text value",
    "that changes with each deploy) and compares it with the cursor.",
    "A new marker requests a refresh with run key `deploy-<marker>`, so a deploy is refreshed once",
    "even across daemon restarts.",
    "It skips, without advancing the cursor, while a refresh is queued or running, and when",
    "production's schema no longer matches the saved catalog state: it then lists the changes;",
    "run `muva-refresh introspect`, reload the code location, and the next tick refreshes the deploy.",
    "Off by default: every refresh empties the staging tables first.",
])


def read_marker(conn: psycopg.Connection, query: str) -> str | None:
    """The first column of the first row, as text; None when there is no row or it is NULL/empty."""
    conn.execute(STATEMENT_TIMEOUT)
    row = conn.execute(sql.SQL(query)).fetchone()  # operator-supplied, whole: nothing is interpolated
    if not row or row[0] is None:
        return None
    return str(row[0]).strip() or None


def active_refresh(instance: dg.DagsterInstance, job_name: str,
                   table_keys: AbstractSet[dg.AssetKey]) -> dg.DagsterRun | None:
    """A queued or running run of `job_name`, or any that materializes a table, whatever its job:
    the UI's "Materialize all" launches the tables under a job of Dagster's own."""
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=ACTIVE_STATUSES)):
        if run.job_name == job_name or not table_keys.isdisjoint(run.asset_selection or ()):
            return run
    return None


def drift_message(changes: list[str], marker: str) -> str:
    return (
        f"production's schema differs from the saved catalog state: {'; '.join(listed(changes))}. "
        f"Deploy {marker} was not refreshed. Run `muva-refresh introspect`, then reload "
        f"the code location (\"Reload\" in the UI, or restart dagster dev); the next tick refreshes "
        f"this deploy."
    )


def connect_to_source(endpoint: Endpoint) -> psycopg.Connection | dg.SkipReason:
    try:
        return endpoint.with_connect_timeout(CONNECT_TIMEOUT_S).connect(read_only=True)
    except (RefreshError, psycopg.Error) as exc:
        return dg.SkipReason(f"cannot read the deploy marker: {describe(exc, endpoint)}")


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


def drift_skip(conn: psycopg.Connection, catalog: Catalog, marker: str, endpoint: Endpoint) -> dg.SkipReason | None:
    """Why the deploy cannot be refreshed with this code location's graph, or None when it can."""
    try:
        live = read_catalog(conn, catalog.table_filter)
    except psycopg.Error as exc:
        return dg.SkipReason(f"cannot read the source catalog: {describe(exc, endpoint)}")
    changes = catalog_drift(catalog, live)
    return dg.SkipReason(drift_message(changes, marker)) if changes else None


def build_deploy_sensor(catalog: Catalog, job_name: str, query: str = DEFAULT_MARKER_SQL,
                        translator: TableTranslator | None = None) -> dg.SensorDefinition:
    """A sensor that requests one `job_name` run per production deploy, read with `query`.

    `catalog` is the saved state the definitions were built from. On schema drift the sensor
    only reports: it does not refresh the state file itself, since that changes the asset graph
    and needs a code reload. `translator` names the table assets, so that a run of them under
    any job holds a deploy back.
    """
    table_keys = frozenset((translator or TableTranslator()).keys(catalog).key_of.values())

    @dg.sensor(
        job_name=job_name,
        name=SENSOR_NAME,
        minimum_interval_seconds=60,
        # Off until an operator turns it on: every refresh empties the staging tables first.
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=DESCRIPTION.replace("{job}", job_name),
    )
    def prod_deploy_sensor(
        context: dg.SensorEvaluationContext, source: PostgresDatabase
    ) -> dg.SensorResult | dg.SkipReason:
        # Every failure becomes a SkipReason: a raising sensor only fills the tick log with errors.
        endpoint = source.endpoint()
        conn = connect_to_source(endpoint)
        if isinstance(conn, dg.SkipReason):
            return conn
        try:
            marker = marker_or_skip(conn, query, endpoint)
            if isinstance(marker, dg.SkipReason):
                return marker
            if marker == context.cursor:
                return dg.SkipReason(f"no new deploy: {marker} was already requested")

            running = active_refresh(context.instance, job_name, table_keys)
            if running is not None:
                return dg.SkipReason(
                    f"deploy {marker} is waiting: a refresh is already queued or running "
                    f"(run id {running.run_id}, {running.status.value}); the next tick retries"
                )

            drift = drift_skip(conn, catalog, marker, endpoint)
            if drift is not None:
                return drift
        finally:
            conn.close()

        return dg.SensorResult(
            run_requests=[dg.RunRequest(run_key=f"deploy-{marker}", tags={DEPLOY_TAG: marker})],
            cursor=marker,
        )

    return prod_deploy_sensor
