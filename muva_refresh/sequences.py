"""Sequences after a load: every sequence the copied columns use is set from the source's."""

from __future__ import annotations

import psycopg
from psycopg import sql

from .catalog import Catalog, TableRef
from .graph import Plan

READ_SEQUENCE = sql.SQL("SELECT last_value, is_called FROM {sequence}")
SET_SEQUENCE = sql.SQL("SELECT setval(%s::regclass, %s, %s)")


def sequence_pairs(plan: Plan, target_catalog: Catalog) -> list[tuple[TableRef, TableRef]]:
    """(source sequence, target sequence) for every sequence the selected tables use, owned or
    not, each target sequence once; a sequence in a schema that is not configured is left alone."""
    pairs: dict[TableRef, TableRef] = {}
    for sequence, uses in plan.catalog.sequence_uses(plan.selected).items():
        if sequence.schema not in plan.catalog.schemas:
            continue  # the plan says so
        for ref, used in uses:
            on_target = {u.sequence for u in target_catalog.table(ref).sequences if u.column == used.column}
            dest = sequence if sequence in on_target else next(iter(on_target)) if len(on_target) == 1 else None
            if dest is not None:
                pairs.setdefault(dest, sequence)
    return [(source_seq, target_seq) for target_seq, source_seq in pairs.items()]


def sync_sequences(src: psycopg.Connection, dst: psycopg.Connection, pairs: list[tuple[TableRef, TableRef]]) -> None:
    """Set each target sequence from its source sequence (setval is not transactional: call it last)."""
    for source_seq, target_seq in pairs:
        last_value, is_called = src.execute(READ_SEQUENCE.format(sequence=source_seq.ident())).fetchone()
        dst.execute(SET_SEQUENCE, (target_seq.ident().as_string(dst), last_value, is_called))
