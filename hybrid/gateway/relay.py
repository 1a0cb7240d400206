"""Rendezvous bookkeeping and body streaming shared by the gateway's handlers. I/O-light, no aiohttp."""

from __future__ import annotations

import asyncio
import collections
import re
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from ..errors import ConnectionClosed, RelayError

__all__ = ["BodyPipe", "PendingAccept", "PendingRequest", "Accepted", "Rejected", "new_tracking_id",
           "FailureLimiter"]

_CLIENT_ID = re.compile(r"^[A-Za-z0-9\-]{1,64}$")


def new_tracking_id(client_id: str | None = None) -> str:
    """``<guid>_<random>``: starts with the client's ``sb-hc-id`` (or a fresh GUID) for tracing (spec §6.7), and
    ends with 96 random bits because the rendezvous address that carries it is the only credential (§3.4)."""
    rand = os.urandom(28)  # one system call for both parts
    head = client_id if client_id and _CLIENT_ID.match(client_id) else str(uuid.UUID(bytes=rand[:16], version=4))
    return f"{head}_{rand[16:].hex()}"


class BodyPipe:
    """A bounded stream of body chunks from a listener socket to an HTTP response. ``put`` waits when full."""

    LIMIT = 256 * 1024

    def __init__(self) -> None:
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._done = False
        self._error: BaseException | None = None
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self.closed_by_reader = False

    async def put(self, chunk: bytes) -> None:
        if self.closed_by_reader:
            return  # the HTTP client went away: drop the rest of the body
        while self._size >= self.LIMIT and not self.closed_by_reader:
            self._writable.clear()
            await self._writable.wait()
        self._chunks.append(chunk)
        self._size += len(chunk)
        self._readable.set()

    def finish(self, error: BaseException | None = None) -> None:
        self._done = True
        self._error = error
        self._readable.set()

    def abandon(self) -> None:
        """The reader stops reading: writers must not block on it."""
        self.closed_by_reader = True
        self._chunks.clear()
        self._size = 0
        self._writable.set()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._size -= len(chunk)
                if self._size < self.LIMIT:
                    self._writable.set()
                yield chunk
                continue
            if self._done:
                if self._error is not None:
                    raise self._error
                return
            self._readable.clear()
            await self._readable.wait()


@dataclass
class Accepted:
    socket: Any  # GatewaySocket of the listener's rendezvous, not yet attached
    request: Any  # its aiohttp request
    subprotocol: str | None


@dataclass
class Rejected:
    status: int
    description: str


@dataclass
class PendingAccept:
    """A sender waiting for its listener to open the rendezvous (spec §2.2, §2.6). Usable once, for 30 s."""

    id: str
    entity: str
    expires: float
    outcome: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


@dataclass
class PendingRequest:
    """An HTTP request waiting for its listener's response (spec §2.3, §2.4, §2.7)."""

    id: str
    entity: str
    channel: Any  # ListenerChannel it was sent to
    head: Any  # the full messages.Request to send on a gateway-initiated rendezvous
    expires: float
    rendezvous: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    response: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    rendezvous_used: bool = False

    def fail(self, error: RelayError) -> None:
        for fut in (self.rendezvous, self.response):
            if not fut.done():
                fut.set_exception(error)
                fut.exception()  # mark retrieved: nobody may be waiting any more


class FailureLimiter:
    """Counts failed listen attempts per client address in a sliding window (hyco-ws retries with no backoff, §2.8).

    Bounded: at most ``max_clients`` addresses are remembered; the oldest are forgotten first.
    """

    def __init__(self, limit: int, window: float = 10.0, max_clients: int = 10_000) -> None:
        self.limit = limit
        self.window = window
        self.max_clients = max_clients
        self._seen: collections.OrderedDict[str, collections.deque[float]] = collections.OrderedDict()

    def _recent(self, client: str, now: float) -> collections.deque[float]:
        times = self._seen.get(client)
        if times is None:
            return collections.deque()
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def blocked(self, client: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return self.limit > 0 and len(self._recent(client, now)) >= self.limit

    def record(self, client: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        times = self._recent(client, now)
        if client not in self._seen:
            if len(self._seen) >= self.max_clients:
                self._seen.popitem(last=False)
            self._seen[client] = times
        self._seen.move_to_end(client)
        if len(times) < self.limit * 2:  # a cap: the window only needs to know "over the limit"
            times.append(now)

    def clear(self, client: str) -> None:
        self._seen.pop(client, None)


def closed_error(what: str) -> ConnectionClosed:
    return ConnectionClosed(what)
