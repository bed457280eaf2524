"""Materialized views after a load: each one that reads a copied table is refreshed, in
dependency order, in the load's own transaction."""

from __future__ import annotations

import time
from dataclasses import dataclass

import psycopg
from psycopg import sql

from .catalog import MaterializedView, TableRef
from .digest import count_rows

REFRESH_VIEW = sql.SQL("REFRESH MATERIALIZED VIEW {view}")


@dataclass(frozen=True)
class ViewStats:
    rows: int
    seconds: float


def refresh_views(dst: psycopg.Connection, views: list[MaterializedView]) -> dict[TableRef, ViewStats]:
    """REFRESH each view in the given (dependency) order, inside the caller's transaction."""
    done = {}
    for view in views:
        started = time.perf_counter()
        dst.execute(REFRESH_VIEW.format(view=view.ref.ident()))
        done[view.ref] = ViewStats(count_rows(dst, view.ref), time.perf_counter() - started)
    return done
