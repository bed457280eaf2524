"""Run the project's jobs in-process on the Dagster instance, and read their records back as the
engine's own types (CopyStats, CheckOutcome) and an exit code, through the translator that wrote them."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Sequence

import dagster as dg

from .assets import TABLE_ASSETS_NAME
from .catalog import Catalog, TableRef
from .checks import CheckOutcome, checks_that_run
from .definitions import REFRESH_JOB, VALIDATE_JOB, build_definitions
from .endpoint import Endpoint
from .errors import EXIT_FAILED, EXIT_OK, exit_code_for
from .liveness import DeadRefreshes, DeadRun
from .refresh import Progress, RefreshOptions
from .resources import PreparedRuns
from .settings import Settings
from .stream import CopyStats
from .timings import Timings
from .translator import TIMINGS, TableKeys, TableTranslator
from .views import ViewStats

# The CLI says what matters itself; the run's full log, traces included, stays in the UI.
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


@dataclass(frozen=True)
class RunFailure:
    """The innermost error of a failed run: the project's own error, not Dagster's wrapper."""

    error_class: str
    message: str

    @property
    def exit_code(self) -> int:
        return exit_code_for(self.error_class)


@dataclass(frozen=True)
class JobOutcome:
    run_id: str
    seconds: float
    tables: Mapping[TableRef, CopyStats]
    views: Mapping[TableRef, ViewStats]
    checks: tuple[CheckOutcome, ...]
    failure: RunFailure | None
    keys: TableKeys
    timings: Timings | None = None  # the engine's phases and Dagster's share of `seconds`; None without a copy

    @property
    def success(self) -> bool:
        return self.failure is None

    @property
    def exit_code(self) -> int:
        if self.failure is not None:
            return self.failure.exit_code
        return EXIT_FAILED if any(c.fails_run for c in self.checks) else EXIT_OK

    def asset_name(self, ref: TableRef) -> str:
        return self.keys.key_of[ref].to_user_string()


@dataclass(frozen=True)
class HistoryEntry:
    time: datetime
    run_id: str
    table: TableRef
    check: str
    status: str  # Dagster's execution status: PLANNED, IN_PROGRESS, SUCCEEDED, FAILED, SKIPPED
    outcome: CheckOutcome | None  # None until the check was evaluated


class Runner:
    """The jobs of one saved catalog, run in-process on the DAGSTER_HOME instance, so the UI shows them."""

    def __init__(self, catalog: Catalog, settings: Settings | None = None, translator: TableTranslator | None = None,
                 progress: Progress | None = None):
        """`progress` hears each event of a refresh, besides the run's own log."""
        self.catalog = catalog
        self.settings = settings or Settings.load()
        self.translator = translator or TableTranslator()
        self.keys = self.translator.keys(catalog)
        self.prepared = PreparedRuns()
        self.defs = build_definitions(catalog, self.settings, self.translator, progress, self.prepared)

    def resolve(self, selected: Sequence[TableRef] | None, config: Mapping[str, Any]) -> RefreshOptions:
        """The run's selection and policy (`config` as the refresh op takes it), resolved once: a bad
        one is refused before Dagster starts, and the run is handed what was resolved."""
        options = RefreshOptions.resolve(self.catalog, selected, config.get("policy") or self.settings.policy,
                                         self.settings.mask_salt, config.get("workers", 1),
                                         self.settings.rls_expected, config.get("full", False))
        self.prepared.hand_over(options, config)
        return options

    def refresh(self, selected: Sequence[TableRef] | None, workers: int, policy: str = "",
                full: bool = False) -> JobOutcome:
        op_config = {"workers": workers, "policy": policy, "full": full}
        options = self.resolve(selected, op_config)
        config = {"ops": {TABLE_ASSETS_NAME: {"config": op_config}}}
        keys = {self.keys.key_of[r] for r in selected} if selected else set(self.keys.key_of.values())
        job = self.defs.resolve_job_def(REFRESH_JOB).get_subset(
            asset_selection=keys, asset_check_selection=self.check_keys(selected, options))
        return self.execute(job, config)

    def validate(self, selected: Sequence[TableRef] | None, policy: str = "") -> JobOutcome:
        options = self.resolve((), {"policy": policy})
        job = self.defs.resolve_job_def(VALIDATE_JOB).get_subset(
            asset_check_selection=self.check_keys(selected, options))
        return self.execute(job, {"ops": {TABLE_ASSETS_NAME: {"config": {"policy": policy}}}})

    def check_keys(self, selected: Sequence[TableRef] | None, options: RefreshOptions) -> set[dg.AssetCheckKey]:
        """The checks of the selected tables (materialized views have none) that run under the
        run's policy. One a run would not evaluate still costs Dagster's events, then shows as skipped."""
        names = [c.name for c in checks_that_run(options.check_settings)]
        return {dg.AssetCheckKey(self.keys.key_of[r], name) for r in selected or self.catalog.refs
                if r in self.catalog.by_ref for name in names}

    def execute(self, job: dg.JobDefinition, config: Mapping[str, Any]) -> JobOutcome:
        started = time.perf_counter()
        with dg.DagsterInstance.get() as instance:
            result = job.execute_in_process(instance=instance, run_config={**QUIET, **config}, raise_on_error=False)
        seconds = time.perf_counter() - started
        materialized = self.materialized(result.get_asset_materialization_events())
        return JobOutcome(
            run_id=result.run_id,
            seconds=seconds,
            tables={ref: m for ref, m in materialized.items() if isinstance(m, CopyStats)},
            views={ref: m for ref, m in materialized.items() if isinstance(m, ViewStats)},
            checks=tuple(self.translator.outcome(e, self.keys.table_of[e.asset_key])
                         for e in result.get_asset_check_evaluations()),
            failure=None if result.success else run_failure(result.all_events),
            keys=self.keys,
            timings=self.timings(result.get_asset_observation_events(), seconds),
        )

    def timings(self, observations: Iterable[dg.DagsterEvent], seconds: float) -> Timings | None:
        """The engine's breakdown the run observed, inside the job's `seconds`: the rest is Dagster's."""
        for event in observations:
            metadata = event.asset_observation_data.asset_observation.metadata
            if TIMINGS in metadata:
                return self.translator.timings(metadata).around(seconds)
        return None

    def materialized(self, events: Iterable[dg.DagsterEvent]) -> dict[TableRef, CopyStats | ViewStats]:
        found: dict[TableRef, CopyStats | ViewStats] = {}
        for event in events:
            materialization = event.step_materialization_data.materialization
            ref = self.keys.table_of[materialization.asset_key]
            read = self.translator.copy_stats if ref in self.catalog.by_ref else self.translator.view_stats
            found[ref] = read(materialization.metadata)
        return found

    def close_dead_refreshes(self) -> list[DeadRun]:
        """Mark failed the refresh runs the instance shows in progress whose process is gone."""
        with dg.DagsterInstance.get() as instance:
            dead = DeadRefreshes(self.catalog, REFRESH_JOB, self.translator)
            if not dead.in_progress(instance):
                return []
            return dead.close(instance, Endpoint("target", self.settings.target_dsn))

    def history(self, refs: Iterable[TableRef], checks: Iterable[str], limit: int) -> list[HistoryEntry]:
        """Each table's check evaluations, oldest first, as the UI's Checks tab shows them."""
        found = []
        with dg.DagsterInstance.get() as instance:
            for ref in refs:
                for name in checks:
                    key = dg.AssetCheckKey(self.keys.key_of[ref], name)
                    for record in instance.event_log_storage.get_asset_check_execution_history(key, limit=limit):
                        found.append((record.id, self.history_entry(record, ref)))
        # Then by storage id: SQLite keeps whole seconds, and two refreshes fit in one.
        return [entry for _, entry in sorted(found, key=lambda f: (f[1].time, f[0]))]

    def history_entry(self, record: Any, ref: TableRef) -> HistoryEntry:
        event = record.event.dagster_event if record.event is not None else None
        data = event.event_specific_data if event is not None else None
        evaluation = data if isinstance(data, dg.AssetCheckEvaluation) else None
        return HistoryEntry(
            time=datetime.fromtimestamp(record.create_timestamp, timezone.utc),
            run_id=record.run_id,
            table=ref,
            check=record.key.name,
            status=record.status.value,
            outcome=self.translator.outcome(evaluation, ref) if evaluation else None,
        )


def run_failure(events: Iterable[dg.DagsterEvent]) -> RunFailure:
    for event in events:
        if event.is_step_failure:
            error = event.step_failure_data.error
            while error.cause is not None:
                error = error.cause
            # The message reads "module.Class: text"; people want the text.
            prefix, _, text = error.message.partition(": ")
            message = text if error.cls_name and prefix.endswith(error.cls_name) else error.message
            return RunFailure(error.cls_name or "", message.strip())
    return RunFailure("", "the Dagster run failed; see its logs in the UI")
