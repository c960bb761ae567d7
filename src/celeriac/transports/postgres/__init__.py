"""PostgreSQL: queues and results in the application's database (docs/postgresql.md)."""

from .. import Transport

TRANSPORT = Transport(
    schemes=("postgresql", "postgres"),
    broker="celeriac.transports.postgres.broker:PostgresBroker",
    results="celeriac.transports.postgres.results:PostgresResultStore",
    async_broker="celeriac.transports.postgres.aio:AsyncPostgresBroker",
    async_results="celeriac.transports.postgres.aio:AsyncPostgresResultStore",
    transaction="celeriac.transports.postgres.enqueue:transaction",
    settings=("postgres_schema",),
)
