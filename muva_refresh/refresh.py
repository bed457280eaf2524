"""The refresh, as one ordered use case: guards -> snapshot -> load -> gate -> commit.

The order of the calls is the safety argument: every guard runs before the first write, the
source is only ever read, and the default load is one target transaction, so a failure
leaves staging exactly as it was.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Iterable, Iterator, Mapping

import psycopg

from .catalog import Catalog, TableFilter, TableRef, read_catalog
from .copy import (
    CopyStats, GateFn, Hooks, Load, ProgressFn, SnapshotDigests, StreamFn, TableCopy, ViewStats, exported_snapshot,
    table_copy,
)
from .endpoint import Endpoint
from .errors import ConfigError, CopyError
from .copy import refresh_views
from .graph import Plan, make_plan, views_in_order
from .guards import (
    guard_distinct, guard_masked_checks, guard_rls_bypass, guard_schema, guard_single_refresh, guard_unchanged,
)
from .policy import Shaping


@dataclass(frozen=True)
class RefreshOptions:
    """What to refresh and how; everything else is read from the databases."""

    selected: tuple[TableRef, ...] | None = None  # None: every table
    # The saved catalog the run was planned on: the source must still match it, and its table
    # filter decides which tables take part. None: plan on the live catalog under `table_filter`.
    state: Catalog | None = None
    table_filter: TableFilter | None = None
    # 1: one target transaction, all or nothing. More: level by level on that many connection
    # pairs, a transaction per table (or FK cycle); a failure leaves no table without its parents.
    workers: int = 1
    shaping: Shaping | None = None  # masking and subset, evaluated by the source in the snapshot

    @property
    def effective_filter(self) -> TableFilter:
        if self.table_filter is not None:
            return self.table_filter
        return self.state.table_filter if self.state is not None else TableFilter()


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


def refresh(
    source: Endpoint,
    target: Endpoint,
    options: RefreshOptions = RefreshOptions(),
    *,
    on_table: ProgressFn | None = None,
    on_stream: StreamFn | None = None,
    gate: GateFn | None = None,
) -> RefreshReport:
    """Copy the selected tables from one snapshot of the source into the target.

    `on_table` hears of each copied table and `on_stream` of a large one still copying; `gate`
    runs inside the load and rolls it back by raising. Failures of the parallel mode come back
    in `report.failed`; call `raise_for_failures()`.
    """
    if options.workers < 1:
        raise ConfigError(f"workers must be at least 1, got {options.workers}")
    started = time.perf_counter()
    if options.shaping is not None:
        source = replace(source, session=options.shaping.session())
    with exported_snapshot(source) as (src, snapshot_id):
        dst = target.connect(read_only=False)
        try:
            plan, target_catalog = guarded_plan(source, target, src, dst, options)
            shapes = options.shaping.shapes(plan.catalog) if options.shaping else {}
            digests = SnapshotDigests(source, snapshot_id, shapes)
            try:
                load = Load(plan, target_catalog, source, target, snapshot_id, Hooks(on_table, on_stream, gate), shapes)
                loaded = load.atomically(src, dst) if options.workers == 1 else load.in_parallel(src, dst, options.workers)
            except BaseException:
                digests.abandon()
                raise
            digests.start(plan.catalog.table(ref) for ref in loaded.tables)  # after COMMIT, beside the checks
        finally:
            dst.close()
    return RefreshReport(
        snapshot_id=snapshot_id,
        tables=loaded.tables,
        failed=loaded.failed,
        views=loaded.views,
        seconds=time.perf_counter() - started,
        source_catalog=plan.catalog,
        target_catalog=target_catalog,
        atomic=options.workers == 1,
        digests=digests,
    )


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
) -> tuple[Plan, Catalog]:
    """Read both catalogs and plan, running every guard; nothing is written before this returns."""
    guard_distinct(source, target, src, dst)
    guard_single_refresh(target, dst)
    source_catalog = read_catalog(src, options.effective_filter)
    if options.state is not None:
        guard_unchanged(options.state, source_catalog)
    plan = make_plan(source_catalog, options.selected)
    target_catalog = read_catalog(dst, TableFilter(source_catalog.schemas))
    guard_schema(plan, target_catalog)
    guard_rls_bypass(plan, {source: src, target: dst})
    if options.shaping is not None:
        guard_masked_checks(options.shaping.masking, plan, src)
    dst.commit()  # the load must start its own top-level transaction, not a savepoint
    return plan, target_catalog
