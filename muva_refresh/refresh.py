"""The refresh, as one ordered use case: guards -> snapshot -> load -> gate -> commit -> checks,
yielding plain events as it goes.

The order of the calls is the safety argument: every guard runs before the first write, the
source is only ever read, and the default load is one target transaction, so a failure
leaves staging exactly as it was. The caller (the Dagster edge, a test, the benchmark) only
listens: `refresh_events` yields a `SnapshotTaken`, each table's `TableStreaming` and
`TableCopied`, the blocking checks' `CheckOutcome`s, `Committed`, then the other checks'
outcomes as they finish, and `Finished` with where the time went.
"""

from __future__ import annotations

import time
from contextlib import closing, nullcontext
from dataclasses import dataclass, replace
from typing import Collection, Iterable, Iterator, Mapping

import psycopg

from .catalog import Catalog, TableRef, graph_drift, read_catalog
from .checks import AFTER_COMMIT, IN_LOAD, CheckOutcome, CheckSettings, Verifier, validate_live
from .digest import SnapshotDigests
from .endpoint import Endpoint
from .errors import ConfigError, CopyError, SchemaDriftError
from .graph import Plan, make_plan, views_in_order
from .guards import (
    guard_distinct,
    guard_masked_checks,
    guard_policy_sql,
    guard_rls_bypass,
    guard_schema,
    guard_single_refresh,
)
from .load import Load, TableCopied, TableCopy, TableStreaming, table_copy
from .settings import TableFilter
from .shaping import Shaping, shaping_for
from .snapshot import exported_snapshot
from .stream import CopyStats
from .timings import Phase, PhaseClock, Timings
from .views import ViewStats, refresh_views


@dataclass(frozen=True)
class RefreshOptions:
    """What to refresh and how; everything else is read from the databases."""

    selected: tuple[TableRef, ...] | None = None  # None: every table, of the live graph when the state is older
    # The saved catalog the run was planned on: the source must still match it, and its table
    # filter decides which tables take part. None: plan on the live catalog under `table_filter`.
    state: Catalog | None = None
    table_filter: TableFilter | None = None
    # 1: one target transaction, all or nothing. More: level by level on that many connection
    # pairs, a transaction per table (or FK cycle); a failure leaves no table without its parents.
    workers: int = 1
    # False: each table is compared with the target and only its difference copied (the atomic
    # load). True: every table is emptied and copied whole, as the parallel load always does.
    full: bool = False
    shaping: Shaping | None = None  # masking and subset, evaluated by the source in the snapshot
    rls_expected: tuple[str, ...] = ()  # schema.table patterns whose RLS must be on
    # Which checks run: the blocking ones in the load, the others after COMMIT. The product
    # always gates the load; leaving IN_LOAD out measures the copy alone.
    check_phases: tuple[str, ...] = (IN_LOAD, AFTER_COMMIT)
    plan: Plan | None = None  # `selected`, planned on `state` by `resolve`
    run_id: str = ""  # the Dagster run this refresh is, named in its sessions' application_name

    @classmethod
    def resolve(cls, state: Catalog, selected: Iterable[TableRef] | None, policy: str | None, salt: str | None,
                workers: int = 1, rls_expected: tuple[str, ...] = (), full: bool = False) -> RefreshOptions:
        """A run's selection planned and its policy read, once: a bad one is refused here, before
        anything runs. An empty selection refreshes no table (a run of views or checks alone)."""
        chosen = None if selected is None else tuple(sorted(set(selected)))
        plan = make_plan(state, chosen) if chosen is None or chosen else None
        every_table = plan is not None and set(plan.selected) == set(state.refs)
        return cls(selected=None if every_table else plan.selected if plan else (), state=state, workers=workers,
                   full=full, shaping=shaping_for(policy, state, salt), rls_expected=rls_expected, plan=plan)

    @property
    def planned(self) -> tuple[TableRef, ...]:
        """The tables `resolve` planned on the saved state."""
        return self.plan.selected if self.plan is not None else ()

    def sessions(self, endpoint: Endpoint) -> Endpoint:
        """The endpoint whose sessions name this run in pg_stat_activity."""
        return replace(endpoint, run_id=self.run_id) if self.run_id else endpoint

    @property
    def effective_filter(self) -> TableFilter:
        if self.table_filter is not None:
            return self.table_filter
        return self.state.table_filter if self.state is not None else TableFilter()

    @property
    def check_settings(self) -> CheckSettings:
        return CheckSettings(self.rls_expected, self.shaping)


