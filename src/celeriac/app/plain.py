"""Plain calls - `add.delay(2, 2)`: arguments and no options - made from a template.

Such a call differs from the task's previous plain call only in its id, its arguments and
their reprs, and the time it is sent. So the first one goes the whole way (`prepare_task`:
routing, the task's and the app's defaults, the protocol's headers) and leaves a template of
its message (`protocol.MessageTemplate`), and the next ones fill in what differs. The
template is filed under what decided its message - the settings and the task's attributes
`prepare_task` reads - which every call reads again, so `app.conf.task_default_queue = ...`
or `add.queue = ...` takes effect at the next call.

A call goes the whole way whenever a template could be wrong for it: a publish signal has
receivers (they may change each message, or want its original), the call is made inside a
running task (it becomes that task's child), task routes are set (a router may look at the
arguments), the task has an expiry (counted from each call) or is unique, or its messages
are not JSON. The messages are the same either way, apart from id and sent time
(tests/unit/test_plain_calls.py compares them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from .. import protocol, signals
from ..brokers import Outgoing
from ..result import AsyncResult
from ..task import current_task_and_request

if TYPE_CHECKING:
    from ..task import Task
    from .sending import Sending


class Plan(NamedTuple):
    template: protocol.MessageTemplate
    queue: str
    priority: int
    ignored: bool  # ignore_result: get() returns None at once, as in Celery


def send_plain(app: "Sending", task: "Task[Any, Any]", args: Any, kwargs: Any) -> AsyncResult[Any]:
    """Send `task(*args, **kwargs)` with no options, by its template when it may have one."""
    conf = app.conf._data
    current = current_task_and_request()
    if (conf["task_routes"] or task.expires is not None or task.unique_for is not None
            or signals.before_task_publish.receivers or signals.after_task_publish.receivers
            or (current is not None and not current[1].called_directly)):
        return app.send_task(task.name, args, kwargs, _task=task)
    key = (task.name, conf["task_default_queue"], conf["task_default_priority"], conf["task_ignore_result"],
           conf["task_serializer"], task.queue, task.priority, task.ignore_result, task.serializer,
           task.time_limit, task.soft_time_limit)
    plan = app._plain_plans.get(key)
    if plan is None:
        return _first_call(app, task, args, kwargs, key)
    task_id = protocol.new_id()
    msg, payload = plan.template.make(task_id, None, tuple(args) if args else (), dict(kwargs) if kwargs else {})
    app.publish([Outgoing(plan.queue, payload, plan.priority, None, msg)], what=f"task {task.name}[{task_id}]")
    result: AsyncResult[Any] = AsyncResult(task_id, app=app._app(), task_name=task.name)
    result.ignored = plan.ignored
    return result


def _first_call(app: "Sending", task: "Task[Any, Any]", args: Any, kwargs: Any,
                key: tuple[Any, ...]) -> AsyncResult[Any]:
    """Send the call the whole way, and file the template its message makes."""
    outgoing, msg = app.prepare_task(task.name, args, kwargs, _task=task)
    app.publish([outgoing], what=f"task {task.name}[{msg.task_id}]")
    if msg.content_type == protocol.JSON and outgoing.eta is None and not msg.headers.get("expires"):
        embed = protocol.decode_body(msg, frozenset({protocol.JSON}))[2]
        template = protocol.MessageTemplate(msg, embed, lone=True)
        if template.usable:
            ignored = bool(msg.headers.get("ignore_result"))
            app._plain_plans[key] = Plan(template, outgoing.queue, outgoing.priority, ignored)
    result: AsyncResult[Any] = AsyncResult(msg.task_id, app=app._app(), task_name=task.name)
    result.ignored = bool(msg.headers.get("ignore_result"))
    return result
