"""Assembles the one Definitions object; the table graph comes from the saved catalog state."""

from __future__ import annotations

import dagster as dg

from .assets import TableTranslator, build_table_assets
from .catalog import Catalog
from .resources import default_resources
from .sensors import build_deploy_sensor
from .settings import DEFAULT_MARKER_SQL, Settings

REFRESH_JOB = "refresh_staging"
VALIDATE_JOB = "validate_staging"


def build_definitions(
    catalog: Catalog,
    translator: TableTranslator | None = None,
    deploy_marker_sql: str = DEFAULT_MARKER_SQL,
) -> dg.Definitions:
    table_assets = build_table_assets(catalog, translator or TableTranslator())
    refresh_staging = dg.define_asset_job(
        REFRESH_JOB,
        selection=dg.AssetSelection.assets(table_assets),
        description="Refresh every staging table from one production snapshot, then check it.",
    )
    validate_staging = dg.define_asset_job(
        VALIDATE_JOB,
        selection=dg.AssetSelection.all_asset_checks(),
        description="Run every check against the current staging and production, copying nothing.",
    )
    return dg.Definitions(
        assets=[table_assets],
        jobs=[refresh_staging, validate_staging],
        sensors=[build_deploy_sensor(catalog, REFRESH_JOB, deploy_marker_sql)],
        resources=default_resources(),
        # One step per run already; in-process spares the ~2 s process start-up per step.
        executor=dg.in_process_executor,
    )


@dg.definitions
def defs() -> dg.Definitions:
    """Loaded lazily by Dagster, so importing this module never reads the state file."""
    settings = Settings.load()
    catalog = Catalog.load(settings.state_path, settings.table_filter)
    return build_definitions(catalog, deploy_marker_sql=settings.deploy_marker_sql)
