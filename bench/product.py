"""One refresh by the product, in a process of its own so that its peak RSS is its own.

    python -m bench.product VARIANT [--workers N]

Reads MUVA_SOURCE_DSN, MUVA_TARGET_DSN and MUVA_STATE_PATH from the environment, refreshes, and
prints one JSON line: the refresh's wall seconds (imports and process start excluded), rows, and
the engine's timing breakdown (muva_refresh.timings).
`run_in_child` starts it (or any command) and returns the wall time and the child's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from muva_refresh.catalog import Catalog  # noqa: E402
from muva_refresh.checks import IN_LOAD, CheckOutcome  # noqa: E402
from muva_refresh.endpoint import Endpoint  # noqa: E402
from muva_refresh.refresh import Committed, Finished, RefreshOptions, RefreshReport, refresh_events  # noqa: E402
from muva_refresh.settings import SCHEMAS_VAR, SOURCE_DSN_VAR, STATE_PATH_VAR, TARGET_DSN_VAR  # noqa: E402
from muva_refresh.shaping import Shaping, shaping_for  # noqa: E402
from muva_refresh.timings import Timings  # noqa: E402


@dataclass(frozen=True)
class Context:
    source: Endpoint
    target: Endpoint
    state: Path
    workers: int
    timed: list[Timings] = field(default_factory=list)  # each refresh's breakdown, as it finished

    def refresh(self, shaping: Shaping | None = None, check_phases: tuple[str, ...] | None = None,
                full: bool = True) -> RefreshReport:
        """The engine's refresh, every table whole unless `full` is False (as the tools copy it);
        raises when a check fails (a WARN aside)."""
        options = RefreshOptions(workers=self.workers, shaping=shaping, full=full,
                                 table_filter=Catalog.load(self.state).table_filter)
        if check_phases is not None:
            options = replace(options, check_phases=check_phases)
        report, failed = None, []
        for event in refresh_events(self.source, self.target, options):
            if isinstance(event, Committed):
                report = event.report
            elif isinstance(event, CheckOutcome) and event.fails_run:
                failed.append(event.summary)
            elif isinstance(event, Finished):
                self.timed.append(event.timings)
        if failed:
            raise RuntimeError("; ".join(failed))
        return report


def copy_only(ctx: Context) -> int:
    return ctx.refresh(check_phases=()).rows


def blocking_checks(ctx: Context) -> int:
    """The copy with the checks that gate the commit (row counts, orphans, masking); nothing after."""
    return ctx.refresh(check_phases=(IN_LOAD,)).rows


def all_checks(ctx: Context, shaping: Shaping | None = None) -> int:
    """The copy, the blocking checks inside the load, the others after COMMIT."""
    return ctx.refresh(shaping).rows


def delta(ctx: Context) -> int:
    """The default refresh: each table compared, only the difference copied; every check."""
    return ctx.refresh(full=False).rows


def masked(ctx: Context) -> int:
    return all_checks(ctx, shaping_for("demo", Catalog.load(ctx.state), "a benchmark salt"))


def one_tenant(ctx: Context) -> int:
    return all_checks(ctx, shaping_for("demo-tenant", Catalog.load(ctx.state), None))


def dagster_in_memory(ctx: Context) -> int:
    """The refresh_staging job in-process on an ephemeral instance, all tables and checks."""
    import dagster as dg

    from muva_refresh.definitions import REFRESH_JOB, build_definitions

    job = build_definitions(Catalog.load(ctx.state)).resolve_job_def(REFRESH_JOB)
    result = job.execute_in_process(
        instance=dg.DagsterInstance.ephemeral(),
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
    )
    if not result.success:
        raise RuntimeError("the refresh_staging job failed")
    return 0  # the job's rows are in its events; the benchmark needs only its time


VARIANTS: dict[str, Callable[[Context], int]] = {
    "copy": copy_only,
    "blocking": blocking_checks,
    "checks": all_checks,
    "delta": delta,
    "masked": masked,
    "one-tenant": one_tenant,
    "dagster-in-memory": dagster_in_memory,
}


@dataclass(frozen=True)
class ChildRun:
    wall_seconds: float  # as the parent saw it: process start and imports included
    peak_rss_mb: float
    output: str


def run_in_child(args: list[str], env: dict[str, str], cwd: Path = REPO) -> ChildRun:
    """Run `args`, wait for it with wait4 so the resource usage is that child's (and its children's)."""
    started = time.perf_counter()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, text=True, cwd=cwd)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, so Popen must not wait again
    if proc.returncode != 0:
        raise RuntimeError(f"{Path(args[0]).name} {' '.join(args[1:3])} exited with {proc.returncode}")
    return ChildRun(wall, usage.ru_maxrss / 1024, output)  # ru_maxrss is in KiB on Linux


def product_env(source_dsn: str, target_dsn: str, state: Path, schemas: tuple[str, ...] = ("public",)) -> dict[str, str]:
    """The environment of a product run: the shape's DSNs, catalog and schemas, none of the
    developer's own MUVA_* settings (a policy or schema list would change what is copied)."""
    own = {k: v for k, v in os.environ.items() if not k.startswith("MUVA_") and k != "DAGSTER_HOME"}
    return {**own, SOURCE_DSN_VAR: source_dsn, TARGET_DSN_VAR: target_dsn, STATE_PATH_VAR: str(state),
            SCHEMAS_VAR: ",".join(schemas)}


@dataclass(frozen=True)
class VariantRun:
    seconds: float  # the refresh itself, imports and process start excluded
    rows: int
    peak_rss_mb: float
    timings: Timings | None  # None for the Dagster job, whose engine reports to Dagster


def run_variant(variant: str, workers: int, env: dict[str, str]) -> VariantRun:
    child = run_in_child([sys.executable, "-m", "bench.product", variant, "--workers", str(workers)], env)
    printed = json.loads(child.output.strip().splitlines()[-1])
    timings = Timings.from_json(printed["timings"]) if printed.get("timings") else None
    return VariantRun(printed["seconds"], printed["rows"], child.peak_rss_mb, timings)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("variant", choices=sorted(VARIANTS))
    p.add_argument("--workers", type=int, default=1)
    args = p.parse_args()
    env = os.environ
    ctx = Context(Endpoint("source", env[SOURCE_DSN_VAR]), Endpoint("target", env[TARGET_DSN_VAR]),
                  Path(env[STATE_PATH_VAR]), args.workers)
    started = time.perf_counter()
    rows = VARIANTS[args.variant](ctx)
    seconds = time.perf_counter() - started
    timings = ctx.timed[-1].to_json() if ctx.timed else None
    print(json.dumps({"seconds": seconds, "rows": rows, "timings": timings}))


if __name__ == "__main__":
    main()
