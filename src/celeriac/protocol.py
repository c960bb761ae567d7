"""The task message (Celery's protocol v2 layout) and the serializers.

A message is headers + properties + a body ``[args, kwargs, embed]``. Brokers store and
move it as bytes made by :func:`pack`; nothing outside this module knows that layout.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import decimal
import json
import operator
import os
import pickle
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from .exceptions import ContentDisallowed, DecodeError, EncodeError

JSON = "application/json"
PICKLE = "application/x-python-serialize"

_ALIASES = {"json": JSON, "pickle": PICKLE, JSON: JSON, PICKLE: PICKLE}


def content_type_for(name: str) -> str:
    try:
        return _ALIASES[name]
    except KeyError:
        raise EncodeError(f"unknown serializer {name!r}; supported: json, pickle") from None


class _JSONEncoder(json.JSONEncoder):
    # The same extra types Celery users can send with kombu's json: datetimes as ISO
    # strings, UUIDs and decimals as strings, bytes as base64 text.
    def default(self, o: Any) -> Any:
        if isinstance(o, (dt.datetime, dt.date, dt.time)):
            return o.isoformat()
        if isinstance(o, uuid.UUID):
            return str(o)
        if isinstance(o, decimal.Decimal):
            return str(o)
        if isinstance(o, (bytes, bytearray, memoryview)):
            return base64.b64encode(bytes(o)).decode("ascii")
        if isinstance(o, (set, frozenset)):
            return list(o)
        return super().default(o)


_json_encoder = _JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_json_decoder = json.JSONDecoder()


def _make_fast_encoder() -> Callable[[Any], str]:
    """The same output as `_json_encoder.encode`, from one C encoder made once: `encode`
    builds a new one on every call, a third of the cost of encoding a small message. It
    keeps no circular-reference markers (so it can be shared by threads): a circular
    structure fails as a RecursionError instead, which `dumps` reports as an EncodeError."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # a Python without the C accelerator
        return _json_encoder.encode
    chunks = make(None, _json_encoder.default, json.encoder.encode_basestring, None, ":", ",", False, False, True)

    def encode(obj: Any) -> str:
        return "".join(chunks(obj, 0))
    return encode


_json_text = _make_fast_encoder()


def _json_dumps(obj: Any) -> bytes:
    return _json_text(obj).encode("utf-8")


# The variant nibble of an RFC 9562 UUID (binary 10xx), from any random hex digit.
_VARIANT = {d: "89ab"[int(d, 16) & 3] for d in "0123456789abcdef"}


def new_ids(count: int) -> list[str]:
    """`count` new task ids: time-ordered UUIDs (RFC 9562 version 7) as text.

    Why time-ordered: every store keeps an index on the task id (results, the task history,
    PostgreSQL's tables), and random ids (version 4, Celery's) make each insert land on a
    random page of it, so a batch of a thousand results dirties most of the index's pages;
    ids that grow with time are inserted at its right edge, a few pages per batch (the
    SQLite history's write cost halves). The first 48 bits are the Unix time in ms, the next
    12 a fraction of that ms (RFC 9562's method 3), counted up by one per id of the call so
    that a group's members stay in order; 62 random bits (one os.urandom call for all) keep
    ids unique across processes and machines. The id shows when the call was made."""
    if count <= 0:
        return []
    start = time.time_ns() * 4096 // 1_000_000  # in 1/4096 ms
    raw = os.urandom(8 * count).hex()
    variant = _VARIANT
    ids = []
    for i in range(count):
        stamp = f"{start + i:015x}"  # 60 bits: 48 of ms, 12 of its fraction
        r = raw[16 * i:16 * i + 16]
        ids.append(f"{stamp[:8]}-{stamp[8:12]}-7{stamp[12:15]}-{variant[r[0]]}{r[1:4]}-{r[4:16]}")
    return ids


def delivery_tags(count: int) -> list[str]:
    """`count` distinct delivery tags for kombu envelopes. kombu only compares a tag (it keys a
    Celery worker's unacked hash), so a tag need not be a UUID: 96 random bits shared by the
    call, then a counter - unique across processes, at a tenth of new_ids' cost per tag."""
    prefix = os.urandom(12).hex() + "-"
    return [f"{prefix}{i:x}" for i in range(count)]


