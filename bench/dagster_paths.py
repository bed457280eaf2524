"""Wall times of the paths people take through Dagster to refresh staging, each on a persistent
instance: a fresh DAGSTER_HOME per measurement, in a temporary directory removed afterwards.

    python bench/dagster_paths.py

  cli_sqlite                   `muva-refresh refresh` on the instance the CLI writes into a new DAGSTER_HOME
  cli_postgres                 the same on the repository's dagster.yaml, storage in a fresh database
                               on the machine's PostgreSQL (127.0.0.1:5432, trust auth)
  ui_materialize_all           `dagster dev` on the CLI's instance, then the launch "Materialize all" sends
  ui_materialize_all_postgres  the same on the repository's dagster.yaml

Each takes the saved catalog state and the complete environment for the processes it starts (the
two DSNs set, no other MUVA_* configuration), and runs them in the temporary directory: the CLI and
Dagster both read `.env` from the working directory, and the repo's own `.env` names another demo.
Each instance's storage (SQLite files, or dagster-postgres' tables) is created before the clock
starts, as in a DAGSTER_HOME that has run before: the CLI paths create it in a process of their
own, the UI paths while `dagster dev` starts.

main() brings up its own demo pair (.muva/bench-dagster-pg) and prints each path next to the engine
alone (the copy with every check, no Dagster) measured right before it, the difference as the
path's Dagster share, and where the UI's run spent its time. Nothing is asserted but that each
refresh succeeded.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from statistics import median
from typing import Any, Iterator, Mapping

import psycopg
from psycopg import sql

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from muva_refresh import demo  # noqa: E402
from muva_refresh.catalog import read_catalog  # noqa: E402
from muva_refresh.checks import CheckOutcome  # noqa: E402
from muva_refresh.demo import dagster_dev  # noqa: E402  (the UI tests' `dagster dev`, reused)
from muva_refresh.endpoint import Endpoint  # noqa: E402
from muva_refresh.instance import ensure_dagster_home  # noqa: E402
from muva_refresh.refresh import RefreshOptions, refresh_events  # noqa: E402
from muva_refresh.settings import (  # noqa: E402
    DAGSTER_HOME_VAR,
    SOURCE_DSN_VAR,
    STATE_PATH_VAR,
    TARGET_DSN_VAR,
    Settings,
    TableFilter,  # noqa: E402
)

BIN = Path(sys.executable).parent  # the venv running this also holds muva-refresh and dagster
BENCH_DIR = REPO / ".muva" / "bench-dagster-pg"
LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"  # the machine's PostgreSQL 15, trust auth
RUN_TIMEOUT_SECONDS = 300
POLL_SECONDS = 0.25  # the click-to-done figure is late by at most this much

# The developer's own configuration, kept from the child processes so every path copies the same.
DEVELOPER_SETTINGS = ("MUVA_SCHEMAS", "MUVA_INCLUDE", "MUVA_EXCLUDE", "MUVA_POLICY", "MUVA_MASK_SALT",
                      "MUVA_RLS_EXPECTED", "MUVA_DEPLOY_MARKER_SQL", "MUVA_STATE_PATH", "MUVA_DEMO_DIR",
                      DAGSTER_HOME_VAR)


# --- instances -------------------------------------------------------------------------------

@contextmanager
def scratch_dir() -> Iterator[Path]:
    # Short: dagster dev keeps sockets under TMPDIR, which lives in here.
    root = Path(tempfile.mkdtemp(prefix="muva-dp-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def instance_env(env: Mapping[str, str], home: Path, state_path: Path) -> dict[str, str]:
    return {**env, DAGSTER_HOME_VAR: str(home), STATE_PATH_VAR: str(state_path)}


def write_cli_instance(home: Path) -> None:
    """The dagster.yaml the CLI writes into a new DAGSTER_HOME, written by the CLI's own function."""
    before = os.environ.get(DAGSTER_HOME_VAR)
    ensure_dagster_home(Settings.load(env={DAGSTER_HOME_VAR: str(home)}, cwd=home))
    if before is None:  # it also defaults DAGSTER_HOME for its own process; this one keeps none
        os.environ.pop(DAGSTER_HOME_VAR, None)


