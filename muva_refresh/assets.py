"""The table assets: one subsettable multi_asset whose body turns the engine's events into Dagster's.

All table assets come from one multi_asset, so a run has one step whatever its selection: one
snapshot, one target transaction, and no per-step process start-up. The body resolves the
run's selection and policy once, hands them to the engine (`refresh.selection_events`) and
translates what it yields, as dagster-dbt's asset body streams dbt's events.
"""

# No `from __future__ import annotations`: Dagster reads the asset function's annotations.
import time
import warnings
from collections import defaultdict
from dataclasses import replace
from typing import Any, Iterable, Iterator, Mapping

import dagster as dg

from .catalog import Catalog, TableRef
from .checks import CheckOutcome
from .digest import change_signal
from .errors import BlockingCheckError
from .graph import make_plan
from .liveness import PROCESS_TAG, ProcessIdentity
from .load import TableCopied
from .refresh import (
    Committed,
    Event,
    Finished,
    Progress,
    RefreshOptions,
    RefreshReport,
    SnapshotTaken,
    ViewsRefreshed,
    selection_events,
)
from .resources import PostgresDatabase, PreparedRuns
from .settings import MASK_SALT_VAR
from .stream import CopyStats
from .timings import Timings
from .translator import TableKeys, TableTranslator
from .views import ViewStats

TABLE_ASSETS_NAME = "refresh_tables"
OBSERVE_NAME = "observe_production"
TARGET_POOL = "muva_refresh_target"
LOG_EVERY_SECONDS = 2.0

Result = dg.MaterializeResult | dg.AssetCheckResult | dg.AssetObservation


class RefreshConfig(dg.Config):
    """Run settings for a refresh."""

    workers: int = 1  # 1: one atomic target transaction; more: tables of a level in parallel
    # Copy every table whole, instead of comparing each with staging and copying only what changed.
    full: bool = False
    # A masking and subset policy: a TOML or YAML file, or demo / demo-tenant. Empty: MUVA_POLICY,
    # and without that an exact copy. The salt comes from MUVA_MASK_SALT.
    policy: str = ""


class CopiedLines:
    """The run log's view of the load: the tables copied since its last line, in a line at most
    every LOG_EVERY_SECONDS. Each line is an event Dagster stores; a line per table cost a
    seed-sized refresh 42 of them."""

    def __init__(self, log: Any, every: float = LOG_EVERY_SECONDS):
        self.log, self.every = log, every
        self.pending: list[str] = []
        self.last = time.monotonic()

    def copied(self, ref: TableRef, stats: CopyStats) -> None:
        self.pending.append(f"{ref}: {stats.rows:,} rows, {stats.bytes / 1e6:.1f} MB, {stats.mb_per_s:.1f} MB/s, "
                            f"{stats.format}")
        if time.monotonic() - self.last >= self.every:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.log.info(f"copied {'; '.join(self.pending)} (visible on staging at COMMIT)")
            self.pending.clear()
        self.last = time.monotonic()


class RunTranslation:
    """One run's engine events as Dagster's: a result for each selected asset and check, lines in
    the run log, and every event to the in-process listener."""

    def __init__(self, translator: TableTranslator, keys: TableKeys, selected: set[TableRef],
                 wanted: Mapping[TableRef, set[str]], log: Any, progress: Progress, run_started: float):
        self.translator, self.keys, self.selected, self.wanted = translator, keys, selected, wanted
        self.log, self.progress = log, progress
        self.run_started = run_started  # time.time() when Dagster started the run
        self.first_table: TableRef | None = None
        self.copied = CopiedLines(log)
        self.loading = False
        self.held: list[CheckOutcome] = []  # the blocking checks', until their tables' materializations

    def translate(self, event: Event) -> Iterator[Result]:
        self.progress.heard(event)
        if isinstance(event, SnapshotTaken):
            self.loading = True
        elif isinstance(event, TableCopied):
            self.first_table = self.first_table or event.ref
            self.copied.copied(event.ref, event.stats)
        elif isinstance(event, CheckOutcome):
            if self.loading:
                self.held.append(event)
            else:
                yield from self.check_results([event])
        elif isinstance(event, Committed):
            yield from self.committed(event.report)
        elif isinstance(event, ViewsRefreshed):
            yield from self.view_results(event.views)
        elif isinstance(event, Finished) and self.first_table is not None:
            yield self.timed(event.timings)

    def timed(self, timings: Timings) -> dg.AssetObservation:
        """Where the run's time went, observed on the first table it copied: the engine's phases,
        and Dagster's share of the run so far (from its start to the end of the refresh)."""
        run = timings.around(time.time() - self.run_started)
        return dg.AssetObservation(asset_key=self.keys.key_of[self.first_table],
                                   metadata=self.translator.timings_metadata(timings, run))

    def committed(self, report: RefreshReport) -> Iterator[Result]:
        """Every table's materialization (stored by Dagster while the checks after COMMIT run),
        then the outcomes held back for them."""
        self.loading = False
        self.copied.flush()
        self.log.info(f"copied {len(report.tables)} tables, {report.rows:,} rows, {report.bytes / 1e6:.1f} MB "
                      f"from snapshot {report.snapshot_id} in {report.seconds:.1f}s")
        for ref, stats in report.tables.items():
            if ref in self.keys.key_of:
                yield dg.MaterializeResult(asset_key=self.keys.key_of[ref],
                                           metadata=self.translator.materialization_metadata(stats, report),
                                           data_version=self.translator.data_version(ref, stats, report))
        unknown = sorted(str(ref) for ref in report.tables if ref not in self.keys.key_of)
        if unknown:
            self.log.info(f"copied {', '.join(unknown)}, new on production since this code location loaded its "
                          "catalog state: an asset from the next code-location load on")
        yield from self.view_results(report.views)
        yield from self.check_results(self.held)
        self.held = []

    def interrupted(self) -> Iterator[Result]:
        """A load that rolled back: the outcomes that explain it."""
        yield from self.check_results(self.held)
        self.held = []

    def check_results(self, outcomes: Iterable[CheckOutcome]) -> Iterator[dg.AssetCheckResult]:
        for outcome in outcomes:
            if outcome.check in self.wanted.get(outcome.table, ()):
                yield self.translator.check_result(outcome)

    def view_results(self, refreshed: Mapping[TableRef, ViewStats]) -> Iterator[dg.MaterializeResult]:
        for ref, stats in refreshed.items():
            if ref in self.selected:  # a view the run did not select is kept fresh all the same
                yield dg.MaterializeResult(asset_key=self.keys.key_of[ref], metadata=self.translator.view_metadata(stats))


