"""The canvas: signatures, chain/group/chord/chunks/map/starmap, run eagerly and on the
in-process worker, Task.replace, result trees, and the chord counting contract of the
result stores (memory, SQLite, Redis).

Worker tests share one module-scoped worker (memory broker and store); every test uses
its own tags, so what one test records never satisfies another. Nothing sleeps and
hopes: results are waited on with deadlines, side effects with wait_until.
"""

from __future__ import annotations

import json
import pickle
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import pytest

from celeriac import (AsyncResult, Celeriac, EagerResult, GroupResult, Signature, chain, chord, chunks, group,
                      signature, states)
from celeriac.backends import ResultStore, create_result_store
from celeriac.backends.base import ChordPart, FiredChord
from celeriac.exceptions import ChordError, IncompleteStream
from celeriac.exceptions import TimeoutError as ResultTimeout
from celeriac.protocol import accepted_types, decode_body, unpack
from celeriac.testing import start_worker
from celeriac.worker import workflow
from helpers import result_store_url, wait_until

# --- shared test tasks ---

EVENTS: dict[str, list[Any]] = defaultdict(list)
_EVENTS_LOCK = threading.Lock()


def note(tag: str, value: Any) -> None:
    with _EVENTS_LOCK:
        EVENTS[tag].append(value)


def events(tag: str) -> list[Any]:
    with _EVENTS_LOCK:
        return list(EVENTS.get(tag, []))


def tag() -> str:
    return uuid.uuid4().hex


def register(app: Celeriac) -> SimpleNamespace:
    """The tasks every test app has; returned as a namespace (ns.add, ns.tsum, ...)."""

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    @app.task
    def tsum(xs: list[int]) -> int:
        return sum(xs)

    @app.task
    def ident(x: Any) -> Any:
        return x

    @app.task
    def slow_ident(x: Any, delay: float) -> Any:
        time.sleep(delay)  # makes members finish in a chosen order (not a wait for anything)
        return x

    @app.task
    def boom(*args: Any) -> None:
        raise KeyError("nope")

    @app.task
    def record(*args: Any, tag: str) -> list[Any]:
        note(tag, list(args))
        return list(args)

    @app.task
    def new_eb(request: Any, exc: BaseException, traceback: str | None, *, tag: str) -> None:
        """A new-style errback: (request, exc, traceback), run in the worker."""
        note(tag, (request.id, exc, traceback))

    @app.task
    def old_eb(task_id: str, *, tag: str) -> None:
        """An old-style errback: it is sent as a task, with the failed task's id."""
        note(tag, task_id)

    @app.task(bind=True)
    def rep(self: Any, x: int) -> None:
        self.replace(add.s(x, 100))

    @app.task(bind=True)
    def rep_group(self: Any, x: int) -> None:
        self.replace(group(add.s(x, 1), add.s(x, 2)))

    @app.task(bind=True)
    def rep_chain(self: Any, x: int) -> None:
        self.replace(add.s(x, 1) | add.s(10))

    @app.task(bind=True)
    def launcher(self: Any, x: int) -> list[Any]:
        """Builds and sends a chain and a group from inside a task."""
        c = (add.s(x, 1) | add.s(2)).delay()
        g = group(add.s(1, 1), add.s(2, 2)).delay()
        return [c.id, c.parent.id, g.id, [r.id for r in g.results]]

    @app.task(bind=True)
    def chord_launcher(self: Any) -> list[Any]:
        """Sends a chord from inside a task."""
        r = chord([add.s(1, 1), add.s(2, 2)], tsum.s()).delay()
        return [r.id, [h.id for h in r.parent.results]]

    @app.task(bind=True)
    def chord_chain_launcher(self: Any) -> list[Any]:
        """Sends a chord whose body is a chain from inside a task."""
        r = chord([add.s(1, 1), add.s(2, 2)], tsum.s() | add.s(10)).delay()
        return [r.parent.id, r.id]

    return SimpleNamespace(app=app, **{t.name.rsplit(".", 1)[-1]: t for t in (
        add, tsum, ident, slow_ident, boom, record, new_eb, old_eb, rep, rep_group, rep_chain, launcher,
        chord_launcher, chord_chain_launcher)})


def memory_app(eager: bool = False) -> Celeriac:
    name = f"canvas-{uuid.uuid4().hex}"
    app = Celeriac("canvas", broker=f"memory://{name}", backend=f"memory://{name}", set_as_current=False)
    app.conf.task_always_eager = eager
    return app


@pytest.fixture(autouse=True)
def _no_url_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment overrides the app's URLs: keep whatever the shell has out of these tests."""
    monkeypatch.delenv("CELERIAC_BROKER_URL", raising=False)
    monkeypatch.delenv("CELERIAC_RESULT_BACKEND", raising=False)


@pytest.fixture(scope="module", autouse=True)
def _bystander_current_app() -> Iterator[Celeriac]:
    """A memory app as current_app() (in every thread) while these tests run.

    Every test app here is built with set_as_current=False, so anything the canvas wrongly
    resolves through current_app() lands on this bystander - never on the test's own app,
    so such bugs still show, and never on a default app whose SQLite file would be created
    in the working directory.
    """
    import celeriac.app as app_module
    bystander = memory_app()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(app_module, "_default_app", bystander)
        mp.setattr(app_module._state, "app", bystander, raising=False)
        yield bystander
    bystander.close()


@pytest.fixture
def lazy() -> Iterator[SimpleNamespace]:
    """Not eager and no worker: what is sent stays in the (memory) broker for inspection."""
    app = memory_app()
    yield register(app)
    app.close()


@pytest.fixture
def eager() -> Iterator[SimpleNamespace]:
    app = memory_app(eager=True)
    yield register(app)
    app.close()