def copy_repo_instance(home: Path) -> None:
    """The repository's dagster.yaml as it is now, so a change to it is what gets measured."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")


@contextmanager
def fresh_postgres_storage(admin_dsn: str = LOCAL_POSTGRES) -> Iterator[dict[str, str]]:
    """A new, uniquely named database for Dagster's storage, as the DAGSTER_PG_* variables the
    repository's dagster.yaml reads; dropped afterwards."""
    name = f"muva_bench_dagster_{os.getpid()}_{secrets.token_hex(4)}"
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    info = psycopg.conninfo.conninfo_to_dict(admin_dsn)
    try:
        yield {
            "DAGSTER_PG_HOST": str(info.get("host") or "127.0.0.1"),
            "DAGSTER_PG_PORT": str(info.get("port") or 5432),
            "DAGSTER_PG_USER": str(info.get("user") or "postgres"),
            "DAGSTER_PG_PASSWORD": str(info.get("password") or ""),
            "DAGSTER_PG_DB": name,
        }
    finally:
        # FORCE: a killed webserver or daemon may leave a connection behind for a moment.
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


# --- the command line ------------------------------------------------------------------------

def run_cli_refresh(env: Mapping[str, str], cwd: Path) -> float:
    """Wall seconds of `muva-refresh refresh` in a new process, from its start to its exit."""
    started = time.perf_counter()
    done = subprocess.run([str(BIN / "muva-refresh"), "refresh", "--full"], env=dict(env), cwd=cwd,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"muva-refresh refresh exited with {done.returncode}:\n{done.stderr[-2000:]}")
    return seconds


def create_storage(env: Mapping[str, str], cwd: Path) -> None:
    """Have Dagster create the instance's storage, untimed, as a user's existing DAGSTER_HOME has it."""
    subprocess.run([sys.executable, "-c", "import dagster; dagster.DagsterInstance.get().dispose()"],
                   env=dict(env), cwd=cwd, check=True, capture_output=True)


def cli_sqlite(state_path: Path, env: Mapping[str, str]) -> float:
    """`muva-refresh refresh` on the instance the CLI writes (SQLite storage), its storage created."""
    with scratch_dir() as root:
        home = root / "home"
        write_cli_instance(home)
        create_storage(instance_env(env, home, state_path), cwd=root)
        return run_cli_refresh(instance_env(env, home, state_path), cwd=root)


def cli_postgres(state_path: Path, env: Mapping[str, str], admin_dsn: str = LOCAL_POSTGRES) -> float:
    """`muva-refresh refresh` on the repository's dagster.yaml, storage in a fresh database, created."""
    with scratch_dir() as root, fresh_postgres_storage(admin_dsn) as storage:
        home = root / "home"
        copy_repo_instance(home)
        create_storage({**instance_env(env, home, state_path), **storage}, cwd=root)
        return run_cli_refresh({**instance_env(env, home, state_path), **storage}, cwd=root)


# --- the UI ----------------------------------------------------------------------------------

# What the asset graph's "Materialize all" loads before it launches (LaunchAssetLoaderQuery, the
# fields it decides with).
ASSET_NODES_QUERY = """
{
  assetNodes {
    assetKey { path }
    jobNames
    isExecutable
    isObservable
    repository { name location { name } }
    assetChecksOrError { __typename ... on AssetChecks { checks { name jobNames } } }
  }
}
"""

# The UI's own LaunchPipelineExecution mutation.
LAUNCH_MUTATION = """
mutation LaunchPipelineExecution($executionParams: ExecutionParams!) {
  launchPipelineExecution(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { id runId pipelineName } }
    ... on PipelineNotFoundError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on PythonError { message }
  }
}
"""

RUN_QUERY = """
query Run($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { runId status creationTime startTime endTime }
    ... on PythonError { message }
  }
}
"""

RUN_EVENTS_QUERY = """
query RunEvents($runId: ID!, $afterCursor: String) {
  logsForRun(runId: $runId, afterCursor: $afterCursor, limit: 1000) {
    __typename
    ... on EventConnection { events { __typename ... on MessageEvent { timestamp } } cursor hasMore }
    ... on PythonError { message }
  }
}
"""

# The run's milestones, in order, each with the phase that ends at it (its first event of that type).
# This Dagster emits no RunDequeuedEvent: the daemon's run queue goes straight to RunStarting.
MILESTONES = (
    ("RunEnqueuedEvent", "created and enqueued, its planned events written"),
    ("RunStartingEvent", "queued, until the daemon's run queue launched it"),
    ("RunStartEvent", "starting: a run worker process loads the code"),
    ("ExecutionStepStartEvent", "run start to the step's start"),
    ("MaterializationEvent", "step start to the first materialization: the load"),
    ("AssetCheckEvaluationEvent", "the materializations, then the checks after COMMIT"),
    ("ExecutionStepSuccessEvent", "the check results, stored one by one"),
    ("RunSuccessEvent", "the step's end to the run's end"),
)


