"""Masking of personal data, evaluated by the source server inside its `COPY (SELECT ...)`.

Unmasked values never leave production: each masked column becomes a select-list expression
built from built-in functions only (the source session is read only, pgcrypto is not needed),
keyed by the session setting muva.mask_key. That setting holds a key derived from the
operator's salt (`mask_key`), never the salt itself. The same value and key give the same
result in every table and run, so an FK column masked like its parent still joins.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import psycopg
from psycopg import sql

from .catalog import Catalog, Column, ForeignKey, Table, TableRef
from .errors import ConfigError
from .policy import GLOB_CHARS, Policy, PolicyError, Rule, name_parts

TEXT_KINDS = frozenset({"email", "phone", "digits", "person_name"})
EMAIL_LENGTH = 33  # 'u' + 16 hex + '@example.invalid'
HASH_HEX_LENGTH = 64
MIN_UNIQUE_HASH_LENGTH = 16  # 64 bits: shorter hex prefixes start to collide on big tables

# Cyclically, neighbours start with different letters, so "the next name" differs from a
# colliding one even when a short column keeps only the first character.
FIRST_NAMES = (
    "Ana", "Bruno", "Carmen", "Diego", "Elena", "Felipe", "Gabriela", "Hugo", "Isabel", "Javier",
    "Karen", "Lucas", "Maria", "Nicolas", "Olivia", "Pablo", "Rosa", "Samuel", "Teresa", "Victor",
    "Wendy", "Alejandro", "Beatriz", "Carlos", "Daniela", "Emma", "Fernando", "Grace", "Hector", "Julia",
)
LAST_NAMES = (
    "Garcia", "Smith", "Rodriguez", "Johnson", "Martinez", "Brown", "Lopez", "Williams", "Gonzalez", "Jones",
    "Perez", "Miller", "Sanchez", "Davis", "Ramirez", "Wilson", "Torres", "Taylor", "Flores", "Anderson",
    "Rivera", "Thomas", "Gomez", "Moore", "Diaz", "Clark", "Morales", "Lewis", "Herrera", "Walker",
)

SET_MASK_KEY = sql.SQL("SELECT set_config('muva.mask_key', %s, false)")
# An empty setting (a rolled-back set_config leaves '') would mask with a guessable key: fail
# loudly instead. The error branch is not constant, so the planner cannot fold it early.
MASK_KEY = sql.SQL(
    "CASE WHEN length(current_setting('muva.mask_key')) >= 32 THEN current_setting('muva.mask_key') "
    "ELSE CAST('muva.mask_key is not set' || left(current_setting('muva.mask_key'), 0) AS integer)::text END"
)
KEY_PREFIX = b"muva-refresh mask key v1\x00"


def mask_key(salt: str) -> str:
    """The key a source session masks with; the raw salt never goes to a server."""
    if not salt:
        raise ConfigError("the masking salt is empty", "set MUVA_MASK_SALT to a long random secret")
    return hashlib.sha256(KEY_PREFIX + salt.encode("utf-8")).hexdigest()


# --- column types -----------------------------------------------------------------------------

TEXT_TYPE = re.compile(r"^(text|character varying(\(\d+\))?|character(\(\d+\))?|(.+\.)?citext)$")
LIMITED_TYPE = re.compile(r"^character(?: varying)?\((\d+)\)$")
DATETIME_TYPE = re.compile(r"^(date|timestamp(\(\d\))? with(out)? time zone)$")
INTEGER_MAX = {"smallint": 32767, "integer": 2147483647, "bigint": 9223372036854775807}


def _category(column_type: str) -> str:
    if TEXT_TYPE.match(column_type):
        return "text"
    if column_type in INTEGER_MAX:
        return "integer"
    if DATETIME_TYPE.match(column_type):
        return "datetime"
    if column_type in ("json", "jsonb", "uuid", "bytea"):
        return column_type if column_type != "jsonb" else "json"
    return "other"


def _length_limit(column_type: str) -> int | None:
    if column_type == "character":  # bare char is char(1)
        return 1
    found = LIMITED_TYPE.match(column_type)
    return int(found.group(1)) if found else None


def _type_problem(rule: Rule, column_type: str) -> str | None:
    """Why `rule` cannot produce a value of `column_type`, or None."""
    category = _category(column_type)
    allowed = {
        "hash": ("text", "uuid", "bytea", "integer"),
        "date_shift": ("datetime",),
        "json": ("json",),
        **{kind: ("text",) for kind in TEXT_KINDS},
    }.get(rule.kind)
    if allowed is None or category in allowed:
        return None
    return f"rule {rule.kind} does not apply to type {column_type} (it takes {', '.join(allowed)} columns)"


# --- the SQL of each rule ---------------------------------------------------------------------

# mod(), never the % operator: psycopg reads % as a placeholder when a query has parameters.
HASH = sql.SQL("muva_in.h")
HEX = sql.SQL("encode(muva_in.h, 'hex')")


def _canonical_text(column_type: str, value: sql.Composable) -> sql.Composable:
    """Text that does not depend on session settings (bytea_output, DateStyle, TimeZone)."""
    category = _category(column_type)
    if category == "bytea":
        return sql.SQL("encode({}, 'hex')").format(value)
    if category == "datetime":
        return sql.SQL("extract(epoch FROM {})::text").format(value)
    if column_type.endswith("citext"):  # citext compares case-insensitively: so must its hash
        return sql.SQL("lower({}::text)").format(value)
    return sql.SQL("{}::text").format(value)


def _keyed(value: sql.Composable, column_type: str, result: sql.Composable) -> sql.Composed:
    """`result` over muva_in.value and muva_in.h (the keyed sha256). The column is read in a select
    without FROM, where no name of ours can shadow it, whatever the column is called."""
    digest = sql.SQL("sha256(convert_to({key} || '|' || {text}, 'UTF8'))").format(
        key=MASK_KEY, text=_canonical_text(column_type, value))
    return sql.SQL("(SELECT {result} FROM (SELECT {value} AS value, {digest} AS h) AS muva_in)").format(
        result=result, value=value, digest=digest)


def _fit(text: sql.Composable, limit: int | None) -> sql.Composable:
    return text if limit is None else sql.SQL("left({}, {})").format(text, sql.Literal(limit))


def _hash_sql(column_type: str) -> sql.Composable:
    category = _category(column_type)
    if category == "uuid":
        return sql.SQL("CAST(left({}, 32) AS uuid)").format(HEX)
    if category == "bytea":
        return HASH
    if category == "integer":  # non-negative, in range; flips the low bit in the rare case it equals the input
        number = sql.SQL("(CAST(CAST('x' || encode(substr(muva_in.h, 1, 8), 'hex') AS bit(64)) AS bigint) & {})")
        number = number.format(sql.Literal(INTEGER_MAX[column_type]))
        return sql.SQL("CASE WHEN {n} = muva_in.value THEN {n} # 1 ELSE {n} END").format(n=number)
    digest = _fit(HEX, min(_length_limit(column_type) or HASH_HEX_LENGTH, HASH_HEX_LENGTH))
    # A short prefix could equal the input: then every hex digit moves one step.
    return sql.SQL(
        "CASE WHEN {d} = muva_in.value::text THEN translate({d}, '0123456789abcdef', '123456789abcdef0') ELSE {d} END"
    ).format(d=digest)


def _digits_sql() -> sql.Composable:
    """Each digit d becomes (d + 1 + keyed byte % 9) % 10, so it always changes; the rest stays."""
    return sql.SQL(
        "CASE WHEN muva_in.value IS NULL THEN NULL ELSE coalesce(("
        "SELECT string_agg(CASE WHEN ascii(muva_chars.ch) BETWEEN 48 AND 57 "
        "THEN chr(48 + mod(ascii(muva_chars.ch) - 47 + mod(get_byte(muva_in.h, CAST(mod(muva_chars.ord - 1, 32) AS integer)), 9), 10)) "
        "ELSE muva_chars.ch END, '' ORDER BY muva_chars.ord) "
        "FROM unnest(string_to_array(muva_in.value::text, NULL)) WITH ORDINALITY AS muva_chars(ch, ord)"
        "), '') END"
    )


def _person_name_sql(column_type: str) -> sql.Composable:
    limit = _length_limit(column_type)
    firsts = sql.SQL("(CAST({} AS text[]))").format(sql.Literal(list(FIRST_NAMES)))
    lasts = sql.SQL("(CAST({} AS text[]))").format(sql.Literal(list(LAST_NAMES)))
    last = sql.SQL("{}[mod(get_byte(muva_in.h, 1), {}) + 1]").format(lasts, sql.Literal(len(LAST_NAMES)))
    first_index = sql.SQL("mod(get_byte(muva_in.h, 0), {})").format(sql.Literal(len(FIRST_NAMES)))
    name = _fit(sql.SQL("{}[{} + 1] || ' ' || {}").format(firsts, first_index, last), limit)
    next_name = _fit(sql.SQL("{}[mod({} + 1, {}) + 1] || ' ' || {}").format(
        firsts, first_index, sql.Literal(len(FIRST_NAMES)), last), limit)
    return sql.SQL("CASE WHEN {name} = muva_in.value::text THEN {next_name} ELSE {name} END").format(
        name=name, next_name=next_name)


def _date_shift_sql(column_type: str, days: int) -> sql.Composable:
    """Shift by s in [-days, -1] U [1, days]: o in [0, 2 days) maps to o - days, plus 1 when o >= days."""
    offset = sql.SQL(
        "mod(get_byte(muva_in.h, 0) * 65536 + get_byte(muva_in.h, 1) * 256 + get_byte(muva_in.h, 2), {})"
    ).format(sql.Literal(2 * days))
    shift = sql.SQL("({o} - {d} + CAST({o} >= {d} AS integer))").format(o=offset, d=sql.Literal(days))
    if column_type == "date":
        return sql.SQL("muva_in.value + {}").format(shift)
    # Whole 24-hour steps, so the result does not depend on the session's time zone.
    return sql.SQL("muva_in.value + {} * interval '24 hours'").format(shift)


def _json_sql(rule: Rule, value: sql.Composable) -> sql.Composable:
    """jsonb_set each path that exists; a JSON null, a missing path or a scalar document stays.

    jsonb_set errors on a path through an array by a key, so a path the document lacks becomes
    the empty path, a no-op; the document stays one column reference per path, not a nested copy.
    """
    document = sql.SQL("muva_json.doc")
    changed: sql.Composable = document
    for parts, inner in rule.paths:
        path = sql.SQL("CAST({} AS text[])").format(sql.Literal(list(parts)))
        found = sql.SQL("({} #>> {})").format(document, path)
        where = sql.SQL("CASE WHEN {} #> {} IS NULL THEN CAST(ARRAY[] AS text[]) ELSE {} END").format(document, path, path)
        masked = sql.SQL("coalesce(to_jsonb(CAST({} AS text)), 'null'::jsonb)").format(_rule_sql(inner, "text", found))
        changed = sql.SQL("jsonb_set({}, {}, {}, false)").format(changed, where, masked)
    return sql.SQL(
        "(SELECT CASE WHEN jsonb_typeof(muva_json.doc) IN ('object', 'array') THEN {} ELSE muva_json.doc END "
        "FROM (SELECT CAST({} AS jsonb) AS doc) AS muva_json)"
    ).format(changed, value)


def _rule_sql(rule: Rule, column_type: str, value: sql.Composable) -> sql.Composable:
    """The masked value of `value` (of `column_type`), before the cast back to the column's type."""
    if rule.kind == "keep":
        return value
    if rule.kind == "null":
        return sql.SQL("NULL")
    if rule.kind == "fixed":
        return sql.Literal(rule.value)
    if rule.kind == "sql":  # the escape hatch: trusted as written
        return sql.SQL(rule.expression).format(column=value)
    if rule.kind == "json":
        return _json_sql(rule, value)
    result = {
        "hash": lambda: _hash_sql(column_type),
        "email": lambda: sql.SQL("'u' || left({}, 16) || '@example.invalid'").format(HEX),
        "phone": _digits_sql,
        "digits": _digits_sql,
        "person_name": lambda: _person_name_sql(column_type),
        "date_shift": lambda: _date_shift_sql(column_type, rule.days),
    }[rule.kind]()
    return _keyed(value, column_type, result)


