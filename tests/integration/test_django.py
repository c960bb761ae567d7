"""Django: a real project (tests/django_project) on a real worker, with its SQLite database.

- `delay_on_commit()` / `apply_async_on_commit()` publish when the transaction commits,
  never when it (or the savepoint around the call) rolls back;
- the worker keeps good connections between tasks and replaces broken ones, and a pool
  process never uses a connection it inherited from the supervisor;
- `config_from_object("django.conf:settings", namespace="CELERY")` reads only the
  CELERY_ settings (the project's SECRET_KEY is empty: reading it raises).
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Any, Iterator

import pytest

pytest.importorskip("django")

from helpers import wait_until  # noqa: E402

PROJECT = Path(__file__).resolve().parent.parent / "django_project"


@pytest.fixture(scope="session")
def django_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Django set up in this process on the test project, its tables created in a fresh file.
    Django can be configured once per process, so the database lives for the session."""
    path = tmp_path_factory.mktemp("django") / "db.sqlite3"
    saved = {k: os.environ.get(k) for k in ("DJPROJ_DB", "DJANGO_SETTINGS_MODULE")}
    os.environ["DJPROJ_DB"] = str(path)
    os.environ["DJANGO_SETTINGS_MODULE"] = "djproj.settings"
    sys.path.insert(0, str(PROJECT))
    try:
        import django
        from django.core.management import call_command
        django.setup()
        call_command("migrate", run_syncdb=True, verbosity=0)
    finally:
        # Read once, at set-up. Left in the environment, they would reach the workers of every
        # later test, which would then try to load this project's settings.
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    yield path


@pytest.fixture
def djapp(django_db: Path, app_env: dict[str, str]) -> Iterator[Any]:
    """The project's celeriac app, on this test's broker."""
    import djproj
    import notes.tasks  # noqa: F401 - registers the shared tasks on the project's app
    app = djproj.celeriac_app
    app._reset_connections()
    yield app
    app._reset_connections()


@pytest.fixture
def django_env(app_env: dict[str, str], django_db: Path) -> dict[str, str]:
    env = dict(app_env, DJPROJ_DB=str(django_db), DJANGO_SETTINGS_MODULE="djproj.settings")
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT), env["PYTHONPATH"]])
    return env


def ready_messages(app: Any) -> int:
    return int(app.broker.queue_sizes(["celery"])["celery"]["ready"])


class Rollback(Exception):
    pass


def test_delay_on_commit_publishes_after_commit_and_never_on_rollback(djapp: Any, django_env: dict[str, str],
                                                                      start_worker: Any) -> None:
    from django.db import transaction
    from notes.models import Note
    mark_seen = djapp.tasks["notes.tasks.mark_seen"]
    djapp.broker.purge(["celery"])

    with transaction.atomic():
        note = Note.objects.create(title="committed")
        committed = mark_seen.delay_on_commit(note.pk)
        assert ready_messages(djapp) == 0, "published before the transaction committed"
    assert ready_messages(djapp) == 1

    with pytest.raises(Rollback), transaction.atomic():
        gone = Note.objects.create(title="rolled back")
        rolled_back = mark_seen.delay_on_commit(gone.pk)
        raise Rollback()
    with transaction.atomic():  # the savepoint around the call rolls back, the outer block commits
        kept = Note.objects.create(title="outer")
        with pytest.raises(Rollback), transaction.atomic():
            in_savepoint = mark_seen.apply_async_on_commit((kept.pk,), countdown=0)
            raise Rollback()
    assert ready_messages(djapp) == 1, "a rolled-back call was published"

    worker = start_worker("-c", "1", app="djproj", env=django_env)
    assert committed.get(timeout=30) == "committed"
    note.refresh_from_db()
    assert note.seen_by_task
    wait_until(lambda: ready_messages(djapp) == 0, message="the queue to be empty")
    assert rolled_back.state == "PENDING" and in_savepoint.state == "PENDING"
    assert rolled_back.id not in worker.output and in_savepoint.id not in worker.output
    assert not Note.objects.get(pk=kept.pk).seen_by_task
    # The project sets CELERY_WORKER_DIRECT, a Celery setting celeriac does not have: one line says so.
    assert "worker_direct" in worker.output and "not supported" in worker.output


def test_delay_on_commit_outside_a_transaction_publishes_at_once(djapp: Any) -> None:
    mark_seen = djapp.tasks["notes.tasks.mark_seen"]
    djapp.broker.purge(["celery"])
    result = mark_seen.apply_async_on_commit((12345,), task_id="chosen-id")
    assert result.id == "chosen-id"
    assert ready_messages(djapp) == 1


def test_worker_keeps_good_connections_and_replaces_broken_ones(djapp: Any, django_env: dict[str, str],
                                                                start_worker: Any) -> None:
    from notes.models import Note
    tasks = djapp.tasks
    start_worker("-c", "1", app="djproj", env=django_env)

    def token() -> dict[str, Any]:
        return dict(tasks["notes.tasks.connection_token"].delay().get(timeout=30))

    first, second = token(), token()
    assert second["token"] == first["token"], "a persistent connection (CONN_MAX_AGE=None) was not kept"
    assert second["cache_closed"] > first["cache_closed"], "the caches were not closed after the task"

    # The connection dies between tasks (a database server restarted): the next task gets a new one.
    broken = tasks["notes.tasks.break_connection"].delay().get(timeout=30)
    assert broken == first["token"]
    after_break = token()
    assert after_break["token"] != broken and after_break["pid"] == first["pid"]

    # A task that hit the dead connection fails; the task after it does not.
    failed = tasks["notes.tasks.break_connection"].delay(True)
    failed.get(timeout=30, propagate=False)
    assert failed.state == "FAILURE"
    after_failure = token()
    assert after_failure["token"] != after_break["token"]

    # A task that left its transaction open: its writes are rolled back, the next task is in autocommit.
    left_open = tasks["notes.tasks.leave_transaction_open"].delay("never committed").get(timeout=30)
    after_open = token()
    assert after_open["token"] != left_open and after_open["autocommit"] is True
    assert not Note.objects.filter(title="never committed").exists()


def test_pool_process_never_uses_the_supervisors_connection(djapp: Any, django_env: dict[str, str],
                                                            start_worker: Any) -> None:
    env = dict(django_env, DJPROJ_SUPERVISOR_CONNECTION="1")
    worker = start_worker("-c", "1", "--max-tasks-per-child", "1", app="djproj", env=env)
    worker.wait_for("the supervisor opened a database connection")
    seen = [djapp.tasks["notes.tasks.connection_token"].delay().get(timeout=30) for _ in range(3)]
    assert len({s["pid"] for s in seen}) == 3, "each task should run in a new pool process"
    assert all(s["token"] != "supervisor" for s in seen), seen


def test_config_from_django_settings_reads_only_celery_settings(django_db: Path) -> None:
    from celeriac import Celeriac
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured
    with pytest.raises(ImproperlyConfigured):
        settings.SECRET_KEY  # noqa: B018 - what reading every setting ran into
    app = Celeriac("django-settings", set_as_current=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Django warns when deprecated settings are read
        app.config_from_object("django.conf:settings", namespace="CELERY")
    assert app.conf.result_expires == 3600
    assert app.conf.worker_direct is True
    assert "secret_key" not in app.conf and "debug" not in app.conf and "databases" not in app.conf
