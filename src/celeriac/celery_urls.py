"""Celery's spellings of broker and result URLs, read as the celeriac URLs that mean the same.

Celery (through kombu and SQLAlchemy) accepts URL forms that celeriac spells differently,
e.g. `db+sqlite:///results.db` for results or `redis+socket:///run/redis.sock` for a
broker. A project moving over keeps its URLs: each form is translated once, when the app
first uses its broker or result store, with a note in the log saying what it became.
A form that means something celeriac has no engine for is a one-line error.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl, urlencode

from .brokers.base import safe_url
from .exceptions import ImproperlyConfigured

logger = logging.getLogger("celeriac.app")

_POSTGRES_SCHEMES = ("postgresql", "postgres")


def broker_url(url: str) -> str:
    """celeriac's form of a Celery broker URL (unchanged when it is already one)."""
    scheme, rest = _split(url)
    if scheme == "librabbitmq":  # the C AMQP client Celery could use; the same RabbitMQ
        return _note("broker", url, "amqp://" + rest, "RabbitMQ through celeriac's AMQP client")
    if scheme == "redis+socket":
        return _note("broker", url, _unix(rest), "Redis over its Unix socket")
    if scheme.startswith("sqla+"):
        return _sqlalchemy("broker", url, scheme[len("sqla+"):], rest, "the embedded SQLite broker")
    return url


def backend_url(url: str) -> str:
    """celeriac's form of a Celery result backend URL (unchanged when it is already one)."""
    if url in ("django-db", "django-cache"):
        raise ImproperlyConfigured(
            f"result backend {url!r} is django-celery-results, a Celery extension celeriac does not read: leave "
            "CELERY_RESULT_BACKEND unset (results then go to the embedded SQLite file) or use redis://")
    scheme, rest = _split(url)
    if scheme in ("redis+socket", "socket"):
        return _note("result backend", url, _unix(rest), "the Redis result store over its Unix socket")
    if scheme.startswith("db+"):
        return _sqlalchemy("result backend", url, scheme[len("db+"):], rest, "celeriac's SQLite result store")
    if scheme in ("rpc", "amqp", "amqps", "pyamqp"):
        raise ImproperlyConfigured(
            f"result backend {safe_url(url)!r}: celeriac does not send results back over AMQP (rpc://). Leave "
            "result_backend unset (results then go to the embedded SQLite file) or use redis://")
    return url


def _sqlalchemy(what: str, url: str, dialect: str, rest: str, store: str) -> str:
    """Celery's SQLAlchemy URLs (`db+<dialect>[+driver]://`, `sqla+...`): SQLite maps to celeriac's
    own SQLite engine on the same file; the other databases have no engine here."""
    database = dialect.split("+", 1)[0]
    if database == "sqlite":
        target = "sqlite://" + rest
        return _note(what, url, target, f"{store} on the same file, in its own tables: Celery's tables "
                     "there are neither read nor written", level=logging.WARNING)
    if database in _POSTGRES_SCHEMES:  # psycopg missing: the transport's own error names celeriac[postgres]
        return _note(what, url, "postgresql://" + rest, "celeriac's PostgreSQL engine, in its own tables: "
                     "Celery's tables there are neither read nor written", level=logging.WARNING)
    raise ImproperlyConfigured(
        f"{what} {safe_url(url)!r}: celeriac has no {database} engine. Of Celery's SQLAlchemy URLs only "
        "db+sqlite:///path.db (and sqla+sqlite:///path.db for the broker) are read, as sqlite:///path.db")


def _unix(rest: str) -> str:
    """kombu's `redis+socket:///path?virtual_host=1` is celeriac's `unix:///path?db=1`."""
    path, _, query = rest.partition("?")
    params = [("db" if key == "virtual_host" else key, value) for key, value in parse_qsl(query)]
    return "unix://" + path + (f"?{urlencode(params)}" if params else "")


def _split(url: str) -> tuple[str, str]:
    scheme, sep, rest = url.partition("://")
    return (scheme.lower(), rest) if sep else ("", url)


def _note(what: str, url: str, target: str, meaning: str, level: int = logging.INFO) -> str:
    logger.log(level, "%s %s is Celery's spelling: using %s (%s)", what, safe_url(url), safe_url(target), meaning)
    return target