# --- the plan ---------------------------------------------------------------------------------

_NO_RULES: Mapping[str, Rule] = MappingProxyType({})


@dataclass(frozen=True)
class MaskPlan:
    columns: Mapping[TableRef, Mapping[str, Rule]]  # only masked columns, FK children included
    origins: Mapping[TableRef, Mapping[str, str]] = field(default_factory=dict)  # policy key or FK, for people
    kept: Mapping[TableRef, frozenset[str]] = field(default_factory=dict)  # resolved to `keep`: said not personal

    def rules_of(self, ref: TableRef) -> Mapping[str, Rule]:
        return self.columns.get(ref, _NO_RULES)

    def origin(self, ref: TableRef, column: str) -> str | None:
        return self.origins.get(ref, {}).get(column)

    def select_expression(self, table: Table, column: Column) -> sql.Composable:
        """The column's value in the source's COPY select list (not aliased)."""
        rule = self.rules_of(table.ref).get(column.name)
        if rule is None:
            return sql.Identifier(column.name)
        # format_type() text from the catalog is valid SQL for the type; the cast keeps binary COPY exact.
        return sql.SQL("CAST({} AS {})").format(_rule_sql(rule, column.type, sql.Identifier(column.name)),
                                                sql.SQL(column.type))

    @property
    def needs_key(self) -> bool:
        return any(rule.needs_key for rules in self.columns.values() for rule in rules.values())


