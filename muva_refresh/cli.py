"""muva-refresh: the command line. Thin: parse, call the library, print through one Printer.

Exit codes: 0 ok, 1 a refresh or a blocking check failed, 2 bad input or an unsafe target.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import sys
import time
from collections import Counter
from typing import IO, TYPE_CHECKING, Any, Sequence

from .catalog import Catalog, TableRef, graph_drift, read_catalog, resolve_tables
from .checks import CHECK_BY_NAME, CheckOutcome
from .endpoint import Endpoint
from .errors import EXIT_OK, RefreshError, SelectionError
from .graph import Plan, make_plan
from .guards import listed
from .instance import ensure_dagster_home
from .load import TableCopied, TableStreaming
from .refresh import Event, Progress
from .settings import Settings, load_env_file
from .shaping import Shaping, shaping_for
from .stream import DELTA, FULL, UNCHANGED, CopyStats
from .timings import Phase, PhaseTime, Timings
from .views import ViewStats

if TYPE_CHECKING:  # runs imports Dagster, which only the commands that run jobs load
    from .runs import HistoryEntry, JobOutcome, Runner

# Dagster's handling of a refresh's ~800 events allocates many short-lived objects; at the
# default first threshold (700) the collector runs over and over in a process that lives for
# seconds. Raised, a seed-sized refresh took about 0.25 s less.
GC_THRESHOLDS = (50_000, 20, 20)


def display_name(ref: TableRef) -> str:
    return ".".join(ref.short_parts)


class Printer:
    """Everything the CLI says goes through here; tests pass a StringIO."""

    def __init__(self, out: IO[str] | None = None, err: IO[str] | None = None):
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.live = False  # a progress line waits to be overwritten

    def line(self, text: str = "") -> None:
        if self.live:
            print("\r\033[K", end="", file=self.out)
            self.live = False
        print(text, file=self.out)

    def error(self, text: str) -> None:
        """`error: ` and the problem, then at most one more line: the fix."""
        print(f"error: {text}", file=self.err)

    def note(self, text: str) -> None:
        """Something the user should know that did not stop the command."""
        print(f"note: {text}", file=self.err)

    def json(self, value: Any) -> None:
        print(json.dumps(value, indent=2, default=str), file=self.out)

    def plan(self, plan: Plan, shaping: Shaping | None = None) -> None:
        for level, batch in enumerate(plan.batches):
            self.line(f"Level {level} ({len(batch)} tables)")
            for ref in batch:
                parents = plan.parents[ref]
                arrow = f" -> {', '.join(map(display_name, parents))}" if parents else ""
                self.line(f"  {display_name(ref)}{arrow}")
        self.line()
        for cycle in plan.cycles:
            self.line(f"Cycle (loads as one unit): {' <-> '.join(map(display_name, cycle))}")
        if not plan.cycles:
            self.line("Cycles: none")
        self_refs = sorted({fk.child for fk in plan.catalog.foreign_keys if fk.self_reference})
        if self_refs:
            self.line(f"Self-references (ignored for levels): {', '.join(map(display_name, self_refs))}")
        external = plan.catalog.external_foreign_keys
        if external:
            self.line(f"FKs to tables outside the copied schemas (not copied): {len(external)}")
            for fk in external:
                self.line(f"  {fk}")
        self.sequences(plan)
        if shaping is not None:
            self.policy(plan, shaping)
        if plan.views:
            self.line("Materialized views (refreshed after the tables they read, in this order):")
            for view in plan.views:
                self.line(f"  {display_name(view.ref)} -> {', '.join(map(display_name, view.reads))}")
        self.line(
            f"Totals: {len(plan.catalog.tables)} tables, {plan.fk_count} foreign keys, "
            f"{len(plan.batches)} levels, {len(plan.catalog.sequence_uses())} sequences, "
            f"{len(plan.catalog.materialized_views)} materialized views"
        )

    def policy(self, plan: Plan, shaping: Shaping) -> None:
        self.line(f"Policy {shaping.policy.path}:")
        for ref in plan.selected:
            rules = shaping.masking.rules_of(ref)
            if rules:
                self.line(f"  {display_name(ref)}: " + ", ".join(f"{c} {r.describe()}" for c, r in rules.items()))
        for root, where in shaping.policy.subset:
            self.line(f"  subset: {display_name(root)} WHERE {where}; the tables it reaches send only the rows "
                      "that reach it, and the rows those reference")
        if shaping.subset and shaping.subset.excluded(plan.catalog):
            self.line("  no rows: " + ", ".join(map(display_name, sorted(shaping.subset.excluded(plan.catalog)))))

    def sequences(self, plan: Plan) -> None:
        uses = plan.catalog.sequence_uses()
        if uses:
            self.line("Sequences (set from the source after the load):")
        for sequence, users in uses.items():
            columns = ", ".join(f"{display_name(ref)}.{u.column}{'' if u.owned else ' (default only)'}"
                                for ref, u in users)
            skipped = "" if sequence.schema in plan.catalog.schemas else (
                f"  NOT COPIED: schema {sequence.schema} is not configured (add it to MUVA_SCHEMAS)")
            self.line(f"  {sequence} <- {columns}{skipped}")

    def table_streaming(self, ref: TableRef, size: int, rows: int | None, estimated_rows: int) -> None:
        """On a terminal only: how far a large table's copy has come, against pg_class's estimate."""
        if not self.out.isatty():
            return
        so_far = f"{rows:,} of ~{estimated_rows:,} rows" if rows is not None else f"~{estimated_rows:,} rows in all"
        print(f"\r\033[K  {display_name(ref):<44} {size / 1e6:>9.2f} MB so far, {so_far}",
              end="", file=self.out, flush=True)
        self.live = True

    def view_done(self, ref: TableRef, stats: ViewStats) -> None:
        self.line(f"  {display_name(ref):<44} {stats.rows:>10,} rows {'':>12} {stats.seconds:>7.3f} s  "
                  "materialized view refreshed")

    def table_done(self, ref: TableRef, stats: CopyStats) -> None:
        self.line(
            f"  {display_name(ref):<44} {stats.rows:>10,} rows {stats.bytes / 1e6:>9.2f} MB "
            f"{stats.seconds:>7.3f} s {stats.mb_per_s:>8.1f} MB/s  {stats.format}  {path_text(stats)}"
        )

    def refresh_summary(self, run: JobOutcome) -> None:
        rows = sum(s.rows for s in run.tables.values())
        size = sum(s.bytes for s in run.tables.values())
        paths = Counter(s.path for s in run.tables.values())
        how = ", ".join(f"{paths[p]} {p}" for p in (UNCHANGED, DELTA, FULL) if paths[p])
        self.line(
            f"Refreshed {len(run.tables)} tables ({how}): {rows:,} rows, {size / 1e6:.1f} MB copied "
            f"in {run.seconds:.1f} s (Dagster run {run.run_id})"
        )

    def timings(self, timings: Timings) -> None:
        """Where the time went: a line per phase, a table's copy and index rebuild on one line."""
        rows = timings.rows()
        rebuilds = {(r.table, r.beside): r for r in rows if r.phase == Phase.REBUILD and r.table is not None}
        self.line(f"\nWhere the {timings.wall_seconds:.2f} s went:")
        for row in rows:
            if row.beside and not rows[rows.index(row) - 1].beside:
                self.line("  beside the phases above (another connection, not added up):")
            if row.phase == Phase.REBUILD and row.table is not None:
                continue
            line = self.phase_cell(timings, row, f"{row.phase} {display_name(row.table)}" if row.table else row.phase)
            rebuild = rebuilds.get((row.table, row.beside)) if row.phase == Phase.COPY else None
            self.line(line + ("   " + self.phase_cell(timings, rebuild, "index rebuild", 14) if rebuild else ""))

    @staticmethod
    def phase_cell(timings: Timings, row: PhaseTime, label: str, width: int = 40) -> str:
        share = "" if row.beside else f"{timings.share(row.seconds):>6.1%}"
        return f"  {label:<{width}} {row.seconds:>8.3f} s {share:>6}"

    def checks(self, outcomes: Sequence[CheckOutcome]) -> None:
        if not outcomes:
            return
        names = list(dict.fromkeys(o.check for o in outcomes))
        by_table: dict[str, dict[str, CheckOutcome]] = {}
        for o in outcomes:
            by_table.setdefault(display_name(o.table), {})[o.check] = o
        width = max(len(t) for t in by_table) + 2
        self.line()
        self.line("table".ljust(width) + "".join(n.ljust(len(n) + 2) for n in names))
        for table, checks in by_table.items():
            self.line(table.ljust(width) + "".join(mark(checks.get(n)).ljust(len(n) + 2) for n in names))
        problems = [o for o in outcomes if not o.passed]
        if problems:
            self.line()
        for o in problems:
            self.line(f"{'FAIL' if o.fails_run else 'WARN'} {o.check}: {o.summary}")
        failed = sum(1 for o in problems if o.fails_run)
        self.line(f"\n{len(outcomes) - len(problems)} passed, {failed} failed, {len(problems) - failed} warned")

    def history(self, entries: Sequence[HistoryEntry]) -> None:
        if not entries:
            self.line("No check evaluations recorded yet; run `muva-refresh refresh` or `validate`.")
        for e in entries:
            o = e.outcome
            verdict = e.status if o is None else ("passed" if o.passed else f"failed ({o.severity})")
            summary = o.summary if o else ""
            self.line(f"{e.time.isoformat(timespec='seconds')}  run {e.run_id[:8]}  {str(e.table):<40} "
                      f"{e.check:<15} {verdict:<16} {summary}")


