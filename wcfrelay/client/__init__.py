"""Callers of relayed SOAP endpoints: zeep (sync and async) with the relay Send token on every request.

::

    from wcfrelay.client import relay_zeep_client

    client = relay_zeep_client("https://relay.example.com/calculator?wsdl", connection_string=cs)
    client.service.Add(1, 2)

``relay_async_zeep_client`` gives a ``zeep.AsyncClient`` on :class:`AiohttpTransport`. The token travels in the
``ServiceBusAuthorization`` header by default (``token_carrier="Authorization"`` or ``"soap"`` for the
``RelayAccessToken`` SOAP header).
"""

from __future__ import annotations

from wcfrelay.client.aiohttp_transport import AiohttpTransport, relay_async_zeep_client
from wcfrelay.client.tokens import RelayToken, TokenSource, audience_for
from wcfrelay.client.zeep_client import (
    RelayAccessTokenPlugin,
    RelayTokenAuth,
    TokenCarrier,
    add_relay_token_header,
    relay_zeep_client,
)

__all__ = [
    "AiohttpTransport",
    "RelayAccessTokenPlugin",
    "RelayToken",
    "RelayTokenAuth",
    "TokenCarrier",
    "TokenSource",
    "add_relay_token_header",
    "audience_for",
    "relay_async_zeep_client",
    "relay_zeep_client",
]
