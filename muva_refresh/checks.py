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
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol, Sequence

import psycopg
from psycopg import sql

from .catalog import Catalog, Column, ForeignKey, Index, Table, TableRef, read_catalog
from .digest import count_rows, row_digest
from .endpoint import Endpoint, ThreadConnections
from .errors import BlockingCheckError
from .leaks import JSON, Leak, LeakScan, document, leaf_kind, place_name, policy_line, seed_for, string_leaves
from .load import TableCopy
from .masking import TEXT_TYPE
from .settings import TableFilter
from .shape import WHOLE, Shape
from .shaping import Shaping
from .timings import Phase, PhaseClock

ERROR, WARN = "ERROR", "WARN"
IN_LOAD, AFTER_COMMIT = "in_load", "after_commit"
SAMPLE_LIMIT = 10
AFTER_COMMIT_CONNECTIONS = 2
SNAPSHOT_BASIS = "snapshot"
LIVE_BASIS = "live: current target against current source, no refresh in this run"

ORPHANS = sql.SQL(
    "SELECT {child_columns}, count(*) OVER () FROM {child} c "
    "WHERE {all_set} AND NOT EXISTS (SELECT 1 FROM {parent} p WHERE {matches}) LIMIT {limit}"
)
# Every FK of a table in one scan: each parent is joined on its referenced (unique) key, so a
# child row matches at most one parent row, and an unmatched one leaves that parent's columns NULL.
ORPHAN_COUNTS = sql.SQL("SELECT {counts} FROM {child} c {joins}")
SEQUENCE_STATE = sql.SQL(
    "SELECT s.last_value, s.is_called, q.seqincrement FROM {sequence} s, pg_sequence q "
    "WHERE q.seqrelid = %s::regclass"
)
COLUMN_EXTREME = sql.SQL("SELECT {extreme}({column}) FROM {table}")
# An 8-byte hash of (key, value) per row, in order, for merging the source's against the target's.
MASK_PROBE = sql.SQL(
    "SELECT ('x' || left(md5({key} || '|' || {column}::text), 16))::bit(64)::bigint AS h "
    "FROM {table} AS t WHERE {column} IS NOT NULL ORDER BY 1"
)
SAMPLE_VALUES = sql.SQL("SELECT {column}::text FROM {table} WHERE {column} IS NOT NULL LIMIT {limit}")
SAMPLE_ROWS = 50  # values, or json documents, a coverage warning looks at
MERGE_BATCH = 5000  # hashes fetched at a time from each side of a merge: few round trips, little memory
# Column names that look personal, for warnings about columns without a rule (use .search).
# Plain words match anywhere (guest_email, mobileNumber, date_of_birth, home_address). A name
# ending in _id, _type, _status, _at ... describes or points at a value (phone_number_id,
# document_type, email_verified_at), so it is not one. "name" matches only as a person's name
# (first_name, lastName, guest_name, username): a bare `name` or a `display_name` names a hotel,
# a room type or a business account far more often than a person, and would drown the warning.
PERSONAL_NAME = re.compile(
    r"""^(?!.*_(?:id|ids|type|kind|status|count|at)$)
    .*?(?: e_?mail | phone | mobile | passport | password | passwd | secret | token | credential
         | address | birth | document
         | (?:^|_)(?:ip|ssn|dni|iban)(?:_|$)
         | (?:^|_)(?:first|last|middle|given|family|full|sur|maiden|nick|user|legal|guest|contact|person
                  |customer|client|holder|owner|passenger|patient|employee|member|staff)_?name$ )""",
    re.IGNORECASE | re.VERBOSE,
)
# E-mail addresses, and phone numbers written as people write them (a plain run of digits is as
# likely an id or a tax number).
PERSONAL_VALUE = re.compile(
    r"^([^@\s]+@[^@\s]+\.[A-Za-z]{2,}|\+[0-9][0-9 ().-]{6,}[0-9]|\(?[0-9]{3}\)?[ .-][0-9]{3}[ .-][0-9]{4})$"
)
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

    def digest(self, table: Table) -> str: ...  # the row digest (digest.ROW_DIGEST) of what a refresh sends

    def target_digest(self, table: Table) -> tuple[int, str] | None: ...  # the target's, when already known


