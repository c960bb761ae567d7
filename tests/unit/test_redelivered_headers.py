"""A message built again from a delivered one carries the task's headers, never the trip's (issue 20)."""

from __future__ import annotations

import pytest

from celeriac import Celeriac, protocol
from celeriac.exceptions import Retry
from celeriac.task import Context


def _retry_headers(request_headers: dict[str, object]) -> dict[str, object]:
    app = Celeriac("redelivery", broker="memory://", backend="memory://")

    @app.task(bind=True)
    def job(self: object) -> None: ...

    request = Context(id="t1", task=job.name, args=(), kwargs={}, retries=1, headers=request_headers,
                      delivery_info={"routing_key": "celery", "priority": 0})
    outgoing = app.retry_message(job, request, Retry(when=1.0))
    return protocol.unpack(outgoing.payload).headers


def test_a_retry_keeps_the_users_headers_but_not_the_rate_limit_reservation() -> None:
    headers = _retry_headers({"tenant": "acme", protocol.RATE_RESERVED_HEADER: 1, "task": "spoofed"})
    assert headers["tenant"] == "acme"
    assert protocol.RATE_RESERVED_HEADER not in headers  # the retry is limited again
    assert headers["task"] != "spoofed" and headers["retries"] == 2


def test_amqp_deliveries_drop_rabbitmqs_dead_letter_history() -> None:
    pytest.importorskip("pika")
    from celeriac.transports.amqp.broker import _task_headers
    trip = {"x-death": [{"queue": "celeriac.delay.1", "reason": "expired"}],
            "x-first-death-queue": "celeriac.delay.1", "x-first-death-reason": "expired",
            "x-first-death-exchange": "celeriac.delay.1", "x-last-death-queue": "celeriac.delay.0",
            "x-celeriac-redeliveries": 2, "id": "t1", "task": "job", "tenant": "acme"}
    assert _task_headers(trip) == {"id": "t1", "task": "job", "tenant": "acme"}
    assert _task_headers(None) == {}
