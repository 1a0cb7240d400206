"""zeep callers of relay endpoints: the Send token on every request, renewed before it expires.

The WSDL a relayed endpoint publishes already names the gateway's public URL in ``soap:address``, so zeep only
needs the token. It travels, per request, in one of the carriers the gateway accepts (and strips before the
service sees anything):

* ``"ServiceBusAuthorization"`` (default): the HTTP header WCF Relay prefers;
* ``"Authorization"``: the standard header (leave it alone if the service does its own end-to-end auth);
* ``"soap"``: the ``RelayAccessToken`` SOAP header non-.NET callers of WCF Relay used
  (:func:`wcfrelay.soap.relay_token_header`); GET requests (the WSDL) still carry the HTTP header.
"""

from __future__ import annotations

from typing import Any, Literal

import requests
import zeep
from lxml import etree
from zeep.plugins import Plugin

from hybrid.auth import ConnectionString
from hybrid.client.tokens import DEFAULT_TOKEN_TTL
from hybrid.errors import ConfigError
from wcfrelay import soap
from wcfrelay.client.tokens import RelayToken, TokenSource, audience_for

__all__ = [
    "RelayAccessTokenPlugin",
    "RelayTokenAuth",
    "TokenCarrier",
    "add_relay_token_header",
    "relay_zeep_client",
]

TokenCarrier = Literal["ServiceBusAuthorization", "Authorization", "soap"]
_CARRIERS = ("ServiceBusAuthorization", "Authorization", "soap")


def check_carrier(carrier: str) -> str:
    if carrier not in _CARRIERS:
        raise ConfigError(f"token_carrier must be one of {', '.join(_CARRIERS)}, not {carrier!r}")
    return carrier


class RelayTokenAuth(requests.auth.AuthBase):
    """A ``requests`` auth hook: puts the current token in ``header`` on each request.

    ``post=False`` leaves POSTs alone (when the token travels in the SOAP envelope instead).
    """

    def __init__(self, token: RelayToken, header: str = "ServiceBusAuthorization", *, post: bool = True) -> None:
        self.token = token
        self.header = header
        self.post = post

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if not self.post and (request.method or "").upper() == "POST":
            return request
        value = self.token.get()
        if value:
            request.headers[self.header] = value
        return request


def add_relay_token_header(envelope: etree._Element, token: str) -> etree._Element:
    """Insert a ``RelayAccessToken`` header block (replacing any) into a SOAP 1.1 or 1.2 envelope, in place."""
    namespace = etree.QName(envelope).namespace
    if namespace not in (soap.SOAP11_ENV_NS, soap.SOAP12_ENV_NS):
        raise ValueError(f"not a SOAP envelope: {envelope.tag}")
    header = envelope.find(f"{{{namespace}}}Header")
    if header is None:
        header = etree.Element(f"{{{namespace}}}Header")
        envelope.insert(0, header)
    for old in header.findall(soap.RELAY_ACCESS_TOKEN):
        header.remove(old)
    header.insert(0, soap.relay_token_header(token))
    return envelope


class RelayAccessTokenPlugin(Plugin):
    """A zeep plugin that sends the token as the ``RelayAccessToken`` SOAP header of every request."""

    def __init__(self, token: RelayToken) -> None:
        self.token = token

    def egress(self, envelope: etree._Element, http_headers: dict, operation: Any, binding_options: Any):
        value = self.token.get()
        if value:
            add_relay_token_header(envelope, value)
        return envelope, http_headers


def relay_zeep_client(
    wsdl_address: str,
    *,
    connection_string: str | ConnectionString | None = None,
    token_provider: TokenSource | None = None,
    audience: str | None = None,
    token_carrier: TokenCarrier = "ServiceBusAuthorization",
    token_ttl: float = DEFAULT_TOKEN_TTL,
    session: requests.Session | None = None,
    timeout: float = 300,
    operation_timeout: float | None = None,
    **zeep_kwargs: Any,
) -> zeep.Client:
    """A ``zeep.Client`` for the relayed endpoint whose WSDL is at ``wsdl_address`` (``…/path?wsdl``).

    Credentials: a connection string (``SharedAccessKeyName``/``SharedAccessKey`` sign tokens locally) or a
    ``token_provider`` (a :class:`hybrid.client.tokens.TokenProvider`, a ready token, or a function
    ``(audience, ttl) -> token``); neither for endpoints with ``client_authentication="none"``. The token is for
    ``audience`` (default: the WSDL URL's path, i.e. the endpoint) and is added to every request, the WSDL fetch
    included. Other keyword arguments go to ``zeep.Client`` (``plugins``, ``settings``, ``wsse``, ``service_name``…).
    """
    check_carrier(token_carrier)
    token = RelayToken.from_credentials(audience or audience_for(wsdl_address), connection_string=connection_string,
                                        token_provider=token_provider, ttl=token_ttl)
    session = session or requests.Session()
    header = "Authorization" if token_carrier == "Authorization" else "ServiceBusAuthorization"
    session.auth = RelayTokenAuth(token, header, post=token_carrier != "soap")
    if "transport" in zeep_kwargs:
        raise ConfigError("relay_zeep_client builds its own transport; pass session=, timeout=, operation_timeout=")
    transport = zeep.Transport(session=session, timeout=timeout, operation_timeout=operation_timeout)
    plugins = list(zeep_kwargs.pop("plugins", None) or [])
    if token_carrier == "soap":
        plugins.append(RelayAccessTokenPlugin(token))
    client = zeep.Client(wsdl_address, transport=transport, plugins=plugins, **zeep_kwargs)
    client.relay_token = token  # type: ignore[attr-defined]
    return client