def build_production_observations(catalog: Catalog, translator: TableTranslator) -> dg.AssetsDefinition:
    """Production's tables as observable source assets, each observed by a cheap signal of change."""
    by_key = {translator.source_key(t.ref): t.ref for t in catalog.tables}

    def observe_production(context: dg.AssetExecutionContext) -> Iterator[dg.ObserveResult]:
        conn = context.resources.source.endpoint().connect(read_only=True)
        try:
            for key in sorted(context.selected_asset_keys):
                yield dg.ObserveResult(asset_key=key, data_version=dg.DataVersion(change_signal(conn, by_key[key])))
        finally:
            conn.close()

    # Dagster marks the decorator beta; the release is pinned, and this is its documented use.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.multi_observable_source_asset(
            name=OBSERVE_NAME,
            specs=[translator.source_spec(t) for t in catalog.tables],
            can_subset=True,
            required_resource_keys={"source"},
            description="Reads production's statistics counters of each table (no rows) as its data version.",
        )(observe_production)


def build_table_assets(
    catalog: Catalog, translator: TableTranslator, rls_expected: tuple[str, ...] = (), default_policy: str = ""
) -> dg.AssetsDefinition:
    plan = make_plan(catalog)
    keys = translator.keys(catalog)
    views = {v.ref for v in catalog.materialized_views}

    @dg.multi_asset(
        name=TABLE_ASSETS_NAME,
        specs=[translator.asset_spec(t, plan) for t in catalog.tables]
        + [translator.view_spec(v, plan) for v in catalog.materialized_views],
        check_specs=[spec for t in catalog.tables for spec in translator.check_specs(t)],
        can_subset=True,
        pool=TARGET_POOL,
        description="Copies the selected tables from one source snapshot into the target, then checks them.",
    )
    def refresh_tables(
        context: dg.AssetExecutionContext,
        config: RefreshConfig,
        source: PostgresDatabase,
        target: PostgresDatabase,
        progress: dg.ResourceParam[Progress],
        prepared: dg.ResourceParam[PreparedRuns],
    ) -> Iterator[Result]:
        selected = {keys.table_of[k] for k in context.selected_asset_keys}
        tables = tuple(sorted(selected - views))
        wanted: dict[TableRef, set[str]] = defaultdict(set)
        for check_key in context.selected_asset_check_keys:
            wanted[keys.table_of[check_key.asset_key]].add(check_key.name)
        options = prepared.claim(tables, config) or RefreshOptions.resolve(
            catalog, tables, config.policy or default_policy, dg.EnvVar(MASK_SALT_VAR).get_value(), config.workers,
            rls_expected, config.full)
        options = replace(options, run_id=context.run_id)
        # Which process runs the refresh: a run left in progress by one that has ended is closed as dead.
        context.instance.add_run_tags(context.run_id, {PROCESS_TAG: ProcessIdentity.current().text()})
        run = RunTranslation(translator, keys, selected, wanted, context.log, progress, run_start_time(context))
        checked_live = {ref: names for ref, names in wanted.items() if ref not in set(tables)}
        try:
            for event in selection_events(source.endpoint(), target.endpoint(), options, selected & views,
                                          checked_live):
                yield from run.translate(event)
        except BlockingCheckError:
            yield from run.interrupted()
            raise
        finally:
            run.copied.flush()

    return refresh_tables


def run_start_time(context: dg.AssetExecutionContext) -> float:
    """When Dagster started this run (time.time()), or else now."""
    record = context.instance.get_run_record_by_id(context.run_id)
    return record.start_time if record is not None and record.start_time else time.time()
