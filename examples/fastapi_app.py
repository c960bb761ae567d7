"""A FastAPI app that sends celeriac tasks and awaits their results without blocking its
event loop (docs/asyncio.md). Next to examples/tasks.py:

    pip install 'celeriac[redis]' fastapi uvicorn        # or no extra: the embedded SQLite file
    celeriac -A tasks worker --loglevel=info              # in one terminal
    uvicorn fastapi_app:api                               # in another

    curl -X POST 'localhost:8000/add?x=2&y=3'             # {"task_id": "..."}
    curl  'localhost:8000/tasks/<task_id>'                # {"state": "SUCCESS", "result": 5, ...}
    curl  'localhost:8000/add?x=2&y=3'                    # waits for the sum: {"result": 5, ...}
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from fastapi import FastAPI, HTTPException

from celeriac.aio import aclose
from celeriac.exceptions import TimeoutError
from tasks import add, app, divide


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    yield
    await aclose(app)  # the app's asyncio connections on this loop


api = FastAPI(title="celeriac + FastAPI", lifespan=lifespan)


@api.post("/add")
async def start_add(x: int, y: int) -> dict[str, Any]:
    """Send the task and answer at once with its id."""
    result = await add.adelay(x, y)
    return {"task_id": result.id}


@api.get("/add")
async def add_and_wait(x: int, y: int, timeout: float = 10.0) -> dict[str, Any]:
    """Send the task and wait for its result; other requests are served meanwhile."""
    result = await add.adelay(x, y)
    try:
        return {"task_id": result.id, "result": await result.aget(timeout=timeout)}
    except TimeoutError:
        raise HTTPException(504, f"task {result.id} did not finish within {timeout}s") from None


@api.get("/divide")
async def divide_and_wait(x: float, y: float) -> dict[str, Any]:
    """A task's exception comes back as itself: divide by zero is a 400 here."""
    result = await divide.aapply_async((x, y))
    try:
        return {"task_id": result.id, "result": await result.aget(timeout=10)}
    except ZeroDivisionError as exc:
        raise HTTPException(400, f"task {result.id} failed: {exc!r}") from None


@api.get("/tasks/{task_id}")
async def task_state(task_id: str) -> dict[str, Any]:
    """The state of any task; its result once it finished."""
    result = app.AsyncResult(task_id)
    if not await result.aready():
        return {"task_id": task_id, "state": result.state, "ready": False}
    value = await result.aget(propagate=False)
    return {"task_id": task_id, "state": result.state, "ready": True,
            "result": value if result.successful() else repr(value)}
