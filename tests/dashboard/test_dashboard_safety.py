"""Dashboard safety without workers: auth, CSRF, read-only, escaping, the loopback rule."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

pytest.importorskip("starlette")
from starlette.testclient import TestClient  # noqa: E402

from celeriac import Celeriac  # noqa: E402
from celeriac.dashboard.web import create_app  # noqa: E402
from celeriac.history import TaskRecord  # noqa: E402
from helpers import celeriac_bin  # noqa: E402

XSS = "<script>alert(1)</script>"


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Celeriac]:
    url = f"sqlite:///{tmp_path / 'dash.db'}"
    app = Celeriac("dash", broker=url, backend=url)
    meta = {"task_id": "t-xss", "status": "FAILURE", "traceback": f"Traceback: {XSS}", "children": [],
            "result": {"exc_type": "ValueError", "exc_message": [XSS], "exc_module": "builtins"}}
    stored = app.backend.encode(meta)
    stored.history = TaskRecord("t-xss", "dash.echo", "FAILURE", worker="w@h", updated=time.time(),
                                args=f'[["{XSS}"],{{"k":"{XSS}"}}]', meta=stored.data, finished=time.time())
    app.backend.store([stored])
    yield app
    app.close()


def client(app: Celeriac, **options: Any) -> TestClient:
    return TestClient(create_app(app, events=False, **options), base_url="http://127.0.0.1:5555")


def test_task_arguments_are_escaped_on_every_page(app: Celeriac) -> None:
    c = client(app)
    for path in ("/tasks", "/task/t-xss", "/tasks?search=script"):
        html = c.get(path).text
        assert XSS not in html, path
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html, path
    assert c.get("/api/tasks/t-xss").json()["args"] == [XSS]  # the API gives the value as sent


def test_basic_auth_guards_everything_but_healthcheck(app: Celeriac) -> None:
    c = client(app, basic_auth=("admin", "s3cret-pw"))
    assert c.get("/healthcheck").text == "OK"
    for path in ("/tasks", "/api/tasks", "/metrics", "/api/csrf"):
        assert c.get(path).status_code == 401, path
        assert c.get(path, auth=("admin", "wrong")).status_code == 401
    ok = c.get("/tasks", auth=("admin", "s3cret-pw"))
    assert ok.status_code == 200 and "s3cret-pw" not in ok.text
    assert "s3cret-pw" not in c.get("/tasks", auth=("admin", "wrong")).text


def test_actions_need_the_csrf_token_and_same_origin(app: Celeriac) -> None:
    c = client(app)
    url = "/api/queues/celery/purge"
    assert c.post(url).status_code == 403
    assert "X-CSRF-Token" in c.post(url).json()["error"]
    token = c.get("/api/csrf").json()["token"]
    assert c.post(url, headers={"X-CSRF-Token": "nope"}).status_code == 403
    assert c.post(url, headers={"X-CSRF-Token": token, "Origin": "http://evil.example"}).status_code == 403
    done = c.post(url, headers={"X-CSRF-Token": token, "Origin": "http://127.0.0.1:5555"})
    assert done.status_code == 200 and done.json()["ok"] is True
    assert c.get("/tasks").text.count(token) == 1  # the page carries it for its own script


def test_read_only_allows_no_action_and_shows_no_buttons(app: Celeriac) -> None:
    c = client(app, read_only=True)
    token = c.get("/api/csrf").json()["token"]
    for url in ("/api/queues/celery/purge", "/api/tasks/t-xss/retry", "/api/tasks/t-xss/revoke",
                "/api/dead-letters/requeue", "/api/rate-limit"):
        answer = c.post(url, headers={"X-CSRF-Token": token}, json={"task": "x", "rate": "1/s"})
        assert answer.status_code == 403 and "read-only" in answer.json()["error"], url
    for page in ("/task/t-xss", "/queues", "/tasks", "/dead-letters"):
        assert "data-action" not in c.get(page).text, page


def test_unknown_task_and_bad_input_answers(app: Celeriac) -> None:
    c = client(app)
    assert c.get("/api/tasks/nope").status_code == 404
    token = c.get("/api/csrf").json()["token"]
    answer = c.post("/api/tasks/nope/retry", headers={"X-CSRF-Token": token})
    assert answer.status_code == 400 and "not in the history" in answer.json()["error"]
    answer = c.post("/api/rate-limit", headers={"X-CSRF-Token": token}, json={"task": "dash.echo", "rate": "fast"})
    assert answer.status_code == 400 and "bad rate limit" in answer.json()["error"]
    assert c.get("/healthcheck").text == "OK"


def test_non_loopback_address_needs_basic_auth(tmp_path: Path) -> None:
    run = subprocess.run([celeriac_bin(), "dashboard", "--address", "0.0.0.0", "--port", "1"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert "refusing to serve the dashboard on 0.0.0.0 without --basic-auth" in run.stderr
    run = subprocess.run([celeriac_bin(), "dashboard", "--basic-auth", "nopassword"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode != 0 and "USER:PASSWORD" in run.stderr


def test_time_filters(app: Celeriac) -> None:
    c = client(app)
    ids = lambda q: [t["task_id"] for t in c.get(f"/api/tasks?{q}").json()["tasks"]]  # noqa: E731
    assert ids("window=60") == ["t-xss"]
    assert ids(f"since={time.time() + 60}") == []
    assert ids("until=1") == []
    assert ids("worker=w@h&state=FAILURE") == ["t-xss"]
    assert ids("worker=other") == []
    assert "last 5 minutes" in c.get("/tasks?window=300").text


def test_flower_alias_and_missing_extra(tmp_path: Path) -> None:
    run = subprocess.run([celeriac_bin(), "flower", "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "--basic-auth" in run.stdout and "--read-only" in run.stdout
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "uvicorn.py").write_text("raise ImportError(\"No module named 'uvicorn'\", name='uvicorn')\n")
    env = dict(os.environ, PYTHONPATH=str(fake))
    run = subprocess.run([celeriac_bin(), "dashboard", "--port", "1"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60, env=env)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines()[-1] == ("Error: the dashboard needs its extra: pip install "
                                                   "'celeriac[dashboard]' (uvicorn is missing)")
