"""The parent/child shapes a traced celeriac workflow must have, checked on span records
(`otel_app.span_record`): used by the in-process unit tests and the real-worker tests alike."""

from __future__ import annotations

from typing import Any

Record = dict[str, Any]


class Spans:
    def __init__(self, records: list[Record]) -> None:
        self.records = sorted(records, key=lambda r: r["start"])

    def of(self, task_id: str, kind: str) -> list[Record]:
        """The spans of one task id (a retried task has several), oldest first."""
        return [r for r in self.records if r["kind"] == kind and r["attributes"].get("messaging.message.id") == task_id]

    def publish(self, task_id: str, nth: int = 0) -> Record:
        found = self.of(task_id, "PRODUCER")
        assert len(found) > nth, f"no publish span #{nth} for task {task_id}: {self.names()}"
        return found[nth]

    def run(self, task_id: str, nth: int = 0) -> Record:
        found = self.of(task_id, "CONSUMER")
        assert len(found) > nth, f"no run span #{nth} for task {task_id}: {self.names()}"
        return found[nth]

    def has(self, task_id: str, publishes: int = 1, runs: int = 1) -> bool:
        return len(self.of(task_id, "PRODUCER")) >= publishes and len(self.of(task_id, "CONSUMER")) >= runs

    def names(self) -> list[str]:
        return [f"{r['name']}[{r['attributes'].get('messaging.message.id')}]" for r in self.records]


def assert_child(child: Record, parent: Record) -> None:
    assert child["trace_id"] == parent["trace_id"], f"{child['name']} is in another trace than {parent['name']}"
    assert child["parent_id"] == parent["span_id"], (
        f"{child['name']} has parent {child['parent_id']}, not {parent['name']} ({parent['span_id']})")


def check_call(spans: Spans, task_id: str, name: str, parent: Record | None = None,
               state: str = "SUCCESS") -> tuple[Record, Record]:
    """One publish and its run: names, kinds, Celery's attribute names, run child of publish."""
    publish, run = spans.publish(task_id), spans.run(task_id)
    assert publish["name"] == f"apply_async/{name}" and run["name"] == f"run/{name}"
    assert publish["attributes"]["celery.action"] == "apply_async"
    assert publish["attributes"]["celery.task_name"] == name
    assert publish["attributes"]["messaging.destination"] == "celery"
    attrs = run["attributes"]
    assert attrs["celery.action"] == "run" and attrs["celery.task_name"] == name
    assert attrs["celery.state"] == state
    assert attrs["messaging.destination"] == "celery"
    assert attrs["messaging.conversation_id"] == task_id
    assert attrs["celery.hostname"]
    assert_child(run, publish)
    if parent is not None:
        assert_child(publish, parent)
    return publish, run


def check_chain(spans: Spans, ids: list[str], name: str, client: Record | None = None) -> None:
    """Each step's publish is a child of the run of the step before it."""
    parent = client
    for task_id in ids:
        _, run = check_call(spans, task_id, name, parent)
        parent = run
    assert len({spans.run(i)["trace_id"] for i in ids}) == 1


def check_group(spans: Spans, ids: list[str], name: str, client: Record) -> None:
    for task_id in ids:
        check_call(spans, task_id, name, client)


def check_chord(spans: Spans, header_ids: list[str], body_id: str, header_name: str, body_name: str,
                client: Record) -> None:
    """The body is published by the header run that completed the chord: a child of that run."""
    runs = [check_call(spans, task_id, header_name, client)[1] for task_id in header_ids]
    body_publish, _ = check_call(spans, body_id, body_name)
    assert body_publish["parent_id"] in {r["span_id"] for r in runs}, (
        f"the chord body's publish is not a child of any header run: {spans.names()}")
    assert body_publish["trace_id"] == client["trace_id"]


def check_retry(spans: Spans, task_id: str, name: str) -> None:
    """First run RETRY with its reason; the retry is published from that run; the second run
    is a child of that publish and succeeds; retries are counted on both."""
    first_publish, first_run = check_call(spans, task_id, name, state="RETRY")
    assert "first attempt fails" in first_run["attributes"]["celery.retry.reason"]
    retry_publish, second_run = spans.publish(task_id, 1), spans.run(task_id, 1)
    assert_child(retry_publish, first_run)
    assert_child(second_run, retry_publish)
    assert retry_publish["attributes"]["celery.retries"] == 1
    assert second_run["attributes"]["celery.retries"] == 1
    assert second_run["attributes"]["celery.state"] == "SUCCESS"
    assert "celery.retries" not in first_run["attributes"]
    assert first_run["status"] != "ERROR" and second_run["status"] != "ERROR"


def check_failure(spans: Spans, task_id: str, name: str, message: str) -> None:
    _, run = check_call(spans, task_id, name, state="FAILURE")
    assert run["status"] == "ERROR"
    assert run["description"] == f"ValueError: {message}"
    events = [e for e in run["events"] if e["name"] == "exception"]
    assert len(events) == 1
    assert events[0]["attributes"]["exception.type"] == "ValueError"
    assert events[0]["attributes"]["exception.message"] == message
