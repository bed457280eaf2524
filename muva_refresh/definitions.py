"""Assembles the one Definitions object; the table graph comes from the saved catalog state."""

from __future__ import annotations

import dagster as dg

from .assets import build_production_observations, build_table_assets
from .catalog import Catalog
from .refresh import Progress
from .resources import PreparedRuns, default_resources
from .sensors import build_dead_run_sensor, build_deploy_sensor
from .settings import Settings
from .translator import TableTranslator

REFRESH_JOB = "refresh_staging"
OBSERVE_JOB = "observe_production_tables"
VALIDATE_JOB = "validate_staging"


def build_definitions(
    catalog: Catalog,
    settings: Settings | None = None,
    translator: TableTranslator | None = None,
    progress: Progress | None = None,
    prepared: PreparedRuns | None = None,
) -> dg.Definitions:
    """`progress` hears each event of a run in this process, besides the run's own log; `prepared`
    carries options the caller resolved for its next run."""
    settings = settings or Settings.load()
    translator = translator or TableTranslator()
    table_assets = build_table_assets(catalog, translator, settings.rls_expected, settings.policy)
    observations = build_production_observations(catalog, translator)
    refresh_staging = dg.define_asset_job(
        REFRESH_JOB,
        selection=dg.AssetSelection.assets(table_assets),
        description="Refresh every staging table from one production snapshot, then check it.",
    )
    observe = dg.define_asset_job(
        OBSERVE_JOB,
        selection=dg.AssetSelection.assets(observations),
        description="Observe production's tables: a table whose rows may have changed gets a new data version, "
                    "and its staging table shows as unsynced.",
    )
    validate_staging = dg.define_asset_job(
        VALIDATE_JOB,
        selection=dg.AssetSelection.all_asset_checks(),
        description="Run every check against the current staging and production, copying nothing.",
    )
    return dg.Definitions(
        assets=[observations, table_assets],
        jobs=[refresh_staging, validate_staging, observe],
        sensors=[build_deploy_sensor(catalog, REFRESH_JOB, settings, translator),
                 build_dead_run_sensor(catalog, REFRESH_JOB, settings, translator)],
        resources=default_resources(progress, prepared),
        # One step per run already; in-process spares the ~2 s process start-up per step.
        executor=dg.in_process_executor,
    )


@dg.definitions
def defs() -> dg.Definitions:
    """Loaded lazily by Dagster, so importing this module never reads the state file."""
    settings = Settings.load()
    catalog = Catalog.load(settings.state_path, settings.table_filter)
    return build_definitions(catalog, settings)
