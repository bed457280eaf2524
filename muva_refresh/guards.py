"""Every refusal that runs before the first write. Each raises, naming the problem and the way out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import psycopg
from psycopg import sql

from .catalog import Catalog, Table
from .endpoint import Endpoint, describe, run_of_session
from .errors import ConcurrentRefreshError, ConfigError, SchemaDriftError, UnsafeTargetError
from .graph import Plan
from .masking import MaskPlan, check_constraint_violations
from .shape import Shape
from .shaping import Shaping

SERVER_IDENTITY = sql.SQL(
    "SELECT pg_postmaster_start_time()::text, current_database(), "
    "(SELECT oid FROM pg_database WHERE datname = current_database())::int"
)
# One key per target database: session-level, so it is released when the connection closes.
REFRESH_LOCK_KEY = 0x6D757661  # "muva"
TAKE_REFRESH_LOCK = sql.SQL("SELECT pg_try_advisory_lock({key})").format(key=sql.Literal(REFRESH_LOCK_KEY))
REFRESH_LOCK_HOLDER = sql.SQL(
    "SELECT l.pid, a.application_name, a.backend_start::text FROM pg_locks l "
    "LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.classid = 0 AND l.objid = {key} AND l.granted"
).format(key=sql.Literal(REFRESH_LOCK_KEY))
PLAN_ONLY = sql.SQL("EXPLAIN {}")  # plans the query, runs nothing
BYPASSES_RLS = sql.SQL("SELECT current_user, rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user")
MAX_LISTED = 20


def listed(items: list[str], limit: int = MAX_LISTED) -> list[str]:
    """At most `limit` items, and a last line saying how many more there are."""
    return items[:limit] + ([f"... and {len(items) - limit} more"] if len(items) > limit else [])


def guard_distinct(source: Endpoint, target: Endpoint, src: psycopg.Connection, dst: psycopg.Connection) -> None:
    """Refuse when both DSNs reach the same database, however differently they are spelled."""
    same = src.execute(SERVER_IDENTITY).fetchone() == dst.execute(SERVER_IDENTITY).fetchone()
    if source.dsn == target.dsn or same:
        raise UnsafeTargetError(
            f"the target is the source ({target} reaches the same database as {source}); nothing was touched",
            "point MUVA_TARGET_DSN at staging",
        )


@dataclass(frozen=True)
class LockHolder:
    """The session holding a target's refresh lock."""

    backend_pid: int
    application: str
    since: str

    @property
    def run_id(self) -> str | None:
        """The Dagster run the session works for, when a run opened it."""
        return run_of_session(self.application)


def refresh_lock_holder(dst: psycopg.Connection) -> LockHolder | None:
    row = dst.execute(REFRESH_LOCK_HOLDER).fetchone()
    return LockHolder(row[0], row[1] or "", row[2] or "") if row else None


def guard_single_refresh(target: Endpoint, dst: psycopg.Connection) -> None:
    """Take the target's refresh lock, or refuse: a CLI and a UI refresh must never overlap."""
    if dst.execute(TAKE_REFRESH_LOCK).fetchone()[0]:
        dst.commit()
        return
    holder = refresh_lock_holder(dst)
    dst.rollback()
    who = f" (backend pid {holder.backend_pid}, {holder.application or 'unnamed'}, since {holder.since})" if holder else ""
    raise ConcurrentRefreshError(
        f"another refresh is running against the {target}{who}; nothing was touched",
        "wait for it to finish, then run the refresh again",
    )


def schema_lag(plan: Plan, target_catalog: Catalog) -> list[str]:
    """What the target lacks of the source's schema for this plan, one item per table, column or
    view: the migrations staging has yet to run. A table or a nullable (or defaulted) column that
    only the target has is fine: staging may run a migration first."""
    problems: list[str] = []
    for ref in plan.selected:
        target_table = target_catalog.by_ref.get(ref)
        if target_table is None:
            problems.append(f"table {ref} is missing on the target")
        else:
            problems.extend(column_drift(plan.catalog.table(ref), target_table))
    on_target = {v.ref for v in target_catalog.materialized_views}
    problems += [f"materialized view {v.ref} is missing on the target" for v in plan.views if v.ref not in on_target]
    return problems


