"""Celery's service command line, unchanged, on a real worker: --logfile (a file per pool process
with %I, print() in tasks logged there), --pidfile (refused while its process runs, replaced when
stale, removed at exit), --detach, --purge, -X, -I and the options that have nothing to do here.
The options do not touch the broker, so these run on the embedded default."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from helpers import WorkerProcess, celeriac_bin, wait_until

pytestmark = pytest.mark.parametrize("broker_kind", ["sqlite"])

SERVICE_APP = """
from tasks_app import app  # noqa: F401 - the integration app, on this test's broker
from tasks_app import *  # noqa: F401,F403


@app.task(name="svc.shout")
def shout(text):
    print("printed", text)
    return text
"""

EXTRA_TASKS = """
from tasks_app import app


@app.task(name="svc.extra")
def extra():
    return "extra"
"""


@pytest.fixture
def svc_env(app_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    (tmp_path / "svc_app.py").write_text(SERVICE_APP)
    (tmp_path / "svc_extra.py").write_text(EXTRA_TASKS)
    monkeypatch.syspath_prepend(str(tmp_path))  # this process sends svc_app's tasks too
    return dict(app_env, PYTHONPATH=f"{tmp_path}{os.pathsep}{app_env['PYTHONPATH']}")


@pytest.fixture(autouse=True)
def stop_workers(request: pytest.FixtureRequest) -> Any:
    """Every worker a test here started is stopped after it, passed or failed."""
    yield
    for worker in getattr(request.node, "celeriac_workers", []):
        worker.stop()


def _worker(tmp_path: Path, env: dict[str, str], *args: str, request: Any) -> WorkerProcess:
    worker = WorkerProcess(tmp_path, env, "-n", "w1@%h", *args, app="svc_app")
    request.node.celeriac_workers = getattr(request.node, "celeriac_workers", []) + [worker]  # shown on failure
    return worker


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_logfile_per_pool_process_and_pidfile(svc_env: dict[str, str], tmp_path: Path, tasks: Any,
                                              request: pytest.FixtureRequest) -> None:
    logs, pidfile = tmp_path / "logs", tmp_path / "run" / "w1.pid"
    worker = _worker(tmp_path, svc_env, "-c", "2", "--logfile", f"{logs}/%n%I.log", "--pidfile",
                     f"{tmp_path}/run/%n.pid", request=request)
    wait_until(lambda: "w1@" in _read(logs / "w1.log") and "ready." in _read(logs / "w1.log"), 30,
               message="the main process's log file saying ready")
    assert pidfile.read_text().strip() == str(worker.proc.pid)

    from svc_app import shout  # type: ignore[import-not-found]  # written by svc_env
    assert shout.delay("hello").get(timeout=20) == "hello"

    def pool_logs() -> str:
        return _read(logs / "w1-1.log") + _read(logs / "w1-2.log")

    wait_until(lambda: "printed hello" in pool_logs() and "succeeded" in pool_logs(), 10,
               message="the pool process's own log file with the task's print() and its success")
    assert "WARNING/ForkPoolWorker" in pool_logs()
    assert "printed hello" not in worker.output and "printed hello" not in _read(logs / "w1.log")

    second = _worker(tmp_path, svc_env, "--pidfile", f"{tmp_path}/run/%n.pid", request=request)
    assert second.proc.wait(30) != 0
    assert f"names process {worker.proc.pid}, which is running" in second.output

    assert worker.terminate() == 0
    assert not pidfile.exists(), "the pid file is removed when the worker stops"


def test_thread_pool_prints_into_the_log_file(svc_env: dict[str, str], tmp_path: Path, tasks: Any,
                                              request: pytest.FixtureRequest) -> None:
    log = tmp_path / "w1.log"
    _worker(tmp_path, svc_env, "-P", "thread", "-c", "2", "--logfile", str(log), request=request)
    wait_until(lambda: "ready." in _read(log), 30, message="the log file saying ready")
    from svc_app import shout
    assert shout.delay("threaded").get(timeout=20) == "threaded"
    wait_until(lambda: "printed threaded" in _read(log), 10, message="the task's print() in the log file")


@pytest.mark.parametrize("pool", ["process", "thread"])
def test_sigusr1_shows_every_stack_and_the_worker_goes_on(svc_env: dict[str, str], tmp_path: Path, tasks: Any,
                                                          request: pytest.FixtureRequest, pool: str) -> None:
    """Celery's `kill -USR1 <worker>`: where each thread of the worker and of each pool process is,
    for a worker that looks stuck; a process pool's dumps go to the log file when there is one."""
    log = tmp_path / "w1.log"
    worker = _worker(tmp_path, svc_env, "-P", pool, "-c", "2", "--logfile", str(log), request=request)
    wait_until(lambda: "ready." in _read(log), 30, message="the log file saying ready")
    running = tasks.slow.delay(30)
    wait_until(lambda: running.state == "STARTED", 20, message="the slow task started")
    os.kill(worker.proc.pid, signal.SIGUSR1)
    # The task's frame (tasks_app.py, in slow) shows in the pool process's (or pool thread's) stack.
    wait_until(lambda: re.search(r'tasks_app\.py", line \d+ in slow', _read(log)), 10,
               message="the running task's frame in the stack dump")
    dump = _read(log)
    assert "SIGUSR1: stack of every thread of the worker" in dump
    assert ("Pool process " in dump) == (pool == "process")
    assert "in run" in dump and "supervisor.py" in dump  # the main process's own stack
    assert worker.proc.poll() is None, "SIGUSR1 must not end the worker"
    assert tasks.add.delay(2, 3).get(timeout=20) == 5
    running.revoke(terminate=True)


