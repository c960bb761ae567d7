"""Facts about a worker for `inspect stats / conf / report / memsample`, shaped as Celery's.

Nothing here shows a password: URLs go through `safe_url`, and settings whose name says
they hold a secret are masked (as Celery's `conf` does).
"""

from __future__ import annotations

import json
import os
import platform
import re
import sys
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from ..brokers.base import safe_url
from ..config import DEFAULTS

if TYPE_CHECKING:
    from ..app import Celeriac

_SECRET_KEY = re.compile(r"API|TOKEN|KEY|SECRET|PASS|SIGNATURE|DATABASE", re.IGNORECASE)
_MASK = "********"


def broker_info(url: str, transport_options: Any) -> dict[str, Any]:
    """Celery's `stats()["broker"]` keys for a broker URL (never its password)."""
    parts = urlsplit(url)
    scheme = parts.scheme or "sqlite"
    sqlite = scheme == "sqlite"
    try:
        port = parts.port
    except ValueError:
        port = None
    vhost = unquote(parts.path[1:]) if parts.path.startswith("/") else parts.path
    return {
        "transport": {"amqps": "amqp", "rediss": "redis", "postgres": "postgresql"}.get(scheme, scheme),
        "hostname": None if sqlite else parts.hostname, "port": port,
        "userid": None if sqlite else (unquote(parts.username) if parts.username else None),
        "virtual_host": vhost or ("/" if scheme.startswith("amqp") else None),  # SQLite: the file
        "ssl": scheme in ("amqps", "rediss"), "insist": False, "connect_timeout": None, "heartbeat": None,
        "login_method": None, "uri_prefix": None, "failover_strategy": None, "alternates": [],
        "transport_options": censor(dict(transport_options or {})), "url": safe_url(url),
    }


def censor(value: Any, key: str = "") -> Any:
    """A setting's value as it may be shown: secrets masked, URLs without passwords, JSON only."""
    if key and _SECRET_KEY.search(key) and value not in (None, "", {}, []):
        return _MASK
    if isinstance(value, dict):
        return {str(k): censor(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [censor(v) for v in value]
    if isinstance(value, str):
        return safe_url(value) if "://" in value else value
    if value is None or isinstance(value, (bool, int, float)):
        return value
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)


def conf_table(app: "Celeriac", with_defaults: bool = False) -> dict[str, Any]:
    """The app's settings (those changed from the defaults, or all with with_defaults=True)."""
    table: dict[str, Any] = {}
    for key in sorted(app.conf):
        value = app.conf[key]
        if not isinstance(key, str) or key.startswith("__"):
            continue
        if with_defaults or key not in DEFAULTS or DEFAULTS[key] != value:
            table[key] = censor(value, key if key not in ("broker_url", "result_backend") else "")
    return table


def version() -> str:
    from .. import __version__
    return str(__version__)


def report(app: "Celeriac", pool: str, concurrency: int) -> str:
    """The text of `inspect report`: what a bug report needs (Celery's bugreport)."""
    lines = [
        f"software -> celeriac:{version()} python:{platform.python_version()} "
        f"({platform.python_implementation()})",
        f"platform -> system:{platform.system()} arch:{platform.machine()} kernel version:{platform.release()}",
        f"loader -> {type(app).__module__}.{type(app).__name__} main:{getattr(app, 'main', None)}",
        f"broker -> {app.broker.safe_url}", f"results -> {app.backend.safe_url}",
        f"pool -> {pool} concurrency:{concurrency}", "",
    ]
    lines += [f"{key}: {json.dumps(value, default=repr)}" for key, value in conf_table(app).items()]
    return "\n".join(lines)


def rusage() -> dict[str, float] | str:
    try:
        import resource
    except ImportError:
        return "N/A"
    usage = resource.getrusage(resource.RUSAGE_SELF)
    fields = ("utime", "stime", "maxrss", "ixrss", "idrss", "isrss", "minflt", "majflt", "nswap", "inblock",
              "oublock", "msgsnd", "msgrcv", "nsignals", "nvcsw", "nivcsw")
    return {name: getattr(usage, f"ru_{name}") for name in fields}


def resident_bytes(pid: int) -> int | None:
    """Resident memory of a process now (Linux /proc; None where it cannot be read)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        if pid == os.getpid() and sys.platform != "win32":
            import resource
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            return int(peak if sys.platform == "darwin" else peak * 1024)
        return None


def human_bytes(n: int | None) -> str:
    if n is None:
        return "N/A"
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.2f}{unit}" if unit != "B" else f"{int(value)}B"
        value /= 1024
    return f"{value:.2f}GB"
