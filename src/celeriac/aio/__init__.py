"""asyncio clients: `await task.adelay(...)`, `await result.aget()` and friends (docs/asyncio.md).

The entry points are methods on Task, AsyncResult, GroupResult, Signature and the app;
`celeriac.aio.aclose(app)` closes the running loop's connections. The client module (and
asyncio with it) loads on first use: every synchronous program imports this package for
`capture`, and asyncio alone costs ~30 ms of start-up.
"""

from __future__ import annotations

from typing import Any

__all__ = ["aclose"]


def __getattr__(name: str) -> Any:
    if name == "aclose":
        from .client import aclose

        return aclose
    raise AttributeError(f"module 'celeriac.aio' has no attribute {name!r}")
