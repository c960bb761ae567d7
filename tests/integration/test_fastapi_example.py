"""examples/fastapi_app.py under an ASGI test client (httpx), against a real worker, on every broker."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def example(app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    pytest.importorskip("fastapi")
    monkeypatch.syspath_prepend(str(EXAMPLES))
    for name in ("tasks", "fastapi_app"):
        sys.modules.pop(name, None)
    import fastapi_app
    yield fastapi_app
    fastapi_app.app.close()
    for name in ("tasks", "fastapi_app"):
        sys.modules.pop(name, None)


def test_fastapi_example(example: Any, app_env: dict[str, str], start_worker: Any) -> None:
    import httpx
    env = dict(app_env, PYTHONPATH=f"{EXAMPLES}:{app_env.get('PYTHONPATH', '')}")
    start_worker("-c", "2", app="tasks", env=env)

    async def body() -> None:
        transport = httpx.ASGITransport(app=example.api)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            started = await client.post("/add", params={"x": 2, "y": 3})
            assert started.status_code == 200
            task_id = started.json()["task_id"]
            waited = await client.get("/add", params={"x": 20, "y": 22})
            assert waited.status_code == 200 and waited.json()["result"] == 42
            # Several requests in flight at once, served by the one loop.
            many = await asyncio.gather(*(client.get("/add", params={"x": i, "y": i}) for i in range(20)))
            assert [r.json()["result"] for r in many] == [2 * i for i in range(20)]
            state = await client.get(f"/tasks/{task_id}")
            assert state.json() == {"task_id": task_id, "state": "SUCCESS", "ready": True, "result": 5}
            failed = await client.get("/divide", params={"x": 1, "y": 0})
            assert failed.status_code == 400 and "ZeroDivisionError" in failed.json()["detail"]
            unknown = await client.get("/tasks/no-such-task")
            assert unknown.json() == {"task_id": "no-such-task", "state": "PENDING", "ready": False}
        await example.aclose(example.app)

    asyncio.run(body())
