"""Rendezvous bookkeeping and body streaming shared by the gateway's handlers. I/O-light, no aiohttp."""

from __future__ import annotations

import asyncio
import collections
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from ..entropy import random_bytes
from ..errors import ConnectionClosed, RelayError

__all__ = [
    "Accepted",
    "BodyPipe",
    "FailureLimiter",
    "PendingAccept",
    "PendingRequest",
    "Rejected",
    "new_tracking_id",
]

#: what the log says when a sender leaves before its response has been written (an everyday event, not an error)
SENDER_GONE = "the sender went away before its response was complete"
RESPONSE_TIMEOUT = "the request was routed to the listener but the listener did not respond in the required time"
_CLIENT_ID = re.compile(r"^[A-Za-z0-9\-]{1,64}$")


def new_tracking_id(client_id: str | None = None) -> str:
    """``<guid>_<random>``: starts with the client's ``sb-hc-id`` (or a fresh GUID) for tracing (spec §6.7), and
    ends with 96 random bits because the rendezvous address that carries it is the only credential (§3.4)."""
    rand = random_bytes(28)
    if client_id and _CLIENT_ID.match(client_id):
        return f"{client_id}_{rand[16:].hex()}"
    guid = bytearray(rand[:16])
    guid[6] = (guid[6] & 0x0F) | 0x40  # version 4
    guid[8] = (guid[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = guid.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}_{rand[16:].hex()}"


class BodyPipe:
    """A bounded stream of body chunks from a listener socket (written in its read callback) to an HTTP response.

    ``put`` says when the pipe is full; the writer then stops reading its socket until ``on_writable`` is called.
    """

    LIMIT = 256 * 1024

    def __init__(self) -> None:
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._done = False
        self._error: BaseException | None = None
        self._readable = asyncio.Event()
        self.closed_by_reader = False
        #: called when a full pipe has room again (or its reader left)
        self.on_writable: Callable[[], None] | None = None

    def put(self, chunk: bytes) -> bool:
        """Add a chunk; True when the pipe is now full and the writer should pause."""
        if self.closed_by_reader:
            return False  # the HTTP client went away: drop the rest of the body
        self._chunks.append(chunk)
        self._size += len(chunk)
        self._readable.set()
        return self._size >= self.LIMIT

    def finish(self, error: BaseException | None = None) -> None:
        self._done = True
        self._error = error
        self._readable.set()

    def abandon(self) -> None:
        """The reader stops reading: writers must not wait for it."""
        self.closed_by_reader = True
        self._chunks.clear()
        self._size = 0
        self._writable()

    def _writable(self) -> None:
        if self.on_writable is not None:
            callback, self.on_writable = self.on_writable, None
            callback()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._size -= len(chunk)
                if self._size < self.LIMIT:
                    self._writable()
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


class PendingRequest:
    """An HTTP request waiting for its listener's response (spec §2.3, §2.4, §2.7).

    The response is ``(Response, body)`` where body is ``bytes``, a :class:`BodyPipe` or ``None``. It reaches the
    request either through ``on_response`` (called at once: the front end's way, no task switch) or through the
    ``response`` future (the aiohttp path awaits it). Futures are made only when somebody asks for them.
    """

    __slots__ = (
        "_rendezvous",
        "_response",
        "channel",
        "done",
        "entity",
        "expires",
        "head",
        "id",
        "on_response",
        "rendezvous_used",
    )

    def __init__(self, id: str, entity: str, channel: Any, head: Any, expires: float,
                 on_response: Callable[[tuple[Any, Any] | None, RelayError | None], None] | None = None) -> None:
        self.id = id
        self.entity = entity
        self.channel = channel  # the ListenerChannel it was sent to (None: a listener on another node)
        self.head = head  # the full messages.Request to send on a gateway-initiated rendezvous
        self.expires = expires
        self.on_response = on_response
        self.rendezvous_used = False
        #: a response (or failure) has been delivered
        self.done = False
        self._response: asyncio.Future | None = None
        self._rendezvous: asyncio.Future | None = None

    @property
    def response(self) -> asyncio.Future:
        if self._response is None:
            self._response = asyncio.get_running_loop().create_future()
        return self._response

    @property
    def rendezvous(self) -> asyncio.Future:
        """The listener's rendezvous socket for this request, once it has opened one."""
        if self._rendezvous is None:
            self._rendezvous = asyncio.get_running_loop().create_future()
        return self._rendezvous

    def rendezvous_socket(self) -> Any:
        """The rendezvous socket if one was opened, else None."""
        fut = self._rendezvous
        if fut is None or not fut.done() or fut.cancelled() or fut.exception() is not None:
            return None
        return fut.result()

    def resolve(self, result: tuple[Any, Any]) -> bool:
        """Deliver the response; False if the request already has one (or failed)."""
        if self.done:
            return False
        self.done = True
        if self.on_response is not None:
            self.on_response(result, None)
        elif not self.response.done():
            self.response.set_result(result)
        return True

    def fail(self, error: RelayError) -> None:
        fut = self._rendezvous
        if fut is not None and not fut.done():
            fut.set_exception(error)
            fut.exception()  # mark retrieved: nobody may be waiting any more
        if self.done:
            return
        self.done = True
        if self.on_response is not None:
            self.on_response(None, error)
        elif not self.response.done():
            self.response.set_exception(error)
            self.response.exception()


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