@pytest.fixture(scope="module")
def wk() -> Iterator[SimpleNamespace]:
    """One in-process worker (4 threads) for all worker tests of this module."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("CELERIAC_BROKER_URL", raising=False)
        mp.delenv("CELERIAC_RESULT_BACKEND", raising=False)
        app = memory_app()
        ns = register(app)
        with start_worker(app, concurrency=4):
            yield ns
        app.close()


def sent(app: Celeriac, queues: tuple[str, ...] = ("celery",)) -> list[SimpleNamespace]:
    """Everything ready in these queues (taken off the broker), decoded: delivery, headers, args,
    kwargs and embed (callbacks, errbacks, chain, chord)."""
    out = []
    for d in app.broker.fetch(list(queues), "t", "t-0", 1000, timeout=0):
        msg = unpack(d.payload)
        args, kwargs, embed = decode_body(msg, accepted_types(["json"]))
        out.append(SimpleNamespace(delivery=d, headers=msg.headers, args=args, kwargs=kwargs, embed=embed))
    return out


# =====================================================================================
# 1. Signatures
# =====================================================================================

def test_s_builds_a_plain_dict_signature(lazy: SimpleNamespace) -> None:
    sig = lazy.add.s(2, 3)
    assert isinstance(sig, Signature) and type(sig) is Signature
    assert sig.name == sig.task == lazy.add.name
    assert sig.args == (2, 3) and sig.kwargs == {} and sig.options == {}
    assert sig.immutable is False and sig.subtask_type is None
    assert dict(sig) == {"task": lazy.add.name, "args": (2, 3), "kwargs": {}, "options": {},
                         "subtask_type": None, "immutable": False}
    assert sig.type is lazy.add
    assert sig.app is lazy.app
    assert sig.id is None  # not frozen yet
    assert lazy.add.s(2)(3) == 5  # calling a signature runs the function here, partial args first
    assert lazy.add.s(2, 3).apply().get() == 5


def test_si_is_immutable_and_ignores_partial_args(lazy: SimpleNamespace) -> None:
    sig = lazy.add.si(2, 3)
    assert sig.immutable is True
    assert sig.apply((100,)).get() == 5  # the parent's result is ignored
    assert sig.clone((100,), {"y": 7}).args == (2, 3)
    assert sig.clone((100,), {"y": 7}).kwargs == {}
    mutable = lazy.add.s(3)
    assert mutable.apply((100,)).get() == 103
    assert lazy.add.signature((1, 2), immutable=True).immutable is True
    assert lazy.add.s(1, 2).set(immutable=True).immutable is True


def test_signature_by_name_with_args_kwargs_options(lazy: SimpleNamespace) -> None:
    sig = signature(lazy.add.name, args=(1,), kwargs={"y": 2}, options={"queue": "q"}, app=lazy.app)
    assert type(sig) is Signature
    assert (sig.name, sig.args, sig.kwargs, sig.options) == (lazy.add.name, (1,), {"y": 2}, {"queue": "q"})
    assert sig.type is lazy.add
    assert sig.apply().get() == 3
    by_task = signature(lazy.add, args=(1, 2), app=lazy.app)
    assert by_task.args == (1, 2) and by_task.type is lazy.add
    with_opts = lazy.add.signature((2, 2), countdown=10)
    assert with_opts.args == (2, 2) and with_opts.options == {"countdown": 10}
    with pytest.raises(TypeError, match="cannot make a signature"):
        signature(42)


def test_signature_unknown_task_name_fails_on_use_not_on_build(lazy: SimpleNamespace) -> None:
    sig = signature("no.such.task", args=(1,), app=lazy.app)
    assert sig.name == "no.such.task"
    with pytest.raises(KeyError):
        sig.apply()


def _json_round_trip(sig: Signature, app: Celeriac) -> Signature:
    return signature(json.loads(json.dumps(sig)), app=app)


def test_json_round_trip_task_signature(lazy: SimpleNamespace) -> None:
    sig = lazy.add.s(1, y=2).set(queue="q", priority=3)
    back = _json_round_trip(sig, lazy.app)
    assert type(back) is Signature
    assert back == sig
    assert back.args == (1,) and back.kwargs == {"y": 2} and back.options == {"queue": "q", "priority": 3}
    assert back.apply().get() == 3
    immutable = _json_round_trip(lazy.add.si(1, 1), lazy.app)
    assert immutable.immutable is True


def test_json_round_trip_chain_stays_chain(lazy: SimpleNamespace) -> None:
    c = lazy.add.s(1, 1) | lazy.add.s(2) | lazy.add.si(5, 5)
    back = _json_round_trip(c, lazy.app)
    assert type(back) is chain
    assert back == c
    assert [type(s) for s in back.tasks] == [Signature, Signature, Signature]
    assert [s.args for s in back.tasks] == [(1, 1), (2,), (5, 5)]
    assert back.tasks[2].immutable
    assert back.apply().get() == 10


def test_json_round_trip_group_stays_group(lazy: SimpleNamespace) -> None:
    g = group(lazy.add.s(1, 1), lazy.add.s(2, 2) | lazy.add.s(3))
    back = _json_round_trip(g, lazy.app)
    assert type(back) is group
    assert back == g
    assert [type(s) for s in back.tasks] == [Signature, chain]
    assert back.apply().get() == [2, 7]


def test_json_round_trip_chord_stays_chord(lazy: SimpleNamespace) -> None:
    c = chord([lazy.add.s(1, 1), lazy.add.s(2, 2)], lazy.tsum.s())
    back = _json_round_trip(c, lazy.app)
    assert type(back) is chord
    assert back == c
    assert type(back.header) is group and type(back.body) is Signature
    assert [s.args for s in back.header.tasks] == [(1, 1), (2, 2)]
    assert back.body.name == lazy.tsum.name
    assert back.apply().get() == 6


def test_json_round_trip_nested_and_chunks(lazy: SimpleNamespace) -> None:
    nested = lazy.add.s(1, 1) | chord([lazy.add.s(1), lazy.add.s(2)], lazy.tsum.s() | lazy.add.s(100))
    back = _json_round_trip(nested, lazy.app)
    assert type(back) is chain
    assert type(back.tasks[1]) is chord and type(back.tasks[1].body) is chain
    assert back.apply().get() == 107
    ck = _json_round_trip(lazy.add.chunks([(1, 1), (2, 2), (3, 3)], 2), lazy.app)
    assert type(ck) is chunks
    assert ck.apply().get() == [[2, 4], [6]]


def test_json_round_trip_keeps_frozen_ids(lazy: SimpleNamespace) -> None:
    c = chord([lazy.add.s(1, 1), lazy.add.s(2, 2)], lazy.tsum.s())
    frozen = c.freeze()
    back = _json_round_trip(c, lazy.app)
    assert back.id == frozen.id
    assert back.header.id == frozen.parent.id
    assert [s.id for s in back.header.tasks] == [r.id for r in frozen.parent.results]


def test_set_returns_self_and_options_reach_the_message(lazy: SimpleNamespace) -> None:
    sig = lazy.add.s(1, 1)
    assert sig.set(queue="fast", priority=7) is sig
    assert sig.options == {"queue": "fast", "priority": 7}
    result = sig.apply_async()
    [msg] = sent(lazy.app, ("fast",))
    assert msg.delivery.queue == "fast" and msg.delivery.priority == 7
    assert msg.headers["id"] == result.id
    delayed = lazy.add.s(2, 2).set(queue="later", countdown=60)
    assert delayed.options["countdown"] == 60
    delayed.apply_async()
    assert lazy.app.broker.queue_sizes(["later"])["later"] == {"ready": 0, "reserved": 0, "delayed": 1}


def test_call_time_options_beat_signature_options(lazy: SimpleNamespace) -> None:
    sig = lazy.add.s(1, 1).set(queue="a", priority=1)
    sig.apply_async(queue="b", priority=9)
    assert sent(lazy.app, ("a",)) == []
    [msg] = sent(lazy.app, ("b",))
    assert msg.delivery.priority == 9
    assert sig.options == {"queue": "a", "priority": 1}  # the signature itself is unchanged


def test_clone_prepends_args_merges_kwargs_and_leaves_original_alone(lazy: SimpleNamespace) -> None:
    sig = lazy.add.s(2, y=3).set(queue="q")
    copy = sig.clone((1,), {"z": 4, "y": 30}, priority=5)
    assert type(copy) is Signature and copy is not sig
    assert copy.args == (1, 2)
    assert copy.kwargs == {"y": 30, "z": 4}
    assert copy.options == {"queue": "q", "priority": 5}
    assert copy.type is lazy.add
    # the original is unchanged, and the copy shares no mutable structure with it
    assert sig.args == (2,) and sig.kwargs == {"y": 3} and sig.options == {"queue": "q"}
    copy.options["queue"] = "other"
    copy["kwargs"]["extra"] = 1
    assert sig.options == {"queue": "q"} and sig.kwargs == {"y": 3}
    assert sig.clone() == sig and sig.clone() is not sig


def test_clone_of_a_workflow_is_deep(lazy: SimpleNamespace) -> None:
    c = lazy.add.s(1, 1) | lazy.add.s(2)
    copy = c.clone()
    assert type(copy) is chain and copy == c
    copy.tasks[0].set(queue="elsewhere")
    copy.tasks[1]["args"] = (99,)
    assert c.tasks[0].options == {} and c.tasks[1].args == (2,)
    ch = chord([lazy.add.s(1, 1)], lazy.tsum.s())
    ch_copy = ch.clone()
    ch_copy.body.set(queue="x")
    ch_copy.header.tasks[0].set(queue="y")
    assert ch.body.options == {} and ch.header.tasks[0].options == {}


def test_link_link_error_and_on_error(lazy: SimpleNamespace) -> None:
    sig = lazy.add.s(1, 1)
    cb, cb2 = lazy.ident.s(), lazy.tsum.s()
    assert sig.link(cb) is cb
    assert sig.link(cb2) is cb2
    assert sig.options["link"] == [cb, cb2]
    eb = lazy.old_eb.s(tag="x")
    assert sig.link_error(eb) is eb
    eb2 = lazy.old_eb.s(tag="y")
    assert sig.on_error(eb2) is sig  # returns the signature, for chaining
    assert sig.options["link_error"] == [eb, eb2]
    # call-time callbacks add to the signature's own, they do not replace them
    result = sig.apply_async(link=lazy.record.s(tag="z"))
    [msg] = sent(lazy.app)
    assert msg.headers["id"] == result.id
    callbacks = [s["task"] for s in msg.embed["callbacks"]]
    assert callbacks == [lazy.ident.name, lazy.tsum.name, lazy.record.name]
    assert [s["kwargs"]["tag"] for s in msg.embed["errbacks"]] == ["x", "y"]


def test_or_builds_flat_chains(lazy: SimpleNamespace) -> None:
    a, b, c, d = (lazy.add.s(i) for i in range(4))
    ab = a | b
    assert type(ab) is chain and [s.args for s in ab.tasks] == [(0,), (1,)]
    abc = ab | c
    assert type(abc) is chain and [s.args for s in abc.tasks] == [(0,), (1,), (2,)]
    a_bc = a | (b | c)
    assert type(a_bc) is chain and [s.args for s in a_bc.tasks] == [(0,), (1,), (2,)]
    abcd = (a | b) | (c | d)
    assert [s.args for s in abcd.tasks] == [(0,), (1,), (2,), (3,)]
    assert [s.args for s in chain(a, chain(b, c)).tasks] == [(0,), (1,), (2,)]
    assert [s.args for s in chain([a, b]).tasks] == [(0,), (1,)]
    g = group(a, b)
    g_then = g | c
    assert type(g_then) is chain and type(g_then.tasks[0]) is group and len(g_then.tasks) == 2
    then_g = a | g
    assert type(then_g) is chain and type(then_g.tasks[1]) is group
    # `|` does not mutate its operands
    assert len(ab.tasks) == 2
    with pytest.raises(TypeError):
        a | 5  # noqa: B018


def test_repr(lazy: SimpleNamespace) -> None:
    add = lazy.add.name
    assert repr(lazy.add.s(2, 3)) == f"{add}(2, 3)"
    assert repr(lazy.add.s(2, y=3)) == f"{add}(2, y=3)"
    assert repr(lazy.add.si(2, 3)) == f"{add}(2, 3)!"
    assert repr(lazy.add.s(1) | lazy.add.s(2)) == f"{add}(1) | {add}(2)"
    assert repr(group(lazy.add.s(1), lazy.add.s(2))) == f"group([{add}(1), {add}(2)])"
    assert repr(chord([lazy.add.s(1)], lazy.tsum.s())) == f"chord(group([{add}(1)]), {lazy.tsum.name}())"
    assert repr(chain()) == "chain()" and repr(group()) == "group([])"


@pytest.mark.parametrize("kind", ["task", "chain", "group", "chord"])
def test_pickle_round_trip(lazy: SimpleNamespace, kind: str) -> None:
    build = {
        "task": lambda: lazy.add.s(1, 2).set(queue="q"),
        "chain": lambda: lazy.add.s(1, 2) | lazy.add.s(3),
        "group": lambda: group(lazy.add.s(1, 2), lazy.add.s(3, 4)),
        "chord": lambda: chord([lazy.add.s(1, 2), lazy.add.s(3, 4)], lazy.tsum.s()),
    }
    sig = build[kind]()
    back = pickle.loads(pickle.dumps(sig))
    assert type(back) is type(sig)
    assert back == sig
    nested = {"task": [], "chain": back.get("kwargs", {}).get("tasks", []),
              "group": back.get("kwargs", {}).get("tasks", []),
              "chord": [back["kwargs"].get("header"), back["kwargs"].get("body")]}[kind]
    assert all(isinstance(n, Signature) for n in nested)  # nested parts come back as signatures too
    if kind == "chord":
        assert type(back.header) is group and [type(s) for s in back.header.tasks] == [Signature, Signature]
    expected = {"task": 3, "chain": 6, "group": [3, 7], "chord": 10}[kind]
    # (the unpickled signature is bound to the current app; run it on ours via its JSON form)
    assert signature(json.loads(json.dumps(back)), app=lazy.app).apply().get() == expected


def test_workflow_app_binds_nested_signatures(lazy: SimpleNamespace) -> None:
    name = lazy.add.name
    by_name = chain(signature(name, args=(1, 1)), signature(name, args=(2,)), app=lazy.app)
    assert by_name.apply().get() == 4
    assert group(signature(name, args=(1, 1)), app=lazy.app).apply().get() == [2]
    unpickled = pickle.loads(pickle.dumps(lazy.add.s(1, 1) | lazy.add.s(2)))
    assert signature(unpickled, app=lazy.app).apply().get() == 4


def test_freeze_is_stable_and_apply_async_uses_that_id(lazy: SimpleNamespace) -> None:
    sig = lazy.add.s(1, 1)
    frozen = sig.freeze()
    assert isinstance(frozen, AsyncResult)
    assert sig.freeze().id == frozen.id == sig.id
    result = sig.apply_async()
    assert result.id == frozen.id
    [msg] = sent(lazy.app)
    assert msg.headers["id"] == frozen.id
    assert sig.freeze("chosen").id == "chosen" == sig.id


def test_freeze_workflows_gives_the_whole_result_tree(lazy: SimpleNamespace) -> None:
    c = lazy.add.s(1, 1) | lazy.add.s(2) | lazy.add.s(3)
    frozen = c.freeze()
    assert [frozen.parent.parent.id, frozen.parent.id, frozen.id] == [s.id for s in c.tasks]
    result = c.apply_async()
    assert result.id == frozen.id and result.parent.id == frozen.parent.id
    assert result.parent.parent.id == frozen.parent.parent.id
    [msg] = sent(lazy.app)  # only the first step is sent; the rest travels with it (in reverse)
    assert msg.headers["id"] == frozen.parent.parent.id
    assert [s["options"]["task_id"] for s in msg.embed["chain"]] == [frozen.id, frozen.parent.id]

    g = group(lazy.add.s(1, 1), lazy.add.s(2, 2))
    gfrozen = g.freeze()
    assert isinstance(gfrozen, GroupResult)
    gresult = g.apply_async()
    assert gresult.id == gfrozen.id and [r.id for r in gresult.results] == [r.id for r in gfrozen.results]
    assert sorted(m.headers["id"] for m in sent(lazy.app)) == sorted(r.id for r in gfrozen.results)

    ch = chord([lazy.add.s(1, 1), lazy.add.s(2, 2)], lazy.tsum.s())
    cfrozen = ch.freeze()
    cresult = ch.apply_async()
    assert cresult.id == cfrozen.id == ch.id
    assert cresult.parent.id == cfrozen.parent.id
    assert [r.id for r in cresult.parent.results] == [r.id for r in cfrozen.parent.results]


def test_chunks_freeze_then_apply_async_uses_the_frozen_ids(lazy: SimpleNamespace) -> None:
    ck = lazy.add.chunks([(1, 1), (2, 2), (3, 3)], 2)
    frozen = ck.freeze()
    result = ck.apply_async()
    assert result.id == frozen.id
    assert [r.id for r in result.results] == [r.id for r in frozen.results]


def test_sending_a_workflow_does_not_read_the_result_store(lazy: SimpleNamespace,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    backend = lazy.app.backend
    reads: list[Any] = []
    real_get_many = backend.get_many
    monkeypatch.setattr(backend, "get_many", lambda ids: reads.append(list(ids)) or real_get_many(ids))
    (lazy.add.s(1, 1) | lazy.add.s(2) | lazy.add.s(3) | lazy.add.s(4)).apply_async()
    chord([lazy.add.s(1, 1), lazy.add.s(2, 2)], lazy.tsum.s()).apply_async()
    assert len(sent(lazy.app)) == 3  # everything was sent
    assert reads == []


def test_sending_a_signature_twice_gives_different_ids(lazy: SimpleNamespace) -> None:
    sig = lazy.add.s(1, 1)
    first, second = sig.delay(), sig.delay()
    assert first.id != second.id
    assert sig.id is None and "task_id" not in sig.options  # delay() did not freeze the signature
    c = lazy.add.s(1, 1) | lazy.add.s(2)
    one, two = c.delay(), c.delay()
    assert one.id != two.id and one.parent.id != two.parent.id
    assert all(s.id is None for s in c.tasks)
    g = group(lazy.add.s(1, 1), lazy.add.s(2, 2))
    g1, g2 = g.delay(), g.delay()
    assert g1.id != g2.id
    assert not {r.id for r in g1.results} & {r.id for r in g2.results}
    ids = [m.headers["id"] for m in sent(lazy.app)]
    assert len(ids) == len(set(ids)) == 8  # 2 + 2 chain heads + 2 * 2 group members


def test_apply_async_task_id_goes_to_the_tail(lazy: SimpleNamespace) -> None:
    assert lazy.add.s(1, 1).apply_async(task_id="plain").id == "plain"
    assert (lazy.add.s(1, 1) | lazy.add.s(2)).apply_async(task_id="chain-tail").id == "chain-tail"
    assert group(lazy.add.s(1, 1)).apply_async(task_id="the-group").id == "the-group"
    assert chord([lazy.add.s(1, 1)], lazy.tsum.s()).apply_async(task_id="the-body").id == "the-body"


def test_member_list_repeating_one_signature_object_gets_distinct_ids(lazy: SimpleNamespace) -> None:
    s = lazy.add.s(1, 1)
    result = group([s] * 3).delay()
    assert len({r.id for r in result.results}) == 3
    assert len({m.headers["id"] for m in sent(lazy.app)}) == 3


def test_bad_workflows_fail_clearly(lazy: SimpleNamespace) -> None:
    with pytest.raises(ValueError, match="at least one task"):
        chain().apply_async()
    with pytest.raises(ValueError, match="no body"):
        chord([lazy.add.s(1, 1)]).body  # noqa: B018
    with pytest.raises(ValueError, match="at least 1"):
        lazy.add.chunks([(1, 1)], 0)
    with pytest.raises(ValueError, match="needs an id"):
        GroupResult(None, [], app=lazy.app).save()
    assert GroupResult.restore("never-saved", app=lazy.app) is None


# =====================================================================================
# 2. Eager mode and .apply()
# =====================================================================================

def test_eager_chain_group_chord(eager: SimpleNamespace) -> None:
    add, tsum = eager.add, eager.tsum
    r = (add.s(1, 1) | add.s(2) | add.s(3)).delay()
    assert isinstance(r, EagerResult) and r.get() == 7 and r.state == states.SUCCESS
    assert (add.s(1) | add.s(2)).delay(10).get() == 13  # partial args go to the first step
    assert (add.s(1, 1) | add.si(5, 5) | add.s(1)).delay().get() == 11
    gr = group(add.s(i, i) for i in range(4)).delay()
    assert isinstance(gr, GroupResult)
    assert gr.get() == [0, 2, 4, 6]
    assert gr.completed_count() == 4 and gr.ready() and gr.successful() and not gr.failed()
    assert group(add.s(1), add.s(2)).delay(10).get() == [11, 12]
    assert chord([add.s(1, 1), add.s(2, 2)], tsum.s()).delay().get() == 6
    assert chord([add.s(1, 1), add.s(2, 2)])(tsum.s()).get() == 6
    assert chord([], tsum.s()).delay().get() == 0
    assert (group(add.s(1, 1), add.s(2, 2)) | tsum.s()).delay().get() == 6  # chord upgrade
    assert (add.s(1, 1) | chord([add.s(1), add.s(2)], tsum.s()) | add.s(100)).delay().get() == 107


def test_eager_chunks_map_starmap(eager: SimpleNamespace) -> None:
    assert eager.add.chunks([(i, i) for i in range(5)], 2).delay().get() == [[0, 2], [4, 6], [8]]
    assert eager.ident.map([1, "a", None]).delay().get() == [1, "a", None]
    assert eager.add.starmap([(1, 2), (3, 4)]).delay().get() == [3, 7]
    assert eager.ident.map([]).delay().get() == []


def test_apply_runs_workflows_here_on_a_non_eager_app(lazy: SimpleNamespace) -> None:
    add, tsum = lazy.add, lazy.tsum
    assert (add.s(1, 1) | add.s(2)).apply().get() == 4
    assert group(add.s(1, 1), add.s(2, 2)).apply().get() == [2, 4]
    assert chord([add.s(1, 1), add.s(2, 2)], tsum.s()).apply().get() == 6
    assert add.chunks([(1, 1), (2, 2)], 1).apply().get() == [[2], [4]]
    assert add.starmap([(1, 1)]).apply().get() == [2]
    assert lazy.app.broker.queue_sizes(["celery"])["celery"]["ready"] == 0  # nothing was sent


def test_eager_failure_errback_new_style(eager: SimpleNamespace) -> None:
    t = tag()
    r = eager.boom.s(1).on_error(eager.new_eb.s(tag=t)).delay()
    assert r.state == states.FAILURE and isinstance(r.result, KeyError)
    [(task_id, exc, traceback)] = events(t)
    assert task_id == r.id
    assert isinstance(exc, KeyError)
    assert traceback and "KeyError" in traceback
    with pytest.raises(KeyError):
        r.get()


def test_eager_failure_errback_old_style_gets_task_id(eager: SimpleNamespace) -> None:
    t = tag()
    r = eager.boom.s().on_error(eager.old_eb.s(tag=t)).delay()
    assert r.failed()
    assert events(t) == [r.id]
    ok = eager.add.s(1, 1).on_error(eager.old_eb.s(tag=t)).delay()
    assert ok.get() == 2 and events(t) == [r.id]  # not called on success


def test_eager_link_runs_with_the_result(eager: SimpleNamespace) -> None:
    t = tag()
    r = eager.add.s(1, 1).set(link=eager.record.s(tag=t)).delay()
    assert r.get() == 2
    assert events(t) == [[2]]


def test_eager_chain_failure_stops_the_chain(eager: SimpleNamespace) -> None:
    t_step, t_after = tag(), tag()
    r = (eager.add.s(1, 1) | eager.boom.s().on_error(eager.new_eb.s(tag=t_step))
         | eager.record.s(tag=t_after)).delay()
    assert r.failed()
    with pytest.raises(KeyError):
        r.get()
    assert len(events(t_step)) == 1 and isinstance(events(t_step)[0][1], KeyError)
    assert events(t_after) == []  # the rest never ran


def test_eager_chord_failure_raises_the_header_error_and_calls_body_errback(eager: SimpleNamespace) -> None:
    t_eb, t_body = tag(), tag()
    body = eager.record.s(tag=t_body).on_error(eager.new_eb.s(tag=t_eb))
    with pytest.raises(KeyError):  # as in Celery: the failed header task's own exception
        chord([eager.add.s(1, 1), eager.boom.s()], body).delay()
    assert events(t_body) == []
    [(_id, exc, _tb)] = events(t_eb)
    assert isinstance(exc, ChordError)


def test_eager_propagates_raises_the_original_error(eager: SimpleNamespace) -> None:
    eager.app.conf.task_eager_propagates = True
    with pytest.raises(KeyError):
        (eager.add.s(1, 1) | eager.boom.s()).delay()
    with pytest.raises(KeyError):
        eager.boom.s().delay()


def test_eager_chain_on_error_runs(eager: SimpleNamespace) -> None:
    t = tag()
    r = (eager.add.s(1, 1) | eager.boom.s() | eager.add.s(1)).on_error(eager.new_eb.s(tag=t)).delay()
    assert r.failed()
    assert len(events(t)) == 1


def test_eager_group_on_error_runs(eager: SimpleNamespace) -> None:
    t = tag()
    gr = group(eager.add.s(1, 1), eager.boom.s()).on_error(eager.new_eb.s(tag=t)).delay()
    assert gr.failed()
    assert len(events(t)) == 1


def test_eager_chord_on_error_runs(eager: SimpleNamespace) -> None:
    t = tag()
    with pytest.raises(KeyError):
        chord([eager.add.s(1, 1), eager.boom.s()], eager.tsum.s()).on_error(eager.new_eb.s(tag=t)).delay()
    [(_id, exc, _tb)] = events(t)
    assert isinstance(exc, ChordError)


def test_eager_chord_errback_gets_the_body_id_like_the_worker(eager: SimpleNamespace) -> None:
    t = tag()
    c = chord([eager.boom.s()], eager.tsum.s().on_error(eager.old_eb.s(tag=t)))
    body_id = c.freeze().id
    with pytest.raises(KeyError):
        c.apply()
    assert events(t) == [body_id]


def test_eager_replace_gives_the_replacement_result(eager: SimpleNamespace) -> None:
    r = eager.rep.delay(1)
    assert r.state == states.SUCCESS
    assert r.get() == 101
    assert (eager.rep.s(1) | eager.add.s(1)).delay().get() == 102
    assert eager.rep_group.delay(1).get() == [2, 3]
    assert eager.rep_chain.delay(1).get() == 12
    assert chord([eager.rep.s(1), eager.add.s(2, 2)], eager.tsum.s()).delay().get() == 105


# =====================================================================================
# 3. On the in-process worker
# =====================================================================================

T = 10  # seconds a worker test waits for a result that must come
HANG = 2  # seconds an xfail test waits on a result that a bug keeps from ever coming


def test_worker_chain_result_and_parent_walk(wk: SimpleNamespace) -> None:
    r = (wk.add.s(1, 1) | wk.add.s(2) | wk.add.s(3)).delay()
    assert r.get(timeout=T) == 7
    assert r.parent.get(timeout=T) == 4
    assert r.parent.parent.get(timeout=T) == 2
    assert r.parent.parent.parent is None
    # the same walk from ids alone (a fresh handle reads parent_id from the store)
    first = r.parent.parent.id
    fresh = AsyncResult(r.id, app=wk.app)
    assert fresh.parent is not None and fresh.parent.id == r.parent.id
    assert fresh.parent.parent is not None and fresh.parent.parent.id == first
    assert fresh.parent.parent.parent is None
    metas = wk.app.backend.get_many([first, r.parent.id, r.id])
    assert {m["root_id"] for m in metas.values()} == {first}
    assert metas[r.id]["parent_id"] == r.parent.id and metas[first]["parent_id"] is None
    # the step that started the next one names it as its child
    assert [c.id for c in AsyncResult(first, app=wk.app).children] == [r.parent.id]


def test_worker_chain_partial_args_and_immutable_steps(wk: SimpleNamespace) -> None:
    assert (wk.add.s(1) | wk.add.s(2)).delay(10).get(timeout=T) == 13
    assert (wk.add.s(1, 1) | wk.add.si(5, 5) | wk.add.s(1)).delay().get(timeout=T) == 11
    assert (wk.add.s(1, 1) | wk.add.s(2)).apply_async(task_id=f"tail-{tag()}").get(timeout=T) == 4


def test_worker_link_callback(wk: SimpleNamespace) -> None:
    t = tag()
    r = wk.add.s(2, 3).set(link=wk.record.s(tag=t)).delay()
    assert r.get(timeout=T) == 5
    assert wait_until(lambda: events(t), T, message="link callback") == [[5]]
    [callback] = AsyncResult(r.id, app=wk.app).children  # the callback is recorded as the task's child
    assert callback.get(timeout=T) == [5]
    assert wk.app.backend.get(callback.id)["parent_id"] == r.id


def test_worker_links_on_workflows_go_to_the_tail(wk: SimpleNamespace) -> None:
    t_chain, t_chord = tag(), tag()
    r = (wk.add.s(1, 1) | wk.add.s(2)).apply_async(link=wk.record.s(tag=t_chain))
    assert r.get(timeout=T) == 4
    assert wait_until(lambda: events(t_chain), T, message="chain link") == [[4]]
    r = chord([wk.add.s(1, 1), wk.add.s(2, 2)], wk.tsum.s()).apply_async(link=wk.record.s(tag=t_chord))
    assert r.get(timeout=T) == 6
    assert wait_until(lambda: events(t_chord), T, message="chord link") == [[6]]


def test_worker_group_and_chord_errbacks(wk: SimpleNamespace) -> None:
    t_group, t_chord, t_call = tag(), tag(), tag()
    gr = group(wk.add.s(1, 1), wk.boom.s()).on_error(wk.old_eb.s(tag=t_group)).delay()
    with pytest.raises(KeyError):
        gr.get(timeout=T)
    assert wait_until(lambda: events(t_group), T, message="group errback") == [gr.results[1].id]
    r = chord([wk.add.s(1, 1), wk.boom.s()], wk.tsum.s()).on_error(wk.old_eb.s(tag=t_chord)).delay()
    with pytest.raises(KeyError):  # as in Celery: the failed header task's own error (its parent)
        r.get(timeout=T)
    assert wait_until(lambda: events(t_chord), T, message="chord errback") == [r.id]
    r = (wk.add.s(1, 1) | wk.boom.s() | wk.add.s(1)).apply_async(link_error=wk.old_eb.s(tag=t_call))
    with pytest.raises(KeyError):
        r.get(timeout=T)
    assert wait_until(lambda: events(t_call), T, message="call-time errback") == [r.parent.id]


def test_worker_chain_errback_for_a_failed_chord_step_runs_once_with_chord_error(wk: SimpleNamespace) -> None:
    t = tag()
    c = (wk.add.s(1, 1) | chord([wk.boom.s(), wk.add.s(1)], wk.tsum.s()) | wk.add.s(1)).on_error(wk.new_eb.s(tag=t))
    r = c.delay()
    with pytest.raises(KeyError):  # the header task's own error, found through r's parents
        r.get(timeout=T)
    with pytest.raises(ChordError):  # what is stored for the steps that never ran
        AsyncResult(r.id, app=wk.app).get(timeout=T)
    [(req_id, exc, _tb)] = wait_until(lambda: events(t), T, message="errback")
    assert isinstance(exc, ChordError) and req_id == r.parent.id  # the chord body's id


def test_worker_chord_header_with_ignored_result_still_counts(wk: SimpleNamespace) -> None:
    r = chord([wk.add.s(1, 1).set(ignore_result=True), wk.add.s(2, 2)], wk.tsum.s()).delay()
    assert r.get(timeout=T) == 6


def test_worker_chain_failure_new_style_errback_and_rest_never_runs(wk: SimpleNamespace) -> None:
    t_eb, t_after = tag(), tag()
    c = (wk.add.s(1, 1) | wk.boom.s() | wk.record.s(tag=t_after)).on_error(wk.new_eb.s(tag=t_eb))
    r = c.delay()
    with pytest.raises(KeyError):
        r.get(timeout=T)  # the chain's last result raises the original error, it does not hang
    failed = r.parent
    with pytest.raises(KeyError):
        failed.get(timeout=T)
    assert r.parent.parent.get(timeout=T) == 2
    [(task_id, exc, traceback)] = wait_until(lambda: events(t_eb), T, message="errback")
    assert task_id == failed.id  # the new-style errback ran in the worker with the failed request
    assert isinstance(exc, KeyError)
    assert traceback and "KeyError" in traceback
    assert r.state == states.FAILURE and isinstance(r.result, KeyError)
    assert events(t_after) == []


def test_worker_chain_failure_old_style_errback_gets_failed_task_id(wk: SimpleNamespace) -> None:
    t_eb, t_after = tag(), tag()
    r = (wk.add.s(1, 1) | wk.boom.s() | wk.record.s(tag=t_after)).on_error(wk.old_eb.s(tag=t_eb)).delay()
    with pytest.raises(KeyError):
        r.get(timeout=T)
    assert wait_until(lambda: events(t_eb), T, message="old-style errback") == [r.parent.id]
    assert events(t_after) == []


def test_worker_errback_on_one_step_only(wk: SimpleNamespace) -> None:
    t_eb = tag()
    r = (wk.add.s(1, 1) | wk.boom.s().on_error(wk.old_eb.s(tag=t_eb)) | wk.add.s(1)).delay()
    with pytest.raises(KeyError):
        r.get(timeout=T)
    assert wait_until(lambda: events(t_eb), T, message="errback") == [r.parent.id]


def test_worker_failure_before_a_group_or_chord_fails_them_too(wk: SimpleNamespace) -> None:
    r = (wk.add.s(1, 1) | wk.boom.s() | group(wk.add.s(1), wk.add.s(2))).delay()
    assert isinstance(r, GroupResult)
    with pytest.raises(KeyError):
        r.get(timeout=T)
    r2 = (wk.add.s(1, 1) | wk.boom.s() | group(wk.add.s(1), wk.add.s(2)) | wk.tsum.s()).delay()
    with pytest.raises(KeyError):
        r2.get(timeout=T)


def test_worker_group_results(wk: SimpleNamespace) -> None:
    n = 6
    # later members finish first: results still come back in group order
    gr = group(wk.slow_ident.s(i, 0.03 * (n - i)) for i in range(n)).delay()
    assert isinstance(gr, GroupResult) and len(gr) == n
    assert gr.get(timeout=T) == list(range(n))
    assert gr.completed_count() == n
    assert gr.ready() and gr.successful() and not gr.failed() and not gr.waiting()
    assert gr.join(timeout=T) == list(range(n))
    # Celery's iter_native yields (task id, meta)
    assert [(i, m["status"], m["result"]) for i, m in gr.iter_native(timeout=T)] == [
        (r.id, states.SUCCESS, n) for n, r in enumerate(gr.results)]
    gr.save()
    back = GroupResult.restore(gr.id, app=wk.app)
    assert back is not None and back.id == gr.id
    assert [r.id for r in back.results] == [r.id for r in gr.results]
    assert back.get(timeout=T) == list(range(n))
    assert back == gr
    back.delete()
    assert GroupResult.restore(gr.id, app=wk.app) is None


def test_worker_group_with_a_failure(wk: SimpleNamespace) -> None:
    gr = group(wk.add.s(1, 1), wk.boom.s(), wk.add.s(2, 2)).delay()
    with pytest.raises(KeyError):
        gr.get(timeout=T)
    values = gr.join(timeout=T, propagate=False)
    assert values[0] == 2 and isinstance(values[1], KeyError) and values[2] == 4
    assert gr.completed_count() == 2
    assert gr.ready() and gr.failed() and not gr.successful()


def test_group_waiting_on_unconsumed_queue_times_out(wk: SimpleNamespace) -> None:
    gr = group(wk.add.s(1, 1).set(queue=f"nobody-{tag()}"), wk.add.s(2, 2)).delay()
    with pytest.raises(ResultTimeout):
        gr.get(timeout=0.3)
    assert not gr.ready() and gr.waiting() and not gr.successful() and not gr.failed()
    assert gr.results[1].get(timeout=T) == 4
    assert gr.completed_count() == 1
    with pytest.raises(IncompleteStream):
        list(gr.results[0].iterdeps())


def test_worker_chord_body_gets_results_in_header_order(wk: SimpleNamespace) -> None:
    n = 6
    r = chord([wk.slow_ident.s(i, 0.03 * (n - i)) for i in range(n)], wk.ident.s()).delay()
    assert r.get(timeout=T) == list(range(n))
    header = r.parent
    assert isinstance(header, GroupResult) and header.get(timeout=T) == list(range(n))
    assert chord((wk.add.s(i, i) for i in range(20)), wk.ident.s()).delay().get(timeout=T) == [
        2 * i for i in range(20)]
    assert chord([wk.add.s(1, 1), wk.add.s(2, 2)])(wk.tsum.s()).get(timeout=T) == 6
    assert chord([wk.add.s(1, 1), wk.add.s(2, 2)], wk.tsum.si([10, 20])).delay().get(timeout=T) == 30


def test_worker_chord_failing_header(wk: SimpleNamespace) -> None:
    t_body, t_new, t_old = tag(), tag(), tag()
    body = wk.record.s(tag=t_body).on_error(wk.new_eb.s(tag=t_new)).on_error(wk.old_eb.s(tag=t_old))
    r = chord([wk.add.s(1, 1), wk.boom.s(), wk.add.s(2, 2)], body).delay()
    failed_id = r.parent.results[1].id
    with pytest.raises(KeyError):  # as in Celery: the failed header task's own error
        r.get(timeout=T)
    with pytest.raises(ChordError) as info:  # the body's stored result, e.g. read by id elsewhere
        AsyncResult(r.id, app=wk.app).get(timeout=T)
    assert failed_id in str(info.value) and "KeyError" in str(info.value)
    assert r.state == states.FAILURE and isinstance(r.result, ChordError)
    [(req_id, exc, _tb)] = wait_until(lambda: events(t_new), T, message="new-style body errback")
    assert isinstance(exc, ChordError) and failed_id in str(exc)
    assert req_id == r.id
    assert wait_until(lambda: events(t_old), T, message="old-style body errback") == [r.id]
    assert r.parent.join(timeout=T, propagate=False)[0] == 2
    assert events(t_body) == []  # the body never ran


def test_worker_empty_chord_runs_the_body_with_no_results(wk: SimpleNamespace) -> None:
    assert chord([], wk.ident.s()).delay().get(timeout=T) == []
    assert chord([], wk.tsum.s()).delay().get(timeout=T) == 0


def test_worker_chain_of_groups_upgrades_to_chord(wk: SimpleNamespace) -> None:
    c = group(wk.add.s(1, 1), wk.add.s(2, 2)) | wk.tsum.s()
    assert c.delay().get(timeout=T) == 6
    assert type(c._steps()[0]) is chord
    r = (wk.add.s(1, 1) | group(wk.add.s(1), wk.add.s(2))).delay()
    assert isinstance(r, GroupResult) and r.get(timeout=T) == [3, 4]
    assert (wk.add.s(1, 1) | group(wk.add.s(1), wk.add.s(2)) | wk.tsum.s()).delay().get(timeout=T) == 7
    two_groups = group(wk.add.s(1, 1), wk.add.s(2, 2)) | group(wk.tsum.s(), wk.ident.s())
    assert two_groups.delay().get(timeout=T) == [6, [2, 4]]
    chunked = wk.add.chunks([(1, 1), (2, 2)], 1) | wk.ident.s()
    assert chunked.delay().get(timeout=T) == [[2], [4]]


def test_worker_group_of_chains_and_nested_groups(wk: SimpleNamespace) -> None:
    r = group(wk.add.s(1, 1) | wk.add.s(10), wk.add.s(2, 2) | wk.add.s(20)).delay()
    assert r.get(timeout=T) == [12, 24]
    nested = group(group(wk.add.s(1, 1), wk.add.s(2, 2)), wk.add.s(3, 3)).delay()
    # Celery's shape: the inner group is a GroupResult of its tasks
    inner = nested.results[0]
    assert isinstance(inner, GroupResult) and len(inner) == 2 and isinstance(nested.results[1], AsyncResult)
    assert nested.get(timeout=T) == [[2, 4], 6] and inner.get(timeout=T) == [2, 4]
    r = group(chord([wk.add.s(1, 1), wk.add.s(2, 2)], wk.tsum.s()), wk.add.s(5, 5)).delay()
    assert r.get(timeout=T) == [6, 10]


def test_nested_group_result_handles_use_the_workflow_app(wk: SimpleNamespace) -> None:
    r = group(group(wk.add.s(1, 1), wk.add.s(2, 2)), wk.add.s(3, 3)).delay()
    assert all(x.app is wk.app for x in r.results)
    started = time.monotonic()
    assert r.get(timeout=5) == [[2, 4], 6]
    assert time.monotonic() - started < 2
    header = chord([group(wk.add.s(1, 1), wk.add.s(2, 2)), wk.add.s(3, 3)], wk.ident.s()).freeze().parent
    assert all(x.app is wk.app for x in header.results)


def test_worker_chord_inside_chain_and_chain_as_body(wk: SimpleNamespace) -> None:
    r = (wk.add.s(1, 1) | chord([wk.add.s(1), wk.add.s(2)], wk.tsum.s()) | wk.add.s(100)).delay()
    assert r.get(timeout=T) == 107
    assert r.parent.get(timeout=T) == 7
    r = chord([wk.add.s(1, 1), wk.add.s(2, 2)], wk.tsum.s() | wk.add.s(100)).delay()
    assert r.get(timeout=T) == 106


def test_worker_chord_failing_header_inside_chain_fails_the_rest(wk: SimpleNamespace) -> None:
    t_after = tag()
    r = (chord([wk.boom.s(), wk.add.s(1, 1)], wk.tsum.s()) | wk.record.s(tag=t_after)).delay()
    with pytest.raises(KeyError):
        r.get(timeout=T)
    with pytest.raises(KeyError):
        r.parent.get(timeout=T)
    with pytest.raises(ChordError):
        r.parent.get(timeout=T, follow_parents=False)
    assert events(t_after) == []


def test_worker_group_inside_chord_header(wk: SimpleNamespace) -> None:
    r = chord([group(wk.add.s(1, 1), wk.add.s(2, 2)), wk.add.s(3, 3)], wk.ident.s()).delay()
    assert r.get(timeout=T) == [[2, 4], 6]


def test_worker_chain_inside_chord_header(wk: SimpleNamespace) -> None:
    r = chord([wk.add.s(1, 1) | wk.add.s(1), wk.add.s(2, 2)], wk.tsum.s()).delay()
    assert r.get(timeout=T) == 7


def test_worker_failing_chain_inside_chord_header_fails_the_chord(wk: SimpleNamespace) -> None:
    r = chord([wk.add.s(1, 1) | wk.boom.s() | wk.add.s(1), wk.add.s(2, 2)], wk.tsum.s()).delay()
    with pytest.raises(KeyError):  # the chain's tail carries its failed step's error
        r.get(timeout=HANG)
    with pytest.raises(ChordError):
        r.get(timeout=HANG, follow_parents=False)


def test_worker_failing_group_inside_chord_header_fails_the_chord(wk: SimpleNamespace) -> None:
    r = chord([group(wk.add.s(1, 1), wk.boom.s()), wk.add.s(2, 2)], wk.ident.s()).delay()
    with pytest.raises(KeyError):  # as in Celery: the nested group's failed task's own error
        r.get(timeout=HANG)
    with pytest.raises(ChordError):
        r.get(timeout=HANG, follow_parents=False)


def test_worker_failing_chord_inside_chord_header_fails_the_chord(wk: SimpleNamespace) -> None:
    inner = chord([wk.boom.s(), wk.add.s(2, 2)], wk.tsum.s())
    r = chord([inner, wk.add.s(3, 3)], wk.ident.s()).delay()
    with pytest.raises(ChordError):
        r.get(timeout=HANG)


def test_worker_chord_inside_chord_header(wk: SimpleNamespace) -> None:
    inner = chord([wk.add.s(1, 1), wk.add.s(2, 2)], wk.tsum.s())
    assert chord([inner, wk.add.s(3, 3)], wk.ident.s()).delay().get(timeout=T) == [6, 6]


def test_worker_chain_ending_in_group_inside_chord_header(wk: SimpleNamespace) -> None:
    member = wk.add.s(1, 1) | group(wk.add.s(1), wk.add.s(2))
    r = chord([member, wk.add.s(3, 3)], wk.ident.s()).delay()
    assert r.get(timeout=HANG) == [[3, 4], 6]


def test_worker_group_of_a_chain_ending_in_a_group(wk: SimpleNamespace) -> None:
    r = group(wk.add.s(1, 1) | group(wk.add.s(1), wk.add.s(2)), wk.add.s(3, 3)).delay()
    assert isinstance(r.results[0], GroupResult)
    assert r.get(timeout=T) == [[3, 4], 6]
    r = (wk.add.s(1, 1) | group(wk.add.s(1), wk.add.s(2))).apply_async(task_id=f"g-{tag()}")
    assert isinstance(r, GroupResult) and r.id.startswith("g-") and r.get(timeout=T) == [3, 4]


def test_worker_chunks_map_starmap(wk: SimpleNamespace) -> None:
    r = wk.add.chunks([(i, i) for i in range(10)], 3).delay()
    assert isinstance(r, GroupResult) and len(r) == 4
    assert r.get(timeout=T) == [[0, 2, 4], [6, 8, 10], [12, 14, 16], [18]]
    assert wk.ident.map([1, "x", [2]]).delay().get(timeout=T) == [1, "x", [2]]
    assert wk.add.starmap([(1, 2), (3, 4)]).delay().get(timeout=T) == [3, 7]
    failing = wk.boom.map([1, 2]).delay()
    with pytest.raises(KeyError):
        failing.get(timeout=T)


def test_worker_replace_keeps_the_result_id(wk: SimpleNamespace) -> None:
    r = wk.rep.delay(5)
    assert r.get(timeout=T) == 105
    meta = wk.app.backend.get(r.id)
    assert meta is not None and meta["status"] == states.SUCCESS and meta["result"] == 105
    assert wk.rep_group.delay(5).get(timeout=T) == [6, 7]  # a group replacement gives the list
    assert wk.rep_chain.delay(1).get(timeout=T) == 12


def test_worker_chain_continues_after_replacement(wk: SimpleNamespace) -> None:
    r = (wk.add.s(1, 1) | wk.rep.s() | wk.add.s(1000)).delay()
    assert r.get(timeout=T) == 1102
    assert r.parent.get(timeout=T) == 102  # the replaced step's id holds the replacement's result
    assert r.parent.parent.get(timeout=T) == 2
    assert (wk.rep_group.s(1) | wk.tsum.s()).delay().get(timeout=T) == 5
    assert chord([wk.rep.s(1), wk.add.s(2, 2)], wk.tsum.s()).delay().get(timeout=T) == 105
    assert group(wk.rep.s(1), wk.rep.s(2)).delay().get(timeout=T) == [101, 102]
    assert chord([wk.rep_group.s(1), wk.add.s(2, 2)], wk.ident.s()).delay().get(timeout=T) == [[2, 3], 4]


def test_worker_workflow_started_inside_a_task_is_tied_to_it(wk: SimpleNamespace) -> None:
    r = wk.launcher.delay(1)
    chain_last, chain_first, group_id, members = r.get(timeout=T)
    assert AsyncResult(chain_last, app=wk.app).get(timeout=T) == 4
    assert GroupResult(group_id, [AsyncResult(m, app=wk.app) for m in members], app=wk.app).get(timeout=T) == [2, 4]
    metas = wk.app.backend.get_many([chain_first, chain_last, *members])
    for task_id in (chain_first, *members):
        assert metas[task_id]["parent_id"] == r.id
    assert metas[chain_last]["parent_id"] == chain_first
    assert {m["root_id"] for m in metas.values()} == {r.id}
    child_ids = [c.id for c in r.children]
    assert chain_first in child_ids and chain_last not in child_ids
    walked = [(node.id, value) for node, value in r.collect(timeout=T)]
    ids = [i for i, _v in walked]
    assert ids[0] == r.id
    assert set(ids) >= {r.id, chain_first, chain_last, *members}
    assert dict(walked)[chain_last] == 4
    assert set(AsyncResult(r.id, app=wk.app).graph_ids()) >= {r.id, chain_first, chain_last, *members}
    pairs = {(parent.id if parent is not None else None, node.id) for parent, node in r.iterdeps()}
    assert (None, r.id) in pairs and (r.id, chain_first) in pairs and (chain_first, chain_last) in pairs


def test_worker_group_started_inside_a_task_is_a_group_child(wk: SimpleNamespace) -> None:
    r = wk.launcher.delay(1)
    _last, _first, group_id, members = r.get(timeout=T)
    groups = [c for c in r.children if isinstance(c, GroupResult)]
    assert [g.id for g in groups] == [group_id]
    assert [m.id for m in groups[0].results] == members


def test_worker_chord_started_inside_a_task_is_collected(wk: SimpleNamespace) -> None:
    r = wk.chord_launcher.delay()
    body_id, header_ids = r.get(timeout=T)
    assert AsyncResult(body_id, app=wk.app).get(timeout=T) == 6
    ids = {node.id for node, _v in r.collect(timeout=T)}
    assert set(header_ids) <= ids
    assert body_id in ids


def test_worker_chord_with_a_chain_body_started_inside_a_task_is_collected(wk: SimpleNamespace) -> None:
    r = wk.chord_chain_launcher.delay()
    first_id, last_id = r.get(timeout=T)
    assert AsyncResult(last_id, app=wk.app).get(timeout=T) == 16
    walked = {node.id: value for node, value in r.collect(timeout=T)}
    assert walked[first_id] == 6 and walked[last_id] == 16  # both steps of the body, from the launcher


# =====================================================================================
# 4. The chord counting contract of the result stores
# =====================================================================================

@pytest.fixture
def chord_url(any_store_url: str) -> str:
    return any_store_url


@pytest.fixture
def store(chord_url: str) -> Iterator[ResultStore]:
    s = create_result_store(chord_url)
    yield s
    s.close()


BODY = {"task": "t.body", "args": [], "kwargs": {}, "options": {"task_id": "body-id"}, "subtask_type": None,
        "immutable": False}


def part(store: ResultStore, group_id: str, index: int, size: int, task_id: str | None = None,
         status: str = states.SUCCESS, value: Any = None) -> ChordPart:
    task_id = task_id or f"{group_id}-t{index}"
    meta = {"task_id": task_id, "status": status, "result": index if value is None else value,
            "traceback": None, "children": [], "date_done": None, "name": "t.header"}
    return ChordPart(group_id, index, size, task_id, status, store.encode(meta).data, dict(BODY, chord_size=size),
                     root_id="root")


def gid() -> str:
    return f"g-{uuid.uuid4().hex}"


def test_chord_fires_once_when_the_last_distinct_index_arrives(store: ResultStore) -> None:
    g = gid()
    assert store.chord_parts_done([]) == []
    assert store.chord_parts_done([part(store, g, 0, 3)]) == []
    assert store.chord_parts_done([part(store, g, 1, 3)]) == []
    last = part(store, g, 2, 3)
    [fired] = store.chord_parts_done([last])
    assert isinstance(fired, FiredChord)
    assert fired.part.task_id == last.task_id and fired.part.group_id == g
    assert fired.part.body["chord_size"] == 3
    assert [m["task_id"] for m in fired.metas] == [f"{g}-t0", f"{g}-t1", f"{g}-t2"]
    assert [m["result"] for m in fired.metas] == [0, 1, 2]
    assert all(m["status"] == states.SUCCESS for m in fired.metas)


def test_chord_same_index_twice_counts_once(store: ResultStore) -> None:
    g = gid()
    assert store.chord_parts_done([part(store, g, 0, 3, value="first")]) == []
    assert store.chord_parts_done([part(store, g, 0, 3, value="again")]) == []  # redelivered header
    assert store.chord_parts_done([part(store, g, 1, 3)]) == []  # 2 distinct of 3: not yet
    [fired] = store.chord_parts_done([part(store, g, 2, 3)])
    assert len(fired.metas) == 3
    assert fired.metas[0]["result"] == "again"  # the latest outcome of a member is kept


def test_chord_firing_task_is_told_again_and_nobody_else(store: ResultStore) -> None:
    g = gid()
    store.chord_parts_done([part(store, g, 0, 3), part(store, g, 1, 3)])
    [fired] = store.chord_parts_done([part(store, g, 2, 3)])
    assert fired.part.task_id == f"{g}-t2"
    # the header that fired it runs again (its worker died before publishing the body): told again
    [again] = store.chord_parts_done([part(store, g, 2, 3)])
    assert again.part.task_id == f"{g}-t2" and [m["result"] for m in again.metas] == [0, 1, 2]
    # every other member, again or for the first time under another id, is told nothing
    assert store.chord_parts_done([part(store, g, 0, 3)]) == []
    assert store.chord_parts_done([part(store, g, 1, 3)]) == []
    assert store.chord_parts_done([part(store, g, 2, 3, task_id="an-impostor")]) == []


def test_chord_failed_part_fires_at_once_and_later_parts_do_not(store: ResultStore) -> None:
    g = gid()
    assert store.chord_parts_done([part(store, g, 0, 4)]) == []
    bad = part(store, g, 2, 4, status=states.FAILURE, value={"exc_type": "KeyError", "exc_message": ["x"]})
    [fired] = store.chord_parts_done([bad])
    assert fired.part.task_id == bad.task_id and fired.part.failed
    assert [m["status"] for m in fired.metas] == [states.SUCCESS, states.FAILURE]
    assert [m["task_id"] for m in fired.metas] == [f"{g}-t0", f"{g}-t2"]
    # the rest arrives, including the part that completes the count: nobody is told
    assert store.chord_parts_done([part(store, g, 1, 4)]) == []
    assert store.chord_parts_done([part(store, g, 3, 4)]) == []
    another_failure = part(store, g, 1, 4, task_id="other-failure", status=states.FAILURE)
    assert store.chord_parts_done([another_failure]) == []
    # the failed header itself, redelivered, is told again (and sees everything recorded since)
    [again] = store.chord_parts_done([bad])
    assert again.part.task_id == bad.task_id and len(again.metas) == 4


def test_chord_metas_come_back_in_index_order(store: ResultStore) -> None:
    g = gid()
    size = 12
    order = [7, 3, 11, 0, 5, 9, 1, 10, 2, 8, 6]
    for i in order:
        assert store.chord_parts_done([part(store, g, i, size)]) == []
    [fired] = store.chord_parts_done([part(store, g, 4, size)])
    assert [m["result"] for m in fired.metas] == list(range(size))


def test_chord_several_parts_in_one_call(store: ResultStore) -> None:
    g1, g2, g3 = gid(), gid(), gid()
    fired = store.chord_parts_done([
        part(store, g1, 1, 3), part(store, g2, 0, 2), part(store, g1, 0, 3),
        part(store, g3, 0, 5), part(store, g2, 1, 2), part(store, g1, 2, 3),
    ])
    by_group = {f.part.group_id: f for f in fired}
    assert sorted(by_group) == sorted([g1, g2])  # g3 is incomplete
    assert len(fired) == 2
    assert by_group[g1].part.task_id == f"{g1}-t2" and [m["result"] for m in by_group[g1].metas] == [0, 1, 2]
    assert by_group[g2].part.task_id == f"{g2}-t1" and [m["result"] for m in by_group[g2].metas] == [0, 1]
    # the same index twice in one call counts once
    g4 = gid()
    assert store.chord_parts_done([part(store, g4, 0, 2), part(store, g4, 0, 2)]) == []
    # a failure and the completing part in one call: only the failure fires
    g5 = gid()
    fired = store.chord_parts_done([part(store, g5, 0, 2, status=states.FAILURE), part(store, g5, 1, 2)])
    assert [(f.part.group_id, f.part.task_id) for f in fired] == [(g5, f"{g5}-t0")]


def test_chord_parts_are_per_group(store: ResultStore) -> None:
    g1, g2 = gid(), gid()
    assert store.chord_parts_done([part(store, g1, 0, 2)]) == []
    assert store.chord_parts_done([part(store, g2, 1, 2)]) == []  # another chord's index 1
    [fired] = store.chord_parts_done([part(store, g1, 1, 2)])
    assert fired.part.group_id == g1 and [m["task_id"] for m in fired.metas] == [f"{g1}-t0", f"{g1}-t1"]


def test_chord_counting_is_shared_by_store_instances(chord_url: str) -> None:
    g = gid()
    first = create_result_store(chord_url)
    second = create_result_store(chord_url)
    try:
        assert first.chord_parts_done([part(first, g, 0, 2)]) == []
        [fired] = second.chord_parts_done([part(second, g, 1, 2)])
        assert [m["result"] for m in fired.metas] == [0, 1]
    finally:
        first.close()
        second.close()


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis", "postgres"])
def test_chord_concurrent_parts_fire_exactly_once(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    url = result_store_url(kind, tmp_path, request)
    g = gid()
    size, threads = 400, 8
    fired: list[FiredChord] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def worker(n: int) -> None:
        s = create_result_store(url)
        try:
            mine = list(range(n, size, threads))
            start.wait(10)
            i = 0
            while i < len(mine):  # batches of 1..4 parts, as a worker's flush would send
                batch = mine[i:i + 1 + (i + n) % 4]
                i += len(batch)
                got = s.chord_parts_done([part(s, g, idx, size) for idx in batch])
                with lock:
                    fired.extend(got)
        except BaseException as exc:  # reported below
            with lock:
                errors.append(exc)
        finally:
            s.close()

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(30)
    assert not any(t.is_alive() for t in pool)
    assert errors == []
    assert len(fired) == 1
    assert [m["result"] for m in fired[0].metas] == list(range(size))


# --- what a worker does with a fired chord (workflow.fire_chord) ---

def _fire(ns: SimpleNamespace, fired: FiredChord) -> tuple[list[Any], dict[str, tuple[str, Any]]]:
    publishes: list[Any] = []
    stored: dict[str, tuple[str, Any]] = {}

    def store(task_id: str, state: str, value: Any, traceback: str | None, name: str | None) -> None:
        stored[task_id] = (state, value)

    workflow.fire_chord(ns.app, fired, publishes, store, [])
    return publishes, stored


def _body(ns: SimpleNamespace, size: int) -> dict[str, Any]:
    body = ns.ident.s()
    body.freeze()
    return {**dict(body), "chord_size": size}


def test_fire_chord_publishes_the_body_with_values_in_header_order(lazy: SimpleNamespace) -> None:
    st = lazy.app.backend
    g, body = gid(), _body(lazy, 3)
    parts = [ChordPart(g, i, 3, f"t{i}", states.SUCCESS, part(st, g, i, 3, value=f"v{i}").data, body, "root")
             for i in (2, 0, 1)]
    [fired] = st.chord_parts_done(parts)
    publishes, stored = _fire(lazy, fired)
    assert stored == {}
    lazy.app.broker.publish(publishes)
    [msg] = sent(lazy.app)
    assert msg.headers["id"] == body["options"]["task_id"] and msg.headers["task"] == lazy.ident.name
    assert msg.args == (["v0", "v1", "v2"],)
    assert msg.headers["root_id"] == "root" and msg.headers["parent_id"] == "t1"


def test_fire_chord_with_a_failed_member_fails_the_body(lazy: SimpleNamespace) -> None:
    st = lazy.app.backend
    g, body = gid(), _body(lazy, 2)
    error = {"exc_type": "KeyError", "exc_message": ["nope"], "exc_module": "builtins"}
    bad = ChordPart(g, 1, 2, "bad-task", states.FAILURE,
                    part(st, g, 1, 2, task_id="bad-task", status=states.FAILURE, value=error).data, body, "root")
    [fired] = st.chord_parts_done([bad])
    publishes, stored = _fire(lazy, fired)
    assert publishes == []
    state, exc = stored[body["options"]["task_id"]]
    assert state == states.FAILURE and isinstance(exc, ChordError) and "bad-task" in str(exc)


def test_fire_chord_refired_by_a_header_that_now_succeeds(lazy: SimpleNamespace) -> None:
    st = lazy.app.backend
    g, body = gid(), _body(lazy, 3)
    first = ChordPart(g, 0, 3, "flaky", states.FAILURE,
                      part(st, g, 0, 3, task_id="flaky", status=states.FAILURE, value="x").data, body, "root")
    [fired] = st.chord_parts_done([first])
    _fire(lazy, fired)  # the body is failed; then the worker dies before acking the header
    again = ChordPart(g, 0, 3, "flaky", states.SUCCESS, part(st, g, 0, 3, task_id="flaky").data, body, "root")
    [refired] = st.chord_parts_done([again])  # the same task is told again (the contract above)
    publishes, _stored = _fire(lazy, refired)
    assert publishes == []  # whatever it does, it must not crash, nor send the body a partial list
