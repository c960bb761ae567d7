"""RabbitMQ-specific behaviour: long ETAs vs the consumer timeout, restarts, batches, URLs."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from celeriac import Celeriac
from celeriac.brokers import Outgoing
from celeriac.exceptions import OperationalError
from helpers import count_success, self_signed_cert, trace_lines, wait_until


@pytest.fixture
def broker_kind() -> str:
    return "amqp"




@pytest.fixture
def short_timeout_node() -> Iterator[Any]:
    """A second node whose consumer timeout is 3 s (checked every second)."""
    from servers import RabbitServer
    server = RabbitServer(consumer_timeout_ms=3000)
    yield server
    server.close()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_eta_longer_than_the_consumer_timeout(short_timeout_node: Any, start_worker: Any, app_env: dict[str, str],
                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """RabbitMQ cuts off consumers holding a message unacked past its consumer timeout.

    The timeout is checked on a coarse queue tick (about a minute), so the control consumer
    below is cut off after roughly 60-70 s; the celeriac task's ETA (90 s) is longer than
    that, and it still runs on time and once: it waited in the delay levels, not unacked.
    """
    import threading

    import pika
    url = short_timeout_node.url
    cut_off: dict[str, float] = {}

    def control() -> None:
        conn = pika.BlockingConnection(pika.URLParameters(f"amqp://guest:guest@127.0.0.1:{short_timeout_node.port}/%2F"))
        channel = conn.channel()
        channel.queue_declare("control", durable=True)
        channel.basic_publish("", "control", b"x")
        channel.basic_consume("control", lambda *_: None, auto_ack=False)
        started = time.monotonic()
        try:
            # pika's blocking channel records a broker-side close (PRECONDITION_FAILED "delivery
            # acknowledgement ... timed out", in the log) rather than raising it here.
            while time.monotonic() - started < 150 and channel.is_open:
                conn.process_data_events(time_limit=0.5)
            if channel.is_closed:
                cut_off["after"] = time.monotonic() - started
        finally:
            if conn.is_open:
                conn.close()

    watcher = threading.Thread(target=control, daemon=True)
    watcher.start()
    results_url = f"sqlite:///{tmp_path / 'results.db'}"
    env = dict(app_env, CELERIAC_BROKER_URL=url, CELERIAC_RESULT_BACKEND=results_url)
    monkeypatch.setenv("CELERIAC_BROKER_URL", url)
    monkeypatch.setenv("CELERIAC_RESULT_BACKEND", results_url)
    import tasks_app
    tasks_app.app._reset_connections()
    try:
        worker = start_worker("-c", "1", env=env)
        trace = tmp_path / "trace"
        sent = time.time()
        result = tasks_app.record.apply_async((str(trace), "late"), countdown=90)
        assert result.get(timeout=150) == "late"
        assert result.date_done.timestamp() >= sent + 90
        watcher.join(60)
        assert "after" in cut_off, "control: the node never enforced its consumer timeout"
        assert cut_off["after"] < 90, cut_off  # the ETA really was longer than the enforced timeout
        time.sleep(1)
        assert len(trace.read_text().splitlines()) == 1
        assert "closed the channel" not in worker.output and "timed out" not in worker.output
    finally:
        tasks_app.app._reset_connections()


@pytest.mark.timeout(300)
def test_rabbitmq_restart_under_load(tasks: Any, start_worker: Any, rabbit_server: Any, tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    workers = [start_worker("-c", "2", "-n", "a@host"), start_worker("-c", "2", "-n", "b@host")]
    # 20 ms a task: 15 s of work for 4 slots, well past the time 3000 publishes take, so the outage
    # comes mid-stream even when the workers keep up with the publisher (a plain default queue).
    results = [tasks.work.delay(str(trace), i, 0.02) for i in range(3000)]
    wait_until(lambda: len(trace_lines(trace)) >= 500, 60, message="500 done before the restart")
    rabbit_server.stop()
    done_during_outage = len(trace_lines(trace))
    assert done_during_outage < 3000, "the outage came too late to test anything"
    time.sleep(1)
    rabbit_server.start()
    wait_until(lambda: count_success(results) == 3000, 180, interval=0.25, message="3000 SUCCESS after restart")
    assert sorted(set(map(int, trace_lines(trace)))) == list(range(3000))
    for worker in workers:
        assert worker.proc.poll() is None, worker.output[-3000:]


def test_batch_publish_is_one_transaction(tasks: Any) -> None:
    from celeriac import protocol
    messages = [Outgoing("celery", protocol.pack(protocol.build_task_message(f"b{i}", "tasks_app.add", (i, i), {})))
                for i in range(1000)]
    started = time.perf_counter()
    tasks.app.publish(messages)
    elapsed = time.perf_counter() - started
    assert tasks.app.broker.queue_sizes(["celery"])["celery"]["ready"] == 1000
    assert elapsed < 10, elapsed


def _ctl(server: Any, *args: str) -> None:
    subprocess.run(["/usr/lib/rabbitmq/bin/rabbitmqctl", "-n", server.node, *args], env=server.env, check=True,
                   capture_output=True, timeout=60)


def test_url_with_user_password_and_vhost(rabbit_server: Any, start_worker: Any, app_env: dict[str, str],
                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _ctl(rabbit_server, "add_vhost", "celeriac-test")
    _ctl(rabbit_server, "add_user", "app", "pa55word")
    _ctl(rabbit_server, "set_permissions", "-p", "celeriac-test", "app", ".*", ".*", ".*")
    try:
        url = f"amqp://app:pa55word@127.0.0.1:{rabbit_server.port}/celeriac-test"
        results_url = f"sqlite:///{tmp_path / 'results.db'}"
        env = dict(app_env, CELERIAC_BROKER_URL=url, CELERIAC_RESULT_BACKEND=results_url)
        worker = start_worker("-c", "1", env=env)
        assert "pa55word" not in worker.output and f"amqp://app:**@127.0.0.1:{rabbit_server.port}/celeriac-test" \
            in worker.output
        monkeypatch.delenv("CELERIAC_BROKER_URL")
        monkeypatch.delenv("CELERIAC_RESULT_BACKEND")
        client = Celeriac("c", broker=url, backend=results_url, set_as_current=False)
        assert client.send_task("tasks_app.add", (20, 22)).get(timeout=15) == 42
        wrong = Celeriac("w", broker=f"amqp://app:nope@127.0.0.1:{rabbit_server.port}/celeriac-test",
                         backend=results_url, set_as_current=False, task_publish_retry=False)
        with pytest.raises(OperationalError) as info:
            wrong.send_task("tasks_app.add", (1, 1))
        assert "refused user 'app'" in str(info.value) and "nope" not in str(info.value)
        guest = Celeriac("g", broker=f"amqp://guest:wrong@127.0.0.1:{rabbit_server.port}//", backend=results_url,
                         set_as_current=False, task_publish_retry=False)
        with pytest.raises(OperationalError, match="only from localhost"):
            guest.send_task("tasks_app.add", (1, 1))
    finally:
        _ctl(rabbit_server, "delete_vhost", "celeriac-test")
        _ctl(rabbit_server, "delete_user", "app")


def test_tutorial_url_form_parses() -> None:
    from celeriac.transports.amqp.broker import AMQPBroker
    params = AMQPBroker._parameters("amqp://guest@localhost//", {})
    assert (params.host, params.port, params.virtual_host) == ("localhost", 5672, "/")
    assert params.credentials.username == "guest" and params.credentials.password == "guest"
    params = AMQPBroker._parameters("amqp://u:p%40ss@rabbit.example:5673/prod", {})
    assert (params.host, params.port, params.virtual_host, params.credentials.password) == \
        ("rabbit.example", 5673, "prod", "p@ss")
    assert params.heartbeat == 0  # liveness by TCP, so a long task never loses its message


def test_amqps_tls(start_worker: Any, app_env: dict[str, str], tmp_path: Path,
                   monkeypatch: pytest.MonkeyPatch) -> None:
    from servers import RabbitServer
    cert, key = self_signed_cert(tmp_path)
    server = RabbitServer(tls=(cert, key))
    try:
        url = f"amqps://guest:guest@127.0.0.1:{server.tls_port}//?ssl_ca_certs={cert}"
        results_url = f"sqlite:///{tmp_path / 'results.db'}"
        env = dict(app_env, CELERIAC_BROKER_URL=url, CELERIAC_RESULT_BACKEND=results_url)
        worker = start_worker("-c", "1", env=env)
        assert f"amqps://guest:**@127.0.0.1:{server.tls_port}//" in worker.output
        monkeypatch.delenv("CELERIAC_BROKER_URL")
        monkeypatch.delenv("CELERIAC_RESULT_BACKEND")
        client = Celeriac("tls", broker=url, backend=results_url, set_as_current=False)
        assert client.send_task("tasks_app.add", (40, 2)).get(timeout=15) == 42
        unverified = Celeriac("x", broker=f"amqps://guest:guest@127.0.0.1:{server.tls_port}//", backend=results_url,
                              set_as_current=False, task_publish_retry=False)
        with pytest.raises(OperationalError):  # a self-signed server is refused without its CA
            unverified.send_task("tasks_app.add", (1, 1))
    finally:
        server.close()
