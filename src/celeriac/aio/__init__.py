"""asyncio clients: `await task.adelay(...)`, `await result.aget()` and friends (docs/asyncio.md).

The entry points are methods on Task, AsyncResult, GroupResult, Signature and the app;
`celeriac.aio.aclose(app)` closes the running loop's connections.
"""

from __future__ import annotations

from .client import aclose

__all__ = ["aclose"]
