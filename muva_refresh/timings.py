"""Where a run's time went: each phase's seconds, taken where the phase starts and ends.

The run's own thread does the phases one after another, so those add up to at most the wall
time; what they leave is `other`. A phase timed on another thread (an after-commit check, a
parallel worker's copy) or inside another timed phase ran beside the others: it is kept, but
not added, since the phase around it already counts that time.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from .catalog import TableRef

CHECK_PREFIX = "check "


class Phase:
    """The phases' names, as people read them."""

    SNAPSHOT, GUARDS, TRUNCATE = "snapshot", "guards", "truncate"
    HOLD = "hold compared tables"  # waits for what holds them: a writer, an autovacuum
    COMPARE, COPY, REBUILD = "compare", "copy", "index rebuild"  # per table
    VIEWS, SEQUENCES, COMMIT = "materialized views", "sequences", "commit"
    PARALLEL_LOAD = "load on parallel connections"
    CHECKS_AFTER_COMMIT = "checks after commit"
    OTHER, DAGSTER = "other", "Dagster"

    @staticmethod
    def check(name: str) -> str:
        return CHECK_PREFIX + name



@dataclass(frozen=True)
class PhaseTime:
    phase: str
    seconds: float
    table: TableRef | None = None
    beside: bool = False  # ran beside the run's own thread: shown, not added up

    @property
    def label(self) -> str:
        return f"{self.phase} {self.table}" if self.table else self.phase


@dataclass(frozen=True)
class Timings:
    wall_seconds: float
    phases: tuple[PhaseTime, ...]

    @property
    def accounted(self) -> float:
        return sum(p.seconds for p in self.phases if not p.beside)

    @property
    def other(self) -> float:
        return max(0.0, self.wall_seconds - self.accounted)

    def share(self, seconds: float) -> float:
        return seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def total(self, phase: str) -> float:
        return sum(p.seconds for p in self.phases if p.phase == phase)

    def tables(self) -> tuple[TableRef, ...]:
        return tuple(dict.fromkeys(p.table for p in self.phases if p.table is not None))

    def rows(self) -> list[PhaseTime]:
        """The phases in the order they ended, each check summed over the tables, then `other`
        (the run's own thread between phases); the phases that ran beside them last."""
        summed: dict[tuple[str, TableRef | None, bool], float] = {}
        for p in self.phases:
            key = (p.phase, None if p.phase.startswith(CHECK_PREFIX) else p.table, p.beside)
            summed[key] = summed.get(key, 0.0) + p.seconds
        rows = [PhaseTime(phase, seconds, table, beside) for (phase, table, beside), seconds in summed.items()]
        return [r for r in rows if not r.beside] + [PhaseTime(Phase.OTHER, self.other)] + [r for r in rows if r.beside]

    def around(self, wall_seconds: float, phase: str = Phase.DAGSTER) -> Timings:
        """These timings inside a longer run (Dagster's): the difference becomes `phase`."""
        outer = PhaseTime(phase, max(0.0, wall_seconds - self.wall_seconds))
        return Timings(max(wall_seconds, self.wall_seconds), self.phases + (outer,))

    def to_json(self) -> dict[str, object]:
        return {"wall_seconds": round(self.wall_seconds, 4),
                "phases": [{"phase": p.phase, "table": [p.table.schema, p.table.name] if p.table else None,
                            "seconds": round(p.seconds, 4), "share": round(self.share(p.seconds), 4),
                            "beside": p.beside} for p in self.rows()]}

    @classmethod
    def from_json(cls, data: dict) -> Timings:
        """What `to_json` wrote, `other` left out: it follows from the rest."""
        return cls(data["wall_seconds"], tuple(
            PhaseTime(p["phase"], p["seconds"], TableRef(*p["table"]) if p["table"] else None, p["beside"])
            for p in data["phases"] if p["phase"] != Phase.OTHER))


class PhaseClock:
    """Timings taken as a run goes: `measure` a phase, or take the time `since_last` one ended."""

    def __init__(self) -> None:
        self.started = self.last_end = time.perf_counter()
        self.owner = threading.get_ident()
        self.open = 0
        self.lock = threading.Lock()
        self.phases: list[PhaseTime] = []

    @contextmanager
    def measure(self, phase: str, table: TableRef | None = None) -> Iterator[None]:
        with self.lock:
            beside = threading.get_ident() != self.owner or self.open > 0
            self.open += 0 if beside else 1
        started = time.perf_counter()
        try:
            yield
        finally:
            self.record(phase, started, table, beside)

    def since_last(self, phase: str) -> None:
        """The time since the last phase of the run's own thread ended (or the clock started)."""
        self.record(phase, self.last_end, None, False, opened=False)

    def record(self, phase: str, started: float, table: TableRef | None, beside: bool, opened: bool = True) -> None:
        ended = time.perf_counter()
        with self.lock:
            self.phases.append(PhaseTime(phase, ended - started, table, beside))
            if not beside:
                self.open -= 1 if opened else 0
                self.last_end = ended

    def timings(self) -> Timings:
        with self.lock:
            return Timings(time.perf_counter() - self.started, tuple(self.phases))
