"""The on-premises side of the WCF-style relay bindings: Spyne services run on raw request bytes."""

from __future__ import annotations

from wcfrelay import compat as _compat

# Every module in this package imports spyne. The package import runs first, so the compatibility
# measure is in place whatever order a formatter sorts the modules' own imports in.
_compat.ensure_spyne_importable()

from wcfrelay.service.forward import SoapForwarder
from wcfrelay.service.handler import EndpointHandler, callback_channel
from wcfrelay.service.host import (
    AddressAlreadyInUse,
    ConnectionStatus,
    HybridEndpoint,
    RelayEndpoint,
    RelayServiceHost,
)
from wcfrelay.service.spyne_app import (
    DEFAULT_MAX_REQUEST_SIZE,
    Protocol,
    SoapResult,
    SpyneBytesApp,
    build_application,
    parse_content_type,
    request_action,
)
from wcfrelay.service.websocket import CallbackChannel

__all__ = [
    "DEFAULT_MAX_REQUEST_SIZE",
    "AddressAlreadyInUse",
    "CallbackChannel",
    "ConnectionStatus",
    "EndpointHandler",
    "HybridEndpoint",
    "Protocol",
    "RelayEndpoint",
    "RelayServiceHost",
    "SoapForwarder",
    "SoapResult",
    "SpyneBytesApp",
    "build_application",
    "callback_channel",
    "parse_content_type",
    "request_action",
]
