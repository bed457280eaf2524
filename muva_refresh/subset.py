"""Subsets: which rows of each table a refresh sends, as SQL the source evaluates in the snapshot.

A root table keeps the rows its filter selects. A table below a root (it reaches one through
its FKs) keeps the rows that reference a kept row of a parent below or at a root; then every
row such a row references, directly or not, comes along, so the target has no orphans. A table
no root reaches goes whole, and an excluded table sends no rows.

Each table's COPY carries the row sets it depends on as CTEs, so every set is computed once
per COPY, and `IN (SELECT …)` against an uncorrelated set runs as one hashed lookup per row.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Iterable, Mapping

from psycopg import sql

from .catalog import Catalog, ForeignKey, TableRef
from .errors import ConfigError
from .graph import cycles, downstream_closure
from .shape import Shape


@dataclass(frozen=True)
class Subset:
    roots: Mapping[TableRef, str]  # root table -> WHERE text over its columns (the policy author's SQL)
    exclude: tuple[str, ...] = ()  # schema.table patterns that send no rows

    def excluded(self, catalog: Catalog) -> set[TableRef]:
        return {r for r in catalog.refs if any(fnmatch.fnmatchcase(str(r), p) for p in self.exclude)}


def row_filters(catalog: Catalog, subset: Subset) -> dict[TableRef, Shape]:
    """The CTEs and filter of every table that does not go whole. Call `refuse_unholdable` first."""
    builder = FilterBuilder(catalog, subset)
    shapes = {ref: Shape(where=sql.SQL("false")) for ref in subset.excluded(catalog)}
    for ref in sorted(builder.scoped):
        shapes[ref] = builder.shape(ref)
    return shapes


def refuse_unholdable(catalog: Catalog, subset: Subset) -> None:
    """Roots that are not copied tables, an excluded parent of a copied table, and what a subset
    cannot follow (self-references, cycles) are refused, each naming the tables."""
    unknown = [str(r) for r in subset.roots if r not in catalog.by_ref]
    if unknown:
        raise ConfigError(f"subset root(s) {', '.join(unknown)} are not copied tables",
                          "name tables of the configured schemas (see `muva-refresh plan`)")
    excluded = subset.excluded(catalog)
    for fk in catalog.foreign_keys:
        if fk.parent in excluded and fk.child not in excluded:
            raise ConfigError(f"{fk.parent} is excluded, but {fk.child} ({', '.join(fk.child_columns)}) references it",
                              f"exclude {fk.child} too, or copy {fk.parent}")
    scoped = downstream_closure(subset.roots, catalog.foreign_keys)
    for fk in catalog.foreign_keys:
        if fk.self_reference and fk.child in scoped:
            raise ConfigError(f"{fk.child} references itself ({fk.name}) below a subset root; a subset does "
                              "not follow self-references", f"copy {fk.child} whole: pick roots above none of it")
    for cycle in cycles(sorted(scoped), catalog.foreign_keys):
        raise ConfigError(f"the FK cycle {' <-> '.join(map(str, cycle))} is below a subset root; a subset does "
                          "not follow cycles", "pick roots that no table of the cycle reaches")


class FilterBuilder:
    """The `sel` set of a table (rows that reach a root) and its `keep` set (those, plus the rows
    that kept rows of its children reference), as CTEs named by position."""

    def __init__(self, catalog: Catalog, subset: Subset):
        self.catalog = catalog
        self.roots = subset.roots
        excluded = subset.excluded(catalog)
        self.scoped = downstream_closure(subset.roots, catalog.foreign_keys) - excluded
        fks = [fk for fk in catalog.foreign_keys if fk.child in self.scoped and fk.parent in self.scoped]
        self.up = {ref: [fk for fk in fks if fk.child == ref] for ref in self.scoped}
        self.down = {ref: [fk for fk in fks if fk.parent == ref] for ref in self.scoped}
        self.index = {ref: i for i, ref in enumerate(sorted(self.scoped))}

    def name(self, kind: str, ref: TableRef) -> sql.Identifier:
        return sql.Identifier(f"{kind}_{self.index[ref]}")

    def selected(self, ref: TableRef) -> sql.Composable:
        """Rows of `ref` (as `t`) that reach a selected root row."""
        terms = [sql.SQL("({})").format(sql.SQL(self.roots[ref]))] if ref in self.roots else []
        terms += [matches(fk.child_columns, self.name("sel", fk.parent), fk.parent_columns) for fk in self.up[ref]]
        return sql.SQL(" OR ").join(terms)

    def kept(self, ref: TableRef) -> sql.Composable:
        terms = [self.selected(ref)]
        terms += [matches(fk.parent_columns, self.name("keep", fk.child), fk.child_columns) for fk in self.down[ref]]
        return sql.SQL(" OR ").join(terms)

    def shape(self, ref: TableRef) -> Shape:
        selected = self.closure(ref, self.up, set())  # `sel` reads the parents' `sel` sets
        kept = self.closure(ref, self.down, set())  # `keep` reads the children's `keep` sets…
        for child in kept:
            selected |= self.closure(child, self.up, set())  # …and each of those its own `sel`
        ctes = [self.cte("sel", r, self.selected(r)) for r in self.top_down(selected)]
        ctes += [self.cte("keep", r, self.kept(r)) for r in reversed(self.top_down(kept - {ref}))]
        return Shape(ctes=sql.SQL("WITH {}").format(sql.SQL(", ").join(ctes)) if ctes else None,
                     where=self.kept(ref))

    def closure(self, ref: TableRef, edges: Mapping[TableRef, list[ForeignKey]], seen: set[TableRef]) -> set[TableRef]:
        """The tables whose sets `ref`'s set reads along `edges`, transitively (not `ref` itself)."""
        for fk in edges[ref]:
            other = fk.parent if fk.child == ref else fk.child
            if other not in seen:
                seen.add(other)
                self.closure(other, edges, seen)
        return seen

    def top_down(self, refs: Iterable[TableRef]) -> list[TableRef]:
        """Parents before children, so each CTE reads only sets defined before it."""
        depth: dict[TableRef, int] = {}

        def level(ref: TableRef) -> int:
            if ref not in depth:
                depth[ref] = 1 + max((level(fk.parent) for fk in self.up[ref]), default=-1)
            return depth[ref]

        return sorted(refs, key=lambda r: (level(r), r))

    def cte(self, kind: str, ref: TableRef, predicate: sql.Composable) -> sql.Composable:
        """Only the key columns other sets match on, not whole rows (an embedding column can be large)."""
        keys = {c for fk in self.down[ref] for c in fk.parent_columns} | {c for fk in self.up[ref] for c in fk.child_columns}
        return sql.SQL("{} AS MATERIALIZED (SELECT {} FROM {} AS t WHERE {})").format(
            self.name(kind, ref), sql.SQL(", ").join(map(sql.Identifier, sorted(keys))), ref.ident(), predicate)


def matches(columns: Iterable[str], row_set: sql.Identifier, set_columns: Iterable[str]) -> sql.Composable:
    """`(t.a, t.b) IN (SELECT x, y FROM set)`: one hashed lookup, and NULL keys match nothing."""
    return sql.SQL("({}) IN (SELECT {} FROM {})").format(
        sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in columns),
        sql.SQL(", ").join(map(sql.Identifier, set_columns)),
        row_set,
    )
