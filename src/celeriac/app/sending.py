"""Sending tasks: a call becomes a broker message (`prepare_task`), is published under the
publish retry policy (`publish`), and is announced (task-sent events, the publish signals).

`Celeriac` takes these methods from `Sending`: they are the client's hot path (one `delay()`
runs through `send_task` -> `prepare_task` -> `publish`) and read best together, apart from
the app's configuration and task registry.
"""

from __future__ import annotations

import fnmatch
import os
import socket
import time
from datetime import datetime, timedelta, UTC
from typing import TYPE_CHECKING, Any, Sequence

from .. import protocol, signals
from ..aio.capture import current as captured_call
from ..brokers import Outgoing, safe_url
from .._options import check_call_options
from ..exceptions import OperationalError
from ..result import AsyncResult
from ..result import AsyncResult as ResultHandle
from ..task import Context, current_task_and_request
from ..task import Task as BaseTask
from ..unique import UNIQUE_HEADER, unique_hold
from . import plain

if TYPE_CHECKING:
    from . import Celeriac, TaskRegistry
    from ..backends import ResultStore
    from ..brokers import Broker
    from ..config import Settings


class Sending:
    """The sending half of the app, mixed into `Celeriac`, which provides what is declared here."""

    if TYPE_CHECKING:
        conf: Settings
        tasks: TaskRegistry
        _broker: Broker | None
        _sent_events: Any
        _plain_plans: dict[tuple[Any, ...], Any]

        @property
        def broker(self) -> Broker: ...

        @property
        def backend(self) -> ResultStore: ...

        @property
        def broker_url(self) -> str: ...

    def _app(self) -> "Celeriac":
        return self  # type: ignore[return-value]  # Sending is only ever a Celeriac's base

    def _send_sent_events(self, messages: Sequence[Outgoing]) -> None:
        if self._sent_events is None:
            from ..events import EventDispatcher
            self._sent_events = EventDispatcher(self._app(), f"{socket.gethostname()}:{os.getpid()}")
        for m in messages:
            try:
                h = protocol.unpack(m.payload).headers
            except Exception:  # noqa: BLE001 - never fail a publish that succeeded over an event
                continue
            self._sent_events.send("task-sent", uuid=h.get("id"), name=h.get("task"), args=h.get("argsrepr"),
                                   kwargs=h.get("kwargsrepr"), retries=h.get("retries", 0), eta=h.get("eta"),
                                   expires=h.get("expires"), queue=m.queue, exchange="", routing_key=m.queue,
                                   root_id=h.get("root_id"), parent_id=h.get("parent_id"))

    def _announce_published(self, messages: Sequence[Outgoing]) -> None:
        """after_task_publish for messages published in bulk (canvas, retries, what a worker
        sends on); callers check `signals.after_task_publish.receivers` first."""
        for m in messages:
            try:
                msg = protocol.unpack(m.payload)
            except Exception:  # noqa: BLE001 - never fail a publish that succeeded over a signal
                continue
            signals.after_task_publish.send(sender=msg.headers.get("task"), body=msg.body, headers=msg.headers,
                                            routing_key=m.queue, exchange="")

    def route_for(self, name: str, args: Any, kwargs: Any, options: dict[str, Any],
                  task: BaseTask[Any, Any] | None = None) -> dict[str, Any]:
        routes = self.conf.task_routes
        if not routes:
            return {}
        for router in routes if isinstance(routes, (list, tuple)) else [routes]:
            if callable(router):
                found = router(name, args, kwargs, options, task=task)
            else:  # the exact name wins over patterns, as in Celery
                found = router.get(name) or next((value for pattern, value in router.items()
                                                  if fnmatch.fnmatchcase(name, pattern)), None)
            if found:
                return {"queue": found} if isinstance(found, str) else dict(found)
        return {}

    def send_task(self, name: str, args: Any = None, kwargs: Any = None, **options: Any) -> ResultHandle[Any]:
        """Send a task by name; the code need not be importable here. Options: see prepare_task."""
        hold = unique_hold(name, options.get("_task") or self.tasks.get(name), args, kwargs, options)
        if hold is not None:
            options["headers"] = {**(options.get("headers") or {}), UNIQUE_HEADER: hold[0]}
        outgoing, msg = self.prepare_task(name, args, kwargs, **options)
        if hold is not None:
            holder = self.backend.claim_unique(hold[0], msg.task_id, hold[1])
            if holder != msg.task_id:  # the same call is queued, scheduled or running: that one answers
                return AsyncResult(holder, app=self._app(), task_name=name)
        try:
            self.publish([outgoing], what=f"task {name}[{msg.task_id}]")
        except OperationalError:
            if hold is not None:  # never sent: the next call may send it
                self.backend.release_unique([(hold[0], msg.task_id)])
            raise
        if signals.after_task_publish.receivers:
            signals.after_task_publish.send(sender=name, body=msg.body, headers=msg.headers,
                                            routing_key=outgoing.queue, exchange="")
        result: AsyncResult[Any] = AsyncResult(msg.task_id, app=self._app(), task_name=name)
        result.ignored = bool(msg.headers.get("ignore_result"))  # as Celery: get() returns None at once
        return result

    def send_plain(self, task: BaseTask[Any, Any], args: Any, kwargs: Any) -> ResultHandle[Any]:
        """`task` called with arguments and no options (what `delay()` does): as `send_task`,
        from a template of the task's previous such message when it may be (app/plain.py)."""
        return plain.send_plain(self, task, args, kwargs)

    async def asend_task(self, name: str, args: Any = None, kwargs: Any = None,
                         **options: Any) -> ResultHandle[Any]:
        """`send_task()` for asyncio code: never blocks the event loop (docs/asyncio.md)."""
        from ..aio import client
        return await client.call(self._app(), lambda: self.send_task(name, args, kwargs, **options))

    def prepare_task(self, name: str, args: Any = None, kwargs: Any = None, *, task_id: str | None = None,
                     countdown: float | None = None, eta: Any = None,
                     expires: float | datetime | None = None, priority: int | None = None,
                     queue: str | None = None, link: Any = None, link_error: Any = None,
                     headers: dict[str, Any] | None = None, ignore_result: bool | None = None,
                     serializer: str | None = None, retries: int = 0, root_id: str | None = None,
                     parent_id: str | None = None, group_id: str | None = None, group_index: int | None = None,
                     soft_time_limit: float | None = None, time_limit: float | None = None,
                     shadow: str | None = None, chain: Any = None, chord: Any = None,
                     _task: BaseTask[Any, Any] | None = None, stamped_headers: Any = None,
                     **options: Any) -> tuple[Outgoing, protocol.TaskMessage]:
        """Encode one task call as a broker message, without sending it (groups send many at once)."""
        if stamped_headers:  # canvas stamping: the stamps are options named in stamped_headers
            from ..canvas.stamping import message_headers
            headers = {**(headers or {}), **message_headers(stamped_headers, options)}
        task = _task if _task is not None else self.tasks.get(name)
        task_id = task_id or protocol.new_id()
        argsrepr = kwargsrepr = None
        if options:
            check_call_options(name, options)
            argsrepr, kwargsrepr = options.pop("argsrepr", None), options.pop("kwargsrepr", None)
        current = current_task_and_request()
        if current is not None and not current[1].called_directly and current[1].id != task_id:
            # Started from inside a running task: tie it into that task's tree.
            if parent_id is None:
                parent_id = current[1].id
                if options.pop("add_to_parent", True):
                    current[1].children.append([[task_id, None], None])  # Celery's result tuple
            root_id = root_id or current[1].root_id or current[1].id
        conf = self.conf._data  # read directly: a dozen settings per call
        route = self.route_for(name, args, kwargs, options, task) if conf["task_routes"] else {}
        # As in Celery: apply_async(queue=) beats the task's own queue, which beats task_routes.
        queue = queue or (task.queue if task else None) or route.get("queue") or conf["task_default_queue"]
        if priority is None:
            priority = _first(task.priority if task else None, route.get("priority"), conf["task_default_priority"])
        eta_epoch = expires_iso = None
        if expires is None and task is not None:
            expires = task.expires
        if countdown is not None or eta is not None or expires is not None:
            eta_epoch, expires_iso = _timing(countdown, eta, expires)
        if ignore_result is None:
            ignore_result = bool(task.ignore_result if task and task.ignore_result is not None
                                 else conf["task_ignore_result"])
        timelimit = (time_limit if time_limit is not None or task is None else task.time_limit,  # (hard, soft)
                     soft_time_limit if soft_time_limit is not None or task is None else task.soft_time_limit)
        msg = protocol.build_task_message(
            task_id, name, args, kwargs,
            serializer=serializer or (task.serializer if task and task.serializer else None)
            or conf["task_serializer"],
            eta=protocol.to_iso(datetime.fromtimestamp(eta_epoch, UTC)) if eta_epoch else None,
            expires=expires_iso, retries=retries, root_id=root_id or task_id, parent_id=parent_id,
            group_id=group_id, group_index=group_index, origin=_ORIGIN, timelimit=timelimit,
            ignore_result=ignore_result, callbacks=_encode_sigs(link), errbacks=_encode_sigs(link_error),
            chain=chain or None, chord=dict(chord) if chord else None, priority=int(priority), queue=queue,
            extra_headers=headers, shadow=shadow)
        if argsrepr is not None or kwargsrepr is not None:  # what logs and monitors show instead (secrets)
            msg.headers.update({k: v for k, v in (("argsrepr", argsrepr), ("kwargsrepr", kwargsrepr))
                                if v is not None})
        if signals.before_task_publish.receivers:
            signals.before_task_publish.send(sender=name, body=msg.body, headers=msg.headers,
                                             properties=msg.properties, routing_key=queue, exchange="",
                                             declare=[], retry_policy=conf["task_publish_retry_policy"])
        return Outgoing(queue, protocol.pack(msg), int(priority), eta_epoch, msg), msg

    def publish(self, messages: Sequence[Outgoing], what: str = "messages", *, sent_events: bool = True) -> None:
        """Publish with the publish retry policy; a clear OperationalError when the broker is gone.
        With `task_send_sent_event`, a task-sent event per message (unless `sent_events` is False)."""
        box = captured_call()
        if box is not None:  # an asyncio call (aapply_async): it publishes these on its own client
            box.add(messages, what, sent_events)
            return
        try:
            (self._broker if self._broker is not None else self.broker).publish(messages)
        except OperationalError as exc:  # the retry policy is read only when it is needed
            self._publish_again(messages, what, exc)
        if sent_events and self.conf._data["task_send_sent_event"]:
            self._send_sent_events(messages)

    def _publish_again(self, messages: Sequence[Outgoing], what: str, first: OperationalError) -> None:
        """The attempts after a failed first one, with the pauses of task_publish_retry_policy."""
        pauses = self.publish_retry_pauses()
        exc = first
        for attempt in range(len(pauses) + 1):
            if attempt == len(pauses):
                raise self.publish_failed(what, len(pauses) + 1, exc) from exc
            time.sleep(pauses[attempt])
            try:
                self.broker.publish(messages)
                return
            except OperationalError as again:
                exc = again

    def publish_retry_pauses(self) -> list[float]:
        """Seconds to wait before each retry of a failed publish (task_publish_retry_policy)."""
        conf = self.conf
        policy = conf.task_publish_retry_policy or {}
        if not conf.task_publish_retry:
            return []
        pauses, interval = [], float(policy.get("interval_start", 0))
        for _ in range(int(policy.get("max_retries", 3))):
            pauses.append(interval)
            interval = min(interval + float(policy.get("interval_step", 0.2)), float(policy.get("interval_max", 0.2)))
        return pauses

    def publish_failed(self, what: str, attempts: int, exc: BaseException) -> OperationalError:
        return OperationalError(f"could not publish {what} to {safe_url(self.broker_url)} "
                                f"after {attempts} attempt(s): {exc}")

    def send_retry(self, task: BaseTask[Any, Any], request: Context, retry: Any) -> None:
        """Publish the next attempt of a task that called `self.retry()`."""
        messages = [self.retry_message(task, request, retry)]
        self.publish(messages, what=f"retry of {task.name}[{request.id}]")
        if signals.after_task_publish.receivers:
            self._announce_published(messages)

    def retry_message(self, task: BaseTask[Any, Any], request: Context, retry: Any) -> Outgoing:
        opts = dict(getattr(retry, "retry_options", {}) or {})
        args, kwargs = opts.pop("args", request.args), opts.pop("kwargs", request.kwargs)
        countdown, eta = opts.pop("countdown", None), opts.pop("eta", None)
        now = time.time()
        eta_epoch = now + float(countdown) if countdown is not None else (
            _to_datetime(eta).timestamp() if eta is not None else None)
        queue = opts.pop("queue", None) or request.delivery_info.get("routing_key") or self.conf.task_default_queue
        priority = _first(opts.pop("priority", None), request.delivery_info.get("priority"), 0)
        msg = protocol.build_task_message(
            str(request.id), task.name, args, kwargs,
            serializer=task.serializer or self.conf.task_serializer,
            eta=protocol.to_iso(datetime.fromtimestamp(eta_epoch, UTC)) if eta_epoch else None,
            expires=request.expires, retries=request.retries + 1, root_id=request.root_id,
            parent_id=request.parent_id, group_id=request.group, group_index=request.group_index,
            origin=_origin(), timelimit=tuple(request.timelimit or (None, None)),  # type: ignore[arg-type]
            ignore_result=request.ignore_result, callbacks=request.callbacks, errbacks=request.errbacks,
            chain=request.chain, chord=request.chord, priority=int(priority), queue=queue,
            extra_headers=request.headers)
        if signals.before_task_publish.receivers:  # a retry is a publish too (tracing, user hooks)
            signals.before_task_publish.send(sender=task.name, body=msg.body, headers=msg.headers,
                                             properties=msg.properties, routing_key=queue, exchange="",
                                             declare=[], retry_policy=self.conf.task_publish_retry_policy)
        return Outgoing(queue, protocol.pack(msg), int(priority), eta_epoch)