ColumnKey = tuple[TableRef, str]
Chosen = dict[ColumnKey, tuple[Rule, str]]  # column -> (rule, where it came from)


def _name(key: ColumnKey) -> str:
    return f"{key[0]}.{key[1]}"


def plan_masking(policy: Policy, catalog: Catalog) -> MaskPlan:
    """Resolve the policy's patterns, give FK children their parent's rule, refuse what would break."""
    chosen = _resolve(policy, catalog)
    masked = _propagate(catalog, chosen)
    for key in sorted(masked):
        table = catalog.table(key[0])
        _validate_column(table, table.column(key[1]), masked[key][0])
    _check_fk_children(catalog, masked)
    columns: dict[TableRef, dict[str, Rule]] = {}
    origins: dict[TableRef, dict[str, str]] = {}
    for (ref, name), (rule, origin) in sorted(masked.items()):
        columns.setdefault(ref, {})[name] = rule
        origins.setdefault(ref, {})[name] = origin
    kept: dict[TableRef, set[str]] = {}
    for ref, name in sorted(key for key, (rule, _) in chosen.items() if rule.kind == "keep"):
        kept.setdefault(ref, set()).add(name)
    return MaskPlan(columns, origins, {ref: frozenset(names) for ref, names in kept.items()})


def _resolve(policy: Policy, catalog: Catalog) -> Chosen:
    """Exact keys win over patterns; among patterns the first in file order wins."""
    where = f"{policy.path}: mask"
    patterns = [(key, name_parts(key, 3, f"{where} {key!r}"), rule) for key, rule in policy.masks]
    exact: Chosen = {}
    for key, parts, rule in patterns:
        if not GLOB_CHARS.search("".join(parts)):
            target = (TableRef(parts[0], parts[1]), parts[2])
            if target in exact:
                raise PolicyError(f"{where}: {key!r} and {exact[target][1]!r} both name {_name(target)}",
                                  "keep one of them")
            exact[target] = (rule, key)
    matched: set[str] = set()
    chosen: Chosen = {}
    for table in catalog.tables:
        for column in table.copied_columns:
            target = (table.ref, column.name)
            hits = [(rule, key) for key, parts, rule in patterns if _matches(parts, target)]
            matched.update(key for _, key in hits)
            pick = exact.get(target) or (hits[0] if hits else None)
            if pick is not None:
                chosen[target] = pick
    unmatched = [key for key, _ in policy.masks if key not in matched]
    if unmatched:
        raise PolicyError(f"{where}: {unmatched[0]!r} matches no copied column of the catalog",
                          "fix the name (schema.table.column) or remove the key; run `muva-refresh introspect` if the column is new")
    return chosen