def new_id() -> str:
    """One new task id (a time-ordered version 7 UUID as text; see `new_ids`)."""
    return new_ids(1)[0]


def _json_loads(data: bytes) -> Any:
    return _json_decoder.decode(data.decode("utf-8") if isinstance(data, (bytes, bytearray, memoryview)) else data)


_DUMPERS: dict[str, Callable[[Any], bytes]] = {
    JSON: _json_dumps,
    PICKLE: lambda obj: pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL),
}
_LOADERS: dict[str, Callable[[bytes], Any]] = {JSON: _json_loads, PICKLE: pickle.loads}


def dumps(obj: Any, serializer: str = "json") -> tuple[str, bytes]:
    """Serialize ``obj``; returns (content_type, data). Raises EncodeError with the reason."""
    ctype = content_type_for(serializer)
    try:
        return ctype, _DUMPERS[ctype](obj)
    except EncodeError:
        raise
    except Exception as exc:  # the serializer's own error says what could not be encoded
        raise EncodeError(f"cannot serialize with {serializer}: {exc}") from exc


def accepted_types(accept: Iterable[str]) -> frozenset[str]:
    return frozenset(content_type_for(a) for a in accept)


def loads(data: bytes, content_type: str, accept: frozenset[str]) -> Any:
    if content_type not in accept:
        raise ContentDisallowed(
            f"refusing to deserialize content of type {content_type!r}: not in accept_content "
            f"({', '.join(sorted(accept))})")
    loader = _LOADERS.get(content_type)
    if loader is None:
        raise DecodeError(f"no serializer for content type {content_type!r}")
    try:
        return loader(data)
    except Exception as exc:
        raise DecodeError(f"cannot decode {content_type} body: {exc}") from exc


CORE_HEADERS = frozenset({
    "lang", "task", "id", "shadow", "eta", "expires", "group", "group_index", "retries", "timelimit",
    "root_id", "parent_id", "argsrepr", "kwargsrepr", "origin", "ignore_result"})

# Set on one delivery of a message (a rate-limit slot already reserved for it), never part of
# the task: a message built from a running task's request - a retry - must not inherit it, or
# the retry would skip its own rate limit.
RATE_RESERVED_HEADER = "celeriac_rate_reserved"
# When the message was sent (epoch seconds): the age of a queue's oldest waiting message is
# read from it. Every message gets its own; a retry is sent anew, a deferral keeps it.
SENT_HEADER = "celeriac_sent"
_NOT_INHERITED = CORE_HEADERS | {RATE_RESERVED_HEADER, SENT_HEADER}


@dataclass(slots=True)
class TaskMessage:
    """One task message: protocol v2 headers, AMQP-style properties and the encoded body."""

    headers: dict[str, Any]
    properties: dict[str, Any]
    body: bytes
    content_type: str = JSON
    content_encoding: str = "utf-8"
    # `headers` as JSON text, as pack() or a MessageTemplate last wrote them into the packed
    # form (kombu_envelope reuses it, so the envelope says what the payload says).
    headers_json: str | None = field(default=None, compare=False, repr=False)

    @property
    def task_id(self) -> str:
        return str(self.headers.get("id"))

    @property
    def task_name(self) -> str:
        return str(self.headers.get("task"))


