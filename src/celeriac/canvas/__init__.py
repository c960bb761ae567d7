"""Signatures and workflows: chain, group, chord, chunks, map and starmap.

A signature is a plain dict (so it survives JSON): ``task``, ``args``, ``kwargs``,
``options``, ``subtask_type``, ``immutable``. Workflows are signatures too; their parts
live in ``kwargs`` (``tasks`` for chain and group, ``header``/``body`` for chord).

The package keeps one concern per module, and every name importable from
``celeriac.canvas`` as in Celery:

- ``signature``: the Signature class and the helpers every workflow uses;
- ``workflows``: chain, group, chord, chunks, xmap, xstarmap;
- ``lazy``: a chord whose header is a generator, published as the generator yields;
- ``callbacks``: error callbacks, ``Task.replace`` and ``Task.add_to_chord``;
- ``stamping``: ``StampingVisitor`` and ``Signature.stamp`` (Celery 5.3's stamping API).
"""

from .callbacks import replacement_messages, run_errback
from .stamping import StampingVisitor
from .signature import (TAIL_OPTIONS, Signature, maybe_signature, merge_options, signature, split_tail,
                        subtask)
from .workflows import _chain, _single_result, chain, chord, chunks, group, xmap, xstarmap

__all__ = [
    "TAIL_OPTIONS", "Signature", "StampingVisitor", "chain", "chord", "chunks", "group", "maybe_signature",
    "merge_options", "replacement_messages", "run_errback", "signature", "split_tail", "subtask", "xmap", "xstarmap",
    "_chain", "_single_result",
]
