"""Where production's values of masked columns turn up on staging: the leak half of `masking`.

Inside the refresh's snapshot the source hashes every value of the masked columns as production
holds it: the whole value, and the e-mail and phone tokens inside it. Only these 8-byte hashes
leave production, streamed by COPY into a temporary table of the target's load session, each with
the number of the masked column it came from; the tool holds no value and no set of hashes. The
target hashes every leaf of its copied text-like columns alike (text, varchar, char, citext, json
and jsonb string values at any depth, arrays of these) and joins, inside the load transaction.

What counts as the same value (a key): the value trimmed and lower-cased (ASCII letters only, so
both servers agree whatever their locale); a value written only with digits, spaces and + ( ) . -
is a phone, and its key is its digits. Inside free text the tokens are e-mail addresses, and
phones written with a leading + or as NNN NNN NNNN (separators space, dot or dash). A key is
checked when it has at least MIN_TEXT_KEY characters, or is an e-mail (something@domain.tld),
or a phone of at least MIN_PHONE_DIGITS digits, and is not one character repeated: 'unknown',
a one-letter code or '0000000' match too much to mean anything.
"""

from __future__ import annotations

import hashlib
import re
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Iterable

import psycopg
from psycopg import Copy, sql

from .catalog import Catalog, Column, Table, TableRef
from .digest import TEXT_HASH
from .masking import TEXT_TYPE, MaskPlan
from .policy import Rule, path_text
from .stream import Gathered

MIN_TEXT_KEY = 8
MIN_PHONE_DIGITS = 7
MAX_PHONE_LENGTH = 40  # characters of a whole value written as a phone, separators included
TEXT, JSON = "text", "json"
ARRAY_OF = re.compile(r"^(.+)\[\]$")
HASHES = sql.Identifier("pg_temp", "muva_masked_hashes")
VALUE_KINDS = ("email", "phone", "person_name", "digits", "hash")  # rules that suit a fix, in json too

# Tokens inside lower-cased text. A phone is +digits with up to two separators between digits
# (7 to 15 digits), or NNN NNN NNNN; it is looked for only inside a RUN of digits and separators,
# which a simpler expression finds at a fraction of the cost.
EMAIL = r"[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}"
RUN = r"[+(]?[0-9][0-9 .()+-]{5,}[0-9]"
PHONE = r"\+[0-9](?:[ .()-]{0,2}[0-9]){6,14}|(?<![0-9])\(?[0-9]{3}\)?[ .-]?[0-9]{3}[ .-][0-9]{4}(?![0-9])"
PHONE_CHARACTERS = r"^[-0-9 +().]+$"
EMAIL_KEY = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
STRING_LEAVES = "strict $.** ? (@.type() == \"string\")"

LEAF = sql.SQL("SELECT {tag}, CAST({value} AS text)")
JSON_LEAVES = sql.SQL("SELECT {tag}, leaf #>> '{{}}' FROM jsonb_path_query({document}, {path_query}) AS leaf")
TABLE_LEAVES = sql.SQL("SELECT leaf.tag, leaf.v FROM {table} AS t CROSS JOIN LATERAL ({leaves}) AS leaf (tag, v)")
# A leaf shorter than the shortest checked key (a@b.co) holds none: it is not looked at.
LOWERED = sql.SQL("SELECT leaf.tag, lower(btrim(leaf.v) COLLATE \"C\") FROM ({leaves}) AS leaf (tag, v) "
                  "WHERE octet_length(leaf.v) >= 6 OFFSET 0")
# A phone is short: the length test spares long text the regular expression.
WHOLE_KEY = sql.SQL("CASE WHEN octet_length(w) <= {phone_length} AND w ~ {phone_characters} "
                    "THEN regexp_replace(w, '[^0-9]+', '', 'g') ELSE w END")