def _matches(parts: tuple[str, ...], target: ColumnKey) -> bool:
    names = (target[0].schema, target[0].name, target[1])
    return all(fnmatch.fnmatchcase(name, part) for name, part in zip(names, parts))


def _children_by_parent(catalog: Catalog) -> dict[ColumnKey, list[tuple[ForeignKey, str]]]:
    children: dict[ColumnKey, list[tuple[ForeignKey, str]]] = {}
    for fk in catalog.foreign_keys:
        for parent_column, child_column in zip(fk.parent_columns, fk.child_columns):
            children.setdefault((fk.parent, parent_column), []).append((fk, child_column))
    return children


def _propagate(catalog: Catalog, chosen: Chosen) -> Chosen:
    """Every FK child column of a masked column gets the same rule, transitively."""
    masked = {key: value for key, value in chosen.items() if value[0].kind != "keep"}
    children = _children_by_parent(catalog)
    pending = sorted(masked, reverse=True)
    while pending:
        parent = pending.pop()
        rule = masked[parent][0]
        for fk, child_column in children.get(parent, ()):
            child = (fk.child, child_column)
            current = chosen.get(child) or masked.get(child)
            if current is not None and current[0].kind == "null":
                continue  # a NULL child satisfies the FK whatever the parent becomes
            if current is not None and current[0] != rule:
                raise PolicyError(
                    f"{_name(child)} has rule {current[0].describe()} ({current[1]}), but its FK parent "
                    f"{_name(parent)} is masked with {rule.describe()}; FK {fk.name} would break",
                    f"mask {_name(child)} with the same rule as {_name(parent)} ({rule.describe()})")
            _check_same_hash_shape(catalog, rule, parent, child)
            if current is None:
                masked[child] = (rule, f"FK {fk.name} from {_name(parent)}")
                pending.append(child)
    return masked


