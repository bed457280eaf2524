"""The dagster.yaml the CLI writes: written into a new DAGSTER_HOME, kept up to date while nobody
edits it, and left alone (with one note per newer default) once somebody does."""

import io
import json

import pytest

from muva_refresh import instance
from muva_refresh.instance import (
    CLI_INSTANCE,
    CLI_INSTANCE_HEADER,
    EARLIER_CLI_INSTANCES,
    RECORD_NAME,
    digest,
    ensure_dagster_home,
)
from muva_refresh.settings import DAGSTER_HOME_VAR, Settings

from .support import cli

NEWER_DEFAULT = CLI_INSTANCE + "# A default of a later release.\nretention:\n  schedule:\n    purge_after_days: 90\n"
COMMANDS = (("introspect",), ("plan",), ("refresh",), ("validate",), ("history",))


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv(DAGSTER_HOME_VAR, str(tmp_path / "dagster_home"))
    return tmp_path / "dagster_home"


def ensure(home) -> str:
    """What ensure_dagster_home says on stderr."""
    err = io.StringIO()
    ensure_dagster_home(Settings.load(env={DAGSTER_HOME_VAR: str(home)}), err)
    return err.getvalue()


def newer_default_release(monkeypatch) -> None:
    monkeypatch.setattr(instance, "CLI_INSTANCE", NEWER_DEFAULT)


def test_a_fresh_home_gets_the_cli_instance_and_a_record_of_it(home):
    assert ensure(home) == ""
    assert (home / "dagster.yaml").read_text() == CLI_INSTANCE
    assert json.loads((home / RECORD_NAME).read_text())["written"] == digest(CLI_INSTANCE)


def test_an_unchanged_written_file_is_brought_up_to_date_when_the_default_changes(env, tmp_path, monkeypatch):
    config = tmp_path / "dagster_home" / "dagster.yaml"
    assert config.read_text() == CLI_INSTANCE  # written by the fixture's introspect
    newer_default_release(monkeypatch)
    run = cli("plan")
    assert run.code == 0 and run.err == ""
    assert config.read_text() == NEWER_DEFAULT


@pytest.mark.parametrize("earlier", EARLIER_CLI_INSTANCES, ids=range(len(EARLIER_CLI_INSTANCES)))
def test_a_file_an_earlier_release_wrote_is_brought_up_to_date(home, earlier):
    home.mkdir()
    (home / "dagster.yaml").write_text(earlier)
    assert ensure(home) == ""
    assert (home / "dagster.yaml").read_text() == CLI_INSTANCE


def test_an_edited_file_an_earlier_release_wrote_is_kept_and_noted_once(home):
    edited = CLI_INSTANCE_HEADER + "telemetry:\n  enabled: false\n"  # no earlier release wrote this
    home.mkdir()
    (home / "dagster.yaml").write_text(edited)
    notes = [ensure(home), ensure(home)]
    assert (home / "dagster.yaml").read_text() == edited
    assert f"note: {home / 'dagster.yaml'} was edited" in notes[0] and "+event_log_storage:" in notes[0]
    assert notes[1] == ""


def test_an_edited_file_survives_every_command_and_the_note_comes_once(env, tmp_path, monkeypatch):
    config = tmp_path / "dagster_home" / "dagster.yaml"
    edited = CLI_INSTANCE.replace("dequeue_interval_seconds: 1", "dequeue_interval_seconds: 5")
    config.write_text(edited)
    newer_default_release(monkeypatch)
    errors = []
    for argv in COMMANDS:
        run = cli(*argv)
        assert run.code == 0, (argv, run.err)
        assert config.read_text() == edited, argv
        errors.append(run.err)
    assert [err.count("note: ") for err in errors] == [1, 0, 0, 0, 0]
    note = errors[0]
    assert str(config) in note and "delete the file" in note
    assert "+retention:" in note and "-  dequeue_interval_seconds: 5" in note
    monkeypatch.setattr(instance, "CLI_INSTANCE", NEWER_DEFAULT + "# Yet another default.\n")
    assert cli("plan").err.count("note: ") == 1  # a newer default again: one more note
    assert config.read_text() == edited


def test_an_edit_of_the_current_default_needs_no_note(env, tmp_path):
    config = tmp_path / "dagster_home" / "dagster.yaml"
    edited = CLI_INSTANCE + "# mine\n"
    config.write_text(edited)
    run = cli("plan")
    assert run.code == 0 and run.err == ""
    assert config.read_text() == edited


def test_a_users_own_file_without_the_header_is_never_touched(env, tmp_path, monkeypatch):
    config = tmp_path / "dagster_home" / "dagster.yaml"
    own = "# mine\ntelemetry:\n  enabled: false\n"
    config.write_text(own)
    record = (tmp_path / "dagster_home" / RECORD_NAME).read_text()
    newer_default_release(monkeypatch)
    for argv in (("plan",), ("history",)):
        run = cli(*argv)
        assert run.code == 0 and run.err == ""
    assert config.read_text() == own
    assert (tmp_path / "dagster_home" / RECORD_NAME).read_text() == record


def test_an_unreadable_record_keeps_an_edited_file(home):
    assert ensure(home) == ""
    edited = CLI_INSTANCE + "# mine\n"
    (home / "dagster.yaml").write_text(edited)
    (home / RECORD_NAME).write_text("not json")
    assert "note: " in ensure(home)
    assert (home / "dagster.yaml").read_text() == edited
