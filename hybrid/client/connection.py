"""A relayed WebSocket: what a sender gets from ``connect`` and a listener from an accepted rendezvous.

The gateway relays frames untouched in both directions, text staying text (spec §2.6), so this is a thin layer over
a ``websockets`` client connection that speaks ``hybrid.errors`` instead of ``websockets.exceptions``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Self

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed as WsConnectionClosed
from websockets.exceptions import ConnectionClosedOK

from ..errors import ConnectionClosed

if TYPE_CHECKING:
    from .listener import AcceptContext

__all__ = ["RelayedConnection"]


def _closed_error(exc: WsConnectionClosed, what: str = "relayed connection") -> ConnectionClosed:
    code = exc.rcvd.code if exc.rcvd is not None else (exc.sent.code if exc.sent is not None else 1006)
    reason = exc.rcvd.reason if exc.rcvd is not None else (exc.sent.reason if exc.sent is not None else "")
    error = ConnectionClosed(f"{what} closed ({code} {reason})".replace(" )", ")"))
    error.close_code = code
    error.close_reason = reason  # type: ignore[attr-defined]
    return error


class RelayedConnection:
    """One end of a relayed WebSocket.

    ``send`` a ``str`` (text frame) or bytes (binary frame), ``recv`` the next message, iterate with ``async for``
    until the peer closes, ``close(code, reason)`` when done. The close code and reason travel to the other side
    (spec §2.6). On the listener side ``context`` describes the sender (headers, path suffix, query).
    """

    def __init__(self, websocket: ClientConnection, *, tracking_id: str, context: AcceptContext | None = None) -> None:
        self._ws = websocket
        self.tracking_id = tracking_id
        self.context = context

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol both ends agreed on, or None."""
        return self._ws.subprotocol

    @property
    def websocket(self) -> ClientConnection:
        """The underlying ``websockets`` connection, for options this class does not cover."""
        return self._ws

    @property
    def close_code(self) -> int | None:
        """The close code received from the peer, once closed."""
        return self._ws.close_code

    @property
    def close_reason(self) -> str | None:
        """The close reason received from the peer, once closed."""
        return self._ws.close_reason

    @property
    def closed(self) -> bool:
        """True once the closing handshake has finished or the connection dropped."""
        return self._ws.close_code is not None

    async def send(self, message: str | bytes | bytearray | memoryview) -> None:
        """Send one message: ``str`` as a text frame, bytes-like as a binary frame."""
        try:
            await self._ws.send(message)
        except WsConnectionClosed as exc:
            raise _closed_error(exc) from None

    async def recv(self) -> str | bytes:
        """The next message (``str`` for text, ``bytes`` for binary). Raises ConnectionClosed once closed."""
        try:
            return await self._ws.recv()
        except WsConnectionClosed as exc:
            raise _closed_error(exc) from None

    async def __aiter__(self) -> AsyncIterator[str | bytes]:
        """Messages until the peer closes normally (1000/1001); other closes raise ConnectionClosed."""
        while True:
            try:
                yield await self._ws.recv()
            except ConnectionClosedOK:
                return
            except WsConnectionClosed as exc:
                raise _closed_error(exc) from None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close with ``code`` and ``reason``; the gateway forwards both to the other side (spec §2.6)."""
        await self._ws.close(code, reason)

    async def wait_closed(self) -> None:
        """Wait until the connection is closed, by either side."""
        await self._ws.wait_closed()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"RelayedConnection(tracking_id={self.tracking_id!r}, {state})"