# Every key of every leaf, hashed: the whole value's, and each token that differs from it, looked
# for only in the few leaves that can hold one. Keys too short to check are left out where
# `checked` says so: on the source, whose keys the target's must match to count. (OFFSET 0 has
# each key computed once, where the planner would copy its expression into every test of it.)
KEYED = sql.SQL(
    "SELECT tag, {hash} AS h FROM (SELECT tag, unnest(CASE WHEN {may_hold_tokens} "
    "THEN array_append({tokens}, k) ELSE ARRAY[k] END) "
    "FROM (SELECT tag, w, {whole} FROM ({lowered}) AS low (tag, w) OFFSET 0) AS whole (tag, w, k)) AS keys (tag, k) "
    "WHERE {checked}"
)
# A leaf that is one e-mail, or one phone, is its own token.
MAY_HOLD_TOKENS = sql.SQL("(strpos(w, '@') > 0 OR w ~ {run}) AND k !~ {one_phone} AND w !~ {one_email}")
TOKENS = sql.SQL(
    "ARRAY(SELECT token FROM (SELECT m[1] FROM regexp_matches(CASE WHEN strpos(w, '@') > 0 THEN w END, {email}, 'g') "
    "AS m UNION ALL SELECT regexp_replace(p[1], '[^0-9]+', '', 'g') FROM regexp_matches(w, {run}, 'g') AS r, "
    "regexp_matches(r[1], {phone}, 'g') AS p) AS found (token) WHERE token <> k)"
)
CHECKED = sql.SQL("(length(k) >= {min_text} OR k ~ {phone_key} OR k ~ {email_key}) AND ltrim(k, left(k, 1)) <> ''")
CREATE_HASHES = sql.SQL("CREATE TEMP TABLE {hashes} (h bigint NOT NULL, origin integer NOT NULL)")
HASHES_EXIST = sql.SQL("SELECT to_regclass({name}) IS NOT NULL")
SEND_HASHES = sql.SQL("COPY (SELECT DISTINCT h, tag FROM ({keyed}) AS hashed) TO STDOUT (FORMAT BINARY)")
RECEIVE_HASHES = sql.SQL("COPY {hashes} (h, origin) FROM STDIN (FORMAT BINARY)")
ANALYZE_HASHES = sql.SQL("ANALYZE {hashes}")  # its size, for the planner to hash the smaller side
FOUND = sql.SQL("SELECT keyed.tag, m.origin, count(*) FROM ({keyed}) AS keyed JOIN {hashes} AS m ON m.h = keyed.h "
                "GROUP BY 1, 2 ORDER BY 1, 2")
# Every string leaf of a json document with its path: keys, and [] for an array's elements.
WALK = sql.SQL(
    "WITH RECURSIVE walk (path, value) AS (SELECT CAST(ARRAY[] AS text[]), doc FROM ({documents}) AS d (doc) "
    "UNION ALL SELECT walk.path || step.key, step.value FROM walk CROSS JOIN LATERAL ("
    "SELECT key, value FROM jsonb_each(CASE WHEN jsonb_typeof(walk.value) = 'object' THEN walk.value END) "
    "UNION ALL SELECT '[]', value FROM jsonb_array_elements(CASE WHEN jsonb_typeof(walk.value) = 'array' "
    "THEN walk.value END)) AS step) "
    "SELECT path, value #>> '{{}}' FROM walk WHERE jsonb_typeof(value) = 'string'"
)
DOCUMENTS = sql.SQL("SELECT {document} FROM {table} AS t WHERE {document} IS NOT NULL{limit}")
# A json rule's masked path, left out of the target's document: its value there is masked.
WITHOUT_PATH = sql.SQL("(SELECT CASE WHEN d #> {path} IS NULL THEN d ELSE d #- {path} END FROM (SELECT {document}) AS x (d))")


def leaf_kind(column_type: str) -> str | None:
    """TEXT for one text value, JSON for string leaves (json, jsonb, and arrays of text-like types)."""
    if TEXT_TYPE.match(column_type):
        return TEXT
    element = ARRAY_OF.match(column_type)
    if column_type in ("json", "jsonb") or element and leaf_kind(element.group(1)) is not None:
        return JSON
    return None


def document(column: Column) -> sql.Composable:
    """The column of `t` as jsonb, for a column of kind JSON."""
    value = sql.SQL("t.{}").format(sql.Identifier(column.name))
    if column.type == "jsonb":
        return value
    if column.type == "json":
        return sql.SQL("CAST({} AS jsonb)").format(value)
    return sql.SQL("to_jsonb({})").format(value)


