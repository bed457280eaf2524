"""The validations: one registry, each check declared once, each returning a plain CheckOutcome.

Blocking checks run inside the load transaction, before COMMIT: when one fails the refresh
rolls back, so staging never holds a short or orphaned copy. The others run after COMMIT.
Without a refresh, `validate_live` runs the same checks on the current target against the
current source. The gate, the after-commit pass, `validate_live` and the Dagster check specs
all come from `CHECKS`. pandas is used only for the sample rows shown with a failure.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Protocol

import pandas as pd
import psycopg
from psycopg import sql

from .catalog import Catalog, ForeignKey, Index, Table, TableFilter, TableRef, read_catalog
from .copy import TableCopy, copy_format, count_rows, pump
from .endpoint import Endpoint
from .errors import BlockingCheckError

ERROR, WARN = "ERROR", "WARN"
IN_LOAD, AFTER_COMMIT = "in_load", "after_commit"
SAMPLE_LIMIT = 10
SNAPSHOT_BASIS = "snapshot"
LIVE_BASIS = "live: current target against current source, no refresh in this run"

ORPHANS = sql.SQL(
    "SELECT {child_columns}, count(*) OVER () FROM {child} c "
    "WHERE {all_set} AND NOT EXISTS (SELECT 1 FROM {parent} p WHERE {matches}) LIMIT {limit}"
)
SEQUENCE_STATE = sql.SQL(
    "SELECT s.last_value, s.is_called, q.seqincrement FROM {sequence} s, pg_sequence q "
    "WHERE q.seqrelid = %s::regclass"
)
COLUMN_EXTREME = sql.SQL("SELECT {extreme}({column}) FROM {table}")
# Column types a sequence's values compare with; a default like 'INV-' || nextval(...) has none.
NUMERIC_TYPES = re.compile(r"^(smallint|integer|bigint|numeric(\(.*\))?)$")


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


class SourceFacts(Protocol):
    """What the source held for a table, at the snapshot of a refresh or right now."""

    def rows(self, table: Table) -> int: ...

    def digest(self, table: Table) -> tuple[str, str]: ...  # (digest, COPY format)


@dataclass(frozen=True)
class SnapshotFacts:
    """Read off the COPY stream of the refresh: nothing is asked of the source again."""

    copy: TableCopy

    def rows(self, table: Table) -> int:
        return self.copy.stats.rows

    def digest(self, table: Table) -> tuple[str, str]:
        return self.copy.stats.digest, self.copy.stats.format


@dataclass(frozen=True)
class LiveFacts:
    """Asked of the source now, through one REPEATABLE READ transaction."""

    src: psycopg.Connection
    same_major: bool

    def rows(self, table: Table) -> int:
        return count_rows(self.src, table.ref)

    def digest(self, table: Table) -> tuple[str, str]:
        fmt = copy_format(table, self.same_major)
        return pump(self.src, table, fmt).digest, fmt


@dataclass(frozen=True)
class CheckSubject:
    """What a check looks at: one table on both sides, and the target connection to read it on."""

    conn: psycopg.Connection  # the target: inside the load transaction, or read-only after it
    source: Table
    target: Table
    source_catalog: Catalog
    facts: SourceFacts
    basis: Mapping[str, Any]
    rls_expected: tuple[str, ...] = ()  # schema.table patterns whose RLS must be on

    @property
    def ref(self) -> TableRef:
        return self.source.ref

    def outcome(self, check: str, passed: bool, summary: str, **metadata: Any) -> CheckOutcome:
        return CheckOutcome(check, self.ref, passed, summary, metadata, CHECK_BY_NAME[check].severity)


# --- the checks -----------------------------------------------------------------------------

def row_count(s: CheckSubject) -> CheckOutcome:
    actual, expected = count_rows(s.conn, s.ref), s.facts.rows(s.source)
    gap = actual - expected
    summary = (f"{s.ref}: {actual:,} rows on the target, as on the source" if gap == 0 else
               f"{s.ref}: {actual:,} rows on the target, {expected:,} on the source ({gap:+,})")
    return s.outcome("row_count", gap == 0, summary, target_rows=actual, source_rows=expected, **s.basis)


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


def no_orphans(s: CheckSubject) -> CheckOutcome:
    fks = s.source_catalog.foreign_keys_of(s.ref)
    per_fk: dict[str, int] = {}
    samples = []
    for fk in fks:
        rows = s.conn.execute(orphans_sql(fk)).fetchall()
        per_fk[fk.name] = rows[0][-1] if rows else 0
        samples += [{"fk": fk.name, "key": ", ".join(f"{c}={v}" for c, v in zip(fk.child_columns, r[:-1]))}
                    for r in rows]
    total = sum(per_fk.values())
    bad = [f"{n} ({count:,})" for n, count in per_fk.items() if count]
    summary = (f"{s.ref}: no orphans across {len(fks)} FKs" if not total else
               f"{total:,} orphans in {s.ref}: {', '.join(bad)}")
    metadata: dict[str, Any] = {"orphans": total, "fks_checked": len(fks), **{f"orphans.{n}": c for n, c in per_fk.items()}}
    if samples:
        metadata["orphan_sample"] = pd.DataFrame(samples[:SAMPLE_LIMIT])
    return s.outcome("no_orphans", total == 0, summary, **metadata)


def rls(s: CheckSubject) -> CheckOutcome:
    source, target = s.source, s.target
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
        return s.outcome("rls", False, f"{s.ref}: " + "; ".join(differences), **metadata)
    if source.rls_enabled:
        return s.outcome("rls", True, f"{s.ref}: RLS on, {len(source.policies)} policies equal on both sides", **metadata)
    neighbours = [t for t in s.source_catalog.tables if t.ref.schema == s.ref.schema and t.rls_enabled]
    expected = [p for p in s.rls_expected if fnmatch.fnmatchcase(str(s.ref), p)]
    if neighbours or expected:
        why = (f"{len(neighbours)} other tables in schema {s.ref.schema} use it" if neighbours
               else f"MUVA_RLS_EXPECTED lists it ({', '.join(expected)})")
        return CheckOutcome("rls", s.ref, False,
                            f"{s.ref}: RLS is off on the source and the target, while {why}; "
                            "its rows are open to every role", metadata, severity=WARN)
    return s.outcome("rls", True, f"{s.ref}: RLS is not used in schema {s.ref.schema}; equal on both sides",
                     rls_in_schema=f"not used in schema {s.ref.schema}", **metadata)


def normalized_index(index: Index) -> str:
    """pg_get_indexdef without the index name, so a renamed but equal index still matches."""
    return re.sub(r'^(CREATE (?:UNIQUE )?INDEX )("(?:[^"]|"")*"|\S+)( ON )', r"\1\3", index.definition)


def compare_indexes(check: str, s: CheckSubject, unique: bool) -> CheckOutcome:
    wanted = {normalized_index(i): i.name for i in s.source.indexes if i.unique == unique}
    present = {normalized_index(i) for i in s.target.indexes if i.unique == unique}
    missing = sorted(name for definition, name in wanted.items() if definition not in present)
    kind = "unique indexes" if unique else "other indexes"
    summary = (f"{s.ref}: all {len(wanted)} {kind} present" if not missing else
               f"{s.ref}: missing on the target: {', '.join(missing)}")
    metadata: dict[str, Any] = {"source_indexes": len(wanted), "missing": len(missing)}
    if missing:
        metadata["missing_indexes"] = pd.DataFrame(
            [{"index": n, "definition": d} for d, n in wanted.items() if n in missing]
        )
    return s.outcome(check, not missing, summary, **metadata)


def unique_indexes(s: CheckSubject) -> CheckOutcome:
    return compare_indexes("unique_indexes", s, unique=True)


def indexes(s: CheckSubject) -> CheckOutcome:
    return compare_indexes("indexes", s, unique=False)


def content(s: CheckSubject) -> CheckOutcome:
    expected, fmt = s.facts.digest(s.source)
    found = pump(s.conn, s.source, fmt)
    same = found.digest == expected
    summary = (f"{s.ref}: content hash matches ({found.rows:,} rows, {fmt})" if same else
               f"{s.ref}: content differs from the source (target hash {found.digest[:12]}, source {expected[:12]})")
    return s.outcome("content", same, summary, target_digest=found.digest, source_digest=expected,
                     rows_hashed=found.rows, bytes_hashed=found.bytes, **s.basis)


def sequences(s: CheckSubject) -> CheckOutcome:
    """Each sequence the table's columns use, owned or only named in a default, hands out a value
    past the column's values: above the max, or below the min for a descending sequence."""
    behind = []
    metadata: dict[str, Any] = {"sequences": len(s.target.sequences)}
    for used in s.target.sequences:
        last_value, is_called, increment = s.conn.execute(
            SEQUENCE_STATE.format(sequence=used.sequence.ident()), (used.sequence.ident().as_string(s.conn),)
        ).fetchone()
        next_value = last_value + increment if is_called else last_value
        metadata[f"next.{used.column}"] = next_value
        column = s.target.column(used.column)
        extreme = "max" if increment > 0 else "min"
        if column is None or not NUMERIC_TYPES.match(column.type):
            metadata[f"{extreme}.{used.column}"] = "not comparable: the default wraps nextval in an expression"
            continue
        top = s.conn.execute(COLUMN_EXTREME.format(
            extreme=sql.SQL(extreme), column=sql.Identifier(used.column), table=s.ref.ident())).fetchone()[0]
        metadata[f"{extreme}.{used.column}"] = top if top is not None else "(empty)"
        if top is not None and (next_value <= top if increment > 0 else next_value >= top):
            behind.append(f"{used.sequence} would hand out {next_value}, but {used.column} already reaches {top}")
    summary = (f"{s.ref}: {len(s.target.sequences)} sequences ahead of their columns" if not behind else
               f"{s.ref}: " + "; ".join(behind))
    return s.outcome("sequences", not behind, summary, **metadata)


