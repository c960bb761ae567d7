"""Unit tests of the remote-control registry, argument parsing, the facts workers report,
and the request's Celery names."""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from celeriac import Celeriac
from celeriac.task import Context
from celeriac.worker import introspect
from celeriac.worker.control import BUILTIN_COMMANDS, Panel, compile_arguments, control_command, inspect_command


@pytest.fixture
def panel() -> Iterator[None]:
    data, meta = dict(Panel.data), dict(Panel.meta)
    yield
    Panel.data.clear(), Panel.meta.clear()
    Panel.data.update(data), Panel.meta.update(meta)


def test_decorators_register_handlers_with_their_description(panel: None) -> None:
    @control_command(args=[("n", int)], signature="[N=1]", alias="bump_it")
    def bump(state: Any, n: int = 1) -> dict[str, Any]:
        """Bump the thing.

        More text that is not the summary."""
        return {"ok": n}

    @inspect_command()
    def look(state: Any) -> None:
        pass

    assert Panel.data["bump"] is bump and Panel.data["bump_it"] is bump and Panel.data["look"] is look
    assert Panel.meta["bump"].type == "control" and Panel.meta["bump"].help == "Bump the thing."
    assert Panel.meta["look"].type == "inspect" and Panel.meta["look"].signature is None
    assert Panel.register(lambda state: None, name="plain").__name__ == "<lambda>"  # Celery's other form
    assert Panel.meta["plain"].type == "control"
    with pytest.raises(ValueError, match="'control' or 'inspect'"):
        Panel.register(type="query")


def test_builtins_are_described_for_the_command_line() -> None:
    assert {"ping", "stats", "query_task", "registered", "conf", "memdump", "revoke", "rate_limit"} <= BUILTIN_COMMANDS
    assert compile_arguments("registered", ["rate_limit", "time_limit"]) == {
        "taskinfoitems": ["rate_limit", "time_limit"]}
    assert compile_arguments("query_task", []) == {"ids": []}
    assert compile_arguments("conf", ["true"]) == {"with_defaults": True}
    assert compile_arguments("conf", ["no"]) == {"with_defaults": False}
    assert compile_arguments("time_limit", ["tasks.add", "1.5"]) == {"task_name": "tasks.add", "soft": 1.5}
    assert compile_arguments("ping", []) == {}


def test_bad_command_line_arguments_are_one_line_errors(panel: None) -> None:
    @control_command(args=[("n", int)], signature="[N=1]")
    def bump(state: Any, n: int = 1) -> None:
        pass

    assert compile_arguments("bump", ["3"]) == {"n": 3}
    with pytest.raises(ValueError, match="bump: bad value 'x' for n"):
        compile_arguments("bump", ["x"])
    with pytest.raises(ValueError, match=r"bump takes arguments: \[N=1\]"):
        compile_arguments("bump", ["1", "2"])
    with pytest.raises(ValueError, match="ping takes arguments"):
        compile_arguments("ping", ["extra"])


def test_secrets_never_show() -> None:
    assert introspect.censor("s3cret", "my_api_key") == "********"
    assert introspect.censor({"password": "p", "master_name": "m"}) == {"password": "********", "master_name": "m"}
    assert introspect.censor("redis://:pw@host:6379/0") == "redis://:**@host:6379/0"
    assert introspect.censor(object(), "x").startswith("<object")
    assert introspect.censor((1, "a"), "x") == [1, "a"]
    app = Celeriac("conf_app", broker="amqp://user:pw@rabbit:5672/vh", backend="redis://:pw@r:6379/1")
    app.conf.secret_token = "t0ken"
    table = introspect.conf_table(app)
    assert table["broker_url"] == "amqp://user:**@rabbit:5672/vh" and table["result_backend"] == "redis://:**@r:6379/1"
    assert table["secret_token"] == "********" and "task_serializer" not in table
    assert introspect.conf_table(app, with_defaults=True)["task_serializer"] == "json"


