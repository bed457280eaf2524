"""Read what the refresh needs from pg_catalog into frozen dataclasses.

pg_catalog, not information_schema: a read-only role sees other roles' foreign keys
only through pg_catalog. Every query is read-only and takes the schema list as a parameter.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Mapping

import psycopg
from psycopg import sql

from .errors import ConfigError, SelectionError
from .settings import DEFAULT_SCHEMA, TableFilter


@dataclass(frozen=True, order=True)
class TableRef:
    schema: str
    name: str

    def ident(self) -> sql.Identifier:
        """The only way a table name reaches SQL."""
        return sql.Identifier(self.schema, self.name)

    def __str__(self) -> str:  # for people (messages, logs), never for SQL
        return f"{self.schema}.{self.name}"

    @property
    def short_parts(self) -> tuple[str, ...]:
        """The name as people say it: the schema only when it is not the default one."""
        return (self.name,) if self.schema == DEFAULT_SCHEMA else (self.schema, self.name)

    @classmethod
    def parse(cls, text: str, default_schema: str = DEFAULT_SCHEMA) -> "TableRef":
        """`table`, `schema.table`, or with double quotes: `"My Schema"."Odd.Name"`."""
        parts = split_qualified(text)
        if len(parts) == 1:
            return cls(default_schema, parts[0])
        if len(parts) == 2:
            return cls(parts[0], parts[1])
        raise SelectionError(f"{text!r} is not a table name; write table or schema.table")


def split_qualified(text: str) -> list[str]:
    parts: list[str] = []
    buf: list[str] = []
    quoted = False
    i = 0
    while i < len(text):
        ch = text[i]
        if quoted:
            if ch == '"' and text[i + 1 : i + 2] == '"':
                buf.append('"')
                i += 1
            elif ch == '"':
                quoted = False
            else:
                buf.append(ch)
        elif ch == '"':
            quoted = True
        elif ch == ".":
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
        i += 1
    if quoted:
        raise SelectionError(f"{text!r} has an unclosed double quote")
    parts.append("".join(buf))
    if any(p == "" for p in parts):
        raise SelectionError(f"{text!r} is not a table name; write table or schema.table")
    return parts


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # format_type(), e.g. "character varying(20)", "public.reservation_flag[]"
    not_null: bool
    generated: bool = False
    # Binary COPY embeds element or field type OIDs for arrays and composites; user-defined
    # ones differ between databases, so before PostgreSQL 15 such columns travel as text.
    binary_unsafe: bool = False
    has_default: bool = False


@dataclass(frozen=True)
class ForeignKey:
    name: str
    child: TableRef
    child_columns: tuple[str, ...]
    parent: TableRef
    parent_columns: tuple[str, ...]
    deferrable: bool = False
    definition: str = ""

    @property
    def self_reference(self) -> bool:
        return self.child == self.parent

    def __str__(self) -> str:
        return (
            f"{self.child}({', '.join(self.child_columns)}) -> "
            f"{self.parent}({', '.join(self.parent_columns)})"
        )


@dataclass(frozen=True)
class Index:
    name: str
    definition: str  # pg_get_indexdef, for comparing by meaning rather than by name
    unique: bool
    primary: bool
    method: str
    constraint: str | None = None  # the UNIQUE/PRIMARY KEY constraint it backs, if any
    key_columns: tuple[str, ...] = ()  # key columns only (not INCLUDE); an expression as its text


@dataclass(frozen=True)
class RlsPolicy:
    name: str
    command: str  # ALL, SELECT, INSERT, UPDATE, DELETE
    permissive: bool
    roles: tuple[str, ...]
    using: str | None
    with_check: str | None


@dataclass(frozen=True)
class Trigger:
    name: str
    enabled: str  # pg_trigger.tgenabled: O origin, D disabled, R replica, A always
    definition: str


@dataclass(frozen=True)
class ColumnSequence:
    """A sequence a column uses: owned by it (serial, identity, OWNED BY) or only named in its default."""

    sequence: TableRef
    column: str
    identity: bool
    owned: bool


@dataclass(frozen=True)
class CheckConstraint:
    name: str
    columns: tuple[str, ...]
    definition: str  # pg_get_constraintdef: "CHECK ((code ~ '^[0-9]{4}$'::text))"


@dataclass(frozen=True)
class MaterializedView:
    ref: TableRef
    reads: tuple[TableRef, ...]  # tables and materialized views, directly or through views
    populated: bool


@dataclass(frozen=True)
class Table:
    ref: TableRef
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...] = ()
    partitioned: bool = False
    rls_enabled: bool = False
    rls_forced: bool = False
    policies: tuple[RlsPolicy, ...] = ()
    indexes: tuple[Index, ...] = ()
    triggers: tuple[Trigger, ...] = ()
    sequences: tuple[ColumnSequence, ...] = ()
    comment: str | None = None
    estimated_rows: int = 0  # pg_class.reltuples, for progress only; never part of the state's shape
    check_constraints: tuple[CheckConstraint, ...] = ()

    @property
    def copied_columns(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if not c.generated)

    @property
    def binary_safe(self) -> bool:
        return not any(c.binary_unsafe for c in self.copied_columns)

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)


@dataclass(frozen=True)
class Catalog:
    """The tables of the configured schemas and the foreign keys among them."""

    tables: tuple[Table, ...]
    foreign_keys: tuple[ForeignKey, ...]  # both ends inside `tables`
    external_foreign_keys: tuple[ForeignKey, ...] = ()  # parent outside the configured schemas
    server_version: int = 0
    table_filter: TableFilter = TableFilter()  # what the catalog was read with
    materialized_views: tuple[MaterializedView, ...] = ()

    @property
    def schemas(self) -> tuple[str, ...]:
        return self.table_filter.schemas

    @cached_property
    def by_ref(self) -> Mapping[TableRef, Table]:
        return {t.ref: t for t in self.tables}

    def table(self, ref: TableRef) -> Table:
        try:
            return self.by_ref[ref]
        except KeyError:
            raise SelectionError(f"table {ref} is not in the catalog of schemas {', '.join(self.schemas)}") from None

    def foreign_keys_of(self, ref: TableRef) -> tuple[ForeignKey, ...]:
        """The FKs whose child is `ref`, to parents inside the catalog or outside it."""
        return tuple(fk for fk in self.foreign_keys + self.external_foreign_keys if fk.child == ref)

    def sequence_uses(self, refs: Iterable[TableRef] | None = None) -> dict[TableRef, list[tuple[TableRef, ColumnSequence]]]:
        """Each sequence the tables use, with every (table, column) that uses it: shared ones once."""
        uses: dict[TableRef, list[tuple[TableRef, ColumnSequence]]] = {}
        for ref in self.refs if refs is None else refs:
            for used in self.table(ref).sequences:
                uses.setdefault(used.sequence, []).append((ref, used))
        return dict(sorted(uses.items()))

    def same_major(self, other: "Catalog") -> bool:
        """Binary COPY is only safe between servers of one major version."""
        return self.server_version // 10000 == other.server_version // 10000

    @property
    def refs(self) -> tuple[TableRef, ...]:
        return tuple(t.ref for t in self.tables)

    def fingerprint(self) -> str:
        """Changes when a table, column, key or FK changes; ignores row counts and versions."""
        shape = {
            "tables": [
                [str(t.ref), [[c.name, c.type, c.not_null, c.generated] for c in t.columns], list(t.primary_key)]
                for t in sorted(self.tables, key=lambda t: t.ref)
            ],
            "fks": sorted(str(fk) for fk in self.foreign_keys + self.external_foreign_keys),
            "materialized_views": sorted([str(v.ref), sorted(map(str, v.reads))] for v in self.materialized_views),
        }
        return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:16]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Catalog":
        raw = json.loads(text)
        return cls(
            tables=tuple(_table_from_dict(t) for t in raw["tables"]),
            foreign_keys=tuple(_fk_from_dict(f) for f in raw["foreign_keys"]),
            external_foreign_keys=tuple(_fk_from_dict(f) for f in raw.get("external_foreign_keys", ())),
            server_version=raw.get("server_version", 0),
            table_filter=TableFilter(**{k: tuple(v) for k, v in raw["table_filter"].items()}),
            materialized_views=tuple(
                MaterializedView(_ref(v["ref"]), tuple(map(_ref, v["reads"])), v["populated"])
                for v in raw["materialized_views"]
            ),
        )

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(self.to_json())
        tmp.replace(path)  # readers never see half a file

    @classmethod
    def load(cls, path: Path, table_filter: TableFilter | None = None) -> "Catalog":
        """The saved state; with `table_filter`, refuse a state that was read with another filter."""
        if not path.exists():
            raise ConfigError(f"no catalog state at {path}", "run `muva-refresh introspect` against the source first")
        try:
            catalog = cls.from_json(path.read_text())
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"catalog state at {path} is unreadable ({exc})", "run `muva-refresh introspect` again") from exc
        if table_filter is not None and table_filter != catalog.table_filter:
            raise ConfigError(
                f"the saved state at {path} was read with a different table filter "
                f"({catalog.table_filter}; configured now: {table_filter})",
                "run `muva-refresh introspect`",
            )
        return catalog


def graph_drift(saved: Catalog, live: Catalog) -> list[str]:
    """What changed in the asset graph, for people: tables, the FKs among them, materialized views.
    Columns, types, keys, indexes and policies are not part of it: each run reads them live."""
    old, new = set(saved.refs), set(live.refs)
    changes = [f"new table {r}" for r in sorted(new - old)]
    changes += [f"table {r} is gone" for r in sorted(old - new)]
    old_fks = {str(fk) for fk in saved.foreign_keys}
    new_fks = {str(fk) for fk in live.foreign_keys}
    changes += [f"new FK {fk}" for fk in sorted(new_fks - old_fks)]
    changes += [f"FK {fk} is gone" for fk in sorted(old_fks - new_fks)]
    old_views = {str(v.ref): v.reads for v in saved.materialized_views}
    new_views = {str(v.ref): v.reads for v in live.materialized_views}
    changes += [f"new materialized view {v}" for v in sorted(new_views.keys() - old_views.keys())]
    changes += [f"materialized view {v} is gone" for v in sorted(old_views.keys() - new_views.keys())]
    changes += [f"materialized view {v} reads other tables" for v in sorted(old_views.keys() & new_views.keys())
                if old_views[v] != new_views[v]]
    return changes


def _ref(d: Mapping[str, Any]) -> TableRef:
    return TableRef(d["schema"], d["name"])


def _fk_from_dict(d: Mapping[str, Any]) -> ForeignKey:
    return ForeignKey(
        name=d["name"], child=_ref(d["child"]), child_columns=tuple(d["child_columns"]),
        parent=_ref(d["parent"]), parent_columns=tuple(d["parent_columns"]),
        deferrable=d["deferrable"], definition=d["definition"],
    )


def _table_from_dict(d: Mapping[str, Any]) -> Table:
    return Table(
        ref=_ref(d["ref"]),
        columns=tuple(Column(**c) for c in d["columns"]),
        primary_key=tuple(d["primary_key"]),
        partitioned=d["partitioned"],
        rls_enabled=d["rls_enabled"],
        rls_forced=d["rls_forced"],
        policies=tuple(RlsPolicy(**{**p, "roles": tuple(p["roles"])}) for p in d["policies"]),
        indexes=tuple(Index(**{**i, "key_columns": tuple(i["key_columns"])}) for i in d["indexes"]),
        triggers=tuple(Trigger(**t) for t in d["triggers"]),
        sequences=tuple(ColumnSequence(_ref(s["sequence"]), s["column"], s["identity"], s["owned"]) for s in d["sequences"]),
        comment=d["comment"],
        estimated_rows=d["estimated_rows"],
        check_constraints=tuple(CheckConstraint(c["name"], tuple(c["columns"]), c["definition"])
                                for c in d["check_constraints"]),
    )


# --- catalog SQL: one query per kind of object, all keyed by the table's oid -------------------

TABLES = sql.SQL("""
SELECT c.oid, n.nspname, c.relname, c.relkind = 'p' AS partitioned,
       c.relrowsecurity, c.relforcerowsecurity, obj_description(c.oid, 'pg_class'),
       greatest(c.reltuples, 0)::bigint
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = ANY(%(schemas)s) AND c.relkind IN ('r', 'p') AND NOT c.relispartition
ORDER BY n.nspname, c.relname
""")

COLUMNS = sql.SQL("""
SELECT a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       a.attgenerated <> '' AS generated, a.atthasdef,
       -- arrays or composites whose element/field types are not built in (oid >= 16384)
       (base.typtype = 'c' OR (base.typcategory = 'A' AND (elem.typtype IN ('c', 'e', 'd')
         OR base.typelem >= 16384))) AS binary_unsafe
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
JOIN pg_type base ON base.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
LEFT JOIN pg_type elem ON elem.oid = base.typelem
WHERE a.attrelid = ANY(%(oids)s) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum
""")

CONSTRAINTS = sql.SQL("""
SELECT con.conrelid, con.contype, con.conname, con.condeferrable, pg_get_constraintdef(con.oid),
       ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(num, ord)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.num ORDER BY k.ord),
       pn.nspname, pc.relname,
       ARRAY(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY k(num, ord)
             JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.num ORDER BY k.ord)
