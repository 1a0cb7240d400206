"""HTTP over the relay, listener side (spec §2.3, §2.4, §2.7): the request an application sees, the response it
returns, and how that response goes back on the wire.

A response travels inline on the control channel when its whole body is known and at most 64 KiB: the ``response``
JSON, then exactly one binary message (spec §2.1). Anything bigger or still streaming after a short wait goes over a
rendezvous WebSocket to ``request.address`` as one fragmented binary message (spec §2.7), as .NET does.
"""

from __future__ import annotations

import asyncio
import http
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from multidict import CIMultiDict, CIMultiDictProxy

from ..protocol.messages import INLINE_BODY_LIMIT, RemoteEndpoint, Request, Response

__all__ = [
    "FLUSH_TIMEOUT",
    "BodyLike",
    "RelayedHttpRequest",
    "RelayedHttpResponse",
    "RequestHandler",
    "ResponsePlan",
    "plan_response",
    "status_description",
]

#: .NET opens the response rendezvous if the body has not ended 2 s after the first write (spec §2.7).
FLUSH_TIMEOUT = 2.0

BodyLike = bytes | bytearray | memoryview | str | None | AsyncIterable[bytes] | Iterable[bytes]


class _Body:
    """A request body read once, as chunks or whole. Stopping early and reading on continues where it stopped."""

    def __init__(self, source: AsyncIterator[bytes] | bytes | None) -> None:
        #: a body that arrived whole (inline) is kept as it is, so reading it costs nothing
        self._whole = source if isinstance(source, bytes) else None
        self._source = None if isinstance(source, bytes) else source
        self._chunks: AsyncIterator[bytes] | None = None

    def __aiter__(self) -> AsyncIterator[bytes]:
        if self._chunks is None:
            self._chunks = self._iterate()
        return self._chunks

    async def _iterate(self) -> AsyncIterator[bytes]:
        if self._whole is not None:
            whole, self._whole = self._whole, None
            if whole:
                yield whole
            return
        if self._source is None:
            return
        async for chunk in self._source:
            if chunk:
                yield bytes(chunk)

    async def read(self) -> bytes:
        """Everything not read yet."""
        if self._chunks is None and self._whole is not None:
            whole, self._whole, self._source = self._whole, None, None
            self._chunks = self._iterate()  # exhausted: a second read returns b""
            return whole
        return b"".join([chunk async for chunk in self])

    async def drain(self) -> None:
        """Consume whatever the application left unread."""
        async for _ in self:
            pass


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


class RelayedHttpRequest:
    """An HTTP request relayed from a sender (spec §2.3).

    ``target`` is the request target as the gateway sent it: the path **including the hybrid connection name**
    plus the filtered query, e.g. ``/myhc/abc?x=1`` (spec §1.3). ``suffix`` is the part after the name.
    Read the body with ``await request.read()`` or ``async for chunk in request.body``; it can be read once.
    """

    def __init__(
        self,
        *,
        method: str,
        target: str,
        headers: Mapping[str, str],
        entity: str,
        body: AsyncIterator[bytes] | bytes | None = None,
        request_id: str = "",
        address: str = "",
        remote_endpoint: RemoteEndpoint | None = None,
        rendezvous: bool = False,
    ) -> None:
        self.method = method
        self.target = target
        self.headers: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict(headers))
        self.entity = entity
        self.id = request_id
        self.address = address
        self.remote_endpoint = remote_endpoint
        #: True when the request arrived over a gateway-initiated rendezvous rather than inline (spec §2.7)
        self.rendezvous = rendezvous
        self.body = _Body(body)

    @classmethod
    def from_message(
        cls, message: Request, *, entity: str, body: AsyncIterator[bytes] | bytes | None, rendezvous: bool = False
    ) -> RelayedHttpRequest:
        """Build from a parsed inline ``request`` (shape (a) of spec §2.3)."""
        return cls(
            method=message.method or "GET",
            target=message.request_target or "/",
            headers=message.request_headers,
            entity=entity,
            body=body,
            request_id=message.id,
            address=message.address,
            remote_endpoint=message.remote_endpoint,
            rendezvous=rendezvous,
        )

    @property
    def path(self) -> str:
        """The target's path, percent-encoded, starting with ``/{entity}``."""
        return urlsplit(self.target).path or "/"

    @property
    def query(self) -> str:
        """The target's raw query string without ``?`` (``sb-hc-*`` already filtered by the gateway, spec §1.2)."""
        return urlsplit(self.target).query

    @property
    def suffix(self) -> str:
        """The path after ``/{entity}``, or ``""``; the whole path if it does not start with the entity."""
        path = self.path
        prefix = "/" + self.entity
        if path.lower() == prefix.lower():
            return ""
        if path.lower().startswith(prefix.lower() + "/"):
            return path[len(prefix):]
        return path

    async def read(self) -> bytes:
        """The whole body."""
        return await self.body.read()

    def __repr__(self) -> str:
        return f"RelayedHttpRequest({self.method} {self.target!r}, id={self.id!r})"


