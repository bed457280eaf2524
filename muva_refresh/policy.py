"""The policy file: which columns to mask with which rule, and which rows a subset keeps.

This module reads and validates the file alone (TOML or YAML); `masking` compiles its rules to
SQL against a catalog, and `subset` turns its roots into each table's row filter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from psycopg import sql

from .catalog import TableRef, split_qualified
from .errors import ConfigError, RefreshError

KINDS = ("keep", "null", "fixed", "hash", "email", "phone", "digits", "person_name", "date_shift", "json", "sql")
OPTIONS = {"fixed": ("value",), "date_shift": ("days",), "json": ("paths",), "sql": ("expression",)}
KEYED_KINDS = frozenset({"hash", "email", "phone", "digits", "person_name", "date_shift"})
UNIQUE_KINDS = frozenset({"keep", "hash", "email", "sql"})
JSON_INNER_KINDS = ("hash", "email", "phone", "digits", "person_name", "null", "fixed")
TOP_LEVEL_KEYS = ("mask", "subset", "exclude")
MAX_SHIFT_DAYS = 36500  # the offset comes from 3 hash bytes; a century is plenty
GLOB_CHARS = re.compile(r"[*?\[]")
# `--policy demo` and `--policy demo-tenant` name the policies the demo package ships.
DEMO_POLICIES = {"demo": "policy.toml", "demo-tenant": "tenant.toml"}


class PolicyError(ConfigError):
    """The masking policy is malformed or would break the target: names the file or column and why."""


@dataclass(frozen=True)
class Rule:
    kind: str
    value: str | None = None
    days: int | None = None
    paths: tuple[tuple[tuple[str, ...], Rule], ...] = ()
    expression: str | None = None

    def describe(self) -> str:
        if self.kind == "fixed":
            return f"fixed {self.value!r}"
        if self.kind == "date_shift":
            return f"date_shift ±{self.days} days"
        if self.kind == "json":
            return "json " + ", ".join(f"{path_text(p)}={r.describe()}" for p, r in self.paths)
        if self.kind == "sql":
            return f"sql {self.expression}"
        return self.kind

    @property
    def needs_key(self) -> bool:
        return self.kind in KEYED_KINDS or any(rule.needs_key for _, rule in self.paths)

    @property
    def keeps_unique(self) -> bool:
        return self.kind in UNIQUE_KINDS


@dataclass(frozen=True)
class Policy:
    path: Path
    masks: tuple[tuple[str, Rule], ...]  # (pattern as written, rule), in file order
    subset: tuple[tuple[TableRef, str], ...]
    exclude: tuple[str, ...]  # unquoted "schema.table" globs, to fnmatch against str(TableRef)


def path_text(parts: tuple[str, ...]) -> str:
    """Dotted, quoting a part that holds a dot or a quote, as the policy file spells it."""
    return ".".join(p if not re.search(r'[."]', p) else '"' + p.replace('"', '""') + '"' for p in parts)


def policy_path(spec: str) -> Path:
    if spec in DEMO_POLICIES:
        return Path(str(resources.files("muva_refresh.demo").joinpath(DEMO_POLICIES[spec])))
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ConfigError(f"no policy file at {path}", "pass --policy FILE (TOML or YAML), or demo / demo-tenant")
    return path


# --- reading the policy file ------------------------------------------------------------------


def load_policy(path: Path) -> Policy:
    path = Path(path)
    raw = _read_policy_file(path)
    unknown = [key for key in raw if key not in TOP_LEVEL_KEYS]
    if unknown:
        raise PolicyError(f"{path}: unknown top-level key {unknown[0]!r}",
                          f"the top-level keys are {', '.join(TOP_LEVEL_KEYS)}")
    return Policy(
        path=path,
        masks=_read_masks(path, raw.get("mask", {})),
        subset=_read_subset(path, raw.get("subset", {})),
        exclude=_read_exclude(path, raw.get("exclude", [])),
    )


def _read_policy_file(path: Path) -> dict:
    if not path.is_file():
        raise PolicyError(f"no policy file at {path}", "pass the path of a .toml or .yaml policy file")
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    if suffix == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10: the same parser, from PyPI
            import tomli as tomllib

        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise PolicyError(f"{path}: not valid TOML ({exc})") from exc
    elif suffix in (".yaml", ".yml"):
        import yaml

        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise PolicyError(f"{path}: not valid YAML ({exc})".replace("\n", " ")) from exc
    else:
        raise PolicyError(f"{path}: unknown policy format {suffix or '(no suffix)'!r}", "name it .toml, .yaml or .yml")
    if raw is None:  # an empty YAML file: an empty policy
        return {}
    if not isinstance(raw, dict):
        raise PolicyError(f"{path}: the policy must be a table of keys, not {_type_name(raw)}")
    return raw


def _type_name(value: Any) -> str:
    return {str: "a string", bool: "a boolean", int: "a number", float: "a number",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


def _expect(value: Any, kind: type, where: str, what: str) -> None:
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise PolicyError(f"{where}: expected {what}, got {_type_name(value)}")


def name_parts(text: str, count: int, where: str) -> tuple[str, ...]:
    """Split `schema.table[.column]`, double quotes allowed as in TableRef.parse; exactly `count` parts."""
    shape = "schema.table.column" if count == 3 else "schema.table"
    try:
        parts = split_qualified(text)
    except RefreshError:
        parts = None
    if parts is None or len(parts) != count:
        raise PolicyError(f'{where}: "{text}" is not a {shape} pattern',
                          f'write {shape}, with double quotes around a name that holds a dot ("My.Table")')
    return tuple(parts)


def _read_masks(path: Path, table: Any) -> tuple[tuple[str, Rule], ...]:
    _expect(table, dict, f"{path}: mask", 'a table of "schema.table.column" = rule')
    masks = []
    for key, spec in table.items():
        where = f"{path}: mask {key!r}"
        _expect(key, str, where, "a schema.table.column pattern")
        rule = _read_rule(spec, where, KINDS)  # first: an unquoted TOML key fails here, with the hint
        name_parts(key, 3, where)
        masks.append((key, rule))
    return tuple(masks)


def _read_rule(spec: Any, where: str, kinds: tuple[str, ...]) -> Rule:
    if isinstance(spec, str):
        spec = {"rule": spec}
    _expect(spec, dict, where, 'a rule name or a table with rule = "<name>"')
    kind = spec.get("rule")
    if kind is None:
        raise PolicyError(f"{where}: missing option 'rule'",
                          'write rule = "<name>"; in TOML quote the whole key: "schema.table.column" = ...')
    if kind not in kinds:
        reason = "cannot mask a value inside JSON" if kind in KINDS else "is unknown"
        raise PolicyError(f"{where}: rule {kind!r} {reason}", f"use one of: {', '.join(kinds)}")
    options = OPTIONS.get(kind, ())
    unknown = [name for name in spec if name != "rule" and name not in options]
    if unknown:
        allowed = ", ".join(options) or "none"
        raise PolicyError(f"{where}: unknown option {unknown[0]!r} for rule {kind}", f"its options: {allowed}")
    missing = [name for name in options if name not in spec]
    if missing:
        raise PolicyError(f"{where}: rule {kind} needs option {missing[0]!r}", f"add {missing[0]} = ...")
    return _RULE_READERS.get(kind, lambda spec, where: Rule(kind))(spec, where)


def _read_fixed(spec: dict, where: str) -> Rule:
    value = spec["value"]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise PolicyError(f"{where}: option 'value' must be a string or a number, got {_type_name(value)}")
    return Rule("fixed", value=str(value))


def _read_date_shift(spec: dict, where: str) -> Rule:
    days = spec["days"]
    _expect(days, int, f"{where} option 'days'", "a whole number of days")
    if not 1 <= days <= MAX_SHIFT_DAYS:
        raise PolicyError(f"{where}: option 'days' must be between 1 and {MAX_SHIFT_DAYS}, got {days}")
    return Rule("date_shift", days=days)


def _read_json(spec: dict, where: str) -> Rule:
    paths = spec["paths"]
    _expect(paths, dict, f"{where} option 'paths'", 'a table of "key.key" = rule')
    if not paths:
        raise PolicyError(f"{where}: option 'paths' is empty", 'add "key.key" = "<rule>" entries')
    read: list[tuple[tuple[str, ...], Rule]] = []
    for text, inner in paths.items():
        inner_where = f"{where} path {text!r}"
        _expect(text, str, inner_where, "a dotted JSON path")
        try:
            parts = tuple(split_qualified(text))
        except RefreshError:
            raise PolicyError(f"{inner_where}: not a dotted JSON path", 'write "key.key", quoting keys with dots') from None
        for earlier, _ in read:  # an overlap would mask a value twice or mask into a masked string
            shorter = min(len(earlier), len(parts))
            if earlier[:shorter] == parts[:shorter]:
                raise PolicyError(f"{inner_where}: overlaps path {path_text(earlier)!r}", "give each value one path")
        read.append((parts, _read_rule(inner, inner_where, JSON_INNER_KINDS)))
    return Rule("json", paths=tuple(read))


def _read_sql(spec: dict, where: str) -> Rule:
    expression = spec["expression"]
    _expect(expression, str, f"{where} option 'expression'", "an SQL expression over {column}")
    try:
        sql.SQL(expression).format(column=sql.Identifier("column"))
    except (KeyError, IndexError, ValueError) as exc:
        raise PolicyError(f"{where}: expression {expression!r} has a placeholder other than {{column}} ({exc})",
                          "write {column} for the column and double other braces: '{{a,b}}'") from None
    if not expression.strip():
        raise PolicyError(f"{where}: option 'expression' is empty")
    return Rule("sql", expression=expression)


_RULE_READERS = {"fixed": _read_fixed, "date_shift": _read_date_shift, "json": _read_json, "sql": _read_sql}


def _read_subset(path: Path, table: Any) -> tuple[tuple[TableRef, str], ...]:
    _expect(table, dict, f"{path}: subset", 'a table of "schema.table" = "SQL condition"')
    subset = []
    for key, condition in table.items():
        where = f"{path}: subset {key!r}"
        _expect(key, str, where, "a schema.table name")
        schema, name = name_parts(key, 2, where)
        if GLOB_CHARS.search(schema + name):
            raise PolicyError(f"{where}: a subset root is one table, not a pattern")
        _expect(condition, str, where, "an SQL condition over the table's columns")
        if not condition.strip():
            raise PolicyError(f"{where}: the condition is empty")
        subset.append((TableRef(schema, name), condition))
    return tuple(subset)


def _read_exclude(path: Path, patterns: Any) -> tuple[str, ...]:
    _expect(patterns, list, f"{path}: exclude", 'a list of "schema.table" patterns')
    exclude = []
    for pattern in patterns:
        where = f"{path}: exclude {pattern!r}"
        _expect(pattern, str, where, "a schema.table pattern")
        exclude.append(".".join(name_parts(pattern, 2, where)))
    return tuple(exclude)