# --- the registry ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Check:
    name: str
    severity: str  # how a failure counts
    blocking: bool  # runs inside the load, before COMMIT; a failure rolls the refresh back
    description: str
    run: Callable[[CheckSubject], CheckOutcome]

    @property
    def phase(self) -> str:
        return IN_LOAD if self.blocking else AFTER_COMMIT


CHECKS: tuple[Check, ...] = (
    Check("row_count", ERROR, True, "Target row count equals the source's at the copied snapshot.", row_count),
    Check("no_orphans", ERROR, True,
          "No target row lacks its FK parent (MATCH SIMPLE: rows with a NULL FK column are skipped).", no_orphans),
    Check("rls", ERROR, False,
          "RLS flags and policies are equal on source and target; WARN where RLS is off on both while "
          "other tables of the schema use it (or MUVA_RLS_EXPECTED lists the table).", rls),
    Check("unique_indexes", ERROR, False,
          "The target has every unique index and constraint of the source, by definition.", unique_indexes),
    Check("indexes", WARN, False, "The target has every other index of the source (HNSW and GIN included).", indexes),
    Check("content", ERROR, False,
          "A hash of the target equals the COPY stream's at the snapshot: key-ordered, or over the rows in any "
          "order for a table without a key.", content),
    Check("sequences", ERROR, False,
          "Every sequence the columns use, owned or only named in a default, hands out values past the column's.",
          sequences),
)
CHECK_BY_NAME = {c.name: c for c in CHECKS}