FROM pg_constraint con
LEFT JOIN pg_class pc ON pc.oid = con.confrelid
LEFT JOIN pg_namespace pn ON pn.oid = pc.relnamespace
WHERE con.conrelid = ANY(%(oids)s) AND con.contype IN ('p', 'f', 'c') AND con.conparentid = 0
ORDER BY con.conrelid, con.conname
""")

INDEXES = sql.SQL("""
SELECT i.indrelid, ic.relname, pg_get_indexdef(i.indexrelid), i.indisunique, i.indisprimary,
       am.amname, con.conname,
       ARRAY(SELECT coalesce(a.attname, pg_get_indexdef(i.indexrelid, k.n, true))
             FROM generate_series(1, i.indnkeyatts) k(n)
             LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[k.n - 1] AND a.attnum > 0
             ORDER BY k.n)
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_am am ON am.oid = ic.relam
LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.contype IN ('p', 'u', 'x')
WHERE i.indrelid = ANY(%(oids)s)
ORDER BY i.indrelid, ic.relname
""")

POLICIES = sql.SQL("""
SELECT p.polrelid, p.polname,
       CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE'
                     WHEN 'd' THEN 'DELETE' ELSE 'ALL' END,
       p.polpermissive,
       ARRAY(SELECT CASE WHEN r = 0 THEN 'public' ELSE pg_get_userbyid(r)::text END
             FROM unnest(p.polroles) r ORDER BY 1),
       pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid)
