"""``HybridConnectionClient``: the sender side (spec §1.1, §1.3, §2.8).

``connect()`` opens ``…/$hc/{entity}[/suffix]?[query&]sb-hc-action=connect&sb-hc-id=…`` and returns the relayed
WebSocket once a listener has accepted it. ``request()`` sends a plain HTTP request to
``http(s)://host[:port]/{entity}[/suffix]`` (no ``$hc``) with the token in ``ServiceBusAuthorization``.
"""

from __future__ import annotations

import json
import ssl as ssl_module
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from ..auth import ConnectionString
from ..errors import ConnectionClosed, RelayTimeout
from ._transport import USER_AGENT, open_websocket
from .addressing import new_tracking_id, resolve_endpoint
from .connection import RelayedConnection
from .tokens import DEFAULT_TOKEN_TTL, TokenProvider

__all__ = ["HttpResponse", "HybridConnectionClient"]


@dataclass(frozen=True)
class HttpResponse:
    """A relayed HTTP response, read in full."""

    status: int
    reason: str
    headers: CIMultiDictProxy[str]
    body: bytes

    def text(self, encoding: str = "utf-8") -> str:
        """The body decoded as text."""
        return self.body.decode(encoding)

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


class HybridConnectionClient:
    """Send to a hybrid connection: WebSocket connections with :meth:`connect`, HTTP requests with :meth:`request`.

    Address it like a listener: a connection string (with ``EntityPath`` or ``entity_path=``), or an
    ``sb://host[:port]/entity`` address and a token provider. With no token provider the sender is anonymous,
    which works for hybrid connections with ``requiresClientAuthorization`` off (spec §4).
    """

    def __init__(
        self,
        address: str | ConnectionString,
        token_provider: TokenProvider | None = None,
        *,
        entity_path: str | None = None,
        tls: bool | None = None,
        scheme: str | None = None,
        ssl: ssl_module.SSLContext | None = None,
        token_ttl: float = DEFAULT_TOKEN_TTL,
        open_timeout: float = 70.0,
        ping_interval: float | None = 30.0,
        ping_timeout: float | None = 30.0,
        max_message_size: int | None = 16 << 20,
        proxy: str | bool | None = True,
        http_timeout: float = 70.0,
    ) -> None:
        self.address, token_provider = resolve_endpoint(address, token_provider, entity_path=entity_path, tls=tls,
                                                        scheme=scheme)
        self.token_provider = token_provider
        self._ssl = ssl
        self._token_ttl = token_ttl
        self._open_timeout = open_timeout  # .NET DefaultConnectTimeout is 70 s (spec §2.9)
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._max_message_size = max_message_size
        self._proxy = proxy
        self._http_timeout = http_timeout
        self._session: aiohttp.ClientSession | None = None

    @property
    def entity(self) -> str:
        """The hybrid connection's name."""
        return self.address.entity

    async def _auth_headers(self) -> dict[str, str]:
        if self.token_provider is None:
            return {}
        token, _ = await self.token_provider.get_token(self.address.audience, self._token_ttl)
        return {"ServiceBusAuthorization": token}

    async def connect(
        self,
        suffix: str = "",
        query: str = "",
        headers: Mapping[str, str] | None = None,
        subprotocols: Sequence[str] | None = None,
    ) -> RelayedConnection:
        """Open a relayed WebSocket. ``suffix`` and ``query`` reach the listener inside ``accept.address`` (§1.3);
        ``headers`` reach it in ``connectHeaders``.

        Raises the ``hybrid.errors`` type for the HTTP status: 401 AuthenticationError, 403 AuthorizationError,
        404 EndpointNotFound (also: nobody listening), and for a listener's rejection the class for its status
        (e.g. BadRequest for 400), or a plain RelayError, with ``http_status`` and ``status_description`` set.
        """
        tracking_id = new_tracking_id()
        all_headers = {**dict(headers or {}), **await self._auth_headers()}
        ws = await open_websocket(
            self.address.connect_url(tracking_id, suffix, query),
            what="connect",
            headers=all_headers,
            subprotocols=subprotocols,
            ssl=self._ssl,
            proxy=self._proxy,
            open_timeout=self._open_timeout,
            ping_interval=self._ping_interval,
            ping_timeout=self._ping_timeout,
            max_size=self._max_message_size,
        )
        return RelayedConnection(ws, tracking_id=tracking_id)

    async def request(
        self,
        method: str,
        suffix: str = "",
        query: str = "",
        headers: Mapping[str, str] | None = None,
        body: bytes | str = b"",
        *,
        timeout: float | None = None,
    ) -> HttpResponse:
        """Send an HTTP request through the relay and read the whole response.

        Gateway errors come back as responses, not exceptions (e.g. 502 when nobody listens, spec §2.8);
        ConnectionClosed or RelayTimeout is raised only if the gateway cannot be reached or does not answer.
        """
        session = self._get_session()
        url = URL(self.address.http_url(suffix, query), encoded=True)
        all_headers = {"User-Agent": USER_AGENT, **dict(headers or {}), **await self._auth_headers()}
        data = body.encode("utf-8") if isinstance(body, str) else body
        options: dict[str, Any] = {
            "headers": all_headers,
            "data": data if data else None,
            "allow_redirects": False,
            "timeout": aiohttp.ClientTimeout(total=timeout or self._http_timeout),
        }
        if self.address.tls and self._ssl is not None:
            options["ssl"] = self._ssl
        if isinstance(self._proxy, str):
            options["proxy"] = self._proxy
        try:
            async with session.request(method, url, **options) as response:
                payload = await response.read()
                return HttpResponse(
                    status=response.status,
                    reason=response.reason or "",
                    headers=CIMultiDictProxy(CIMultiDict(response.headers)),
                    body=payload,
                )
        except TimeoutError:
            raise RelayTimeout(f"{method} {url}: no answer within the timeout") from None
        except aiohttp.ClientError as exc:
            raise ConnectionClosed(f"{method} {url}: {exc}") from exc

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(trust_env=self._proxy is True, auto_decompress=True)
        return self._session

    async def close(self) -> None:
        """Release the HTTP session (WebSocket connections are closed by their owners)."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"HybridConnectionClient({self.address.sb_uri!r})"
