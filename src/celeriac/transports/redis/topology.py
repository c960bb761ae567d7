"""Redis Cluster and Redis Sentinel: their URLs, their clients, and hash slots.

- `redis+cluster://[user:password@]host:port[;host2:port2...]` (`rediss+cluster://` for TLS):
  any nodes of the cluster; the client learns the rest (redis-py's RedisCluster).
- `sentinel://[:password@]host:26379[/db][;sentinel://host2:26380...]`, Celery's spelling,
  with `master_name` in the transport options: the sentinels are asked where the master is,
  on every new connection, so clients and workers follow a failover without a restart
  (redis-py's Sentinel). The URL's password is the master's; `sentinel_kwargs` (e.g.
  {"password": ...}) are for the sentinels themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypeVar
from urllib.parse import unquote, urlsplit

from ...exceptions import ImproperlyConfigured

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SENTINEL_SCHEMES = ("sentinel",)

T = TypeVar("T")


def scheme_of(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def is_cluster_url(url: str) -> bool:
    return scheme_of(url) in CLUSTER_SCHEMES


def is_sentinel_url(url: str) -> bool:
    return scheme_of(url) in SENTINEL_SCHEMES


@dataclass
class Nodes:
    hosts: list[tuple[str, int]]
    username: str | None
    password: str | None
    db: int
    tls: bool


def parse_nodes(url: str, default_port: int) -> Nodes:
    """The hosts of a `;`-separated URL (each part with or without its own scheme), and the
    credentials and database given in any of them. Raises ValueError for a malformed one."""
    scheme = scheme_of(url)
    hosts: list[tuple[str, int]] = []
    username = password = None
    db = 0
    for part in (p.strip() for p in url.split(";")):
        if not part:
            continue
        parsed = urlsplit(part if "://" in part else f"{scheme}://{part}")
        if not parsed.hostname:
            raise ValueError(f"no host in {part.split('@')[-1]!r}")
        hosts.append((parsed.hostname, parsed.port or default_port))
        username = username or (unquote(parsed.username) if parsed.username else None)
        password = password or (unquote(parsed.password) if parsed.password else None)
        path = parsed.path.strip("/")
        if path:
            db = int(path)
    if not hosts:
        raise ValueError("no host given")
    return Nodes(hosts, username, password, db, scheme.startswith("rediss"))


def cluster_client(url: str, kwargs: dict[str, Any]) -> Any:
    from redis.cluster import ClusterNode, RedisCluster
    nodes = parse_nodes(url, 6379)
    if nodes.db:
        raise ValueError("Redis Cluster has only database 0")
    startup = [ClusterNode(h, p) for h, p in nodes.hosts]  # type: ignore[no-untyped-call, unused-ignore]
    return RedisCluster(startup_nodes=startup, username=nodes.username, password=nodes.password, ssl=nodes.tls,
                        **kwargs)


def sentinel_settings(url: str, options: dict[str, Any], kwargs: dict[str, Any]) -> tuple[Nodes, dict[str, Any], str]:
    """(the sentinels and the master's credentials, the sentinels' own client options, the master's name)."""
    master = options.get("master_name")
    if not master:
        raise ImproperlyConfigured(
            "a sentinel:// URL needs the name of the master the sentinels watch: "
            "broker_transport_options = {'master_name': 'mymaster'} (and "
            "result_backend_transport_options for a sentinel:// result_backend)")
    nodes = parse_nodes(url, 26379)
    own = dict(options.get("sentinel_kwargs") or {})
    for name in ("socket_connect_timeout", "socket_timeout", "socket_keepalive", "retry"):  # the sentinels' links too
        if name in kwargs:
            own.setdefault(name, kwargs[name])
    return nodes, own, str(master)


def sentinel_client(url: str, options: dict[str, Any], kwargs: dict[str, Any]) -> Any:
    import redis
    from redis.sentinel import Sentinel
    nodes, own, master = sentinel_settings(url, options, kwargs)
    sentinel = Sentinel(nodes.hosts, sentinel_kwargs=own, username=nodes.username,  # type: ignore[no-untyped-call, unused-ignore]
                        password=nodes.password, db=nodes.db, **kwargs)
    return sentinel.master_for(master, redis_class=redis.Redis)  # type: ignore[no-untyped-call, unused-ignore]


def is_cluster(client: Any) -> bool:
    try:
        from redis.cluster import RedisCluster
    except ImportError:  # pragma: no cover - only without the redis extra
        return False
    return isinstance(client, RedisCluster)


def slot_of(key: str) -> int:
    from redis.crc import key_slot
    return int(key_slot(key.encode()))


def slot_groups(client: Any, items: Sequence[T], key_of: Callable[[T], str]) -> list[list[T]]:
    """`items` split so that each group's keys are in one hash slot: one group on a single
    server (one script call does all), one per slot on a cluster; order kept within a group."""
    if not is_cluster(client):
        return [list(items)] if items else []
    groups: dict[int, list[T]] = {}
    for item in items:
        groups.setdefault(slot_of(key_of(item)), []).append(item)
    return list(groups.values())