def materialize_all_params(dev: dagster_dev.DagsterDev) -> dict[str, Any]:
    """The executionParams "Materialize all" sends from the global asset graph: every executable
    asset, the first job all of them share (no preferred job there), each asset's checks in that job,
    and the UI's from_ui tag."""
    nodes = [n for n in dev.graphql(ASSET_NODES_QUERY)["assetNodes"] if n["isExecutable"] and not n["isObservable"]]
    if not nodes:
        raise RuntimeError("the code location has no executable assets")
    shared = [job for job in nodes[0]["jobNames"] if all(job in n["jobNames"] for n in nodes)]
    if not shared:
        raise RuntimeError("the assets share no job, so the UI could not launch them in one run")
    job = shared[0]
    checks = [
        {"assetKey": {"path": n["assetKey"]["path"]}, "name": c["name"]}
        for n in nodes if n["assetChecksOrError"]["__typename"] == "AssetChecks"
        for c in n["assetChecksOrError"]["checks"] if not c["jobNames"] or job in c["jobNames"]
    ]
    repository = nodes[0]["repository"]
    return {
        "mode": "default",
        "executionMetadata": {"tags": [{"key": "dagster/from_ui", "value": "true"}]},
        # Every table whole, as the tools copy it; the UI's default run compares and copies the difference.
        "runConfigData": json.dumps({"ops": {"refresh_tables": {"config": {"full": True}}}}),
        "selector": {
            "repositoryLocationName": repository["location"]["name"],
            "repositoryName": repository["name"],
            "pipelineName": job,
            "assetSelection": [{"path": n["assetKey"]["path"]} for n in nodes],
            "assetCheckSelection": checks,
        },
    }


def launch(dev: dagster_dev.DagsterDev, params: Mapping[str, Any]) -> str:
    result = dev.graphql(LAUNCH_MUTATION, {"executionParams": params}, timeout=120)["launchPipelineExecution"]
    if result["__typename"] != "LaunchRunSuccess":
        raise RuntimeError(f"launch failed: {result}")
    return result["run"]["runId"]


def run_record(dev: dagster_dev.DagsterDev, run_id: str) -> dict[str, Any]:
    run = dev.graphql(RUN_QUERY, {"runId": run_id})["runOrError"]
    if run["__typename"] != "Run":
        raise RuntimeError(f"run {run_id}: {run}")
    return run