def test_broker_info_has_celerys_keys_and_no_password() -> None:
    info = introspect.broker_info("amqps://guest:pw@rabbit:5671/prod", {"visibility": 1, "password": "x"})
    assert info["transport"] == "amqp" and info["hostname"] == "rabbit" and info["port"] == 5671
    assert info["userid"] == "guest" and info["virtual_host"] == "prod" and info["ssl"] is True
    assert info["url"] == "amqps://guest:**@rabbit:5671/prod" and info["transport_options"]["password"] == "********"
    assert "pw" not in str(info).replace("password", "")
    sqlite = introspect.broker_info("sqlite:////var/lib/app.db", None)
    assert sqlite["transport"] == "sqlite" and sqlite["hostname"] is None
    assert sqlite["virtual_host"] == "/var/lib/app.db"
    assert introspect.broker_info("redis://localhost:6379/0", None)["virtual_host"] == "0"


def test_memory_figures() -> None:
    import os
    assert (introspect.resident_bytes(os.getpid()) or 0) > 1_000_000
    assert introspect.human_bytes(None) == "N/A" and introspect.human_bytes(512) == "512B"
    assert introspect.human_bytes(3 * 1024 * 1024) == "3.00MB"


def test_request_time_limits_follow_celerys_order() -> None:
    request = Context(timelimit=(30, 20))
    assert (request.time_limit, request.soft_time_limit) == (30, 20)
    assert Context(timelimit=None).time_limit is None and Context().soft_time_limit is None
    assert Context(timelimit=(None, 5)).soft_time_limit == 5
    assert Context(group="g").taskset == "g" and Context().replaced_task_nesting == 0


def test_slot_info_and_totals_round_trip() -> None:
    from celeriac import protocol
    from celeriac.worker import slotinfo
    from celeriac.worker.consumer import PlainSlot
    from celeriac.worker.pool import SharedSlot

    accept = protocol.accepted_types(["json", "pickle"])
    delivery = {"exchange": "", "routing_key": "celery", "priority": 3, "redelivered": True}
    for slot in (PlainSlot(), SharedSlot()):
        _, body = protocol.dumps([[1, 2], {"k": "v"}, {}], "json")
        slotinfo.write_info(slot, "t1", delivery, protocol.JSON, body, ("(1, 2)", "{'k': 'v'}"))
        assert slotinfo.read_info(slot, "t1", accept) == {"args": [1, 2], "kwargs": {"k": "v"},
                                                          "delivery_info": delivery}
        assert slotinfo.read_info(slot, "t2", accept) == {}  # the slot moved on to another task
        _, big = protocol.dumps([["x" * 100] * 100, {}, {}], "json")  # too big: the sender's reprs stand in
        slotinfo.write_info(slot, "t3", delivery, protocol.JSON, big, ("['xxx', ...]", "{}"))
        assert slotinfo.read_info(slot, "t3", accept)["args"] == "['xxx', ...]"
        ctype, pickled = protocol.dumps([[b"\x00"], {}, {}], "pickle")  # NUL bytes: reprs too
        slotinfo.write_info(slot, "t4", delivery, ctype, pickled, ("(b'\\x00',)", "{}"))
        assert slotinfo.read_info(slot, "t4", accept)["args"] == "(b'\\x00',)"
        assert slotinfo.read_totals(slot) == {}
        slotinfo.publish_totals(slot, {"a": 2, "b": 1})
        assert slotinfo.read_totals(slot) == {"a": 2, "b": 1} and slot.totals_seq % 2 == 0
        many = {f"task.number.{i:05d}": i for i in range(2000)}  # more names than fit: the busiest stay
        slotinfo.publish_totals(slot, many)
        kept = slotinfo.read_totals(slot) or {}
        assert 0 < len(kept) < 2000 and "task.number.01999" in kept and "task.number.00000" not in kept
    assert slotinfo.merge_totals({"a": 1}, {"a": 2, "b": 1}) == {"a": 3, "b": 1}
