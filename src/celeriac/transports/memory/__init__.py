"""In-process memory: one process's broker and results, for tests and eager use."""

from .. import Transport

TRANSPORT = Transport(
    schemes=("memory",),
    broker="celeriac.transports.memory.broker:MemoryBroker",
    results="celeriac.transports.memory.results:MemoryResultStore",
    async_broker="celeriac.aio.base:InlineBroker",
    async_results="celeriac.aio.base:PollingResultStore",
)
