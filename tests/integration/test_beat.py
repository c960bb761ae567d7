"""celeriac beat with real processes: each tick sent once across restarts, kill -9 and replicas.

The schedule lives in the environment (see tasks_app.py): every entry runs
tasks_app.record_tick, which writes one JSON line per execution with the tick's instant
(the `periodic_tick` header) - so a repeated or skipped tick shows in the file.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from helpers import WorkerProcess, celeriac_bin, wait_until

pytestmark = pytest.mark.timeout(180)


def beat_env(app_env: dict[str, str], tmp_path: Path, schedule: dict[str, list[Any]], lease: float = 2.0,
             missed_after: float | None = None) -> dict[str, str]:
    env = dict(app_env)
    env["BEAT_TEST_SCHEDULE"] = json.dumps(schedule)
    env["BEAT_TEST_FILE"] = str(tmp_path / "ticks.jsonl")
    env["BEAT_TEST_LEASE"] = str(lease)
    if missed_after is not None:
        env["BEAT_TEST_MISSED_AFTER"] = str(missed_after)
    return env


def recorded(tmp_path: Path, entry: str | None = None) -> list[dict[str, Any]]:
    path = tmp_path / "ticks.jsonl"
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if entry is None or r["entry"] == entry]


def wait_ticks(tmp_path: Path, count: int, entry: str | None = None, timeout: float = 30.0,
               after: float = 0.0) -> list[dict[str, Any]]:
    return wait_until(lambda: (rows := [r for r in recorded(tmp_path, entry) if r["tick"] > after])
                      and len(rows) >= count and rows, timeout, message=f"{count} ticks of {entry or 'any entry'}")


def assert_each_tick_once(rows: list[dict[str, Any]], every: float) -> list[float]:
    """Ticks form one unbroken series (none skipped) and none ran twice."""
    ticks = sorted(r["tick"] for r in rows)
    assert len({r["id"] for r in rows}) == len(rows), f"a tick ran twice: {rows}"
    assert len(set(ticks)) == len(ticks), f"a tick ran twice: {ticks}"
    gaps = [round(b - a, 6) for a, b in zip(ticks, ticks[1:], strict=False)]
    assert all(g == pytest.approx(every, abs=1e-6) for g in gaps), f"ticks skipped or doubled: gaps {gaps}"
    return ticks


@pytest.fixture
def start_beat(tmp_path: Path) -> Any:
    beats: list[WorkerProcess] = []

    def start(env: dict[str, str], *args: str) -> WorkerProcess:
        beat = WorkerProcess(tmp_path, env, *args, command="beat")
        beats.append(beat)
        beat.wait_for(r"beat \S+: \d+ entr")
        return beat

    yield start
    for beat in beats:
        beat.stop()


def leader_pid(tasks: Any) -> int | None:
    from celeriac.beat import schedule_store
    holder = schedule_store(tasks.app, "tasks_app").lease_state().holder
    return int(holder.split(":")[1]) if holder else None


@pytest.mark.parametrize("broker_kind", ["sqlite", "redis", "amqp", "postgres"])
def test_beat_sends_each_tick_once(broker_kind: str, app_env: dict[str, str], tmp_path: Path,
                                   start_worker: Callable[..., WorkerProcess], start_beat: Any) -> None:
    env = beat_env(app_env, tmp_path, {"every-second": [1, "run_once"], "every-2s": [2, "run_once"]})
    start_worker("-c", "2")
    beat = start_beat(env)
    wait_ticks(tmp_path, 5, "every-second")
    wait_ticks(tmp_path, 2, "every-2s")
    assert beat.terminate() == 0
    assert "handed over the lead" in beat.output
    assert_each_tick_once(recorded(tmp_path, "every-second"), 1.0)
    assert_each_tick_once(recorded(tmp_path, "every-2s"), 2.0)
    for row in recorded(tmp_path):
        assert row["at"] - row["tick"] < 1.0, f"tick ran {row['at'] - row['tick']:.2f}s late: {row}"


@pytest.mark.parametrize("broker_kind", ["sqlite", "redis", "postgres"])
@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_restart_neither_refires_nor_skips(broker_kind: str, how: str, app_env: dict[str, str], tmp_path: Path,
                                           start_worker: Callable[..., WorkerProcess], start_beat: Any) -> None:
    env = beat_env(app_env, tmp_path, {"every-second": [1, "run_once"]}, lease=2.0)
    start_worker("-c", "2")
    first = start_beat(env)
    before = wait_ticks(tmp_path, 3)
    if how == "SIGTERM":
        assert first.terminate() == 0
    else:
        first.kill(signal.SIGKILL)
        first.proc.wait(10)
    last_before = max(r["tick"] for r in recorded(tmp_path))
    second = start_beat(env)
    wait_ticks(tmp_path, 3, after=last_before + 1.5)
    assert second.terminate() == 0
    rows = recorded(tmp_path)
    assert len(rows) > len(before)
    assert_each_tick_once(rows, 1.0)


@pytest.mark.parametrize("broker_kind", ["sqlite", "redis", "postgres"])
def test_missed_ticks_follow_the_entry_policy(broker_kind: str, app_env: dict[str, str], tmp_path: Path,
                                              start_worker: Callable[..., WorkerProcess], start_beat: Any) -> None:
    env = beat_env(app_env, tmp_path, {"once": [1, "run_once"], "skipper": [1, "skip"]}, lease=1.0,
                   missed_after=2.0)
    start_worker("-c", "2")
    beat = start_beat(env)
    wait_ticks(tmp_path, 2, "once")
    wait_ticks(tmp_path, 2, "skipper")
    assert beat.terminate() == 0
    stopped = time.time()
    last = {e: max(r["tick"] for r in recorded(tmp_path, e)) for e in ("once", "skipper")}
    time.sleep(6.0)  # the outage itself: six ticks of each entry fall due while no beat runs
    restarted = time.time()
    second = start_beat(env)
    # The beat judges what was missed when it takes the lead, which a slow start (an import, a
    # first connection on a loaded machine) puts later than `restarted`: read the moment it led.
    led = second.wait_for(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}): INFO/MainProcess\] beat \S+: leading")
    restarted = max(restarted, time.mktime(time.strptime(led.group(1), "%Y-%m-%d %H:%M:%S")) + int(led.group(2)) / 1000)
    after = {e: wait_ticks(tmp_path, 3, e, after=last[e]) for e in ("once", "skipper")}
    horizon = restarted - 2.0  # ticks older than this when the beat came back were missed
    once_missed = [r for r in after["once"] if r["tick"] <= horizon]
    skip_missed = [r for r in after["skipper"] if r["tick"] <= horizon]
    assert len(once_missed) == 1, f"run_once: one run stands for the missed ticks: {after['once']}"
    assert once_missed[0]["tick"] > stopped
    assert skip_missed == [], f"skip: missed ticks must not run: {after['skipper']}"
    for entry in ("once", "skipper"):
        fresh = [r for r in after[entry] if r["tick"] > horizon]
        assert fresh, after[entry]
        assert_each_tick_once(fresh, 1.0)
    second.wait_for(r"once \(tasks_app.record_tick\) missed its runs since .* running it once now")
    second.wait_for(r"skipper \(tasks_app.record_tick\) missed its runs since .* skipping them")


@pytest.mark.slow
@pytest.mark.parametrize("broker_kind", ["sqlite", "redis", "postgres"])
def test_three_beats_one_killed_every_tick_once(broker_kind: str, app_env: dict[str, str], tmp_path: Path,
                                                tasks: Any, start_worker: Callable[..., WorkerProcess],
                                                start_beat: Any) -> None:
    lease = 3.0
    env = beat_env(app_env, tmp_path, {"every-second": [1, "run_once"]}, lease=lease)
    start_worker("-c", "2")
    beats = [start_beat(env) for _ in range(3)]
    started = wait_ticks(tmp_path, 1)[0]["tick"]
    pid = wait_until(lambda: leader_pid(tasks), 10, message="a leading beat")
    leader = next(b for b in beats if b.proc.pid == pid)
    wait_until(lambda: time.time() >= started + 30, 40, interval=0.2, message="30 s of ticks")
    leader.kill(signal.SIGKILL)
    killed_at = time.time()
    wait_until(lambda: time.time() >= started + 60, 40, interval=0.2, message="60 s of ticks")
    standbys = [b for b in beats if b is not leader]
    # Read before stopping them: the first one stopped hands its lead to the other on the way out.
    logs = [b.output for b in standbys]
    for beat in standbys:
        assert beat.terminate() == 0
    leads = sum(log.count("leading (fencing token") for log in logs)
    assert leads >= 1, "a standby took over"
    # One standby takes over. On a starved machine a leader may stall past its lease and the
    # other standby take the lead from it (fenced: the stalled one's ticks are refused); that
    # is a legitimate handover, and the stalled beat must say so - never two silent leaders.
    stood_down = sum(log.count("another beat took the lead") + log.count("lost the lead") for log in logs)
    assert leads - 1 <= stood_down, f"{leads} takeovers by standbys, {stood_down} of them explained:\n" + \
        "\n---\n".join("\n".join(line for line in log.splitlines() if " beat " in line) for log in logs)
    last_tick = wait_until(lambda: max(r["tick"] for r in recorded(tmp_path)) >= started + 58 and
                           max(r["tick"] for r in recorded(tmp_path)), 10, message="the last ticks ran")
    rows = recorded(tmp_path)
    ticks = assert_each_tick_once(rows, 1.0)
    assert ticks[0] == started and ticks[-1] == last_tick
    assert len(ticks) >= 59
    late = [r for r in rows if r["at"] - r["tick"] > lease]
    assert len(late) <= leads, f"more ticks later than the lease ({lease}s) than takeovers ({leads}): {late}"
    assert any(r["tick"] > killed_at + lease + 1 for r in rows), "ticks went on after the leader died"


@pytest.mark.parametrize("broker_kind", ["sqlite"])
def test_worker_with_embedded_beat(broker_kind: str, app_env: dict[str, str], tmp_path: Path,
                                   start_worker: Callable[..., WorkerProcess]) -> None:
    env = beat_env(app_env, tmp_path, {"every-second": [1, "run_once"]})
    worker = start_worker("-B", "-c", "1", env=env)
    wait_ticks(tmp_path, 3)
    assert worker.terminate() == 0
    assert "handed over the lead" in worker.output
    assert_each_tick_once(recorded(tmp_path), 1.0)


@pytest.mark.parametrize("broker_kind", ["sqlite", "redis", "postgres"])
def test_beat_list_shows_entries_with_next_run(broker_kind: str, app_env: dict[str, str], tmp_path: Path,
                                               start_worker: Callable[..., WorkerProcess], start_beat: Any) -> None:
    env = beat_env(app_env, tmp_path, {"every-second": [1, "run_once"], "hourly": [3600, "skip"]})

    def listing(*extra: str) -> str:
        out = subprocess.run([celeriac_bin(), "-A", "tasks_app", "beat", "--list", *extra], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout

    fresh = listing()
    assert "every-second" in fresh and "hourly" in fresh and "every 1 hour" in fresh
    assert "never" in fresh and "no beat is running" in fresh
    start_worker("-c", "1")
    beat = start_beat(env)
    wait_ticks(tmp_path, 1)
    rows = {r["name"]: r for r in json.loads(listing("--json"))}
    assert set(rows) == {"every-second", "hourly"}
    assert rows["hourly"]["missed"] == "skip" and rows["hourly"]["task"] == "tasks_app.record_tick"
    assert 3500 < rows["hourly"]["due_in"] <= 3600
    assert rows["every-second"]["last"] is not None
    text = listing()
    assert "leader:" in text and str(beat.proc.pid) in text
    beat.terminate()


@pytest.mark.parametrize("broker_kind", ["sqlite"])
def test_bad_schedule_is_refused_with_the_entry_name(broker_kind: str, app_env: dict[str, str],
                                                     tmp_path: Path) -> None:
    env = beat_env(app_env, tmp_path, {"broken-entry": [1, "sometimes"]})
    out = subprocess.run([celeriac_bin(), "-A", "tasks_app", "beat"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 1
    assert "broken-entry" in out.stderr and "run_once" in out.stderr
    assert "Traceback" not in out.stderr
    env = beat_env(app_env, tmp_path, {"zero": [0, "run_once"]})
    out = subprocess.run([celeriac_bin(), "-A", "tasks_app", "worker", "-B"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "zero" in out.stderr and "more than 0 seconds" in out.stderr


def test_docs_periodic_tasks_schedule_loads(tmp_path: Path) -> None:
    """docs/periodic-tasks.md's tasks.py and its add_periodic_task block, as `beat --list` sees them."""
    import os
    import re

    from helpers import ROOT

    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "periodic-tasks.md").read_text(), re.S)
    assert blocks[0].startswith("# tasks.py")
    (tmp_path / "tasks.py").write_text(blocks[0] + "\n" + blocks[1])
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELERIAC_")}
    out = subprocess.run([celeriac_bin(), "-A", "tasks", "beat", "--list", "--json"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert set(rows) == {"every-30s", "every-5-minutes", "hourly", "monday-morning", "add every 10", "report"}
    assert rows["every-30s"]["schedule"] == "every 30 seconds"
    assert rows["every-5-minutes"]["schedule"] == "every 5 minutes"
    assert rows["hourly"]["schedule"] == "every 1 hour"
    assert rows["monday-morning"]["schedule"] == "cron 30 7 * * 1" and rows["monday-morning"]["missed"] == "skip"
    assert rows["monday-morning"]["options"] == {"queue": "reports", "priority": 7, "expires": 600}
    assert rows["monday-morning"]["next"].endswith(("+01:00", "+02:00"))  # Europe/Berlin
    assert " 07:30:00" in rows["monday-morning"]["next"]
    assert rows["report"]["schedule"] == "cron 0 */3 * * *" and rows["report"]["options"] == {"expires": 60}