def path_array(path: tuple[str, ...]) -> sql.Composable:
    return sql.SQL("CAST({} AS text[])").format(sql.Literal(list(path)))


def leaf_set(tag: sql.Composable, kind: str, value: sql.Composable) -> sql.Composable:
    if kind == TEXT:
        return LEAF.format(tag=tag, value=value)
    return JSON_LEAVES.format(tag=tag, document=value, path_query=sql.Literal(STRING_LEAVES))


def keyed(leaves: sql.Composable, seed: int, checked: bool = False) -> sql.Composable:
    """`leaves` (a query of (tag, text)) as (tag, hash) rows; with `checked`, only the keys long
    enough to check."""
    minimum = CHECKED.format(min_text=sql.Literal(MIN_TEXT_KEY), email_key=sql.Literal(EMAIL_KEY),
                             phone_key=sql.Literal(f"^[0-9]{{{MIN_PHONE_DIGITS},}}$"))
    whole = WHOLE_KEY.format(phone_length=sql.Literal(MAX_PHONE_LENGTH), phone_characters=sql.Literal(PHONE_CHARACTERS))
    tokens = TOKENS.format(email=sql.Literal(EMAIL), run=sql.Literal(RUN), phone=sql.Literal(PHONE))
    candidate = MAY_HOLD_TOKENS.format(run=sql.Literal(RUN), one_phone=sql.Literal(r"^[0-9]{1,15}$"),
                                       one_email=sql.Literal(EMAIL_KEY))
    return KEYED.format(lowered=LOWERED.format(leaves=leaves), whole=whole, tokens=tokens, may_hold_tokens=candidate,
                        hash=TEXT_HASH.format(sql.SQL("k"), sql.Literal(seed)),
                        checked=minimum if checked else sql.SQL("true"))


def table_leaves(table: Table, leaves: Iterable[sql.Composable]) -> sql.Composable:
    return TABLE_LEAVES.format(table=table.ref.ident(), leaves=sql.SQL(" UNION ALL ").join(leaves))


def seed_for(snapshot_id: str) -> int:
    """The run's hash seed: hashes from one run mean nothing in another."""
    return int.from_bytes(hashlib.sha256(snapshot_id.encode()).digest()[:8], "big", signed=True)


# --- the source: production's values of the masked columns ----------------------------------------

@dataclass(frozen=True)
class Origin:
    """A masked column (or a json rule's path in one) whose production values are looked for."""

    ref: TableRef
    column: Column
    rule: Rule
    path: tuple[str, ...] = ()

    def __str__(self) -> str:
        return ".".join(filter(None, (str(self.ref), self.column.name, path_text(self.path))))

    def leaves(self, tag: int) -> sql.Composable:
        kind = leaf_kind(self.column.type)
        if kind == TEXT:
            return leaf_set(sql.Literal(tag), TEXT, sql.SQL("t.{}").format(sql.Identifier(self.column.name)))
        value = document(self.column)
        if self.path:
            value = sql.SQL("({} #> {})").format(value, path_array(self.path))
        return leaf_set(sql.Literal(tag), JSON, value)


def origins(plan: MaskPlan, catalog: Catalog) -> list[Origin]:
    """The masked columns of a text-like type, a json rule's paths one by one. An FK column that
    follows a masked parent is left out: its values are among the parent's."""
    followers = {(fk.child, child) for fk in catalog.foreign_keys
                 for child, parent in zip(fk.child_columns, fk.parent_columns)
                 if parent in plan.rules_of(fk.parent)}
    found = []
    for ref in sorted(plan.columns):
        table = catalog.by_ref.get(ref)
        for name, rule in sorted(plan.rules_of(ref).items()):
            column = table.column(name) if table else None
            if column is None or (ref, name) in followers or leaf_kind(column.type) is None:
                continue
            if rule.kind == "json":
                found += [Origin(ref, column, inner, path) for path, inner in rule.paths]
            else:
                found.append(Origin(ref, column, rule))
    return found


