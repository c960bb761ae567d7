"""The shapes of Celery's own example projects, with `celery` renamed to `celeriac`.

Each test writes a small project the way Celery's examples/ directory lays one out (a
module that ends in `app.start()`, a `proj/` package with `celery.py` and `include=`,
periodic tasks added from `on_after_configure`) and runs it with a real worker process.
The code is this project's own; what it exercises is what those examples rely on.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from celeriac import Celeriac
from helpers import WorkerProcess, wait_until


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())


@pytest.fixture
def client(app_env: dict[str, str]) -> Celeriac:
    """A client that knows no task code: it calls by name, as a web process would."""
    return Celeriac("example-client")


@pytest.mark.timeout(90)
def test_a_module_that_ends_in_app_start_runs_its_own_worker(app_env: dict[str, str], tmp_path: Path,
                                                             client: Celeriac) -> None:
    _write(tmp_path / "myapp.py", """
        from celeriac import Celery

        app = Celery("myapp", task_acks_late=True)   # settings as keyword arguments

        @app.task
        def add(x, y):
            return x + y

        if __name__ == "__main__":
            app.start()
    """)
    worker = WorkerProcess(tmp_path, app_env, argv=[sys.executable, "myapp.py", "worker", "-l", "INFO", "-c", "1"])
    try:
        worker.wait_ready()
        assert "myapp.add" in worker.output  # named after the app's main module, not __main__
        assert client.send_task("myapp.add", (16, 16)).get(timeout=20) == 32
    finally:
        worker.stop()


@pytest.mark.timeout(30)
def test_worker_main_needs_the_worker_command() -> None:
    app = Celeriac("wm")
    with pytest.raises(ValueError, match="must start with 'worker'"):
        app.worker_main(["beat"])


@pytest.mark.timeout(90)
def test_a_proj_package_with_celery_py_and_include(app_env: dict[str, str], tmp_path: Path,
                                                   client: Celeriac) -> None:
    _write(tmp_path / "proj" / "__init__.py", "")
    _write(tmp_path / "proj" / "celery.py", """
        from celeriac import Celery

        app = Celery("proj", include=["proj.tasks"])
        app.conf.update(result_expires=3600)
    """)
    _write(tmp_path / "proj" / "tasks.py", """
        from .celery import app

        @app.task
        def mul(x, y):
            return x * y

        @app.task
        def xsum(numbers):
            return sum(numbers)
    """)
    worker = WorkerProcess(tmp_path, app_env, "-c", "1", app="proj")
    try:
        worker.wait_ready()
        assert client.send_task("proj.tasks.mul", (6, 7)).get(timeout=20) == 42
        assert client.send_task("proj.tasks.xsum", ([1, 2, 3],)).get(timeout=20) == 6
    finally:
        worker.stop()


@pytest.mark.timeout(90)
def test_periodic_task_added_in_on_after_configure(app_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "said.txt"
    _write(tmp_path / "periodic.py", f"""
        from celeriac import Celery

        app = Celery("periodic")
        app.conf.timezone = "UTC"

        @app.task
        def say(what):
            with open({str(out)!r}, "a") as f:
                f.write(what + "\\n")

        @app.on_after_configure.connect
        def setup_periodic_tasks(sender, **kwargs):
            sender.add_periodic_task(0.5, say.s("hello"), name="say hello")

        if __name__ == "__main__":
            app.start()
    """)
    worker = WorkerProcess(tmp_path, app_env,
                           argv=[sys.executable, "periodic.py", "worker", "-B", "-l", "INFO", "-c", "1"])
    try:
        worker.wait_ready()
        lines: Any = lambda: out.read_text().split() if out.exists() else []  # noqa: E731
        wait_until(lambda: len(lines()) >= 3, 30, message="three ticks of the periodic task")
        assert set(lines()) == {"hello"}
    finally:
        worker.stop()
