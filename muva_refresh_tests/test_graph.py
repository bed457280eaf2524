"""The FK graph is pure: edges built by hand, no server."""

import pytest

from muva_refresh.catalog import Catalog, Column, ForeignKey, Table, TableRef
from muva_refresh.errors import SelectionError
from muva_refresh.graph import cycles, downstream_closure, levels, load_batches, make_plan


def ref(name: str, schema: str = "public") -> TableRef:
    return TableRef(schema, name)


def fk(child: TableRef, parent: TableRef, name: str = "") -> ForeignKey:
    return ForeignKey(name or f"{child.name}_{parent.name}_fk", child, ("x",), parent, ("id",))


def catalog_of(tables, fks) -> Catalog:
    return Catalog(tuple(Table(t, (Column("id", "integer", True),), ("id",)) for t in tables), tuple(fks))


def test_child_sits_one_level_below_its_deepest_parent():
    a, b, c = ref("a"), ref("b"), ref("c")
    assert levels([a, b, c], [fk(b, a), fk(c, a), fk(c, b)]) == {a: 0, b: 1, c: 2}


def test_self_reference_does_not_raise_the_level():
    a, b = ref("a"), ref("b")
    assert levels([a, b], [fk(b, a), fk(b, b)]) == {a: 0, b: 1}
    assert cycles([a, b], [fk(b, b)]) == []


def test_a_cycle_is_one_unit_on_one_level_and_its_children_sit_below_it():
    root, x, y, child = ref("root"), ref("x"), ref("y"), ref("child")
    edges = [fk(x, root), fk(x, y), fk(y, x), fk(child, y)]
    assert levels([root, x, y, child], edges) == {root: 0, x: 1, y: 1, child: 2}
    assert cycles([root, x, y, child], edges) == [(x, y)]


def test_batches_come_level_by_level_and_reverse_for_cleaning():
    a, b, c = ref("a"), ref("b"), ref("c")
    batches = load_batches({c: 1, a: 0, b: 0})
    assert batches == [(a, b), (c,)]
    assert list(reversed(batches))[0] == (c,)


def test_downstream_closure_follows_children_transitively():
    a, b, c, d = ref("a"), ref("b"), ref("c"), ref("d")
    assert downstream_closure([a], [fk(b, a), fk(c, b), fk(a, d)]) == {a, b, c}


def test_a_selection_that_leaves_out_a_child_is_refused_and_names_it():
    a, b, c = ref("a"), ref("b"), ref("Odd Child", "Other")
    cat = catalog_of([a, b, c], [fk(b, a), fk(c, b)])
    with pytest.raises(SelectionError, match=r"Other\.Odd Child") as err:
        make_plan(cat, [a])
    assert "public.b" in str(err.value)
    assert make_plan(cat, [b, c]).batches == [(b,), (c,)]


def test_long_chains_do_not_hit_the_recursion_limit():
    chain = [ref(f"t{i}") for i in range(3000)]
    edges = [fk(chain[i + 1], chain[i]) for i in range(len(chain) - 1)]
    assert levels(chain, edges)[chain[-1]] == 2999


def test_table_names_parse_with_quotes_and_dots():
    assert TableRef.parse("reservations") == ref("reservations")
    assert TableRef.parse('"Billing Ops"."Invoice ""Line"".v2"') == ref('Invoice "Line".v2', "Billing Ops")
    with pytest.raises(SelectionError):
        TableRef.parse("a.b.c")
