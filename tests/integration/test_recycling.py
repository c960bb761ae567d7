"""--max-tasks-per-child and --max-memory-per-child replace pool processes without losing work."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from helpers import wait_until


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_max_tasks_per_child(tasks: Any, start_worker: Any, tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    worker = start_worker("-c", "1", "--max-tasks-per-child", "10", "--prefetch-multiplier", "4")
    pids = [r.get(timeout=30) for r in [tasks.whoami.delay(str(trace), i) for i in range(50)]]
    assert sorted(map(int, _lines(trace))) == list(range(50))  # each ran once: none lost, none doubled
    runs: dict[int, int] = {}
    for pid in pids:
        runs[pid] = runs.get(pid, 0) + 1
    assert len(runs) >= 5 and max(runs.values()) <= 10, runs
    assert worker.proc.poll() is None
    assert "exited unexpectedly" not in worker.output


def test_max_memory_per_child(tasks: Any, start_worker: Any, tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    start_worker("-c", "1", "--max-memory-per-child", str(150 * 1024))
    hog_pid = tasks.hog.delay(200).get(timeout=30)  # 200 MB > 150 MB: the process is replaced after it
    after = [r.get(timeout=30) for r in [tasks.whoami.delay(str(trace), i) for i in range(5)]]
    assert hog_pid not in after
    assert len(set(after)) == 1  # the fresh process stays under the limit and keeps serving
    assert sorted(map(int, _lines(trace))) == list(range(5))


def test_autoscale_grows_with_the_queue_and_shrinks_when_idle(tasks: Any, start_worker: Any,
                                                              tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    worker = start_worker("--autoscale", "4,1")
    stats = tasks.app.control.inspect(timeout=2.0).stats
    assert next(iter(stats().values()))["pool"]["max-concurrency"] == 1
    results = [tasks.work.delay(str(trace), i, 0.5) for i in range(24)]
    worker.wait_for(r"growing the pool to 4", 20)
    assert [r.get(timeout=60) for r in results] == list(range(24))
    assert sorted(map(int, _lines(trace))) == list(range(24))  # each ran once
    worker.wait_for(r"shrinking the pool to 1", 30)
    wait_until(lambda: next(iter(stats().values()))["pool"]["max-concurrency"] == 1, 20, message="pool of 1")
    assert tasks.add.delay(2, 2).get(timeout=20) == 4