def hashes_sent(dst: psycopg.Connection) -> bool:
    """Whether this target session holds production's hashes already (a parallel load's worker
    does after its first unit, unless that unit rolled back and took the table along)."""
    return dst.execute(HASHES_EXIST.format(name=sql.Literal(HASHES.as_string(dst)))).fetchone()[0]


def send_hashes(src: psycopg.Connection, catalog: Catalog, found: list[Origin], seed: int) -> Copy:
    """Production's hashes of the masked values, as a COPY out stream to enter: the source starts
    hashing once it is entered."""
    per_table: dict[TableRef, list[sql.Composable]] = {}
    for tag, origin in enumerate(found):
        per_table.setdefault(origin.ref, []).append(origin.leaves(tag))
    union = sql.SQL(" UNION ALL ").join(table_leaves(catalog.table(ref), leaves) for ref, leaves in per_table.items())
    return src.cursor().copy(SEND_HASHES.format(keyed=keyed(union, seed, checked=True)))


def receive_hashes(dst: psycopg.Connection, sent: Copy) -> None:
    """The hashes into a temporary table of the target session, in blocks."""
    dst.execute(CREATE_HASHES.format(hashes=HASHES))
    with dst.cursor().copy(RECEIVE_HASHES.format(hashes=HASHES)) as received:
        gathered = Gathered(received.write)  # a message per hash, written in blocks
        for block in sent:
            gathered.write(block)
        gathered.flush()
    dst.execute(ANALYZE_HASHES.format(hashes=HASHES))


# --- the target: every copied text-like leaf ------------------------------------------------------

@dataclass(frozen=True)
class Leak:
    """Production values of masked columns found in one column of staging, or one json path in it."""

    place: str  # column, or column.path inside a json value ([] for an array's elements)
    found: tuple[tuple[str, int], ...]  # (the masked column they came from, values found)
    kept: bool  # the policy keeps this column: the user decided, so a WARN
    fix: str  # the policy line that masks it, or keeps it

    @property
    def count(self) -> int:
        return sum(n for _, n in self.found)

    def describe(self) -> str:
        return f"{self.place} ({', '.join(f'{n:,} of {origin}' for origin, n in self.found)})"


def scanned_value(table: Table, column: Column, plan: MaskPlan) -> sql.Composable | None:
    """What the leak scan reads of a target column: nothing of a masked one, and a json rule's
    document without its masked paths."""
    rule = plan.rules_of(table.ref).get(column.name)
    kind = leaf_kind(column.type)
    if kind is None or rule is not None and rule.kind != "json":
        return None
    if kind == TEXT:
        return sql.SQL("t.{}").format(sql.Identifier(column.name))
    value = document(column)
    for path, _ in rule.paths if rule else ():
        value = WITHOUT_PATH.format(path=path_array(path), document=value)
    return value


def string_leaves(table: Table, value: sql.Composable, limit: int | None = None) -> sql.Composable:
    """(path, text) of every string leaf of `value` (a jsonb expression over `t`), in the first
    `limit` rows that have one, or in all."""
    cut = sql.SQL(" LIMIT {}").format(sql.Literal(limit)) if limit else sql.SQL("")
    return WALK.format(documents=DOCUMENTS.format(document=value, table=table.ref.ident(), limit=cut))


def place_name(column: str, path: Iterable[str]) -> str:
    return column + "".join("[]" if step == "[]" else "." + path_text((step,)) for step in path)


Scanned = tuple[Table, Column, sql.Composable]  # a target column, and what the scan reads of it


