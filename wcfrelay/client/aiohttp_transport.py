"""An aiohttp transport for ``zeep.AsyncClient``, with the relay Send token on every request.

zeep's own ``AsyncTransport`` is built on httpx; this one runs operations on one pooled
``aiohttp.ClientSession`` (created lazily inside the running loop), which was several times faster with many
calls in flight. zeep loads the WSDL synchronously, through the transport's ``load``; that path uses a
``requests`` session carrying the same token, so ``AsyncClient`` can be built anywhere, even inside a running loop.
"""

from __future__ import annotations

import logging
import ssl as ssl_module
from contextlib import closing
from typing import Any

import aiohttp
import requests
import zeep
from requests.structures import CaseInsensitiveDict
from zeep.exceptions import TransportError
from zeep.transports import AsyncTransport
from zeep.utils import get_version
from zeep.wsdl.utils import etree_to_string

from hybrid.auth import ConnectionString
from hybrid.client.tokens import DEFAULT_TOKEN_TTL
from hybrid.errors import ConfigError
from wcfrelay.client.tokens import RelayToken, TokenSource, audience_for
from wcfrelay.client.zeep_client import RelayAccessTokenPlugin, RelayTokenAuth, TokenCarrier, check_carrier

__all__ = ["AiohttpTransport", "relay_async_zeep_client"]

log = logging.getLogger("wcfrelay.client")


