"""Where a hybrid connection lives and the URLs a client opens to reach it (spec §1, §3.3). Pure: no I/O.

A hybrid connection is named by an ``sb://host[:port]/entity`` address, as in Azure connection strings
(``Endpoint=sb://…/;…;EntityPath=entity``, spec §7). The WebSocket URLs are ``wss://host[:port]/$hc/entity…``;
plain ``ws://`` is allowed for local gateways (spec §5.3). No port means the scheme's default (443 for ``wss``),
so the same address works against Azure Relay.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

from ..auth import ConnectionString
from ..errors import ConfigError
from ..protocol.urls import HC_PREFIX, filter_query

if TYPE_CHECKING:
    from .tokens import TokenProvider

__all__ = [
    "RelayAddress",
    "is_connection_string",
    "new_tracking_id",
    "reject_url",
    "split_accept_address",
]

#: Characters left alone when quoting a path suffix: path sub-delimiters and '%' so pre-encoded input survives.
_PATH_SAFE = "/%-._~!$&'()*+,;=:@"

_TLS_SCHEMES = {"sb": True, "wss": True, "https": True, "ws": False, "http": False}


def new_tracking_id() -> str:
    """A bare GUID in ``D`` format, as .NET sends in ``sb-hc-id`` on listen and connect (spec §1.2)."""
    return str(uuid.uuid4())


def is_connection_string(text: str) -> bool:
    """True if ``text`` looks like ``Endpoint=…;…`` rather than an address."""
    return text.strip().lower().startswith("endpoint=")


def _normalise_suffix(suffix: str) -> str:
    if not suffix:
        return ""
    if not suffix.startswith("/"):
        suffix = "/" + suffix
    return quote(suffix, safe=_PATH_SAFE)


def _normalise_query(query: str) -> str:
    return query.removeprefix("?")


@dataclass(frozen=True)
class RelayAddress:
    """A hybrid connection: gateway host, optional port, entity name and whether to use TLS."""

    host: str
    entity: str
    port: int | None = None
    tls: bool = True

    @classmethod
    def parse(
        cls,
        address: str,
        *,
        entity_path: str | None = None,
        tls: bool | None = None,
        scheme: str | None = None,
    ) -> RelayAddress:
        """Parse ``sb://host[:port]/entity`` (``ws``, ``wss``, ``http``, ``https`` also accepted).

        ``entity_path`` is appended to the address path, as .NET does with ``new Uri(Endpoint, EntityPath)``.
        TLS follows the scheme (``sb``/``wss``/``https`` mean TLS) unless ``tls`` or ``scheme`` says otherwise.
        """
        parts = urlsplit(address.strip())
        if parts.scheme.lower() not in _TLS_SCHEMES or not parts.hostname:
            raise ConfigError(f"address must look like sb://host[:port]/entity, got {address!r}")
        try:
            port = parts.port
        except ValueError:
            raise ConfigError(f"address has an invalid port: {address!r}") from None
        segments = [s for s in parts.path.split("/") if s]
        if entity_path:
            segments += [s for s in entity_path.split("/") if s]
        entity = "/".join(segments)
        if not entity:
            raise ConfigError("no hybrid connection name: give EntityPath or an address with a path")
        if scheme is not None:
            if scheme.lower() not in _TLS_SCHEMES:
                raise ConfigError(f"unknown scheme {scheme!r}: expected ws, wss, http, https or sb")
            use_tls = _TLS_SCHEMES[scheme.lower()]
            if tls is not None and tls != use_tls:
                raise ConfigError(f"scheme {scheme!r} contradicts tls={tls}")
        elif tls is not None:
            use_tls = tls
        else:
            use_tls = _TLS_SCHEMES[parts.scheme.lower()]
        return cls(host=parts.hostname, entity=entity, port=port, tls=use_tls)

    @classmethod
    def from_connection_string(
        cls,
        connection_string: str | ConnectionString,
        *,
        entity_path: str | None = None,
        tls: bool | None = None,
        scheme: str | None = None,
    ) -> RelayAddress:
        """The address named by a connection string; ``entity_path`` overrides ``EntityPath``."""
        cs = (
            connection_string
            if isinstance(connection_string, ConnectionString)
            else ConnectionString.parse(connection_string)
        )
        entity = entity_path or cs.entity_path
        if not entity:
            raise ConfigError("connection string has no EntityPath and no entity was given")
        return cls.parse(cs.endpoint, entity_path=entity, tls=tls, scheme=scheme)

    # -- pieces -----------------------------------------------------------------------------------

    @property
    def authority(self) -> str:
        """``host[:port]``, with IPv6 hosts bracketed."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}" if self.port is not None else host

    @property
    def ws_scheme(self) -> str:
        return "wss" if self.tls else "ws"

    @property
    def http_scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def entity_path(self) -> str:
        """The entity name percent-encoded for a URL path (it may contain ``/``, spec §1.1)."""
        return quote(self.entity, safe="/")

    @property
    def audience(self) -> str:
        """The SAS audience ``http://host[:port]/entity`` (spec §3.3: the gateway ignores scheme and port)."""
        return f"http://{self.authority}/{self.entity_path}"

    @property
    def sb_uri(self) -> str:
        """``sb://host[:port]/entity``: the .NET-style address."""
        return f"sb://{self.authority}/{self.entity_path}"

    # -- URLs -------------------------------------------------------------------------------------

    def listen_url(self, tracking_id: str) -> str:
        """Control channel: ``…/$hc/{entity}?sb-hc-action=listen&sb-hc-id=…`` (spec §1.1)."""
        return (
            f"{self.ws_scheme}://{self.authority}/{HC_PREFIX}/{self.entity_path}"
            f"?sb-hc-action=listen&sb-hc-id={quote(tracking_id, safe='')}"
        )

    def connect_url(self, tracking_id: str, suffix: str = "", query: str = "") -> str:
        """Sender: ``…/$hc/{entity}[/suffix]?[app-query&]sb-hc-action=connect&sb-hc-id=…`` (spec §1.1, §1.3)."""
        app_query = _normalise_query(query)
        relay = f"sb-hc-action=connect&sb-hc-id={quote(tracking_id, safe='')}"
        full_query = f"{app_query}&{relay}" if app_query else relay
        return (
            f"{self.ws_scheme}://{self.authority}/{HC_PREFIX}/{self.entity_path}"
            f"{_normalise_suffix(suffix)}?{full_query}"
        )

    def http_url(self, suffix: str = "", query: str = "") -> str:
        """HTTP sender: ``http(s)://host[:port]/{entity}[/suffix][?query]`` with **no** ``$hc`` (spec §1.1)."""
        app_query = _normalise_query(query)
        url = f"{self.http_scheme}://{self.authority}/{self.entity_path}{_normalise_suffix(suffix)}"
        return f"{url}?{app_query}" if app_query else url


