"""`kill -USR1 <worker pid>`: the stack of every thread, in the worker and in each pool process.

Celery's workers answer SIGUSR1 this way, and it is how a person (or a test) finds where a worker
that looks stuck is stuck. Without a handler SIGUSR1 would end the worker. The pool processes
already use SIGUSR1 (revoke with terminate), so the supervisor passes the request on as SIGUSR2.

A pool process dumps from inside the signal (faulthandler writes from C), so a process whose
every thread is blocked - on a lock, in a C call - still shows where.
"""

import faulthandler
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

logger = logging.getLogger(__name__)

DUMP_SIGNAL = signal.SIGUSR1
POOL_DUMP_SIGNAL = signal.SIGUSR2
POOL_DUMP_GAP = 0.1  # seconds between two pool processes' dumps


def dump_stream() -> TextIO | None:
    """Where the dump goes: the log file when there is one (a detached worker's stderr is
    /dev/null), else the process's real stderr (sys.stderr may be a redirecting LogStream)."""
    for handler in logging.getLogger().handlers:
        stream = getattr(handler, "stream", None)
        if isinstance(handler, logging.FileHandler) and stream is not None:
            return stream  # type: ignore[no-any-return]
    return sys.__stderr__


def install_in_supervisor(pool_pids: Callable[[], list[int]]) -> None:
    """SIGUSR1 in the worker's main process: its threads' stacks, then each pool process's."""

    def dump(signum: int, frame: Any) -> None:
        stream = dump_stream()
        pids = pool_pids()
        logger.warning("SIGUSR1: stack of every thread of the worker (pid %s) follows%s", os.getpid(),
                       f", then of its pool processes {', '.join(map(str, pids))}" if pids else "")
        if stream is not None:
            stream.flush()
            faulthandler.dump_traceback(file=stream, all_threads=True)
            stream.flush()
        for pid in pids:
            if stream is not None:
                stream.write(f"\nPool process {pid}:\n")
                stream.flush()
            try:
                os.kill(pid, POOL_DUMP_SIGNAL)
            except ProcessLookupError:  # it ended meanwhile: nothing to show
                continue
            # One at a time, so the dumps do not interleave (each takes well under a millisecond).
            time.sleep(POOL_DUMP_GAP)

    signal.signal(DUMP_SIGNAL, dump)


def install_in_pool_process() -> None:
    """SIGUSR2 in a pool process (sent on by the supervisor): its threads' stacks."""
    stream = dump_stream()
    if stream is not None:
        faulthandler.register(POOL_DUMP_SIGNAL, file=stream, all_threads=True, chain=False)
