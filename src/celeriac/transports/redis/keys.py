"""Every Redis key name celeriac uses, in one place.

All keys sit under one prefix (default "celeriac", the `global_keyprefix` option), so two
apps can share a server. Keys that one Lua script touches together carry the same hash tag
(the part in braces), so that on Redis Cluster they live in one hash slot - a script may
only touch keys of one slot there - and each script receives them in KEYS[], never building
a name itself:

- a queue's keys:          <prefix>:{<queue>}:ready, :delayed, :payload, ...
- a task's result keys:    <prefix>:{<task id>}:r and :done
- a chord's keys:          <prefix>:chord:{<group id>} and ...:parts
- worker leases:           <prefix>:{workers}, :info, :queues
- revocations, control log, events, one beat schedule: a tag each.

The same layout is used on a single server and on a cluster, so the one code path is tested
everywhere. Keys shared with Celery (kombu's queue lists, Celery's result keys) keep Celery's
exact names, which carry no hash tag: those features are refused on Redis Cluster.
"""

from __future__ import annotations


class QueueKeys:
    """The keys of one queue, all with the queue's hash tag. `block()` is the order the Lua
    scripts read them in (scripts.QUEUE_KEYS names the positions)."""

    __slots__ = ("queue", "tag", "ready", "delayed", "signal", "seq", "payload", "prio", "deliveries", "leased",
                 "holders", "dead", "dead_payload", "dead_info", "dead_seq")

    def __init__(self, prefix: str, queue: str) -> None:
        t = f"{prefix}:{{{queue}}}"
        self.queue, self.tag = queue, t
        self.ready = f"{t}:ready"              # zset id by (9 - priority) * 1e12 + id: best first, FIFO within
        self.delayed = f"{t}:delayed"          # zset id by eta (ms, server clock)
        self.signal = f"{t}:signal"            # list of wake-up tokens for idle workers (bounded)
        self.seq = f"{t}:seq"                  # message ids, increasing: FIFO order within a priority
        self.payload = f"{t}:payload"          # id -> packed message
        self.prio = f"{t}:prio"                # id -> priority 0-9
        self.deliveries = f"{t}:deliveries"    # id -> times delivered
        self.leased = f"{t}:leased"            # id -> "<owner>\n<worker>": what is held, and by whom
        self.holders = f"{t}:holders"          # set of workers that may hold messages of this queue
        self.dead = f"{t}:dead"                # zset dead-letter id by time (ms)
        self.dead_payload = f"{t}:dead:payload"
        self.dead_info = f"{t}:dead:info"
        self.dead_seq = f"{t}:dead:seq"

    def publish_block(self) -> list[str]:
        """The keys PUBLISH needs: the first six of `block()`."""
        return [self.ready, self.delayed, self.signal, self.seq, self.payload, self.prio]

    def block(self) -> list[str]:
        return [self.ready, self.delayed, self.signal, self.seq, self.payload, self.prio, self.deliveries,
                self.leased, self.holders, self.dead, self.dead_payload, self.dead_info, self.dead_seq]


PUBLISH_BLOCK = 6   # keys per queue in a PUBLISH call
QUEUE_BLOCK = 13    # keys per queue in the other queue scripts