def test_stale_pidfile_is_replaced(svc_env: dict[str, str], tmp_path: Path, tasks: Any,
                                   request: pytest.FixtureRequest) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    pidfile = tmp_path / "w1.pid"
    pidfile.write_text(f"{gone.pid}\n")  # left by a worker killed with -9
    worker = _worker(tmp_path, svc_env, "--pidfile", str(pidfile), "-c", "1", request=request).wait_ready()
    assert pidfile.read_text().strip() == str(worker.proc.pid)
    assert f"names process {gone.pid}, which is gone: replacing it" in worker.output
    assert tasks.add.delay(2, 3).get(timeout=20) == 5


def test_detach_runs_in_the_background(svc_env: dict[str, str], tmp_path: Path, tasks: Any) -> None:
    pidfile, log = tmp_path / "w1.pid", tmp_path / "w1.log"
    started = subprocess.run([celeriac_bin(), "-A", "svc_app", "worker", "-n", "w1@%h", "-l", "info", "-c", "1",
                              "--detach", "--pidfile", str(pidfile), "--logfile", str(log)],
                             cwd=tmp_path, env=svc_env, capture_output=True, text=True, timeout=60)
    assert started.returncode == 0, started.stdout + started.stderr
    pid = int(wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 30, message="the pid file"))
    try:
        assert os.getsid(pid) != os.getsid(0), "the daemon runs in a session of its own"
        from svc_app import shout
        sent = shout.delay("detached")
        try:
            assert sent.get(timeout=30) == "detached"
        except Exception as exc:
            raise AssertionError(f"{exc}; the daemon's log:\n{_read(log)}") from None
        wait_until(lambda: "printed detached" in _read(log), 10, message="the task's print() in the log file")
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: _gone(pid), 30, message="the daemon to stop on SIGTERM")
        assert not pidfile.exists()
    finally:
        if not _gone(pid):
            os.kill(pid, signal.SIGKILL)  # its pool processes die with it (PR_SET_PDEATHSIG)


def test_purge_exclude_include_and_accepted_options(svc_env: dict[str, str], tmp_path: Path, tasks: Any,
                                                    request: pytest.FixtureRequest) -> None:
    waiting = [tasks.add.delay(i, i) for i in range(3)]
    worker = _worker(tmp_path, svc_env, "-c", "1", "-Q", "celery,video", "-X", "video", "-I", "svc_extra",
                     "--purge", "-O", "fair", "--without-gossip", "--without-mingle", "--without-heartbeat",
                     "--heartbeat-interval", "1", "--statedb", "w.state", request=request).wait_ready()
    assert "--purge: deleted 3 waiting message(s) from celery" in worker.output
    assert " - queues:      celery\n" in worker.output, "-X video leaves only celery"
    assert "svc.extra" in worker.output, "-I imported the module: its task is registered"
    for note in ("--without-gossip: celeriac workers do not gossip", "-O fair:", "--statedb w.state: not needed"):
        assert note in worker.output
    assert tasks.app.send_task("svc.extra").get(timeout=20) == "extra"
    # the purged ones were never run (they were ahead of svc.extra): their results stay pending
    assert all(r.state == "PENDING" for r in waiting)


