"""The errors an operator can act on. The CLI prints them without a traceback."""


class RefreshError(Exception):
    """A problem the operator can fix; the message says which table or column and what to do."""


class ConfigError(RefreshError):
    """A setting is missing or malformed (a DSN, a schema list, a state file)."""


class UnsafeTargetError(RefreshError):
    """The target is the source, or the source is not read-only; nothing was touched."""


class SchemaDriftError(RefreshError):
    """Source and target, or source and the saved catalog state, disagree on a table or column."""


class SelectionError(RefreshError):
    """A table selection names unknown tables or would break a foreign key in the target."""


class CopyError(RefreshError):
    """A table failed to copy; the target keeps its previous, consistent contents."""


class BlockingCheckError(RefreshError):
    """A blocking check (row count, orphans) failed inside the load; the load was rolled back."""


class ConcurrentRefreshError(RefreshError):
    """Another refresh holds the target; this one touched nothing."""
