"""The validations, one function per check, each returning a plain CheckOutcome (no Dagster here).

Blocking checks (row_count, no_orphans) run inside the load transaction, before COMMIT: when
one fails the refresh rolls back, so staging never holds a short or orphaned copy. The others
run after COMMIT. Without a refresh, `validate_live` compares the current target with the
current source. pandas is used only for the sample rows shown with a failure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd
import psycopg
from psycopg import sql

from .catalog import Catalog, ForeignKey, Index, Table, TableFilter, TableRef, read_catalog
from .copy import Endpoint, RefreshReport, copy_format, read_digest
from .errors import BlockingCheckError

ROW_COUNT, NO_ORPHANS, RLS, UNIQUE_INDEXES, INDEXES, CONTENT, SEQUENCES = (
    "row_count", "no_orphans", "rls", "unique_indexes", "indexes", "content", "sequences",
)
ERROR, WARN = "ERROR", "WARN"


@dataclass(frozen=True)
class CheckKind:
    name: str
    severity: str  # how a failure counts
    blocking: bool
    description: str


CHECKS: tuple[CheckKind, ...] = (
    CheckKind(ROW_COUNT, ERROR, True, "Target row count equals the source's at the copied snapshot."),
    CheckKind(NO_ORPHANS, ERROR, True, "No target row lacks its FK parent (MATCH SIMPLE: rows with a NULL FK column are skipped)."),
    CheckKind(RLS, ERROR, False, "RLS flags and policies are equal on source and target; WARN where RLS is off on both."),
    CheckKind(UNIQUE_INDEXES, ERROR, False, "The target has every unique index and constraint of the source, by definition."),
    CheckKind(INDEXES, WARN, False, "The target has every other index of the source (HNSW and GIN included)."),
    CheckKind(CONTENT, ERROR, False, "A key-ordered hash of the target equals the source's at the snapshot."),
    CheckKind(SEQUENCES, ERROR, False, "Every serial/identity sequence on the target is past its column's max."),
)
CHECK_BY_NAME = {c.name: c for c in CHECKS}
SAMPLE_LIMIT = 10

COUNT_ROWS = sql.SQL("SELECT count(*) FROM {table}")
ORPHANS = sql.SQL(
    "SELECT {child_columns}, count(*) OVER () FROM {child} c "
    "WHERE {all_set} AND NOT EXISTS (SELECT 1 FROM {parent} p WHERE {matches}) LIMIT {limit}"
)
SEQUENCE_STATE = sql.SQL(
    "SELECT s.last_value, s.is_called, q.seqincrement FROM {sequence} s, pg_sequence q "
    "WHERE q.seqrelid = %s::regclass"
)
COLUMN_MAX = sql.SQL("SELECT max({column}) FROM {table}")


@dataclass(frozen=True)
class CheckOutcome:
    check: str
    table: TableRef
    passed: bool
    summary: str
    metadata: Mapping[str, Any] = field(default_factory=dict)  # ints, floats, strs, DataFrames
    severity: str = ERROR  # a failure's weight; a WARN outcome never fails a run

    @property
    def blocking(self) -> bool:
        return CHECK_BY_NAME[self.check].blocking

    @property
    def fails_run(self) -> bool:
        return not self.passed and self.severity == ERROR


def outcome(check: str, table: TableRef, passed: bool, summary: str, **metadata: Any) -> CheckOutcome:
    return CheckOutcome(check, table, passed, summary, metadata, CHECK_BY_NAME[check].severity)


# --- the checks -----------------------------------------------------------------------------

def row_count(dst: psycopg.Connection, table: Table, expected: int, basis: Mapping[str, Any]) -> CheckOutcome:
    actual = dst.execute(COUNT_ROWS.format(table=table.ref.ident())).fetchone()[0]
    gap = actual - expected
    summary = (f"{table.ref}: {actual:,} rows on the target, as on the source" if gap == 0 else
               f"{table.ref}: {actual:,} rows on the target, {expected:,} on the source ({gap:+,})")
    return outcome(ROW_COUNT, table.ref, gap == 0, summary, target_rows=actual, source_rows=expected, **basis)


def orphans_sql(fk: ForeignKey) -> sql.Composed:
    child = [sql.SQL("c.{}").format(sql.Identifier(c)) for c in fk.child_columns]
    return ORPHANS.format(
        child_columns=sql.SQL(", ").join(child),
        child=fk.child.ident(),
        all_set=sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(c) for c in child),
        parent=fk.parent.ident(),
        matches=sql.SQL(" AND ").join(
            sql.SQL("p.{} = {}").format(sql.Identifier(p), c) for p, c in zip(fk.parent_columns, child)
        ),
        limit=sql.Literal(SAMPLE_LIMIT),
    )


def no_orphans(dst: psycopg.Connection, table: Table, fks: Sequence[ForeignKey]) -> CheckOutcome:
    per_fk: dict[str, int] = {}
    samples = []
    for fk in fks:
        rows = dst.execute(orphans_sql(fk)).fetchall()
        per_fk[fk.name] = rows[0][-1] if rows else 0
        samples += [{"fk": fk.name, "key": ", ".join(f"{c}={v}" for c, v in zip(fk.child_columns, r[:-1]))}
                    for r in rows]
    total = sum(per_fk.values())
    bad = [f"{n} ({count:,})" for n, count in per_fk.items() if count]
    summary = (f"{table.ref}: no orphans across {len(fks)} FKs" if not total else
               f"{total:,} orphans in {table.ref}: {', '.join(bad)}")
    metadata: dict[str, Any] = {"orphans": total, "fks_checked": len(fks), **{f"orphans.{n}": c for n, c in per_fk.items()}}
    if samples:
        metadata["orphan_sample"] = pd.DataFrame(samples[:SAMPLE_LIMIT])
    return outcome(NO_ORPHANS, table.ref, total == 0, summary, **metadata)


def rls(source: Table, target: Table) -> CheckOutcome:
    differences = []
    if (source.rls_enabled, source.rls_forced) != (target.rls_enabled, target.rls_forced):
        differences.append(
            f"RLS enabled/forced is {source.rls_enabled}/{source.rls_forced} on the source, "
            f"{target.rls_enabled}/{target.rls_forced} on the target"
        )
    src_pol, dst_pol = {p.name: p for p in source.policies}, {p.name: p for p in target.policies}
    differences += [f"policy {n!r} is missing on the target" for n in sorted(src_pol.keys() - dst_pol.keys())]
    differences += [f"policy {n!r} exists only on the target" for n in sorted(dst_pol.keys() - src_pol.keys())]
    differences += [f"policy {n!r} differs" for n in sorted(src_pol.keys() & dst_pol.keys()) if src_pol[n] != dst_pol[n]]
    metadata = {"source_rls": source.rls_enabled, "target_rls": target.rls_enabled,
                "source_policies": len(source.policies), "target_policies": len(target.policies)}
    if differences:
        return outcome(RLS, source.ref, False, f"{source.ref}: " + "; ".join(differences), **metadata)
    if not source.rls_enabled:
        return CheckOutcome(RLS, source.ref, False,
                            f"{source.ref}: RLS is off on the source and the target; its rows are open to every role",
                            metadata, severity=WARN)
    return outcome(RLS, source.ref, True,
                   f"{source.ref}: RLS on, {len(source.policies)} policies equal on both sides", **metadata)


def normalized_index(index: Index) -> str:
    """pg_get_indexdef without the index name, so a renamed but equal index still matches."""
    return re.sub(r'^(CREATE (?:UNIQUE )?INDEX )("(?:[^"]|"")*"|\S+)( ON )', r"\1\3", index.definition)


def _index_check(check: str, source: Table, target: Table, unique: bool) -> CheckOutcome:
    wanted = {normalized_index(i): i.name for i in source.indexes if i.unique == unique}
    present = {normalized_index(i) for i in target.indexes if i.unique == unique}
    missing = sorted(name for definition, name in wanted.items() if definition not in present)
    kind = "unique indexes" if unique else "other indexes"
    summary = (f"{source.ref}: all {len(wanted)} {kind} present" if not missing else
               f"{source.ref}: missing on the target: {', '.join(missing)}")
    metadata: dict[str, Any] = {"source_indexes": len(wanted), "missing": len(missing)}
    if missing:
        metadata["missing_indexes"] = pd.DataFrame(
            [{"index": n, "definition": d} for d, n in wanted.items() if n in missing]
        )
    return outcome(check, source.ref, not missing, summary, **metadata)


def unique_indexes(source: Table, target: Table) -> CheckOutcome:
    return _index_check(UNIQUE_INDEXES, source, target, unique=True)


def indexes(source: Table, target: Table) -> CheckOutcome:
    return _index_check(INDEXES, source, target, unique=False)


def content(dst: psycopg.Connection, table: Table, expected_digest: str, fmt: str, basis: Mapping[str, Any]) -> CheckOutcome:
    digest, rows, size = read_digest(dst, table, fmt)
    same = digest == expected_digest
    summary = (f"{table.ref}: content hash matches ({rows:,} rows, {fmt})" if same else
               f"{table.ref}: content differs from the source (target hash {digest[:12]}, source {expected_digest[:12]})")
    return outcome(CONTENT, table.ref, same, summary, target_digest=digest, source_digest=expected_digest,
                   rows_hashed=rows, bytes_hashed=size, **basis)


def sequences(dst: psycopg.Connection, table: Table) -> CheckOutcome:
    behind = []
    metadata: dict[str, Any] = {"sequences": len(table.sequences)}
    for owned in table.sequences:
        last_value, is_called, increment = dst.execute(
            SEQUENCE_STATE.format(sequence=owned.sequence.ident()), (owned.sequence.ident().as_string(dst),)
        ).fetchone()
        next_value = last_value + increment if is_called else last_value
        top = dst.execute(COLUMN_MAX.format(column=sql.Identifier(owned.column), table=table.ref.ident())).fetchone()[0]
        metadata[f"next.{owned.column}"] = next_value
        metadata[f"max.{owned.column}"] = top if top is not None else "(empty)"
        if top is not None and (next_value <= top if increment > 0 else False):
            behind.append(f"{owned.sequence} would hand out {next_value}, but {owned.column} already reaches {top}")
    summary = (f"{table.ref}: {len(table.sequences)} sequences ahead of their columns" if not behind else
               f"{table.ref}: " + "; ".join(behind))
    return outcome(SEQUENCES, table.ref, not behind, summary, **metadata)


# --- running them ---------------------------------------------------------------------------

def fks_of(catalog: Catalog, ref: TableRef) -> list[ForeignKey]:
    return [fk for fk in catalog.foreign_keys + catalog.external_foreign_keys if fk.child == ref]


class Verifier:
    """Collects outcomes; its `gate` is what the copy engine calls inside the load transaction."""

    def __init__(self, wanted: Iterable[str] | None = None):
        self.wanted = set(wanted) if wanted is not None else {c.name for c in CHECKS}
        self.outcomes: list[CheckOutcome] = []

    def gate(self, dst: psycopg.Connection, table: Table, rows_at_snapshot: int, snapshot_id: str, catalog: Catalog) -> None:
        found = []
        basis = {"basis": "snapshot", "snapshot_id": snapshot_id}
        if ROW_COUNT in self.wanted:
            found.append(row_count(dst, table, rows_at_snapshot, basis))
        if NO_ORPHANS in self.wanted:
            found.append(no_orphans(dst, table, fks_of(catalog, table.ref)))
        self.outcomes += found
        failed = [o for o in found if o.fails_run]
        if failed:
            raise BlockingCheckError(
                "; ".join(o.summary for o in failed) + "; the refresh was rolled back, staging is unchanged"
            )

    def after_commit(self, target: Endpoint, report: RefreshReport) -> list[CheckOutcome]:
        """The non-blocking checks of every refreshed table, against the committed target."""
        basis = {"basis": "snapshot", "snapshot_id": report.snapshot_id}
        found: list[CheckOutcome] = []
        conn = target.connect(read_only=True)
        try:
            for ref, stats in report.tables.items():
                source_table = report.source_catalog.table(ref)
                target_table = report.target_catalog.table(ref)
                found += catalog_checks(self.wanted, source_table, target_table)
                if CONTENT in self.wanted:
                    found.append(content(conn, source_table, stats.digest, stats.format, basis))
                if SEQUENCES in self.wanted:
                    found.append(sequences(conn, target_table))
                conn.rollback()
        finally:
            conn.close()
        self.outcomes += found
        return found


def catalog_checks(wanted: set[str], source_table: Table, target_table: Table) -> list[CheckOutcome]:
    pure = {RLS: rls, UNIQUE_INDEXES: unique_indexes, INDEXES: indexes}
    return [fn(source_table, target_table) for name, fn in pure.items() if name in wanted]


def validate_live(
    source: Endpoint,
    target: Endpoint,
    wanted_by_table: Mapping[TableRef, Iterable[str]],
    table_filter: TableFilter | None = None,
) -> list[CheckOutcome]:
    """Run checks without copying: the current target against the current source."""
    basis = {"basis": "live: current target against current source, no refresh in this run"}
    src = source.connect(read_only=True)
    dst = target.connect(read_only=True)
    found: list[CheckOutcome] = []
    try:
        src.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ  # one view of the source for all tables
        source_catalog = read_catalog(src, table_filter)
        target_catalog = read_catalog(dst, TableFilter(source_catalog.schemas))
        same_major = source_catalog.same_major(target_catalog)
        for ref, wanted_iter in wanted_by_table.items():
            wanted = set(wanted_iter)
            source_table = source_catalog.table(ref)
            target_table = target_catalog.by_ref.get(ref)
            if target_table is None:
                found += [outcome(w, ref, False, f"{ref} is missing on the target", **basis) for w in sorted(wanted)]
                continue
            if ROW_COUNT in wanted:
                expected = src.execute(COUNT_ROWS.format(table=ref.ident())).fetchone()[0]
                found.append(row_count(dst, target_table, expected, basis))
            if NO_ORPHANS in wanted:
                found.append(no_orphans(dst, target_table, fks_of(source_catalog, ref)))
            found += catalog_checks(wanted, source_table, target_table)
            if CONTENT in wanted:
                fmt = copy_format(source_table, same_major)
                expected_digest = read_digest(src, source_table, fmt)[0]
                found.append(content(dst, source_table, expected_digest, fmt, basis))
            if SEQUENCES in wanted:
                found.append(sequences(dst, target_table))
    finally:
        src.close()
        dst.close()
    return found