def checks_in(phase: str) -> tuple[Check, ...]:
    return tuple(c for c in CHECKS if c.phase == phase)


def run_checks(checks: Iterable[Check], subject: CheckSubject) -> list[CheckOutcome]:
    return [check.run(subject) for check in checks]


def snapshot_subject(conn: psycopg.Connection, copy: TableCopy, rls_expected: tuple[str, ...] = ()) -> CheckSubject:
    basis = {"basis": SNAPSHOT_BASIS, "snapshot_id": copy.snapshot_id}
    return CheckSubject(conn, copy.source, copy.target, copy.source_catalog, SnapshotFacts(copy), basis, rls_expected)


class Verifier:
    """Collects outcomes; its `gate` is what the load calls inside its transaction."""

    def __init__(self, rls_expected: tuple[str, ...] = ()) -> None:
        self.rls_expected = rls_expected
        self.outcomes: list[CheckOutcome] = []

    def gate(self, dst: psycopg.Connection, copy: TableCopy) -> None:
        found = run_checks(checks_in(IN_LOAD), snapshot_subject(dst, copy, self.rls_expected))
        self.outcomes += found
        failed = [o for o in found if o.fails_run]
        if failed:
            raise BlockingCheckError(
                "; ".join(o.summary for o in failed) + "; the refresh was rolled back, staging is unchanged"
            )

    def after_commit(self, target: Endpoint, copies: Iterable[TableCopy]) -> list[CheckOutcome]:
        """The non-blocking checks of every refreshed table, against the committed target."""
        found: list[CheckOutcome] = []
        conn = target.connect(read_only=True)
        try:
            for copy in copies:
                found += run_checks(checks_in(AFTER_COMMIT), snapshot_subject(conn, copy, self.rls_expected))
                conn.rollback()
        finally:
            conn.close()
        self.outcomes += found
        return found


def validate_live(
    source: Endpoint,
    target: Endpoint,
    wanted_by_table: Mapping[TableRef, Iterable[str]],
    table_filter: TableFilter | None = None,
    rls_expected: tuple[str, ...] = (),
) -> list[CheckOutcome]:
    """Run checks without copying: the current target against the current source."""
    basis = {"basis": LIVE_BASIS}
    src = source.connect(read_only=True)
    dst = target.connect(read_only=True)
    found: list[CheckOutcome] = []
    try:
        src.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ  # one view of the source for all tables
        source_catalog = read_catalog(src, table_filter)
        target_catalog = read_catalog(dst, TableFilter(source_catalog.schemas))
        facts = LiveFacts(src, source_catalog.same_major(target_catalog))
        for ref, names in wanted_by_table.items():
            wanted = [c for c in CHECKS if c.name in set(names)]
            target_table = target_catalog.by_ref.get(ref)
            if target_table is None:
                found += [CheckOutcome(c.name, ref, False, f"{ref} is missing on the target", basis, c.severity)
                          for c in wanted]
                continue
            subject = CheckSubject(dst, source_catalog.table(ref), target_table, source_catalog, facts, basis,
                                   rls_expected)
            found += run_checks(wanted, subject)
    finally:
        src.close()
        dst.close()
    return found
