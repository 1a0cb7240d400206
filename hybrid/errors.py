"""One exception hierarchy for the whole project.

    RelayError                      root; carries an HTTP status and a WebSocket close code
    ├── ProtocolError               a peer broke the relay protocol (bad JSON, bad message): close 1008
    │   └── FramingError            a peer broke WebSocket framing: close 1002
    ├── AuthenticationError         401: token missing, malformed, expired or wrongly signed
    ├── AuthorizationError          403: token valid but lacks the claim or the scope
    ├── EndpointNotFound            404: no such hybrid connection (a listener stops retrying on it)
    ├── QuotaExceeded               403: too many listeners, too many attempts
    ├── BadRequest (ValueError)     400: unknown action, malformed URL or query
    ├── ListenerUnavailable         502: nobody is listening
    │   └── NodeUnreachable         the listener's node is gone (the gateway retries another listener)
    ├── RelayTimeout (TimeoutError) 504: the listener did not answer in time
    ├── RendezvousExpired           403: accept/request id unknown, reused or expired
    ├── ConfigError (ValueError)    a configuration file or flag is wrong; names the file and key
    └── ConnectionClosed (ConnectionError) the channel went away (client side)

Each subclass says how it maps onto the wire, so the gateway never chooses a status by hand.
"""

from __future__ import annotations

import json

__all__ = [
    "AuthenticationError",
    "AuthorizationError",
    "BadRequest",
    "ConfigError",
    "ConnectionClosed",
    "EndpointNotFound",
    "FramingError",
    "ListenerUnavailable",
    "NodeUnreachable",
    "PayloadTooLarge",
    "ProtocolError",
    "QuotaExceeded",
    "RelayError",
    "RelayTimeout",
    "RendezvousExpired",
]


class RelayError(Exception):
    """Root of every error this project raises on purpose."""

    http_status: int = 500
    close_code: int = 1011
    #: short Azure-style error code used in JSON error bodies
    code: str = "InternalError"

    def __init__(self, message: str = "", *, http_status: int | None = None) -> None:
        super().__init__(message or self.__class__.__doc__ or self.code)
        if http_status is not None:
            self.http_status = http_status

    @property
    def reason(self) -> str:
        """A one-line reason phrase safe for an HTTP status line."""
        text = str(self).replace("\r", " ").replace("\n", " ")
        return text[:200]

    def json_body(self) -> bytes:
        """Azure's JSON error body (spec §2.8): ``{"error": {"code": …, "message": …}}``."""
        return json.dumps({"error": {"code": self.code, "message": self.reason}}).encode()


class ProtocolError(RelayError):
    """The peer broke the relay protocol."""

    http_status = 400
    close_code = 1008
    code = "ProtocolError"


class FramingError(ProtocolError):
    """The peer broke WebSocket framing (RFC 6455): closed with 1002."""

    close_code = 1002
    code = "FramingError"


class AuthenticationError(RelayError):
    """The token is missing, malformed, expired or wrongly signed."""

    http_status = 401
    close_code = 1008
    code = "Unauthorized"


class AuthorizationError(RelayError):
    """The token is valid but does not grant this claim on this entity."""

    http_status = 403
    close_code = 1008
    code = "Forbidden"


class EndpointNotFound(RelayError):
    """No such hybrid connection."""

    http_status = 404
    close_code = 1001
    code = "EndpointNotFound"


class QuotaExceeded(RelayError):
    """A quota was exceeded."""

    http_status = 403
    close_code = 1008
    code = "QuotaExceeded"


class BadRequest(RelayError, ValueError):
    """The request is malformed."""

    http_status = 400
    close_code = 1008
    code = "BadRequest"


class PayloadTooLarge(RelayError):
    """The message is larger than the limit."""

    http_status = 413
    close_code = 1009
    code = "PayloadTooLarge"


class ListenerUnavailable(RelayError):
    """No listener is connected for this endpoint."""

    http_status = 502
    close_code = 1011
    code = "ListenerUnavailable"


class NodeUnreachable(ListenerUnavailable):
    """The gateway node that holds the chosen listener did not receive the message."""

    code = "ListenerUnavailable"


class RelayTimeout(RelayError, TimeoutError):
    """The listener did not respond in the required time."""

    http_status = 504
    close_code = 1011
    code = "GatewayTimeout"


class RendezvousExpired(RelayError):
    """The rendezvous address is unknown, already used or expired."""

    http_status = 403
    close_code = 1008
    code = "RendezvousExpired"


class ConfigError(RelayError, ValueError):
    """A configuration file or command-line flag is invalid."""

    http_status = 500
    code = "ConfigError"


class ConnectionClosed(RelayError, ConnectionError):
    """The connection was closed."""

    http_status = 502
    close_code = 1001
    code = "ConnectionClosed"