FROM pg_policy p
WHERE p.polrelid = ANY(%(oids)s)
ORDER BY p.polrelid, p.polname
""")

TRIGGERS = sql.SQL("""
SELECT t.tgrelid, t.tgname, t.tgenabled, pg_get_triggerdef(t.oid)
FROM pg_trigger t
WHERE t.tgrelid = ANY(%(oids)s) AND NOT t.tgisinternal
ORDER BY t.tgrelid, t.tgname
""")

# Owned by a column (serial, identity, OWNED BY), or named in a column's default, even inside
# an expression: pg_dump of older databases creates sequences apart and sets defaults later.
COLUMN_SEQUENCES = sql.SQL("""
SELECT u.rel, sn.nspname, s.relname, a.attname, bool_or(u.identity), bool_or(u.owned)
FROM (
    SELECT d.refobjid AS rel, d.refobjsubid AS attnum, d.objid AS seq, d.deptype = 'i' AS identity, true AS owned
    FROM pg_depend d
    WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
      AND d.refobjid = ANY(%(oids)s) AND d.deptype IN ('a', 'i')
  UNION ALL
    SELECT ad.adrelid, ad.adnum, d.refobjid, false, false
    FROM pg_attrdef ad
    JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid AND d.refclassid = 'pg_class'::regclass
    WHERE ad.adrelid = ANY(%(oids)s)
) u
JOIN pg_class s ON s.oid = u.seq AND s.relkind = 'S'
JOIN pg_namespace sn ON sn.oid = s.relnamespace
JOIN pg_attribute a ON a.attrelid = u.rel AND a.attnum = u.attnum
GROUP BY u.rel, sn.nspname, s.relname, a.attname
ORDER BY u.rel, a.attname, sn.nspname, s.relname
""")

# What each materialized view reads, through views too: its rules' dependencies, recursively.
MATERIALIZED_VIEWS = sql.SQL("""
WITH RECURSIVE rule_reads(rel, reads) AS (
    SELECT r.ev_class, d.refobjid FROM pg_rewrite r
    JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
                    AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> r.ev_class
), reads(mv, rel) AS (
    SELECT rr.rel, rr.reads FROM rule_reads rr JOIN pg_class m ON m.oid = rr.rel AND m.relkind = 'm'
  UNION
    SELECT reads.mv, rr.reads FROM reads
    JOIN pg_class v ON v.oid = reads.rel AND v.relkind = 'v'
    JOIN rule_reads rr ON rr.rel = v.oid
)
SELECT mn.nspname, m.relname, m.relispopulated, dn.nspname, dc.relname
FROM pg_class m
JOIN pg_namespace mn ON mn.oid = m.relnamespace
LEFT JOIN (SELECT DISTINCT mv, rel FROM reads) x ON x.mv = m.oid
LEFT JOIN pg_class dc ON dc.oid = x.rel AND dc.relkind IN ('r', 'p', 'm')
LEFT JOIN pg_namespace dn ON dn.oid = dc.relnamespace
WHERE m.relkind = 'm' AND mn.nspname = ANY(%(schemas)s)
ORDER BY 1, 2, 4, 5
""")

SERVER_VERSION = sql.SQL("SELECT current_setting('server_version_num')::int")


def read_catalog(conn: psycopg.Connection, table_filter: TableFilter | None = None) -> Catalog:
    """Read the tables of the filter's schemas; partitions are represented by their root."""
    table_filter = table_filter or TableFilter()
    cur = conn.cursor()
    version = cur.execute(SERVER_VERSION).fetchone()[0]
    rows = [r for r in cur.execute(TABLES, {"schemas": list(table_filter.schemas)}).fetchall()
            if table_filter.admits(TableRef(r[1], r[2]))]
    oids = [r[0] for r in rows]
    params = {"oids": oids}

    def by_oid(query: sql.SQL) -> dict[int, list[tuple]]:
        grouped: dict[int, list[tuple]] = {oid: [] for oid in oids}
        for row in cur.execute(query, params).fetchall():
            grouped[row[0]].append(row[1:])
        return grouped

    columns, constraints, indexes = by_oid(COLUMNS), by_oid(CONSTRAINTS), by_oid(INDEXES)
    policies, triggers, sequences = by_oid(POLICIES), by_oid(TRIGGERS), by_oid(COLUMN_SEQUENCES)
    refs = {r[0]: TableRef(r[1], r[2]) for r in rows}
    known = set(refs.values())

    tables: list[Table] = []
    fks: list[ForeignKey] = []
    external: list[ForeignKey] = []
    for oid, _schema, _name, partitioned, rls, forced, comment, estimated_rows in rows:
        ref = refs[oid]
        primary_key: tuple[str, ...] = ()
        checks: list[CheckConstraint] = []
        for contype, conname, deferrable, definition, cols, pschema, pname, pcols in constraints[oid]:
            if contype == "p":
                primary_key = tuple(cols)
                continue
            if contype == "c":
                checks.append(CheckConstraint(conname, tuple(cols), definition))
                continue
            fk = ForeignKey(conname, ref, tuple(cols), TableRef(pschema, pname), tuple(pcols),
                            deferrable, definition)
            (fks if fk.parent in known else external).append(fk)
        tables.append(Table(
            ref=ref,
            columns=tuple(Column(name, typ, notnull, generated, unsafe, hasdef)
                          for name, typ, notnull, generated, hasdef, unsafe in columns[oid]),
            primary_key=primary_key,
            partitioned=partitioned,
            rls_enabled=rls,
            rls_forced=forced,
            policies=tuple(RlsPolicy(n, cmd, perm, tuple(roles), using, check)
                           for n, cmd, perm, roles, using, check in policies[oid]),
            indexes=tuple(Index(n, d, u, p, am, con, tuple(keys)) for n, d, u, p, am, con, keys in indexes[oid]),
            triggers=tuple(Trigger(n, e, d) for n, e, d in triggers[oid]),
            sequences=tuple(ColumnSequence(TableRef(s, n), col, ident, owned) for s, n, col, ident, owned in sequences[oid]),
            comment=comment,
            estimated_rows=estimated_rows,
            check_constraints=tuple(checks),
        ))
    views = read_materialized_views(cur, table_filter)
    return Catalog(tuple(tables), tuple(fks), tuple(external), version, table_filter, views)


