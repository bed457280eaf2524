"""Assembles the one Definitions object; the table graph comes from the saved catalog state."""

from __future__ import annotations

from typing import Sequence

import dagster as dg

from .assets import TableTranslator, build_table_assets
from .catalog import Catalog
from .resources import default_resources
from .sensors import build_deploy_sensor
from .settings import state_path

REFRESH_JOB = "refresh_staging"
VALIDATE_JOB = "validate_staging"


def build_definitions(
    catalog: Catalog,
    translator: TableTranslator | None = None,
    validate_only: Sequence[dg.AssetKey] | None = None,
) -> dg.Definitions:
    """`validate_only` narrows the validate job to those assets' checks (the CLI's --select)."""
    table_assets = build_table_assets(catalog, translator)
    refresh_staging = dg.define_asset_job(
        REFRESH_JOB,
        selection=dg.AssetSelection.assets(table_assets),
        description="Refresh every staging table from one production snapshot, then check it.",
    )
    validate_staging = dg.define_asset_job(
        VALIDATE_JOB,
        selection=dg.AssetSelection.checks_for_assets(*validate_only) if validate_only
        else dg.AssetSelection.all_asset_checks(),
        description="Run every check against the current staging and production, copying nothing.",
    )
    return dg.Definitions(
        assets=[table_assets],
        jobs=[refresh_staging, validate_staging],
        sensors=[build_deploy_sensor(catalog)],
        resources=default_resources(),
        # One step per run already; in-process spares the ~2 s process start-up per step.
        executor=dg.in_process_executor,
    )


@dg.definitions
def defs() -> dg.Definitions:
    """Loaded lazily by Dagster, so importing this module never reads the state file."""
    return build_definitions(Catalog.load(state_path()))
