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


def _port_clash(text: str) -> bool:
    """A server's start-up failure that a fresh port would avoid."""
    lowered = text.lower()
    return "already_used" in lowered or "eaddrinuse" in lowered or "address already in use" in lowered


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


# The queues the tests send to (RabbitMQ cannot list its queues over AMQP; a queue not named
# here keeps what a test left in it).
TEST_QUEUES = ["celery", "special", "other", "q", "elsewhere", "only-this-one", "x", "y", "updated", "task-queue",
               "side", "second", "reports", "periodic", "nowhere", "math", "later", "kwq", "first", "fast", "extra",
               "mine", "from-config", "from-class", "from-object", "from-marker", "from-app", "on-class"]
RABBIT_BIN = "/usr/lib/rabbitmq/bin"  # Debian's scripts that run as the calling user (no su)


class RabbitServer:
    """A private RabbitMQ node: own name, ports and data directory; stopped at the end."""

    def __init__(self, consumer_timeout_ms: int | None = None, tls: tuple[Path, Path] | None = None) -> None:
        binary = Path(RABBIT_BIN) / "rabbitmq-server"
        if not binary.exists():
            found = shutil.which("rabbitmq-server")
            if found is None:
                missing("rabbitmq-server", "rabbitmq-server")
        self.dir = Path(tempfile.mkdtemp(prefix="celeriac-rabbit-"))
        self.proc: subprocess.Popen[bytes] | None = None
        for attempt in range(3):  # a port taken by another test process between pick and bind: new ports
            self._configure(consumer_timeout_ms, tls)
            try:
                self.start()
                return
            except BaseException as exc:  # a test's timeout too: never leave a VM running behind
                self.stop()
                if attempt == 2 or not _port_clash(str(exc)):
                    shutil.rmtree(self.dir, ignore_errors=True)
                    raise
                shutil.rmtree(self.dir / "mnesia", ignore_errors=True)

    def _configure(self, consumer_timeout_ms: int | None, tls: tuple[Path, Path] | None) -> None:
        self.port, self.dist_port = free_port(), free_port()
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

    def start(self) -> None:
        self.proc = subprocess.Popen([str(Path(RABBIT_BIN) / "rabbitmq-server")], env=self.env,
                                     stdout=open(self.dir / "server.out", "ab"), stderr=subprocess.STDOUT,
                                     start_new_session=True, cwd=self.dir)  # a crash dump lands there
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
        """Delete the queues tests use, so each test starts empty - with their priority queues: a
        test's task left running at its end goes back to its queue, and a later test's worker
        took it from there (a 30 s task from `celeriac.priority.celery` kept one busy past its test)."""
        import pika
        conn = pika.BlockingConnection(pika.URLParameters(f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"))
        try:
            channel = conn.channel()
            for queue in [*TEST_QUEUES, *[f"celeriac.priority.{q}" for q in TEST_QUEUES], "celeriac.dead",
                          *[f"celeriac.delay.{i}" for i in range(32)]]:
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


class RabbitCluster:
    """Three private RabbitMQ nodes joined into one cluster (quorum queues, failover URLs).

    Each node is a full Erlang VM with its own name, ports and data directory; they share one
    Erlang cookie (a HOME of their own holding .erlang.cookie) so they may cluster. Started
    once per test session, and only when a test asks for it (it costs three VMs)."""

    SIZE = 3

    def __init__(self) -> None:
        if not (Path(RABBIT_BIN) / "rabbitmq-server").exists():
            missing("rabbitmq-server", "rabbitmq-server")
        self.dir = Path(tempfile.mkdtemp(prefix="celeriac-rabbit-cluster-"))
        cookie = self.dir / ".erlang.cookie"
        cookie.write_text(f"CELERIACTEST{os.getpid()}{random.randrange(10**9)}")
        cookie.chmod(0o400)
        # Ports are picked free but only taken when a VM binds them: another test process may
        # take one meanwhile (seen: a node's distribution port). Such a clash gets new ports.
        for attempt in range(3):
            try:
                self._boot(attempt)
                return
            except BaseException as exc:  # a test's timeout too: never leave three VMs running behind
                if attempt == 2 or not _port_clash(str(exc)):
                    self.close()
                    raise
                self._stop_nodes()

    def _boot(self, attempt: int) -> None:
        self.base = self.dir / f"boot{attempt}"  # a failed boot's data stays out of the way
        self.ports = [free_port() for _ in range(self.SIZE)]
        self.nodes = [f"celeriac-q{i + 1}-{os.getpid()}-{self.ports[i]}@localhost" for i in range(self.SIZE)]
        self.envs: list[dict[str, str]] = []
        for i, (node, port) in enumerate(zip(self.nodes, self.ports, strict=True)):
            base = self.base / f"node{i + 1}"
            base.mkdir(parents=True)
            (base / "rabbitmq.conf").write_text(
                f"listeners.tcp.default = 127.0.0.1:{port}\nloopback_users.guest = true\n")
            (base / "enabled_plugins").write_text("[].\n")
            self.envs.append(dict(
                os.environ, HOME=str(self.dir), RABBITMQ_NODENAME=node, RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
                RABBITMQ_NODE_PORT=str(port), RABBITMQ_DIST_PORT=str(free_port()),
                RABBITMQ_MNESIA_BASE=str(base / "mnesia"), RABBITMQ_LOG_BASE=str(base / "log"),
                RABBITMQ_CONFIG_FILE=str(base / "rabbitmq"),
                RABBITMQ_ENABLED_PLUGINS_FILE=str(base / "enabled_plugins"),
                RABBITMQ_PID_FILE=str(base / "pid")))
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * self.SIZE
        self.urls = [f"amqp://guest:guest@127.0.0.1:{port}//" for port in self.ports]
        self.url = ";".join(self.urls)  # the failover URL, node 1 first
        for i in range(self.SIZE):  # the VMs boot side by side
            self._spawn(i)
        for i in range(self.SIZE):
            self._wait(i)
        for i in range(1, self.SIZE):
            self.ctl(i, "stop_app")
            self.ctl(i, "join_cluster", self.nodes[0])
            self.ctl(i, "start_app")
            self._wait(i)

    def _spawn(self, i: int) -> None:
        base = self.base / f"node{i + 1}"
        self.procs[i] = subprocess.Popen([str(Path(RABBIT_BIN) / "rabbitmq-server")], env=self.envs[i],
                                         stdout=open(base / "server.out", "ab"), stderr=subprocess.STDOUT,
                                         start_new_session=True, cwd=base)  # a crash dump lands there

    def _wait(self, i: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ping(i):
                return
            proc = self.procs[i]
            if proc is not None and proc.poll() is not None:
                out = (self.base / f"node{i + 1}" / "server.out").read_text()[-3000:]
                raise RuntimeError(f"RabbitMQ node {self.nodes[i]} exited: {out}")
            time.sleep(0.2)
        raise RuntimeError(f"RabbitMQ node {self.nodes[i]} did not accept AMQP connections within {timeout} s")

    def ping(self, i: int) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.ports[i]), timeout=1) as s:
                s.sendall(b"AMQP\x00\x00\x09\x01")
                return s.recv(8)[:1] == b"\x01"
        except OSError:
            return False

    def ctl(self, i: int, *args: str, timeout: float = 120) -> str:
        """rabbitmqctl against node i (its own environment: the shared cookie)."""
        done = subprocess.run([str(Path(RABBIT_BIN) / "rabbitmqctl"), "-n", self.nodes[i], *args],
                              env=self.envs[i], capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} on {self.nodes[i]} failed: "
                               f"{done.stdout[-1500:]} {done.stderr[-1500:]}")
        return done.stdout

    def kill(self, i: int) -> None:
        """SIGKILL node i's whole VM: no goodbye to its clients or its peers."""
        proc = self.procs[i]
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)

    def start(self, i: int) -> None:
        """Bring node i back (it rejoins the cluster it was part of)."""
        if not self.ping(i):
            self._spawn(i)
            self._wait(i)

    def running_nodes(self, i: int = 0) -> str:
        return self.ctl(i, "eval", "rabbit_nodes:all_running().")

    def reset(self) -> None:
        """Delete the queues tests use (through any running node), so each test starts empty."""
        import pika
        port = next(p for i, p in enumerate(self.ports) if self.ping(i))
        conn = pika.BlockingConnection(pika.URLParameters(f"amqp://guest:guest@127.0.0.1:{port}/%2F"))
        try:
            channel = conn.channel()
            for queue in ["celery", "special", "celeriac.dead", "celeriac.priority.celery",
                          "celeriac.priority.special", "qq", "celeriac.priority.qq", "warm-up"]:
                channel.queue_delete(queue)
        finally:
            conn.close()

    def close(self) -> None:
        self._stop_nodes()
        if not os.environ.get("CELERIAC_KEEP_CLUSTER_LOGS"):  # set it to read the nodes' logs after a run
            shutil.rmtree(self.dir, ignore_errors=True)

    def _stop_nodes(self) -> None:
        for proc in getattr(self, "procs", []):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in getattr(self, "procs", []):
            if proc is None:
                continue
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def _redis_binaries() -> tuple[str, str]:
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None:
        missing("redis-server", "redis-server")
    if cli is None:
        missing("redis-cli", "redis-tools")
    return str(server), str(cli)


