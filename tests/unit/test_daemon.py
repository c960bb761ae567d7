"""celeriac.daemon: Celery's node-name keys in file names, the pid file's rules, print() as log lines."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import pytest

from celeriac import daemon


@pytest.mark.parametrize("pattern, index, expected", [
    ("%n%I.log", None, "w1.log"),
    ("%n%I.log", 2, "w1-2.log"),
    ("%p-%i", None, "w1@host.example.com-0"),
    ("%h/%d/%n-%i", 3, "host.example.com/example.com/w1-3"),
    ("100%%-%x", None, "100%-%x"),  # %% is a percent sign; an unknown key stays as written
])
def test_node_format(pattern: str, index: int | None, expected: str) -> None:
    assert daemon.node_format(pattern, "w1@host.example.com", index) == expected


def test_node_format_without_a_name_part() -> None:
    assert daemon.node_format("%n|%h|%d", "box.lan") == "box|box.lan|lan"


def test_pidfile_refuses_a_running_process_and_replaces_a_dead_one(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "w.pid"
    path.parent.mkdir()
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        path.write_text(f"{sleeper.pid}\n")
        with pytest.raises(daemon.PidfileError, match=f"names process {sleeper.pid}, which is running"):
            daemon.Pidfile(str(path)).acquire()
        assert path.read_text().strip() == str(sleeper.pid), "a running process's file is left alone"
    finally:
        sleeper.kill()
        sleeper.wait()
    lock = daemon.Pidfile(str(path))
    lock.acquire()  # its process is gone now
    assert path.read_text().strip() == str(os.getpid())
    lock.release()
    assert not path.exists()


def test_pidfile_with_garbage_is_replaced_and_never_removed_when_not_ours(tmp_path: Path) -> None:
    path = tmp_path / "w.pid"
    path.write_text("not a pid")
    lock = daemon.Pidfile(str(path))
    lock.acquire()
    path.write_text("12345\n")  # someone else's now (an operator replaced it)
    lock.release()
    assert path.read_text() == "12345\n"


def test_log_stream_turns_complete_lines_into_records(caplog: pytest.LogCaptureFixture) -> None:
    stream = daemon.LogStream(logging.getLogger("celeriac.redirected"), logging.WARNING)
    with caplog.at_level(logging.WARNING, logger="celeriac.redirected"):
        stream.write("one\ntw")
        stream.write("o\n\n")
        stream.write("three")
        assert [r.getMessage() for r in caplog.records] == ["one", "two"]
        stream.flush()
    assert [r.getMessage() for r in caplog.records] == ["one", "two", "three"]
    assert all(r.levelno == logging.WARNING for r in caplog.records)


def test_umask_is_octal() -> None:
    assert daemon.parse_umask("022") == 0o22 and daemon.parse_umask(None) is None
    with pytest.raises(ValueError, match="octal"):
        daemon.parse_umask("8")


def test_privileges_cannot_be_changed_by_a_non_root_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(os, "getuid", lambda: 1000)
    with pytest.raises(ValueError, match="started as root"):
        daemon.drop_privileges("0", None)
    with pytest.raises(ValueError, match="no such user"):
        daemon.drop_privileges("no-such-user-here", None)


def test_log_stream_does_not_loop_when_logging_reports_its_own_failure(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    class Broken(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            try:
                raise OSError("disk full")
            except OSError:
                self.handleError(record)  # logging writes the failure to sys.stderr

    log = logging.getLogger("celeriac.test.broken")
    log.propagate = False
    log.addHandler(Broken())
    stream = daemon.LogStream(log, logging.WARNING)
    monkeypatch.setattr("sys.stderr", stream)
    monkeypatch.setattr("sys.__stderr__", open(os.devnull, "w"))
    stream.write("a line\n")  # would recurse until RecursionError without the guard
    assert stream._partial == ""