@dataclass(frozen=True)
class SnapshotFacts:
    """Read in the refresh's snapshot (the rows COPY sent, the digest hashed after COMMIT on a
    connection that imported it): nothing is asked of the source outside that snapshot."""

    copy: TableCopy

    def rows(self, table: Table) -> int:
        return self.copy.stats.rows

    def digest(self, table: Table) -> str:
        return self.copy.source_digest()

    def target_digest(self, table: Table) -> tuple[int, str] | None:
        """A table the load compared and found unchanged: its comparison hashed the target, under a
        lock that kept writers out until the commit."""
        stats = self.copy.stats
        return (stats.rows, stats.target_digest) if stats.target_digest else None


@dataclass(frozen=True)
class LiveFacts:
    """Asked of the source now, through one REPEATABLE READ transaction."""

    src: psycopg.Connection
    shapes: Mapping[TableRef, Shape]  # as a refresh would send each table: masked, subsetted
    hashed: dict[TableRef, tuple[int, str]] = field(default_factory=dict)

    def rows(self, table: Table) -> int:
        if table.ref in self.shapes:  # a subset's count is what a refresh would send
            return self.hash(table)[0]
        return count_rows(self.src, table.ref)

    def digest(self, table: Table) -> str:
        return self.hash(table)[1]

    def target_digest(self, table: Table) -> tuple[int, str] | None:
        return None

    def hash(self, table: Table) -> tuple[int, str]:
        if table.ref not in self.hashed:
            self.hashed[table.ref] = row_digest(self.src, table, self.shapes.get(table.ref, WHOLE))
        return self.hashed[table.ref]


@dataclass(frozen=True)
class CheckSubject:
    """What a check looks at: one table on both sides, and the target connection to read it on."""

    conn: psycopg.Connection  # the target: inside the load transaction, or read-only after it
    source: Table
    target: Table
    source_catalog: Catalog
    facts: SourceFacts
    basis: Mapping[str, Any]
    settings: "CheckSettings"
    source_conn: psycopg.Connection | None = None  # the source, for the blocking checks and live runs
    leak_scan: LeakScan | None = None  # inside a refresh's load, under a policy: its tables' leaks

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


def sample_table(rows: list[dict[str, Any]]) -> Any:
    """The rows a failure shows, as a DataFrame; pandas is imported only when a check fails, so
    a passing refresh does not pay for it."""
    import pandas

    return pandas.DataFrame(rows)


def child_columns(fk: ForeignKey) -> list[sql.Composed]:
    return [sql.SQL("c.{}").format(sql.Identifier(c)) for c in fk.child_columns]


def all_set(fk: ForeignKey) -> sql.Composed:
    """MATCH SIMPLE: a row with a NULL in any FK column references nothing."""
    return sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(c) for c in child_columns(fk))


def matches(fk: ForeignKey, parent_alias: str) -> sql.Composed:
    return sql.SQL(" AND ").join(
        sql.SQL("{}.{} = {}").format(sql.Identifier(parent_alias), sql.Identifier(p), c)
        for p, c in zip(fk.parent_columns, child_columns(fk))
    )


def orphans_sql(fk: ForeignKey) -> sql.Composed:
    """Up to SAMPLE_LIMIT orphans of one FK, each with the FK's total."""
    return ORPHANS.format(child_columns=sql.SQL(", ").join(child_columns(fk)), child=fk.child.ident(),
                          all_set=all_set(fk), parent=fk.parent.ident(), matches=matches(fk, "p"),
                          limit=sql.Literal(SAMPLE_LIMIT))


