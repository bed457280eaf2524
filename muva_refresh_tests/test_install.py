"""A regular (not editable) install, run from another directory, keeps its files there."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The package installed into a directory of its own, as `pip install .` would put it in site-packages."""
    site, source = tmp_path_factory.mktemp("site"), tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "setup.cfg", "README.md"):
        shutil.copy(REPO / name, source / name)
    # A copy, since the build writes build/ and *.egg-info beside the sources.
    shutil.copytree(REPO / "muva_refresh", source / "muva_refresh", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(source)], check=True, capture_output=True, text=True)
    return site


def test_demo_introspect_and_refresh_keep_their_files_under_the_working_directory(installed, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MUVA_", "DAGSTER_"))}
    env["PYTHONPATH"] = str(installed)

    def muva(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "muva_refresh.cli", *argv], cwd=work, env=env,
                              capture_output=True, text=True, timeout=600)

    where = subprocess.run([sys.executable, "-c", "import muva_refresh; print(muva_refresh.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(installed)), where  # the installed copy, not the repository's
    try:
        up = muva("demo", "up")
        assert up.returncode == 0, up.stderr
        refreshed = muva("refresh")
        assert refreshed.returncode == 0, refreshed.stderr
        assert "Refreshed 42 tables" in refreshed.stdout
    finally:
        muva("demo", "down")
    assert (work / ".env").is_file() and (work / ".muva" / "catalog.json").is_file()
    assert (work / ".muva" / "pgdata" / "PG_VERSION").is_file()
    assert list((work / ".muva" / "dagster_home").rglob("*.db"))  # the runs' SQLite storage
    assert not list(installed.rglob(".env")) and not list(installed.rglob(".muva"))
