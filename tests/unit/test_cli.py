"""The `celeriac` command, run for real (no worker is ever started): errors and client commands."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

CELERIAC = str(Path(sys.executable).with_name("celeriac"))


@pytest.fixture
def env() -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CELERIAC_")}
    clean["PYTHONUNBUFFERED"] = "1"
    clean["NO_COLOR"] = "1"
    clean["COLUMNS"] = "200"
    return clean


def run(tmp_path: Path, env: dict[str, str], *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CELERIAC, *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def error_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.strip()]


def write_app(tmp_path: Path, name: str = "tasks_cli") -> str:
    (tmp_path / f"{name}.py").write_text(textwrap.dedent("""
        from celeriac import Celeriac

        app = Celeriac("tasks_cli")

        @app.task
        def add(x, y):
            return x + y
    """))
    return name


def test_console_script_exists() -> None:
    assert Path(CELERIAC).exists()


def test_missing_app_module_is_a_one_line_error(tmp_path: Path, env: dict[str, str]) -> None:
    proc = run(tmp_path, env, "-A", "nonexistent_module_xyz", "worker")
    assert proc.returncode == 1
    lines = error_lines(proc)
    assert len(lines) == 1, proc.stderr
    assert "nonexistent_module_xyz" in lines[0]
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout


def test_app_module_that_raises_on_import_is_a_one_line_error(tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "broken_tasks.py").write_text("raise RuntimeError('database password file missing')\n")
    proc = run(tmp_path, env, "-A", "broken_tasks", "worker")
    assert proc.returncode == 1
    lines = error_lines(proc)
    assert len(lines) == 1, proc.stderr
    assert "broken_tasks" in lines[0]
    assert "RuntimeError" in lines[0] and "database password file missing" in lines[0]
    assert "Traceback" not in proc.stderr


def test_app_module_with_a_missing_dependency_names_the_dependency(tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "needs_dep.py").write_text("import some_missing_dependency_xyz\n")
    proc = run(tmp_path, env, "-A", "needs_dep", "worker")
    assert proc.returncode == 1
    lines = error_lines(proc)
    assert len(lines) == 1, proc.stderr
    assert "needs_dep" in lines[0] and "some_missing_dependency_xyz" in lines[0]


def test_app_module_without_an_app(tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "no_app_here.py").write_text("x = 1\n")
    proc = run(tmp_path, env, "-A", "no_app_here", "worker")
    assert proc.returncode == 1
    lines = error_lines(proc)
    assert len(lines) == 1 and "no_app_here" in lines[0] and "Celeriac app" in lines[0], proc.stderr


def test_bad_broker_scheme_lists_the_supported_schemes(tmp_path: Path, env: dict[str, str]) -> None:
    module = write_app(tmp_path)
    proc = run(tmp_path, env, "-A", module, "-b", "foo://x", "worker")
    assert proc.returncode == 1
    lines = error_lines(proc)
    assert len(lines) == 1, proc.stderr
    assert "foo://x" in lines[0]
    assert "sqlite://" in lines[0] and "memory://" in lines[0]
    assert "Traceback" not in proc.stderr
    assert "[tasks]" not in proc.stdout  # it failed before the banner


def test_bad_broker_scheme_error_hides_the_password(tmp_path: Path, env: dict[str, str]) -> None:
    module = write_app(tmp_path)
    proc = run(tmp_path, env, "-A", module, "-b", "foo://admin:pa55word@host//", "call", "tasks_cli.add")
    assert proc.returncode == 1
    assert "pa55word" not in proc.stderr + proc.stdout
    lines = error_lines(proc)
    assert len(lines) == 1 and "foo://admin:**@host//" in lines[0], proc.stderr


def test_call_then_result_shows_pending(tmp_path: Path, env: dict[str, str]) -> None:
    module = write_app(tmp_path)
    proc = run(tmp_path, env, "-A", module, "call", "tasks_cli.add", "--args", "[2, 3]")
    assert proc.returncode == 0, proc.stderr
    task_id = proc.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", task_id), proc.stdout
    assert (tmp_path / "celeriac.db").exists()  # the embedded default, in the current directory

    shown = run(tmp_path, env, "-A", module, "result", task_id)
    assert shown.returncode == 0, shown.stderr
    assert "state: PENDING" in shown.stdout.splitlines()


def test_call_with_bad_json_args(tmp_path: Path, env: dict[str, str]) -> None:
    module = write_app(tmp_path)
    proc = run(tmp_path, env, "-A", module, "call", "tasks_cli.add", "--args", "[2,")
    assert proc.returncode != 0
    assert "--args" in proc.stderr and "JSON" in proc.stderr


def test_purge_reports_how_many(tmp_path: Path, env: dict[str, str]) -> None:
    module = write_app(tmp_path)
    for args in ("[1, 1]", "[2, 2]"):
        assert run(tmp_path, env, "-A", module, "call", "tasks_cli.add", "--args", args).returncode == 0
    proc = run(tmp_path, env, "-A", module, "purge", "-f")
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"\bPurged 2 message", proc.stdout), proc.stdout
    again = run(tmp_path, env, "-A", module, "purge", "-f")
    assert again.returncode == 0, again.stderr
    assert "Purged" not in again.stdout and "No messages" in again.stdout


def test_dead_letters_when_there_are_none(tmp_path: Path, env: dict[str, str]) -> None:
    module = write_app(tmp_path)
    proc = run(tmp_path, env, "-A", module, "dead-letters")
    assert proc.returncode == 0, proc.stderr
    assert "No dead letters." in proc.stdout


def test_worker_without_an_app_says_how(tmp_path: Path, env: dict[str, str]) -> None:
    proc = run(tmp_path, env, "worker")
    assert proc.returncode == 1
    lines = error_lines(proc)
    assert len(lines) == 1 and "-A" in lines[0], proc.stderr


def test_missing_dependency_with_a_prefix_name_is_not_reported_as_the_app_module_missing(
        tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "tasks.py").write_text("import task\n")  # a typo for a dependency; tasks.py itself exists
    proc = run(tmp_path, env, "-A", "tasks", "worker")
    assert proc.returncode == 1
    [line] = error_lines(proc)
    assert "cannot import module 'tasks'" not in line, line
    assert "failed" in line and "task" in line


def test_sqlite_url_without_a_file_name_is_a_one_line_error(tmp_path: Path, env: dict[str, str]) -> None:
    module = write_app(tmp_path)
    proc = run(tmp_path, env, "-A", module, "-b", "sqlite://", "call", "tasks_cli.add")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = error_lines(proc)
    assert len(lines) == 1 and "sqlite" in lines[0], proc.stderr


def test_call_with_a_bad_eta_is_a_one_line_error(tmp_path: Path, env: dict[str, str]) -> None:
    module = write_app(tmp_path)
    proc = run(tmp_path, env, "-A", module, "call", "tasks_cli.add", "--eta", "not-a-date")
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = error_lines(proc)
    assert len(lines) <= 3 and "--eta" in proc.stderr, proc.stderr


@pytest.mark.parametrize("pool", ["eventlet", "gevent"])
def test_celerys_green_pools_are_a_one_line_error_saying_what_to_use(tmp_path: Path, env: dict[str, str],
                                                                      pool: str) -> None:
    app = write_app(tmp_path)
    proc = run(tmp_path, env, "-A", app, "worker", "-P", pool)
    assert proc.returncode == 1
    lines = error_lines(proc)
    assert len(lines) == 1 and f"-P {pool} is not available" in lines[0] and "async def" in lines[0], lines
