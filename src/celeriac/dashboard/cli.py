"""`celeriac -A tasks dashboard` (also `celeriac -A tasks flower`): serve the dashboard."""

from __future__ import annotations

import ipaddress
import logging
import socket
from typing import Any

import click

EXTRA_HINT = "the dashboard needs its extra: pip install 'celeriac[dashboard]'"


def _is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(info[4][0]).is_loopback
                       for info in socket.getaddrinfo(address, None))
        except (OSError, ValueError):
            return False


def parse_basic_auth(value: str | None) -> tuple[str, str] | None:
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise click.UsageError("--basic-auth wants USER:PASSWORD (both non-empty)")
    return user, password


def options(fn: Any) -> Any:
    for option in reversed([
        click.option("--address", default="127.0.0.1", show_default=True,
                     help="Address to listen on (anything but loopback needs --basic-auth)."),
        click.option("--port", type=int, default=5555, show_default=True, help="Port to listen on."),
        click.option("--basic-auth", "basic_auth", default=None, metavar="USER:PASSWORD",
                     help="Require this user and password (HTTP basic auth) on every page, API call and /metrics."),
        click.option("--read-only", is_flag=True, help="Show everything, allow no action."),
        click.option("-l", "--loglevel", default="INFO", show_default=True, help="DEBUG, INFO, WARNING, ERROR."),
    ]):
        fn = option(fn)
    return fn


def serve(app: Any, address: str, port: int, basic_auth: str | None, read_only: bool, loglevel: str) -> None:
    credentials = parse_basic_auth(basic_auth)
    if not _is_loopback(address) and credentials is None:
        raise click.UsageError(f"refusing to serve the dashboard on {address} without --basic-auth USER:PASSWORD "
                               "(anyone who reaches that address could purge queues and revoke tasks)")
    try:
        import uvicorn

        from .web import create_app
    except ImportError as exc:
        raise click.ClickException(f"{EXTRA_HINT} ({exc.name} is missing)") from None
    logging.basicConfig(level=loglevel.upper(), format="[%(asctime)s: %(levelname)s] %(message)s")
    web = create_app(app, basic_auth=credentials, read_only=read_only)
    auth = f"basic auth as {credentials[0]!r}" if credentials else "no authentication (loopback only)"
    click.echo(f"celeriac dashboard on http://{address}:{port}/ ({auth}{', read-only' if read_only else ''})")
    uvicorn.run(web, host=address, port=port, log_level=loglevel.lower(), access_log=loglevel.upper() == "DEBUG")


def register(main: click.Group, app_of: Any) -> None:
    """Add `dashboard` and its alias `flower` to the command group."""
    for name in ("dashboard", "flower"):
        @main.command(name=name, help="Serve the web dashboard, the HTTP API and Prometheus /metrics.")
        @options
        @click.pass_context
        def command(ctx: click.Context, address: str, port: int, basic_auth: str | None, read_only: bool,
                    loglevel: str) -> None:
            app = app_of(ctx)
            app.import_default_modules()
            serve(app, address, port, basic_auth, read_only, loglevel)