def build_task_message(
    task_id: str, name: str, args: Any, kwargs: Any, *,
    serializer: str = "json", eta: str | None = None, expires: str | None = None,
    retries: int = 0, root_id: str | None = None, parent_id: str | None = None,
    group_id: str | None = None, group_index: int | None = None, origin: str | None = None,
    timelimit: tuple[float | None, float | None] = (None, None),
    ignore_result: bool = False, callbacks: Any = None, errbacks: Any = None,
    chain: Any = None, chord: Any = None, priority: int = 0, queue: str = "celery",
    reply_to: str | None = None, extra_headers: dict[str, Any] | None = None,
    shadow: str | None = None,
) -> TaskMessage:
    """Encode a task call; raises EncodeError (and so enqueues nothing) if it cannot."""
    args = tuple(args) if args else ()
    kwargs = dict(kwargs) if kwargs else {}
    embed = {"callbacks": callbacks, "errbacks": errbacks, "chain": chain, "chord": chord}
    if serializer == "json" or serializer == JSON:  # the default, without the lookups of dumps()
        ctype = JSON
        try:
            body = _json_text([args, kwargs, embed]).encode("utf-8")
        except Exception as exc:
            raise EncodeError(f"cannot serialize with {serializer}: {exc}") from exc
    else:
        ctype, body = dumps([args, kwargs, embed], serializer)
    headers: dict[str, Any] = {
        "lang": "py", "task": name, "id": task_id, "shadow": shadow, "eta": eta,
        "expires": expires, "group": group_id, "group_index": group_index, "retries": retries,
        "timelimit": list(timelimit), "root_id": root_id or task_id, "parent_id": parent_id,
        "argsrepr": _saferepr(args), "kwargsrepr": _saferepr(kwargs), "origin": origin,
        "ignore_result": ignore_result, SENT_HEADER: round(time.time(), 3),
    }
    if extra_headers:  # the user's own headers ride along; the protocol's own keys are not theirs to change
        headers.update({k: v for k, v in extra_headers.items() if k not in _NOT_INHERITED})
    properties = {
        "correlation_id": task_id, "reply_to": reply_to, "delivery_mode": 2, "priority": priority,
        "delivery_info": {"exchange": "", "routing_key": queue}, "body_encoding": "utf-8",
    }
    return TaskMessage(headers, properties, body, ctype)


def _saferepr(obj: Any, limit: int = 1024) -> str:
    try:
        text = repr(obj)
    except Exception:  # a broken __repr__ must not stop the call
        text = f"<unrepresentable {type(obj).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


saferepr = _saferepr  # the argsrepr / kwargsrepr of a call (canvas/bulk.py builds many)
json_text = _json_text  # JSON text as every message body and envelope is written


def decode_body(msg: TaskMessage, accept: frozenset[str]) -> tuple[tuple[Any, ...], dict[str, Any], dict[str, Any]]:
    """Return (args, kwargs, embed); DecodeError/ContentDisallowed for bad bodies."""
    body = loads(msg.body, msg.content_type, accept)
    if not isinstance(body, (list, tuple)) or len(body) != 3:
        raise DecodeError("task body is not [args, kwargs, embed]")
    args, kwargs, embed = body
    if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict):
        raise DecodeError("task body args must be a list and kwargs an object")
    return tuple(args), kwargs, embed or {}


# --- the storage form used by the brokers that keep raw bytes (memory, sqlite, redis) ---
# One JSON line of metadata, a newline, then the body bytes untouched: the body is
# never re-encoded, and json.dumps never emits a raw newline.

def pack(msg: TaskMessage) -> bytes:
    # The headers' JSON is kept on the message: kombu's envelope for the same message (Redis
    # queues shared with Celery) holds the same text, made once.
    msg.headers_json = headers = _json_text(msg.headers)
    meta = f"[{headers},{_json_text(msg.properties)},{_json_text_of_str(msg.content_type)}," \
           f"{_json_text_of_str(msg.content_encoding)}]"
    return meta.encode("utf-8") + b"\n" + msg.body


def _json_text_of_str(value: Any) -> str:
    """A content type or encoding as JSON (they are strings: the C function, not the encoder)."""
    return encode_string(value) if type(value) is str else _json_text(value)


def unpack(data: bytes) -> TaskMessage:
    raw = bytes(data)
    if raw[:1] == b"{":  # a Celery client's message, taken from kombu's Redis list (see kombu_envelope)
        return _from_kombu(raw)
    try:
        meta, _, body = raw.partition(b"\n")
        headers, properties, ctype, cenc = _json_loads(meta)
        if not isinstance(headers, dict) or "task" not in headers or "id" not in headers:
            raise ValueError("headers lack 'task' or 'id'")
    except Exception as exc:
        raise DecodeError(f"malformed message envelope: {exc}") from exc
    return TaskMessage(headers, properties or {}, body, ctype, cenc)


def sent_at(data: bytes) -> float | None:
    """When a packed message was sent (its SENT_HEADER), or None (a Celery client's message,
    an older celeriac's, or not a message at all)."""
    try:
        value = unpack(data).headers.get(SENT_HEADER)
    except DecodeError:
        return None
    return float(value) if isinstance(value, (int, float)) else None


