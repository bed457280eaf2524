"""Dagster resources: the two databases, reached by DSNs that come from EnvVar, and what a caller
in the same process hands a run (a listener, options it already resolved)."""

from __future__ import annotations

from typing import Any, Mapping

import dagster as dg

from .catalog import TableRef
from .endpoint import Endpoint
from .refresh import Progress, RefreshOptions
from .settings import SOURCE_DSN_VAR, TARGET_DSN_VAR


class PostgresDatabase(dg.ConfigurableResource):
    """A PostgreSQL database reached by DSN. Set the DSN with dg.EnvVar so the UI never shows it."""

    dsn: str
    role: str

    def endpoint(self) -> Endpoint:
        return Endpoint(self.role, self.dsn)


class PreparedRuns:
    """Options a caller in this process resolved for its next run (the CLI resolves them to refuse
    a bad selection or policy before Dagster starts), so the run does not resolve them again. A
    run launched elsewhere finds none and resolves its own."""

    def __init__(self) -> None:
        self.next: tuple[RefreshOptions, dict[str, Any]] | None = None

    def hand_over(self, options: RefreshOptions, config: Mapping[str, Any]) -> None:
        """`config`: the run config of the refresh op the options were resolved for."""
        self.next = (options, dict(config))

    def claim(self, tables: tuple[TableRef, ...], config: dg.Config) -> RefreshOptions | None:
        """The handed-over options, once, if they are for exactly this run's tables and config."""
        handed, self.next = self.next, None
        if handed is None:
            return None
        options, handed_config = handed
        same = options.planned == tables and all(getattr(config, k) == v for k, v in handed_config.items())
        return options if same else None


def default_resources(progress: Progress | None = None, prepared: PreparedRuns | None = None) -> dict[str, object]:
    return {
        "source": PostgresDatabase(dsn=dg.EnvVar(SOURCE_DSN_VAR), role="source"),
        "target": PostgresDatabase(dsn=dg.EnvVar(TARGET_DSN_VAR), role="target"),
        # The run log has a line per table; the CLI adds its own printer.
        "progress": progress or Progress(),
        "prepared": prepared or PreparedRuns(),
    }
