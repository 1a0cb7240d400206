"""Unpredictable bytes for ids and WebSocket masks, drawn from ``os.urandom`` 4 KiB at a time.

One system call per few hundred uses instead of one each: on the relay's per-request path that call was a
measurable cost. The pool is discarded in a forked child, so two processes never share bytes.
"""

from __future__ import annotations

import os

__all__ = ["random_bytes"]

_POOL_SIZE = 4096
_pool = bytearray()


def random_bytes(n: int) -> bytes:
    global _pool
    if n > _POOL_SIZE:
        return os.urandom(n)
    if len(_pool) < n:
        _pool = bytearray(os.urandom(_POOL_SIZE))
    out = bytes(_pool[:n])
    del _pool[:n]
    return out


def _forget() -> None:
    global _pool
    _pool = bytearray()


os.register_at_fork(after_in_child=_forget)
