"""Time limits: the soft one raises inside the task, the hard one ends it.

- Process pool: the soft limit is a SIGALRM in the pool process's main thread (where the
  task runs), so `SoftTimeLimitExceeded` is raised at the next Python instruction, also
  inside `time.sleep`. The hard limit is a watchdog thread in the same process: it writes
  the task's FAILURE (`TimeLimitExceeded`) and acks its message, then ends the process;
  the supervisor starts a fresh one. A task stuck in C code that never releases the GIL
  keeps the watchdog from running: the supervisor then kills the process itself.
- Thread pool: the soft limit is raised asynchronously in the task's thread (pure Python
  code only; a thread blocked in a C call sees it when the call returns). A hard limit
  cannot end a thread; the worker says so at start.
- `async def` tasks: see execution.run_with_limits.
"""

from __future__ import annotations

import ctypes
import signal
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

from ..exceptions import SoftTimeLimitExceeded, TaskRevokedError

if TYPE_CHECKING:
    from ..task import Context, Task

HARD_LIMIT_EXIT_CODE = 75  # a pool process that ended itself after a hard time limit


# Set by `celeriac control time_limit`: they win over everything else (task name -> (soft, hard)).
TIME_LIMIT_OVERRIDES: dict[str, tuple[Any, Any]] = {}


def limits_for(task: "Task[Any, Any]", request: "Context", conf: Any) -> tuple[float | None, float | None]:
    """(soft, hard) in seconds: a remote-control override, else the message's own, else the
    task's, else the worker's settings."""
    override = TIME_LIMIT_OVERRIDES.get(task.name)
    if override is not None:
        return _positive(override[0]), _positive(override[1])
    hard, soft = (list(request.timelimit or ()) + [None, None])[:2]  # the message's (hard, soft), as Celery's
    soft = _positive(soft if soft is not None else task.soft_time_limit
                     if task.soft_time_limit is not None else conf.task_soft_time_limit)
    hard = _positive(hard if hard is not None else task.time_limit
                     if task.time_limit is not None else conf.task_time_limit)
    return soft, hard


def _positive(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


class Limiter:
    """No limits enforced (base): what eager mode uses. Also knows whether a task is running,
    for `revoke(terminate=True)`, which raises TaskRevokedError inside it."""

    enforces_hard = False
    in_task = False

    def start(self, soft: float | None, hard: float | None) -> None:
        """Arm the limits for the task about to run in this thread."""
        self.in_task = True

    def stop(self) -> None:
        """Disarm: the task finished."""
        self.in_task = False

    def terminate(self, reason: str) -> None:
        """End the running task with TaskRevokedError (called in its own thread, e.g. by a signal)."""
        if self.in_task:
            self.in_task = False
            raise TaskRevokedError(reason)

    def terminate_thread(self, thread_id: int, reason: str) -> None:
        """Raise TaskRevokedError in another thread that runs a task (pure-Python code only)."""
        if self.in_task and thread_id:
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(TaskRevokedError))


class ProcessLimiter(Limiter):
    enforces_hard = True

    def __init__(self, on_hard_limit: Callable[[float], None]) -> None:
        self._on_hard_limit = on_hard_limit
        self._cond = threading.Condition()
        self._deadline: float | None = None
        self._hard: float = 0.0
        self._firing = False  # the watchdog is recording the task's end: its outcome is the watchdog's
        self._soft_armed = False
        self._watchdog: threading.Thread | None = None
        signal.signal(signal.SIGALRM, self._alarm)

    def start(self, soft: float | None, hard: float | None) -> None:
        self.in_task = True
        if soft:
            self._soft_armed = True
            signal.setitimer(signal.ITIMER_REAL, soft)
        if hard:
            if self._watchdog is None:
                self._watchdog = threading.Thread(target=self._watch, name="celeriac-time-limit", daemon=True)
                self._watchdog.start()
            with self._cond:
                self._deadline, self._hard = time.monotonic() + hard, hard
                self._cond.notify()

    def stop(self) -> None:
        self.in_task = False
        if self._soft_armed:
            self._soft_armed = False
            signal.setitimer(signal.ITIMER_REAL, 0)
        if self._watchdog is not None:
            with self._cond:
                self._deadline = None
                # The task returned just as its hard limit passed, and the watchdog already
                # took its end: finishing it here too would write a second outcome into the
                # batch the watchdog is flushing. Wait: the watchdog ends this process.
                while self._firing:
                    self._cond.wait()

    def _alarm(self, _signum: int, _frame: Any) -> None:
        if self._soft_armed:
            self._soft_armed = False
            raise SoftTimeLimitExceeded("soft time limit exceeded")

    def _watch(self) -> None:
        while True:
            with self._cond:
                while self._deadline is None:
                    self._cond.wait()
                remaining = self._deadline - time.monotonic()
                if remaining > 0:
                    self._cond.wait(remaining)
                    continue
                hard = self._hard
                self._deadline, self._firing = None, True
            try:
                self._on_hard_limit(hard)  # ends the process, or returns when no task was running
            finally:
                with self._cond:
                    self._firing = False
                    self._cond.notify_all()


class ThreadLimiter(Limiter):
    """Soft limits for tasks in pool threads; hard limits are not enforceable there."""

    def __init__(self) -> None:
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        self._armed = False

    def start(self, soft: float | None, hard: float | None) -> None:
        self.in_task = True
        if not soft:
            return
        target = threading.get_ident()
        with self._lock:
            self._armed = True
        self._timer = threading.Timer(soft, self._raise_in, args=(target,))
        self._timer.daemon = True
        self._timer.start()

    def _raise_in(self, thread_id: int) -> None:
        with self._lock:
            if not self._armed:
                return
            self._armed = False
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id),
                                                       ctypes.py_object(SoftTimeLimitExceeded))

    def stop(self) -> None:
        self.in_task = False
        with self._lock:
            self._armed = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
