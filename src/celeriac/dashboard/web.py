"""The dashboard's web application (Starlette): pages, the JSON API, /metrics and live updates."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import json
import secrets
import threading
import time
from datetime import datetime
from pathlib import Path
from urllib.parse import urlencode
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import states
from ..history import HistoryQuery
from . import actions
from .data import PAGE_SIZE, DashboardData
from .live import EventTracker
from .metrics import registry_for, render

if TYPE_CHECKING:
    from ..app import Celeriac

HERE = Path(__file__).parent
STATES = [states.SUCCESS, states.FAILURE, states.RETRY, states.REVOKED, states.STARTED]


def _json(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data, default=str), status_code=status, media_type="application/json")


def _when(epoch: Any) -> str:
    if not epoch:
        return ""
    return datetime.fromtimestamp(float(epoch)).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, default=str, ensure_ascii=False)


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(", ", ": "), default=str, ensure_ascii=False)


class BasicAuth:
    """Every path but /healthcheck needs the user and password (compared in constant time)."""

    def __init__(self, app: ASGIApp, credentials: tuple[str, str]) -> None:
        self.app = app
        self.expected = f"{credentials[0]}:{credentials[1]}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/healthcheck" or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        response = PlainTextResponse("authentication required", status_code=401,
                                     headers={"WWW-Authenticate": 'Basic realm="celeriac dashboard"'})
        await response(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        for name, value in scope.get("headers", []):
            if name == b"authorization" and value[:6].lower() == b"basic ":
                try:
                    given = base64.b64decode(value[6:].strip(), validate=True)
                except (binascii.Error, ValueError):
                    return False
                return hmac.compare_digest(given, self.expected)
        return False


class Dashboard:
    def __init__(self, app: "Celeriac", *, read_only: bool = False, events: bool = True) -> None:
        self.app = app
        self.read_only = read_only
        self.csrf = secrets.token_urlsafe(32)
        self.tracker = EventTracker(app)
        if events:
            self.tracker.start()
        self.data = DashboardData(app, self.tracker)
        self.registry = registry_for(self.data, self.tracker)
        self.templates = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape())
        self.templates.filters.update(when=_when, pretty=_pretty, compact=_compact)
        self._fingerprint: tuple[float, str] = (0.0, "")
        self._fingerprint_lock = threading.Lock()
        self._dead_at, self._dead = 0.0, 0

    # --- pages ---

    async def page(self, request: Request, template: str, **context: Any) -> Response:
        partial = request.query_params.get("partial") == "1"
        html = self.templates.get_template(template).render(
            partial=partial, read_only=self.read_only, csrf=self.csrf, path=request.url.path, states=STATES,
            **context)
        return HTMLResponse(html)

    async def workers_page(self, request: Request) -> Response:
        return await self.page(request, "workers.html", workers=await run_in_threadpool(self.data.workers))

    async def tasks_page(self, request: Request) -> Response:
        query = _query(request)
        rows, more, older = await self._tasks(query)
        # A search pages by time (`until`), the other lists by offset.
        dropped = ("offset", "partial", "until") if query.search else ("offset", "partial")
        base = urlencode([(k, v) for k, v in request.query_params.multi_items() if k not in dropped])
        return await self.page(request, "tasks.html", tasks=rows, query=query, more=more, older=older,
                               base=base, window=request.query_params.get("window", ""))

    async def _tasks(self, query: HistoryQuery) -> tuple[list[dict[str, Any]], bool, float | None]:
        """(rows, whether more may follow, the `until` of a search's next page)."""
        if query.search:
            rows, older = await run_in_threadpool(self.data.search, query)
            return rows, older is not None, older
        rows = await run_in_threadpool(self.data.tasks, query)
        return rows, len(rows) == query.limit, None

    async def task_page(self, request: Request) -> Response:
        task = await run_in_threadpool(self.data.task, request.path_params["task_id"])
        if task is None:
            return await self.page(request, "missing.html", task_id=request.path_params["task_id"])
        return await self.page(request, "task.html", task=task, final=task["state"] in states.READY_STATES)

    async def queues_page(self, request: Request) -> Response:
        return await self.page(request, "queues.html", queues=await run_in_threadpool(self.data.queues))

    async def dead_page(self, request: Request) -> Response:
        return await self.page(request, "dead.html", letters=await run_in_threadpool(self.data.dead_letters))

    async def periodic_page(self, request: Request) -> Response:
        return await self.page(request, "periodic.html", beat=await run_in_threadpool(self.data.periodic))

    # --- the JSON API ---

    async def api_workers(self, request: Request) -> Response:
        rows = await run_in_threadpool(self.data.workers)
        hostname, queue = request.query_params.get("hostname"), request.query_params.get("queue")
        rows = [w for w in rows if (not hostname or hostname in str(w["hostname"]))
                and (not queue or queue in w["queues"])]
        return _json(_paged(request, "workers", rows))

    async def api_tasks(self, request: Request) -> Response:
        query = _query(request)
        rows, more, older = await self._tasks(query)
        answer: dict[str, Any] = {"tasks": rows, "limit": query.limit, "offset": query.offset, "more": more}
        if query.search:  # the next page of a search: the same query with until=next_until
            answer["next_until"] = older
        return _json(answer)

    async def api_task(self, request: Request) -> Response:
        task = await run_in_threadpool(self.data.task, request.path_params["task_id"])
        return _json(task) if task is not None else _json({"error": "no such task in the history"}, 404)

    async def api_queues(self, request: Request) -> Response:
        rows = await run_in_threadpool(self.data.queues)
        name = request.query_params.get("name")
        return _json(_paged(request, "queues", [q for q in rows if not name or q["name"] == name]))

    async def api_dead(self, request: Request) -> Response:
        p = request.query_params
        wanted = _int(p.get("offset"), 0, 10_000_000) + _int(p.get("limit"), PAGE_SIZE, 1000)
        rows = await run_in_threadpool(self.data.dead_letters, min(wanted, 10_000))
        queue, name = p.get("queue"), p.get("name")
        rows = [d for d in rows if (not queue or d["queue"] == queue) and (not name or d["name"] == name)]
        return _json(_paged(request, "dead_letters", rows))

    async def api_periodic(self, request: Request) -> Response:
        listing = await run_in_threadpool(self.data.periodic)
        name = request.query_params.get("name")
        return _json({**listing, **_paged(request, "entries",
                                          [e for e in listing["entries"] if not name or e["name"] == name])})

    async def api_csrf(self, request: Request) -> Response:
        return _json({"token": self.csrf})

    # --- actions (POST) ---

    async def act(self, request: Request, do: Callable[[dict[str, Any]], dict[str, Any]]) -> Response:
        if self.read_only:
            return _json({"ok": False, "error": "the dashboard runs with --read-only: no actions"}, 403)
        refusal = self._csrf_refusal(request)
        if refusal:
            return _json({"ok": False, "error": refusal}, 403)
        try:
            body = await _body(request)
            return _json(await run_in_threadpool(do, body))
        except actions.ActionError as exc:
            return _json({"ok": False, "error": str(exc)}, 400)

    def _csrf_refusal(self, request: Request) -> str | None:
        origin = request.headers.get("origin")
        if origin and origin.split("://", 1)[-1] != request.headers.get("host", ""):
            return "cross-origin request refused"
        if not hmac.compare_digest(request.headers.get("x-csrf-token", ""), self.csrf):
            return "missing or wrong X-CSRF-Token header (read the token from GET /api/csrf)"
        return None

    async def retry(self, request: Request) -> Response:
        return await self.act(request, lambda b: actions.retry(self.app, request.path_params["task_id"]))

    async def revoke(self, request: Request) -> Response:
        return await self.act(request, lambda b: actions.revoke(
            self.app, request.path_params["task_id"], _truthy(b.get("terminate")), b.get("signal") or None))

    async def purge(self, request: Request) -> Response:
        return await self.act(request, lambda b: actions.purge(self.app, request.path_params["queue"]))

    async def requeue(self, request: Request) -> Response:
        def do(body: dict[str, Any]) -> dict[str, Any]:
            ids = body.get("ids")
            if isinstance(ids, str):
                ids = [i for i in ids.split(",") if i]
            return actions.requeue(self.app, [str(i) for i in ids] if ids else None)
        return await self.act(request, do)

    async def rate_limit(self, request: Request) -> Response:
        return await self.act(request, lambda b: actions.rate_limit(
            self.app, str(b.get("task") or ""), str(b.get("rate") or "") or None))

    # --- machines ---

    async def metrics(self, request: Request) -> Response:
        body = await run_in_threadpool(render, self.registry)
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    async def healthcheck(self, request: Request) -> Response:
        return PlainTextResponse("OK")

    def fingerprint(self) -> str:
        """What changed since the last look (at most one look a second, shared by every page)."""
        with self._fingerprint_lock:
            at, value = self._fingerprint
            if time.monotonic() - at < 1.0:
                return value
            newest = self.app.backend.task_history(HistoryQuery(limit=1))
            workers = [(w["id"], w["processed"], w["active"]) for w in self.data.workers()]
            queues = self.app.broker.queue_sizes(self.data.queue_names())
            if time.monotonic() - self._dead_at >= 5.0:  # reading dead letters is dearer (RabbitMQ: a drain)
                self._dead_at, self._dead = time.monotonic(), len(self.app.broker.dead_letters(limit=1000))
            dead = self._dead
            value = json.dumps([self.tracker.version, [(r.task_id, r.updated) for r in newest], workers, queues,
                                dead], default=str)
            self._fingerprint = (time.monotonic(), value)
            return value

    async def stream(self, request: Request) -> Response:
        async def changes() -> AsyncIterator[str]:
            last = ""
            yield "retry: 2000\n\n"
            while not await request.is_disconnected():
                try:
                    now = await run_in_threadpool(self.fingerprint)
                except Exception:  # the broker is away: try again, the page keeps its last view
                    now = last
                if now != last:
                    # Also once on connecting: what changed between the page's render and this
                    # first look would otherwise be the baseline, and the page would miss it.
                    yield f"event: change\ndata: {json.dumps({'at': time.time()})}\n\n"
                    last = now
                await asyncio.sleep(1.0)

        return StreamingResponse(changes(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    def routes(self) -> list[Any]:
        def get(path: str, fn: Callable[..., Any]) -> Route:
            return Route(path, fn, methods=["GET"])

        def post(path: str, fn: Callable[..., Any]) -> Route:
            return Route(path, fn, methods=["POST"])

        return [
            get("/", lambda r: RedirectResponse("/tasks")), get("/workers", self.workers_page),
            get("/tasks", self.tasks_page), get("/task/{task_id}", self.task_page), get("/queues", self.queues_page),
            get("/dead-letters", self.dead_page), get("/periodic", self.periodic_page),
            get("/api/workers", self.api_workers), get("/api/tasks", self.api_tasks),
            get("/api/tasks/{task_id}", self.api_task), get("/api/queues", self.api_queues),
            get("/api/dead-letters", self.api_dead), get("/api/periodic", self.api_periodic),
            get("/api/csrf", self.api_csrf), get("/api/stream", self.stream),
            post("/api/tasks/{task_id}/retry", self.retry), post("/api/tasks/{task_id}/revoke", self.revoke),
            post("/api/queues/{queue}/purge", self.purge), post("/api/dead-letters/requeue", self.requeue),
            post("/api/rate-limit", self.rate_limit),
            get("/metrics", self.metrics), get("/healthcheck", self.healthcheck),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]


def create_app(app: "Celeriac", *, basic_auth: tuple[str, str] | None = None, read_only: bool = False,
               events: bool = True) -> ASGIApp:
    dashboard = Dashboard(app, read_only=read_only, events=events)
    @contextlib.asynccontextmanager
    async def lifespan(_web: Starlette) -> AsyncIterator[None]:
        yield
        dashboard.tracker.stop()

    web = Starlette(routes=dashboard.routes(), lifespan=lifespan)
    web.state.dashboard = dashboard
    return BasicAuth(web, basic_auth) if basic_auth else web


def _int(value: str | None, default: int, most: int) -> int:
    try:
        return max(0, min(most, int(value))) if value else default
    except ValueError:
        return default


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _paged(request: Request, key: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One page of a listing (`limit`, `offset`), under `key`, with the count of all that matched."""
    limit = _int(request.query_params.get("limit"), PAGE_SIZE, 1000)
    offset = _int(request.query_params.get("offset"), 0, 10_000_000)
    return {key: rows[offset:offset + limit], "limit": limit, "offset": offset, "total": len(rows),
            "more": offset + limit < len(rows)}


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() in ("1", "true", "on", "yes")


def _query(request: Request) -> HistoryQuery:
    p = request.query_params
    since = _float(p.get("since"))
    window = _float(p.get("window"))  # seconds back from now (the page's time filter)
    if window:
        since = max(since or 0.0, time.time() - window)
    return HistoryQuery(state=p.get("state") or None, name=p.get("name") or None, worker=p.get("worker") or None,
                        since=since, until=_float(p.get("until")), search=p.get("search") or None,
                        limit=_int(p.get("limit"), PAGE_SIZE, 1000), offset=_int(p.get("offset"), 0, 10_000_000))


async def _body(request: Request) -> dict[str, Any]:
    """The action's JSON object (an empty body: no options)."""
    raw = await request.body()
    try:
        value = json.loads(raw) if raw.strip() else {}
    except ValueError:
        raise actions.ActionError("the request body must be JSON (an object)") from None
    if not isinstance(value, dict):
        raise actions.ActionError("the request body must be a JSON object")
    return value

