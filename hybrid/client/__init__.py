"""Python SDK for Hybrid Connections: listeners and senders on ``websockets`` (asyncio).

The same code runs against this project's gateway and Azure Relay::

    from hybrid.client import HybridConnectionListener, HybridConnectionClient

    async with HybridConnectionListener(connection_string) as listener:
        async for conn in listener:
            ...

See ``docs/python-sdk.md`` for a guide.
"""

from __future__ import annotations

from .addressing import RelayAddress
from .connection import RelayedConnection
from .http import RelayedHttpRequest, RelayedHttpResponse, RequestHandler
from .listener import AcceptContext, AcceptHandler, ConnectionHandler, HybridConnectionListener
from .sender import HttpResponse, HybridConnectionClient
from .status import DEFAULT_RECONNECT_DELAYS, ListenerStatus, ReconnectLadder
from .tokens import SharedAccessKeyTokenProvider, SharedAccessSignatureTokenProvider, TokenProvider

__all__ = [
    "DEFAULT_RECONNECT_DELAYS",
    "AcceptContext",
    "AcceptHandler",
    "ConnectionHandler",
    "HttpResponse",
    "HybridConnectionClient",
    "HybridConnectionListener",
    "ListenerStatus",
    "ReconnectLadder",
    "RelayAddress",
    "RelayedConnection",
    "RelayedHttpRequest",
    "RelayedHttpResponse",
    "RequestHandler",
    "SharedAccessKeyTokenProvider",
    "SharedAccessSignatureTokenProvider",
    "TokenProvider",
]
