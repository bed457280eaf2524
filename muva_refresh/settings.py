"""Where configuration comes from: environment variables, the repo's `.env`, the state file."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
ENV_FILE = REPO_ROOT / ".env"
SOURCE_DSN_VAR = "MUVA_SOURCE_DSN"
TARGET_DSN_VAR = "MUVA_TARGET_DSN"


def state_path() -> Path:
    """The saved source catalog the definitions are built from (like dbt's manifest)."""
    return Path(os.environ.get("MUVA_STATE_PATH") or REPO_ROOT / ".muva" / "catalog.json")


def default_dagster_home() -> Path:
    return REPO_ROOT / ".muva" / "dagster_home"


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines; blank lines and # comments are skipped; values may be quoted."""
    values: dict[str, str] = {}
    if not path.exists():
        return values
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def load_env_file(path: Path = ENV_FILE) -> None:
    """Fill in variables from `.env` that the environment does not already set, as Dagster does."""
    for key, value in read_env_file(path).items():
        os.environ.setdefault(key, value)