@dataclass(frozen=True)
class RefreshReport:
    snapshot_id: str
    tables: Mapping[TableRef, CopyStats]
    failed: Mapping[TableRef, str]
    views: Mapping[TableRef, ViewStats]  # the materialized views refreshed after the tables they read
    seconds: float
    source_catalog: Catalog  # as read inside the snapshot
    target_catalog: Catalog
    atomic: bool
    digests: SnapshotDigests | None = None  # the source's, hashed in the snapshot after COMMIT

    @property
    def source_version(self) -> int:
        return self.source_catalog.server_version

    @property
    def target_version(self) -> int:
        return self.target_catalog.server_version

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.tables.values())

    @property
    def bytes(self) -> int:
        return sum(s.bytes for s in self.tables.values())

    def copies(self) -> Iterator[TableCopy]:
        for ref, stats in self.tables.items():
            yield table_copy(self.source_catalog, self.target_catalog, ref, stats, self.snapshot_id, self.digests)

    def raise_for_failures(self) -> None:
        if self.failed:
            first, reason = next(iter(self.failed.items()))
            raise CopyError(
                f"{len(self.failed)} table(s) failed, first {first}: {reason}; "
                f"{len(self.tables)} table(s) were loaded, and every loaded table has its parents"
            )


@dataclass(frozen=True)
class SnapshotTaken:
    snapshot_id: str


@dataclass(frozen=True)
class Committed:
    """The load is visible on the target; the checks after COMMIT are running."""

    report: RefreshReport


@dataclass(frozen=True)
class ViewsRefreshed:
    """Materialized views refreshed on their own, from what the target holds."""

    views: Mapping[TableRef, ViewStats]


@dataclass(frozen=True)
class Finished:
    """The refresh is over, its checks included: where its time went."""

    timings: Timings


Event = SnapshotTaken | TableStreaming | TableCopied | CheckOutcome | Committed | ViewsRefreshed | Finished


class Progress:
    """Hears each event of a run in the process that runs it, besides Dagster's log; the default
    says nothing."""

    def heard(self, event: Event) -> None:
        pass


def refresh_events(source: Endpoint, target: Endpoint, options: RefreshOptions = RefreshOptions()) -> Iterator[Event]:
    """Copy the selected tables from one snapshot of the source into the target, checking them.

    A blocking check that fails raises BlockingCheckError after its outcomes, and the load rolls
    back; tables the parallel load could not copy raise CopyError after the checks of the others.
    """
    if options.workers < 1:
        raise ConfigError(f"workers must be at least 1, got {options.workers}")
    started = time.perf_counter()
    clock = PhaseClock()
    source, target = options.sessions(source), options.sessions(target)
    if options.shaping is not None:
        source = replace(source, session=options.shaping.session())
    # The session that takes the refresh lock keeps it until the checks after COMMIT are done: a
    # run in progress always has it, so a run without it and without a process is known dead.
    with closing(target.connect(read_only=False)) as dst:
        with exported_snapshot(source) as (src, snapshot_id):
            clock.since_last(Phase.SNAPSHOT)
            yield SnapshotTaken(snapshot_id)
            with clock.measure(Phase.GUARDS):
                plan, target_catalog, options = guarded_plan(source, target, src, dst, options)
            verifier = Verifier(options.check_settings, clock)
            shapes = options.shaping.shapes(plan.catalog) if options.shaping else {}
            digests = SnapshotDigests(source, snapshot_id, shapes)
            try:
                load = Load(plan, target_catalog, source, target, snapshot_id, shapes,
                            verifier.gate if IN_LOAD in options.check_phases else None, clock,
                            full=options.full or options.workers > 1)
                with clock.measure(Phase.PARALLEL_LOAD) if options.workers > 1 else nullcontext():
                    loaded = yield from (load.atomically(src, dst) if options.workers == 1
                                         else load.in_parallel(src, dst, options.workers))
            except BaseException:
                digests.abandon()
                raise
            if AFTER_COMMIT in options.check_phases:
                known = {ref: s.source_digest for ref, s in loaded.tables.items() if s.source_digest}
                digests.start((plan.catalog.table(ref) for ref in loaded.tables), known)  # after COMMIT, beside the checks
            else:
                digests.abandon()
        report = RefreshReport(snapshot_id, loaded.tables, loaded.failed, loaded.views,
                               time.perf_counter() - started, plan.catalog, target_catalog, options.workers == 1,
                               digests)
        yield from committed(report, verifier, target, AFTER_COMMIT in options.check_phases, clock)
        yield Finished(clock.timings())
    report.raise_for_failures()


