"""Private broker servers for the test session, on free loopback ports.

They are started once per session, each with its own data directory, and stopped at
the end. A missing binary skips the tests that need it - or fails them with CI=true.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def missing(binary: str, what: str) -> None:
    message = f"{binary} not found: install the Debian package {what} (scripts/test.sh does, as root)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and {message}", pytrace=False)
    pytest.skip(message)


class RedisServer:
    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            missing("redis-server", "redis-server")
        self.binary = str(binary)
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="celeriac-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.socket = str(self.dir / "redis.sock")
        self.start()

    def start(self) -> None:
        # appendonly + fsync always: a restart keeps every message a publisher was told about.
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--save", "", "--appendonly", "yes", "--appendfsync", "always", "--daemonize", "no",
             "--unixsocket", str(self.dir / "redis.sock"), "--unixsocketperm", "700",
             "--logfile", str(self.dir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.ping():
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {(self.dir / 'redis.log').read_text()[-2000:]}")
            time.sleep(0.05)
        raise RuntimeError("redis-server did not answer within 20 s")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def command(self, *parts: str) -> bytes:
        payload = f"*{len(parts)}\r\n".encode() + b"".join(
            f"${len(p.encode())}\r\n{p}\r\n".encode() for p in parts)
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(payload)
            return s.recv(65536)

    def flush(self) -> None:
        self.command("FLUSHALL")

    def stop(self) -> None:
        """A clean stop (SIGTERM: Redis writes its AOF and exits)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
