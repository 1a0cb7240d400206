"""Send tokens for callers of relay endpoints: one audience, cached, renewed before expiry, sync or async.

The gateway wants a Send token (``SharedAccessSignature sr=…&sig=…&se=…&skn=…``) with every request to an endpoint
whose binding keeps ``client_authentication="relayAccessToken"``. :class:`RelayToken` hands out the current token
for one audience (``http://gateway/path``), asks its provider for a fresh one at ``renew_fraction`` of the
lifetime, and can be used from plain threads (zeep's sync client, requests hooks) and from coroutines.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from hybrid.auth import ConnectionString
from hybrid.client.tokens import (
    DEFAULT_TOKEN_TTL,
    SharedAccessSignatureTokenProvider,
    TokenProvider,
    token_provider_from_connection_string,
)
from hybrid.errors import ConfigError

__all__ = ["RelayToken", "TokenSource", "audience_for"]

#: what may stand for a token provider: a TokenProvider, a ready token, or a function (audience, ttl) ->
#: token | (token, expiry) | awaitable of either
TokenSource = TokenProvider | str | Callable[[str, float], Any]


def audience_for(address: str) -> str:
    """The SAS audience for an endpoint address or WSDL URL: ``http://host[:port]/path``, query dropped.

    A last path segment ending in ``.wsdl`` is dropped too (``…/calc/service.wsdl`` is the ``calc`` endpoint).
    """
    parts = urlsplit(address.strip())
    if not parts.netloc:
        raise ConfigError(f"not an absolute URL: {address!r}")
    segments = [s for s in parts.path.split("/") if s]
    if segments and segments[-1].lower().endswith(".wsdl"):
        segments = segments[:-1]
    path = "/".join(quote(unquote(s), safe="") for s in segments)
    return f"http://{parts.netloc.rpartition('@')[2]}/{path}"


def _run_coroutine_blocking(factory: Callable[[], Awaitable[Any]]) -> Any:
    """Run a coroutine to completion from synchronous code, whether or not this thread runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_as_coroutine(factory))
    # Called from inside a running loop (a zeep plugin under AsyncClient): use a private loop on another thread.
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="wcfrelay-token") as pool:
        return pool.submit(asyncio.run, _as_coroutine(factory)).result()


async def _as_coroutine(factory: Callable[[], Awaitable[Any]]) -> Any:
    return await factory()


def _normalise(result: Any, ttl: float) -> tuple[str, float]:
    if isinstance(result, tuple):
        token, expiry = result
        return str(token), float(expiry)
    if isinstance(result, str):
        try:
            expiry = float(SharedAccessSignatureTokenProvider(result).expiry)
        except Exception:  # noqa: BLE001 - an opaque token: assume the requested lifetime
            expiry = time.time() + ttl
        return result, expiry
    raise TypeError(f"a token provider must return a token or (token, expiry), not {type(result).__name__}")


class RelayToken:
    """The current Send token for one audience.

    ``provider`` is a :class:`hybrid.client.tokens.TokenProvider` (its ``get_token`` is a coroutine), a ready
    token string, a function ``(audience, ttl) -> token | (token, expiry)`` (sync or async), or None for endpoints
    that need no token (``get()`` then returns None).
    """

    def __init__(self, provider: TokenSource | None, audience: str, *, ttl: float = DEFAULT_TOKEN_TTL,
                 renew_fraction: float = 0.8) -> None:
        if not 0.0 < renew_fraction < 1.0:
            raise ConfigError("renew_fraction must be between 0 and 1")
        if isinstance(provider, str):
            provider = SharedAccessSignatureTokenProvider(provider)
        self.provider = provider
        self.audience = audience
        self.ttl = float(ttl)
        self.renew_fraction = renew_fraction
        self._lock = threading.Lock()
        self._token: str | None = None
        self._renew_at = 0.0
        #: how many times the provider was asked (for tests and diagnostics)
        self.fetches = 0

    @classmethod
    def from_credentials(cls, audience: str, *, connection_string: str | ConnectionString | None = None,
                         token_provider: TokenSource | None = None, ttl: float = DEFAULT_TOKEN_TTL) -> RelayToken:
        """From a connection string (its key or SharedAccessSignature) or a token provider; neither = anonymous."""
        if connection_string is not None and token_provider is not None:
            raise ConfigError("give a connection string or a token provider, not both")
        provider: TokenSource | None = token_provider
        if connection_string is not None:
            cs = (connection_string if isinstance(connection_string, ConnectionString)
                  else ConnectionString.parse(connection_string))
            provider = token_provider_from_connection_string(cs)
        return cls(provider, audience, ttl=ttl)

    def _cached(self, now: float) -> str | None:
        with self._lock:
            if self._token is not None and now < self._renew_at:
                return self._token
        return None

    def _store(self, token: str, expiry: float, issued: float) -> str:
        with self._lock:
            self._token = token
            lifetime = max(0.0, expiry - issued)
            self._renew_at = issued + self.renew_fraction * lifetime
            self.fetches += 1
        return token

    def _call(self) -> Any:
        provider = self.provider
        if hasattr(provider, "get_token"):
            return provider.get_token(self.audience, self.ttl)  # type: ignore[union-attr]
        return provider(self.audience, self.ttl)  # type: ignore[misc, operator]

    def get(self) -> str | None:
        """The token, fetched or renewed if due (blocking)."""
        if self.provider is None:
            return None
        now = time.time()
        cached = self._cached(now)
        if cached is not None:
            return cached
        result = self._call()
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()  # re-created on the private loop below
            result = _run_coroutine_blocking(self._call)
        token, expiry = _normalise(result, self.ttl)
        return self._store(token, expiry, now)

    async def aget(self) -> str | None:
        """The token, fetched or renewed if due (from a coroutine)."""
        if self.provider is None:
            return None
        now = time.time()
        cached = self._cached(now)
        if cached is not None:
            return cached
        result = self._call()
        if inspect.isawaitable(result):
            result = await result
        token, expiry = _normalise(result, self.ttl)
        return self._store(token, expiry, now)

    def __repr__(self) -> str:  # never show the token
        return f"RelayToken(audience={self.audience!r}, provider={self.provider!r})"