def priority_of(data: bytes) -> int:
    """The priority (0-9) a packed message was sent with, for putting it back where it was (a
    requeued dead letter); 0 for bytes that are not a message or carry no priority."""
    try:
        value = unpack(data).properties.get("priority")
    except DecodeError:
        return 0
    return max(0, min(9, value)) if type(value) is int else 0


# --- kombu's Redis envelope: how Celery's clients and workers store a message in a Redis list ---
# One JSON object: the body as base64 text, its content type and encoding, the protocol v2
# headers, and AMQP-like properties (kombu adds a delivery_tag, which its own workers use as
# the key of their unacked hash).

def kombu_envelope(msg: TaskMessage, queue: str, priority: int, *, headers: dict[str, Any] | None = None,
                   delivery_tag: str | None = None) -> bytes:
    """The message as a Celery worker reads it from kombu's list for `queue` (`headers`:
    instead of the message's own; `delivery_tag`: a fresh id unless given)."""
    props = msg.properties
    corr, reply_to, tag = props.get("correlation_id") or msg.task_id, props.get("reply_to"), delivery_tag or new_id()
    body = binascii.b2a_base64(msg.body, newline=False).decode("ascii")
    if (headers is None and msg.headers_json is not None and type(corr) is str and type(queue) is str
            and type(tag) is str and type(priority) is int and (reply_to is None or type(reply_to) is str)):
        # The usual message (each member of a big group comes here): one format, the same text
        # as _json_dumps(envelope) (tests/unit/test_bulk_messages.py compares them).
        return (_KOMBU_ENVELOPE % (body, _json_text_of_str(msg.content_encoding),
                                   _json_text_of_str(msg.content_type), msg.headers_json, encode_string(corr),
                                   "null" if reply_to is None else encode_string(reply_to), encode_string(queue),
                                   priority, encode_string(tag))).encode()
    properties = {
        "correlation_id": corr, "reply_to": reply_to, "delivery_mode": 2,
        "delivery_info": {"exchange": "", "routing_key": queue}, "priority": priority,
        "body_encoding": "base64", "delivery_tag": tag,
    }
    if headers is None and msg.headers_json is not None:  # the same text _json_dumps(envelope) makes
        return (f'{{"body":"{body}","content-encoding":{_json_text(msg.content_encoding)},'
                f'"content-type":{_json_text(msg.content_type)},"headers":{msg.headers_json},'
                f'"properties":{_kombu_properties_json(properties)}}}').encode()
    envelope = {"body": body, "content-encoding": msg.content_encoding,
                "content-type": msg.content_type, "headers": msg.headers if headers is None else headers,
                "properties": properties}
    return _json_dumps(envelope)


_KOMBU_PROPERTIES = ('{"correlation_id":%s,"reply_to":%s,"delivery_mode":2,"delivery_info":{"exchange":"",'
                     '"routing_key":%s},"priority":%d,"body_encoding":"base64","delivery_tag":%s}')
_KOMBU_ENVELOPE = '{"body":"%s","content-encoding":%s,"content-type":%s,"headers":%s,"properties":' \
    + _KOMBU_PROPERTIES + "}"


def _kombu_properties_json(p: dict[str, Any]) -> str:
    """`_json_text(p)` for kombu_envelope's properties, by one format when they hold the usual
    types (a string id and tag, an int priority, no reply_to or a string one)."""
    corr, reply_to, queue, priority, tag = (p["correlation_id"], p["reply_to"], p["delivery_info"]["routing_key"],
                                            p["priority"], p["delivery_tag"])
    if (type(corr) is str and type(queue) is str and type(tag) is str and type(priority) is int
            and (reply_to is None or type(reply_to) is str)):
        return _KOMBU_PROPERTIES % (encode_string(corr), "null" if reply_to is None else encode_string(reply_to),
                                    encode_string(queue), priority, encode_string(tag))
    return _json_text(p)


# --- many messages of one shape (big groups): one template, a few values each ---

_SLOT = "\x00celeriac:{}\x00"  # a stand-in value no real header holds (JSON shows it as \u0000...)