class Keys:
    def __init__(self, prefix: str) -> None:
        p = prefix.rstrip(":") or "celeriac"
        self.prefix = p
        self._queues: dict[str, QueueKeys] = {}
        # Worker leases: one tag, so a heartbeat is one script call.
        self.workers = f"{p}:{{workers}}"                # zset worker id by lease expiry (ms)
        self.workerinfo = f"{p}:{{workers}}:info"        # worker id -> JSON from its heartbeat
        self.queues = f"{p}:{{workers}}:queues"          # set of every queue a worker has fetched from
        self.events = f"{p}:{{events}}"                  # stream of framed event batches
        self.events_seq = f"{p}:{{events}}:seq"          # events ever sent (a reader counts gaps)
        self.revoked = f"{p}:{{revoked}}"                # zset "seq|signal|task id" by seq
        self.revoked_exp = f"{p}:{{revoked}}:exp"        # the same members by expiry
        self.revoked_seq = f"{p}:{{revoked}}:seq"
        self.control = f"{p}:{{control}}"                # the broadcast control log, like revocations
        self.control_exp = f"{p}:{{control}}:exp"
        self.control_seq = f"{p}:{{control}}:seq"
        self.beats = f"{p}:beats"                        # zset worker id by heartbeat expiry (result store)
        self.beats_info = f"{p}:beats:info"
        self.history = f"{p}:history"                    # the task history (history.py): zset by time
        self.history_rows = f"{p}:history:rows"          # task id -> record
        self.history_meta = f"{p}:history:meta"          # task id -> result meta
        self.history_counts = f"{p}:history:counts"      # "<name>\0<state>" -> count

    def queue(self, name: str) -> QueueKeys:
        found = self._queues.get(name)
        if found is None:
            found = self._queues[name] = QueueKeys(self.prefix, name)
        return found

    def ready(self, queue: str) -> str:
        return self.queue(queue).ready

    def signal(self, queue: str) -> str:
        return self.queue(queue).signal

    def queue_of_ready_key(self, key: str) -> str | None:
        """The queue a `ready` key belongs to (queue discovery by SCAN), or None."""
        head, tail = f"{self.prefix}:{{", "}:ready"
        return key[len(head):-len(tail)] if key.startswith(head) and key.endswith(tail) else None

    def ready_pattern(self) -> str:
        """A SCAN pattern matching every queue's `ready` key."""
        return f"{_glob_escape(self.prefix)}:{{*}}:ready"

    def result(self, task_id: str) -> str:       # hash status, meta
        return f"{self.prefix}:{{{task_id}}}:r"

    def done(self, task_id: str) -> str:         # list holding the final meta; waiters BLMOVE it onto itself
        return f"{self.prefix}:{{{task_id}}}:done"

    def chord(self, group_id: str) -> str:       # hash done, size, added, fired
        return f"{self.prefix}:chord:{{{group_id}}}"

    def chord_parts(self, group_id: str) -> str:  # hash header index -> member's meta
        return f"{self.prefix}:chord:{{{group_id}}}:parts"

    def unique(self, key: str) -> str:           # string: the task id holding a unique key (PX: the hold)
        return f"{self.prefix}:unique:{key}"

    def rate(self, key: str) -> str:             # string: the next free start (µs, server clock)
        return f"{self.prefix}:rate:{key}"

    def reply(self, reply_id: str) -> str:       # list of replies to one control command
        return f"{self.prefix}:reply:{reply_id}"

    def beat(self, name: str) -> tuple[str, str, str]:
        """One beat schedule's lease, last ticks and pending ticks (one tag)."""
        t = f"{self.prefix}:beat:{{{name}}}"
        return f"{t}:lease", f"{t}:ticks", f"{t}:pending"

    def history_state(self, state: str) -> str:
        return f"{self.history}:state:{state}"

    def history_name(self, name: str) -> str:
        return f"{self.history}:name:{name}"


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


# --- Celery's keys (docs/celery-interop.md): Celery's exact names, no hash tag ---

KOMBU_SEP = "\x06\x16"  # kombu's separator between a queue's name and its priority step
KOMBU_STEPS = (0, 3, 6, 9)  # kombu's priority lists of a queue, read in this order


def kombu_list(kombu_prefix: str, queue: str, step: int) -> str:
    """kombu's list for one priority step of a queue ("<queue>", "<queue>\\x06\\x16<step>")."""
    return kombu_prefix + (f"{queue}{KOMBU_SEP}{step}" if step else queue)


def kombu_lists(kombu_prefix: str, queue: str) -> list[str]:
    return [kombu_list(kombu_prefix, queue, step) for step in KOMBU_STEPS]


def kombu_unacked(kombu_prefix: str) -> tuple[str, str]:
    """kombu's hash of messages Celery workers hold, and its index by time."""
    return kombu_prefix + "unacked", kombu_prefix + "unacked_index"


def celery_task_meta(celery_prefix: str, task_id: str) -> str:
    """Where Celery's Redis result backend keeps a task's meta (and the channel it publishes on)."""
    return f"{celery_prefix}celery-task-meta-{task_id}"


def celery_chord_size(celery_prefix: str, group_id: str) -> str:
    """Where Celery's client writes a chord's header size."""
    return f"{celery_prefix}celery-taskset-meta-{group_id}.s"
