"""celeriac.contrib.pytest, tested the way a user meets it: small test files run by pytest.

Each run is a separate pytest process (pytester.runpytest_subprocess) with a deadline, so a
worker thread that kept pytest from exiting fails the test instead of hanging it. The
plugin is found through the package's pytest11 entry point, as in a user's project.
"""

from __future__ import annotations

import re
import time

import pytest

pytest_plugins = ["pytester"]

# Generous for a loaded CI machine; a hung worker would block far longer.
RUN_DEADLINE = 90.0


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    started = time.monotonic()
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-s", *args, timeout=RUN_DEADLINE)
    result.elapsed = time.monotonic() - started  # type: ignore[attr-defined]
    return result


def numbers(result: pytest.RunResult, label: str) -> list[float]:
    return [float(m) for m in re.findall(rf"{label}=([0-9.]+)", result.stdout.str())]


def test_worker_runs_tasks_starts_fast_and_a_failure_surfaces_in_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user="""
        import time
        import pytest
        import celeriac.testing  # imported up front: START measures the worker's start, not first imports

        class PaymentDeclined(Exception):
            pass

        finished = []

        @pytest.fixture
        def clock():
            return time.monotonic()

        def test_add(clock, celery_app, celery_worker):
            print(f"START={time.monotonic() - clock:.4f}")
            @celery_app.task
            def add(x, y):
                return x + y
            assert add.delay(2, 3).get(timeout=5) == 5
            assert [add.delay(i, i).get(timeout=5) for i in range(3)] == [0, 2, 4]
            finished.append(time.monotonic())

        def test_exception_is_raised_with_its_own_type(clock, celery_app, celery_worker):
            # the previous test's worker stopped and this one started in the meantime
            print(f"BETWEEN={clock - finished[-1]:.4f}")
            print(f"START={time.monotonic() - clock:.4f}")
            @celery_app.task
            def charge(amount):
                raise PaymentDeclined(f"card declined for {amount}")
            with pytest.raises(PaymentDeclined, match="card declined for 7"):
                charge.delay(7).get(timeout=5)

        def test_uncaught_failure_fails_the_test(celery_app, celery_worker):
            @celery_app.task
            def divide(x, y):
                return x / y
            divide.delay(1, 0).get(timeout=5)

        def test_ping_is_registered_by_the_worker(celery_app, celery_worker, caplog):
            assert celery_app.send_task("celery.ping").get(timeout=5) == "pong"
            celery_worker.reload()  # Celery's call after defining tasks in the test: harmless
            # celery_enable_logging is off: no INFO line per task
            assert not any("succeeded" in r.getMessage() for r in caplog.records)
    """)
    result = run(pytester)
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["*test_uncaught_failure_fails_the_test*", "*ZeroDivisionError*"])
    starts = numbers(result, "START")
    print(f"measured: worker start {starts} s, previous worker's stop + next setup {numbers(result, 'BETWEEN')} s")
    assert len(starts) == 2 and max(starts) < 1.0, starts
    between = numbers(result, "BETWEEN")
    assert len(between) == 1 and between[0] < 1.0, between  # stop of one worker + setup of the next app
    assert result.elapsed < 30, result.elapsed  # type: ignore[attr-defined]


