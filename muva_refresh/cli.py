"""muva-refresh: the command line. Thin: parse, call the library, print through one Printer.

Exit codes: 0 ok, 1 a refresh or a blocking check failed, 2 bad input or an unsafe target.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Mapping, Sequence

from .catalog import Catalog, TableFilter, TableRef, read_catalog, resolve_tables
from .copy import Endpoint
from .errors import RefreshError
from .graph import Plan, make_plan
from .settings import SOURCE_DSN_VAR, TARGET_DSN_VAR, default_dagster_home, load_env_file, state_path

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
# Raised inside a Dagster run, these still mean "bad input": the run touched nothing.
BAD_INPUT_ERRORS = {"ConfigError", "UnsafeTargetError", "SchemaDriftError", "SelectionError", "ConcurrentRefreshError"}


def display_name(ref: TableRef) -> str:
    return ref.name if ref.schema == "public" else str(ref)


@dataclass(frozen=True)
class TableResult:
    name: str
    rows: int
    bytes: int
    seconds: float
    format: str

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0


class Printer:
    """Everything the CLI says goes through here; tests pass a StringIO."""

    def __init__(self, out: IO[str] | None = None, err: IO[str] | None = None):
        self.out = out or sys.stdout
        self.err = err or sys.stderr

    def line(self, text: str = "") -> None:
        print(text, file=self.out)

    def error(self, text: str) -> None:
        print(f"error: {text}", file=self.err)

    def json(self, value: Any) -> None:
        print(json.dumps(value, indent=2, default=str), file=self.out)

    def plan(self, plan: Plan) -> None:
        for level, batch in enumerate(plan.batches):
            self.line(f"Level {level} ({len(batch)} tables)")
            for ref in batch:
                parents = plan.parents[ref]
                arrow = f" -> {', '.join(map(display_name, parents))}" if parents else ""
                self.line(f"  {display_name(ref)}{arrow}")
        self.line()
        if plan.cycles:
            for cycle in plan.cycles:
                self.line(f"Cycle (loads as one unit): {' <-> '.join(map(display_name, cycle))}")
        else:
            self.line("Cycles: none")
        self_refs = sorted({fk.child for fk in plan.catalog.foreign_keys if fk.self_reference})
        if self_refs:
            self.line(f"Self-references (ignored for levels): {', '.join(map(display_name, self_refs))}")
        external = plan.catalog.external_foreign_keys
        if external:
            self.line(f"FKs to tables outside the copied schemas (not copied): {len(external)}")
            for fk in external:
                self.line(f"  {fk}")
        self.line(
            f"Totals: {len(plan.catalog.tables)} tables, {plan.fk_count} foreign keys, "
            f"{len(plan.batches)} levels"
        )

    def table_done(self, result: TableResult) -> None:
        self.line(
            f"  {result.name:<44} {result.rows:>10,} rows {result.bytes / 1e6:>9.2f} MB "
            f"{result.seconds:>7.3f} s {result.mb_per_s:>8.1f} MB/s  {result.format}"
        )

    def checks(self, rows: Sequence[CheckRow]) -> None:
        if not rows:
            return
        names = list(dict.fromkeys(r.check for r in rows))
        by_table: dict[str, dict[str, CheckRow]] = {}
        for r in rows:
            by_table.setdefault(r.table, {})[r.check] = r
        width = max(len(t) for t in by_table) + 2
        self.line()
        self.line("table".ljust(width) + "".join(n.ljust(len(n) + 2) for n in names))
        for table, checks in by_table.items():
            cells = [self._mark(checks.get(n)).ljust(len(n) + 2) for n in names]
            self.line(table.ljust(width) + "".join(cells))
        problems = [r for r in rows if not r.passed]
        if problems:
            self.line()
        for r in problems:
            self.line(f"{'FAIL' if r.severity == 'ERROR' else 'WARN'} {r.check}: {r.summary}")
        failed = sum(1 for r in problems if r.severity == "ERROR")
        warned = len(problems) - failed
        self.line(f"\n{len(rows) - len(problems)} passed, {failed} failed, {warned} warned")

    @staticmethod
    def _mark(row: CheckRow | None) -> str:
        if row is None:
            return "-"
        if row.passed:
            return "ok"
        return "FAIL" if row.severity == "ERROR" else "warn"

    def history(self, entries: Sequence[Mapping[str, Any]]) -> None:
        if not entries:
            self.line("No check evaluations recorded yet; run `muva-refresh refresh` or `validate`.")
        for e in entries:
            verdict = e["status"] if e["passed"] is None else ("passed" if e["passed"] else f"failed ({e['severity']})")
            self.line(f"{e['time']}  run {e['run_id'][:8]}  {e['table']:<40} {e['check']:<15} {verdict:<16} {e['summary']}")

    def refresh_summary(self, results: Sequence[TableResult], seconds: float, run_id: str) -> None:
        rows = sum(r.rows for r in results)
        size = sum(r.bytes for r in results)
        self.line(
            f"Refreshed {len(results)} tables: {rows:,} rows, {size / 1e6:.1f} MB in {seconds:.1f} s "
            f"(Dagster run {run_id})"
        )


def plan_json(plan: Plan) -> dict[str, Any]:
    return {
        "tables": [
            {"name": str(ref), "level": plan.level[ref], "parents": [str(p) for p in plan.parents[ref]]}
            for batch in plan.batches for ref in batch
        ],
        "cycles": [[str(r) for r in cycle] for cycle in plan.cycles],
        "fk_count": plan.fk_count,
        "levels": len(plan.batches),
    }


# --- commands -------------------------------------------------------------------------------

def source_endpoint() -> Endpoint:
    return Endpoint("source", os.environ.get(SOURCE_DSN_VAR, ""))


def read_source_catalog() -> Catalog:
    conn = source_endpoint().connect(read_only=True)
    try:
        return read_catalog(conn, TableFilter.from_env())
    finally:
        conn.close()


def cmd_introspect(args: argparse.Namespace, out: Printer) -> int:
    catalog = read_source_catalog()
    path = state_path()
    catalog.save(path)
    out.line(
        f"Saved the catalog of {source_endpoint()}: {len(catalog.tables)} tables, "
        f"{len(catalog.foreign_keys)} foreign keys, fingerprint {catalog.fingerprint()}, to {path}"
    )
    return EXIT_OK


def cmd_plan(args: argparse.Namespace, out: Printer) -> int:
    catalog = Catalog.load(state_path()) if args.from_state else read_source_catalog()
    plan = make_plan(catalog)
    if args.json:
        out.json(plan_json(plan))
    else:
        out.plan(plan)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace, out: Printer) -> int:
    from . import demo  # the engine never imports the demo; only the CLI does

    if args.action == "down":
        stopped = demo.down()
        out.line("Stopped the demo PostgreSQL." if stopped else "The demo PostgreSQL was not running.")
        return EXIT_OK
    if args.scale < 1:
        raise RefreshError(f"--scale must be 1 or more, got {args.scale}")
    started = time.perf_counter()
    info = demo.up(scale=args.scale)
    load_env_file()
    os.environ[SOURCE_DSN_VAR], os.environ[TARGET_DSN_VAR] = info.source_dsn, info.target_dsn
    out.line(f"Demo PostgreSQL 18 is up in {info.data_dir} ({time.perf_counter() - started:.1f} s).")
    out.line(f"  source (production): {Endpoint('source', info.source_dsn)}")
    out.line(f"  target (staging):    {Endpoint('target', info.target_dsn)}")
    out.line("  DSNs written to .env as MUVA_SOURCE_DSN and MUVA_TARGET_DSN.")
    return cmd_introspect(args, out)


@dataclass(frozen=True)
class CheckRow:
    """One check evaluation, as the CLI prints it and as `--json` emits it."""

    asset: str
    table: str
    check: str
    passed: bool
    severity: str
    summary: str
    metadata: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {"asset": self.asset, "check": self.check, "passed": self.passed,
                "severity": self.severity, "metadata": self.metadata}


def plain_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Dagster metadata values as JSON-ready Python values; tables become lists of rows."""
    plain = {}
    for key, value in metadata.items():
        records = getattr(value, "records", None)
        plain[key] = [r.data for r in records] if records is not None else getattr(value, "value", value)
    return plain


