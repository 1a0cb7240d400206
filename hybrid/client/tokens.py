"""Token providers: where the SDK gets the SAS token it sends in ``ServiceBusAuthorization`` (spec §3).

A provider is asked for a token for an audience (``http://host[:port]/entity``, spec §3.3) and a lifetime, and
answers with the token text and its expiry (unix time). Listeners ask again before expiry and renew the control
channel's token with ``renewToken`` (spec §2.5).
"""

from __future__ import annotations

import abc
import time

from ..auth import ConnectionString, build_token, parse_token
from ..errors import AuthenticationError, ConfigError

__all__ = [
    "DEFAULT_TOKEN_TTL",
    "SharedAccessKeyTokenProvider",
    "SharedAccessSignatureTokenProvider",
    "TokenProvider",
    "renewal_delay",
    "token_provider_from_connection_string",
]

#: .NET and the Node libraries issue tokens valid for one hour (spec §2.5).
DEFAULT_TOKEN_TTL = 3600.0


class TokenProvider(abc.ABC):
    """Source of SAS tokens. Subclass it to fetch tokens from elsewhere (a vault, a token service)."""

    @abc.abstractmethod
    async def get_token(self, audience: str, ttl: float) -> tuple[str, float]:
        """Return ``(token, expiry)`` for ``audience``, valid about ``ttl`` seconds; expiry is a unix time."""


class SharedAccessKeyTokenProvider(TokenProvider):
    """Signs tokens locally with a shared access key (spec §3.2): the key string's UTF-8 bytes, not base64-decoded."""

    def __init__(self, key_name: str, key: str) -> None:
        if not key_name or not key:
            raise ConfigError("SharedAccessKeyTokenProvider needs a key name and a key")
        self.key_name = key_name
        self._key = key

    async def get_token(self, audience: str, ttl: float) -> tuple[str, float]:
        expiry = int(time.time() + max(1.0, ttl))
        return build_token(audience, self.key_name, self._key, expiry), float(expiry)

    def __repr__(self) -> str:  # never show the key
        return f"SharedAccessKeyTokenProvider(key_name={self.key_name!r})"


class SharedAccessSignatureTokenProvider(TokenProvider):
    """Hands out one ready-made token. Its ``se`` is its expiry; it cannot be renewed."""

    def __init__(self, token: str) -> None:
        parsed = parse_token(token)  # raises AuthenticationError on a malformed token
        self._token = token.strip()
        self.expiry = float(parsed.expiry)

    async def get_token(self, audience: str, ttl: float) -> tuple[str, float]:
        return self._token, self.expiry

    def __repr__(self) -> str:
        return f"SharedAccessSignatureTokenProvider(expiry={int(self.expiry)})"


def token_provider_from_connection_string(cs: ConnectionString) -> TokenProvider | None:
    """The provider a connection string implies, or None for an anonymous sender (spec §4)."""
    if cs.shared_access_signature:
        try:
            return SharedAccessSignatureTokenProvider(cs.shared_access_signature)
        except AuthenticationError as exc:
            raise ConfigError(f"connection string: SharedAccessSignature is not a valid token ({exc})") from None
    if cs.key_name and cs.key:
        return SharedAccessKeyTokenProvider(cs.key_name, cs.key)
    return None


def renewal_delay(issued_at: float, expiry: float, now: float, *, fraction: float = 0.8, minimum: float = 1.0) -> float:
    """Seconds to wait before renewing a token issued at ``issued_at`` that expires at ``expiry``.

    Renewal is due at ``fraction`` of the lifetime (the gateway allows grace after ``se``, spec §2.5, but a client
    should not lean on it). Never less than ``minimum`` so a provider handing out short tokens cannot spin.
    """
    due = issued_at + fraction * max(0.0, expiry - issued_at)
    return max(minimum, due - now)
