"""Tables as Dagster assets: the translator (the only table -> AssetKey map) and the asset factory.

All table assets come from one subsettable multi_asset, so a run has one step whatever its
selection: one snapshot, one target transaction, and no per-step process start-up.
"""


# No `from __future__ import annotations`: Dagster reads the asset function's annotations.
import hashlib
import re
from collections import defaultdict
from typing import Any, Iterable, Iterator

import dagster as dg
import pandas as pd

from .catalog import Catalog, Table, TableFilter, TableRef
from .checks import CHECKS, WARN, CheckOutcome, Verifier, validate_live
from .copy import CopyStats, RefreshReport, refresh
from .errors import BlockingCheckError
from .graph import Plan, make_plan
from .resources import PostgresDatabase

TABLE_ASSETS_NAME = "refresh_tables"
TARGET_POOL = "muva_refresh_target"


def key_part(name: str) -> str:
    """A Dagster-safe name part; a short hash marks (and disambiguates) any name it had to change."""
    clean = re.sub(r"[^A-Za-z0-9_]", "_", name)
    if clean == name:
        return name
    return f"{clean}_{hashlib.sha1(name.encode()).hexdigest()[:6]}"


class TableTranslator:
    """Maps catalog tables to Dagster: override a method to change one facet."""

    def asset_key(self, ref: TableRef) -> dg.AssetKey:
        if ref.schema == "public":
            return dg.AssetKey([key_part(ref.name)])
        return dg.AssetKey([key_part(ref.schema), key_part(ref.name)])

    def group_name(self, table: Table, plan: Plan) -> str:
        return f"level_{plan.level[table.ref]}"

    def description(self, table: Table, plan: Plan) -> str:
        fks = [fk for fk in plan.catalog.foreign_keys + plan.catalog.external_foreign_keys if fk.child == table.ref]
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
        unique_single = {
            idx.definition.rsplit("(", 1)[-1].rstrip(")").strip('"')
            for idx in table.indexes if idx.unique and idx.definition.count(",") == 0
        }
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

    def check_specs(self, table: Table) -> list[dg.AssetCheckSpec]:
        return [
            dg.AssetCheckSpec(kind.name, asset=self.asset_key(table.ref), description=kind.description,
                              blocking=kind.blocking, metadata={"severity_on_failure": kind.severity})
            for kind in CHECKS
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

    def materialization_metadata(self, stats: CopyStats, report: RefreshReport) -> dict[str, object]:
        return {
            "dagster/row_count": dg.MetadataValue.int(stats.rows),
            "rows": dg.MetadataValue.int(stats.rows),
            "bytes": dg.MetadataValue.int(stats.bytes),
            "seconds": dg.MetadataValue.float(round(stats.seconds, 4)),
            "MB/s": dg.MetadataValue.float(round(stats.mb_per_s, 2)),
            "copy_format": stats.format,
            "snapshot_id": report.snapshot_id,
            "content_digest": stats.digest,
            "source_server_version": dg.MetadataValue.int(report.source_version),
            "target_server_version": dg.MetadataValue.int(report.target_version),
        }


def metadata_value(value: Any) -> Any:
    """Plain values pass through; a DataFrame of details becomes a table in the UI."""
    if isinstance(value, pd.DataFrame):
        return dg.MetadataValue.table(
            records=[dg.TableRecord({k: str(v) for k, v in row.items()}) for row in value.to_dict("records")],
            schema=dg.TableSchema(columns=[dg.TableColumn(str(c), "string") for c in value.columns]),
        )
    return value


class RefreshConfig(dg.Config):
    """Run settings for a refresh."""

    workers: int = 1  # 1: one atomic target transaction; more: tables of a level in parallel


def keys_by_table(catalog: Catalog, translator: TableTranslator) -> dict[TableRef, dg.AssetKey]:
    keys = {t.ref: translator.asset_key(t.ref) for t in catalog.tables}
    if len(set(keys.values())) != len(keys):
        raise ValueError("two tables map to one asset key; override TableTranslator.asset_key")
    return keys


def build_table_assets(
    catalog: Catalog,
    translator: TableTranslator | None = None,
    table_filter: TableFilter | None = None,
) -> dg.AssetsDefinition:
    translator = translator or TableTranslator()
    plan = make_plan(catalog)
    key_of = keys_by_table(catalog, translator)
    table_of = {key: ref for ref, key in key_of.items()}

    @dg.multi_asset(
        name=TABLE_ASSETS_NAME,
        specs=[translator.asset_spec(t, plan) for t in catalog.tables],
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
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        tables = sorted(table_of[k] for k in context.selected_asset_keys)
        wanted: dict[TableRef, set[str]] = defaultdict(set)
        for check_key in context.selected_asset_check_keys:
            wanted[table_of[check_key.asset_key]].add(check_key.name)

        def results(outcomes: Iterable[CheckOutcome]) -> Iterator[dg.AssetCheckResult]:
            for o in outcomes:
                if o.check in wanted.get(o.table, ()):
                    yield translator.check_result(o)

        filter_ = table_filter or TableFilter.from_env()
        if tables:
            verifier = Verifier()  # the blocking checks guard the load even when not selected
            try:
                report = refresh(
                    source.endpoint(), target.endpoint(), tables,
                    table_filter=filter_,
                    expected=catalog,
                    workers=config.workers,
                    gate=verifier.gate,
                )
            except BlockingCheckError:
                yield from results(verifier.outcomes)
                raise
            context.log.info(
                f"copied {len(report.tables)} tables, {report.rows:,} rows, {report.bytes / 1e6:.1f} MB "
                f"from snapshot {report.snapshot_id} in {report.seconds:.1f}s"
            )
            for ref, stats in report.tables.items():
                yield dg.MaterializeResult(asset_key=key_of[ref], metadata=translator.materialization_metadata(stats, report))
            verifier.after_commit(target.endpoint(), report)
            yield from results(verifier.outcomes)
            report.raise_for_failures()
        only_checks = {ref: names for ref, names in wanted.items() if ref not in set(tables)}
        if only_checks:
            yield from results(validate_live(source.endpoint(), target.endpoint(), only_checks, filter_))

    return refresh_tables