def committed(report: RefreshReport, verifier: Verifier, target: Endpoint, check: bool,
              clock: PhaseClock) -> Iterator[Event]:
    """`Committed`, with the checks after COMMIT already running, so the listener's own work
    (Dagster storing the materializations) overlaps them; then their outcomes as they finish."""
    if not check:
        yield Committed(report)
        return
    with clock.measure(Phase.CHECKS_AFTER_COMMIT), verifier.checking_after_commit(target, report.copies()) as finished:
        yield Committed(report)
        for found in finished:
            yield from found


def refresh(source: Endpoint, target: Endpoint, options: RefreshOptions = RefreshOptions()) -> RefreshReport:
    """The whole refresh, for a caller that wants only its report."""
    report = None
    for event in refresh_events(source, target, options):
        if isinstance(event, Committed):
            report = event.report
    return report


def selection_events(source: Endpoint, target: Endpoint, options: RefreshOptions, views: Collection[TableRef] = (),
                     checked_live: Mapping[TableRef, Collection[str]] | None = None) -> Iterator[Event]:
    """One run of a selection: its tables refreshed (and every view that reads them), or else its
    `views` alone from what the target holds; then `checked_live`, the checks of tables the
    run did not refresh, on the current target against the current source."""
    if options.selected or options.selected is None:
        yield from refresh_events(source, target, options)
    elif views:
        yield ViewsRefreshed(refresh_views_only(source, options.sessions(target), options.state, views))
    if checked_live:
        yield from validate_live(source, target, checked_live, options.effective_filter, options.check_settings)


def refresh_views_only(
    source: Endpoint, target: Endpoint, catalog: Catalog, refs: Iterable[TableRef]
) -> dict[TableRef, ViewStats]:
    """Refresh the chosen materialized views from what the target holds now, copying nothing."""
    chosen = set(refs)
    src, dst = source.connect(read_only=True), target.connect(read_only=False)
    try:
        guard_distinct(source, target, src, dst)
        guard_single_refresh(target, dst)
        with dst.transaction():
            return refresh_views(dst, [v for v in views_in_order(catalog.materialized_views) if v.ref in chosen])
    finally:
        src.close()
        dst.close()


def guarded_plan(
    source: Endpoint, target: Endpoint, src: psycopg.Connection, dst: psycopg.Connection, options: RefreshOptions
) -> tuple[Plan, Catalog, RefreshOptions]:
    """Read both catalogs and plan, running every guard; nothing is written before this returns.
    The options come back with the policy applied to the live catalog, whose columns may be newer
    than the saved state's."""
    guard_distinct(source, target, src, dst)
    guard_single_refresh(target, dst)
    source_catalog = read_catalog(src, options.effective_filter)
    plan = live_plan(options, source_catalog)
    if options.shaping is not None:
        options = replace(options, shaping=options.shaping.on(plan.catalog))
    target_catalog = read_catalog(dst, TableFilter(source_catalog.schemas))
    guard_schema(plan, target_catalog)
    guard_rls_bypass(plan, {source: src, target: dst})
    if options.shaping is not None:
        guard_policy_sql(options.shaping, plan, source, src)
        guard_masked_checks(options.shaping.masking, plan, src)
    dst.commit()  # the load must start its own top-level transaction, not a savepoint
    return plan, target_catalog, options


def live_plan(options: RefreshOptions, live: Catalog) -> Plan:
    """The run's plan on the live catalog. Only the graph (tables, FKs, materialized views) comes
    from the saved state, and production's may have moved on since: a refresh of every table then
    takes the live graph, new tables included; a selection keeps its tables, unless one is gone."""
    if options.state is None or options.plan is None:
        return make_plan(live, options.selected)
    if not graph_drift(options.state, live):
        return replace(options.plan, catalog=live)
    if options.selected is None:
        return make_plan(live)
    gone = [str(ref) for ref in options.planned if ref not in live.by_ref]
    if gone:
        raise SchemaDriftError(
            f"{', '.join(gone)} {'is' if len(gone) == 1 else 'are'} selected but gone from the source since the "
            "catalog state was saved; nothing was touched",
            "select the tables the source has now; the deploy sensor, or `muva-refresh refresh` of every table, "
            "saves the new state, and the next code-location load shows it",
        )
    return make_plan(live, options.planned)
