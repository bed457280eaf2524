"""What a person sees: each refusal is one `error:` line and one `fix:` line on stderr, exit 2,
with no Dagster logs, traces or banners; progress goes to stdout as tables are copied."""

import io
import os
import re
import subprocess
import sys

import psycopg

from muva_refresh.catalog import TableRef
from muva_refresh.cli import Printer
from muva_refresh.endpoint import Endpoint
from muva_refresh.guards import REFRESH_LOCK_KEY
from muva_refresh.stream import CopyStats

from .support import plant_copy_failure, role_without_bypassrls


def muva(*argv: str, **env: str) -> subprocess.CompletedProcess:
    """The installed command line in a process of its own, so that everything it prints is seen."""
    return subprocess.run([sys.executable, "-m", "muva_refresh.cli", *argv], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)


def test_a_refresh_prints_no_banner_and_nothing_on_stderr(env, tmp_path):
    done = muva("refresh", DAGSTER_HOME=str(tmp_path / "fresh_home"))
    assert done.returncode == 0 and done.stderr == ""
    assert "Telemetry" not in done.stdout and "Welcome to Dagster" not in done.stdout
    assert done.stdout.startswith("  person ") and "Refreshed 7 tables" in done.stdout


def test_the_target_being_the_source_is_refused_in_two_lines(env):
    source, _ = env
    done = muva("refresh", MUVA_TARGET_DSN=os.environ["MUVA_SOURCE_DSN"])
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        f"error: the target is the source ({Endpoint('target', source)} reaches the same database as "
        f"{Endpoint('source', source)}); nothing was touched\n"
        "fix: point MUVA_TARGET_DSN at staging\n"
    )


def test_a_migration_staging_lacks_is_refused_in_two_lines(env):
    source, _ = env
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute("ALTER TABLE region ADD COLUMN added_by_deploy text")
    done = muva("refresh")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        "error: staging lacks a migration production has: column public.region.added_by_deploy (text) is "
        "missing on the target; nothing was touched\n"
        "fix: run production's migrations on staging, then refresh (the deploy sensor does, on its first tick after)\n"
    )


def test_a_selection_that_leaves_out_a_child_is_refused_in_two_lines(env):
    done = muva("refresh", "--select", "customer")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        "error: the selection would leave rows of public.audit_log pointing at emptied tables; nothing was touched\n"
        "fix: add public.audit_log to the selection\n"
    )


def test_a_source_role_without_bypassrls_is_refused_in_two_lines(env):
    source, _ = env
    with role_without_bypassrls(source) as restricted:
        done = muva("refresh", MUVA_SOURCE_DSN=restricted)
    role = psycopg.conninfo.conninfo_to_dict(restricted)["user"]
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        f"error: role '{role}' on the source cannot bypass row-level security, so its copy of public.customer, "
        "public.region would silently miss rows; nothing was touched\n"
        "fix: connect as a role with BYPASSRLS (on Supabase: postgres)\n"
    )


def test_a_refresh_already_running_is_refused_in_two_lines(env):
    _, target = env
    with psycopg.connect(target) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (REFRESH_LOCK_KEY,))
        done = muva("refresh")
    assert (done.returncode, done.stdout) == (2, "")
    lines = done.stderr.splitlines()
    assert len(lines) == 2
    assert re.fullmatch(rf"error: another refresh is running against the {re.escape(str(Endpoint('target', target)))} "
                        r"\(backend pid \d+, unnamed, since .+\); nothing was touched", lines[0])
    assert lines[1] == "fix: wait for it to finish, then run the refresh again"


def test_a_failed_copy_says_which_table_and_exits_1(env):
    _, target = env
    plant_copy_failure(target)
    done = muva("refresh", "--full")
    assert done.returncode == 1
    assert done.stderr.startswith("error: copy failed at public.customer: new row for relation \"customer\" "
                                  "violates check constraint \"no_seven\"; the target was rolled back")
    assert len(done.stderr.splitlines()) == 1


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_large_table_shows_live_progress_on_a_terminal_only():
    ref, stats = TableRef("public", "code_embeddings"), CopyStats(4333, 30_000_000, 2.0, "binary")
    for out, live in ((Terminal(), True), (io.StringIO(), False)):
        printer = Printer(out, io.StringIO())
        printer.table_streaming(ref, 12_500_000, None, 4333)
        printer.table_streaming(TableRef("public", "chat_messages"), 2_000_000, 1500, 6000)
        printer.table_done(ref, stats)
        text = out.getvalue()
        assert ("12.50 MB so far, ~4,333 rows in all" in text) is live
        assert ("2.00 MB so far, 1,500 of ~6,000 rows" in text) is live
        last = text.split("\r\033[K")[-1]  # on a terminal the live line is cleared before the table's line
        assert last.startswith("  code_embeddings ") and last.endswith(" 4,333 rows     30.00 MB   2.000 s     15.0 MB/s  binary  whole\n")
        assert text.count("\n") == 1 and ("\r" in text) is live
