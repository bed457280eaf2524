"""The FK graph as pure functions: levels, cycles, load order, and selection closures.

Edges run child -> parent. Self-references never constrain the order; a cycle of two or
more tables is one strongly connected component and loads as one unit, on one level.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from .catalog import Catalog, ForeignKey, MaterializedView, TableRef
from .errors import SelectionError


def parents_of(tables: Iterable[TableRef], fks: Iterable[ForeignKey]) -> dict[TableRef, tuple[TableRef, ...]]:
    """Each table's distinct FK parents within `tables`, self-references left out."""
    members = set(tables)
    found: dict[TableRef, set[TableRef]] = {t: set() for t in members}
    for fk in fks:
        if not fk.self_reference and fk.child in members and fk.parent in members:
            found[fk.child].add(fk.parent)
    return {t: tuple(sorted(ps)) for t, ps in found.items()}


def strongly_connected(tables: Sequence[TableRef], parents: Mapping[TableRef, Sequence[TableRef]]) -> list[tuple[TableRef, ...]]:
    """Tarjan's algorithm, iterative so a deep FK chain cannot hit the recursion limit."""
    index: dict[TableRef, int] = {}
    low: dict[TableRef, int] = {}
    on_stack: set[TableRef] = set()
    stack: list[TableRef] = []
    components: list[tuple[TableRef, ...]] = []
    counter = 0
    for root in sorted(tables):
        if root in index:
            continue
        work = [(root, iter(parents.get(root, ())))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            advanced = False
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(parents.get(nxt, ()))))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(tuple(sorted(component)))
    return components


def cycles(tables: Sequence[TableRef], fks: Iterable[ForeignKey]) -> list[tuple[TableRef, ...]]:
    """FK cycles of two or more tables (self-references are not cycles here)."""
    parents = parents_of(tables, fks)
    return sorted(c for c in strongly_connected(list(parents), parents) if len(c) > 1)


def levels(tables: Sequence[TableRef], fks: Iterable[ForeignKey]) -> dict[TableRef, int]:
    """Longest FK path from a root; every member of a cycle shares its component's level."""
    parents = parents_of(tables, fks)
    components = strongly_connected(list(parents), parents)
    component_of = {t: i for i, comp in enumerate(components) for t in comp}
    # Tarjan emits components parents-first, so one pass in that order suffices.
    level_of_component: dict[int, int] = {}
    for i, comp in enumerate(components):
        upstream = {component_of[p] for t in comp for p in parents[t]} - {i}
        level_of_component[i] = max((level_of_component[u] + 1 for u in upstream), default=0)
    return {t: level_of_component[component_of[t]] for t in parents}


def load_batches(levels_by_table: Mapping[TableRef, int]) -> list[tuple[TableRef, ...]]:
    """Tables grouped by level, level 0 first; reverse the list to clean."""
    grouped: dict[int, list[TableRef]] = defaultdict(list)
    for table, level in levels_by_table.items():
        grouped[level].append(table)
    return [tuple(sorted(grouped[lvl])) for lvl in sorted(grouped)]


def downstream_closure(selected: Iterable[TableRef], fks: Iterable[ForeignKey]) -> set[TableRef]:
    """The selection plus every table that references it, directly or not."""
    children: dict[TableRef, set[TableRef]] = defaultdict(set)
    for fk in fks:
        children[fk.parent].add(fk.child)
    seen = set(selected)
    frontier = list(seen)
    while frontier:
        for child in children[frontier.pop()]:
            if child not in seen:
                seen.add(child)
                frontier.append(child)
    return seen


def views_in_order(views: Iterable[MaterializedView]) -> list[MaterializedView]:
    """Each materialized view after the views it reads (views cannot form a cycle)."""
    pending = {v.ref: v for v in views}
    ordered: list[MaterializedView] = []
    while pending:
        ready = [v for ref, v in sorted(pending.items()) if not any(r in pending and r != ref for r in v.reads)]
        ordered += ready
        for view in ready:
            del pending[view.ref]
    return ordered


def views_to_refresh(views: Iterable[MaterializedView], copied: Iterable[TableRef]) -> list[MaterializedView]:
    """The views that read a copied table, directly or through another such view, in order."""
    stale = set(copied)
    ordered = []
    for view in views_in_order(views):
        if stale.intersection(view.reads):
            stale.add(view.ref)
            ordered.append(view)
    return ordered


@dataclass(frozen=True)
class Plan:
    """What one refresh does: which tables, on which level, in which order."""

    catalog: Catalog
    selected: tuple[TableRef, ...]
    level: Mapping[TableRef, int]  # computed over the whole catalog, so levels don't shift with a selection
    parents: Mapping[TableRef, tuple[TableRef, ...]]
    cycles: tuple[tuple[TableRef, ...], ...]

    @property
    def batches(self) -> list[tuple[TableRef, ...]]:
        chosen = set(self.selected)
        return [b for b in (tuple(t for t in batch if t in chosen) for batch in load_batches(self.level)) if b]

    @property
    def views(self) -> list[MaterializedView]:
        return views_to_refresh(self.catalog.materialized_views, self.selected)

    @property
    def fk_count(self) -> int:
        return len(self.catalog.foreign_keys)


def make_plan(catalog: Catalog, selected: Iterable[TableRef] | None = None) -> Plan:
    """Plan a refresh; refuses a selection that would leave a child pointing at emptied parents."""
    refs = list(catalog.refs)
    chosen = tuple(sorted(set(selected))) if selected is not None else tuple(sorted(refs))
    if not chosen:
        raise SelectionError("the selection is empty; name at least one table")
    missing = downstream_closure(chosen, catalog.foreign_keys) - set(chosen)
    if missing:
        names = ", ".join(map(str, sorted(missing)))
        raise SelectionError(
            f"the selection would leave rows of {names} pointing at emptied tables; nothing was touched",
            f"add {names} to the selection",
        )
    return Plan(
        catalog=catalog,
        selected=chosen,
        level=levels(refs, catalog.foreign_keys),
        parents=parents_of(refs, catalog.foreign_keys),
        cycles=tuple(cycles(refs, catalog.foreign_keys)),
    )
