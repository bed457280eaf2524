"""Tables as Dagster assets: the translator (the only table <-> AssetKey map) and the asset factory.

All table assets come from one subsettable multi_asset, so a run has one step whatever its
selection: one snapshot, one target transaction, and no per-step process start-up. The
translator writes the metadata and reads it back, so the two never drift apart.
"""


# No `from __future__ import annotations`: Dagster reads the asset function's annotations.
import hashlib
import re
import sys
import time
from collections import defaultdict
from typing import Any, Iterable, Iterator, Mapping

import dagster as dg

from .catalog import Catalog, MaterializedView, Table, TableRef
from .checks import CHECKS, WARN, CheckOutcome, CheckSettings, Verifier, validate_live
from .copy import CopyStats, Progress, ViewStats
from .errors import BlockingCheckError
from .graph import Plan, make_plan
from .refresh import RefreshOptions, RefreshReport, refresh, refresh_views_only
from .policy import shaping_for
from .resources import PostgresDatabase
from .settings import MASK_SALT_VAR

TABLE_ASSETS_NAME = "refresh_tables"
TARGET_POOL = "muva_refresh_target"
VIEWS_GROUP = "materialized_views"
LOG_EVERY_SECONDS = 2.0
# Materialization metadata the translator writes and reads back.
ROWS, BYTES, SECONDS, MB_PER_S, FORMAT = "rows", "bytes", "seconds", "MB/s", "copy_format"


def key_part(name: str) -> str:
    """A Dagster-safe name part; a short hash marks (and disambiguates) any name it had to change."""
    clean = re.sub(r"[^A-Za-z0-9_]", "_", name)
    if clean == name:
        return name
    return f"{clean}_{hashlib.sha1(name.encode()).hexdigest()[:6]}"


