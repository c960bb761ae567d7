"""The transports: one subpackage each (sqlite, redis, amqp, postgres, memory), found by looking.

A transport's `__init__.py` declares what it provides in one `TRANSPORT = Transport(...)`:
its URL schemes and, as "module:attribute" strings, its broker, result store, asyncio
clients and any optional extras. The strings are imported only when a URL asks for them,
so importing celeriac imports no client library (redis, pika, psycopg).

Everything above the transports asks this module, never a transport by name: adding a
transport is one new folder here and nothing else changes (docs/transports.md).
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field, replace
from typing import Any

from ..exceptions import ImproperlyConfigured


@dataclass(frozen=True)
class Transport:
    """What one transport provides; every implementation is a lazy "module:attribute" string."""

    schemes: tuple[str, ...]  # the first is the one error messages name
    broker: str | None = None  # "module:Class", a brokers.base.Broker taking (url, options)
    results: str | None = None  # a backends.base.ResultStore taking (url, **kwargs); None: keeps no results
    async_broker: str | None = None  # an aio.base.AsyncBroker taking the synchronous broker
    async_results: str | None = None  # an aio.base.AsyncResultStore taking the synchronous store
    # Optional extras, looked up by the app:
    transaction: str | None = None  # app.transaction(conn): a context manager (app, conn) enlisting publishes
    # (url) -> the URL the app keeps (SQLite: an absolute file path); idempotent, as the app may
    # settle a URL it settled before (the broker's, reused for the results)
    canonical_url: str | None = None
    settings: tuple[str, ...] = ()  # app settings copied into the options (unless set there), e.g. postgres_schema
    name: str = field(default="", compare=False)  # the subpackage's name, filled in by discovery

    def load(self, what: str) -> Any:
        """The object `what` ("broker", "results", ...) names, imported now."""
        target = getattr(self, what)
        if target is None:
            raise LookupError(f"the {self.name} transport provides no {what}")
        module_name, _, attr = target.partition(":")
        return getattr(importlib.import_module(module_name), attr)


_found: dict[str, Transport] | None = None


def discover() -> dict[str, Transport]:
    """Every transport under this package, by subpackage name (looked for once per process)."""
    global _found
    if _found is None:
        found = {}
        for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
            if not info.ispkg:
                continue
            module = importlib.import_module(f"{__name__}.{info.name}")
            declared = getattr(module, "TRANSPORT", None)
            if not isinstance(declared, Transport):
                raise ImproperlyConfigured(f"{module.__name__} declares no TRANSPORT = Transport(...): every "
                                           "package under celeriac.transports must say what it provides")
            found[info.name] = replace(declared, name=info.name)
        _found = found
    return _found


def forget() -> None:
    """Look again on the next call (for tests that add a transport package)."""
    global _found
    _found = None


def scheme_of(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def for_url(url: str) -> Transport | None:
    """The transport that serves the URL's scheme, if any."""
    scheme = scheme_of(url)
    for transport in discover().values():
        if scheme in transport.schemes:
            return transport
    return None


def schemes(what: str) -> list[str]:
    """Every scheme whose transport provides `what`, in discovery order."""
    return [s for t in discover().values() if getattr(t, what) is not None for s in t.schemes]


def implementation(url: str, what: str, description: str, hint: str = "") -> Any:
    """The class the URL's transport provides as `what`, imported now; a person-readable error
    naming the supported schemes when none does."""
    from ..brokers.base import safe_url

    transport = for_url(url)
    if transport is None or getattr(transport, what) is None:
        raise ImproperlyConfigured(
            f"unsupported {description} {safe_url(url)!r}: supported schemes are "
            + ", ".join(f"{s}://" for s in schemes(what)) + (f" ({hint})" if hint else ""))
    return transport.load(what)


__all__ = ["Transport", "discover", "for_url", "forget", "implementation", "scheme_of", "schemes"]