def _check_same_hash_shape(catalog: Catalog, rule: Rule, parent: ColumnKey, child: ColumnKey) -> None:
    """A hash is cut to the column's limit: FK columns of different types would hash apart."""
    if rule.kind != "hash":
        return
    types = [catalog.table(key[0]).column(key[1]).type for key in (parent, child)]
    if _hash_shape(types[0]) != _hash_shape(types[1]):
        raise PolicyError(
            f"{_name(child)} ({types[1]}) follows its FK parent {_name(parent)} ({types[0]}) with rule hash, "
            "but hashes of these two types differ, so the FK would break",
            f"use rule email or a sql rule on {_name(parent)}, or give both columns the same type")


def _hash_shape(column_type: str) -> tuple:
    if _category(column_type) == "text":
        limit = min(_length_limit(column_type) or HASH_HEX_LENGTH, HASH_HEX_LENGTH)
        return ("text", limit, column_type.endswith("citext"))
    return (column_type,)


def _check_fk_children(catalog: Catalog, masked: Chosen) -> None:
    """A masked FK column needs its parent column masked the same way, or its values point at nothing."""
    for fk in catalog.foreign_keys + catalog.external_foreign_keys:
        pairs = [(child, parent) for child, parent in zip(fk.child_columns, fk.parent_columns)
                 if (fk.child, child) in masked and (fk.parent, parent) not in masked]
        rules = [masked[(fk.child, child)][0] for child, _ in pairs]
        if not pairs or _nulled_away(fk, masked):
            continue
        child, parent = pairs[0]
        parents = ", ".join(f"{fk.parent}.{p}" for _, p in pairs)
        if fk.parent in catalog.by_ref:
            fix = f"mask {parents} with the same rule ({rules[0].describe()})"
        else:
            fix = f"{fk.parent} is outside the refreshed schemas: keep {fk.child}.{child} (rule keep) or null it"
        raise PolicyError(f"{fk.child}.{child} is masked ({rules[0].describe()}) but its FK parent "
                          f"{fk.parent}.{parent} (FK {fk.name}) is not, so masked values would point at no row", fix)


def _nulled_away(fk: ForeignKey, masked: Chosen) -> bool:
    """NULL satisfies an FK: any NULL column under MATCH SIMPLE, all of them under MATCH FULL."""
    nulled = [(fk.child, c) in masked and masked[(fk.child, c)][0].kind == "null" for c in fk.child_columns]
    masked_ones = [masked[(fk.child, c)][0].kind == "null" for c in fk.child_columns if (fk.child, c) in masked]
    return all(masked_ones) and ("MATCH FULL" not in fk.definition or all(nulled))


def _unique_columns(table: Table) -> set[str]:
    """Columns of the primary key or of any unique index's keys, also inside an expression key."""
    unique = set(table.primary_key)
    for index in table.indexes:
        if not index.unique:
            continue
        for key in index.key_columns:
            unique.update(c.name for c in table.columns if c.name == key or _mentions(key, c.name))
    return unique


