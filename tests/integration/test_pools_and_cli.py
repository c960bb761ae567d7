"""Thread and solo pools, result expiry, and the client commands against a real worker."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from celeriac import states
from helpers import celeriac_bin, wait_until


@pytest.mark.parametrize("pool", [["-P", "thread", "-c", "4"], ["-P", "solo"]])
def test_thread_and_solo_pools(tasks: Any, start_worker: Any, pool: list[str]) -> None:
    worker = start_worker(*pool)
    results = [tasks.add.delay(i, i) for i in range(200)]
    assert [r.get(timeout=20) for r in results] == [2 * i for i in range(200)]
    with pytest.raises(ValueError):
        tasks.fail.delay().get(timeout=10)
    asyncs = [tasks.async_sleep.delay(0.5, i) for i in range(20)]
    assert [r.get(timeout=20) for r in asyncs] == list(range(20))
    assert ("(thread)" in worker.output) or ("(solo)" in worker.output)


def test_result_expires_cleans_old_results(app_env: dict[str, str], tasks: Any, start_worker: Any,
                                            tmp_path: Path) -> None:
    (tmp_path / "short_lived.py").write_text(
        "from tasks_app import *  # noqa\nfrom tasks_app import app\napp.conf.result_expires = 1\n")
    env = dict(app_env, PYTHONPATH=f"{tmp_path}:{app_env['PYTHONPATH']}")
    start_worker("-c", "1", app="short_lived", env=env)
    result = tasks.add.delay(1, 1)
    assert result.get(timeout=10) == 2
    # A new handle each time: an AsyncResult remembers a final state once it has seen it.
    wait_until(lambda: tasks.add.AsyncResult(result.id).state == states.PENDING, 10, message="result expired")

    backend = tasks.app.backend

    def stored() -> int:  # what is physically left, not what reads filter out
        if hasattr(backend, "db"):
            table = f"{backend.db.schema}.results" if hasattr(backend.db, "schema") else "celeriac_results"
            return int(backend.db.read(lambda c: c.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]))
        return len(backend.client.keys(backend.keys.result("*"))) + len(backend.client.keys(backend.keys.done("*")))

    wait_until(lambda: stored() == 0, 10, message="expired results deleted")


def _cli(app_env: dict[str, str], cwd: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([celeriac_bin(), "-A", "tasks_app", *args], cwd=cwd, env=app_env, capture_output=True,
                          text=True, timeout=timeout)


def test_cli_call_wait_result_and_purge(app_env: dict[str, str], tasks: Any, start_worker: Any,
                                        tmp_path: Path) -> None:
    queued = _cli(app_env, tmp_path, "call", "tasks_app.add", "--args", "[2, 3]")
    assert queued.returncode == 0, queued.stderr
    task_id = queued.stdout.strip()
    assert "state: PENDING" in _cli(app_env, tmp_path, "result", task_id).stdout
    purged = _cli(app_env, tmp_path, "purge", "-f")
    assert "Purged 1 message" in purged.stdout, purged.stdout + purged.stderr
    start_worker("-c", "1")
    waited = _cli(app_env, tmp_path, "call", "tasks_app.add", "--args", "[2, 3]", "--kwargs", "{}", "--wait",
                  "--timeout", "10")
    assert waited.returncode == 0, waited.stderr
    new_id, answer = waited.stdout.strip().splitlines()
    assert answer == "SUCCESS: 5"
    shown = _cli(app_env, tmp_path, "result", new_id)
    assert "state: SUCCESS" in shown.stdout and "result: 5" in shown.stdout
    failed = _cli(app_env, tmp_path, "call", "tasks_app.fail", "--args", json.dumps(["cli"]), "--wait",
                  "--timeout", "10")
    assert failed.returncode == 1 and "FAILURE: ValueError('cli')" in failed.stdout
    assert "ValueError: cli" in failed.stderr
    failed_id = failed.stdout.splitlines()[0]
    with_tb = _cli(app_env, tmp_path, "result", failed_id, "--traceback")
    assert "state: FAILURE" in with_tb.stdout and "Traceback" in with_tb.stdout


def test_banner_names_everything(tasks: Any, start_worker: Any, urls: tuple[str, str]) -> None:
    worker = start_worker("-c", "2", "-Q", "celery,special")
    out = worker.output
    from celeriac.brokers import safe_url
    assert f"broker:      {safe_url(urls[0])}" in out and f"results:     {safe_url(urls[1])}" in out
    if urls[0].startswith("amqp"):
        assert "guest:guest@" not in out
    assert "concurrency: 2 (process)" in out
    assert "queues:      celery, special" in out
    for name in ("tasks_app.add", "tasks_app.fail", "tasks_app.async_sleep"):
        assert f". {name}" in out
