"""A partitioned table's leaves, for loading one by one: COPY into a leaf skips the parent's
routing of each row, and can FREEZE where the parent's TRUNCATE is in the same transaction."""

from __future__ import annotations

import psycopg
from psycopg import sql

from .catalog import TableRef

# Every partition under the root (the root itself left out), with its parent and bound, in one order.
PARTITION_TREE = sql.SQL(
    "SELECT n.nspname, c.relname, p.relname, pg_get_expr(c.relpartbound, c.oid), t.isleaf "
    "FROM pg_partition_tree(%s::regclass) AS t JOIN pg_class c ON c.oid = t.relid "
    "JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_class p ON p.oid = t.parentrelid "
    "ORDER BY 1, 2"
)


def partition_tree(conn: psycopg.Connection, root: TableRef) -> list[tuple]:
    return conn.execute(PARTITION_TREE, (root.ident().as_string(conn),)).fetchall()


def matching_leaves(src: psycopg.Connection, dst: psycopg.Connection, root: TableRef) -> list[TableRef] | None:
    """The leaves of `root` when the target partitions it as the source does (the same partitions
    under the same parents with the same bounds), so each source leaf's rows belong in the target
    leaf of that name; None otherwise, and the parent routes each row."""
    tree = partition_tree(src, root)
    if not tree or tree != partition_tree(dst, root):
        return None
    return [TableRef(schema, name) for schema, name, _parent, _bound, leaf in tree if leaf]