class MessageTemplate:
    """Messages that differ from `msg` only in task id, group index, argument reprs (unless
    `fixed_reprs`) and root id (when `msg`'s root is itself): built by filling those values
    into `msg`'s packed form, cut once around them, instead of encoding every header again.
    `make()` gives what `build_task_message` + `pack` would, for JSON bodies. With `lone`,
    the messages are lone calls (no group index) each stamped with the time it is made."""

    def __init__(self, msg: TaskMessage, embed: Any, fixed_reprs: tuple[bool, bool] = (False, False), *,
                 lone: bool = False) -> None:
        headers, properties = dict(msg.headers), dict(msg.properties)
        slots = ["id", SENT_HEADER if lone else "group_index"]
        if headers.get("root_id") == headers.get("id"):
            slots.append("root_id")
        slots += [name for name, fixed in zip(("argsrepr", "kwargsrepr"), fixed_reprs, strict=True) if not fixed]
        headers.update({name: _SLOT.format(name) for name in slots})
        properties["correlation_id"] = _SLOT.format("id")
        self.slots, self._embed_tail, self._lone = tuple(slots), f",{_json_text(embed)}]", lone
        self._root, self._args, self._kwargs = "root_id" in slots, "argsrepr" in slots, "kwargsrepr" in slots
        self.fields = (msg.headers, msg.properties, msg.content_type, msg.content_encoding)
        cut_headers, cut_properties = _cut(_json_text(headers), slots), _cut(_json_text(properties), ["id"])
        # False if a stand-in was not found once where it was put: then build messages one by one.
        self.usable = cut_headers is not None and cut_properties is not None
        headers_format, order = cut_headers or ("", ("id", "group_index"))
        self._headers_format, self._properties_format = headers_format, (cut_properties or ("",))[0]
        # The values of make(), (id, index, root, argsrepr, kwargsrepr, sent), in the order the text wants them.
        self._headers_values = operator.itemgetter(*(_VALUE_INDEX[name] for name in order))
        self._tail = f",{_json_text(msg.content_type)},{_json_text(msg.content_encoding)}]"

    def make(self, task_id: str, group_index: int | None, args: tuple[Any, ...],
             kwargs: dict[str, Any]) -> tuple[TaskMessage, bytes]:
        """The message of one call and its packed bytes (`group_index` None for a lone call)."""
        template, properties, ctype, cenc = self.fields
        encoded_id = encode_string(task_id)
        headers = {**template, "id": task_id}
        index_text = sent_text = args_json = kwargs_json = ""
        if self._lone:
            headers[SENT_HEADER] = sent = round(time.time(), 3)
            sent_text = repr(sent)  # as the JSON encoder writes a float
        else:
            headers["group_index"] = group_index
            index_text = str(int(group_index or 0))
        if self._root:
            headers["root_id"] = task_id
        if self._args:
            headers["argsrepr"] = text = _saferepr(args)
            args_json = encode_string(text)
        if self._kwargs:
            headers["kwargsrepr"] = text = _saferepr(kwargs) if kwargs else "{}"
            kwargs_json = encode_string(text)
        props = {**properties, "correlation_id": task_id, "delivery_info": dict(properties["delivery_info"])}
        try:  # [args, kwargs] as JSON, then the embed every member shares, encoded once
            body = (_json_text([args, kwargs])[:-1] + self._embed_tail).encode("utf-8")
        except Exception as exc:  # as build_task_message reports it
            raise EncodeError(f"cannot serialize with json: {exc}") from exc
        values = (encoded_id, index_text, encoded_id, args_json, kwargs_json, sent_text)
        headers_json = self._headers_format % self._headers_values(values)
        meta = f"[{headers_json},{self._properties_format % encoded_id}{self._tail}"
        return (TaskMessage(headers, props, body, ctype, cenc, headers_json),
                meta.encode("utf-8") + b"\n" + body)


_VALUE_INDEX = {"id": 0, "group_index": 1, "root_id": 2, "argsrepr": 3, "kwargsrepr": 4, SENT_HEADER: 5}


encode_string: Callable[[str], str] = json.encoder.encode_basestring  # a str as JSON text, quotes included


