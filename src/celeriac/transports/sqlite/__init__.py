"""SQLite: one file holds the queues, the results and the workers' state (docs/sqlite.md)."""

from .. import Transport

TRANSPORT = Transport(
    schemes=("sqlite",),
    broker="celeriac.transports.sqlite.broker:SQLiteBroker",
    results="celeriac.transports.sqlite.results:SQLiteResultStore",
    async_broker="celeriac.transports.sqlite.aio:AsyncSQLiteBroker",
    async_results="celeriac.transports.sqlite.aio:AsyncSQLiteResultStore",
    canonical_url="celeriac.transports.sqlite.urls:absolute_url",
)