def _timing(countdown: float | None, eta: Any, expires: Any) -> tuple[float | None, str | None]:
    """(eta as epoch seconds, expires as ISO text) of a call, from its countdown/eta/expires."""
    now = time.time()
    eta_epoch = None
    if countdown is not None:
        eta_epoch = now + float(countdown)
    elif eta is not None:
        eta_epoch = _to_datetime(eta).timestamp()
    expires_iso = None
    if expires is not None:
        expires_at = now + float(_seconds(expires) or 0) if isinstance(expires, (int, float, timedelta)) \
            else _to_datetime(expires).timestamp()
        expires_iso = protocol.to_iso(datetime.fromtimestamp(expires_at, UTC))
    return eta_epoch, expires_iso


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _to_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.astimezone()
    if isinstance(value, str):
        parsed = protocol.from_iso(value)
        assert parsed is not None
        return parsed
    raise TypeError(f"expected a datetime, got {type(value).__name__}")


_ORIGIN = f"{os.getpid()}@{socket.gethostname()}"


def _origin() -> str:
    return _ORIGIN


def _encode_sigs(value: Any) -> Any:
    if value is None:
        return None
    items = value if isinstance(value, (list, tuple)) else [value]
    return [dict(item) if hasattr(item, "keys") else item for item in items]


def _seconds(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value)
