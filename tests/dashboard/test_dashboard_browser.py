"""The dashboard in a real browser: Debian's chromium driven by Playwright (never a downloaded browser).

Also takes the screenshots of docs/dashboard.md (docs/img/dashboard-*.png).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

import pytest

pytest.importorskip("starlette")
playwright_api = pytest.importorskip("playwright.sync_api")

from dashboard_helpers import DashboardProcess  # noqa: E402
from helpers import wait_until  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
XSS = "<script>alert(1)</script>"
AUTH = ("admin", "browser-pw")


@pytest.fixture
def broker_kind() -> str:
    return "sqlite"  # the API tests cover every broker; these cover what a person sees


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        from servers import missing
        missing(CHROMIUM, "chromium")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def dashboard(app_env: dict[str, str], tmp_path: Path) -> Iterator[Any]:
    env = dict(app_env, BEAT_TEST_SCHEDULE=json.dumps({"every-minute": [60, "run_once"]}),
               BEAT_TEST_FILE=str(tmp_path / "ticks"))
    started: list[DashboardProcess] = []

    def start(*args: str) -> DashboardProcess:
        d = DashboardProcess(tmp_path, env, "--basic-auth", ":".join(AUTH), *args, auth=AUTH)
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop()


def open_page(browser: Any, base: str, alerts: list[str]) -> Any:
    context = browser.new_context(base_url=base, http_credentials={"username": AUTH[0], "password": AUTH[1]},
                                  viewport={"width": 1280, "height": 720})
    page = context.new_page()

    def on_dialog(dialog: Any) -> None:
        if dialog.type == "alert":  # only an injected script would raise one: record it
            alerts.append(dialog.message)
            dialog.dismiss()
        else:
            dialog.accept()  # the dashboard's own "are you sure?"

    page.on("dialog", on_dialog)
    return page


def shot(page: Any, name: str) -> None:
    DOCS_IMG.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(DOCS_IMG / f"dashboard-{name}.png"), full_page=False)


def test_every_page_and_action_in_a_browser(tasks: Any, start_worker: Any, dashboard: Any, browser: Any) -> None:
    start_worker("-c", "2", "-n", "browser@host")
    done = [tasks.add.delay(i, i) for i in range(5)]
    evil = tasks.fail.delay(XSS)
    for r in done:
        r.get(timeout=20)
    wait_until(lambda: evil.state == "FAILURE", 20)
    d = dashboard()
    alerts: list[str] = []
    page = open_page(browser, d.base, alerts)

    page.goto("/workers")
    page.wait_for_selector("tr[data-worker='browser@host']")
    shot(page, "workers")

    page.goto("/tasks")
    page.wait_for_selector(f"tr[data-task='{evil.id}']")
    assert page.locator(f"tr[data-task='{evil.id}'] td.args").inner_text().count(XSS) == 1  # shown, as text
    shot(page, "tasks")
    page.select_option("select[name=state]", "FAILURE")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**/tasks?state=FAILURE**")
    assert page.locator("#tasks tbody tr").count() == 1
    page.select_option("select[name=state]", "")
    page.fill("input[name=search]", "alert(1)")  # text in the arguments, typed as a user would
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**search=alert**")
    assert page.locator("#tasks tbody tr").count() == 1
    assert page.locator(f"tr[data-task='{evil.id}']").count() == 1
    page.fill("input[name=search]", "")
    page.fill("input[name=name]", "tasks_app.add")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**name=tasks_app.add**")
    assert page.locator("#tasks tbody tr").count() == 5

    # Live update: a task finishing now appears without a reload.
    page.goto("/tasks")
    page.evaluate("window.__not_reloaded = true")
    fresh = tasks.add.delay(40, 2)
    fresh.get(timeout=20)
    page.wait_for_selector(f"tr[data-task='{fresh.id}']", timeout=15_000)
    assert page.evaluate("window.__not_reloaded") is True

    # One task, escaped, then retried with its original arguments.
    page.goto(f"/task/{evil.id}")
    assert page.locator("#task-args").inner_text().count(XSS) == 1
    assert "ValueError" in page.locator("#task-exception").inner_text()
    assert "Traceback" in page.locator("#task-traceback").inner_text()
    shot(page, "task")
    page.click("text=Retry with the same arguments")
    page.wait_for_selector("#flash.ok")
    assert "sent again as" in page.locator("#flash").inner_text()
    page.click("#new-task-link")
    page.wait_for_selector("#task-state")
    # Its history record follows its result within 0.5 s; the page picks it up by itself.
    page.wait_for_function("document.getElementById('task-args').textContent.includes('<script>alert(1)')")
    assert page.locator("#task-args").inner_text().count(XSS) == 1

    # Terminate a running task.
    slow = tasks.sleepy.delay(30)
    wait_until(lambda: d.get(f"/api/tasks/{slow.id}") if d.http.get(f"/api/tasks/{slow.id}").status_code == 200
               else any(t["id"] == slow.id for w in d.get("/api/workers")["workers"] for t in w["running"]), 20)
    page.goto(f"/task/{slow.id}")
    page.click("text=Terminate")
    page.wait_for_selector("#flash.ok")
    assert "terminated" in page.locator("#flash").inner_text()
    wait_until(lambda: slow.state == "REVOKED", 20)

    # Rate limit, from the tasks page.
    page.goto("/tasks")
    page.fill("form.action input[name=task]", "tasks_app.add")
    page.fill("form.action input[name=rate]", "5/s")
    page.click("text=Set rate limit")
    page.wait_for_selector("#flash.ok")
    assert "set to 5/s on 1 worker(s)" in page.locator("#flash").inner_text()

    # Queues: purge one nobody consumes.
    for _ in range(3):
        tasks.routed.delay()
    page.goto("/queues")
    page.wait_for_selector("tr[data-queue='special'] td.ready:text('3')")
    shot(page, "queues")
    page.click("tr[data-queue='special'] button")
    page.wait_for_selector("#flash.ok")
    assert "purged 3 waiting message(s) from queue special" in page.locator("#flash").inner_text()
    page.wait_for_selector("tr[data-queue='special'] td.ready:text('0')")

    # Dead letters: requeue one, then all.
    rejected = [tasks.rejects.delay() for _ in range(2)]
    wait_until(lambda: len(d.get("/api/dead-letters")["dead_letters"]) >= 2, 20)
    page.goto("/dead-letters")
    page.wait_for_selector("tr[data-dead]")
    assert "rejected by the task" in page.locator("#dead").inner_text()
    shot(page, "dead-letters")
    page.locator("tr[data-dead] button").first.click()
    page.wait_for_selector("#flash.ok")
    assert "requeued 1 dead letter(s)" in page.locator("#flash").inner_text()
    page.goto("/dead-letters")
    page.click("text=Requeue all")
    page.wait_for_function("document.getElementById('flash').textContent.includes('requeued')")
    assert rejected

    page.goto("/periodic")
    assert "every-minute" in page.locator("#periodic").inner_text()
    assert "No beat is running" in page.locator("#leader").inner_text()
    shot(page, "periodic")
    assert alerts == []  # the task argument <script>alert(1)</script> never ran


def test_auth_and_read_only_in_a_browser(tasks: Any, start_worker: Any, dashboard: Any, browser: Any) -> None:
    start_worker("-n", "ro@host")
    done = tasks.add.delay(1, 1)
    done.get(timeout=20)
    d = dashboard("--read-only")
    anonymous = browser.new_context(base_url=d.base)
    with pytest.raises(playwright_api.Error, match="AUTH"):  # chromium's answer to a refused login
        anonymous.new_page().goto("/tasks")
    assert anonymous.request.get("/tasks").status == 401
    wrong = browser.new_context(base_url=d.base, http_credentials={"username": AUTH[0], "password": "wrong"})
    assert wrong.request.get("/api/tasks").status == 401
    wrong.close()
    anonymous.close()
    alerts: list[str] = []
    page = open_page(browser, d.base, alerts)
    page.goto(f"/task/{done.id}")
    assert page.locator("text=read-only").count() == 1
    assert page.locator("form.action").count() == 0
    page.goto("/queues")
    assert page.locator("button").count() == 0
    status = page.evaluate("""async () => (await fetch('/api/queues/celery/purge', {method: 'POST',
        headers: {'X-CSRF-Token': document.querySelector('meta[name=csrf-token]').content}})).status""")
    assert status == 403
    assert "basic auth as 'admin'" in d.proc.output and AUTH[1] not in d.proc.output  # never the password