class PrintedProgress(Progress):
    """A line per table as it is copied, and a live one for a large table on a terminal."""

    def __init__(self, out: Printer):
        self.out = out

    def heard(self, event: Event) -> None:
        if isinstance(event, TableCopied):
            self.out.table_done(event.ref, event.stats)
        elif isinstance(event, TableStreaming):
            self.out.table_streaming(event.ref, event.bytes, event.rows, event.estimated_rows)


def path_text(stats: CopyStats) -> str:
    """How the table was refreshed, for people."""
    if stats.path == UNCHANGED:
        return "unchanged"
    if stats.path == DELTA:
        rebuilt = f", {stats.reason}" if stats.reason else ""
        return f"delta: {stats.deleted_rows:,} deleted, {stats.copied:,} copied{rebuilt}"
    return f"whole: {stats.reason}" if stats.reason else "whole"


def mark(outcome: CheckOutcome | None) -> str:
    if outcome is None:
        return "-"
    if outcome.passed:
        return "ok"
    return "FAIL" if outcome.fails_run else "warn"


def outcome_json(outcome: CheckOutcome, asset: str) -> dict[str, Any]:
    return {"asset": asset, "check": outcome.check, "passed": outcome.passed,
            "severity": outcome.severity, "summary": outcome.summary, "metadata": dict(outcome.metadata)}