def _redis_command(port: int, *parts: str, timeout: float = 5) -> bytes:
    payload = f"*{len(parts)}\r\n".encode() + b"".join(f"${len(p.encode())}\r\n{p}\r\n".encode() for p in parts)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(payload)
        return s.recv(65536)


class _RedisNode:
    """One private redis-server process with its own directory and log, started by `start()`."""

    def __init__(self, binary: str, root: Path, name: str, *extra: str) -> None:
        self.binary, self.port, self.extra = binary, free_port(), list(extra)
        self.dir = root / name
        self.dir.mkdir(parents=True)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [self.binary, *args, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--daemonize", "no", "--logfile", str(self.dir / "redis.log"), *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if _redis_command(self.port, "PING", timeout=0.5).startswith(b"+PONG"):
                    return
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {(self.dir / 'redis.log').read_text()[-2000:]}")
            time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not answer within 20 s")

    def command(self, *parts: str) -> bytes:
        return _redis_command(self.port, *parts)

    def info(self, section: str) -> dict[str, str]:
        text = self.command("INFO", section).decode(errors="replace")
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("$"))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class RedisClusterServer:
    """A private Redis Cluster: three masters on loopback (no replicas), made once per session
    with `redis-cli --cluster create`. Each node has its own cluster bus port."""

    def __init__(self, masters: int = 3) -> None:
        binary, cli = _redis_binaries()
        self.root = Path(tempfile.mkdtemp(prefix="celeriac-redis-cluster-"))
        self.nodes = [_RedisNode(binary, self.root, f"node{i}", "--cluster-enabled", "yes",
                                 "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000",
                                 "--save", "", "--appendonly", "yes", "--appendfsync", "always")
                      for i in range(masters)]
        try:
            for node in self.nodes:
                node.start("--cluster-port", str(free_port()))
            addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
            made = subprocess.run([cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
                                  capture_output=True, timeout=60)
            if made.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed: {made.stdout[-2000:]!r} "
                                   f"{made.stderr[-2000:]!r}")
            deadline = time.monotonic() + 30
            while not all(b"cluster_state:ok" in n.command("CLUSTER", "INFO") for n in self.nodes):
                if time.monotonic() > deadline:
                    raise RuntimeError("the Redis Cluster did not reach cluster_state:ok within 30 s")
                time.sleep(0.1)
        except BaseException:
            self.close()
            raise
        self.url = "redis+cluster://" + ";".join(f"127.0.0.1:{n.port}" for n in self.nodes[:2])

    def ping(self) -> bool:
        try:
            return all(n.command("PING").startswith(b"+PONG") for n in self.nodes)
        except OSError:
            return False

    def flush(self) -> None:
        for node in self.nodes:
            node.command("FLUSHALL")

    def close(self) -> None:
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class RedisSentinelServers:
    """A private master, one replica and three sentinels watching it as `mymaster` (quorum 2).
    The sentinels notice a failure after 2 s; SENTINEL FAILOVER promotes the replica at once."""

    MASTER = "mymaster"

    def __init__(self) -> None:
        binary, _cli = _redis_binaries()
        self.root = Path(tempfile.mkdtemp(prefix="celeriac-redis-sentinel-"))
        durable = ("--save", "", "--appendonly", "yes", "--appendfsync", "always")
        self.master = _RedisNode(binary, self.root, "master", *durable)
        self.replica = _RedisNode(binary, self.root, "replica", *durable)
        self.sentinels = [_RedisNode(binary, self.root, f"sentinel{i}") for i in range(3)]
        try:
            self.master.start()
            self.replica.start("--replicaof", "127.0.0.1", str(self.master.port))
            for sentinel in self.sentinels:
                conf = sentinel.dir / "sentinel.conf"
                conf.write_text(f"sentinel monitor {self.MASTER} 127.0.0.1 {self.master.port} 2\n"
                                f"sentinel down-after-milliseconds {self.MASTER} 2000\n"
                                f"sentinel failover-timeout {self.MASTER} 10000\n"
                                f"sentinel parallel-syncs {self.MASTER} 1\n")
                sentinel.start(str(conf), "--sentinel")
            self.wait_synced()
            deadline = time.monotonic() + 30
            while not all(self._sentinel_sees_all(s) for s in self.sentinels):
                if time.monotonic() > deadline:
                    raise RuntimeError("the sentinels did not find the replica and each other within 30 s")
                time.sleep(0.2)
        except BaseException:
            self.close()
            raise
        self.url = ";".join(f"sentinel://127.0.0.1:{s.port}" for s in self.sentinels)

    def _sentinel_sees_all(self, sentinel: _RedisNode) -> bool:
        text = sentinel.info("sentinel").get("master0", "")
        return "status=ok" in text and "slaves=1" in text and "sentinels=3" in text

    def wait_synced(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.replica.info("replication").get("master_link_status", "").strip() != "up":
            if time.monotonic() > deadline:
                raise RuntimeError("the replica did not sync with the master within 30 s")
            time.sleep(0.1)

    def current_master_port(self) -> int:
        reply = self.sentinels[0].command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.MASTER).decode()
        return int(reply.split("\r\n")[-2])

    def node_on(self, port: int) -> _RedisNode:
        return next(n for n in (self.master, self.replica) if n.port == port)

    def failover(self) -> None:
        """SENTINEL FAILOVER: the replica becomes the master, the old master its replica."""
        reply = self.sentinels[0].command("SENTINEL", "FAILOVER", self.MASTER)
        if not reply.startswith(b"+OK"):
            raise RuntimeError(f"SENTINEL FAILOVER answered {reply!r}")

    def flush(self) -> None:
        self.node_on(self.current_master_port()).command("FLUSHALL")

    def close(self) -> None:
        for node in [*self.sentinels, self.replica, self.master]:
            node.stop()
        shutil.rmtree(self.root, ignore_errors=True)


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

    def __init__(self, settings: dict[str, str] | None = None) -> None:
        self.settings = settings or {}  # extra server settings (-c name=value)
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
             "-c", "max_connections=300", "-c", "shared_buffers=64MB",
             *[arg for name, value in self.settings.items() for arg in ("-c", f"{name}={value}")]],
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
