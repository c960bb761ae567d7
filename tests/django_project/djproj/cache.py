"""A local-memory cache that counts how often it was closed (in this process)."""

from django.core.cache.backends.locmem import LocMemCache


class CountingCache(LocMemCache):
    closed = 0

    def close(self, **kwargs):
        CountingCache.closed += 1
        super().close(**kwargs)
