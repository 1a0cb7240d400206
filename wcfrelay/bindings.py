"""The relay bindings a :class:`~wcfrelay.service.host.RelayServiceHost` endpoint can use. Pure: no I/O.

Each binding names what a WCF Relay binding of the same name meant, as far as a plain HTTP/SOAP caller of the
gateway can tell, and maps onto the listener link (:class:`wcfrelay.link.Registration`) plus the Spyne protocol
the service must speak:

============================  ==============  =========================================  ==========================
binding                       link binding    what callers send                          Spyne protocol
============================  ==============  =========================================  ==========================
BasicHttpRelayBinding         ``basicHttp``   SOAP 1.1 request/reply (WS-I BP 1.1)       ``soap11``
WS2007HttpRelayBinding        ``ws2007Http``  SOAP 1.2 + WS-Addressing 1.0, no security  ``soap12``
WebHttpRelayBinding           ``webHttp``     plain HTTP (query/form/JSON in, JSON out)  ``http``
NetOnewayRelayBinding         ``netOneway``   SOAP 1.2 one-way, one receiver, <= 64 KB   ``soap12``
NetEventRelayBinding          ``netEvent``    SOAP 1.2 one-way to every receiver         ``soap12``
HybridConnectionRelayBinding  (none)          SOAP over relayed HTTP, and over one       ``soap12`` (or ``soap11``)
                                              hybrid WebSocket with callbacks
============================  ==============  =========================================  ==========================

:class:`HybridConnectionRelayBinding` is what :mod:`wcfrelay.migrate` calls ``hybridConnection`` (the home of
former NetTcpRelayBinding endpoints): no listener link, but a Hybrid Connections listener on the hybrid connection
named by the endpoint's path. Callers use the same ``http(s)://gateway/{path}`` URL and WSDL as with
BasicHttpRelayBinding, or one hybrid WebSocket carrying SOAP envelopes as messages (see docs/soap-over-hybrid.md).

``client_authentication`` is WCF's ``RelayClientAuthenticationType``: ``relayAccessToken`` (the default: every
caller needs a Send token) or ``none`` (anyone may call; the service does its own access control). The host
always needs a Listen token. ``max_received_message_size`` bounds one request (and, on the host, one reply);
request/reply bindings default to :data:`wcfrelay.link.DEFAULT_MAX_MESSAGE`, the one-way bindings to the 64 KB of
WCF Relay's NetOneway/NetEvent.

:class:`ServiceRegistrySettings` is WCF's endpoint behaviour of that name: ``discovery="public"`` lists the
endpoint in the gateway's Atom feed (``GET /``) under ``display_name``; ``"private"`` (the default, as in WCF)
keeps it out of the feed while it stays callable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from hybrid.errors import ConfigError
from wcfrelay import link

__all__ = [
    "BasicHttpRelayBinding",
    "HybridConnectionRelayBinding",
    "NetEventRelayBinding",
    "NetOnewayRelayBinding",
    "RelayBinding",
    "ServiceRegistrySettings",
    "WS2007HttpRelayBinding",
    "WebHttpRelayBinding",
    "binding_for",
    "link_message_limit",
]

ClientAuthentication = Literal["relayAccessToken", "none"]
SpyneProtocol = Literal["soap11", "soap12", "http"]

#: the name ``wcfrelay.migrate`` (host.toml ``binding = …``) gives :class:`HybridConnectionRelayBinding`
HYBRID_CONNECTION = "hybridConnection"
#: the largest message a hybrid endpoint may be configured for (hybrid connections stream; the host enforces it)
HYBRID_MAX_MESSAGE = 2**31 - 1

#: spellings accepted for ``client_authentication`` (WCF's enum names, the link's values, any case)
_CLIENT_AUTH = {
    "relayaccesstoken": link.ClientAuth.RELAY_ACCESS_TOKEN,
    "none": link.ClientAuth.NONE,
}


def _client_auth(value: str | link.ClientAuth) -> link.ClientAuth:
    if isinstance(value, link.ClientAuth):
        return value
    try:
        return _CLIENT_AUTH[str(value).replace("_", "").lower()]
    except KeyError:
        raise ConfigError(
            f"client_authentication must be 'relayAccessToken' or 'none', not {value!r}"
        ) from None


def link_message_limit(max_message: int) -> int:
    """The largest link message (length prefix + JSON header + body) a host accepts for ``max_message`` bodies."""
    return max_message + link.MAX_HEADER + 4


@dataclass(frozen=True)
class RelayBinding:
    """What every relay binding has. Use one of the subclasses."""

    #: the link binding this maps to; set by each subclass (None: no listener link, see HybridConnectionRelayBinding)
    link_binding: ClassVar[link.Binding | None]
    #: the Spyne protocol (``build_application(protocol=…)``) the service must use on this binding
    protocol: ClassVar[SpyneProtocol]

    client_authentication: ClientAuthentication | link.ClientAuth = "relayAccessToken"
    #: bytes; None means the binding's default (16 MiB request/reply, 64 KB one-way)
    max_received_message_size: int | None = None

    def __post_init__(self) -> None:
        if type(self) is RelayBinding:
            raise TypeError("RelayBinding is abstract: use BasicHttpRelayBinding, WS2007HttpRelayBinding, …")
        _client_auth(self.client_authentication)  # validate early
        limit = self.size_limit
        size = self.max_received_message_size
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= limit):
            raise ConfigError(
                f"{type(self).__name__}: max_received_message_size must be between 1 and {limit} bytes, not {size!r}"
            )

    # -- what the binding means ----------------------------------------------------------------------

    @property
    def name(self) -> str:
        return type(self).__name__

    @property
    def _link(self) -> link.Binding:
        """The link binding; only the hybrid binding has none, and it overrides what uses this."""
        if self.link_binding is None:
            raise ConfigError(f"{type(self).__name__} does not use the WCF-style listener link")
        return self.link_binding

    @property
    def one_way(self) -> bool:
        """True when callers get 202 as soon as the message is delivered (NetOneway, NetEvent)."""
        return self._link.one_way

    @property
    def multicast(self) -> bool:
        """True when every host registered on the address receives each message (NetEvent)."""
        return self.link_binding is link.Binding.NET_EVENT

    @property
    def size_limit(self) -> int:
        """The largest ``max_received_message_size`` the link allows for this binding."""
        return link.ONEWAY_MAX_MESSAGE if self._link.one_way else link.DEFAULT_MAX_MESSAGE

    @property
    def max_message(self) -> int:
        """The effective message size limit in bytes."""
        return self.max_received_message_size if self.max_received_message_size is not None else self.size_limit

    @property
    def client_auth(self) -> link.ClientAuth:
        return _client_auth(self.client_authentication)

    @property
    def ws_addressing(self) -> bool:
        """Whether replies carry WS-Addressing ``Action``/``RelatesTo`` (the WS2007 binding's message version)."""
        return False

    def registration(self, path: str, registry: ServiceRegistrySettings | None = None) -> link.Registration:
        """The link registration for an endpoint at ``path`` (the query of ``/$wcf/{path}``)."""
        registry = registry or ServiceRegistrySettings()
        return link.Registration(
            binding=self._link,
            client_auth=self.client_auth,
            discovery=link.Discovery(registry.discovery),
            display_name=registry.display_name_for(path),
            max_message=self.max_message,
        )

    def check_protocol(self, protocol: str) -> None:
        """Raise ConfigError unless a service speaking ``protocol`` fits this binding."""
        if protocol != self.protocol:
            raise ConfigError(
                f"{self.name} needs a Spyne application built with protocol={self.protocol!r} "
                f"(build_application(..., protocol={self.protocol!r})), but this one speaks {protocol!r}"
            )


@dataclass(frozen=True)
class BasicHttpRelayBinding(RelayBinding):
    """SOAP 1.1 request/reply, WS-I Basic Profile 1.1: what ASMX, suds, zeep and ``BasicHttpBinding`` speak."""

    link_binding: ClassVar[link.Binding] = link.Binding.BASIC_HTTP
    protocol: ClassVar[SpyneProtocol] = "soap11"


@dataclass(frozen=True)
class WS2007HttpRelayBinding(RelayBinding):
    """SOAP 1.2 with WS-Addressing 1.0 replies (``RelatesTo`` = the request's ``MessageID``).

    Only ``security_mode="None"`` exists here, as in the WCF sample ``RelayWSHttpSimple``: message security
    (WS-Security, reliable sessions, transactions) is not provided. Transport privacy is the gateway's TLS.
    """

    link_binding: ClassVar[link.Binding] = link.Binding.WS2007_HTTP
    protocol: ClassVar[SpyneProtocol] = "soap12"

    security_mode: str = "None"

    def __post_init__(self) -> None:
        super().__post_init__()
        if str(self.security_mode).lower() != "none":
            raise ConfigError(
                f"WS2007HttpRelayBinding supports security_mode='None' only, not {self.security_mode!r}: "
                "WS-Security message security is not provided (use TLS on the gateway for transport privacy)"
            )

    @property
    def ws_addressing(self) -> bool:
        return True


@dataclass(frozen=True)
class WebHttpRelayBinding(RelayBinding):
    """Plain HTTP operations (WCF's Web programming model): Spyne ``HttpRpc`` in, JSON out."""

    link_binding: ClassVar[link.Binding] = link.Binding.WEB_HTTP
    protocol: ClassVar[SpyneProtocol] = "http"


@dataclass(frozen=True)
class NetOnewayRelayBinding(RelayBinding):
    """One-way SOAP 1.2 messages (at most 64 KB), each delivered to one of the hosts on the address.

    Callers get HTTP 202 once a host has the message; operations should be one-way (Spyne ``_is_async=True``):
    the reply of a request/reply operation on this binding is discarded.
    """

    link_binding: ClassVar[link.Binding] = link.Binding.NET_ONEWAY
    protocol: ClassVar[SpyneProtocol] = "soap12"


@dataclass(frozen=True)
class NetEventRelayBinding(RelayBinding):
    """Multicast: every one-way message goes to every host on the address (at most 25), publish/subscribe style.

    Callers get HTTP 202 with ``X-Relay-Receivers`` = the number of hosts that acknowledged the message.
    """

    link_binding: ClassVar[link.Binding] = link.Binding.NET_EVENT
    protocol: ClassVar[SpyneProtocol] = "soap12"


@dataclass(frozen=True)
class HybridConnectionRelayBinding(RelayBinding):
    """The service on a hybrid connection (Hybrid Connections protocol) instead of a listener link.

    The host runs a :class:`hybrid.client.HybridConnectionListener` on the hybrid connection named by the endpoint's
    path. Two kinds of callers reach it there:

    * relayed HTTP (``http=True``): ``POST http(s)://gateway/{path}`` with a SOAP envelope and ``GET …?wsdl``,
      exactly as with :class:`BasicHttpRelayBinding` (or WS2007Http for a SOAP 1.2 service), so moving a service
      here is a configuration change for its callers;
    * SOAP over a hybrid WebSocket (``websocket=True``): one sender WebSocket carries SOAP envelopes as text
      messages, many calls in flight correlated by WS-Addressing ``MessageID``/``RelatesTo``, and one-way
      callbacks from the service to the caller (duplex contracts): the open counterpart of NetTcpRelayBinding.

    The application may speak SOAP 1.2 (the default, what ``wcfrelay migrate`` plans) or SOAP 1.1.
    ``client_authentication`` is informational here: whether senders need a token is a property of the hybrid
    connection on the gateway (``requires_client_authorization`` in gateway.toml), not of the listener.
    ``max_calls_per_connection`` bounds the calls in flight on one WebSocket (past it the host stops reading that
    socket). ``max_received_message_size`` (default 16 MiB) bounds one request or WebSocket message.
    """

    link_binding: ClassVar[link.Binding | None] = None
    protocol: ClassVar[SpyneProtocol] = "soap12"
    #: the Spyne protocols an application on this binding may use
    protocols: ClassVar[tuple[str, ...]] = ("soap12", "soap11")

    http: bool = True
    websocket: bool = True
    max_calls_per_connection: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (self.http or self.websocket):
            raise ConfigError("HybridConnectionRelayBinding: enable http, websocket or both")
        count = self.max_calls_per_connection
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 10_000:
            raise ConfigError(f"max_calls_per_connection must be between 1 and 10000, not {count!r}")

    @property
    def one_way(self) -> bool:
        return False

    @property
    def multicast(self) -> bool:
        return False

    @property
    def size_limit(self) -> int:
        return HYBRID_MAX_MESSAGE

    @property
    def max_message(self) -> int:
        return self.max_received_message_size if self.max_received_message_size is not None \
            else link.DEFAULT_MAX_MESSAGE

    @property
    def ws_addressing(self) -> bool:
        return True

    def registration(self, path: str, registry: ServiceRegistrySettings | None = None) -> link.Registration:
        raise ConfigError(f"{self.name} registers no listener link: the endpoint {path!r} is a hybrid connection")

    def check_protocol(self, protocol: str) -> None:
        if protocol not in self.protocols:
            raise ConfigError(
                f"{self.name} needs a SOAP application (build_application(..., protocol='soap12') or 'soap11'), "
                f"but this one speaks {protocol!r}"
            )


_BY_LINK: dict[link.Binding, type[RelayBinding]] = {
    cls.link_binding: cls  # type: ignore[misc]
    for cls in (
        BasicHttpRelayBinding,
        WS2007HttpRelayBinding,
        WebHttpRelayBinding,
        NetOnewayRelayBinding,
        NetEventRelayBinding,
    )
}


def binding_for(name: str | link.Binding, **options: object) -> RelayBinding:
    """A binding object from its link name (``"basicHttp"``), ``"hybridConnection"``, or class name
    (``"BasicHttpRelayBinding"``)."""
    if isinstance(name, link.Binding):
        return _BY_LINK[name](**options)  # type: ignore[arg-type]
    if name.lower() in (HYBRID_CONNECTION.lower(), HybridConnectionRelayBinding.__name__.lower()):
        return HybridConnectionRelayBinding(**options)  # type: ignore[arg-type]
    for binding, cls in _BY_LINK.items():
        if name in (binding.value, cls.__name__) or name.lower() in (binding.value.lower(), cls.__name__.lower()):
            return cls(**options)  # type: ignore[arg-type]
    raise ConfigError(
        f"unknown binding {name!r}; expected one of " + ", ".join([b.value for b in _BY_LINK] + [HYBRID_CONNECTION])
    )


@dataclass(frozen=True)
class ServiceRegistrySettings:
    """Whether an endpoint is listed in the gateway's discovery feed, and under which title.

    ``discovery`` is ``"public"`` or ``"private"`` (WCF's ``DiscoveryType``; private is the default). The
    ``display_name`` becomes the Atom entry's ``<title>``; by default it is the last segment of the path.
    """

    discovery: Literal["public", "private"] | link.Discovery = "private"
    display_name: str | None = field(default="")

    def __post_init__(self) -> None:
        value = self.discovery.value if isinstance(self.discovery, link.Discovery) else str(self.discovery).lower()
        if value not in ("public", "private"):
            raise ConfigError(f"discovery must be 'public' or 'private', not {self.discovery!r}")
        object.__setattr__(self, "discovery", value)
        if self.display_name is None:
            object.__setattr__(self, "display_name", "")
        name = self.display_name
        if not isinstance(name, str) or len(name) > 256 or any(ord(c) < 32 for c in name):
            raise ConfigError("display_name must be at most 256 printable characters")

    def display_name_for(self, path: str) -> str:
        """The title to register for an endpoint at ``path``."""
        if self.display_name:
            return self.display_name
        segments = [s for s in path.split("/") if s]
        return segments[-1][:256] if segments else ""