class AiohttpTransport(AsyncTransport):
    """``zeep.transports.AsyncTransport`` on aiohttp.

    ``token`` (a :class:`~wcfrelay.client.tokens.RelayToken`) is added to every request in ``token_header``
    (``post_token=False`` keeps it off POSTs, for the SOAP-header carrier). ``session`` may be an
    ``aiohttp.ClientSession`` of your own (it is then not closed by ``aclose``); otherwise one with at most
    ``limit`` pooled connections is made on first use. ``wsdl_session`` (``requests``) loads WSDL/XSD documents.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession | None = None,
        *,
        token: RelayToken | None = None,
        token_header: str = "ServiceBusAuthorization",
        post_token: bool = True,
        cache: Any = None,
        timeout: float = 300,
        operation_timeout: float | None = None,
        verify_ssl: bool | ssl_module.SSLContext = True,
        limit: int = 100,
        wsdl_session: requests.Session | None = None,
    ) -> None:
        # AsyncTransport.__init__ is not called: it builds httpx clients, which this transport does not use.
        self.cache = cache
        self.load_timeout = timeout
        self.operation_timeout = operation_timeout
        self.logger = logging.getLogger(__name__)
        self.token = token
        self.token_header = token_header
        self.post_token = post_token
        self.verify_ssl = verify_ssl
        self.limit = limit
        self._session = session
        self._own_session = session is None
        self._own_wsdl_session = wsdl_session is None
        self.wsdl_session = wsdl_session or requests.Session()
        self.wsdl_session.headers["User-Agent"] = f"Zeep/{get_version()} (www.python-zeep.org)"
        if isinstance(verify_ssl, bool):
            self.wsdl_session.verify = verify_ssl
        if token is not None:
            self.wsdl_session.auth = RelayTokenAuth(token, token_header)
        # zeep's Transport.__del__ and settings() look at these
        self.session = self.wsdl_session
        self._close_session = False
        self._user_agent = f"Zeep/{get_version()} (www.python-zeep.org)"

    # -- the aiohttp session ------------------------------------------------------------------------

    def _session_now(self) -> aiohttp.ClientSession:
        session = self._session
        if session is None or session.closed:
            if not self._own_session:
                raise RuntimeError("the aiohttp session given to AiohttpTransport is closed")
            ssl: Any = self.verify_ssl
            if ssl is True:
                ssl = None  # aiohttp's default verification
            connector = aiohttp.TCPConnector(limit=self.limit, ssl=ssl)
            session = self._session = aiohttp.ClientSession(
                connector=connector, headers={"User-Agent": self._user_agent}
            )
        return session

    async def aclose(self) -> None:
        if self._own_session and self._session is not None and not self._session.closed:
            await self._session.close()
        if self._own_wsdl_session:
            self.wsdl_session.close()

    async def _headers(self, headers: dict | None, method: str) -> dict[str, str]:
        out = dict(headers or {})
        if self.token is not None and (self.post_token or method != "POST"):
            value = await self.token.aget()
            if value:
                out[self.token_header] = value
        return out

    def _timeout(self) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=self.operation_timeout)

    @staticmethod
    def _response(status: int, headers: Any, body: bytes, url: str, encoding: str | None) -> requests.Response:
        """What zeep reads: a ``requests.Response`` with status, case-insensitive headers and content."""
        response = requests.Response()
        response.status_code = status
        response._content = body
        response.headers = CaseInsensitiveDict(headers)
        response.url = url
        response.encoding = encoding
        return response

    # -- zeep's transport interface -----------------------------------------------------------------

    async def post(self, address: str, message: bytes | str, headers: dict) -> requests.Response:
        self.logger.debug("HTTP Post to %s", address)
        session = self._session_now()
        data = message.encode("utf-8") if isinstance(message, str) else message
        async with session.post(address, data=data, headers=await self._headers(headers, "POST"),
                                timeout=self._timeout()) as response:
            body = await response.read()
            return self._response(response.status, response.headers, body, str(response.url), _encoding(response))

    async def post_xml(self, address: str, envelope: Any, headers: dict) -> requests.Response:
        return await self.post(address, etree_to_string(envelope), headers)

    async def get(self, address: str, params: Any, headers: dict) -> requests.Response:
        session = self._session_now()
        async with session.get(address, params=params, headers=await self._headers(headers, "GET"),
                               timeout=self._timeout()) as response:
            body = await response.read()
            return self._response(response.status, response.headers, body, str(response.url), _encoding(response))

    def _load_remote_data(self, url: str) -> bytes:
        """WSDL and XSD documents, loaded synchronously (zeep builds the client synchronously)."""
        self.logger.debug("Loading remote data from: %s", url)
        response = self.wsdl_session.get(url, timeout=self.load_timeout)
        with closing(response):
            if response.status_code >= 400:
                raise TransportError(status_code=response.status_code, content=response.content)
            return response.content

    def new_response(self, response: Any) -> Any:  # zeep's httpx conversion does not apply
        return response


def _encoding(response: aiohttp.ClientResponse) -> str | None:
    try:
        return response.charset or None
    except Exception:  # noqa: BLE001 - an odd Content-Type: let zeep read the XML declaration
        return None


def relay_async_zeep_client(
    wsdl_address: str,
    *,
    connection_string: str | ConnectionString | None = None,
    token_provider: TokenSource | None = None,
    audience: str | None = None,
    token_carrier: TokenCarrier = "ServiceBusAuthorization",
    token_ttl: float = DEFAULT_TOKEN_TTL,
    session: aiohttp.ClientSession | None = None,
    timeout: float = 300,
    operation_timeout: float | None = None,
    limit: int = 100,
    verify_ssl: bool | ssl_module.SSLContext = True,
    **zeep_kwargs: Any,
) -> zeep.AsyncClient:
    """A ``zeep.AsyncClient`` on :class:`AiohttpTransport` for the relayed endpoint at ``wsdl_address``.

    Same credentials and carriers as :func:`~wcfrelay.client.zeep_client.relay_zeep_client`. Operations are
    awaited (``await client.service.Add(1, 2)``); close with ``await client.transport.aclose()`` or
    ``async with client:``. Building it loads the WSDL synchronously, as zeep always does.
    """
    check_carrier(token_carrier)
    if "transport" in zeep_kwargs:
        raise ConfigError("relay_async_zeep_client builds its own transport")
    token = RelayToken.from_credentials(audience or audience_for(wsdl_address), connection_string=connection_string,
                                        token_provider=token_provider, ttl=token_ttl)
    transport = AiohttpTransport(
        session,
        token=token,
        token_header="Authorization" if token_carrier == "Authorization" else "ServiceBusAuthorization",
        post_token=token_carrier != "soap",
        timeout=timeout,
        operation_timeout=operation_timeout,
        verify_ssl=verify_ssl,
        limit=limit,
    )
    plugins = list(zeep_kwargs.pop("plugins", None) or [])
    if token_carrier == "soap":
        plugins.append(RelayAccessTokenPlugin(token))
    client = zeep.AsyncClient(wsdl_address, transport=transport, plugins=plugins, **zeep_kwargs)
    client.relay_token = token  # type: ignore[attr-defined]
    return client