class TableTranslator:
    """Maps catalog tables to Dagster and Dagster's records back: override a method to change one facet."""

    def asset_key(self, ref: TableRef) -> dg.AssetKey:
        return dg.AssetKey([key_part(p) for p in ref.short_parts])

    def keys(self, catalog: Catalog) -> "TableKeys":
        refs = [t.ref for t in catalog.tables] + [v.ref for v in catalog.materialized_views]
        return TableKeys({ref: self.asset_key(ref) for ref in refs})

    def group_name(self, table: Table, plan: Plan) -> str:
        return f"level_{plan.level[table.ref]}"

    def description(self, table: Table, plan: Plan) -> str:
        fks = plan.catalog.foreign_keys_of(table.ref)
        lines = [table.comment or f"Table {table.ref}, copied from production to staging.",
                 "",
                 f"Level {plan.level[table.ref]}; {len(table.copied_columns)} copied columns; "
                 f"primary key ({', '.join(table.primary_key) or 'none'}); "
                 f"RLS {'on' if table.rls_enabled else 'off'} with {len(table.policies)} policies."]
        if fks:
            lines += ["", "Foreign keys:"]
            lines += [f"- ({', '.join(fk.child_columns)}) -> {fk.parent} ({', '.join(fk.parent_columns)})" for fk in fks]
        return "\n".join(lines)

    def column_schema(self, table: Table) -> dg.TableSchema:
        unique_single = {i.key_columns[0] for i in table.indexes if i.unique and len(i.key_columns) == 1}
        return dg.TableSchema(columns=[
            dg.TableColumn(
                name=c.name,
                type=c.type,
                constraints=dg.TableColumnConstraints(
                    nullable=not c.not_null,
                    unique=c.name in unique_single,
                    other=(["primary key"] if c.name in table.primary_key else [])
                    + (["generated, not copied"] if c.generated else []),
                ),
            )
            for c in table.columns
        ])

    def metadata(self, table: Table) -> dict[str, object]:
        return {
            "dagster/table_name": str(table.ref),
            "dagster/column_schema": self.column_schema(table),
            "primary_key": ", ".join(table.primary_key) or "(none)",
            "rls": "enabled" if table.rls_enabled else "disabled",
        }

    def asset_spec(self, table: Table, plan: Plan) -> dg.AssetSpec:
        return dg.AssetSpec(
            key=self.asset_key(table.ref),
            deps=[self.asset_key(p) for p in plan.parents[table.ref]],
            group_name=self.group_name(table, plan),
            kinds={"postgres"},
            description=self.description(table, plan),
            metadata=self.metadata(table),
        )

    def view_spec(self, view: MaterializedView, plan: Plan) -> dg.AssetSpec:
        known = set(plan.catalog.refs) | {v.ref for v in plan.catalog.materialized_views}
        outside = [str(r) for r in view.reads if r not in known]
        return dg.AssetSpec(
            key=self.asset_key(view.ref),
            deps=[self.asset_key(r) for r in view.reads if r in known],
            group_name=VIEWS_GROUP,
            kinds={"postgres"},
            description=f"Materialized view {view.ref}, refreshed on the target after the tables it reads, "
                        "in the same transaction." + (f" It also reads {', '.join(outside)}." if outside else ""),
            metadata={"dagster/table_name": str(view.ref)},
        )

    def check_specs(self, table: Table) -> list[dg.AssetCheckSpec]:
        return [
            dg.AssetCheckSpec(check.name, asset=self.asset_key(table.ref), description=check.description,
                              blocking=check.blocking, metadata={"severity_on_failure": check.severity})
            for check in CHECKS
        ]

    def check_result(self, outcome: CheckOutcome) -> dg.AssetCheckResult:
        return dg.AssetCheckResult(
            asset_key=self.asset_key(outcome.table),
            check_name=outcome.check,
            passed=outcome.passed,
            severity=dg.AssetCheckSeverity.WARN if outcome.severity == WARN else dg.AssetCheckSeverity.ERROR,
            description=outcome.summary,
            metadata={k: metadata_value(v) for k, v in outcome.metadata.items()},
        )

    def outcome(self, evaluation: dg.AssetCheckEvaluation, ref: TableRef) -> CheckOutcome:
        """A stored check evaluation, back as the engine's outcome (tables as lists of rows)."""
        return CheckOutcome(evaluation.check_name, ref, evaluation.passed, evaluation.description or "",
                            plain_metadata(evaluation.metadata), evaluation.severity.value)

    def materialization_metadata(self, stats: CopyStats, report: RefreshReport) -> dict[str, object]:
        return {
            "dagster/row_count": dg.MetadataValue.int(stats.rows),
            ROWS: dg.MetadataValue.int(stats.rows),
            BYTES: dg.MetadataValue.int(stats.bytes),
            SECONDS: dg.MetadataValue.float(round(stats.seconds, 4)),
            MB_PER_S: dg.MetadataValue.float(round(stats.mb_per_s, 2)),
            FORMAT: stats.format,
            "snapshot_id": report.snapshot_id,
            "source_server_version": dg.MetadataValue.int(report.source_version),
            "target_server_version": dg.MetadataValue.int(report.target_version),
        }

    def view_metadata(self, stats: ViewStats) -> dict[str, object]:
        return {"dagster/row_count": dg.MetadataValue.int(stats.rows), ROWS: dg.MetadataValue.int(stats.rows),
                SECONDS: dg.MetadataValue.float(round(stats.seconds, 4))}

    def view_stats(self, metadata: Mapping[str, Any]) -> ViewStats:
        plain = plain_metadata(metadata)
        return ViewStats(plain[ROWS], plain[SECONDS])

    def copy_stats(self, metadata: Mapping[str, Any]) -> CopyStats:
        """The stats a materialization recorded, read back from what `materialization_metadata` wrote."""
        plain = plain_metadata(metadata)
        return CopyStats(plain[ROWS], plain[BYTES], plain[SECONDS], plain[FORMAT])


class TableKeys:
    """Both directions of the table <-> asset key map for one catalog; two tables never share a key."""

    def __init__(self, key_of: Mapping[TableRef, dg.AssetKey]):
        self.key_of = dict(key_of)
        self.table_of = {key: ref for ref, key in self.key_of.items()}
        if len(self.table_of) != len(self.key_of):
            raise ValueError("two tables map to one asset key; override TableTranslator.asset_key")