def _mentions(expression: str, name: str) -> bool:
    quoted = '"' + name.replace('"', '""') + '"'
    return quoted in expression or re.search(rf"(?<![\w\"]){re.escape(name)}(?![\w\"])", expression) is not None


def _validate_column(table: Table, column: Column, rule: Rule) -> None:
    name = f"{table.ref}.{column.name}"
    problem = _type_problem(rule, column.type)
    if problem:
        raise PolicyError(f"{name}: {problem}", "choose a rule for this type, or a sql rule")
    if rule.kind == "null" and column.not_null:
        raise PolicyError(f"{name}: rule null on a NOT NULL column", "use a fixed value or another rule")
    _check_unique(table, column, rule, name)
    limit = _length_limit(column.type)
    length = {"email": EMAIL_LENGTH, "fixed": len(rule.value or "")}.get(rule.kind)
    if limit is not None and length is not None and length > limit and _category(column.type) == "text":
        raise PolicyError(f"{name}: rule {rule.describe()} gives {length} characters, but the column is {column.type}",
                          "use hash or person_name (cut to the limit), a shorter value, or a sql rule")


def _check_unique(table: Table, column: Column, rule: Rule, name: str) -> None:
    if column.name not in _unique_columns(table):
        return
    if not rule.keeps_unique:
        raise PolicyError(f"{name}: rule {rule.describe()} can repeat values, but the column is in a unique key",
                          "use hash or email, which keep values apart, or keep")
    if rule.kind == "hash" and _category(column.type) == "integer":
        raise PolicyError(f"{name}: rule hash on a unique {column.type} column can repeat values",
                          "keep the column, or use a sql rule that stays unique")
    limit = _length_limit(column.type)
    if rule.kind == "hash" and limit is not None and limit < MIN_UNIQUE_HASH_LENGTH:
        raise PolicyError(f"{name}: rule hash cut to {column.type} is too short to stay unique "
                          f"(needs {MIN_UNIQUE_HASH_LENGTH} characters)", "keep the column, or use a sql rule")


# --- CHECK constraints, judged on the source's data ---------------------------------------------

CHECK_SUFFIXES = (" NOT VALID", " NO INHERIT", " NOT ENFORCED")


def _check_condition(definition: str) -> str | None:
    """The condition of `CHECK (...) [NO INHERIT] [NOT VALID]`; None for one the server does not enforce."""
    text = definition.strip()
    enforced = True
    while suffix := next((s for s in CHECK_SUFFIXES if text.endswith(s)), None):
        enforced = enforced and suffix != " NOT ENFORCED"
        text = text[: -len(suffix)]
    if not text.startswith("CHECK "):
        return None
    return text[len("CHECK "):] if enforced else None


def check_constraint_violations(conn: psycopg.Connection, plan: MaskPlan, table: Table) -> list[str]:
    """One message per CHECK constraint that some masked row of `table` would break.

    Reads the source (read only, in the caller's snapshot) with muva.mask_key set. Generated
    columns appear with their source values; the target recomputes them.
    """
    rules = plan.rules_of(table.ref)
    checks = [(check, condition) for check in table.check_constraints
              if any(c in rules for c in check.columns) and (condition := _check_condition(check.definition))]
    if not checks:
        return []
    values = sql.SQL(", ").join(
        sql.SQL("{} AS {}").format(plan.select_expression(table, c) if not c.generated else sql.Identifier(c.name),
                                   sql.Identifier(c.name))
        for c in table.columns)
    # bool_or ignores NULL, and a CHECK that is NULL passes, as on the server.
    failed = sql.SQL(", ").join(sql.SQL("coalesce(bool_or(NOT ({})), false)").format(sql.SQL(condition))
                                for _, condition in checks)
    query = sql.SQL("SELECT {} FROM (SELECT {} FROM {}) AS muva_masked").format(failed, values, table.ref.ident())
    results = conn.execute(query).fetchone()
    messages = []
    for (check, _), broken in zip(checks, results):
        if broken:
            masked = [c for c in check.columns if c in rules]
            who = ", ".join(f"{table.ref}.{c}: rule {rules[c].describe()}" for c in masked)
            messages.append(f"{who} breaks CHECK constraint {check.name} ({check.definition})")
    return messages