def check_row(evaluation: Any, table_of: Mapping[Any, TableRef]) -> CheckRow:
    return CheckRow(
        asset=evaluation.asset_key.to_user_string(),
        table=display_name(table_of[evaluation.asset_key]),
        check=evaluation.check_name,
        passed=evaluation.passed,
        severity=evaluation.severity.value,
        summary=evaluation.description or "",
        metadata=plain_metadata(evaluation.metadata),
    )


@dataclass
class JobRun:
    result: Any
    seconds: float
    table_of: Mapping[Any, TableRef]

    @property
    def checks(self) -> list[CheckRow]:
        return [check_row(e, self.table_of) for e in self.result.get_asset_check_evaluations()]

    @property
    def tables(self) -> list[TableResult]:
        found = []
        for event in self.result.get_asset_materialization_events():
            mat = event.step_materialization_data.materialization
            meta = mat.metadata
            found.append(TableResult(display_name(self.table_of[mat.asset_key]), meta["rows"].value,
                                     meta["bytes"].value, meta["seconds"].value, meta["copy_format"].value))
        return found


def run_job(job_name: str, select: Sequence[str] | None, run_config: Mapping[str, Any]) -> JobRun:
    """Execute a job in-process on the DAGSTER_HOME instance, so the UI shows the run."""
    import dagster as dg

    from .assets import TableTranslator, keys_by_table
    from .definitions import VALIDATE_JOB, build_definitions

    catalog = Catalog.load(state_path())
    selected = resolve_tables(catalog, select) if select else None
    key_of = keys_by_table(catalog, TableTranslator())
    keys = [key_of[r] for r in selected] if selected else None
    if job_name != VALIDATE_JOB:
        make_plan(catalog, selected)  # refuse a bad selection before Dagster starts
    defs = build_definitions(catalog, validate_only=keys if job_name == VALIDATE_JOB else None)
    started = time.perf_counter()
    with dg.DagsterInstance.get() as instance:
        result = defs.resolve_job_def(job_name).execute_in_process(
            instance=instance,
            asset_selection=keys if job_name != VALIDATE_JOB else None,
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}, **run_config},
            raise_on_error=False,
        )
    return JobRun(result, time.perf_counter() - started, {k: r for r, k in key_of.items()})


