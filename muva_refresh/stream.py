"""One table's rows from the source to the target: COPY TO STDOUT piped into COPY FROM STDIN,
block by block, so memory stays flat whatever the table's size; a partitioned table leaf by leaf."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Callable, Generator

import psycopg
from psycopg import sql

from .catalog import Catalog, Table
from .partitions import matching_leaves
from .shape import WHOLE, Shape

COPY_OUT = sql.SQL("COPY ({rows}) TO STDOUT (FORMAT {format})")
COPY_IN = sql.SQL("COPY {table} ({columns}) FROM STDIN (FORMAT {format}{freeze})")
TICK_SECONDS = 0.5
WRITE_BYTES = 128 * 1024
# Binary arrays and composites carry their element and field type OIDs, which differ between
# databases for user-defined types. Servers before this version refuse a mismatch ("wrong element
# type"); later ones check only built-in OIDs and read the value as the column's type. 15 and 18
# are the versions the tests prove it on.
USER_TYPE_OIDS_IGNORED = 150000

# (bytes so far, rows so far or None where the format does not show them)
Tick = tuple[int, "int | None"]


FULL, DELTA, UNCHANGED = "full", "delta", "unchanged"  # how a table was refreshed


@dataclass(frozen=True)
class CopyStats:
    rows: int  # the rows the source sends at the snapshot, which the target holds after the load
    bytes: int  # copied
    seconds: float
    format: str  # "binary" or "text"
    path: str = FULL
    reason: str = ""  # why a table went whole, or how its difference was written
    copied_rows: int | None = None  # None: all of `rows`
    deleted_rows: int = 0  # of the target's, before the copy (a delta's changed keys)
    compared_rows: int = 0  # the source's rows whose hashes were compared with the target's
    source_digest: str | None = None  # known when the comparison hashed the source
    # The target's digest at the commit, when the comparison hashed it and the load did not write the
    # table after (unchanged: writers waited for the commit, so it still holds then).
    target_digest: str | None = None
    @property
    def copied(self) -> int:
        return self.rows if self.copied_rows is None else self.copied_rows

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0


def copy_format(table: Table, source: Catalog, target: Catalog) -> str:
    """Binary where both servers read it alike: one major version, and for arrays and composites
    of user-defined types a target that ignores their OIDs. Text otherwise, which costs both
    servers more CPU."""
    if not source.same_major(target):
        return "text"
    return "binary" if table.binary_safe or target.server_version >= USER_TYPE_OIDS_IGNORED else "text"


def column_list(table: Table) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(c.name) for c in table.copied_columns)


def copy_out_sql(table: Table, fmt: str, shape: Shape = WHOLE) -> sql.Composed:
    """In heap order, a sequential scan: the row digest does not depend on the order."""
    return COPY_OUT.format(rows=shape.rows(table), format=sql.SQL(fmt.upper()))


def copy_in_sql(table: Table, fmt: str, freeze: bool = False) -> sql.Composed:
    return COPY_IN.format(table=table.ref.ident(), columns=column_list(table), format=sql.SQL(fmt.upper()),
                          freeze=sql.SQL(", FREEZE") if freeze else sql.SQL(""))


def pump(conn: psycopg.Connection, table: Table, fmt: str, sink: Callable[[memoryview], object],
         shape: Shape = WHOLE) -> Generator[Tick, None, CopyStats]:
    """Read the COPY stream of `table` (as `shape` makes it) on `conn`, passing each block to
    `sink`; yields the bytes (and text rows) so far, at most every TICK_SECONDS."""
    started = time.perf_counter()
    next_tick = started + TICK_SECONDS  # a table that takes less never ticks
    size = rows = 0
    cur = conn.cursor()
    with cur.copy(copy_out_sql(table, fmt, shape)) as out:
        for block in out:
            size += len(block)
            sink(block)
            rows += bytes(block).count(b"\n") if fmt == "text" else 0
            if time.perf_counter() >= next_tick:
                yield size, rows if fmt == "text" else None
                next_tick = time.perf_counter() + TICK_SECONDS
    return CopyStats(cur.rowcount, size, time.perf_counter() - started, fmt)


class Gathered:
    """Blocks joined into writes of WRITE_BYTES: COPY TO sends a message per row, and writing
    each on its own costs a call into the target's connection per row."""

    def __init__(self, sink: Callable[[bytearray], object]):
        self.sink = sink
        self.buffer = bytearray()

    def write(self, block: memoryview) -> None:
        self.buffer += block
        if len(self.buffer) >= WRITE_BYTES:
            self.flush()

    def flush(self) -> None:
        if self.buffer:
            self.sink(self.buffer)
            self.buffer = bytearray()  # the writer may still hold the last one


def stream_table(src: psycopg.Connection, dst: psycopg.Connection, table: Table, fmt: str,
                 shape: Shape = WHOLE, freeze: bool = False) -> Generator[Tick, None, CopyStats]:
    """`table`'s rows from `src` into `dst`, yielding pump's ticks. A partitioned table goes leaf by
    leaf where both sides partition it alike and the rows are not a subset's (whose filter would
    run once per leaf); otherwise through its parent, which cannot FREEZE."""
    leaves = matching_leaves(src, dst, table.ref) if table.partitioned and shape.where is None else None
    if leaves is None:
        return (yield from stream_one(src, dst, table, fmt, shape, freeze and not table.partitioned))
    done = CopyStats(0, 0, 0.0, fmt)
    for leaf in leaves:
        streaming = stream_one(src, dst, replace(table, ref=leaf, partitioned=False), fmt, shape, freeze)
        stats = yield from ticks_after(streaming, done)
        done = CopyStats(done.rows + stats.rows, done.bytes + stats.bytes, done.seconds + stats.seconds, fmt)
    return done


def ticks_after(streaming: Generator[Tick, None, CopyStats], before: CopyStats) -> Generator[Tick, None, CopyStats]:
    """A leaf's ticks counted on from the leaves before it."""
    while True:
        try:
            size, rows = next(streaming)
        except StopIteration as end:
            return end.value
        yield before.bytes + size, None if rows is None else before.rows + rows


def stream_one(src: psycopg.Connection, dst: psycopg.Connection, table: Table, fmt: str,
               shape: Shape = WHOLE, freeze: bool = False) -> Generator[Tick, None, CopyStats]:
    """COPY TO STDOUT -> COPY FROM STDIN, gathered into writes of WRITE_BYTES; memory stays at that
    and psycopg's bounded writer queue. Yields pump's ticks."""
    with dst.cursor().copy(copy_in_sql(table, fmt, freeze)) as into:
        gathered = Gathered(into.write)
        stats = yield from pump(src, table, fmt, gathered.write, shape)
        gathered.flush()
        return stats
