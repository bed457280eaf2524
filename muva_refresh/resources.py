"""Dagster resources: the two databases, reached by DSNs that come from EnvVar."""

from __future__ import annotations

import dagster as dg

from .copy import Progress
from .endpoint import Endpoint
from .settings import SOURCE_DSN_VAR, TARGET_DSN_VAR


class PostgresDatabase(dg.ConfigurableResource):
    """A PostgreSQL database reached by DSN. Set the DSN with dg.EnvVar so the UI never shows it."""

    dsn: str
    role: str

    def endpoint(self) -> Endpoint:
        return Endpoint(self.role, self.dsn)


def default_resources(progress: Progress | None = None) -> dict[str, object]:
    return {
        "source": PostgresDatabase(dsn=dg.EnvVar(SOURCE_DSN_VAR), role="source"),
        "target": PostgresDatabase(dsn=dg.EnvVar(TARGET_DSN_VAR), role="target"),
        # The run log has a line per table; the CLI adds its own printer.
        "progress": progress or Progress(),
    }