def job_exit(run: JobRun, out: Printer) -> int:
    if not run.result.success:
        cls_name, message = run_failure(run.result)
        out.error(message)
        return EXIT_BAD_INPUT if cls_name in BAD_INPUT_ERRORS else EXIT_FAILED
    return EXIT_FAILED if any(not c.passed and c.severity == "ERROR" for c in run.checks) else EXIT_OK


def cmd_refresh(args: argparse.Namespace, out: Printer) -> int:
    from .definitions import REFRESH_JOB

    run = run_job(REFRESH_JOB, args.select, {"ops": {"refresh_tables": {"config": {"workers": args.workers}}}})
    if args.json:
        out.json({
            "tables": [{"name": r.name, "rows": r.rows, "bytes": r.bytes, "seconds": r.seconds} for r in run.tables],
            "checks": [c.as_json() for c in run.checks],
            "seconds": round(run.seconds, 3),
            "run_id": run.result.run_id,
            "success": run.result.success,
        })
    else:
        for table in run.tables:
            out.table_done(table)
        if run.result.success:
            out.refresh_summary(run.tables, run.seconds, run.result.run_id)
        out.checks(run.checks)
    return job_exit(run, out)


def cmd_validate(args: argparse.Namespace, out: Printer) -> int:
    from .definitions import VALIDATE_JOB

    run = run_job(VALIDATE_JOB, args.select, {})
    if args.json:
        out.json([c.as_json() for c in run.checks])
    else:
        out.checks(run.checks)
    return job_exit(run, out)


