"""Performance figures for muva_refresh at seed size and at scale, each beside established tools.

    python bench/benchmark.py [--shapes seed,muva,wide,oltp] [--repeat 3] [--large-repeat 1]
                              [--muva-scale 10] [--wide-mb 760] [--oltp-mb 735]

It brings up its own embedded server (in .muva/bench-pg) and builds, one after the other:
  seed   the MUVA demo at scale 1
  muva   the MUVA demo at --muva-scale (10 gives about 0.8 GB)
  wide   18 tables, one wide table (jsonb, an enum array, a GIN index) holding ~70% of --wide-mb
  oltp   18 tables in two schemas, an audit table (jsonb + GIN, a generated column, a trigger)
         holding ~2/3 of --oltp-mb, payments partitioned by month, a materialized view
(see bench/shapes.py). For each it measures, median of --repeat (seed) or --large-repeat:
  baselines  pgcopydb copy table-data; a psql binary COPY pipe per table; pg_dump -Fd -j2 +
             pg_restore -j2 (seed: its historical pg_dump -Fc | pg_restore in one transaction),
             each into a TRUNCATEd target (see bench/baselines.py)
  product    the engine's refresh, atomic and with workers=2, with the blocking checks only or all
             checks; `muva-refresh refresh` with a fresh SQLite DAGSTER_HOME; masked (the demo
             policy) on seed and muva; at seed size also the copy alone, one tenant, and the Dagster
             job on an in-memory instance;
             each in a process of its own, whose peak RSS is printed
  Dagster    the rows bench/dagster_paths.py returns, when that module is present
After every run the target is compared with the source, table by table (rows and an md5 sum of
the rows' text). Nothing is asserted: one table is printed for people to compare, then where each
refresh row's time went (muva_refresh.timings): in full for the default and the CLI, the phases'
totals for the others.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.baselines import BASELINES, empty_target, run_baseline, verify  # noqa: E402
from bench.dagster_paths import create_storage, write_cli_instance  # noqa: E402
from bench.product import product_env, run_in_child, run_variant  # noqa: E402
from bench.shapes import Shape, muva_shape, oltp_shape, wide_shape  # noqa: E402
from muva_refresh import demo  # noqa: E402
from muva_refresh.cli import Printer  # noqa: E402
from muva_refresh.timings import Timings  # noqa: E402

BENCH_DIR = REPO / ".muva" / "bench-pg"
SHAPES = ("seed", "muva", "wide", "oltp")
CLI_METHOD = "muva-refresh refresh (SQLite instance)"


@dataclass(frozen=True)
class ProductMethod:
    name: str
    variant: str  # see bench/product.py
    workers: int = 1
    exact_copy: bool = True  # False when the run masks or subsets: staging differs from production by design


SEED_BASELINES = ("pg_dump -Fc | pg_restore, 1 txn",)
MASKED = "engine, all checks, masked (demo policy)"
SCALED_BASELINES = ("pgcopydb copy table-data, 2 jobs", "psql COPY binary pipe, per table",
                    "pg_dump -Fd -j2 + pg_restore -j2")
SEED_PRODUCT = (
    ProductMethod("engine, copy only", "copy"),
    ProductMethod("engine, all checks", "checks"),
    ProductMethod(MASKED, "masked", exact_copy=False),
    ProductMethod("engine, all checks, one tenant of three", "one-tenant", exact_copy=False),
    ProductMethod("engine workers=2, copy only", "copy", 2),
    ProductMethod("Dagster job, in-memory instance", "dagster-in-memory"),
)
SCALED_PRODUCT = (
    ProductMethod("engine, copy only", "copy"),
    ProductMethod("engine, copy + blocking checks", "blocking"),
    ProductMethod("engine, all checks", "checks"),
    ProductMethod("engine workers=2, copy + blocking checks", "blocking", 2),
)
MUVA_PRODUCT = SCALED_PRODUCT + (ProductMethod(MASKED, "masked", exact_copy=False),)  # the demo policy fits MUVA only


@dataclass
class Row:
    method: str
    shape: Shape
    seconds: float  # median of the repeats
    peak_rss_mb: float | None = None  # product rows: the largest of the repeats
    baseline: bool = False
    problems: list[str] | None = field(default_factory=list)  # None: not compared (masked or subset)
    timings: Timings | None = None  # the median run's breakdown, for the refresh rows


def measure_baseline(name: str, shape: Shape, repeat: int) -> Row:
    times, problems = [], []
    for _ in range(repeat):
        empty_target(shape)
        started = time.perf_counter()
        run_baseline(BASELINES[name], shape)
        times.append(time.perf_counter() - started)
        problems += verify(shape)
    return Row(name, shape, statistics.median(times), baseline=True, problems=problems)


def measure_product(method: ProductMethod, shape: Shape, repeat: int) -> Row:
    env = product_env(shape.source_dsn, shape.target_dsn, shape.state, shape.schemas)
    runs, problems = [], []
    for _ in range(repeat):
        runs.append(run_variant(method.variant, method.workers, env))
        if method.exact_copy:
            problems += verify(shape)
    middle = sorted(runs, key=lambda r: r.seconds)[len(runs) // 2]
    return Row(method.name, shape, statistics.median(r.seconds for r in runs), max(r.peak_rss_mb for r in runs),
               problems=problems if method.exact_copy else None, timings=middle.timings)


def measure_cli(shape: Shape, repeat: int) -> Row:
    """`muva-refresh refresh` as a user runs it: process start and the job, on the instance the CLI
    writes (SQLite), its storage created beforehand as in a DAGSTER_HOME that has run before."""
    cli = str(Path(sys.executable).parent / "muva-refresh")
    runs, problems = [], []
    for _ in range(repeat):
        root = Path(tempfile.mkdtemp(prefix="muva-bench-home-"))
        env = {**product_env(shape.source_dsn, shape.target_dsn, shape.state, shape.schemas),
               "DAGSTER_HOME": str(root / "home")}
        write_cli_instance(root / "home")
        create_storage(env, cwd=root)
        # Run in the scratch directory: the CLI reads `.env` from its working directory, and the repository's names the demo.
        runs.append(run_in_child([cli, "refresh", "--full", "--json"], env, cwd=root))
        shutil.rmtree(root, ignore_errors=True)
        problems += verify(shape)
    middle = sorted(runs, key=lambda r: r.wall_seconds)[len(runs) // 2]
    printed = json.loads(middle.output)["timings"]
    # The process's own start and exit around the Dagster run are Dagster's (and Python's) too.
    timings = Timings.from_json(printed).around(middle.wall_seconds) if printed else None
    return Row(CLI_METHOD, shape, statistics.median(r.wall_seconds for r in runs),
               max(r.peak_rss_mb for r in runs), problems=problems, timings=timings)


def dagster_path_rows(shape: Shape, repeat: int) -> list[Row]:
    """The rows of bench/dagster_paths.py (the CLI on dagster-postgres, the UI's Materialize all).

    Its `measure(shape, repeat)` gets the Shape (DSNs, saved catalog, size) and returns a list of
    (method, shape name, seconds) tuples, or (method, shape name, seconds, peak RSS MB). The
    target it leaves is compared with the source like every other row's.
    """
    if importlib.util.find_spec("bench.dagster_paths") is None:
        return []
    from bench import dagster_paths

    if not hasattr(dagster_paths, "measure"):
        print("  bench/dagster_paths.py has no measure(shape, repeat) yet: no Dagster-path rows", flush=True)
        return []
    measured = dagster_paths.measure(shape, repeat)
    problems = verify(shape) if measured else []
    return [Row(method, shape, seconds, rest[0] if rest else None, problems=problems)
            for method, _shape_name, seconds, *rest in measured]


def measure_shape(shape: Shape, repeat: int, baselines: tuple[str, ...],
                  product: tuple[ProductMethod, ...]) -> list[Row]:
    rows = [attempt(name, shape, True, lambda: measure_baseline(name, shape, repeat)) for name in baselines]
    rows += [attempt(m.name, shape, False, lambda: measure_product(m, shape, repeat)) for m in product]
    rows.append(attempt(CLI_METHOD, shape, False, lambda: measure_cli(shape, repeat)))
    return rows + [announced(row) for row in dagster_path_rows(shape, repeat)]


def attempt(method: str, shape: Shape, baseline: bool, measure: Callable[[], Row]) -> Row:
    """A figure that fails becomes a row saying why; the other figures of a long run still count."""
    try:
        return announced(measure())
    except Exception as error:  # noqa: BLE001 - any failure of a tool or of the product is reported alike
        return announced(Row(method, shape, math.nan, baseline=baseline, problems=[f"failed: {error}"]))


def announced(row: Row) -> Row:
    """A line per figure as it is measured: a run at scale takes a while."""
    print(f"  {row.shape.name}: {row.method}: {row.seconds:.1f} s", flush=True)
    return row


def build(name: str, args: argparse.Namespace) -> Shape:
    shape = {
        "seed": lambda: muva_shape("seed", 1, BENCH_DIR),
        "muva": lambda: muva_shape("muva", args.muva_scale, BENCH_DIR),
        "wide": lambda: wide_shape(args.wide_mb, BENCH_DIR),
        "oltp": lambda: oltp_shape(args.oltp_mb, BENCH_DIR),
    }[name]()
    print(f"built {shape.label} in {shape.build_seconds:.0f} s, {len(shape.tables)} tables", flush=True)
    return shape


# --- the table ---------------------------------------------------------------------------------

def fastest_baseline(rows: list[Row], shape: Shape) -> float:
    return min((r.seconds for r in rows if r.baseline and r.shape is shape and not math.isnan(r.seconds)),
               default=math.nan)


def verified(row: Row) -> str:
    if row.problems is None:
        return "n/a"
    return "yes" if not row.problems else "NO"


def print_table(rows: list[Row], repeats: dict[str, int]) -> None:
    medians = ", ".join(f"{name} {n}" for name, n in repeats.items())
    header = (f"{'method':<52} {'shape':<16} {'seconds':>8} {'MB/s':>7} {'vs fastest baseline':>20} "
              f"{'peak RSS MB':>12} {'verified':>9}")
    print(f"\nwall seconds are medians of the repeats ({medians})\n{header}\n{'-' * len(header)}")
    for row in rows:
        rss = f"{row.peak_rss_mb:.0f}" if row.peak_rss_mb is not None else ""
        ratio = row.seconds / fastest_baseline(rows, row.shape)
        print(f"{row.method:<52} {row.shape.label:<16} {row.seconds:>8.1f} {row.shape.megabytes / row.seconds:>7.1f} "
              f"{ratio:>19.2f}x {rss:>12} {verified(row):>9}")
    for row in rows:
        for problem in dict.fromkeys(row.problems or []):
            print(f"  {row.method} on {row.shape.name}: {problem}")


def shown_in_full(row: Row) -> bool:
    """The default (at seed size, the refresh with all checks) and the CLI."""
    return row.method in (CLI_METHOD, "engine, copy + blocking checks") or (
        row.shape.name == "seed" and row.method == "engine, all checks")


def print_breakdowns(rows: list[Row]) -> None:
    """Where each refresh row's time went: in full for the default and the CLI, the phases summed
    over the tables for the others."""
    for shape in {r.shape.name: r.shape for r in rows}.values():
        timed = [r for r in rows if r.shape is shape and r.timings is not None]
        full = [r for r in timed if shown_in_full(r)]
        for row in full:
            print(f"\n{shape.name}: {row.method}, {row.seconds:.1f} s", end="")
            Printer().timings(row.timings)
        for row in (r for r in timed if r not in full):
            totals = {}
            for phase in row.timings.rows():
                if not phase.beside:
                    totals[phase.phase] = totals.get(phase.phase, 0.0) + phase.seconds
            print(f"\n{shape.name}: {row.method}: " + ", ".join(
                f"{name} {seconds:.2f} s" for name, seconds in totals.items() if seconds >= 0.005))


def print_seed_notes(rows: list[Row]) -> None:
    """The seed-size goals the project set, from the seed rows."""
    seed = {r.method: r.seconds for r in rows if r.shape.name == "seed"}
    if not seed:
        return
    copy, checked = seed["engine, copy only"], seed["engine, all checks"]
    print(f"\nseed: checks add {(checked / copy - 1) * 100:.0f}% to the copy (goal: at most 30%)")
    print(f"seed: the masked refresh takes {seed[MASKED] / checked:.2f}x the unmasked one (goal: at most 1.3x)")
    print(f"seed: one tenant of three takes {seed['engine, all checks, one tenant of three'] / checked * 100:.0f}% "
          f"of the checked refresh's time")
    in_memory = seed["Dagster job, in-memory instance"]
    print(f"seed: Dagster orchestration of the one in-process step {in_memory - checked:.1f} s "
          f"(the job {in_memory:.1f} s on an in-memory instance)")
    for method, seconds in seed.items():
        if method == CLI_METHOD or method.startswith(("muva-refresh refresh", "Materialize all")):
            print(f"seed: {method}: {seconds / checked:.2f}x the engine with all checks, Dagster's share "
                  f"{seconds - checked:.1f} s (goals: at most 2.5x and 3 s)")
    for method, seconds in seed.items():
        if method.startswith("Materialize all") and method.endswith("launch to done"):
            print(f"seed: {method}: {seconds - seed[CLI_METHOD]:+.1f} s against the CLI (goal: at most +3 s)")


def print_scale_notes(rows: list[Row]) -> None:
    """The goals at scale, per shape: the default against the fastest tool, and what the checks add."""
    for shape in {r.shape.name: r.shape for r in rows if r.shape.name != "seed"}.values():
        seconds = {r.method: r.seconds for r in rows if r.shape is shape}
        copy, blocking, checked = (seconds.get(m) for m in (
            "engine, copy only", "engine, copy + blocking checks", "engine, all checks"))
        if None in (copy, blocking, checked):
            continue
        print(f"{shape.name}: the default (copy + blocking checks) takes {blocking / fastest_baseline(rows, shape):.2f}x "
              f"the fastest tool (goal: at most 0.9x); all checks add {(checked / copy - 1) * 100:.0f}% to the copy "
              f"alone and {(checked / blocking - 1) * 100:.0f}% to the default (goal: at most 30%)")
        if MASKED in seconds:
            print(f"{shape.name}: the masked refresh takes {seconds[MASKED] / checked:.2f}x the unmasked one "
                  "(goal: at most 1.3x)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated, of: " + ", ".join(SHAPES))
    p.add_argument("--repeat", type=int, default=3, help="runs per figure at seed size (default 3)")
    p.add_argument("--large-repeat", type=int, default=1, help="runs per figure for muva, wide and oltp (default 1)")
    p.add_argument("--muva-scale", type=int, default=10, help="demo scale of the muva shape (10: about 0.8 GB)")
    p.add_argument("--wide-mb", type=int, default=760, help="size of the wide shape's source in MB")
    p.add_argument("--oltp-mb", type=int, default=735, help="size of the oltp shape's source in MB (735: 1 million audit events)")
    args = p.parse_args()
    names = [n.strip() for n in args.shapes.split(",") if n.strip()]
    unknown = set(names) - set(SHAPES)
    if unknown:
        p.error(f"unknown shape(s) {', '.join(sorted(unknown))}; choose from {', '.join(SHAPES)}")

    rows: list[Row] = []
    repeats = {}
    for name in names:  # seed and muva share the demo's databases, so each is measured before the next is built
        shape = build(name, args)
        if name == "seed":
            repeats[name] = args.repeat
            rows += measure_shape(shape, args.repeat, SEED_BASELINES, SEED_PRODUCT)
        else:
            repeats[name] = args.large_repeat
            product = MUVA_PRODUCT if name == "muva" else SCALED_PRODUCT
            rows += measure_shape(shape, args.large_repeat, SCALED_BASELINES, product)
    print_table(rows, repeats)
    print_breakdowns(rows)
    print_seed_notes(rows)
    print_scale_notes(rows)
    demo.down(data_dir=BENCH_DIR)


if __name__ == "__main__":
    main()
