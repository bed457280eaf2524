"""The errors an operator can act on. The CLI prints them without a traceback and exits with the
class's own code: 2 when nothing was touched (bad input, an unsafe target), 1 when a copy or a
blocking check failed."""

from __future__ import annotations

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class RefreshError(Exception):
    """A problem the operator can fix: one line that names the table or column, and one with the fix."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, fix: str | None = None):
        super().__init__(message if fix is None else f"{message}\nfix: {fix}")


class ConfigError(RefreshError):
    """A setting is missing or malformed (a DSN, a schema list, a state file)."""


class UnsafeTargetError(RefreshError):
    """The target is the source, or the source is not read-only; nothing was touched."""


class SchemaDriftError(RefreshError):
    """Source and target, or source and the saved catalog state, disagree on a table or column."""


class SelectionError(RefreshError):
    """A table selection names unknown tables or would break a foreign key in the target."""


class ConcurrentRefreshError(RefreshError):
    """Another refresh holds the target; this one touched nothing."""


class CopyError(RefreshError):
    """A table failed to copy; the target keeps its previous, consistent contents."""

    exit_code = EXIT_FAILED


class BlockingCheckError(RefreshError):
    """A blocking check (row count, orphans) failed inside the load; the load was rolled back."""

    exit_code = EXIT_FAILED


def exit_code_for(class_name: str) -> int:
    """The exit code of an error known only by its class name, as a Dagster run reports it."""
    pending: list[type[RefreshError]] = [RefreshError]
    while pending:
        cls = pending.pop()
        if cls.__name__ == class_name:
            return cls.exit_code
        pending.extend(cls.__subclasses__())
    return EXIT_FAILED  # anything else failed mid-run, after the guards