def orphan_counts_sql(child: TableRef, fks: list[ForeignKey]) -> sql.Composed:
    aliases = [f"p{i}" for i in range(len(fks))]
    return ORPHAN_COUNTS.format(
        counts=sql.SQL(", ").join(
            sql.SQL("count(*) FILTER (WHERE {} AND {}.{} IS NULL)").format(
                all_set(fk), sql.Identifier(a), sql.Identifier(fk.parent_columns[0]))
            for fk, a in zip(fks, aliases)
        ),
        child=child.ident(),
        joins=sql.SQL(" ").join(
            sql.SQL("LEFT JOIN {} {} ON {}").format(fk.parent.ident(), sql.Identifier(a), matches(fk, a))
            for fk, a in zip(fks, aliases)
        ),
    )


def no_orphans(s: CheckSubject) -> CheckOutcome:
    """One scan counts every FK's orphans; only an FK that has some is read again for samples."""
    fks = list(s.source_catalog.foreign_keys_of(s.ref))
    counts = s.conn.execute(orphan_counts_sql(s.ref, fks)).fetchone() if fks else ()
    per_fk = {fk.name: count for fk, count in zip(fks, counts)}
    samples = []
    for fk in (fk for fk in fks if per_fk[fk.name]):
        rows = s.conn.execute(orphans_sql(fk)).fetchall()
        per_fk[fk.name] = rows[0][-1]  # exact even where a drifted parent lost its unique key
        samples += [{"fk": fk.name, "key": ", ".join(f"{c}={v}" for c, v in zip(fk.child_columns, r[:-1]))}
                    for r in rows]
    total = sum(per_fk.values())
    bad = [f"{n} ({count:,})" for n, count in per_fk.items() if count]
    summary = (f"{s.ref}: no orphans across {len(fks)} FKs" if not total else
               f"{total:,} orphans in {s.ref}: {', '.join(bad)}")
    metadata: dict[str, Any] = {"orphans": total, "fks_checked": len(fks), **{f"orphans.{n}": c for n, c in per_fk.items()}}
    if samples:
        metadata["orphan_sample"] = sample_table(samples[:SAMPLE_LIMIT])
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
    expected = [p for p in s.settings.rls_expected if fnmatch.fnmatchcase(str(s.ref), p)]
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


def missing_indexes(s: CheckSubject, unique: bool) -> tuple[dict[str, str], list[str]]:
    """The source's unique (or other) indexes by normalized definition, and the names of those the target lacks."""
    wanted = {normalized_index(i): i.name for i in s.source.indexes if i.unique == unique}
    present = {normalized_index(i) for i in s.target.indexes if i.unique == unique}
    return wanted, sorted(name for definition, name in wanted.items() if definition not in present)


def missing_index_table(wanted: Mapping[str, str], missing: list[str]) -> Any:
    return sample_table([{"index": n, "definition": d} for d, n in wanted.items() if n in missing])


def unique_indexes(s: CheckSubject) -> CheckOutcome:
    wanted, missing = missing_indexes(s, unique=True)
    summary = (f"{s.ref}: all {len(wanted)} unique indexes present" if not missing else
               f"{s.ref}: missing on the target: {', '.join(missing)}")
    metadata: dict[str, Any] = {"source_indexes": len(wanted), "missing": len(missing)}
    if missing:
        metadata["missing_indexes"] = missing_index_table(wanted, missing)
    return s.outcome("unique_indexes", not missing, summary, **metadata)


@dataclass(frozen=True)
class Finding:
    """One part of a check that looks at several things: what is wrong (nothing when all is
    well), what it says when all is well, and what it measured."""

    problems: list[str]
    fine: str
    metadata: dict[str, Any]