def metadata_value(value: Any) -> Any:
    """Plain values pass through; a DataFrame of details becomes a table in the UI."""
    pandas = sys.modules.get("pandas")  # imported only by a failing check with rows to show
    if pandas is not None and isinstance(value, pandas.DataFrame):
        return dg.MetadataValue.table(
            records=[dg.TableRecord({k: str(v) for k, v in row.items()}) for row in value.to_dict("records")],
            schema=dg.TableSchema(columns=[dg.TableColumn(str(c), "string") for c in value.columns]),
        )
    return value


def plain_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Stored metadata values as plain Python values; tables become lists of rows."""
    plain = {}
    for key, value in metadata.items():
        if isinstance(value, dg.TableMetadataValue):
            plain[key] = [r.data for r in value.records]
        else:
            plain[key] = value.value if isinstance(value, dg.MetadataValue) else value
    return plain


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


class RefreshConfig(dg.Config):
    """Run settings for a refresh."""

    workers: int = 1  # 1: one atomic target transaction; more: tables of a level in parallel
    # A masking and subset policy: a TOML or YAML file, or demo / demo-tenant. Empty: MUVA_POLICY,
    # and without that an exact copy. The salt comes from MUVA_MASK_SALT.
    policy: str = ""


def build_table_assets(
    catalog: Catalog, translator: TableTranslator, rls_expected: tuple[str, ...] = (), default_policy: str = ""
) -> dg.AssetsDefinition:
    plan = make_plan(catalog)
    keys = translator.keys(catalog)
    views = {v.ref: v for v in catalog.materialized_views}

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
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        selected = {keys.table_of[k] for k in context.selected_asset_keys}
        tables = tuple(sorted(selected - views.keys()))
        wanted: dict[TableRef, set[str]] = defaultdict(set)
        for check_key in context.selected_asset_check_keys:
            wanted[keys.table_of[check_key.asset_key]].add(check_key.name)

        def results(outcomes: Iterable[CheckOutcome]) -> Iterator[dg.AssetCheckResult]:
            for o in outcomes:
                if o.check in wanted.get(o.table, ()):
                    yield translator.check_result(o)

        def view_results(refreshed: Mapping[TableRef, ViewStats]) -> Iterator[dg.MaterializeResult]:
            for ref, stats in refreshed.items():
                if ref in selected:  # a view the run did not select is kept fresh all the same
                    yield dg.MaterializeResult(asset_key=keys.key_of[ref], metadata=translator.view_metadata(stats))

        run_log = CopiedLines(context.log)

        def copied(ref: TableRef, stats: CopyStats) -> None:
            run_log.copied(ref, stats)
            progress.copied(ref, stats)

        shaping = shaping_for(config.policy or default_policy, catalog, dg.EnvVar(MASK_SALT_VAR).get_value())
        settings = CheckSettings(rls_expected, shaping)
        if tables:
            verifier = Verifier(settings)  # the blocking checks guard the load even when not selected
            try:
                report = refresh(source.endpoint(), target.endpoint(),
                                 RefreshOptions(selected=tables, state=catalog, workers=config.workers, shaping=shaping),
                                 on_table=copied, on_stream=progress.streaming, gate=verifier.gate)
            except BlockingCheckError:
                yield from results(verifier.outcomes)
                raise
            finally:
                run_log.flush()
            context.log.info(
                f"copied {len(report.tables)} tables, {report.rows:,} rows, {report.bytes / 1e6:.1f} MB "
                f"from snapshot {report.snapshot_id} in {report.seconds:.1f}s"
            )
            blocking = list(verifier.outcomes)
            with verifier.checking_after_commit(target.endpoint(), report.copies()) as finished:
                for ref, stats in report.tables.items():  # stored by Dagster while the checks run
                    yield dg.MaterializeResult(asset_key=keys.key_of[ref],
                                               metadata=translator.materialization_metadata(stats, report))
                yield from view_results(report.views)
                yield from results(blocking)  # after the materializations they belong to
                for found in finished:
                    yield from results(found)
            report.raise_for_failures()
        elif selected:  # materialized views alone: refresh them from what staging holds now
            yield from view_results(refresh_views_only(source.endpoint(), target.endpoint(), catalog, selected))
        only_checks = {ref: names for ref, names in wanted.items() if ref not in set(tables)}
        if only_checks:
            yield from results(validate_live(source.endpoint(), target.endpoint(), only_checks,
                                             catalog.table_filter, settings))

    return refresh_tables
