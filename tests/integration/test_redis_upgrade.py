"""Upgrading from celeriac < 0.2: what it left in Redis (old key layout) is picked up, not lost.

The old version's messages are written exactly as its scripts wrote them: its PUBLISH, FETCH
(one queue) and DEAD_LETTER scripts are kept below as fixtures of that version (from commit
b0ce490, then src/celeriac/brokers/redis_scripts.py). The packed messages come from this version's
client (the message format did not change), published through the old script.
"""

from __future__ import annotations

import signal
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from celeriac.brokers.base import Outgoing
from helpers import count_success, trace_lines, wait_until

pytestmark = pytest.mark.timeout(240)

P = "celeriac"

OLD_COMMON = """
local p = ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function route_of(id)
  local route = redis.call('HGET', p .. ':route', id)
  if not route then return nil, nil end
  local sep = string.find(route, ':', 1, true)
  return tonumber(string.sub(route, 1, sep - 1)), string.sub(route, sep + 1)
end
local function forget(id)
  redis.call('HDEL', p .. ':payload', id)
  redis.call('HDEL', p .. ':route', id)
  redis.call('HDEL', p .. ':deliveries', id)
end
"""

OLD_PUBLISH = OLD_COMMON + """
local function push_message(queue, prio, eta, payload, wake)
  local id = redis.call('INCR', p .. ':seq')
  redis.call('HSET', p .. ':payload', id, payload)
  redis.call('HSET', p .. ':route', id, prio .. ':' .. queue)
  if eta > now then
    redis.call('ZADD', p .. ':delayed', eta, id)
  else
    redis.call('ZADD', p .. ':ready:' .. queue, (9 - prio) * 1e12 + id, id)
  end
  wake[queue] = (wake[queue] or 0) + 1
end
local wake = {}
for i = 2, #ARGV, 4 do
  push_message(ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), ARGV[i + 3], wake)
end
return 1
"""

# The old FETCH, single-queue branch (no Celery wire queues): ARGV prefix, worker, owner, limit, queue.
OLD_FETCH_ONE = OLD_COMMON + """
local worker, owner, limit = ARGV[2], ARGV[3], tonumber(ARGV[4])
local chosen = {}
local popped = redis.call('ZPOPMIN', p .. ':ready:' .. ARGV[5], limit)
for i = 1, #popped, 2 do chosen[#chosen + 1] = popped[i] end
if #chosen > 0 then
  redis.call('SADD', p .. ':holders', worker)
  redis.call('SADD', p .. ':owners:' .. worker, owner)
end
local out = {}
for _, id in ipairs(chosen) do
  redis.call('HINCRBY', p .. ':deliveries', id, 1)
  redis.call('HSET', p .. ':held:' .. owner, id, worker)
  out[#out + 1] = id
end
return out
"""

OLD_DEAD_LETTER = OLD_COMMON + """
local held = p .. ':held:' .. ARGV[2]
for i = 3, #ARGV, 2 do
  local id, reason = ARGV[i], ARGV[i + 1]
  local payload = redis.call('HGET', p .. ':payload', id)
  if payload then
    local prio, queue = route_of(id)
    local count = tonumber(redis.call('HGET', p .. ':deliveries', id) or '0')
    local dead = redis.call('INCR', p .. ':dead:seq')
    redis.call('HSET', p .. ':dead:payload', dead, payload)
    redis.call('HSET', p .. ':dead:info', dead, cjson.encode({reason = reason, queue = queue or '',
      deliveries = count, at = now / 1000}))
    redis.call('ZADD', p .. ':dead', now, dead)
  end
  forget(id)
  redis.call('HDEL', held, id)
end
return 1
"""


@pytest.fixture
def broker_kind() -> str:
    return "redis"