def wait_until_done(dev: dagster_dev.DagsterDev, run_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        run = run_record(dev, run_id)
        if run["status"] in dagster_dev.TERMINAL_RUN_STATUSES:
            return run
        time.sleep(POLL_SECONDS)
    raise TimeoutError(f"run {run_id} still {run['status']} after {RUN_TIMEOUT_SECONDS} s")


def run_events(dev: dagster_dev.DagsterDev, run_id: str) -> list[tuple[str, float]]:
    """Every event of the run as (type, epoch seconds), oldest first."""
    events: list[tuple[str, float]] = []
    cursor = None
    while True:
        page = dev.graphql(RUN_EVENTS_QUERY, {"runId": run_id, "afterCursor": cursor})["logsForRun"]
        if page["__typename"] != "EventConnection":
            raise RuntimeError(f"events of run {run_id}: {page}")
        events += [(e["__typename"], int(e["timestamp"]) / 1000) for e in page["events"] if e.get("timestamp")]
        cursor = page["cursor"]
        if not page["hasMore"]:
            return events


def run_phases(run: Mapping[str, Any], events: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """Seconds between the run's milestones, from the run record's creation; a milestone the run
    lacks is skipped, so the phases still add up."""
    first = {}
    for kind, at in events:
        first.setdefault(kind, at)
    phases, previous = [], run["creationTime"]
    for kind, phase in MILESTONES:
        if kind in first:
            phases.append((phase, first[kind] - previous))
            previous = first[kind]
    return phases


def materialize_all_in_dagster_dev(root: Path, env: Mapping[str, str]) -> dict[str, Any]:
    """Start `dagster dev` in `root` (as the UI tests do), launch what "Materialize all" launches,
    time it, and stop every process it started, even on failure."""
    (root / "tmp").mkdir(exist_ok=True)
    # dagster dev's temp files go with root: the SIGKILL that stops it skips its own cleanup.
    dev = dagster_dev.start_dagster_dev(root, {**env, "TMPDIR": str(root / "tmp")})
    try:
        params = materialize_all_params(dev)
        sent_at, sent = time.time(), time.perf_counter()  # epoch too, to line up with the run's timestamps
        run_id = launch(dev, params)
        launched = time.perf_counter()
        run = wait_until_done(dev, run_id)
        seen_at, click_to_done = time.time(), time.perf_counter() - sent
        if run["status"] != "SUCCESS":
            raise RuntimeError(f"run {run_id} ended {run['status']}:\n{dev.run_errors(run_id)}")
        events = run_events(dev, run_id)
        return {
            "click_to_done": click_to_done,
            "run_start_to_end": run["endTime"] - run["startTime"],
            "status": run["status"],
            "run_id": run_id,
            "job": params["selector"]["pipelineName"],
            "assets": len(params["selector"]["assetSelection"]),
            "checks": len(params["selector"]["assetCheckSelection"]),
            "launch_mutation": launched - sent,
            "created_to_end": run["endTime"] - run["creationTime"],
            "events": len(events),
            "events_by_type": dict(Counter(kind for kind, _ in events).most_common()),
            "phases": [("the launch mutation, until the run record exists", run["creationTime"] - sent_at),
                       *run_phases(run, events),
                       ("the run's end, until the poll saw it", seen_at - run["endTime"])],
        }
    finally:
        dagster_dev.stop_dagster_dev(dev)


def ui_materialize_all(state_path: Path, env: Mapping[str, str]) -> dict[str, Any]:
    """The UI's "Materialize all" in `dagster dev`, on the instance the CLI writes into a new DAGSTER_HOME."""
    with scratch_dir() as root:
        home = root / "home"
        write_cli_instance(home)
        return materialize_all_in_dagster_dev(root, instance_env(env, home, state_path))


def ui_materialize_all_postgres(state_path: Path, env: Mapping[str, str],
                                admin_dsn: str = LOCAL_POSTGRES) -> dict[str, Any]:
    """The UI's "Materialize all" in `dagster dev`, on the repository's dagster.yaml, storage in a fresh database."""
    with scratch_dir() as root, fresh_postgres_storage(admin_dsn) as storage:
        home = root / "home"
        copy_repo_instance(home)
        return materialize_all_in_dagster_dev(root, {**instance_env(env, home, state_path), **storage})


# --- the engine, for comparison --------------------------------------------------------------

def engine_seconds(source_dsn: str, target_dsn: str) -> float:
    """The copy with every check and no Dagster (benchmark.py's checked_refresh)."""
    source, target = Endpoint("source", source_dsn), Endpoint("target", target_dsn)
    started = time.perf_counter()
    events = refresh_events(source, target, RefreshOptions(full=True))
    failed = [e for e in events if isinstance(e, CheckOutcome) and e.fails_run]
    seconds = time.perf_counter() - started
    if failed:
        raise RuntimeError(f"the engine's refresh failed checks: {[o.summary for o in failed]}")
    return seconds


# --- rows for bench/benchmark.py ------------------------------------------------------------

CLI_POSTGRES_METHOD = "muva-refresh refresh (dagster-postgres instance)"
UI_METHODS = {  # (instance, figure) -> method name in the benchmark's table
    ("sqlite", "click_to_done"): "Materialize all, SQLite: launch to done",
    ("sqlite", "run_start_to_end"): "Materialize all, SQLite: run start to end",
    ("postgres", "click_to_done"): "Materialize all, dagster-postgres: launch to done",
    ("postgres", "run_start_to_end"): "Materialize all, dagster-postgres: run start to end",
}


def measure(shape: Any, repeat: int) -> list[tuple[str, str, float]]:
    """The benchmark's rows for `shape` (seed size only: the goal these paths answer to), medians
    of `repeat`: the CLI on the repository's dagster.yaml, and "Materialize all" on both instances."""
    if shape.name != "seed":
        return []
    env = child_env(shape.source_dsn, shape.target_dsn)
    rows = [(CLI_POSTGRES_METHOD, shape.name, median([cli_postgres(shape.state, env) for _ in range(repeat)]))]
    for instance, launch_ui in (("sqlite", ui_materialize_all), ("postgres", ui_materialize_all_postgres)):
        runs = [launch_ui(shape.state, env) for _ in range(repeat)]
        rows += [(UI_METHODS[instance, figure], shape.name, median([run[figure] for run in runs]))
                 for figure in ("click_to_done", "run_start_to_end")]
    return rows


# --- main ------------------------------------------------------------------------------------

def save_state(source_dsn: str, directory: Path) -> Path:
    with psycopg.connect(source_dsn) as conn:
        catalog = read_catalog(conn, TableFilter())
    path = directory / "catalog.json"
    catalog.save(path)
    return path


def child_env(source_dsn: str, target_dsn: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in DEVELOPER_SETTINGS}
    return {**env, SOURCE_DSN_VAR: source_dsn, TARGET_DSN_VAR: target_dsn}


def print_figures(rows: list[tuple[str, float, float]]) -> None:
    """Each path's (name, seconds, engine seconds measured just before it)."""
    print(f"\n{'path (one run each)':<46} {'seconds':>8} {'engine':>7} {'Dagster share':>14} {'x engine':>9}")
    for name, seconds, engine in rows:
        print(f"{name:<46} {seconds:>8.2f} {engine:>7.2f} {seconds - engine:>12.2f} s {seconds / engine:>8.2f}x")


def print_phases(name: str, ui: Mapping[str, Any]) -> None:
    print(f"\n{name}: job {ui['job']}, {ui['assets']} assets, {ui['checks']} checks, {ui['events']} events, "
          f"run {ui['run_id'][:8]} {ui['status']}")
    for phase, seconds in ui["phases"]:
        print(f"  {phase:<52} {seconds:>7.2f} s")
    print(f"  {'click to done (the phases above add up to it)':<52} {ui['click_to_done']:>7.2f} s")
    print(f"  {'the launch mutation answered after':<52} {ui['launch_mutation']:>7.2f} s")
    print("  most events: " + ", ".join(f"{n} {kind}" for kind, n in list(ui["events_by_type"].items())[:4]))


def load_average() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def measure_paths(state: Path, env: Mapping[str, str], source_dsn: str,
                  target_dsn: str) -> dict[str, tuple[Any, float]]:
    """Each path once, as (its result, the engine's seconds measured right before it): the machine's
    load drifts, and a pair measured together shares it."""
    paths = {
        "cli_sqlite": lambda: cli_sqlite(state, env),
        "cli_postgres": lambda: cli_postgres(state, env),
        "ui_sqlite": lambda: ui_materialize_all(state, env),
        "ui_postgres": lambda: ui_materialize_all_postgres(state, env),
    }
    results = {}
    for name, measure in paths.items():
        engine = engine_seconds(source_dsn, target_dsn)
        results[name] = (measure(), engine)
    return results


def main() -> None:
    started = time.perf_counter()
    info = demo.up(scale=1, data_dir=BENCH_DIR, env_file=None)
    print(f"demo up at scale 1 in {BENCH_DIR}: {time.perf_counter() - started:.1f} s, "
          f"{info.source_bytes / 1e6:.1f} MB in public ({datetime.now().isoformat(timespec='seconds')})")
    # Other work on the machine moves every figure; the load average says how much there was.
    print(f"load average before: {load_average()} on {os.cpu_count()} cores")
    try:
        with tempfile.TemporaryDirectory(prefix="muva-dp-state-") as state_dir:
            state = save_state(info.source_dsn, Path(state_dir))
            env = child_env(info.source_dsn, info.target_dsn)
            results = measure_paths(state, env, info.source_dsn, info.target_dsn)
    finally:
        demo.down(data_dir=BENCH_DIR)
    print(f"load average after:  {load_average()}")
    (cli_on_sqlite, e1), (cli_on_postgres, e2), (ui_on_sqlite, e3), (ui_on_postgres, e4) = results.values()
    print(f"engine alone (copy + all checks, no Dagster), before each path: {e1:.2f}, {e2:.2f}, {e3:.2f}, {e4:.2f} s")
    print_figures([
        ("muva-refresh refresh, SQLite instance", cli_on_sqlite, e1),
        ("muva-refresh refresh, dagster-postgres", cli_on_postgres, e2),
        ("UI Materialize all, SQLite: click to done", ui_on_sqlite["click_to_done"], e3),
        ("UI Materialize all, SQLite: run start to end", ui_on_sqlite["run_start_to_end"], e3),
        ("UI Materialize all, Postgres: click to done", ui_on_postgres["click_to_done"], e4),
        ("UI Materialize all, Postgres: run start to end", ui_on_postgres["run_start_to_end"], e4),
    ])
    print_phases("UI, SQLite instance", ui_on_sqlite)
    print_phases("UI, dagster-postgres instance", ui_on_postgres)


if __name__ == "__main__":
    main()
