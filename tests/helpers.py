"""Shared test helpers: deadlines instead of sleeps, and real worker processes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
INTEGRATION = Path(__file__).resolve().parent / "integration"


def wait_until(condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02,
               message: str = "condition") -> Any:
    """Poll `condition` until it returns something truthy; fail with `message` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def trace_lines(path: Path) -> list[str]:
    """The words a test task appended to a trace file (one run per line)."""
    return path.read_text().split() if path.exists() else []


def count_success(results: list[Any]) -> int:
    """How many of these results are SUCCESS right now (-1 while the store is unreachable)."""
    from celeriac.exceptions import OperationalError
    try:
        metas = results[0].app.backend.get_many([r.id for r in results])
    except OperationalError:
        return -1
    return sum(1 for m in metas.values() if m["status"] == "SUCCESS")


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """(certificate, key) for 127.0.0.1, made with openssl; skips the test when openssl is missing."""
    import shutil

    import pytest
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed: cannot make a certificate for the TLS test")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def result_store_url(kind: str, tmp_path: Path, request: Any) -> str:
    """A fresh result store of this kind: memory, sqlite (a file in tmp_path), redis or
    postgres (the session's private server, flushed)."""
    if kind == "memory":
        import uuid
        return f"memory://store-{uuid.uuid4().hex}"
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'results.db'}"
    if kind == "redis-cluster":
        return fresh_redis_cluster_url(request)
    if kind == "postgres":
        return fresh_postgres_url(request)
    return fresh_redis_url(request)


def fresh_redis_cluster_url(request: Any) -> str:
    """The session's private Redis Cluster (three masters), flushed."""
    cluster = request.getfixturevalue("redis_cluster")
    cluster.flush()
    return str(cluster.url)


def fresh_postgres_url(request: Any) -> str:
    """The session's private PostgreSQL, running (a failure test may have stopped it), its
    celeriac tables emptied."""
    server = request.getfixturevalue("postgres_server")
    if not server.ping():
        server.start()
    server.flush()
    return str(server.url)


def fresh_redis_url(request: Any) -> str:
    """The session's private Redis, running (a failure test may have stopped it) and flushed."""
    server = request.getfixturevalue("redis_server")
    if not server.ping():
        server.start()
    server.flush()
    return str(server.url)


def celeriac_bin() -> str:
    return str(Path(sys.executable).with_name("celeriac"))


class WorkerProcess:
    """A real `celeriac -A MODULE worker` process; its output is collected for assertions."""

    def __init__(self, cwd: Path, env: dict[str, str], *args: str, app: str = "tasks_app",
                 command: str = "worker", argv: list[str] | None = None, program: str | None = None) -> None:
        self.cwd = cwd
        # argv: a whole command line (python myapp.py worker ...); program: another command line
        # tool with celeriac's (Celery's) options, e.g. `celery`
        self.cmd = argv or [program or celeriac_bin(), "-A", app, command, "--loglevel=info", *args]
        self.proc = subprocess.Popen(self.cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        regex = re.compile(pattern)

        def found() -> re.Match[str] | None:
            if self.proc.poll() is not None and not regex.search(self.output):
                raise AssertionError(f"worker exited ({self.proc.returncode}) before {pattern!r}:\n{self.output}")
            return regex.search(self.output)

        try:
            return wait_until(found, timeout, message=f"worker output {pattern!r}")  # type: ignore[no-any-return]
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- worker output ---\n{self.output}") from None

    def wait_ready(self, timeout: float = 30.0) -> "WorkerProcess":
        self.wait_for(r"\S+@\S+ ready\.", timeout)
        return self

    def children(self) -> list[int]:
        try:
            out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True,
                                 text=True).stdout
        except FileNotFoundError:
            return []
        return [int(p) for p in out.split()]

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Kill the worker's whole process group (the supervisor and its children)."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def terminate(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.proc.wait(5)
            raise AssertionError(f"worker did not stop within {timeout}s of SIGTERM:\n{self.output}") from None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.kill()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