def plan_json(plan: Plan, shaping: Shaping | None = None) -> dict[str, Any]:
    return {
        "masking": {str(ref): {c: r.describe() for c, r in shaping.masking.rules_of(ref).items()}
                    for ref in plan.selected if shaping and shaping.masking.rules_of(ref)},
        "subset": {str(root): where for root, where in shaping.policy.subset} if shaping else {},
        "tables": [
            {"name": str(ref), "level": plan.level[ref], "parents": [str(p) for p in plan.parents[ref]]}
            for batch in plan.batches for ref in batch
        ],
        "sequences": [
            {"name": str(sequence), "copied": sequence.schema in plan.catalog.schemas,
             "used_by": [f"{ref}.{u.column}" for ref, u in users]}
            for sequence, users in plan.catalog.sequence_uses().items()
        ],
        "materialized_views": [{"name": str(v.ref), "reads": [str(r) for r in v.reads]} for v in plan.views],
        "cycles": [[str(r) for r in cycle] for cycle in plan.cycles],
        "fk_count": plan.fk_count,
        "levels": len(plan.batches),
    }


def history_json(entry: HistoryEntry) -> dict[str, Any]:
    o = entry.outcome
    return {
        "time": entry.time.isoformat(timespec="seconds"), "run_id": entry.run_id, "table": str(entry.table),
        "check": entry.check, "status": entry.status,
        "passed": o.passed if o else None, "severity": o.severity if o else None,
        "summary": o.summary if o else "", "metadata": dict(o.metadata) if o else {},
    }


# --- commands -------------------------------------------------------------------------------

def read_source_catalog(settings: Settings) -> Catalog:
    conn = Endpoint("source", settings.source_dsn).connect(read_only=True)
    try:
        return read_catalog(conn, settings.table_filter)
    finally:
        conn.close()


def saved_catalog(settings: Settings) -> Catalog:
    return Catalog.load(settings.state_path, settings.table_filter)