@dataclass
class RelayedHttpResponse:
    """What a request handler returns.

    ``body`` may be bytes (or ``str``, sent as UTF-8), None, or an (async) iterable of bytes chunks for a streamed
    body. ``reason`` defaults to the standard phrase. ``Content-Length`` and ``Transfer-Encoding`` are recomputed
    by the gateway (spec §2.4), so there is no need to set them.
    """

    status: int = 200
    reason: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    body: BodyLike = b""


RequestHandler = Callable[[RelayedHttpRequest], Awaitable[RelayedHttpResponse | bytes | str | None]]


def status_description(status: int, reason: str | None) -> str:
    """The reason phrase to send: the application's (CR/LF removed) or the standard one (.NET does the same)."""
    if reason:
        return reason.replace("\r", " ").replace("\n", " ")
    return _PHRASES.get(status, "")


_PHRASES = {s.value: s.phrase for s in http.HTTPStatus}


def _to_bytes(chunk: Any) -> bytes:
    if isinstance(chunk, str):
        return chunk.encode("utf-8")
    if isinstance(chunk, (bytes, bytearray, memoryview)):
        return bytes(chunk)
    raise TypeError(f"response body chunks must be bytes or str, not {type(chunk).__name__}")


async def _aiter_sync(items: Iterable[Any]) -> AsyncIterator[bytes]:
    for item in items:
        yield _to_bytes(item)


async def _aiter_async(items: AsyncIterable[Any]) -> AsyncIterator[bytes]:
    async for item in items:
        yield _to_bytes(item)


_END = object()


async def _next_chunk(iterator: AsyncIterator[bytes]) -> Any:
    try:
        return await iterator.__anext__()
    except StopAsyncIteration:
        return _END


@dataclass
class ResponsePlan:
    """How a response goes back: ``inline`` with ``body`` (≤ limit, complete), else ``stream`` over a rendezvous."""

    response: Response
    body: bytes | None = None
    stream: AsyncIterator[bytes] | None = None
    pending: asyncio.Task[Any] | None = None

    @property
    def inline(self) -> bool:
        return self.stream is None

    def cancel(self) -> None:
        """Release a half-read streamed body (the listener is shutting down)."""
        if self.pending is not None and not self.pending.done():
            self.pending.cancel()


async def plan_response(
    request_id: str,
    result: RelayedHttpResponse,
    *,
    head: bool = False,
    limit: int = INLINE_BODY_LIMIT,
    flush_timeout: float = FLUSH_TIMEOUT,
) -> ResponsePlan:
    """Decide inline versus rendezvous for ``result`` and build the ``response`` message (spec §2.4, §2.7).

    A streamed body is read ahead until it ends, passes ``limit`` bytes, or ``flush_timeout`` seconds go by; only a
    body that ended within both stays inline. A HEAD response never carries a body (spec §2.4).
    """
    description = status_description(result.status, result.reason)
    headers = {str(k): str(v) for k, v in result.headers.items()}

    def message(has_body: bool) -> Response:
        return Response(
            request_id=request_id,
            status_code=result.status,
            status_description=description,
            response_headers=headers,
            body=has_body,
        )

    body = result.body
    if head or body is None:
        return ResponsePlan(message(False), body=b"")
    if isinstance(body, (bytes, bytearray, memoryview, str)):
        data = _to_bytes(body)
        if len(data) <= limit:
            return ResponsePlan(message(bool(data)), body=data)
        return ResponsePlan(message(True), stream=_one(data))
    if isinstance(body, AsyncIterable):
        iterator = _aiter_async(body)
    elif isinstance(body, Iterable):
        iterator = _aiter_sync(body)
    else:
        raise TypeError(f"unsupported response body type {type(body).__name__}")

    loop = asyncio.get_running_loop()
    deadline = loop.time() + flush_timeout
    buffered: list[bytes] = []
    size = 0
    pending: asyncio.Task[Any] | None = None
    while True:
        pending = asyncio.ensure_future(_next_chunk(iterator))
        done, _ = await asyncio.wait({pending}, timeout=max(0.0, deadline - loop.time()))
        if not done:
            break  # still streaming: hand over to a rendezvous, keeping the read in flight
        chunk = pending.result()
        pending = None
        if chunk is _END:
            data = b"".join(buffered)
            return ResponsePlan(message(bool(data)), body=data)
        buffered.append(chunk)
        size += len(chunk)
        if size > limit:
            break

    in_flight = pending

    async def rest() -> AsyncIterator[bytes]:
        for chunk in buffered:
            yield chunk
        if in_flight is not None:
            chunk = await in_flight
            if chunk is _END:
                return
            yield chunk
        async for chunk in iterator:
            yield chunk

    return ResponsePlan(message(True), stream=rest(), pending=in_flight)


async def at_least_one_fragment(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Yield the chunks, or one empty chunk if there are none: a body must be exactly one message (spec §2.1).

    (``websockets`` sends nothing at all for an empty iterable.)
    """
    sent = False
    async for chunk in chunks:
        if chunk or not sent:
            sent = True
            yield chunk
    if not sent:
        yield b""