def same_content(s: CheckSubject) -> Finding:
    """The target server hashes its rows as the source's hashed what it sent: no row leaves either.
    The target's first, so that both servers hash a large table at the same time."""
    held = s.facts.target_digest(s.source)
    rows, found = held if held else row_digest(s.conn, s.source)
    expected = s.facts.digest(s.source)
    problems = [] if found == expected else [
        f"content differs from the source (target hash {found[:12]}, source {expected[:12]})"]
    how = "hashed in the load, the table unwritten since" if held else "hashed after the commit"
    return Finding(problems, f"content hash matches ({rows:,} rows)",
                   {"target_digest": found, "source_digest": expected, "rows_hashed": rows, "target_hashed": how,
                    **s.basis})


def other_indexes(s: CheckSubject) -> Finding:
    wanted, missing = missing_indexes(s, unique=False)
    metadata: dict[str, Any] = {"other_indexes": len(wanted), "missing_other_indexes": len(missing)}
    if missing:
        metadata["missing_indexes"] = missing_index_table(wanted, missing)
    problems = [f"other indexes missing on the target: {', '.join(missing)}"] if missing else []
    return Finding(problems, f"all {len(wanted)} other indexes present", metadata)


def sequences_ahead(s: CheckSubject) -> Finding:
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
    return Finding(behind, f"{len(s.target.sequences)} sequences ahead of their columns", metadata)


def matches_source(s: CheckSubject) -> CheckOutcome:
    """Staging holds what production held, and works as it did: the same rows, every other index,
    and sequences that will not hand out a value already taken. One check rather than three, as
    each check costs its own events in Dagster's log; a missing index alone is a WARN."""
    errors, warnings = [same_content(s), sequences_ahead(s)], [other_indexes(s)]
    findings = errors + warnings
    problems = [p for f in findings for p in f.problems]
    metadata = {k: v for f in findings for k, v in f.metadata.items()}
    severity = ERROR if any(f.problems for f in errors) else WARN
    summary = f"{s.ref}: " + "; ".join(problems or [f.fine for f in findings])
    return CheckOutcome("matches_source", s.ref, not problems, summary, metadata, severity)


def masking(s: CheckSubject) -> CheckOutcome:
    """Masked values differ from the source's for the same key (every row, through 8-byte hashes
    merged in key order, so memory stays flat) and no production value of a masked column is
    anywhere else on staging (see `leaks`): either is an ERROR. A leak into a column the policy
    keeps, and columns or json paths that look personal and have no rule, are a WARN."""
    shaping = s.settings.shaping
    if shaping is None:
        raise ValueError("the masking check runs only under a policy (Check.runs_with)")
    rules = shaping.masking.rules_of(s.ref)
    metadata: dict[str, Any] = {}
    found = leaks_of(s, metadata)  # first: it frees the source connection for unchanged_values
    unchanged = {name: unchanged_values(s, name) for name in rules}
    metadata = {"policy": str(shaping.policy.path), "masked_columns": len(rules),
                **{f"rule.{n}": r.describe() for n, r in rules.items()},
                **{f"unchanged.{n}": count for n, count in unchanged.items()}, **metadata}
    same = [f"{name} ({count:,} rows)" for name, count in unchanged.items() if count]
    errors = [f"masked values equal the source's in {', '.join(same)}"] if same else []
    leaked, kept = [f for f in found if not f.kept], [f for f in found if f.kept]
    if leaked:
        errors.append("production values of masked columns are in " + "; ".join(
            f"{f.describe()}, fix: {f.fix}" for f in leaked))
    warnings = [f"production values of masked columns are in {'; '.join(f.describe() for f in kept)}, "
                "which the policy keeps"] if kept else []
    uncovered = personal_columns(s, shaping)
    metadata["uncovered_personal_columns"] = ", ".join(place for place, _ in uncovered) or "(none)"
    if uncovered:
        warnings.append(f"{', '.join(place for place, _ in uncovered)} look personal and no rule masks them; add "
                        "a rule, or `keep` to say they are not" + "".join(f" ({line})" for _, line in uncovered if line))
    if errors or warnings:
        return CheckOutcome("masking", s.ref, False, f"{s.ref}: " + "; ".join(errors + warnings), metadata,
                            ERROR if errors else WARN)
    elsewhere = ", and no production value of a masked column is elsewhere in it" if s.leak_scan else ""
    return s.outcome("masking", True, f"{s.ref}: {len(rules)} masked columns differ from the source in every row"
                     + elsewhere, **metadata)