def cmd_history(args: argparse.Namespace, out: Printer) -> int:
    import dagster as dg

    from .assets import TableTranslator, keys_by_table
    from .checks import CHECK_BY_NAME

    catalog = Catalog.load(state_path())
    refs = resolve_tables(catalog, [args.table]) if args.table else catalog.refs
    if args.check and args.check not in CHECK_BY_NAME:
        raise RefreshError(f"unknown check {args.check!r}; the checks are {', '.join(CHECK_BY_NAME)}")
    names = [args.check] if args.check else list(CHECK_BY_NAME)
    key_of = keys_by_table(catalog, TableTranslator())
    entries = []
    with dg.DagsterInstance.get() as instance:
        for ref in refs:
            for name in names:
                check_key = dg.AssetCheckKey(key_of[ref], name)
                for record in instance.event_log_storage.get_asset_check_execution_history(check_key, limit=args.limit):
                    entries.append(history_entry(record, ref))
    entries.sort(key=lambda e: e["time"])
    if args.json:
        out.json(entries)
    else:
        out.history(entries)
    return EXIT_OK


def history_entry(record: Any, ref: TableRef) -> dict[str, Any]:
    evaluation = None
    if record.event is not None and record.event.dagster_event is not None:
        data = record.event.dagster_event.event_specific_data
        evaluation = data if hasattr(data, "passed") else None
    return {
        "time": datetime.fromtimestamp(record.create_timestamp, timezone.utc).isoformat(timespec="seconds"),
        "run_id": record.run_id,
        "table": str(ref),
        "check": record.key.name,
        "status": record.status.value,
        "passed": evaluation.passed if evaluation else None,
        "severity": evaluation.severity.value if evaluation else None,
        "summary": (evaluation.description or "") if evaluation else "",
        "metadata": plain_metadata(evaluation.metadata) if evaluation else {},
    }


def run_failure(result: Any) -> tuple[str, str]:
    """The innermost error of the first failed step: the project's own error, not Dagster's wrapper."""
    for event in result.all_events:
        if event.is_step_failure:
            error = event.step_failure_data.error
            while error.cause is not None:
                error = error.cause
            return error.cls_name or "", error.message.strip()
    return "", "the Dagster run failed; see its logs in the UI"


# --- argument parsing -----------------------------------------------------------------------

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
    plan.set_defaults(run=cmd_plan)

    refresh = sub.add_parser("refresh", help="refresh the target through the Dagster job")
    refresh.add_argument("--select", nargs="+", metavar="TABLE", help="table or schema.table names")
    refresh.add_argument("--workers", type=int, default=1, help="parallel copies per level (default 1: atomic)")
    refresh.add_argument("--json", action="store_true")
    refresh.set_defaults(run=cmd_refresh)

    validate = sub.add_parser("validate", help="run every check now, copying nothing (recorded in Dagster)")
    validate.add_argument("--select", nargs="+", metavar="TABLE")
    validate.add_argument("--json", action="store_true")
    validate.set_defaults(run=cmd_validate)

    history = sub.add_parser("history", help="the recorded check evaluations, oldest first")
    history.add_argument("table", nargs="?", help="one table (default: all)")
    history.add_argument("--check", help="one check name (default: all)")
    history.add_argument("--limit", type=int, default=20, help="evaluations per table and check (default 20)")
    history.add_argument("--json", action="store_true")
    history.set_defaults(run=cmd_history)
    return p


def ensure_dagster_home() -> Path:
    """DAGSTER_HOME, defaulting to the one `make ui` uses; a missing dagster.yaml means SQLite storage."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(default_dagster_home())))
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(
            "# Runs and check history in SQLite here; for PostgreSQL see the repository's dagster.yaml.\n"
            "# One refresh at a time: the table assets share one pool, limited to one run.\n"
            "concurrency:\n  pools:\n    default_limit: 1\n    granularity: run\n"
        )
    return home


def main(argv: Sequence[str] | None = None, out: Printer | None = None) -> int:
    out = out or Printer()
    args = parser().parse_args(argv)
    load_env_file()
    ensure_dagster_home()
    try:
        return args.run(args, out)
    except RefreshError as exc:
        out.error(str(exc))
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
