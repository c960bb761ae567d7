"""Redis: one server, a Cluster or Sentinel-managed replicas (docs/redis.md, docs/redis-topologies.md)."""

from .. import Transport

TRANSPORT = Transport(
    schemes=("redis", "rediss", "unix", "redis+cluster", "rediss+cluster", "sentinel"),
    broker="celeriac.transports.redis.broker:RedisBroker",
    results="celeriac.transports.redis.results:RedisResultStore",
    async_broker="celeriac.transports.redis.aio:AsyncRedisBroker",
    async_results="celeriac.transports.redis.aio:AsyncRedisResultStore",
)