def reject_url(address: str, status_code: int, description: str) -> str:
    """The accept address with the rejection parameters .NET uses (spec §1.2, §2.6)."""
    separator = "&" if "?" in address else "?"
    return (
        f"{address}{separator}sb-hc-statusCode={int(status_code)}"
        f"&sb-hc-statusDescription={quote(description, safe='')}"
    )


def split_accept_address(address: str, entity: str) -> tuple[str, str, str]:
    """Recover ``(path, suffix, app_query)`` from an ``accept``/``request`` address (spec §1.3).

    Like .NET's ``GenerateAcceptRequestUri``: drop ``$hc/`` from the path and the ``sb-hc-*`` pairs from the query.
    ``path`` is ``/entity/suffix`` (still percent-encoded); ``suffix`` is what follows the entity name, or ``""``.
    """
    parts = urlsplit(address)
    path = parts.path
    prefix = "/" + HC_PREFIX
    if path.lower() == prefix.lower():
        path = "/"
    elif path.lower().startswith(prefix.lower() + "/"):
        path = path[len(prefix):]
    entity_prefix = "/" + quote(entity, safe="/")
    suffix = ""
    lowered = path.lower()
    if lowered == entity_prefix.lower():
        suffix = ""
    elif lowered.startswith(entity_prefix.lower() + "/"):
        suffix = path[len(entity_prefix):]
    else:
        # The gateway handed out an address for another path; give the application everything.
        suffix = path
    return path, suffix, filter_query(parts.query)


def resolve_endpoint(
    address: str | ConnectionString,
    token_provider: TokenProvider | None,
    *,
    entity_path: str | None,
    tls: bool | None,
    scheme: str | None,
) -> tuple[RelayAddress, TokenProvider | None]:
    """Where a listener or sender connects, and with which tokens: a connection string brings its own key
    (unless a token provider is given), a plain address uses the provider it comes with."""
    from .tokens import token_provider_from_connection_string

    if isinstance(address, ConnectionString) or is_connection_string(address):
        cs = address if isinstance(address, ConnectionString) else ConnectionString.parse(address)
        resolved = RelayAddress.from_connection_string(cs, entity_path=entity_path, tls=tls, scheme=scheme)
        return resolved, token_provider if token_provider is not None else token_provider_from_connection_string(cs)
    return RelayAddress.parse(address, entity_path=entity_path, tls=tls, scheme=scheme), token_provider