def current_catalog(settings: Settings, out: Printer) -> Catalog:
    """The source's catalog, saved as the state when it differs from the saved one: after a
    deploy, a refresh from the command line needs no `introspect` first."""
    saved = saved_catalog(settings)  # a state read with another table filter is still refused
    live = read_source_catalog(settings)
    if live.fingerprint() != saved.fingerprint():
        live.save(settings.state_path)
        changes = graph_drift(saved, live)
        if changes:
            out.note(f"production's graph changed since the saved catalog state ({'; '.join(listed(changes))}); "
                     f"saved the new state to {settings.state_path}. A running UI shows it after a reload "
                     "of the code location (the deploy sensor reloads it itself).")
    return live


def cmd_introspect(args: argparse.Namespace, settings: Settings, out: Printer) -> int:
    catalog = read_source_catalog(settings)
    catalog.save(settings.state_path)
    out.line(
        f"Saved the catalog of {Endpoint('source', settings.source_dsn)}: {len(catalog.tables)} tables, "
        f"{len(catalog.foreign_keys)} foreign keys, fingerprint {catalog.fingerprint()}, to {settings.state_path}"
    )
    return EXIT_OK


def cmd_plan(args: argparse.Namespace, settings: Settings, out: Printer) -> int:
    plan = make_plan(saved_catalog(settings) if args.from_state else read_source_catalog(settings))
    shaping = shaping_for(args.policy or settings.policy, plan.catalog, settings.mask_salt)
    if args.json:
        out.json(plan_json(plan, shaping))
    else:
        out.plan(plan, shaping)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace, settings: Settings, out: Printer) -> int:
    from . import demo  # the engine never imports the demo; only the CLI does

    if args.action == "down":
        stopped = demo.down(settings.demo_dir)
        out.line("Stopped the demo PostgreSQL." if stopped else "The demo PostgreSQL was not running.")
        return EXIT_OK
    if args.scale < 1:
        raise RefreshError(f"--scale must be 1 or more, got {args.scale}")
    started = time.perf_counter()
    info = demo.up(scale=args.scale, data_dir=settings.demo_dir, env_file=settings.env_file)
    out.line(f"Demo PostgreSQL 18 is up in {info.data_dir} ({time.perf_counter() - started:.1f} s).")
    out.line(f"  source (production): {Endpoint('source', info.source_dsn)}")
    out.line(f"  target (staging):    {Endpoint('target', info.target_dsn)}")
    out.line(f"  DSNs written to {settings.env_file} as MUVA_SOURCE_DSN and MUVA_TARGET_DSN.")
    return cmd_introspect(args, dataclasses.replace(settings, source_dsn=info.source_dsn, target_dsn=info.target_dsn), out)


def runner_for(settings: Settings, progress: Progress | None = None, catalog: Catalog | None = None) -> Runner:
    from .runs import Runner  # Dagster loads only for the commands that run jobs

    return Runner(catalog or saved_catalog(settings), settings, progress=progress)


def selection(runner: Runner, names: Sequence[str] | None) -> tuple[TableRef, ...] | None:
    return resolve_tables(runner.catalog, names) if names else None


def cmd_refresh(args: argparse.Namespace, settings: Settings, out: Printer) -> int:
    runner = runner_for(settings, None if args.json else PrintedProgress(out), current_catalog(settings, out))
    for dead in runner.close_dead_refreshes():
        out.note(f"run {dead.run_id} was still shown in progress, but its process is gone; marked it failed. "
                 f"{dead.reason}")
    run = runner.refresh(selection(runner, args.select), args.workers, args.policy, args.full)
    if args.json:
        out.json({
            "tables": [{"name": display_name(ref), "rows": s.rows, "bytes": s.bytes, "seconds": s.seconds,
                        "path": s.path, "path_reason": s.reason, "rows_copied": s.copied,
                        "rows_deleted": s.deleted_rows} for ref, s in run.tables.items()],
            "materialized_views": [{"name": display_name(ref), "rows": s.rows, "seconds": s.seconds}
                                   for ref, s in run.views.items()],
            "checks": [outcome_json(c, run.asset_name(c.table)) for c in run.checks],
            "seconds": round(run.seconds, 3),
            "timings": run.timings.to_json() if run.timings else None,
            "run_id": run.run_id,
            "success": run.success,
        })
    else:
        for ref, stats in run.views.items():
            out.view_done(ref, stats)
        if run.success:
            out.refresh_summary(run)
        out.checks(run.checks)
        if args.timings and run.timings:
            out.timings(run.timings)
    return finish(run, out)


