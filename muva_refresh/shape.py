"""What the source sends of a table: its select list (masked columns as expressions) and a
subset's rows. The source server evaluates both inside the snapshot, so unmasked values never
leave it; the stream copies this query and the row digest hashes it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from psycopg import sql

from .catalog import Table

ROWS = sql.SQL("{ctes}SELECT {columns} FROM {table} AS t{where}")


@dataclass(frozen=True)
class Shape:
    expressions: Mapping[str, sql.Composable] = field(default_factory=dict)  # column -> masked value
    ctes: sql.Composable | None = None  # WITH …, the subset's row sets the filter reads
    where: sql.Composable | None = None  # the subset's filter on `t`

    def select_list(self, table: Table) -> sql.Composable:
        return sql.SQL(", ").join(
            sql.SQL("{} AS {}").format(self.expressions[c.name], sql.Identifier(c.name))
            if c.name in self.expressions else sql.Identifier(c.name)
            for c in table.copied_columns
        )

    def masks(self, column: str) -> bool:
        return column in self.expressions

    def rows(self, table: Table) -> sql.Composed:
        return ROWS.format(
            ctes=sql.SQL("{} ").format(self.ctes) if self.ctes else sql.SQL(""),
            columns=self.select_list(table),
            table=table.ref.ident(),
            where=sql.SQL(" WHERE {}").format(self.where) if self.where else sql.SQL(""),
        )


WHOLE = Shape()