def read_materialized_views(cur: psycopg.Cursor, table_filter: TableFilter) -> tuple[MaterializedView, ...]:
    found: dict[TableRef, tuple[bool, list[TableRef]]] = {}
    for schema, name, populated, read_schema, read_name in cur.execute(
        MATERIALIZED_VIEWS, {"schemas": list(table_filter.schemas)}
    ).fetchall():
        ref = TableRef(schema, name)
        if not table_filter.admits(ref):
            continue
        reads = found.setdefault(ref, (populated, []))[1]
        if read_name is not None:
            reads.append(TableRef(read_schema, read_name))
    return tuple(MaterializedView(ref, tuple(reads), populated) for ref, (populated, reads) in found.items())


def resolve_tables(catalog: Catalog, names: Iterable[str]) -> tuple[TableRef, ...]:
    """Turn user-typed names into refs; unknown names fail together, in one message."""
    known = set(catalog.refs)
    refs, unknown = [], []
    for name in names:
        ref = TableRef.parse(name, catalog.schemas[0])
        (refs if ref in known else unknown).append(ref)
    if unknown:
        raise SelectionError(
            f"unknown table(s): {', '.join(map(str, unknown))}; "
            f"known tables are in schemas {', '.join(catalog.schemas)} (see `muva-refresh plan`)"
        )
    return tuple(dict.fromkeys(refs))
