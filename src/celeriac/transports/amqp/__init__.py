"""RabbitMQ over AMQP 0-9-1 (docs/rabbitmq.md); it keeps no results: a result backend does."""

from .. import Transport

TRANSPORT = Transport(
    schemes=("amqp", "amqps", "pyamqp"),
    broker="celeriac.transports.amqp.broker:AMQPBroker",
    async_broker="celeriac.transports.amqp.aio:AsyncAMQPBroker",
)
