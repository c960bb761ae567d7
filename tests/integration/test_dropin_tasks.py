"""Task options Celery 5 users rely on, on a real worker and every broker: result_extended,
pydantic=True, AbortableTask, allow_join_result, throws, add_to_parent."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from celeriac import Celeriac
from helpers import wait_until


@pytest.fixture
def dropin(app_env: dict[str, str]) -> Iterator[Any]:
    import dropin_app
    dropin_app.app._reset_connections()
    yield dropin_app
    dropin_app.app._reset_connections()


@pytest.fixture
def other_client(urls: tuple[str, str]) -> Iterator[Celeriac]:
    """A second client that shares nothing with the first but the store: reads come from the store."""
    client = Celeriac("other_client", broker=urls[0], backend=urls[1], set_as_current=False)
    yield client
    client.close()


def test_result_extended_fields_read_by_any_client(dropin: Any, start_worker: Any, other_client: Celeriac) -> None:
    start_worker("-c", "1", app="dropin_app")
    sent = dropin.plus.apply_async((2, 3), queue="celery")
    assert sent.get(timeout=20) == 5
    result = other_client.AsyncResult(sent.id)
    assert result.name == "dropin_app.plus"
    assert result.args == [2, 3] and result.kwargs == {}
    assert result.worker is not None and result.worker.startswith("celeriac@")
    assert result.retries == 0 and result.queue == "celery"
    assert result.date_started is not None and result.date_done is not None
    assert result.date_started <= result.date_done
    retried = dropin.retry_once.delay()
    assert retried.get(timeout=20) == "retried"
    assert other_client.AsyncResult(retried.id).retries == 1


def test_pydantic_arguments_validated_and_model_returned_as_dict(dropin: Any, start_worker: Any) -> None:
    start_worker("-c", "1", app="dropin_app")
    assert dropin.charge.delay({"id": 7, "amount": "12.5"}).get(timeout=20) == {"order_id": 7, "total": 12.5}
    with_coupon = dropin.charge.delay({"id": 7, "amount": 10}, coupon={"id": 1, "amount": 2.5})
    assert with_coupon.get(timeout=20) == {"order_id": 7, "total": 7.5}
    assert dropin.charge_async.delay({"id": 3, "amount": 1}).get(timeout=20) == {"order_id": 3, "total": 1.0}


def test_pydantic_invalid_input_is_failure_with_validation_error(dropin: Any, start_worker: Any) -> None:
    worker = start_worker("-c", "1", app="dropin_app")
    result = dropin.charge.delay({"id": "not a number", "amount": 1})
    with pytest.raises(Exception) as raised:
        result.get(timeout=20)
    assert type(raised.value).__name__ == "ValidationError"
    assert result.state == "FAILURE"
    assert "ValidationError" in (result.traceback or "") and "id" in (result.traceback or "")
    worker.wait_for(r"raised unexpected: 1 validation error for Order")


def test_abortable_task_stops_when_any_client_aborts(dropin: Any, start_worker: Any, other_client: Celeriac,
                                                     tmp_path: Path) -> None:
    from celeriac.contrib.abortable import ABORTED, AbortableAsyncResult
    start_worker("-c", "1", app="dropin_app")
    marker = tmp_path / "abortable"
    result = dropin.abortable_loop.delay(str(marker))
    assert isinstance(result, AbortableAsyncResult) and not result.is_aborted()
    wait_until(lambda: marker.exists(), 20, message="the task to start")
    AbortableAsyncResult(result.id, app=other_client).abort()
    assert result.state in (ABORTED, "SUCCESS")
    assert result.get(timeout=20) == "aborted"
    assert result.state == "SUCCESS" and not result.is_aborted()  # the task's own end is the final state


def test_abort_before_the_task_starts(dropin: Any, start_worker: Any, tmp_path: Path) -> None:
    marker = tmp_path / "early"
    result = dropin.abortable_loop.delay(str(marker))
    result.abort()
    assert result.is_aborted()
    start_worker("-c", "1", app="dropin_app")
    assert result.get(timeout=20) == "aborted"
    assert marker.read_text() == "started\n"


def test_allow_join_result_add_to_parent_and_throws(dropin: Any, start_worker: Any) -> None:
    worker = start_worker("-c", "1", app="dropin_app")
    start_worker("-c", "1", "-Q", "side", app="dropin_app")
    assert dropin.joins.delay().get(timeout=30) == 42
    attached, detached = dropin.spawn.delay(), dropin.spawn_detached.delay()
    attached.get(timeout=20)
    detached.get(timeout=20)
    assert [c.id for c in attached.children] == [attached.result]
    assert detached.children == []
    expected = dropin.expected_failure.delay()
    with pytest.raises(KeyError):
        expected.get(timeout=20)
    worker.wait_for(r"INFO/.*Task dropin_app.expected_failure\[.*\] raised expected: KeyError")
    lines = worker.output.splitlines()
    at = next(i for i, line in enumerate(lines) if "raised expected" in line)
    assert not any("Traceback" in line for line in lines[at:at + 3])  # one line, no traceback
    assert "expected_failure" not in "".join(line for line in lines if "ERROR" in line)