class LeakScan:
    """The leaks of one load transaction. Entered, it has production start hashing its values (once
    per target session), so that the target's other checks run meanwhile; the first table that
    asks has them received, and every table the transaction loaded scanned in one query."""

    def __init__(self, src: psycopg.Connection, dst: psycopg.Connection, catalog: Catalog, plan: MaskPlan,
                 tables: Iterable[Table], seed: int):
        self.src, self.dst, self.catalog, self.plan, self.seed = src, dst, catalog, plan, seed
        self.scanned = [(table, column, value) for table in tables for column in table.copied_columns
                        if (value := scanned_value(table, column, plan)) is not None]
        self.sources = origins(plan, catalog)
        self.found: dict[TableRef, list[Leak]] | None = None
        self.sending = ExitStack()
        self.sent: Copy | None = None

    def __enter__(self) -> LeakScan:
        if self.scanned and self.sources and not hashes_sent(self.dst):
            self.sent = self.sending.enter_context(send_hashes(self.src, self.catalog, self.sources, self.seed))
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.sent is not None and exc[0] is None:
            for _ in self.sent:  # never asked for: read to the end, so the source connection is free
                pass
        self.sending.__exit__(*exc)  # after an error, the COPY is cancelled

    def of(self, table: Table) -> list[Leak]:
        """The columns of `table` on the target that hold production values of masked columns;
        inside a document, each json path. The source connection is free once this returned."""
        if self.found is None:
            self.found = self.scan()
        return self.found.get(table.ref, [])

    def scan(self) -> dict[TableRef, list[Leak]]:
        if self.sent is not None:
            receive_hashes(self.dst, self.sent)
            self.sent = None
            self.sending.close()
        scanned, sources = self.scanned, self.sources
        if not scanned or not sources:
            return {}
        hits: dict[tuple[TableRef, str, tuple[str, ...]], dict[int, int]] = {}
        documents = set()
        for tag, origin, count in self.dst.execute(FOUND.format(keyed=keyed(all_leaves(scanned), self.seed),
                                                                hashes=HASHES)):
            table, column, _ = scanned[tag]
            if leaf_kind(column.type) == JSON:
                documents.add(tag)  # named path by path below
            else:
                hits.setdefault((table.ref, column.name, ()), {})[origin] = count
        for tag in sorted(documents):
            table, column, value = scanned[tag]
            paths = FOUND.format(keyed=keyed(string_leaves(table, value), self.seed), hashes=HASHES)
            for path, origin, count in self.dst.execute(paths):
                hits.setdefault((table.ref, column.name, tuple(path)), {})[origin] = count
        return self.leaks(hits, sources)

    def leaks(self, hits: dict[tuple[TableRef, str, tuple[str, ...]], dict[int, int]],
              sources: list[Origin]) -> dict[TableRef, list[Leak]]:
        found: dict[TableRef, list[Leak]] = {}
        for (ref, column, path), by_origin in sorted(hits.items()):
            kept = column in self.plan.kept.get(ref, frozenset())
            leak = Leak(place_name(column, path), tuple((str(sources[o]), n) for o, n in sorted(by_origin.items())),
                        kept, fix_for(ref, column, path, [sources[o] for o in by_origin]))
            found.setdefault(ref, []).append(leak)
        return found


def all_leaves(scanned: list[Scanned]) -> sql.Composable:
    """The leaves of every scanned column, each tagged with its place in `scanned`, table by table."""
    per_table: dict[TableRef, tuple[Table, list[sql.Composable]]] = {}
    for tag, (table, column, value) in enumerate(scanned):
        per_table.setdefault(table.ref, (table, []))[1].append(leaf_set(sql.Literal(tag), leaf_kind(column.type), value))
    return sql.SQL(" UNION ALL ").join(table_leaves(table, leaves) for table, leaves in per_table.values())


def fix_for(ref: TableRef, column: str, path: tuple[str, ...], sources: list[Origin]) -> str:
    """The policy line that masks the place, with the rule of a column its values came from where
    that rule suits it, or the one that keeps it."""
    inner = next((o.rule.kind for o in sources if o.rule.kind in VALUE_KINDS), "hash")
    return f'{policy_line(ref, column, path, inner)}, or "{ref}.{column}" = "keep"'


def policy_line(ref: TableRef, column: str, path: tuple[str, ...], kind: str) -> str:
    """The [mask] line that masks a column, or a path inside its json value, with rule `kind`."""
    key = f'"{ref}.{column}"'
    if "[]" in path:  # a json rule's path names one array element, not all of them
        return f'{key} = "null" (or a sql rule that changes every value)'
    if path:
        return f'{key} = {{ rule = "json", paths = {{ "{path_text(path)}" = "{kind}" }} }}'
    return f'{key} = "{kind}"'