@pytest.fixture
def old(tasks: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """This test's client, publishing as celeriac < 0.2 did (its PUBLISH script, its keys)."""
    client = tasks.app.broker.client

    def publish(messages: list[Outgoing]) -> None:
        for start in range(0, len(messages), 500):
            args: list[Any] = [P]
            for m in messages[start:start + 500]:
                args += [m.queue, m.priority, int(m.eta * 1000) if m.eta else 0, m.payload]
            client.eval(OLD_PUBLISH, 0, *args)

    monkeypatch.setattr(tasks.app.broker, "publish", publish)
    return client


def _publish_many(tasks: Any, trace: Path, n: int) -> list[Any]:
    """n `work` tasks in the old layout, sent in batches of 500 (one old PUBLISH call each)."""
    from celeriac import group
    results: list[Any] = []
    for start in range(0, n, 500):
        results += group(tasks.work.s(str(trace), i, 0) for i in range(start, min(n, start + 500))).apply_async()
    return results


def test_old_layout_runs_once_each_with_priorities_eta_leases_dead_letters_and_results(
        tasks: Any, old: Any, start_worker: Any, tmp_path: Path) -> None:
    log, trace = tmp_path / "order", tmp_path / "trace"
    finished = tasks.app.AsyncResult(str(uuid.uuid4()))
    tasks.app.backend.mark_as_done(finished.id, 42)  # a result written by the old version ...
    for kind in ("r", "done"):  # ... under its old names (the same hash and list)
        old.rename(f"{P}:{{{finished.id}}}:{kind}", f"{P}:{kind}:{finished.id}")
    low = [tasks.record.apply_async((str(log), f"low{i}"), priority=1) for i in range(5)]
    high = [tasks.record.apply_async((str(log), f"high{i}"), priority=8) for i in range(5)]
    leased = tasks.work.apply_async((str(trace), 7, 0), queue="other")
    doomed = tasks.work.apply_async((str(trace), 666, 0), queue="other")
    eta = time.time() + 4
    delayed = tasks.work.apply_async((str(trace), 8, 0), eta=datetime.fromtimestamp(eta, UTC), queue="other")
    # An old worker (gone now: its lease is not in the old `workers` set) leased two messages of
    # queue 'other' and dead-lettered one of them.
    ids = [i.decode() for i in old.eval(OLD_FETCH_ONE, 0, P, "old@host", "old@host-1", 2, "other")]
    assert len(ids) == 2
    old.eval(OLD_DEAD_LETTER, 0, P, "old@host-1", ids[1], "crashed the old worker")
    assert old.hlen(f"{P}:payload") == 12 and old.zcard(f"{P}:ready:celery") == 10

    worker = start_worker("-c", "1", "--prefetch-multiplier", "1", "-Q", "celery,other")
    assert "moved 10 message(s) of queue 'celery' from the Redis key layout of celeriac < 0.2" in worker.output
    assert "moved 2 message(s) of queue 'other'" in worker.output
    assert old.exists(f"{P}:payload", f"{P}:delayed", f"{P}:dead", f"{P}:held:old@host-1") == 0

    assert finished.get(timeout=5) == 42
    assert [r.get(timeout=20) for r in high + low] == [f"high{i}" for i in range(5)] + [f"low{i}" for i in range(5)]
    order = [line.split()[0] for line in log.read_text().splitlines()]
    assert order == [f"high{i}" for i in range(5)] + [f"low{i}" for i in range(5)], (order, worker.output)
    assert leased.get(timeout=10) == 7
    assert delayed.get(timeout=20) == 8
    assert delayed.date_done is not None and delayed.date_done.timestamp() >= eta - 0.05
    dead = tasks.app.broker.dead_letters()
    assert [(d.queue, d.reason, d.deliveries) for d in dead] == [("other", "crashed the old worker", 1)]
    time.sleep(0.5)
    assert doomed.state == "PENDING"  # a dead letter is not run
    assert sorted(trace_lines(trace)) == ["7", "8"]
    assert tasks.app.broker.requeue_dead_letters() == 1
    assert doomed.get(timeout=10) == 666


def test_a_second_run_is_a_no_op(tasks: Any, old: Any, tmp_path: Path) -> None:
    _publish_many(tasks, tmp_path / "trace", 1200)
    tasks.work.apply_async((str(tmp_path / "trace"), -1, 0), countdown=60)
    # The old store's revocation log ("seq|signal|task id", by seq and by expiry) and beat's ticks.
    expires = (time.time() + 3600) * 1000
    old.zadd(f"{P}:revoked", {"7|SIGTERM|t-old": 7})
    old.zadd(f"{P}:revoked:exp", {"7|SIGTERM|t-old": expires})
    old.hset(f"{P}:beat:default:ticks", "every-minute", "1700000000")
    broker, store = tasks.app.broker, tasks.app.backend
    store.revoke(["t-new"], 3600)
    assert broker.upgrade_legacy_layout() == 1201
    assert store.upgrade_legacy_layout() == 1
    snapshot = {k: old.dump(k) for k in sorted(old.keys("*"))}
    assert broker.upgrade_legacy_layout() == 0 and store.upgrade_legacy_layout() == 0
    assert {k: old.dump(k) for k in sorted(old.keys("*"))} == snapshot
    assert broker.queue_sizes(["celery"])["celery"] == {"ready": 1200, "reserved": 0, "delayed": 1}
    assert store.revoked_since(0) == ([("t-new", None), ("t-old", "SIGTERM")], 2)
    assert old.hget(f"{P}:beat:{{default}}:ticks", "every-minute") == b"1700000000"
    assert not old.exists(f"{P}:revoked", f"{P}:beat:default:ticks", f"{P}:payload", f"{P}:delayed")


def test_kill_9_in_the_middle_of_moving_20000(tasks: Any, old: Any, start_worker: Any, tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    n = 20_000
    results = _publish_many(tasks, trace, n)
    assert old.hlen(f"{P}:payload") == n
    first = start_worker("-c", "2", ready=False)
    left = wait_until(lambda: (lambda m: m if 0 < m < n else 0)(old.hlen(f"{P}:payload")), 60, interval=0.001,
                      message="the move under way")
    first.kill(signal.SIGKILL)
    first.proc.wait(10)
    old_left, moved = old.hlen(f"{P}:payload"), old.hlen(f"{P}:{{celery}}:payload")
    print(f"killed with {old_left} of {n} left in the old layout")
    assert 0 < old_left <= left, "the kill came after the move finished: nothing was tested"
    assert old_left + moved == n, "a message is in both layouts or in neither"
    assert old_left == old.zcard(f"{P}:ready:celery") and moved == old.zcard(f"{P}:{{celery}}:ready")
    assert trace_lines(trace) == []  # the worker fetches only after the move
    second = start_worker("-c", "2")
    assert f"moved {old_left} message(s) of queue 'celery'" in second.output
    wait_until(lambda: count_success(results) == n, 200, interval=0.5, message=f"{n} SUCCESS")
    values = sorted(map(int, trace_lines(trace)))
    assert values == list(range(n)), "a task was lost or ran twice"


def test_a_chord_half_done_at_the_upgrade_still_fires_once(tasks: Any, old: Any, start_worker: Any,
                                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from celeriac import chord
    trace = tmp_path / "body"
    sent: list[Outgoing] = []
    old_publish = tasks.app.broker.publish
    monkeypatch.setattr(tasks.app.broker, "publish", sent.extend)
    body = chord([tasks.add.s(1, 2).set(queue="first"), tasks.add.s(4, 5).set(queue="second")])(
        tasks.record_body.s(str(trace)))
    (first,) = [m for m in sent if m.queue == "first"]
    (second,) = [m for m in sent if m.queue == "second"]
    # The first header member runs before the upgrade: a worker serving only its queue records it
    # (then its chord counter and result are given the old version's names, as it would have them).
    type(tasks.app.broker).publish(tasks.app.broker, [first])
    worker = start_worker("-c", "1", "-Q", "first", "-n", "first@host")
    wait_until(lambda: old.keys(f"{P}:chord:*"), 20, message="the first member recorded")
    assert worker.terminate() == 0
    (state,) = [k.decode() for k in old.keys(f"{P}:chord:*") if not k.endswith(b":parts")]
    group_id = state.split("{")[1].rstrip("}")
    old.rename(state, f"{P}:chord:{group_id}")
    old.rename(f"{state}:parts", f"{P}:chord:{group_id}:parts")
    old_publish([second])  # the second member still waits in the old layout
    assert old.hget(f"{P}:chord:{group_id}", "done") == b"1"

    start_worker("-c", "1", "-Q", "first,second,celery")
    assert body.get(timeout=20) == 12
    time.sleep(0.5)
    assert len(trace_lines(trace)) == 4, trace.read_text()  # "body 2 12 <pid>": one run
    assert not old.exists(f"{P}:chord:{group_id}")


def test_old_clients_during_a_rolling_upgrade(tasks: Any, old: Any, start_worker: Any, app_env: dict[str, str],
                                              tmp_path: Path) -> None:
    """A new worker checks for the old layout every legacy_layout_check_interval seconds: what
    old clients publish meanwhile runs; what a live old worker holds stays its own until its
    lease expires, then runs here (at-least-once)."""
    (tmp_path / "rolling_app.py").write_text(
        "from tasks_app import *  # noqa\nfrom tasks_app import app\n"
        "app.conf.broker_transport_options = {'legacy_layout_check_interval': 0.5}\n")
    env = dict(app_env, PYTHONPATH=f"{tmp_path}:{app_env['PYTHONPATH']}")
    trace = tmp_path / "trace"
    start_worker("-c", "1", app="rolling_app", env=env)
    late = tasks.work.apply_async((str(trace), 1, 0))  # an old client, after the new worker started
    assert late.get(timeout=15) == 1
    held = tasks.work.apply_async((str(trace), 2, 0))
    seconds, micros = old.time()
    old.zadd(f"{P}:workers", {"old@host": seconds * 1000 + micros // 1000 + 3000})  # alive 3 s more
    assert old.eval(OLD_FETCH_ONE, 0, P, "old@host", "old@host-1", 1, "celery") == [b"2"]
    time.sleep(1.5)
    assert held.state == "PENDING" and old.hexists(f"{P}:held:old@host-1", "2")
    assert held.get(timeout=15) == 2  # the old worker's lease expired: given to the new one
    assert sorted(trace_lines(trace)) == ["1", "2"]
