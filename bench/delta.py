"""The default refresh's figures when little or much changed, on the MUVA shape, each beside a
full refresh measured in the same run.

    python bench/delta.py [--muva-scale 10] [--cli-scale 4]

On the MUVA demo at --muva-scale (the engine, every check, each run in a process of its own):
  full          every table whole (`full`), the baseline, measured before and after the others
  unchanged     nothing changed since the last refresh
  1% changed    about 1% of the rows of the largest tables updated, deleted or inserted on
                production, a key changed in muva_content, two rows edited on staging
  50% changed   half the rows of the largest tables updated on production
while a reader queries tenant_registry (which never changes) every 50 ms; its longest wait is
printed. Then `muva-refresh refresh` on a SQLite DAGSTER_HOME at --cli-scale: `--full`, then
1% changed, then nothing changed. Each run is verified equal to production afterwards.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.baselines import verify  # noqa: E402
from bench.dagster_paths import write_cli_instance  # noqa: E402
from bench.product import product_env, run_in_child, run_variant  # noqa: E402
from bench.shapes import Shape, muva_shape  # noqa: E402

BENCH_DIR = REPO / ".muva" / "bench-delta-pg"
# A row's share by a hash of its key, so each run changes the same rows of a given build.
ONE_PERCENT = """
UPDATE code_embeddings SET content = content || ' v2' WHERE abs(hashtext(id::text)) % 200 = 0;
DELETE FROM code_embeddings WHERE abs(hashtext(id::text)) % 400 = 1;
INSERT INTO code_embeddings (file_path, chunk_index, language, content, embedding, metadata)
    SELECT file_path, chunk_index + 1000000, language, content, embedding, metadata
    FROM code_embeddings WHERE abs(hashtext(id::text)) % 400 = 2;
UPDATE whatsapp_messages SET delivery_status = 'read' WHERE abs(hashtext(id::text)) % 200 = 0;
DELETE FROM whatsapp_messages WHERE abs(hashtext(id::text)) % 400 = 1;
INSERT INTO whatsapp_messages (tenant_id, phone_number_id, wa_message_id, direction, counterpart_number, body,
                               media, delivery_status, sent_at)
    SELECT tenant_id, phone_number_id, wa_message_id || '-again', direction, counterpart_number, body, media,
           delivery_status, sent_at FROM whatsapp_messages WHERE abs(hashtext(id::text)) % 400 = 2;
UPDATE muva_content SET id = gen_random_uuid() WHERE abs(hashtext(id::text)) % 100 = 0;
"""
STAGING_EDITS = """
UPDATE guest_reservations SET guest_name = 'tester' WHERE id IN (SELECT id FROM guest_reservations LIMIT 2);
"""
HALF = """
UPDATE code_embeddings SET content = content || ' v3' WHERE abs(hashtext(id::text)) % 2 = 0;
UPDATE whatsapp_messages SET body = coalesce(body, '') || ' v3' WHERE abs(hashtext(id::text)) % 2 = 0;
"""
READER_QUERY = "SELECT count(*) FROM tenant_registry"


class Reader(threading.Thread):
    """Queries an unchanged table every 50 ms; the longest a query took is the longest it waited."""

    def __init__(self, dsn: str):
        super().__init__(daemon=True)
        self.dsn, self.stop, self.longest = dsn, threading.Event(), 0.0

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.stop.is_set():
                started = time.perf_counter()
                conn.execute(READER_QUERY).fetchone()
                self.longest = max(self.longest, time.perf_counter() - started)
                time.sleep(0.05)


def change(dsn: str, statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(statements)
        conn.execute("VACUUM (ANALYZE)")


def engine_run(shape: Shape, variant: str) -> tuple[float, float, float]:
    """(seconds, peak RSS in MB, the reader's longest wait) of one engine run, verified."""
    reader = Reader(shape.target_dsn)
    reader.start()
    try:
        run = run_variant(variant, 1, product_env(shape.source_dsn, shape.target_dsn, shape.state))
    finally:
        reader.stop.set()
        reader.join()
    problems = verify(shape)
    if problems:
        raise RuntimeError(f"{variant}: the target differs from the source: {problems[:3]}")
    return run.seconds, run.peak_rss_mb, reader.longest


def cli_run(shape: Shape, home: Path, *args: str) -> float:
    """Wall seconds of `muva-refresh refresh ARGS` on a SQLite DAGSTER_HOME, verified."""
    env = {**product_env(shape.source_dsn, shape.target_dsn, shape.state), "DAGSTER_HOME": str(home)}
    child = run_in_child([str(Path(sys.executable).parent / "muva-refresh"), "refresh", *args], env, cwd=home)
    problems = verify(shape)
    if problems:
        raise RuntimeError(f"refresh {' '.join(args)}: the target differs from the source: {problems[:3]}")
    return child.wall_seconds


def engine_rows(scale: int) -> list[tuple[str, float, float, float, float]]:
    shape = muva_shape("muva", scale, BENCH_DIR)
    print(f"MUVA at scale {scale}: {shape.megabytes:.0f} MB, built in {shape.build_seconds:.0f} s", flush=True)
    rows = []
    full = [engine_run(shape, "checks")]  # staging starts stale: this is the first refresh
    rows.append(("unchanged", *engine_run(shape, "delta")))
    change(shape.source_dsn, ONE_PERCENT)
    change(shape.target_dsn, STAGING_EDITS)
    rows.append(("1% changed", *engine_run(shape, "delta")))
    full.append(engine_run(shape, "checks"))
    change(shape.source_dsn, HALF)
    rows.append(("50% changed", *engine_run(shape, "delta")))
    baseline = statistics.median(seconds for seconds, _, _ in full)
    table = [("full (median of 2)", baseline, max(rss for _, rss, _ in full), max(w for _, _, w in full), 1.0)]
    return table + [(name, s, rss, wait, s / baseline) for name, s, rss, wait in rows]


def cli_rows(scale: int) -> list[tuple[str, float, float]]:
    shape = muva_shape("muva", scale, BENCH_DIR)
    home = Path(tempfile.mkdtemp(prefix="muva-bench-delta-home-"))
    write_cli_instance(home)
    full = cli_run(shape, home, "--full")
    full = min(full, cli_run(shape, home, "--full"))  # the first run also creates the instance's storage
    change(shape.source_dsn, ONE_PERCENT)
    changed = cli_run(shape, home)
    unchanged = cli_run(shape, home)
    return [("refresh --full", full, 1.0), ("1% changed", changed, changed / full),
            ("unchanged", unchanged, unchanged / full)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--muva-scale", type=int, default=10)
    p.add_argument("--cli-scale", type=int, default=4)
    args = p.parse_args()
    engine = engine_rows(args.muva_scale)
    print(f"\n| engine, MUVA scale {args.muva_scale} | seconds | vs full | peak RSS | reader's longest wait |")
    print("|---|---|---|---|---|")
    for name, seconds, rss, wait, ratio in engine:
        print(f"| {name} | {seconds:.1f} | {ratio:.2f}× | {rss:.0f} MB | {wait * 1000:.0f} ms |")
    cli = cli_rows(args.cli_scale)
    print(f"\n| `muva-refresh refresh`, SQLite instance, scale {args.cli_scale} | seconds | vs --full |")
    print("|---|---|---|")
    for name, seconds, ratio in cli:
        print(f"| {name} | {seconds:.1f} | {ratio:.2f}× |")


if __name__ == "__main__":
    main()
