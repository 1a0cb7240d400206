"""Shared Access Signature tokens and rules (spec §3). Pure: no I/O, time is passed in.

A token reads ``SharedAccessSignature sr=<enc uri>&sig=<enc b64>&se=<unix>&skn=<rule>``. The signature is
HMAC-SHA256 over ``sr`` *exactly as it appears in the token* + ``"\\n"`` + ``se``, keyed with the UTF-8 bytes
of the key string (never base64-decoded). Clients encode ``sr`` differently, so verification recomputes over the
raw text and only the scope check works on a normalised, decoded audience.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from urllib.parse import quote, quote_plus, unquote, unquote_plus, urlsplit

from .errors import AuthenticationError, AuthorizationError, ConfigError

__all__ = [
    "MAX_TOKEN_LENGTH",
    "ConnectionString",
    "Right",
    "SasRule",
    "SasToken",
    "audience_covers",
    "audience_path",
    "build_token",
    "generate_key",
    "parse_token",
    "verify_signature",
]

#: A real token is a few hundred bytes; anything far past that is hostile.
MAX_TOKEN_LENGTH = 4096
PREFIX = "SharedAccessSignature"


class Right(enum.Flag):
    """SAS claims. Manage implies Send and Listen (spec §3.4)."""

    NONE = 0
    LISTEN = enum.auto()
    SEND = enum.auto()
    MANAGE = enum.auto()

    @classmethod
    def parse(cls, names: list[str] | tuple[str, ...]) -> Right:
        result = cls.NONE
        for name in names:
            try:
                result |= cls[name.strip().upper()]
            except KeyError:
                raise ConfigError(f"unknown right {name!r}: expected Listen, Send or Manage") from None
        return result

    def effective(self) -> Right:
        return self | Right.LISTEN | Right.SEND if Right.MANAGE in self else self

    def names(self) -> list[str]:
        return [str(r.name).capitalize() for r in (Right.LISTEN, Right.SEND, Right.MANAGE) if r in self]


def generate_key() -> str:
    """A fresh 256-bit key, base64 text as Azure issues them."""
    return base64.b64encode(secrets.token_bytes(32)).decode("ascii")


@dataclass(frozen=True)
class SasRule:
    """A shared access policy: a key name, up to two keys, and rights. ``entity`` None means namespace scope."""

    name: str
    primary_key: str
    rights: Right
    secondary_key: str | None = None
    entity: str | None = None

    def keys(self) -> tuple[str, ...]:
        return tuple(k for k in (self.primary_key, self.secondary_key) if k)

    def __repr__(self) -> str:  # never show keys
        return f"SasRule(name={self.name!r}, rights={self.rights.names()}, entity={self.entity!r})"


@dataclass(frozen=True)
class SasToken:
    """A parsed token. ``resource_raw`` and ``expiry_raw`` keep the exact signed text."""

    resource_raw: str
    signature: bytes
    expiry: int
    expiry_raw: str
    key_name: str
    resource: str = field(default="")

    def __repr__(self) -> str:  # never show the signature
        return f"SasToken(resource={self.resource!r}, key_name={self.key_name!r}, expiry={self.expiry})"


def _sign(key: str, resource_raw: str, expiry_raw: str) -> bytes:
    message = f"{resource_raw}\n{expiry_raw}".encode()
    return hmac.new(key.encode("utf-8"), message, hashlib.sha256).digest()


def build_token(resource_uri: str, key_name: str, key: str, expiry: int) -> str:
    """Build a token for ``resource_uri`` that expires at the unix time ``expiry``."""
    sr = quote(resource_uri, safe="")
    se = str(int(expiry))
    sig = quote(base64.b64encode(_sign(key, sr, se)).decode("ascii"), safe="")
    return f"{PREFIX} sr={sr}&sig={sig}&se={se}&skn={quote(key_name, safe='')}"


def parse_token(text: str) -> SasToken:
    """Parse a token, strictly. Raises AuthenticationError naming what is wrong (never echoing the token)."""
    if not text:
        raise AuthenticationError("missing token")
    if len(text) > MAX_TOKEN_LENGTH:
        raise AuthenticationError("malformed token: too long")
    head, _, rest = text.strip().partition(" ")
    if head.lower() != PREFIX.lower() or not rest:
        raise AuthenticationError("malformed token: expected 'SharedAccessSignature sr=…&sig=…&se=…&skn=…'")
    fields: dict[str, str] = {}
    for pair in rest.strip().split("&"):
        name, sep, value = pair.partition("=")
        if not sep:
            raise AuthenticationError("malformed token: a field has no '='")
        key = name.strip().lower()
        if key in fields:
            raise AuthenticationError(f"malformed token: field {key!r} repeated")
        fields[key] = value
    missing = [k for k in ("sr", "sig", "se", "skn") if not fields.get(k)]
    if missing:
        raise AuthenticationError(f"malformed token: missing {', '.join(missing)}")
    se_raw = fields["se"]
    if not se_raw.isascii() or not se_raw.isdigit() or len(se_raw) > 12:
        raise AuthenticationError("malformed token: 'se' is not a unix time")
    try:
        signature = base64.b64decode(unquote(fields["sig"]), validate=True)
    except (ValueError, TypeError):
        raise AuthenticationError("malformed token: 'sig' is not base64") from None
    if len(signature) != 32:
        raise AuthenticationError("malformed token: 'sig' is not an HMAC-SHA256")
    # .NET encodes space as '+', Node never produces '+', so plus-decoding the audience is safe.
    resource = unquote_plus(fields["sr"])
    return SasToken(
        resource_raw=fields["sr"],
        signature=signature,
        expiry=int(se_raw),
        expiry_raw=se_raw,
        key_name=unquote_plus(fields["skn"]),
        resource=resource,
    )


def verify_signature(token: SasToken, keys: tuple[str, ...]) -> bool:
    """True if any key signed the token. Every key is tried so timing does not reveal which one matched."""
    ok = False
    for key in keys:
        ok |= hmac.compare_digest(_sign(key, token.resource_raw, token.expiry_raw), token.signature)
    return ok


def audience_path(resource: str) -> tuple[str, ...]:
    """The entity path segments a decoded audience names; scheme, host, port, query ignored (spec §3.3)."""
    text = resource.strip()
    if "://" not in text:
        if text.startswith("/") and not text.startswith("//"):
            # A bare path ("/myhc") names no host; reading its first segment as a host would widen it to the namespace.
            text = "http://" + text
        else:
            text = "http://" + text.lstrip("/")
    parts = urlsplit(text)
    path = parts.path
    segments = tuple(s.lower() for s in path.split("/") if s)
    if segments and segments[0] == "$hc":
        segments = segments[1:]
    return segments


def audience_covers(resource: str, entity: str) -> bool:
    """True if the token audience is the namespace, the entity, or a segment-wise prefix of the entity."""
    scope = audience_path(resource)
    target = tuple(s.lower() for s in entity.split("/") if s)
    return target[: len(scope)] == scope


def check_token(
    token_text: str,
    *,
    entity: str,
    needed: Right,
    rules: list[SasRule],
    now: float,
    skew: float = 300.0,
) -> SasRule:
    """Authorize ``token_text`` for ``needed`` on ``entity``. Returns the rule that signed it.

    ``rules`` are the rules in scope (namespace rules and the entity's own). 401 for anything wrong with the token
    itself, 403 when it is valid but does not grant the claim or the scope.
    """
    token = parse_token(token_text)
    rule = next((r for r in rules if r.name == token.key_name), None)
    if rule is None:
        # Burn the same time as a real check so rule names cannot be probed by timing.
        verify_signature(token, ("0" * 44,))
        raise AuthenticationError("invalid token: unknown key name or bad signature")
    if not verify_signature(token, rule.keys()):
        raise AuthenticationError("invalid token: unknown key name or bad signature")
    if token.expiry + skew < now:
        raise AuthenticationError("token expired")
    if not audience_covers(token.resource, entity):
        raise AuthorizationError(f"token audience does not cover '{entity}'")
    if rule.entity is not None and rule.entity.lower() != entity.lower():
        raise AuthorizationError(f"rule '{rule.name}' is scoped to another entity")
    if needed not in rule.rights.effective():
        raise AuthorizationError(f"rule '{rule.name}' lacks the {str(needed.name).capitalize()} claim")
    return rule


@dataclass(frozen=True)
class ConnectionString:
    """``Endpoint=sb://host[:port]/;SharedAccessKeyName=…;SharedAccessKey=…[;EntityPath=…]``."""

    endpoint: str
    key_name: str | None = None
    key: str | None = None
    entity_path: str | None = None
    shared_access_signature: str | None = None

    @classmethod
    def parse(cls, text: str) -> ConnectionString:
        values: dict[str, str] = {}
        for part in text.strip().split(";"):
            if not part.strip():
                continue
            name, sep, value = part.partition("=")
            if not sep:
                # Never echo the part: a mangled string may be a key.
                raise ConfigError("connection string: expected 'Endpoint=sb://host[:port]/;SharedAccessKeyName=…;"
                                  "SharedAccessKey=…', but a part has no '='")
            values[name.strip().lower()] = value.strip()
        endpoint = values.get("endpoint")
        if not endpoint:
            raise ConfigError("connection string: Endpoint is missing")
        scheme = urlsplit(endpoint).scheme
        if scheme not in ("sb", "ws", "wss", "http", "https") or not urlsplit(endpoint).hostname:
            raise ConfigError("connection string: Endpoint must look like sb://host[:port]/")
        cs = cls(
            endpoint=endpoint,
            key_name=values.get("sharedaccesskeyname"),
            key=values.get("sharedaccesskey"),
            entity_path=values.get("entitypath"),
            shared_access_signature=values.get("sharedaccesssignature"),
        )
        if not cs.shared_access_signature and bool(cs.key_name) != bool(cs.key):
            raise ConfigError("connection string: SharedAccessKeyName and SharedAccessKey go together")
        return cs

    def __str__(self) -> str:
        parts = [f"Endpoint={self.endpoint}"]
        if self.key_name:
            parts.append(f"SharedAccessKeyName={self.key_name}")
        if self.key:
            parts.append(f"SharedAccessKey={self.key}")
        if self.shared_access_signature:
            parts.append(f"SharedAccessSignature={self.shared_access_signature}")
        if self.entity_path:
            parts.append(f"EntityPath={self.entity_path}")
        return ";".join(parts)

    def __repr__(self) -> str:
        return f"ConnectionString(endpoint={self.endpoint!r}, key_name={self.key_name!r}, entity_path={self.entity_path!r})"


def form_quote(value: str) -> str:
    """Percent-encode for a query value (``sb-hc-token``)."""
    return quote_plus(value, safe="")


def form_unquote(value: str) -> str:
    return unquote_plus(value)