def lag_message(problems: list[str]) -> str:
    return "staging lacks a migration production has: " + "; ".join(listed(problems))


def guard_schema(plan: Plan, target_catalog: Catalog) -> None:
    """Every selected table exists on the target with the same copied columns and types."""
    problems = schema_lag(plan, target_catalog)
    if problems:
        raise SchemaDriftError(
            lag_message(problems) + "; nothing was touched",
            "run production's migrations on staging, then refresh (the deploy sensor does, on its first tick after)",
        )


def column_drift(source: Table, target: Table) -> list[str]:
    src = {c.name: c for c in source.copied_columns}
    dst = {c.name: c for c in target.copied_columns}
    problems = []
    for name, col in src.items():
        other = dst.get(name)
        if other is None:
            problems.append(f"column {source.ref}.{name} ({col.type}) is missing on the target")
        elif other.type != col.type:
            problems.append(f"column {source.ref}.{name} is {col.type} on the source, {other.type} on the target")
    for name, col in dst.items():
        if name not in src and col.not_null and not col.has_default:
            problems.append(f"column {target.ref}.{name} ({col.type}) exists only on the target and is NOT NULL "
                            "without a default, so no copied row could fill it")
    return problems


def guard_rls_bypass(plan: Plan, conns: Mapping[Endpoint, psycopg.Connection]) -> None:
    """RLS would hide rows from COPY silently on the source (and reject COPY FROM on the target)."""
    guarded = [str(r) for r in plan.selected if plan.catalog.table(r).rls_enabled]
    if not guarded:
        return
    for endpoint, conn in conns.items():
        user, bypasses = conn.execute(BYPASSES_RLS).fetchone()
        if not bypasses:
            shown = ", ".join(guarded[:5]) + (f" and {len(guarded) - 5} more" if len(guarded) > 5 else "")
            raise ConfigError(
                f"role {user!r} on the {endpoint.role} cannot bypass row-level security, so its copy of "
                f"{shown} would silently miss rows; nothing was touched",
                "connect as a role with BYPASSRLS (on Supabase: postgres)",
            )


def guard_masked_checks(masking: MaskPlan, plan: Plan, src: psycopg.Connection) -> None:
    """A masked value that a target CHECK constraint would reject fails the load halfway: find it
    first, on the source inside the snapshot."""
    problems = [problem for ref in plan.selected if masking.rules_of(ref)
                for problem in check_constraint_violations(src, masking, plan.catalog.table(ref))]
    if problems:
        raise ConfigError("the masking policy breaks CHECK constraints: " + "; ".join(listed(problems))
                          + "; nothing was touched", "choose rules whose values the constraints accept")


def guard_policy_sql(shaping: Shaping, plan: Plan, source: Endpoint, src: psycopg.Connection) -> None:
    """A subset filter or a sql rule that does not parse, or names a missing column, would fail at
    a table's COPY, after the tables before it were copied: plan each filter and each table's
    masked select list on the source first, in the snapshot, running nothing. Prepared, so a
    stray `;` cannot split a query in two."""
    roots = shaping.subset.roots.items() if shaping.subset else ()
    planned = [(f"the subset filter of {root}", root, Shape(where=sql.SQL("({})").format(sql.SQL(condition))))
               for root, condition in roots]
    shapes = shaping.shapes(plan.catalog)
    planned += [(f"the masking rules of {ref}", ref, Shape(expressions=shapes[ref].expressions))
                for ref in plan.selected if ref in shapes and shapes[ref].expressions]
    problems = []
    for what, ref, shape in planned:
        try:
            with src.transaction():  # a savepoint: the snapshot's transaction outlives an error
                src.execute(PLAN_ONLY.format(shape.rows(plan.catalog.table(ref))), prepare=True)
        except psycopg.Error as exc:
            problems.append(f"{what}: {describe(exc, source)}")
    if problems:
        raise ConfigError("the policy's SQL fails on the source: " + "; ".join(listed(problems))
                          + "; nothing was touched", "correct each subset filter or sql rule named")
