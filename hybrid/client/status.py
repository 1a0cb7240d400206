"""Connection status, the reconnect ladder, and how handshake failures map onto ``hybrid.errors`` (spec §2.8).

Everything here is pure except :func:`translate_connect_error`, which only inspects exception objects raised by
``websockets``; it is the single boundary where that library's errors become ours.
"""

from __future__ import annotations

import asyncio
import enum
import ssl
from collections.abc import Iterator, Sequence

from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI

from ..errors import (
    AuthenticationError,
    AuthorizationError,
    BadRequest,
    ConnectionClosed,
    EndpointNotFound,
    ListenerUnavailable,
    PayloadTooLarge,
    ProtocolError,
    RelayError,
    RelayTimeout,
)

__all__ = [
    "DEFAULT_RECONNECT_DELAYS",
    "ListenerStatus",
    "ReconnectLadder",
    "error_for_status",
    "should_reconnect",
    "translate_connect_error",
]

#: .NET ``ConnectDelayIntervals`` and hyco-https ``reconnectDelays`` (spec §2.8): 0, 1, 2, 5, 10, 30 s, then 30 s.
DEFAULT_RECONNECT_DELAYS: tuple[float, ...] = (0.0, 1.0, 2.0, 5.0, 10.0, 30.0)


class ListenerStatus(str, enum.Enum):
    """The listener's connection status, named after .NET's ``Online``/``Connecting``/``Offline`` events."""

    OFFLINE = "Offline"
    CONNECTING = "Connecting"
    ONLINE = "Online"


class ReconnectLadder:
    """Delays between reconnect attempts: walk the ladder, stay on its last rung, start over after a success."""

    def __init__(self, delays: Sequence[float] = DEFAULT_RECONNECT_DELAYS) -> None:
        if not delays or any(d < 0 for d in delays):
            raise ValueError("reconnect delays must be a non-empty sequence of non-negative numbers")
        self._delays = tuple(float(d) for d in delays)
        self._attempt = 0

    @property
    def attempt(self) -> int:
        """How many delays have been handed out since the last reset."""
        return self._attempt

    def next_delay(self) -> float:
        """The delay before the next attempt."""
        delay = self._delays[min(self._attempt, len(self._delays) - 1)]
        self._attempt += 1
        return delay

    def reset(self) -> None:
        """Call after a successful connect: the next outage starts again at the first rung."""
        self._attempt = 0

    def __iter__(self) -> Iterator[float]:
        while True:
            yield self.next_delay()


_STATUS_ERRORS: dict[int, type[RelayError]] = {
    400: BadRequest,
    401: AuthenticationError,
    403: AuthorizationError,
    404: EndpointNotFound,
    413: PayloadTooLarge,
    502: ListenerUnavailable,
    504: RelayTimeout,
}


def error_for_status(status: int, description: str = "", *, body: bytes = b"") -> RelayError:
    """The ``hybrid.errors`` exception for an HTTP status the gateway (or a rejecting listener) answered.

    The instance keeps ``http_status`` = ``status`` and ``status_description`` = the reason phrase, so a listener's
    rejection (e.g. ``401 "Status Description from test"``, spec §2.6) reaches the sender intact.
    """
    cls = _STATUS_ERRORS.get(status, RelayError)
    text = description or cls.__doc__ or f"HTTP {status}"
    error = cls(f"{status} {text}".strip(), http_status=status)
    error.status_description = description  # type: ignore[attr-defined]
    error.response_body = bytes(body)  # type: ignore[attr-defined]
    return error


def translate_connect_error(exc: BaseException, what: str) -> BaseException:
    """Map an exception raised while opening a WebSocket to ``hybrid.errors``; unknown ones pass through.

    ``what`` names the gesture (``"listen"``, ``"connect"``, ``"accept"``…) for the message.
    """
    if isinstance(exc, RelayError):
        return exc
    if isinstance(exc, InvalidStatus):
        response = exc.response
        return error_for_status(response.status_code, response.reason_phrase, body=bytes(response.body or b""))
    if isinstance(exc, InvalidURI):
        return BadRequest(f"{what}: invalid URL ({exc})")
    if isinstance(exc, InvalidHandshake):
        return ProtocolError(f"{what}: WebSocket handshake failed ({exc})")
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return RelayTimeout(f"{what}: timed out opening the WebSocket")
    if isinstance(exc, ssl.SSLError):
        return ConnectionClosed(f"{what}: TLS failed ({exc})")
    if isinstance(exc, OSError):
        return ConnectionClosed(f"{what}: cannot reach the gateway ({exc})")
    return exc


def should_reconnect(error: BaseException | None) -> bool:
    """Whether a listener keeps retrying after ``error``: everything but 404 (.NET ``ShouldReconnect``, spec §2.8)."""
    return not isinstance(error, EndpointNotFound)
