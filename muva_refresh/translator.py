"""The translator: the only map between catalog tables and Dagster, in both directions.

One overridable method per facet (key, group, description, metadata, check specs), as
dagster-dbt's translator has. It writes the metadata of a materialization or a check result
and reads it back, so `runs` gets the engine's own types from what Dagster stored.
"""

from __future__ import annotations

import hashlib
import re
import sys
from typing import Any, Mapping

import dagster as dg

from .catalog import Catalog, MaterializedView, Table, TableRef
from .checks import CHECKS, WARN, CheckOutcome
from .graph import Plan
from .refresh import RefreshReport
from .stream import FULL, CopyStats
from .timings import Timings
from .views import ViewStats

VIEWS_GROUP = "materialized_views"
PRODUCTION_GROUP = "production"
# Materialization metadata the translator writes and reads back.
ROWS, BYTES, SECONDS, MB_PER_S, FORMAT = "rows", "bytes", "seconds", "MB/s", "copy_format"
PATH, WHY, COPIED, DELETED, COMPARED = "path", "path_reason", "rows_copied", "rows_deleted", "rows_compared"
# A run's breakdown: a table for people, and the engine's timings to read back.
TIMINGS_TABLE, TIMINGS = "timings", "engine_timings"
TIMINGS_SCHEMA = dg.TableSchema(columns=[dg.TableColumn("phase", "string"), dg.TableColumn("table", "string"),
                                         dg.TableColumn("seconds", "float"), dg.TableColumn("share", "string")])


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

    def source_key(self, ref: TableRef) -> dg.AssetKey:
        """The table on production, which its staging table's asset reads."""
        return dg.AssetKey([PRODUCTION_GROUP, *self.asset_key(ref).path])

    def source_spec(self, table: Table) -> dg.AssetSpec:
        return dg.AssetSpec(
            key=self.source_key(table.ref),
            group_name=PRODUCTION_GROUP,
            kinds={"postgres"},
            description=f"Table {table.ref} on production. Observing it reads the server's statistics "
                        "counters of the table, not its rows: a new data version means its rows may have "
                        "changed, and marks the staging table as unsynced.",
            metadata={"dagster/table_name": str(table.ref)},
        )

    def keys(self, catalog: Catalog) -> TableKeys:
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
            deps=[self.asset_key(p) for p in plan.parents[table.ref]] + [self.source_key(table.ref)],
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
            PATH: stats.path,  # unchanged, delta or full
            WHY: stats.reason,
            COPIED: dg.MetadataValue.int(stats.copied),
            DELETED: dg.MetadataValue.int(stats.deleted_rows),
            COMPARED: dg.MetadataValue.int(stats.compared_rows),
            "snapshot_id": report.snapshot_id,
            "source_server_version": dg.MetadataValue.int(report.source_version),
            "target_server_version": dg.MetadataValue.int(report.target_version),
        }

    def view_metadata(self, stats: ViewStats) -> dict[str, object]:
        return {"dagster/row_count": dg.MetadataValue.int(stats.rows), ROWS: dg.MetadataValue.int(stats.rows),
                SECONDS: dg.MetadataValue.float(round(stats.seconds, 4))}

    def timings_metadata(self, engine: Timings, run: Timings) -> dict[str, object]:
        """`run`'s breakdown as a table (the engine's phases and Dagster's share), and `engine`'s to read back."""
        records = [dg.TableRecord({"phase": r.phase, "table": str(r.table or ""), "seconds": round(r.seconds, 3),
                                   "share": "beside, not added up" if r.beside else f"{run.share(r.seconds):.1%}"})
                   for r in run.rows()]
        return {TIMINGS_TABLE: dg.MetadataValue.table(records, TIMINGS_SCHEMA),
                "run_seconds_so_far": dg.MetadataValue.float(round(run.wall_seconds, 3)),
                "engine_seconds": dg.MetadataValue.float(round(engine.wall_seconds, 3)),
                TIMINGS: dg.MetadataValue.json(engine.to_json())}

    def timings(self, metadata: Mapping[str, Any]) -> Timings:
        return Timings.from_json(plain_metadata(metadata)[TIMINGS])

    def view_stats(self, metadata: Mapping[str, Any]) -> ViewStats:
        plain = plain_metadata(metadata)
        return ViewStats(plain[ROWS], plain[SECONDS])

    def copy_stats(self, metadata: Mapping[str, Any]) -> CopyStats:
        """The stats a materialization recorded, read back from what `materialization_metadata` wrote."""
        plain = plain_metadata(metadata)
        return CopyStats(plain[ROWS], plain[BYTES], plain[SECONDS], plain[FORMAT], plain.get(PATH, FULL),
                         plain.get(WHY, ""), plain.get(COPIED), plain.get(DELETED, 0), plain.get(COMPARED, 0))

    def data_version(self, ref: TableRef, stats: CopyStats, report: RefreshReport) -> dg.DataVersion:
        """The table's content at the snapshot: the source's row digest (waits for it when the
        table went whole and is still being hashed)."""
        return dg.DataVersion(stats.source_digest or report.digests.digest(ref))


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
