"""A real `celeriac -A tasks_app dashboard` process for the dashboard tests."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import httpx

from helpers import WorkerProcess, wait_until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DashboardProcess:
    def __init__(self, cwd: Path, env: dict[str, str], *args: str, auth: tuple[str, str] | None = None) -> None:
        for attempt in range(3):
            # A free port may be taken by another test's server before the dashboard binds it
            # (the suite runs on four processes): then the dashboard starts again on another.
            self.port = free_port()
            self.base = f"http://127.0.0.1:{self.port}"
            self.proc = WorkerProcess(cwd, env, "--port", str(self.port), *args, command="dashboard")
            self.http = httpx.Client(base_url=self.base, auth=auth, timeout=20)
            try:
                wait_until(self._up, 30, message="dashboard answering /healthcheck")
                return
            except AssertionError:
                self.stop()
                if attempt == 2 or "address already in use" not in self.proc.output:
                    raise

    def _up(self) -> bool:
        if self.proc.proc.poll() is not None:
            raise AssertionError(f"dashboard exited:\n{self.proc.output}")
        try:
            return self.http.get("/healthcheck").text == "OK"
        except httpx.HTTPError:
            return False

    def get(self, path: str, **kw: Any) -> Any:
        answer = self.http.get(path, **kw)
        answer.raise_for_status()
        return answer.json()

    def post(self, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        token = self.get("/api/csrf")["token"]
        return self.http.post(path, json=body or {}, headers={"X-CSRF-Token": token})

    def stop(self) -> None:
        self.http.close()
        self.proc.stop()
