"""URL and query rules of the Hybrid Connections protocol (spec §1). Pure functions.

``/$hc/{name}[/suffix]?…sb-hc-action=…`` for WebSockets, ``/{name}[/suffix]?…`` for HTTP. Names may contain
``/``, so the registered name is found by longest match on segment boundaries.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from urllib.parse import quote, unquote_plus

from ..errors import BadRequest

__all__ = [
    "HC_PREFIX",
    "MAX_URL_LENGTH",
    "QUERY_PREFIX",
    "Action",
    "TokenCarrier",
    "build_rendezvous_address",
    "extract_token",
    "filter_query",
    "parse_query",
    "reject_parameters",
    "split_entity",
]

HC_PREFIX = "$hc"
QUERY_PREFIX = "sb-hc-"
MAX_URL_LENGTH = 8192


class Action(str, enum.Enum):
    LISTEN = "listen"
    CONNECT = "connect"
    ACCEPT = "accept"
    REQUEST = "request"


def parse_query(raw_query: str) -> dict[str, str]:
    """The ``sb-hc-*`` parameters of a raw query, names lower-cased, values form-decoded once (spec §3.2).

    Names are matched as they appear, undecoded, exactly like :func:`filter_query` matches them, so whatever is read
    here as a relay parameter is also what gets stripped before forwarding (spec §1.2).
    A parameter given twice is refused: a token or id must not be ambiguous.
    """
    params: dict[str, str] = {}
    node: dict[str, str] = {}
    for piece in raw_query.split("&"):
        name, sep, value = piece.partition("=")
        if not sep:
            continue
        lname = name.lower()
        if lname.startswith(QUERY_PREFIX):
            if lname in params:
                raise BadRequest(f"query parameter '{lname[:40]}' given more than once")
            params[lname] = unquote_plus(value)
            # Bare statusCode/statusDescription seen so far belong to the sender's app query, which precedes the
            # gateway's own sb-hc-* parameters in a rendezvous address; Node appends its reject pair after them.
            node.clear()
        elif lname in ("statuscode", "statusdescription"):
            # Node listeners send bare statusCode/statusDescription on reject (spec §1.2).
            node.setdefault("node-" + lname, unquote_plus(value))
    params.update(node)
    return params


def filter_query(raw_query: str) -> str:
    """Drop ``sb-hc-*=…`` pairs, keep every other piece byte for byte and in order (spec §1.2)."""
    if not raw_query:
        return ""
    kept = [
        piece
        for piece in raw_query.split("&")
        if not ("=" in piece and piece.partition("=")[0].lower().startswith(QUERY_PREFIX))
    ]
    return "&".join(kept)


def action_of(params: Mapping[str, str]) -> Action:
    """The action of a ``$hc`` request; a missing action means connect (spec §1.1)."""
    value = params.get("sb-hc-action")
    if value is None or value == "":
        return Action.CONNECT
    try:
        return Action(value.lower())
    except ValueError:
        raise BadRequest(f"unrecognized action '{value[:40]}'") from None


def split_entity(path: str, is_known: Callable[[str], bool], *, hc: bool) -> tuple[str, str]:
    """Split a decoded request path into ``(entity name, suffix)`` by longest match.

    ``hc`` says the path starts with ``/$hc/``. Raises BadRequest for paths that cannot name an entity and
    returns ``("", "")`` when no prefix is a known entity (the caller answers 404).
    """
    if len(path) > MAX_URL_LENGTH:
        raise BadRequest("URL too long")
    segments = path.split("/")
    if segments and segments[0] == "":
        segments = segments[1:]
    if hc:
        if not segments or segments[0].lower() != HC_PREFIX:
            raise BadRequest("expected a path starting with /$hc/")
        segments = segments[1:]
    if not segments or not segments[0]:
        raise BadRequest("no hybrid connection name in the path")
    if "." in segments or ".." in segments:
        raise BadRequest("path segments '.' and '..' are not allowed")
    for n in range(len(segments), 0, -1):
        name = "/".join(segments[:n])
        if name and not name.endswith("/") and is_known(name):
            suffix = "/".join(segments[n:])
            return name, ("/" + suffix if n < len(segments) else "")
    return "", ""


class TokenCarrier(str, enum.Enum):
    QUERY = "sb-hc-token"
    SERVICEBUS_HEADER = "ServiceBusAuthorization"
    AUTHORIZATION_HEADER = "Authorization"


def extract_token(
    params: Mapping[str, str], headers: Mapping[str, str], *, authorization_required: bool
) -> tuple[str | None, TokenCarrier | None, bool]:
    """Pick the token by the precedence of spec §1.4.

    Returns ``(token, carrier, strip_authorization)``: ``strip_authorization`` says whether the ``Authorization``
    header was consumed as the relay token and must not reach the listener.
    """
    if params.get("sb-hc-token"):
        return params["sb-hc-token"], TokenCarrier.QUERY, False
    sb = headers.get("ServiceBusAuthorization")
    if sb:
        return sb, TokenCarrier.SERVICEBUS_HEADER, False
    if authorization_required:
        auth = headers.get("Authorization")
        if auth and auth.strip().lower().startswith("sharedaccesssignature"):
            return auth, TokenCarrier.AUTHORIZATION_HEADER, True
    return None, None, False


def build_rendezvous_address(
    *, scheme: str, authority: str, entity: str, suffix: str, app_query: str, action: Action, tracking_id: str
) -> str:
    """``{ws|wss}://authority/$hc/{entity}{suffix}?{app_query&}sb-hc-action=…&sb-hc-id=…`` (spec §2.2)."""
    path = "/" + HC_PREFIX + "/" + quote(entity, safe="/") + quote(suffix, safe="/")
    query = f"sb-hc-action={action.value}&sb-hc-id={quote(tracking_id, safe='')}"
    if app_query:
        query = app_query + "&" + query
    return f"{scheme}://{authority}{path}?{query}"


def reject_parameters(params: Mapping[str, str]) -> tuple[int, str] | None:
    """Status and description when a listener rejects (both spellings, spec §1.2), else None."""
    code = params.get("sb-hc-statuscode", params.get("node-statuscode"))
    if code is None:
        return None
    desc = params.get("sb-hc-statusdescription", params.get("node-statusdescription", ""))
    code = code.strip()
    if not (code.isascii() and code.isdigit() and len(code) <= 3):
        raise BadRequest("statusCode is not a number")
    status = int(code)
    if not 400 <= status <= 599:
        # A rejection must look like an error to the sender; anything else is the listener's mistake.
        raise BadRequest("statusCode for a rejection must be 4xx or 5xx")
    return status, sanitize_reason(desc) or "Rejected by user code"


def sanitize_reason(text: str) -> str:
    """A reason phrase safe for a status line: printable ASCII, no CR/LF, bounded."""
    if text.isascii() and text.isprintable():
        return text.strip()[:256]  # the usual case, without a pass per character
    cleaned = "".join(c if 32 <= ord(c) < 127 else " " for c in text)
    return cleaned.strip()[:256]


def join_path(parts: Iterable[str]) -> str:
    return "/".join(p.strip("/") for p in parts if p.strip("/"))
