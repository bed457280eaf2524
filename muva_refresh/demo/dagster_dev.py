"""`dagster dev` (webserver and daemon) on a private demo pair, for the UI tests and the benchmarks.

A development helper that needs the source checkout (its workspace.yaml): nothing the CLI or the
definitions run imports it.

Everything lives under one temporary directory: the embedded PostgreSQL, DAGSTER_HOME, the
catalog state, the demo's env file and the workspace file. `dagster dev` runs with that
directory as its working directory, because Dagster loads `.env` from the working directory
and lets it override variables already set (dagster_shared.utils.environ assigns
unconditionally): started from the repo root, the repo's `.env` would point the runs at
whatever demo that file names. The temporary `.env` holds the same DSNs as the explicit
environment, so both sources agree.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml

from .. import demo
from ..instance import CLI_INSTANCE
from ..settings import DAGSTER_URL_VAR, SOURCE_DSN_VAR, TARGET_DSN_VAR

REPO_ROOT = Path(__file__).resolve().parents[2]
# The venv running the tests also holds dagster and muva-refresh.
BIN = Path(sys.executable).parent
START_TIMEOUT_SECONDS = 90

TERMINAL_RUN_STATUSES = {"SUCCESS", "FAILURE", "CANCELED"}

RUNS_QUERY = """
{
  runsOrError(limit: 10) {
    __typename
    ... on Runs { results { runId status jobName } }
    ... on PythonError { message }
  }
}
"""

RUN_ERRORS_QUERY = """
query RunErrors($runId: ID!) {
  logsForRun(runId: $runId, limit: 1000) {
    __typename
    ... on EventConnection {
      events { __typename ... on ErrorEvent { error { message } } ... on MessageEvent { message } }
    }
  }
}
"""

RUNS_TAGGED_QUERY = """
query RunsTagged($key: String!, $value: String!) {
  runsOrError(filter: {tags: [{key: $key, value: $value}]}) {
    __typename
    ... on Runs { results { runId status jobName } }
  }
}
"""

RUN_QUERY = """
query Run($runId: ID!) {
  runOrError(runId: $runId) { __typename ... on Run { runId status } }
}
"""

START_SENSOR = """
mutation StartSensor($selector: SensorSelector!) {
  startSensor(sensorSelector: $selector) {
    __typename ... on Sensor { sensorState { status } } ... on PythonError { message }
  }
}
"""

SET_SENSOR_CURSOR = """
mutation SetSensorCursor($selector: SensorSelector!, $cursor: String) {
  setSensorCursor(sensorSelector: $selector, cursor: $cursor) { __typename ... on PythonError { message } }
}
"""

SENSOR_IDS = """
query SensorIds($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) { __typename ... on Sensor { jobOriginId sensorState { selectorId } } }
}
"""

STOP_SENSOR = """
mutation StopSensor($origin: String!, $selectorId: String!) {
  stopSensor(jobOriginId: $origin, jobSelectorId: $selectorId) {
    __typename ... on StopSensorMutationResult { instigationState { status } } ... on PythonError { message }
  }
}
"""

SENSOR_TICKS = """
query SensorTicks($selector: SensorSelector!, $limit: Int!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { status ticks(limit: $limit) { tickId status timestamp skipReason runIds
                                                                 error { message } } } }
  }
}
"""

WORKSPACE_QUERY = """
{
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError {
          __typename
          ... on RepositoryLocation { repositories { name } }
          ... on PythonError { message }
        }
      }
    }
  }
}
"""


@dataclass
class DagsterDev:
    """A running `dagster dev` and the demo pair behind it."""

    root: Path
    env: dict[str, str]
    port: int
    process: subprocess.Popen | None = None
    location: str = ""
    repository: str = ""
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.root / "dagster-dev.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def graphql(self, query: str, variables: dict[str, Any] | None = None, timeout: float = 30) -> dict[str, Any]:
        response = requests.post(f"{self.url}/graphql", json={"query": query, "variables": variables or {}},
                                 timeout=timeout)
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise AssertionError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    def runs(self) -> list[dict[str, Any]]:
        """The newest runs first."""
        return self.graphql(RUNS_QUERY)["runsOrError"]["results"]

    def wait_for_run(self, run_id: str, timeout: float) -> str:
        """Poll until the run ends; return its status."""
        deadline = time.monotonic() + timeout
        status = "unknown"
        while time.monotonic() < deadline:
            status = next((r["status"] for r in self.runs() if r["runId"] == run_id), "unknown")
            if status in TERMINAL_RUN_STATUSES:
                return status
            time.sleep(1)
        raise TimeoutError(f"run {run_id} still {status} after {timeout} s")

    def run_errors(self, run_id: str) -> str:
        """The error events of a run, for assertion messages."""
        events = self.graphql(RUN_ERRORS_QUERY, {"runId": run_id})["logsForRun"].get("events", [])
        lines = [f"{e['__typename']}: {(e.get('error') or {}).get('message') or e.get('message', '')}".strip()
                 for e in events if e.get("error") or e["__typename"].endswith("FailureEvent")]
        return "\n".join(lines) or "(no error events)"

    def runs_tagged(self, key: str, value: str) -> list[dict[str, Any]]:
        """The runs carrying the tag, newest first."""
        return self.graphql(RUNS_TAGGED_QUERY, {"key": key, "value": value})["runsOrError"]["results"]

    def run_status(self, run_id: str) -> str:
        return self.graphql(RUN_QUERY, {"runId": run_id})["runOrError"]["status"]

    def sensor(self, name: str) -> dict[str, str]:
        return {"repositoryLocationName": self.location, "repositoryName": self.repository, "sensorName": name}

    def start_sensor(self, name: str, cursor: str | None = None) -> None:
        """Turn a sensor on, from `cursor`, as a person would under Automation."""
        done = self.graphql(SET_SENSOR_CURSOR, {"selector": self.sensor(name), "cursor": cursor})
        assert done["setSensorCursor"]["__typename"] != "PythonError", done
        started = self.graphql(START_SENSOR, {"selector": self.sensor(name)})["startSensor"]
        assert started.get("sensorState", {}).get("status") == "RUNNING", started

    def stop_sensor(self, name: str) -> None:
        ids = self.graphql(SENSOR_IDS, {"selector": self.sensor(name)})["sensorOrError"]
        stopped = self.graphql(STOP_SENSOR, {"origin": ids["jobOriginId"],
                                             "selectorId": ids["sensorState"]["selectorId"]})["stopSensor"]
        assert stopped.get("instigationState", {}).get("status") == "STOPPED", stopped

    def sensor_ticks(self, name: str, limit: int = 25) -> list[dict[str, Any]]:
        """The sensor's latest ticks, newest first."""
        found = self.graphql(SENSOR_TICKS, {"selector": self.sensor(name), "limit": limit})["sensorOrError"]
        return found["sensorState"]["ticks"]

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_workspace(path: Path) -> None:
    """The repo's workspace.yaml with every working_directory made absolute, so it loads from elsewhere."""
    source = REPO_ROOT / "workspace.yaml"
    if not source.is_file():
        raise FileNotFoundError(f"dagster_dev runs from a source checkout: no workspace.yaml at {source}")
    workspace = yaml.safe_load(source.read_text())
    for entry in workspace.get("load_from", []):
        for target in entry.values():
            if isinstance(target, dict):
                target["working_directory"] = str((REPO_ROOT / target.get("working_directory", ".")).resolve())
    path.write_text(yaml.safe_dump(workspace))