def cmd_validate(args: argparse.Namespace, settings: Settings, out: Printer) -> int:
    runner = runner_for(settings)
    run = runner.validate(selection(runner, args.select), args.policy)
    if args.json:
        out.json([outcome_json(c, run.asset_name(c.table)) for c in run.checks])
    else:
        out.checks(run.checks)
    return finish(run, out)


def finish(run: JobOutcome, out: Printer) -> int:
    if run.failure is not None:
        out.error(run.failure.message)
    return run.exit_code


def cmd_history(args: argparse.Namespace, settings: Settings, out: Printer) -> int:
    if args.check and args.check not in list(CHECK_BY_NAME):
        raise SelectionError(f"unknown check {args.check!r}; the checks are {', '.join(list(CHECK_BY_NAME))}")
    runner = runner_for(settings)
    refs = resolve_tables(runner.catalog, [args.table]) if args.table else runner.catalog.refs
    entries = runner.history(refs, [args.check] if args.check else list(CHECK_BY_NAME), args.limit)
    if args.json:
        out.json([history_json(e) for e in entries])
    else:
        out.history(entries)
    return EXIT_OK


# --- argument parsing -----------------------------------------------------------------------

POLICY_HELP = "masking and subset policy: a TOML or YAML file, or demo / demo-tenant (default: MUVA_POLICY)"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="muva-refresh", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="start or stop the embedded demo databases")
    demo.add_argument("action", choices=["up", "down"])
    demo.add_argument("--scale", type=int, default=1, help="multiply the data tables (default 1)")
    demo.set_defaults(run=cmd_demo)

    intro = sub.add_parser("introspect", help="read the source catalog and save it as the state file")
    intro.set_defaults(run=cmd_introspect)

    plan = sub.add_parser("plan", help="print the FK levels, cycles and totals")
    plan.add_argument("--json", action="store_true")
    plan.add_argument("--from-state", action="store_true", help="use the saved state instead of the live source")
    plan.add_argument("--policy", default="", help=POLICY_HELP)
    plan.set_defaults(run=cmd_plan)

    refresh = sub.add_parser("refresh", help="refresh the target through the Dagster job")
    refresh.add_argument("--select", nargs="+", metavar="TABLE", help="table or schema.table names")
    refresh.add_argument("--workers", type=int, default=1, help="parallel copies per level (default 1: atomic)")
    refresh.add_argument("--policy", default="", help=POLICY_HELP)
    refresh.add_argument("--full", action="store_true",
                         help="copy every table whole (default: copy only what differs from the target)")
    refresh.add_argument("--json", action="store_true", help="the tables, checks and timings as JSON")
    refresh.add_argument("--timings", action="store_true",
                         help="where the time went: each phase and table, and Dagster's share")
    refresh.set_defaults(run=cmd_refresh)

    validate = sub.add_parser("validate", help="run every check now, copying nothing (recorded in Dagster)")
    validate.add_argument("--select", nargs="+", metavar="TABLE")
    validate.add_argument("--policy", default="", help=POLICY_HELP)
    validate.add_argument("--json", action="store_true")
    validate.set_defaults(run=cmd_validate)

    history = sub.add_parser("history", help="the recorded check evaluations, oldest first")
    history.add_argument("table", nargs="?", help="one table (default: all)")
    history.add_argument("--check", help="one check name (default: all)")
    history.add_argument("--limit", type=int, default=20, help="evaluations per table and check (default 20)")
    history.add_argument("--json", action="store_true")
    history.set_defaults(run=cmd_history)
    return p


def main(argv: Sequence[str] | None = None, out: Printer | None = None) -> int:
    out = out or Printer()
    args = parser().parse_args(argv)
    load_env_file()
    settings = Settings.load()
    ensure_dagster_home(settings, out.err)
    try:
        return args.run(args, settings, out)
    except RefreshError as exc:
        out.error(str(exc))
        return exc.exit_code


def command() -> int:
    """The muva-refresh command: main() in a process of its own, which lives for seconds."""
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        return main()
    finally:
        # Python's exit collects what it still holds several times while it tears modules down:
        # with Dagster loaded, some 200,000 objects and about 0.4 s. Frozen, the OS reclaims them.
        gc.freeze()


if __name__ == "__main__":
    sys.exit(command())
