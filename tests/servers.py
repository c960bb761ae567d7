"""Private broker servers for the test session, on free loopback ports.

They are started once per session, each with its own data directory, and stopped at
the end. A missing binary skips the tests that need it - or fails them with CI=true.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range. Servers here are stopped and
    started again on their port (restart tests); a port from the ephemeral range (bind to 0)
    can meanwhile be taken as the local port of some outgoing connection, and the restart
    then fails with EADDRINUSE - more often with two test processes connecting at once."""
    low = _ephemeral_range()[0]
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(max(1024, low - 12000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free loopback port found below {low}")


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


RABBIT_BIN = "/usr/lib/rabbitmq/bin"  # Debian's scripts that run as the calling user (no su)


class RabbitServer:
    """A private RabbitMQ node: own name, ports and data directory; stopped at the end."""

    def __init__(self, consumer_timeout_ms: int | None = None, tls: tuple[Path, Path] | None = None) -> None:
        binary = Path(RABBIT_BIN) / "rabbitmq-server"
        if not binary.exists():
            found = shutil.which("rabbitmq-server")
            if found is None:
                missing("rabbitmq-server", "rabbitmq-server")
        self.port, self.dist_port = free_port(), free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="celeriac-rabbit-"))
        self.node = f"celeriac-test-{os.getpid()}-{self.port}@localhost"
        lines = [f"listeners.tcp.default = 127.0.0.1:{self.port}", "loopback_users.guest = true"]
        if consumer_timeout_ms is not None:
            lines.append(f"consumer_timeout = {consumer_timeout_ms}")
        self.tls_port = None
        if tls is not None:  # (certificate, key): an extra TLS listener, verified by clients only
            self.tls_port = free_port()
            lines += [f"listeners.ssl.default = 127.0.0.1:{self.tls_port}", f"ssl_options.cacertfile = {tls[0]}",
                      f"ssl_options.certfile = {tls[0]}", f"ssl_options.keyfile = {tls[1]}",
                      "ssl_options.verify = verify_none", "ssl_options.fail_if_no_peer_cert = false"]
        (self.dir / "rabbitmq.conf").write_text("\n".join(lines) + "\n")
        # Check consumer timeouts every second (default: every minute), so a test sees them.
        (self.dir / "advanced.config").write_text("[{rabbit, [{channel_tick_interval, 1000}]}].\n")
        (self.dir / "enabled_plugins").write_text("[].\n")
        self.env = dict(os.environ, RABBITMQ_NODENAME=self.node, RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
                        RABBITMQ_NODE_PORT=str(self.port), RABBITMQ_DIST_PORT=str(self.dist_port),
                        RABBITMQ_MNESIA_BASE=str(self.dir / "mnesia"), RABBITMQ_LOG_BASE=str(self.dir / "log"),
                        RABBITMQ_CONFIG_FILE=str(self.dir / "rabbitmq"),
                        RABBITMQ_ADVANCED_CONFIG_FILE=str(self.dir / "advanced.config"),
                        RABBITMQ_ENABLED_PLUGINS_FILE=str(self.dir / "enabled_plugins"),
                        RABBITMQ_PID_FILE=str(self.dir / "pid"))
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}//"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen([str(Path(RABBIT_BIN) / "rabbitmq-server")], env=self.env,
                                     stdout=open(self.dir / "server.out", "ab"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.ping():
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"rabbitmq-server exited: {(self.dir / 'server.out').read_text()[-3000:]}")
            time.sleep(0.2)
        raise RuntimeError("RabbitMQ did not accept AMQP connections within 90 s")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"AMQP\x00\x00\x09\x01")
                return s.recv(8)[:1] == b"\x01"  # a Connection.Start frame
        except OSError:
            return False

    def reset(self) -> None:
        """Delete the queues tests use, so each test starts empty."""
        import pika
        conn = pika.BlockingConnection(pika.URLParameters(f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"))
        try:
            channel = conn.channel()
            for queue in ["celery", "special", "celeriac.dead", *[f"celeriac.delay.{i}" for i in range(32)]]:
                channel.queue_delete(queue)
        finally:
            conn.close()

    def stop(self) -> None:
        """A clean stop (SIGTERM: the Erlang VM shuts the node down and persists its queues)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _postgres_bin() -> Path | None:
    """Debian's server binaries (/usr/lib/postgresql/<version>/bin), newest version first."""
    root = Path("/usr/lib/postgresql")
    versions = sorted((p for p in root.glob("*/bin") if (p / "postgres").exists()),
                      key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True)
    return versions[0] if versions else None


class PostgresServer:
    """A private PostgreSQL cluster: initdb into a temporary directory, `postgres` on a free
    loopback port, default durability (fsync on). As root it runs as the `postgres` system
    user (initdb refuses to run as root)."""

    def __init__(self) -> None:
        bindir = _postgres_bin()
        if bindir is None:
            missing("postgres", "postgresql")
        assert bindir is not None
        self.bindir = bindir
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="celeriac-postgres-"))
        self.data = self.dir / "data"
        self.user_prefix: list[str] = []
        if os.geteuid() == 0:
            import pwd
            owner = pwd.getpwnam("postgres")
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
            self.user_prefix = ["runuser", "-u", "postgres", "--"]
        subprocess.run([*self.user_prefix, str(bindir / "initdb"), "-D", str(self.data), "-U", "celeriac",
                        "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"],
                       check=True, capture_output=True, timeout=120)
        self.url = f"postgresql://celeriac@127.0.0.1:{self.port}/postgres"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        log = open(self.dir / "server.log", "ab")
        self.proc = subprocess.Popen(
            [*self.user_prefix, str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port),
             "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.dir}",
             "-c", "max_connections=300", "-c", "shared_buffers=64MB"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.ping():
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited: {(self.dir / 'server.log').read_text()[-3000:]}")
            time.sleep(0.05)
        raise RuntimeError("PostgreSQL did not accept connections within 60 s")

    def ping(self) -> bool:
        try:
            import psycopg
            with psycopg.connect(self.url, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except Exception:  # noqa: BLE001 - starting up, stopped, or not reachable
            return False

    def flush(self) -> None:
        """Empty every celeriac table (of every schema), so each test starts empty."""
        import psycopg
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("SET lock_timeout = '20s'")
            tables = [f'"{s}"."{t}"' for s, t in conn.execute(
                "SELECT schemaname, tablename FROM pg_tables WHERE schemaname LIKE 'celeriac%' "
                "AND tablename <> 'schema_version'")]
            # DELETE, not TRUNCATE: a few rows each, and TRUNCATE makes (and fsyncs) new files
            # for every table and index - a second per test.
            with conn.transaction():
                for table in tables:
                    conn.execute(f"DELETE FROM {table}")

    def stop(self, fast: bool = True) -> None:
        """A clean stop (SIGINT: fast shutdown, open transactions rolled back, all data kept)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT if fast else signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGQUIT)
                self.proc.wait(10)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
