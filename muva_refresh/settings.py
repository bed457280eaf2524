"""Where configuration comes from: the environment and the working directory's `.env`.

The only module that reads either. Relative paths are taken from the working directory (or
from an explicit setting), never from where the package is installed.
"""

from __future__ import annotations

import fnmatch
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from .errors import ConfigError

SOURCE_DSN_VAR = "MUVA_SOURCE_DSN"
TARGET_DSN_VAR = "MUVA_TARGET_DSN"
DSN_VARS = {"source": SOURCE_DSN_VAR, "target": TARGET_DSN_VAR}
SCHEMAS_VAR, INCLUDE_VAR, EXCLUDE_VAR = "MUVA_SCHEMAS", "MUVA_INCLUDE", "MUVA_EXCLUDE"
STATE_PATH_VAR = "MUVA_STATE_PATH"
DEMO_DIR_VAR = "MUVA_DEMO_DIR"
DAGSTER_HOME_VAR = "DAGSTER_HOME"
MARKER_SQL_VAR = "MUVA_DEPLOY_MARKER_SQL"
RLS_EXPECTED_VAR = "MUVA_RLS_EXPECTED"
POLICY_VAR = "MUVA_POLICY"
MASK_SALT_VAR = "MUVA_MASK_SALT"
DEFAULT_MARKER_SQL = "SELECT max(version)::text FROM supabase_migrations.schema_migrations"
SENSOR_INTERVAL_VAR = "MUVA_SENSOR_INTERVAL_S"
DEFAULT_SENSOR_INTERVAL_S = 60
# Below this a sensor would tick faster than Dagster's daemon looks at its sensors.
MIN_SENSOR_INTERVAL_S = 5
DAGSTER_URL_VAR = "MUVA_DAGSTER_URL"
ENV_FILE = ".env"
WORK_DIR = ".muva"  # state, Dagster home and demo data, under the working directory


DEFAULT_SCHEMA = "public"
DEFAULT_SCHEMAS = (DEFAULT_SCHEMA,)


@dataclass(frozen=True)
class TableFilter:
    """Which tables take part: the schemas, then `schema.table` glob patterns to include or exclude."""

    schemas: tuple[str, ...] = DEFAULT_SCHEMAS
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def admits(self, ref: object) -> bool:
        """`ref` is a table by its schema.table name, as str() gives it."""
        name = str(ref)
        if self.include and not any(fnmatch.fnmatchcase(name, p) for p in self.include):
            return False
        return not any(fnmatch.fnmatchcase(name, p) for p in self.exclude)

    def __str__(self) -> str:
        parts = [f"schemas {', '.join(self.schemas)}"]
        parts += [f"include {', '.join(self.include)}"] if self.include else []
        parts += [f"exclude {', '.join(self.exclude)}"] if self.exclude else []
        return "; ".join(parts)


@dataclass(frozen=True)
class Settings:
    source_dsn: str = field(repr=False)
    target_dsn: str = field(repr=False)
    table_filter: TableFilter
    state_path: Path  # the saved source catalog the definitions are built from (like dbt's manifest)
    dagster_home: Path
    demo_dir: Path  # the embedded demo server's data
    env_file: Path
    deploy_marker_sql: str
    rls_expected: tuple[str, ...] = ()  # schema.table patterns whose RLS must be on, with or without neighbours
    policy: str = ""  # a policy file, or demo / demo-tenant; empty: copy exactly
    mask_salt: str | None = field(default=None, repr=False)
    sensor_interval_s: int = DEFAULT_SENSOR_INTERVAL_S  # how often the deploy sensor looks at production
    # The webserver the deploy sensor asks to reload the code location when production's graph changes.
    dagster_url: str = ""

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> "Settings":
        env = os.environ if env is None else env
        here = (cwd or Path.cwd()).resolve()

        def path(var: str, default: str) -> Path:
            return here / (env.get(var) or default)  # an absolute setting stays absolute

        return cls(
            source_dsn=env.get(SOURCE_DSN_VAR, ""),
            target_dsn=env.get(TARGET_DSN_VAR, ""),
            table_filter=TableFilter(
                _csv(env.get(SCHEMAS_VAR, "")) or DEFAULT_SCHEMAS,
                _csv(env.get(INCLUDE_VAR, "")),
                _csv(env.get(EXCLUDE_VAR, "")),
            ),
            state_path=path(STATE_PATH_VAR, f"{WORK_DIR}/catalog.json"),
            dagster_home=path(DAGSTER_HOME_VAR, f"{WORK_DIR}/dagster_home"),
            demo_dir=path(DEMO_DIR_VAR, f"{WORK_DIR}/pgdata"),
            env_file=here / ENV_FILE,
            deploy_marker_sql=env.get(MARKER_SQL_VAR, "").strip() or DEFAULT_MARKER_SQL,
            rls_expected=_csv(env.get(RLS_EXPECTED_VAR, "")),
            policy=env.get(POLICY_VAR, "").strip(),
            mask_salt=env.get(MASK_SALT_VAR) or None,
            sensor_interval_s=sensor_interval(env.get(SENSOR_INTERVAL_VAR, "")),
            dagster_url=webserver_url(env.get(DAGSTER_URL_VAR, "")),
        )