def leaks_of(s: CheckSubject, metadata: dict[str, Any]) -> list[Leak]:
    """The leaks into the table, found inside a refresh's load. A live validation reads staging
    read only, and the scan needs a temporary table there: it says so instead."""
    if s.leak_scan is None:
        metadata["leaks"] = "not checked: the leak scan runs inside a refresh's load"
        return []
    found = s.leak_scan.of(s.source)
    metadata["leaks"] = sum(f.count for f in found)
    for f in found:
        metadata[f"leak.{f.place}"] = ", ".join(f"{n:,} of {origin}" for origin, n in f.found)
        metadata[f"fix.{f.place}"] = f.fix
    return found


def unchanged_values(s: CheckSubject, column: str) -> int:
    key = (sql.SQL("ROW({})::text").format(sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c))
                                                             for c in s.source.primary_key))
           if s.source.primary_key else sql.SQL("''"))
    probe = MASK_PROBE.format(key=key, column=sql.Identifier(column), table=s.ref.ident())
    if s.source_conn is None:
        raise ValueError("the masking check reads the source; run it inside the load or live")
    with s.source_conn.cursor(name="muva_mask_source") as before, s.conn.cursor(name="muva_mask_target") as after:
        before.itersize = after.itersize = MERGE_BATCH
        return sorted_overlap((h for (h,) in before.execute(probe)), (h for (h,) in after.execute(probe)))


def sorted_overlap(a: Iterator[int], b: Iterator[int]) -> int:
    """How many values two ascending streams share, reading each once."""
    found, x, y = 0, next(a, None), next(b, None)
    while x is not None and y is not None:
        if x == y:
            found += 1
            x, y = next(a, None), next(b, None)
        elif x < y:
            x = next(a, None)
        else:
            y = next(b, None)
    return found


def personal_columns(s: CheckSubject, shaping: Shaping) -> list[tuple[str, str | None]]:
    """Unmasked, not explicitly kept columns whose name, or a sample of whose values, looks
    personal; inside json values and arrays, each string leaf's path, with the rule for it."""
    rules = shaping.masking.rules_of(s.ref)
    kept = shaping.masking.kept.get(s.ref, frozenset())
    found: list[tuple[str, str | None]] = []
    for column in s.target.copied_columns:
        if column.name in rules or column.name in kept:
            continue
        if PERSONAL_NAME.search(column.name) or (TEXT_TYPE.match(column.type) and looks_personal(s, column.name)):
            found.append((column.name, None))
        elif leaf_kind(column.type) == JSON:
            found += personal_paths(s, column)
    return found


def looks_personal(s: CheckSubject, column: str) -> bool:
    values = [v for (v,) in s.conn.execute(SAMPLE_VALUES.format(column=sql.Identifier(column), table=s.ref.ident(),
                                                                limit=sql.Literal(SAMPLE_ROWS)))]
    return mostly_personal(values)


def mostly_personal(values: list[str]) -> bool:
    hits = sum(1 for v in values if PERSONAL_VALUE.match(v))
    return bool(values) and hits * 2 >= len(values)


def personal_paths(s: CheckSubject, column: Column) -> list[tuple[str, str]]:
    """The string leaves of a sample of a json or array column that look personal, path by path."""
    by_path: dict[tuple[str, ...], list[str]] = {}
    for path, value in s.conn.execute(string_leaves(s.target, document(column), SAMPLE_ROWS)):
        by_path.setdefault(tuple(path), []).append(value)
    return [(place_name(column.name, path), policy_line(s.ref, column.name, path, "email" if "@" in values[0] else "phone"))
            for path, values in by_path.items() if mostly_personal(values)]