def start_demo(root: Path, instance: str = CLI_INSTANCE, instance_env: dict[str, str] | None = None) -> dict[str, str]:
    """Build the demo pair under `root`, save its catalog state, and return the subprocess env.
    `instance` is the dagster.yaml (the CLI's by default, its event log included), with the
    variables it reads in `instance_env`."""
    home = root / "home"
    home.mkdir(parents=True)
    (root / "tmp").mkdir()
    (home / "dagster.yaml").write_text(instance)
    # env_file inside root: demo.up would otherwise rewrite the repo's own .env.
    info = demo.up(scale=1, data_dir=root / "pg", env_file=root / ".env")
    env = dict(os.environ)
    env.update({
        "MUVA_DEMO_DIR": str(root / "pg"),
        "DAGSTER_HOME": str(home),
        "MUVA_STATE_PATH": str(root / "catalog.json"),
        # dagster dev's own temp files (sockets, its workspace copy) then go with root: SIGKILL skips its cleanup.
        "TMPDIR": str(root / "tmp"),
        SOURCE_DSN_VAR: info.source_dsn,
        TARGET_DSN_VAR: info.target_dsn,
    })
    # Set empty (the defaults), not unset: the CLI fills unset variables from the repo's .env.
    env.update({"MUVA_SCHEMAS": "", "MUVA_INCLUDE": "", "MUVA_EXCLUDE": ""})
    env.update(instance_env or {})
    done = subprocess.run([str(BIN / "muva-refresh"), "introspect"], env=env, cwd=root,
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"muva-refresh introspect failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return env


def start_dagster_dev(root: Path, env: dict[str, str]) -> DagsterDev:
    """`dagster dev` on the demo; its sensors reach the webserver (to reload the code location) at
    the address they are told in MUVA_DAGSTER_URL, which `env` then holds too."""
    write_workspace(root / "workspace.yaml")
    port = free_port()
    env = {**env, DAGSTER_URL_VAR: f"http://127.0.0.1:{port}"}
    dev = DagsterDev(root=root, env=env, port=port)
    with dev.log_path.open("wb") as log:
        # Own session: teardown kills the webserver, daemon, code server and run workers as one group.
        dev.process = subprocess.Popen(
            [str(BIN / "dagster"), "dev", "-h", "127.0.0.1", "-p", str(dev.port), "-w", str(root / "workspace.yaml")],
            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        wait_until_loaded(dev)
    except BaseException:
        stop_dagster_dev(dev)
        raise
    return dev


def wait_until_loaded(dev: DagsterDev) -> None:
    """Wait until the webserver answers GraphQL and the code location has loaded."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    last = "no answer yet"
    while time.monotonic() < deadline:
        if dev.process is not None and dev.process.poll() is not None:
            raise RuntimeError(f"dagster dev exited with {dev.process.returncode}:\n{dev.log_tail()}")
        try:
            entries = dev.graphql(WORKSPACE_QUERY, timeout=5)["workspaceOrError"].get("locationEntries", [])
        except (requests.RequestException, AssertionError, ValueError) as exc:
            last = str(exc)
            time.sleep(0.5)
            continue
        for entry in entries:
            loaded = entry.get("locationOrLoadError") or {}
            if loaded.get("__typename") == "PythonError":
                raise RuntimeError(f"code location {entry['name']} failed to load: {loaded['message']}")
            if entry["loadStatus"] == "LOADED" and loaded.get("__typename") == "RepositoryLocation":
                dev.location, dev.repository = entry["name"], loaded["repositories"][0]["name"]
                return
        last = f"locations: {entries}"
        time.sleep(0.5)
    raise TimeoutError(f"dagster dev not ready after {START_TIMEOUT_SECONDS} s ({last}):\n{dev.log_tail()}")


def stop_dagster_dev(dev: DagsterDev) -> None:
    if dev.process is None or (dev.process.poll() is not None and not _group_alive(dev.process.pid)):
        return
    # SIGKILL: dagster dev's children do not all stop on SIGTERM/SIGINT.
    try:
        os.killpg(dev.process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    dev.process.wait(timeout=30)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def make_root() -> Path:
    # Short path: the embedded server's Unix socket lives in its data directory.
    return Path(tempfile.mkdtemp(prefix="muva-ui-"))


def cleanup(root: Path) -> None:
    demo.down(data_dir=root / "pg")
    shutil.rmtree(root, ignore_errors=True)
