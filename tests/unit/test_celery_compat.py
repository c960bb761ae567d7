"""Celery's settings, URL spellings and `--config` on a celeriac app."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from celeriac import Celeriac
from celeriac.celery_settings import DIFFERENT, UNSUPPORTED, settings_warnings
from celeriac.celery_urls import backend_url, broker_url
from celeriac.config import DEFAULTS
from celeriac.exceptions import ImproperlyConfigured

CELERIAC = str(Path(sys.executable).with_name("celeriac"))


@pytest.fixture(autouse=True)
def no_url_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CELERIAC_BROKER_URL", raising=False)
    monkeypatch.delenv("CELERIAC_RESULT_BACKEND", raising=False)


def app_with(**settings: Any) -> Celeriac:
    return Celeriac("compat", set_as_current=False, **settings)


# --- settings ---

def test_supported_settings_and_celeriacs_defaults_are_silent() -> None:
    conf = app_with(task_serializer="json", worker_prefetch_multiplier=1, task_acks_late=True,
                    enable_utc=True, broker_pool_limit=10, task_default_exchange="tasks").conf
    assert settings_warnings(conf) == []


def test_each_unsupported_setting_gets_one_line_naming_it() -> None:
    conf = app_with(worker_direct=True, task_compression="gzip", s3_bucket="b", task_annotations={"*": {}}).conf
    lines = settings_warnings(conf)
    assert len(lines) == 4
    for name in ("worker_direct", "task_compression", "s3_bucket", "task_annotations"):
        line = next(line for line in lines if repr(name) in line)
        assert "not supported" in line and "\n" not in line
    assert any("S3" in line for line in lines)


def test_a_value_asking_for_what_celeriac_does_differently_is_warned_about() -> None:
    lines = settings_warnings(app_with(task_acks_late=False, enable_utc=False).conf)
    assert len(lines) == 2
    assert any("task_acks_late = False" in line and "at-least-once" in line for line in lines)


def test_a_misspelled_setting_is_named_with_a_suggestion() -> None:
    lines = settings_warnings(app_with(task_serialiser="json").conf)
    assert lines == ["unknown setting 'task_serialiser': neither celeriac nor Celery has it "
                     "(did you mean 'task_serializer'?); it has no effect"]


def test_code_in_a_settings_module_is_not_a_setting(tmp_path: Path) -> None:
    app = app_with()
    app.config_from_object({"os": os, "helper": lambda: 1, "klass": dict, "task_default_queue": "q"})
    assert settings_warnings(app.conf) == []


def test_every_celery_setting_is_classified() -> None:
    """The names in Celery 5.6.2's configuration reference (docs/userguide/configuration.rst, its
    `.. setting::` entries, in celery_setting_names.txt): each is supported, different or unsupported."""
    celery_names = (Path(__file__).parent / "celery_setting_names.txt").read_text().split()
    assert len(celery_names) > 190
    unclassified = [n for n in celery_names if n not in DEFAULTS and n not in DIFFERENT and n not in UNSUPPORTED]
    assert unclassified == []


def test_worker_start_logs_the_warnings(caplog: pytest.LogCaptureFixture) -> None:
    app = app_with(worker_direct=True)
    with caplog.at_level(logging.WARNING, logger="celeriac.app"):
        app.finalize()
    assert [r.getMessage() for r in caplog.records if "worker_direct" in r.getMessage()]


def test_namespace_reads_only_the_prefixed_attributes() -> None:
    class Settings:
        CELERY_TASK_DEFAULT_QUEUE = "from-settings"
        CELERY_ = "no name after the prefix"

        @property
        def SECRET_KEY(self) -> str:  # noqa: N802 - a Django-style setting
            raise RuntimeError("read a setting that is not celeriac's")

    app = app_with()
    app.config_from_object(Settings(), namespace="CELERY")
    assert app.conf.task_default_queue == "from-settings" and "" not in app.conf


# --- URLs ---

def test_db_sqlite_result_url_is_the_sqlite_store_on_that_file(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "results.sqlite"
    app = app_with(broker="memory://compat-db", backend=f"db+sqlite:///{path}")
    with caplog.at_level(logging.INFO, logger="celeriac.app"):
        assert app.result_backend_url == f"sqlite:///{path}"
    assert "db+sqlite" in caplog.text and "Celery's tables" in caplog.text
    app.store_state("t-1", "SUCCESS", 42)
    assert app.AsyncResult("t-1").get(timeout=1) == 42
    assert path.exists()
    other = app_with(broker="memory://compat-db2", backend=f"sqlite:///{path}")  # same file, celeriac's spelling
    assert other.AsyncResult("t-1").result == 42


def test_sqla_sqlite_broker_url_is_the_sqlite_broker(tmp_path: Path) -> None:
    path = tmp_path / "broker.sqlite"
    app = app_with(broker=f"sqla+sqlite:///{path}")
    assert app.broker_url == f"sqlite:///{path}"
    app.send_task("some.task", (1,))
    assert app.broker.queue_sizes(["celery"])["celery"]["ready"] == 1
    assert app.result_backend_url == f"sqlite:///{path}"  # a SQLite broker keeps results too


@pytest.mark.parametrize("url", ["db+postgresql://user:secret@db/app", "db+postgresql+psycopg2://user:secret@db/app",
                                 "sqla+postgresql://user:secret@db/app", "sqla+postgresql+psycopg://user:secret@db/app"])
def test_postgresql_urls_are_read_as_celeriacs_postgresql(url: str) -> None:
    convert = broker_url if url.startswith("sqla") else backend_url
    assert convert(url) == "postgresql://user:secret@db/app"


def test_other_sqlalchemy_databases_and_rpc_are_clear_errors() -> None:
    with pytest.raises(ImproperlyConfigured, match="no mysql engine"):
        backend_url("db+mysql://u:p@h/db")
    with pytest.raises(ImproperlyConfigured, match=r"rpc://"):
        backend_url("rpc://")
    with pytest.raises(ImproperlyConfigured, match="django-celery-results"):
        backend_url("django-db")
    app = app_with(broker="memory://x", backend="rpc://")
    with pytest.raises(ImproperlyConfigured):
        app.backend  # noqa: B018


def test_celery_spellings_of_redis_and_rabbitmq_urls() -> None:
    assert broker_url("redis+socket:///run/redis.sock?virtual_host=2") == "unix:///run/redis.sock?db=2"
    assert backend_url("redis+socket:///run/redis.sock") == "unix:///run/redis.sock"
    assert backend_url("socket:///run/redis.sock") == "unix:///run/redis.sock"
    assert broker_url("librabbitmq://guest:guest@localhost:5672//") == "amqp://guest:guest@localhost:5672//"
    for same in ("redis://h:6379/0", "rediss://h:6380/0", "amqp://h//", "amqps://h//", "pyamqp://h//",
                 "sqlite:///x.db", "memory://"):
        assert broker_url(same) == same


def test_unsupported_broker_scheme_lists_the_supported_ones() -> None:
    app = app_with(broker="sqs://key:secret@")
    with pytest.raises(ImproperlyConfigured) as caught:
        app.broker  # noqa: B018
    assert "redis://" in str(caught.value) and "secret" not in str(caught.value)


# --- celeriac --config ---

@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERIAC_", "CELERY_"))}
    env["PYTHONUNBUFFERED"] = "1"
    (tmp_path / "cfgapp.py").write_text(textwrap.dedent("""
        from celeriac import Celeriac

        app = Celeriac("cfgapp", broker="sqlite:///app.db", task_default_queue="from-app")

        @app.task
        def add(x, y):
            return x + y
    """))
    (tmp_path / "cfgmod.py").write_text(textwrap.dedent("""
        import os

        broker_url = "sqlite:///from-config.db"
        task_default_queue = "from-config"
    """))
    return env


def celeriac_cli(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CELERIAC, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def test_config_option_settings_win_over_the_apps_own(tmp_path: Path, cli_env: dict[str, str]) -> None:
    proc = celeriac_cli(tmp_path, cli_env, "-A", "cfgapp", "--config", "cfgmod", "call", "cfgapp.add",
                        "--args", "[1, 2]")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "from-config.db").exists() and not (tmp_path / "app.db").exists()
    reader = app_with(broker=f"sqlite:///{tmp_path / 'from-config.db'}")
    assert reader.broker.queue_sizes(["from-config"])["from-config"]["ready"] == 1


def test_config_module_from_the_environment(tmp_path: Path, cli_env: dict[str, str]) -> None:
    env = dict(cli_env, CELERY_CONFIG_MODULE="cfgmod")
    proc = celeriac_cli(tmp_path, env, "-A", "cfgapp", "call", "cfgapp.add", "--args", "[1, 2]")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "from-config.db").exists()


def test_config_module_that_cannot_be_imported_is_a_one_line_error(tmp_path: Path, cli_env: dict[str, str]) -> None:
    proc = celeriac_cli(tmp_path, cli_env, "-A", "cfgapp", "--config", "nosuchconfig", "call", "cfgapp.add")
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "nosuchconfig" in lines[0] and "--config" in lines[0], proc.stderr


def test_a_django_project_whose_settings_cannot_be_imported_is_a_one_line_error(tmp_path: Path,
                                                                               cli_env: dict[str, str]) -> None:
    pytest.importorskip("django")
    env = dict(cli_env, DJANGO_SETTINGS_MODULE="nosuchproject.settings")
    proc = celeriac_cli(tmp_path, env, "-A", "cfgapp", "worker")
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Django" in lines[0] and "nosuchproject" in lines[0], proc.stderr


def test_celery3_upper_case_names_are_read_with_and_without_the_namespace() -> None:
    class Celery3Config:
        CELERY_ACKS_LATE = True
        CELERYD_PREFETCH_MULTIPLIER = 1
        CELERY_DEFAULT_QUEUE = "old-style"
        BROKER_URL = "memory://old-style"
        CELERY_WORKER_DIRECT = True
        DEBUG = True  # not a Celery name: skipped

    plain = app_with()
    plain.config_from_object(Celery3Config)
    assert plain.conf.worker_prefetch_multiplier == 1 and plain.conf.task_default_queue == "old-style"
    assert plain.conf.broker_url == "memory://old-style" and "debug" not in plain.conf
    assert [line for line in settings_warnings(plain.conf)] == [
        "the Celery setting 'worker_direct' is not supported by celeriac and has no effect: there are no "
        "per-worker queues"]
    django_style = app_with()
    django_style.config_from_object(Celery3Config, namespace="CELERY")
    assert django_style.conf.task_default_queue == "old-style" and django_style.conf.task_acks_late is True


def test_settings_celeriac_honours_are_never_warned_about() -> None:
    # Both are read by celeriac (wire queues' x-max-priority; the worker's logging set-up).
    conf = {"task_queue_max_priority": 10, "worker_hijack_root_logger": False}
    assert settings_warnings(conf) == []