# --- the registry ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Check:
    name: str
    severity: str  # how a failure counts
    blocking: bool  # runs inside the load, before COMMIT; a failure rolls the refresh back
    description: str
    run: Callable[[CheckSubject], CheckOutcome]
    under_policy: bool = False  # without a policy it would only ever pass, so it does not run

    @property
    def phase(self) -> str:
        return IN_LOAD if self.blocking else AFTER_COMMIT

    def runs_with(self, settings: "CheckSettings") -> bool:
        return settings.shaping is not None or not self.under_policy


CHECKS: tuple[Check, ...] = (
    Check("row_count", ERROR, True, "Target row count equals the source's at the copied snapshot.", row_count),
    Check("no_orphans", ERROR, True,
          "No target row lacks its FK parent (MATCH SIMPLE: rows with a NULL FK column are skipped).", no_orphans),
    Check("rls", ERROR, False,
          "RLS flags and policies are equal on source and target; WARN where RLS is off on both while "
          "other tables of the schema use it (or MUVA_RLS_EXPECTED lists the table).", rls),
    Check("unique_indexes", ERROR, False,
          "The target has every unique index and constraint of the source, by definition.", unique_indexes),
    Check("matches_source", ERROR, False,
          "The target's rows hash equal to the rows the source sent at the snapshot (per-row hashes summed by "
          "each server, so in any order, duplicates counted); every sequence the columns use, owned or only "
          "named in a default, hands out values past the column's; and the target has every other index of "
          "the source (HNSW and GIN included; one missing alone is a WARN).", matches_source),
    Check("masking", ERROR, True,
          "Under a masking policy, no masked value equals the source's for the same key (every row), and no "
          "production value of a masked column (whole, or an e-mail or phone inside it) is in any other text, "
          "json or array column of the table; WARN for such a value in a column the policy keeps, and for "
          "columns or json paths that look personal and have no rule. Runs only under a policy.", masking,
          under_policy=True),
)
CHECK_BY_NAME = {c.name: c for c in CHECKS}


def checks_that_run(settings: "CheckSettings") -> tuple[Check, ...]:
    return tuple(c for c in CHECKS if c.runs_with(settings))


def checks_in(phase: str, settings: "CheckSettings") -> tuple[Check, ...]:
    return tuple(c for c in checks_that_run(settings) if c.phase == phase)


def run_checks(checks: Iterable[Check], subject: CheckSubject, clock: PhaseClock | None = None) -> list[CheckOutcome]:
    """Each check's outcome, each timed on `clock` when there is one."""
    found = []
    for check in checks:
        with clock.measure(Phase.check(check.name), subject.ref) if clock else nullcontext():
            found.append(check.run(subject))
    return found


@dataclass(frozen=True)
class CheckSettings:
    rls_expected: tuple[str, ...] = ()  # schema.table patterns whose RLS must be on
    shaping: Shaping | None = None  # the run's policy, if it masks or subsets


def snapshot_subject(conn: psycopg.Connection, copy: TableCopy, settings: CheckSettings,
                     source_conn: psycopg.Connection | None = None, leak_scan: LeakScan | None = None) -> CheckSubject:
    basis = {"basis": SNAPSHOT_BASIS, "snapshot_id": copy.snapshot_id}
    return CheckSubject(conn, copy.source, copy.target, copy.source_catalog, SnapshotFacts(copy), basis, settings,
                        source_conn, leak_scan)