def test_session_worker_serves_every_test_and_pytest_exits(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("""
        import pytest
        from celeriac import shared_task

        @shared_task
        def mul(x, y):
            return x * y

        @pytest.fixture(scope="session")
        def celery_config():
            return {"task_default_queue": "session-q"}
    """)
    pytester.makepyfile(test_session="""
        from celeriac.signals import worker_ready
        from conftest import mul

        seen = []
        started = []
        worker_ready.connect(lambda sender=None, **kw: started.append(sender))

        def test_one(celery_session_app, celery_session_worker):
            seen.append(celery_session_worker)
            assert mul.delay(6, 7).get(timeout=5) == 42
            assert celery_session_app.conf.task_default_queue == "session-q"

        def test_two(celeriac_session_worker):
            seen.append(celeriac_session_worker)
            assert mul.delay(3, 3).get(timeout=5) == 9

        def test_it_was_one_worker():
            assert len(seen) == 2 and seen[0] is seen[1]
            assert len(started) == 1
    """)
    result = run(pytester)
    result.assert_outcomes(passed=3)
    assert result.ret == 0


def test_config_fixture_and_marker_override_settings(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("""
        import pytest

        @pytest.fixture(scope="session")
        def celeriac_config():  # the alias: celery_config passes it on
            return {"task_default_queue": "from-config", "result_expires": 60}
    """)
    pytester.makepyfile(test_config="""
        import os
        import pytest

        def test_config_applies(celery_app, celery_worker):
            assert celery_app.conf.task_default_queue == "from-config"
            assert celery_app.broker_url.startswith("memory://")
            @celery_app.task
            def hello():
                return "hi"
            assert hello.delay().get(timeout=5) == "hi"

        @pytest.mark.celery(task_default_queue="from-marker", broker_url="sqlite:///marked.db")
        def test_marker_wins(celery_app, celeriac_worker):
            assert celery_app.conf.task_default_queue == "from-marker"
            assert celery_app.conf.result_expires == 60  # the rest of celery_config stays
            @celery_app.task
            def hello():
                return "hi"
            assert hello.delay().get(timeout=5) == "hi"
            assert celery_app.broker_url.endswith("/marked.db")
            assert os.path.exists("marked.db")

        @pytest.mark.celery(task_default_queue="on-class")
        class TestMarkedClass:
            def test_inside(self, celeriac_app):
                assert celeriac_app.conf.task_default_queue == "on-class"
    """)
    result = run(pytester)
    result.assert_outcomes(passed=3)


def test_environment_urls_never_reach_the_test_app(pytester: pytest.Pytester,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's shell pointing at a server (here: nothing listens) must not receive test tasks.
    monkeypatch.setenv("CELERIAC_BROKER_URL", "redis://127.0.0.1:9/0")
    monkeypatch.setenv("CELERIAC_RESULT_BACKEND", "redis://127.0.0.1:9/0")
    pytester.makepyfile(test_env="""
        def test_runs_in_memory(celery_app, celery_worker):
            @celery_app.task
            def one():
                return 1
            assert one.delay().get(timeout=5) == 1
            assert celery_app.broker_url.startswith("memory://")
    """)
    run(pytester).assert_outcomes(passed=1)


def test_app_trap_and_depends_on_current_app(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("""
        import pytest

        @pytest.fixture(scope="session")
        def use_celery_app_trap():
            return True
    """)
    pytester.makepyfile(test_trap="""
        import pytest
        from celeriac.app import current_app

        def test_trapped(celery_app):
            with pytest.raises(RuntimeError, match="use_celery_app_trap"):
                current_app().tasks

        def test_explicit_app_is_fine(celery_app, celery_worker):
            @celery_app.task
            def two():
                return 2
            assert two.delay().get(timeout=5) == 2

        @pytest.mark.usefixtures("depends_on_current_app")
        def test_allowed(celery_app):
            assert current_app() is celery_app
    """)
    run(pytester).assert_outcomes(passed=3)


def test_a_task_still_running_at_teardown_is_reported_and_pytest_exits(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("""
        import pytest

        @pytest.fixture(scope="session")
        def celery_worker_parameters():
            return {"shutdown_timeout": 0.3}
    """)
    pytester.makepyfile(test_stuck="""
        import time

        def test_leaves_a_task_running(celery_app, celery_worker):
            @celery_app.task
            def slow():
                time.sleep(300)
            slow.delay()
            time.sleep(0.2)
    """)
    result = run(pytester)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*RuntimeError*slow*still running*shutdown_timeout*"])
    # Far below the task's 300 s (pytest did not wait for it), with room for a loaded machine's
    # slow start (23 s was seen at load 16); the run's own deadline is RUN_DEADLINE.
    assert result.elapsed < 60, result.elapsed  # type: ignore[attr-defined]


def test_includes_class_tasks_and_worker_parameters(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(user_tasks="""
        from celeriac import shared_task
        from celeriac import Task

        imported = True

        @shared_task(name="user_tasks.triple")
        def triple(x):
            return 3 * x

        class Greet(Task):
            name = "user_tasks.greet"
            def run(self, who):
                return f"hello {who}"
    """)
    pytester.makeconftest("""
        import pytest

        @pytest.fixture(scope="session")
        def celery_includes():
            return ["user_tasks"]

        @pytest.fixture(scope="session")
        def celery_class_tasks():
            import user_tasks
            return [user_tasks.Greet]

        @pytest.fixture(scope="session")
        def celery_worker_parameters():
            return {"queues": ["only-this-one"], "concurrency": 2}

        @pytest.fixture(scope="session")
        def celery_worker_pool():
            return "thread"
    """)
    pytester.makepyfile(test_includes="""
        import sys

        def test_everything(celery_app, celery_worker):
            assert "user_tasks" in sys.modules
            assert celery_worker.options.queues == ["only-this-one"]
            assert celery_worker.options.concurrency == 2
            r = celery_app.send_task("user_tasks.triple", (4,), queue="only-this-one")
            assert r.get(timeout=5) == 12
            g = celery_app.send_task("user_tasks.greet", ("you",), queue="only-this-one")
            assert g.get(timeout=5) == "hello you"
    """)
    run(pytester).assert_outcomes(passed=1)


def test_unsupported_worker_options_are_named(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("""
        import pytest

        @pytest.fixture(scope="session")
        def celery_worker_parameters():
            return {"exclude_queues": ["x"]}
    """)
    pytester.makepyfile(test_bad="""
        def test_it(celery_worker):
            pass
    """)
    result = run(pytester)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*TypeError*does not support exclude_queues*"])


def test_a_projects_own_app_as_celery_app(pytester: pytest.Pytester) -> None:
    # Celery's worker fixture fails here ("celery.ping" not registered on the project's app).
    pytester.makepyfile(proj="""
        from celeriac import Celeriac

        app = Celeriac("proj", broker="memory://proj-tests", backend="memory://proj-tests")

        @app.task
        def shout(word):
            return word.upper()
    """)
    pytester.makeconftest("""
        import pytest
        from proj import app

        @pytest.fixture
        def celery_app():
            app.set_current()
            yield app
    """)
    pytester.makepyfile(test_proj="""
        from proj import app, shout

        def test_shout(celery_app, celery_worker):
            assert celery_app is app and "celery.ping" in app.tasks
            assert shout.delay("hi").get(timeout=5) == "HI"

        def test_again(celery_worker):
            assert shout.delay("again").get(timeout=5) == "AGAIN"
    """)
    run(pytester).assert_outcomes(passed=2)


def test_enable_logging_puts_the_workers_task_lines_in_the_log_capture(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_logging="""
        import pytest

        @pytest.fixture(scope="session")
        def celery_enable_logging():
            return True

        def test_logged(celery_app, celery_worker, caplog):
            @celery_app.task
            def hello():
                return "hi"
            result = hello.delay()
            assert result.get(timeout=5) == "hi"
            assert any(result.id in r.getMessage() and "succeeded" in r.getMessage() for r in caplog.records)
    """)
    run(pytester).assert_outcomes(passed=1)


def test_celerys_own_test_settings_run_unchanged(pytester: pytest.Pytester) -> None:
    # What Celery's docs put in celery_config: a shared memory:// broker and an in-process backend.
    pytester.makeconftest("""
        import pytest

        @pytest.fixture(scope="session")
        def celery_config():
            return {"broker_url": "memory://", "result_backend": "cache+memory://"}
    """)
    pytester.makepyfile(test_celery_settings="""
        import pytest

        def test_runs(celery_app, celery_worker):
            assert celery_app.broker_url.startswith("memory://celeriac-test-")
            assert celery_app.result_backend_url.startswith("memory://celeriac-test-")
            @celery_app.task
            def one():
                return 1
            assert one.delay().get(timeout=5) == 1

        @pytest.mark.celery(result_backend="rpc://")
        def test_rpc_too(celery_app, celery_worker):
            @celery_app.task
            def two():
                return 2
            assert two.delay().get(timeout=5) == 2
    """)
    result = run(pytester)
    result.assert_outcomes(passed=2, warnings=2)
    result.stdout.fnmatch_lines(["*result_backend 'cache+memory://' is Celery's*"])