def _cut(text: str, slots: list[str]) -> tuple[str, tuple[str, ...]] | None:
    """`text` as a %-format with a `%s` where each stand-in of `slots` was, and the slot
    names in the order they come; None unless each stand-in is there exactly once."""
    marks = {encode_string(_SLOT.format(name)): name for name in slots}
    if any(text.count(mark) != 1 for mark in marks):
        return None
    order = tuple(name for _at, name in sorted((text.index(mark), name) for mark, name in marks.items()))
    text = text.replace("%", "%%")
    for mark in marks:
        text = text.replace(mark, "%s")
    return text, order


def _from_kombu(raw: bytes) -> TaskMessage:
    try:
        envelope = _json_loads(raw)
        headers, properties = envelope.get("headers") or {}, envelope.get("properties") or {}
        if not isinstance(headers, dict) or "task" not in headers or "id" not in headers:
            raise ValueError("headers lack 'task' or 'id' (is it a protocol v1 message? celeriac reads v2)")
        body = envelope.get("body") or ""
        if properties.get("body_encoding") == "base64":
            body = base64.b64decode(body)
        elif isinstance(body, str):
            body = body.encode(envelope.get("content-encoding") or "utf-8")
    except Exception as exc:
        raise DecodeError(f"malformed kombu message envelope: {exc}") from exc
    return TaskMessage(headers, properties, bytes(body), envelope.get("content-type") or JSON,
                       envelope.get("content-encoding") or "utf-8")


# --- datetimes in headers: ISO 8601 with an offset, as Celery writes them ---

def to_iso(value: dt.datetime) -> str:
    if value.tzinfo is None:
        value = value.astimezone()  # a naive datetime is local time, as Celery treats it
    return value.isoformat()


def from_iso(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    parsed = dt.datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.astimezone()
    return parsed


def iso_to_epoch(value: str | None) -> float | None:
    parsed = from_iso(value)
    return parsed.timestamp() if parsed else None


@dataclass(slots=True)
class ExceptionInfo:
    """What handlers receive as `einfo`: the exception, its type and the formatted traceback."""

    exception: BaseException
    type: type[BaseException]
    traceback: str
    tb: Any = field(default=None, repr=False)

    def __str__(self) -> str:
        return self.traceback


# --- exceptions in results: stored by type name, rebuilt only from already-loaded types ---

def exception_to_dict(exc: BaseException) -> dict[str, Any]:
    cls = type(exc)
    try:
        args = list(exc.args)
        _json_dumps(args)
    except Exception:  # arguments that do not serialize are kept as their text
        args = [str(exc)]
    return {"exc_type": cls.__qualname__, "exc_module": cls.__module__, "exc_message": args}


_synthesized: dict[tuple[str, str], type[BaseException]] = {}


def exception_from_dict(data: Any) -> BaseException:
    """Rebuild the task's exception with its own type where that type is safe to use.

    Only types from modules this process already imported are used (nothing is imported
    because a result said so); otherwise a stand-in exception class with the same name
    and module is made, so `type(exc).__name__` and the message still match.
    """
    import builtins
    import sys

    if isinstance(data, BaseException):
        return data
    if not isinstance(data, dict) or "exc_type" not in data:
        return Exception(data)
    name = str(data.get("exc_type"))
    module_name = str(data.get("exc_module") or "builtins")
    message = data.get("exc_message") or []
    if not isinstance(message, (list, tuple)):
        message = [message]
    module = builtins if module_name == "builtins" else sys.modules.get(module_name)
    cls: Any = module
    for part in name.split("."):
        cls = getattr(cls, part, None) if cls is not None else None
    if not (isinstance(cls, type) and issubclass(cls, BaseException)):
        cls = _stand_in(module_name, name)
    try:
        return cls(*message)  # type: ignore[no-any-return]
    except Exception:
        try:
            exc = BaseException.__new__(cls)
        except TypeError:  # a type built in C that cannot be made this way (e.g. pydantic's ValidationError)
            exc = BaseException.__new__(_stand_in(module_name, name))
        exc.args = tuple(message)
        return exc  # type: ignore[no-any-return]


def _stand_in(module_name: str, name: str) -> type[BaseException]:
    """An exception class with the task's exception's name and module, for types not rebuilt."""
    key = (module_name, name)
    cls = _synthesized.get(key)
    if cls is None:
        cls = _synthesized[key] = type(name.rsplit(".", 1)[-1], (Exception,), {"__module__": module_name})
    return cls
