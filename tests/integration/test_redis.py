"""Redis-specific behaviour: restarts under load, many workers, URLs, prefixes, clear errors."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from celeriac import Celeriac, group, states
from celeriac.exceptions import OperationalError
from helpers import celeriac_bin, count_success, self_signed_cert, trace_lines, wait_until


@pytest.fixture
def broker_kind() -> str:
    return "redis"




def test_kill_9_worker_mid_run_of_2000(tasks: Any, start_worker: Any, tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    results = [tasks.work.delay(str(trace), i, 0.001) for i in range(2000)]
    first = start_worker("-c", "2")
    wait_until(lambda: len(trace_lines(trace)) >= 300, 30, message="300 done")
    first.kill(signal.SIGKILL)
    first.proc.wait(10)
    assert len(trace_lines(trace)) < 2000
    start_worker("-c", "2")
    wait_until(lambda: count_success(results) == 2000, 120, interval=0.2, message="2000 SUCCESS")
    assert sorted(set(map(int, trace_lines(trace)))) == list(range(2000))


def test_redis_restart_under_load(tasks: Any, start_worker: Any, redis_server: Any, tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    workers = [start_worker("-c", "2", "-n", "a@host"), start_worker("-c", "2", "-n", "b@host")]
    # One group: published in a fraction of a second, so the outage finds most of the 5,000 waiting
    # (sent one by one on a loaded machine, the workers kept up and finished before it: seen in CI).
    results = group(tasks.work.s(str(trace), i, 0.005) for i in range(5000)).apply_async().results
    wait_until(lambda: len(trace_lines(trace)) >= 800, 60, message="800 done before the restart")
    redis_server.stop()
    time.sleep(2)
    done_during_outage = len(trace_lines(trace))
    assert done_during_outage < 5000, "the outage came too late to test anything"
    redis_server.start()
    wait_until(lambda: count_success(results) == 5000, 180, interval=0.25, message="5000 SUCCESS after restart")
    assert sorted(set(map(int, trace_lines(trace)))) == list(range(5000))
    for worker in workers:
        assert worker.proc.poll() is None, worker.output[-3000:]
        assert "cannot fetch from redis://127.0.0.1" in worker.output or "retrying" in worker.output


def test_delayed_tasks_move_exactly_once_with_several_workers(tasks: Any, start_worker: Any,
                                                              tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    for name in ("a", "b", "c"):
        start_worker("-c", "2", "-n", f"{name}@host")
    sent = time.time()
    results = [tasks.work.apply_async((str(trace), i, 0), countdown=2) for i in range(300)]
    wait_until(lambda: count_success(results) == 300, 30, interval=0.1, message="300 delayed tasks done")
    values = list(map(int, trace_lines(trace)))
    assert sorted(values) == list(range(300)), "a delayed task ran twice or never"
    assert min(r.date_done.timestamp() for r in results) >= sent + 2


def test_key_prefix_isolates_two_apps(tasks: Any, start_worker: Any, redis_server: Any,
                                      app_env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "other_app.py").write_text(
        "from tasks_app import *  # noqa\nfrom tasks_app import app\n"
        "app.conf.broker_transport_options = {'global_keyprefix': 'other'}\n")
    env = dict(app_env, PYTHONPATH=f"{tmp_path}:{app_env['PYTHONPATH']}")
    start_worker("-c", "1", app="other_app", env=env)
    mine = tasks.add.delay(1, 2)
    time.sleep(0.5)
    assert mine.state == states.PENDING  # the other app's worker does not see our queue
    other = Celeriac("other", broker=redis_server.url, backend=redis_server.url, set_as_current=False,
                     broker_transport_options={"global_keyprefix": "other"})
    assert other.send_task("tasks_app.add", (5, 5)).get(timeout=10) == 10
    start_worker("-c", "1")
    assert mine.get(timeout=10) == 3


def test_url_forms_password_db_and_unix_socket(tasks: Any, start_worker: Any, redis_server: Any,
                                               app_env: dict[str, str]) -> None:
    redis_server.command("ACL", "SETUSER", "app", "on", ">s3cret-pw", "~*", "&*", "+@all")
    with_password = f"redis://app:s3cret-pw@127.0.0.1:{redis_server.port}/3"
    env = dict(app_env, CELERIAC_BROKER_URL=with_password, CELERIAC_RESULT_BACKEND=f"unix://{redis_server.socket}?db=4")
    worker = start_worker("-c", "1", env=env)
    assert "s3cret-pw" not in worker.output
    assert f"redis://app:**@127.0.0.1:{redis_server.port}/3" in worker.output
    os.environ.pop("CELERIAC_BROKER_URL", None)  # restored by the fixture's monkeypatch
    os.environ.pop("CELERIAC_RESULT_BACKEND", None)
    client = Celeriac("c", broker=with_password, backend=f"unix://{redis_server.socket}?db=4", set_as_current=False)
    result = client.send_task("tasks_app.add", (20, 22))
    assert result.get(timeout=10) == 42
    import redis
    assert redis.Redis(port=redis_server.port, db=3).exists("celeriac:{celery}:seq")  # the broker used db 3
    assert redis.Redis(port=redis_server.port, db=4).exists(f"celeriac:{{{result.id}}}:r")  # results db 4
    assert not redis.Redis(port=redis_server.port, db=0).exists("celeriac:{celery}:seq")
    wrong = Celeriac("w", broker=f"redis://app:WRONG@127.0.0.1:{redis_server.port}/3", set_as_current=False,
                     task_publish_retry=False)
    with pytest.raises(OperationalError) as info:
        wrong.send_task("tasks_app.add", (1, 1))
    assert "credentials" in str(info.value) and "WRONG" not in str(info.value)


def test_unreachable_redis_is_a_clear_error(tmp_path: Path) -> None:
    from servers import free_port
    url = f"redis://:topsecret@127.0.0.1:{free_port()}/0"
    app = Celeriac("down", broker=url, backend=url, set_as_current=False,
                   task_publish_retry_policy={"max_retries": 1, "interval_start": 0.05})
    started = time.monotonic()
    with pytest.raises(OperationalError) as info:
        app.send_task("x.y", (1,))
    text = str(info.value)
    assert "topsecret" not in text and ":**@127.0.0.1" in text
    assert "after 2 attempt(s)" in text and "cannot reach Redis" in text
    assert time.monotonic() - started < 15
    worker = subprocess.run([celeriac_bin(), "-b", url, "--result-backend", url, "-A", "tasks_app", "worker"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60,
                            env=dict(os.environ, PYTHONPATH=str(Path(__file__).parent)))
    assert worker.returncode == 1
    assert "cannot reach the broker" in worker.stderr and "topsecret" not in worker.stderr + worker.stdout


def test_dead_letters_visible_with_the_cli(tasks: Any, start_worker: Any, app_env: dict[str, str],
                                           tmp_path: Path) -> None:
    worker = start_worker("-c", "1")
    poison = tasks.kill_self.delay()
    with pytest.raises(Exception, match="delivered 6 times"):
        poison.get(timeout=60)
    wait_until(tasks.app.broker.dead_letters, 10, message="a dead letter")
    worker.terminate()  # or it takes the requeued poison again and dead-letters it anew
    listing = subprocess.run([celeriac_bin(), "-A", "tasks_app", "dead-letters"], cwd=tmp_path, env=app_env,
                             capture_output=True, text=True, timeout=30)
    assert "tasks_app.kill_self" in listing.stdout and poison.id in listing.stdout, listing.stdout
    requeued = subprocess.run([celeriac_bin(), "-A", "tasks_app", "dead-letters", "--requeue", "all"],
                              cwd=tmp_path, env=app_env, capture_output=True, text=True, timeout=30)
    assert "Requeued 1 message" in requeued.stdout
    assert tasks.app.broker.dead_letters() == []


def test_rediss_tls_url(tasks: Any, start_worker: Any, app_env: dict[str, str], tmp_path: Path,
                       monkeypatch: pytest.MonkeyPatch) -> None:
    from servers import free_port
    cert, key = self_signed_cert(tmp_path)
    port = free_port()
    server = subprocess.Popen(["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
                               "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file",
                               str(cert), "--tls-auth-clients", "no", "--save", "", "--appendonly", "no",
                               "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"rediss://127.0.0.1:{port}/0?ssl_cert_reqs=required&ssl_ca_certs={cert}"
        monkeypatch.delenv("CELERIAC_BROKER_URL")  # the environment would override the app's own URL
        monkeypatch.delenv("CELERIAC_RESULT_BACKEND")
        client = Celeriac("tls", broker=url, backend=url, set_as_current=False)
        wait_until(lambda: _answers(client), 10, message="TLS redis up")
        worker = start_worker("-c", "1", env=dict(app_env, CELERIAC_BROKER_URL=url, CELERIAC_RESULT_BACKEND=url))
        assert "rediss://127.0.0.1" in worker.output
        assert client.send_task("tasks_app.add", (40, 2)).get(timeout=10) == 42
        plain = Celeriac("plain", broker=f"redis://127.0.0.1:{port}/0", set_as_current=False,
                         task_publish_retry=False)
        with pytest.raises(OperationalError):  # the server speaks TLS only
            plain.send_task("tasks_app.add", (1, 1))
    finally:
        server.terminate()
        server.wait(10)


def _answers(app: Celeriac) -> bool:
    try:
        app.broker.queue_sizes(["celery"])
        return True
    except OperationalError:
        return False
