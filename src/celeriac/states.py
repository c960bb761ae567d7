"""Task states, with Celery's names and precedence."""

from __future__ import annotations

PENDING = "PENDING"
RECEIVED = "RECEIVED"
STARTED = "STARTED"
SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
REVOKED = "REVOKED"
REJECTED = "REJECTED"
RETRY = "RETRY"
IGNORED = "IGNORED"

READY_STATES = frozenset({SUCCESS, FAILURE, REVOKED})
UNREADY_STATES = frozenset({PENDING, RECEIVED, STARTED, REJECTED, RETRY})
EXCEPTION_STATES = frozenset({RETRY, FAILURE, REVOKED})
PROPAGATE_STATES = frozenset({FAILURE, REVOKED})
ALL_STATES = frozenset({PENDING, RECEIVED, STARTED, SUCCESS, FAILURE, RETRY, REVOKED})

# Earlier in the list = higher precedence. Custom states (e.g. "PROGRESS") rank where
# None is: above the in-flight states, below the final ones.
_PRECEDENCE = [SUCCESS, FAILURE, None, REVOKED, STARTED, RECEIVED, REJECTED, RETRY, PENDING]
_NONE_RANK = _PRECEDENCE.index(None)


def precedence(state: str | None) -> int:
    """Lower number wins: a store never lets a lower-precedence state overwrite a final one."""
    try:
        return _PRECEDENCE.index(state)
    except ValueError:
        return _NONE_RANK


PRECEDENCE = list(_PRECEDENCE)
PRECEDENCE_LOOKUP = {name: rank for rank, name in enumerate(_PRECEDENCE)}
NONE_PRECEDENCE = _NONE_RANK


class state(str):  # noqa: N801 - Celery's name
    """A state name that compares by precedence: `state(SUCCESS) > state(STARTED)`."""

    def __gt__(self, other: object) -> bool:
        return precedence(self) < precedence(str(other))

    def __ge__(self, other: object) -> bool:
        return precedence(self) <= precedence(str(other))

    def __lt__(self, other: object) -> bool:
        return precedence(self) > precedence(str(other))

    def __le__(self, other: object) -> bool:
        return precedence(self) >= precedence(str(other))

    __hash__ = str.__hash__