class Verifier:
    """Runs the checks of a refresh: its `gate` inside the load transaction, the others after COMMIT."""

    def __init__(self, settings: CheckSettings = CheckSettings(), clock: PhaseClock | None = None) -> None:
        self.settings, self.clock = settings, clock

    def gate(self, src: psycopg.Connection, dst: psycopg.Connection,
             copies: Sequence[TableCopy]) -> Iterator[CheckOutcome]:
        """The blocking checks' outcomes of every table a load transaction holds; then, if one
        failed, BlockingCheckError, which rolls the load back."""
        shaping = self.settings.shaping
        leak_scan = LeakScan(src, dst, copies[0].source_catalog, shaping.masking, [c.source for c in copies],
                             seed_for(copies[0].snapshot_id)) if shaping and copies else None
        failed = []
        # Check by check, so that production hashes its masked values while the target counts rows
        # and orphans; masking comes last.
        with leak_scan or nullcontext():
            subjects = [snapshot_subject(dst, copy, self.settings, src, leak_scan) for copy in copies]
            for check in checks_in(IN_LOAD, self.settings):
                for subject in subjects:
                    outcome, = run_checks([check], subject, self.clock)
                    yield outcome
                    failed += [outcome] if outcome.fails_run else []
        if failed:
            raise BlockingCheckError(
                "; ".join(o.summary for o in failed) + "; the refresh was rolled back, staging is unchanged"
            )

    def after_commit(self, target: Endpoint, copies: Iterable[TableCopy]) -> list[CheckOutcome]:
        """The non-blocking checks of every refreshed table, against the committed target."""
        with self.checking_after_commit(target, copies) as finished:
            return [o for found in finished for o in found]

    @contextmanager
    def checking_after_commit(self, target: Endpoint, copies: Iterable[TableCopy]) -> Iterator[Iterator[list[CheckOutcome]]]:
        """Start the non-blocking checks of every refreshed table at once, on AFTER_COMMIT_CONNECTIONS
        connections (hashing a large table keeps one server core busy); the iterator yields each
        table's outcomes in the order of `copies`, each once it is done. Meanwhile the caller is free: Dagster stores the
        materializations while the checks run. Leaving the block early (a failed run) cancels the
        checks not yet started."""
        with ThreadConnections(lambda: (target.connect(read_only=True),)) as conns, \
                ThreadPoolExecutor(AFTER_COMMIT_CONNECTIONS, thread_name_prefix="muva-check") as pool:

            def check(copy: TableCopy) -> list[CheckOutcome]:
                conn, = conns.mine()
                try:
                    return run_checks(checks_in(AFTER_COMMIT, self.settings), snapshot_subject(conn, copy, self.settings),
                                      self.clock)
                finally:
                    conn.rollback()

            pending = [pool.submit(check, copy) for copy in copies]

            def finished() -> Iterator[list[CheckOutcome]]:
                for future in pending:
                    yield future.result()

            try:
                yield finished()
            finally:
                for future in pending:
                    future.cancel()


def validate_live(
    source: Endpoint,
    target: Endpoint,
    wanted_by_table: Mapping[TableRef, Iterable[str]],
    table_filter: TableFilter | None = None,
    settings: CheckSettings = CheckSettings(),
) -> list[CheckOutcome]:
    """Run checks without copying: the current target against the current source."""
    basis = {"basis": LIVE_BASIS}
    shaping = settings.shaping
    src = (replace(source, session=shaping.session()) if shaping else source).connect(read_only=True)
    dst = target.connect(read_only=True)
    found: list[CheckOutcome] = []
    try:
        src.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ  # one view of the source for all tables
        source_catalog = read_catalog(src, table_filter)
        target_catalog = read_catalog(dst, TableFilter(source_catalog.schemas))
        shapes = shaping.shapes(source_catalog) if shaping else {}
        facts = LiveFacts(src, shapes)
        for ref, names in wanted_by_table.items():
            wanted = [c for c in checks_that_run(settings) if c.name in set(names)]
            target_table = target_catalog.by_ref.get(ref)
            if target_table is None:
                found += [CheckOutcome(c.name, ref, False, f"{ref} is missing on the target", basis, c.severity)
                          for c in wanted]
                continue
            subject = CheckSubject(dst, source_catalog.table(ref), target_table, source_catalog, facts, basis,
                                   settings, src)
            found += run_checks(wanted, subject)
    finally:
        src.close()
        dst.close()
    return found
