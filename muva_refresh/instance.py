"""The Dagster instance the CLI uses: DAGSTER_HOME, and the dagster.yaml the CLI writes there.

The config is YAML text, so this module imports no Dagster: the CLI, `make ui`, the benchmarks and
the UI tests all start Dagster on this one text. A file the CLI wrote is brought up to date when
its defaults change; a file someone edited is theirs, and is only ever read.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import IO, Any

from .settings import DAGSTER_HOME_VAR, Settings

CONFIG_NAME = "dagster.yaml"
# Beside the config: the digest of the text the CLI last wrote there, and of the newest default
# it told the user about, so that the note on an edited file is said once.
RECORD_NAME = ".muva_dagster_yaml.json"

# When this text changes, append the old one to EARLIER_CLI_INSTANCES, for homes whose record is lost.
CLI_INSTANCE_HEADER = "# Runs and check history in SQLite here; for PostgreSQL see the repository's dagster.yaml.\n"
CLI_INSTANCE = (
    CLI_INSTANCE_HEADER
    + "# Dagster's SQLite event log, keeping its files open between events (muva_refresh/storage.py).\n"
    "event_log_storage:\n  module: muva_refresh.storage\n  class: KeptOpenSqliteEventLogStorage\n"
    "# One refresh at a time: the table assets share one pool, limited to one run.\n"
    "concurrency:\n  pools:\n    default_limit: 1\n    granularity: run\n"
    "# The daemon looks for queued runs (\"Materialize all\", the sensor's) every second, not every five.\n"
    "run_queue:\n  dequeue_interval_seconds: 1\n"
    "# A launched run whose worker never starts, or never stops when cancelled, is marked failed; a\n"
    "# refresh whose process died is marked failed by dead_refresh_sensor.\n"
    "run_monitoring:\n  enabled: true\n  poll_interval_seconds: 30\n"
    "# Dagster's usage statistics are off; set enabled: true to send them.\n"
    "telemetry:\n  enabled: false\n"
)

# Every text earlier releases wrote, byte for byte: they kept no digest, so a file equal to one of
# these is known unedited and may be replaced. Frozen; never derive them from CLI_INSTANCE.
EARLIER_CLI_INSTANCES = (
    "# Dagster instance settings. Empty: runs and check history in SQLite here.\n"
    "# For PostgreSQL storage see dagster.yaml in the muva_refresh repository.\n",
    CLI_INSTANCE_HEADER
    + "# One refresh at a time: the table assets share one pool, limited to one run.\n"
    "concurrency:\n  pools:\n    default_limit: 1\n    granularity: run\n",
    CLI_INSTANCE_HEADER
    + "# One refresh at a time: the table assets share one pool, limited to one run.\n"
    "concurrency:\n  pools:\n    default_limit: 1\n    granularity: run\n"
    "# Dagster's usage statistics are off; set enabled: true to send them.\n"
    "telemetry:\n  enabled: false\n",
    CLI_INSTANCE_HEADER
    + "# Dagster's SQLite event log, keeping its files open between events (muva_refresh/storage.py).\n"
    "event_log_storage:\n  module: muva_refresh.storage\n  class: KeptOpenSqliteEventLogStorage\n"
    "# One refresh at a time: the table assets share one pool, limited to one run.\n"
    "concurrency:\n  pools:\n    default_limit: 1\n    granularity: run\n"
    "# Dagster's usage statistics are off; set enabled: true to send them.\n"
    "telemetry:\n  enabled: false\n",
    CLI_INSTANCE_HEADER
    + "# Dagster's SQLite event log, keeping its files open between events (muva_refresh/storage.py).\n"
    "event_log_storage:\n  module: muva_refresh.storage\n  class: KeptOpenSqliteEventLogStorage\n"
    "# One refresh at a time: the table assets share one pool, limited to one run.\n"
    "concurrency:\n  pools:\n    default_limit: 1\n    granularity: run\n"
    "# The daemon looks for queued runs (\"Materialize all\", the sensor's) every second, not every five.\n"
    "run_queue:\n  dequeue_interval_seconds: 1\n"
    "# Dagster's usage statistics are off; set enabled: true to send them.\n"
    "telemetry:\n  enabled: false\n",
)


def ensure_dagster_home(settings: Settings, err: IO[str] | None = None) -> None:
    """DAGSTER_HOME, defaulting to the one `make ui` uses, holding the CLI's dagster.yaml unless
    someone wrote or edited their own; the note about newer defaults goes to `err` (stderr)."""
    os.environ.setdefault(DAGSTER_HOME_VAR, str(settings.dagster_home))
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    config = home / CONFIG_NAME
    found = config.read_text() if config.exists() else None
    record = read_record(home)
    default = digest(CLI_INSTANCE)
    if found is None or written_by_cli(found, record):
        if found != CLI_INSTANCE:
            config.write_text(CLI_INSTANCE)
        update_record(home, record, written=default)
    elif newer_default_untold(found, record):
        print(newer_default_note(config, found), file=err or sys.stderr)
        update_record(home, record, told=default)


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def read_record(home: Path) -> dict[str, Any]:
    """The record beside the config; a missing or unreadable one is empty, which at worst keeps a
    file the CLI could have replaced, never replaces an edited one."""
    try:
        record = json.loads((home / RECORD_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def update_record(home: Path, record: dict[str, Any], **changes: str) -> None:
    if all(record.get(key) == value for key, value in changes.items()):
        return  # most commands change nothing: no write
    try:
        (home / RECORD_NAME).write_text(json.dumps({**record, **changes}, indent=2) + "\n")
    except OSError:
        pass  # a read-only home still runs; without the record an edited file is kept, at worst noted again


def written_by_cli(found: str, record: dict[str, Any]) -> bool:
    return found == CLI_INSTANCE or digest(found) == record.get("written") or found in EARLIER_CLI_INSTANCES


def newer_default_untold(found: str, record: dict[str, Any]) -> bool:
    """An edited copy of the CLI's file, from before the current default, not yet told about it.
    A file without the header was never the CLI's: its owner needs no note."""
    default = digest(CLI_INSTANCE)
    return found.startswith(CLI_INSTANCE_HEADER) and default not in (record.get("written"), record.get("told"))


def newer_default_note(config: Path, found: str) -> str:
    changes = difflib.unified_diff(found.splitlines(keepends=True), CLI_INSTANCE.splitlines(keepends=True),
                                   fromfile=str(config), tofile="muva-refresh's default", n=1)
    return (f"note: {config} was edited, so muva-refresh keeps it as it is; its defaults have changed since.\n"
            "For them, delete the file (muva-refresh writes a new one), or merge in the lines marked + below:\n"
            + "".join(changes).rstrip("\n"))