def sensor_interval(text: str) -> int:
    """Whole seconds, at least MIN_SENSOR_INTERVAL_S; empty for the default."""
    if not text.strip():
        return DEFAULT_SENSOR_INTERVAL_S
    try:
        seconds = int(text.strip())
    except ValueError:
        seconds = None
    if seconds is None or seconds < MIN_SENSOR_INTERVAL_S:
        raise ConfigError(f"{SENSOR_INTERVAL_VAR} is {text!r}; it must be a whole number of seconds, "
                          f"at least {MIN_SENSOR_INTERVAL_S}", f"unset it for the default of {DEFAULT_SENSOR_INTERVAL_S}")
    return seconds


def webserver_url(text: str) -> str:
    """The Dagster webserver's base URL, http or https, without a trailing slash; empty when unset."""
    url = text.strip().rstrip("/")
    if url and not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", url):
        raise ConfigError(f"{DAGSTER_URL_VAR} is {text!r}; it must be the webserver's http:// or https:// address",
                          "for `make ui`: http://127.0.0.1:3000")
    return url


def _csv(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


# --- the .env file: one parser for reading and rewriting ------------------------------------

def parse_env_line(line: str) -> tuple[str, str] | None:
    """`KEY=value`, `export KEY=value`, with the value optionally quoted; None for other lines."""
    stripped = line.strip()
    if not stripped or stripped.startswith("#") or "=" not in stripped:
        return None
    key, _, value = stripped.partition("=")
    key = key.strip().removeprefix("export ").strip()
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == "'":
        value = value[1:-1].replace("'\\''", "'")
    elif len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    return key, value


def read_env_file(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    return dict(kv for kv in map(parse_env_line, path.read_text().splitlines()) if kv)


def load_env_file(path: Path | None = None) -> None:
    """Fill in variables from `.env` (the working directory's by default) that the environment
    does not already set, as Dagster does."""
    for key, value in read_env_file(path or Path.cwd() / ENV_FILE).items():
        os.environ.setdefault(key, value)


def shell_quoted(value: str) -> str:
    """Single quotes, so that `set -a; . ./.env` reads a DSN's `&` and `?` as text, as Dagster does."""
    return "'" + value.replace("'", "'\\''") + "'"


def write_env_file(path: Path, values: Mapping[str, str]) -> None:
    """Set `KEY='value'` lines in an env file, keeping every other line as it was."""
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    pending = dict(values)
    updated: list[str] = []
    for line in lines:
        parsed = parse_env_line(line)
        if parsed and parsed[0] in values:
            if parsed[0] in pending:
                updated.append(f"{parsed[0]}={shell_quoted(pending.pop(parsed[0]))}")
            continue  # a repeated key would shadow the new value in some loaders
        updated.append(line)
    updated.extend(f"{key}={shell_quoted(value)}" for key, value in pending.items())
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write beside the target and rename, so a crash never leaves half a file.
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write("\n".join(updated) + "\n")
        if path.exists():  # a new file keeps mkstemp's owner-only mode, fit for credentials
            os.chmod(temporary, path.stat().st_mode & 0o7777)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