@pytest.mark.parametrize("args, says", [
    (["--scheduler", "django_celery_beat.schedulers:DatabaseScheduler"], "keeps its schedule and last runs"),
    (["-Q", "celery", "-X", "celery"], "leaves no queue to consume"),
    (["--umask", "9z"], "give an octal mask such as 022"),
    (["-I", "no_such_module_here"], "-I no_such_module_here: cannot import it"),
])
def test_options_it_cannot_honour_stop_it_with_a_reason(svc_env: dict[str, str], tmp_path: Path, tasks: Any,
                                                        args: list[str], says: str) -> None:
    done = subprocess.run([celeriac_bin(), "-A", "svc_app", "worker", *args], cwd=tmp_path, env=svc_env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and says in done.stderr, done.stderr


def test_beat_takes_the_same_service_options(svc_env: dict[str, str], tmp_path: Path, tasks: Any) -> None:
    pidfile, log = tmp_path / "beat.pid", tmp_path / "beat.log"
    beat = WorkerProcess(tmp_path, svc_env, "--pidfile", str(pidfile), "--logfile", str(log), app="svc_app",
                         command="beat")
    try:
        wait_until(lambda: pidfile.exists() and pidfile.read_text().strip() == str(beat.proc.pid), 30,
                   message="beat's pid file")
        beat.terminate()
        assert not pidfile.exists()
    finally:
        beat.stop()
    refused = subprocess.run([celeriac_bin(), "-A", "svc_app", "beat", "-S", "django"],
                             cwd=tmp_path, env=svc_env, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "keeps its schedule and last runs" in refused.stderr


def _multi(svc_env: dict[str, str], tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([celeriac_bin(), "-A", "svc_app", "multi", *args], cwd=tmp_path, env=svc_env,
                          capture_output=True, text=True, timeout=120)


def test_multi_starts_stops_restarts_and_kills_named_workers(svc_env: dict[str, str], tmp_path: Path,
                                                             tasks: Any) -> None:
    nodes = ["w1", "w2"]
    opts = ["-l", "INFO", "-c", "1", "-c:w2", "2", f"--pidfile={tmp_path}/run/%n.pid",
            f"--logfile={tmp_path}/log/%n%I.log"]
    shown = _multi(svc_env, tmp_path, "show", *nodes, *opts)
    lines = shown.stdout.splitlines()
    assert len(lines) == 2 and "-n w1@" in lines[0] and "--detach" in lines[0], shown.stdout + shown.stderr
    assert lines[0].endswith("-c 1") and lines[1].endswith("-c 2"), "-c:w2 2 applies to w2 only"

    def pids() -> list[int | None]:
        found = []
        for node in nodes:
            path = tmp_path / "run" / f"{node}.pid"
            found.append(int(path.read_text()) if path.exists() else None)
        return found

    started = _multi(svc_env, tmp_path, "start", *nodes, *opts)
    assert started.returncode == 0 and started.stdout.count(": OK") == 2, started.stdout + started.stderr
    first = pids()
    try:
        assert all(first) and all(not _gone(p) for p in first if p)
        again = _multi(svc_env, tmp_path, "start", *nodes, *opts)
        assert again.stdout.count("already running") == 2, again.stdout
        from svc_app import shout
        assert shout.delay("multi").get(timeout=30) == "multi"

        restarted = _multi(svc_env, tmp_path, "restart", *nodes, *opts)
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        second = pids()
        assert all(second) and set(second).isdisjoint(first) and all(_gone(p) for p in first if p)

        killed = _multi(svc_env, tmp_path, "kill", *nodes, *opts)
        assert "SIGKILL" in killed.stdout
        wait_until(lambda: all(_gone(p) for p in second if p), 30, message="the killed nodes to be gone")
        # kill -9 leaves the pid files behind: the next start replaces them
        assert pids() == second
        assert _multi(svc_env, tmp_path, "start", *nodes, *opts).returncode == 0
        third = pids()
        assert all(third) and set(third).isdisjoint(second)

        stopped = _multi(svc_env, tmp_path, "stopwait", *nodes, f"--pidfile={tmp_path}/run/%n.pid")
        assert stopped.returncode == 0 and stopped.stdout.count(": OK") == 2, stopped.stdout
        assert pids() == [None, None] and all(_gone(p) for p in third if p)
        down = _multi(svc_env, tmp_path, "stop", *nodes, f"--pidfile={tmp_path}/run/%n.pid")
        assert down.stdout.count("DOWN") == 2
    finally:
        for pid in pids():
            if pid and not _gone(pid):
                os.kill(pid, signal.SIGKILL)
