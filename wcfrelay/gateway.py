"""The WCF-style relay layer inside the gateway: listener links, SOAP/REST endpoints, the discovery feed.

It is an *extension* of the Hybrid Connections gateway: it shares its namespace (rules, authorization), its
configuration and its port, and sees every HTTP request first. ``hybrid`` never imports this module.

    GET  /$wcf/{path}?binding=…   a service host's listener link (WebSocket, Listen token), see wcfrelay/link.py
    *    /{path}[/suffix]         a caller: SOAP POST, ``?wsdl`` GET, REST call → one of the path's hosts
    GET  /                        Atom feed of the endpoints registered with public discovery
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import aiohttp
from aiohttp import web
from lxml import etree

from hybrid.auth import Right, build_token, parse_token
from hybrid.errors import (
    AuthenticationError,
    AuthorizationError,
    BadRequest,
    ConnectionClosed,
    ListenerUnavailable,
    PayloadTooLarge,
    ProtocolError,
    QuotaExceeded,
    RelayError,
    RelayTimeout,
)
from hybrid.gateway.app import Gateway
from hybrid.gateway.wsconn import GatewaySocket, upgrade
from hybrid.protocol import frames as fr
from hybrid.protocol import http1, urls
from hybrid.protocol import messages as msgs
from hybrid.protocol.handshake import check_upgrade, handshake_headers

from . import link as lk
from .soap import SoapVersion, extract_relay_token, relay_error_fault

__all__ = ["RelayEndpoint", "WcfRelayExtension"]

log = logging.getLogger("wcfrelay.gateway")

MAX_LINKS_PER_ENDPOINT = 25
#: Endpoints remembered per node, with or without hosts (Azure allows 10,000 relay endpoints per namespace).
MAX_ENDPOINTS = 10_000
#: How long a multicast waits for its receivers to acknowledge.
MULTICAST_ACK_TIMEOUT = 10.0
_TOKEN_MARKER = b"RelayAccessToken"
ATOM_NS = "http://www.w3.org/2005/Atom"
#: Headers one node adds when it forwards an authorized call to another (never accepted from callers unsigned).
FORWARDED_HEADER = "X-Relay-Node-Authorization"
PUBLIC_URL_HEADER = "X-Relay-Public-Url"
_NODE_HEADERS = frozenset({FORWARDED_HEADER.lower(), PUBLIC_URL_HEADER.lower()})
#: Headers a host never sees: connection-level ones, the nodes' own, the relay token (and ``Authorization`` when
#: it carried the token).
_NOT_FOR_HOSTS = msgs.HOP_BY_HOP | _NODE_HEADERS | {"servicebusauthorization"}
_NOT_FOR_HOSTS_WITH_AUTH = _NOT_FOR_HOSTS | {"authorization"}
_CLUSTER_AUDIENCE = "$cluster"


@dataclass
class _Forward:
    """What a node needs to hand an authorized call to another node."""

    request: web.Request
    headers: dict[str, str]
    body: bytes
    public_url: str
    remote: dict[str, tuple[str, str]]


class Conflict(RelayError):
    """The path is registered with another binding."""

    http_status = 409
    code = "AddressAlreadyInUse"


@dataclass(eq=False)
class Link:
    """One service host's link for one endpoint."""

    endpoint: RelayEndpoint
    sock: GatewaySocket | None  # None until its 101 has been sent
    client: str
    token_expiry: float
    #: calls waiting for the host: asyncio futures (aiohttp path) or FrontCall objects, which answer in the
    #: callback that read the reply (same ``done``/``set_result``/``set_exception`` methods)
    pending: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    ready: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    @property
    def usable(self) -> bool:
        return self.sock is None or self.sock.is_open


@dataclass(eq=False)
class RelayEndpoint:
    """A relay address and the hosts listening on it."""

    path: str
    registration: lk.Registration
    links: list[Link] = field(default_factory=list)
    created: float = field(default_factory=time.time)

    @property
    def binding(self) -> lk.Binding:
        return self.registration.binding

    @property
    def soap_version(self) -> SoapVersion | None:
        version = self.binding.soap_version
        return None if version is None else (SoapVersion.SOAP11 if version == "1.1" else SoapVersion.SOAP12)


class FrontCall:
    """One call carried by the gateway's front end (``hybrid/gateway/front.py``): checked, sent to a host's link
    and answered in callbacks, with the same rules as the aiohttp path (they share ``check_caller``,
    ``build_call``, ``reply_parts`` and ``fault_parts``). Its body is at most the front end's inline limit."""

    def __init__(self, ext: WcfRelayExtension, endpoint: RelayEndpoint, suffix: str,
                 head: http1.RequestHead) -> None:
        self.ext = ext
        self.endpoint = endpoint
        self.suffix = suffix
        self.head = head
        #: monotonic time after which the caller gets a timeout fault (the gateway's sweeper calls ``expire``)
        self.deadline = time.monotonic() + ext.gateway.config.request_timeout
        self._reply: Callable[[int, str | None, list[tuple[str, str]], bytes], None] | None = None
        self._link: Link | None = None
        self._id = ""
        self._answered = False
        self._error: BaseException | None = None
        self._held = 0

    def start(self, body: bytes, reply: Callable[[int, str | None, list[tuple[str, str]], bytes], None]) -> None:
        """Send the call; ``reply(status, reason, headers, body)`` is called once, now or when the host answers."""
        self._reply = reply
        ext, head, endpoint = self.ext, self.head, self.endpoint
        try:
            token, strip_auth, required = ext.check_caller(endpoint, head.headers, head.query, False,
                                                           head.content_length)
            if ext._buffered + 2 * len(body) > ext.gateway.config.max_soap_in_flight_bytes:
                raise QuotaExceeded("the gateway is holding too many messages in flight; retry later",
                                    http_status=503)
            call, frame, _, _ = ext.build_call(endpoint, self.suffix, head.method, head.headers, head.query,
                                               ext.public_url(endpoint, head.host, False), body, token, strip_auth,
                                               required)
            link = ext.choose_link(endpoint, ready_only=True)
            if link is None or link.sock is None:
                raise ListenerUnavailable(f"no service is listening on '{endpoint.path}'")
            link.pending[call.id] = self  # the link's reader calls set_result / set_exception
            self._link, self._id = link, call.id
            self._held = 2 * len(body)
            ext._buffered += self._held
            try:
                link.sock.send_frame(fr.OP_BINARY, frame)
            except ConnectionClosed:
                raise ListenerUnavailable("the service host disconnected during the call") from None
        except RelayError as exc:
            self._answered = True
            self._release()
            self._fail(exc)

    # The link's side: the same methods an asyncio future offers it.
    def done(self) -> bool:
        return self._answered

    def set_result(self, result: tuple[Any, memoryview]) -> None:
        self._answered = True
        self._release()
        reply, self._reply = self._reply, None
        if reply is None:
            return  # the caller went away
        message, body = result
        if isinstance(message, lk.Ack):
            reply(202, None, [], b"")
        else:
            reply(message.status, None, self.ext.reply_parts(message, self.head.host), bytes(body))

    def set_exception(self, error: BaseException) -> None:
        self._answered = True
        self._error = error
        self._release()
        self._fail(error if isinstance(error, RelayError)
                   else ListenerUnavailable("the service host disconnected during the call"))

    def exception(self) -> BaseException | None:
        return self._error

    def _fail(self, exc: RelayError) -> None:
        reply, self._reply = self._reply, None
        if reply is not None:
            status, reason, headers, body = self.ext.fault_parts(self.head.headers.get("Content-Type", ""),
                                                                 self.endpoint, exc)
            reply(status, reason, list(headers.items()), body)

    def _release(self) -> None:
        if self._link is not None:
            self._link.pending.pop(self._id, None)
        self.ext._buffered -= self._held
        self._held = 0

    def expire(self) -> None:
        """The deadline passed without an answer."""
        if not self._answered:
            self.set_exception(RelayTimeout("the service did not respond in the required time"))

    def cancel(self) -> None:
        """The caller went away: its answer, if it still comes, finds no call and is dropped."""
        self._reply = None
        self._answered = True
        self._release()


class WcfRelayExtension:
    """Serves the WCF-style relay bindings on a :class:`hybrid.gateway.app.Gateway`."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.endpoints: dict[str, RelayEndpoint] = {}
        # Best-effort spreading over hosts needs no system randomness; call ids are plain counters because a call
        # is bound to its (authenticated) link, so its id is never a credential.
        self._random = random.Random(os.urandom(16))
        self._call_ids = itertools.count(1)
        self._cluster_cache: tuple[float, dict[str, tuple[str, str]]] = (0.0, {})
        self._session: aiohttp.ClientSession | None = None
        self._node_token: tuple[float, str] = (0.0, "")
        self._buffered = 0  # bytes of request bodies held by calls in flight

    # ---- routing -------------------------------------------------------------------------------------------------
    def claims(self, method: str, raw_path: str) -> bool:
        """Whether :meth:`handle` might answer (a sync check for the gateway's front end, no I/O)."""
        if raw_path.startswith(lk.LINK_PREFIX) or raw_path == lk.LINK_PREFIX.rstrip("/"):
            return True
        if raw_path == "/":
            return method in ("GET", "HEAD")
        if raw_path.startswith("/$") or (not self.endpoints and not self.gateway.directory.clustered):
            return False
        if self.gateway.directory.clustered:
            return True  # another node's endpoints are only known asynchronously
        return self._find_local(unquote(raw_path)) is not None

    async def handle(self, request: web.Request) -> web.StreamResponse | None:
        raw_path = request.rel_url.raw_path
        if raw_path.startswith(lk.LINK_PREFIX) or raw_path == lk.LINK_PREFIX.rstrip("/"):
            return await self.handle_link(request)
        if raw_path == "/" and request.method in ("GET", "HEAD") and not request.headers.get("Upgrade"):
            return await self.discovery_feed(request)
        if raw_path.startswith("/$") or (not self.endpoints and not self.gateway.directory.clustered):
            return None  # nothing of this layer's could match: no per-request cost for hybrid traffic
        path = unquote(raw_path)
        if path == "/":
            return None
        found = await self._find(path)
        if found is None:
            return None
        endpoint, suffix = found
        try:
            return await self.handle_call(request, endpoint, suffix)
        except RelayError as exc:
            return self.error_reply(request, endpoint, exc)

    def _find_local(self, path: str) -> tuple[RelayEndpoint, str] | None:
        """This node's endpoint for a path, unless a longer hybrid connection name matches it."""
        name, suffix = urls.split_entity(path, lambda n: n.lower() in self.endpoints, hc=False)
        if not name:
            return None
        hc_name, _ = urls.split_entity(path, self.gateway.namespace.is_known, hc=False)
        if hc_name and len(hc_name) > len(name):
            return None  # the longest registered name wins, whichever layer it belongs to
        return self.endpoints[name.lower()], suffix

    async def _find(self, path: str) -> tuple[RelayEndpoint, str] | None:
        """The endpoint a request path names: this node's first, then (in a cluster) any node's."""
        found = self._find_local(path)
        if found is not None or not self.gateway.directory.clustered:
            return found
        hc_name, _ = urls.split_entity(path, self.gateway.namespace.is_known, hc=False)
        paths = await self._cluster_paths()
        name, suffix = urls.split_entity(path, lambda n: n.lower() in paths, hc=False)
        if not name or (hc_name and len(hc_name) > len(name)):
            return None
        real_path, registration = paths[name.lower()]
        return RelayEndpoint(real_path, lk.Registration.from_query(registration)), suffix

    def _remember(self, endpoint: RelayEndpoint) -> None:
        """Keep an endpoint's record after its last host leaves, so its callers get "no service listening" in
        their SOAP version rather than a 404 from the Hybrid Connections layer. Bounded: the oldest endpoints
        without hosts are forgotten first."""
        self.endpoints.pop(endpoint.path.lower(), None)
        self.endpoints[endpoint.path.lower()] = endpoint
        if len(self.endpoints) > MAX_ENDPOINTS:
            for key in [k for k, e in self.endpoints.items() if not e.links][: len(self.endpoints) - MAX_ENDPOINTS]:
                del self.endpoints[key]

    async def _cluster_paths(self) -> dict[str, tuple[str, str]]:
        """``{path lower: (path, registration)}`` of every node's links, cached for a second."""
        now = time.monotonic()
        if now - self._cluster_cache[0] > 1.0:
            links = await self.gateway.directory.all_links()
            self._cluster_cache = (now, {p.lower(): (p, reg) for p, reg in links.items()})
        return self._cluster_cache[1]

    def local_links(self) -> list[tuple[str, str, str]]:
        """What this node registers in the cluster directory (again, after Redis comes back)."""
        return [(e.path, link.id, e.registration.to_query()) for e in self.endpoints.values() for link in e.links]

    def health(self) -> dict[str, Any]:
        return {"wcf_links": {e.path: len(e.links) for e in self.endpoints.values() if e.links}}

    def error_reply(self, request: web.Request, endpoint: RelayEndpoint, exc: RelayError) -> web.Response:
        status, reason, headers, body = self.fault_parts(request.headers.get("Content-Type", ""), endpoint, exc)
        return web.Response(status=status, reason=reason, body=body, headers=headers)

    def fault_parts(self, content_type: str, endpoint: RelayEndpoint, exc: RelayError
                    ) -> tuple[int, str | None, dict[str, str], bytes]:
        """Gateway errors reach SOAP callers as SOAP faults, never as HTML pages: in the caller's SOAP version
        when its content type says (a SOAP 1.2 caller sends application/soap+xml), else the endpoint's.
        Returns status, reason phrase (None: the standard one), headers and body."""
        log.info("%s: %d %s", endpoint.path, exc.http_status, exc.reason)
        content_type = content_type.lower()
        version: SoapVersion | None
        if endpoint.binding is lk.Binding.WEB_HTTP:
            version = None
        elif "application/soap+xml" in content_type:
            version = SoapVersion.SOAP12
        elif "text/xml" in content_type:
            version = SoapVersion.SOAP11
        else:
            version = endpoint.soap_version
        if version is None:
            return exc.http_status, exc.reason, {"Content-Type": "application/json; charset=utf-8"}, exc.json_body()
        fault = relay_error_fault(version, exc, keep_http_status=True)
        return fault.status, None, {"Content-Type": fault.content_type}, fault.body

    # ---- listener links ------------------------------------------------------------------------------------------
    async def handle_link(self, request: web.Request) -> web.StreamResponse:
        path = unquote(request.rel_url.raw_path)[len(lk.LINK_PREFIX):].strip("/")
        raw_query = request.rel_url.raw_query_string
        params = urls.parse_query(raw_query)
        client = request.remote or "?"
        limiter = self.gateway.failed_listens
        if limiter.blocked(client):
            await asyncio.sleep(1.0)
            raise QuotaExceeded("too many failed listen attempts from this address; slow down", http_status=429)
        try:
            if not path or any(s in ("", ".", "..") for s in path.split("/")):
                raise BadRequest("a relay path is one or more non-empty segments")
            registration = lk.Registration.from_query(urls.filter_query(raw_query))
            token, _, _ = urls.extract_token(params, request.headers, authorization_required=True)
            self.gateway.namespace.authorize(token, path, Right.LISTEN, now=time.time())
        except RelayError:
            limiter.record(client)
            raise
        endpoint = self.endpoints.get(path.lower())
        if endpoint is not None and endpoint.links and endpoint.registration != registration:
            mine, theirs = endpoint.registration, registration
            differs = [name for name in ("binding", "client_auth", "discovery", "display_name", "max_message")
                       if getattr(mine, name) != getattr(theirs, name)]
            raise Conflict(f"'{path}' is already registered by other hosts with a different {', '.join(differs)} "
                           f"(binding {mine.binding.value})")
        hosts = (len(endpoint.links) if endpoint is not None else 0) + \
            await self.gateway.directory.count_remote_links(path)
        if hosts >= MAX_LINKS_PER_ENDPOINT:
            raise QuotaExceeded(f"'{path}' already has {MAX_LINKS_PER_ENDPOINT} listeners in the cluster, the most "
                                f"it allows")
        if self.gateway.namespace.is_known(path):
            raise Conflict(f"'{path}' is a hybrid connection")
        key = check_upgrade(request.method, request.headers)
        self.gateway._check_capacity()
        if endpoint is None or not endpoint.links:
            endpoint = RelayEndpoint(path, registration)
            self._remember(endpoint)
        expiry = parse_token(token).expiry if token else time.time() + 3600
        # Registered before the 101 goes out: a host that sees its handshake succeed is already routable.
        # Calls that pick the link meanwhile wait for `ready`.
        link = Link(endpoint, None, client, expiry)
        endpoint.links.append(link)
        await self.gateway.directory.add_link(path, link.id, registration.to_query())
        try:
            sock = await upgrade(request, handshake_headers(key, None), label=f"wcf-link:{path}", attach=False)
        except BaseException:
            endpoint.links.remove(link)
            await self.gateway.directory.remove_link(path, link.id)
            link.ready.set_exception(ListenerUnavailable("the service host went away during its handshake"))
            link.ready.exception()
            raise
        link.sock = sock
        # Each link message is one binary message: handled in the read callback, with no task in between.
        sock._max_text = registration.max_message + lk.MAX_HEADER + 4
        sock.on_message = lambda opcode, data: self._on_link_message(link, opcode, data)
        sock.attach(request)
        link.ready.set_result(None)
        self.gateway.sockets += 1
        log.info("wcf link online: %s (%s) from %s, %d hosts", path, registration.binding.value, client,
                 len(endpoint.links))
        watchdog = asyncio.create_task(self._watch(link))
        try:
            await sock.done
        finally:
            watchdog.cancel()
            self.gateway.sockets -= 1
            endpoint.links.remove(link)
            await self.gateway.directory.remove_link(path, link.id)
            for fut in list(link.pending.values()):  # a front-end call leaves the dict when it fails
                if not fut.done():
                    fut.set_exception(ListenerUnavailable("the service host disconnected during the call"))
                    fut.exception()
            log.info("wcf link offline: %s, %d hosts", path, len(endpoint.links))
        return sock.handler_response()

    async def _watch(self, link: Link) -> None:
        cfg = self.gateway.config
        loop = asyncio.get_running_loop()
        sock = link.sock
        assert sock is not None
        while sock.is_open:
            await asyncio.sleep(min(cfg.ping_interval, 5.0))
            if time.time() > link.token_expiry + cfg.token_grace:
                await sock.close(1008, "token expired: renew it with renewToken")
                return
            idle = loop.time() - sock.last_seen
            if idle > 2 * cfg.ping_interval + 5:
                sock.abort()
                return
            if idle >= cfg.ping_interval and sock.is_open:
                sock.send_frame(fr.OP_PING, b"")

    def _on_link_message(self, link: Link, opcode: int, data: bytes) -> None:
        if opcode != fr.OP_BINARY:
            raise ProtocolError("link messages are binary")
        self._on_message(link, data)

    def _on_message(self, link: Link, data: bytes) -> None:
        message, body = lk.decode(data)
        if isinstance(message, (lk.Reply, lk.Ack)):
            fut = link.pending.get(message.id)
            if fut is not None and not fut.done():
                fut.set_result((message, body))
            return
        if isinstance(message, lk.RenewToken):
            try:
                self.gateway.namespace.authorize(message.token, link.endpoint.path, Right.LISTEN, now=time.time())
                link.token_expiry = parse_token(message.token).expiry
            except RelayError as exc:
                raise AuthenticationError(f"token renewal rejected: {exc.reason}") from None
            return
        if link.sock is not None:
            link.sock.send_frame(fr.OP_BINARY, lk.encode(lk.LinkError("hosts may not send that message")))

    # ---- callers -------------------------------------------------------------------------------------------------
    async def handle_call(self, request: web.Request, endpoint: RelayEndpoint, suffix: str) -> web.StreamResponse:
        forwarded = FORWARDED_HEADER in request.headers
        if forwarded:
            # Another node of the cluster authorized the caller and stripped its tokens already.
            self._check_node_token(request.headers[FORWARDED_HEADER])
        raw_query = request.rel_url.raw_query_string
        token, strip_auth, required = self.check_caller(endpoint, request.headers, raw_query, forwarded,
                                                        request.content_length)
        budget = [0]
        try:
            return await self._call_with_body(request, endpoint, suffix, forwarded, token, strip_auth, required,
                                              raw_query, budget)
        finally:
            self._buffered -= budget[0]

    def check_caller(self, endpoint: RelayEndpoint, headers: Mapping[str, str], raw_query: str, forwarded: bool,
                     length: int | None) -> tuple[str | None, bool, bool]:
        """Before the body is read: its announced size, and a header or query token (unauthorized callers cost no
        buffering). Returns the token, whether ``Authorization`` carried it, and whether a token is required."""
        registration = endpoint.registration
        if headers.get("Upgrade"):
            raise BadRequest("relay endpoints do not take protocol upgrades")
        if length is not None and length > registration.max_message:
            raise PayloadTooLarge(f"the message is larger than the endpoint's limit of {registration.max_message} "
                                  f"bytes")
        params = urls.parse_query(raw_query)
        required = registration.client_auth is lk.ClientAuth.RELAY_ACCESS_TOKEN and not forwarded
        token, _, strip_auth = urls.extract_token(params, headers, authorization_required=required)
        if token or not required or endpoint.soap_version is None:
            self.gateway.namespace.authorize(token, endpoint.path, Right.SEND, now=time.time(),
                                             anonymous_ok=not required)
        return token, strip_auth, required

    def build_call(self, endpoint: RelayEndpoint, suffix: str, method: str, headers: Mapping[str, str],
                   raw_query: str, public_url: str, body: bytes, token: str | None, strip_auth: bool,
                   required: bool) -> tuple[lk.Call, bytes, dict[str, str], bytes]:
        """Once the body is read: a token in its SOAP header (authorized if it is the one that counts, stripped
        either way), the headers the host sees, the call and its link message. Returns call, link message, those
        headers, and the body as forwarded."""
        registration = endpoint.registration
        authorize = self.gateway.namespace.authorize
        if _TOKEN_MARKER in body and endpoint.soap_version is not None:
            # Third-party SOAP callers put the token in a RelayAccessToken header (spec wcf-relay §1.3); it is
            # stripped whether or not it is needed.
            soap_token, body = extract_relay_token(body, max_size=registration.max_message)
            if not token and required:
                token = soap_token
                authorize(token, endpoint.path, Right.SEND, now=time.time())
        elif not token and required:
            authorize(None, endpoint.path, Right.SEND, now=time.time())
        dropped = _NOT_FOR_HOSTS_WITH_AUTH if strip_auth else _NOT_FOR_HOSTS
        out_headers = {k: v for k, v in msgs.join_headers(headers.items()).items() if k.lower() not in dropped}
        call = lk.Call(id=f"{next(self._call_ids):x}", method=method, path=suffix, query=urls.filter_query(raw_query),
                       headers=out_headers, public_url=public_url, one_way=registration.binding.one_way)
        return call, lk.encode(call, body), out_headers, body

    def public_url(self, endpoint: RelayEndpoint, host: str, secure: bool) -> str:
        """The endpoint's address as callers see it (what a WSDL's addresses are rewritten to)."""
        base = (self.gateway.config.public_url.rstrip("/") if self.gateway.config.public_url
                else f"{'https' if secure else 'http'}://{host}")
        return base + "/" + endpoint.path

    def choose_link(self, endpoint: RelayEndpoint, *, ready_only: bool = False) -> Link | None:
        """Best-effort spreading over this node's hosts of an endpoint."""
        links = [lnk for lnk in endpoint.links
                 if lnk.usable and (not ready_only or (lnk.sock is not None and lnk.ready.done()))]
        if not links:
            return None
        return links[0] if len(links) == 1 else self._random.choice(links)

    @staticmethod
    def reply_parts(message: lk.Reply, host: str) -> list[tuple[str, str]]:
        """The host's reply headers as the caller gets them (framing recomputed, unsafe ones dropped)."""
        return [(name, value) for name, value in msgs.response_headers_for_sender(message.headers, via=f"1.1 {host}")
                if name.lower() != "via"]

    def front_call(self, head: http1.RequestHead) -> FrontCall | None:
        """A call the gateway's front end can carry by itself, without aiohttp: request/reply or one-way to a host
        of this node, on a single node. Anything else (multicast, cluster, no host yet) stays on the aiohttp
        path, which also answers the errors."""
        if self.gateway.directory.clustered or not self.endpoints or FORWARDED_HEADER in head.headers:
            return None
        found = self._find_local(unquote(head.path))
        if found is None:
            return None
        endpoint, suffix = found
        if endpoint.binding is lk.Binding.NET_EVENT or self.choose_link(endpoint, ready_only=True) is None:
            return None
        return FrontCall(self, endpoint, suffix, head)

    async def _call_with_body(self, request: web.Request, endpoint: RelayEndpoint, suffix: str, forwarded: bool,
                              token: str | None, strip_auth: bool, required: bool, raw_query: str,
                              budget: list[int]) -> web.StreamResponse:
        registration = endpoint.registration
        body = await self._read_body(request, registration.max_message, budget)
        public_url = self.public_url(endpoint, request.host, request.secure)
        if forwarded and request.headers.get(PUBLIC_URL_HEADER):
            public_url = request.headers[PUBLIC_URL_HEADER]
        call, frame, headers, body = self.build_call(endpoint, suffix, request.method, request.headers, raw_query,
                                                     public_url, body, token, strip_auth, required)
        remote: dict[str, tuple[str, str]] = {}
        if not forwarded and self.gateway.directory.clustered:
            remote = await self.gateway.directory.remote_links(endpoint.path)
        forward = _Forward(request, headers, body, public_url, remote)
        if registration.binding is lk.Binding.NET_EVENT:
            return await self._multicast(endpoint, call, frame, forward)
        link = self.choose_link(endpoint)
        if link is None and remote:
            # No host here: hand the call to a node that has one (hosts on this node are preferred: one hop less).
            node = self._random.choice(sorted(remote))
            return await self._forward(forward, remote[node][0])
        if link is None:
            raise ListenerUnavailable(f"no service is listening on '{endpoint.path}'")
        message, reply_body = await self._exchange(link, call, frame)
        if isinstance(message, lk.Ack):
            return web.Response(status=202)
        assert isinstance(message, lk.Reply)
        response = web.Response(status=message.status, body=bytes(reply_body))
        for name, value in self.reply_parts(message, request.host):
            response.headers[name] = value
        return response

    async def _read_body(self, request: web.Request, limit: int, budget: list[int]) -> bytes:
        """The whole body, bounded per message (``limit``) and across calls in flight (the gateway's
        ``max_soap_in_flight_bytes``: SOAP messages are relayed whole, one link message each);
        ``budget[0]`` accumulates what this call reserved, for the caller to release."""
        parts: list[bytes] = []
        size = 0
        async for chunk in request.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"the message is larger than the endpoint's limit of {limit} bytes")
            # The body is held twice for a moment (as read, and inside its link message).
            self._buffered += 2 * len(chunk)
            budget[0] += 2 * len(chunk)
            if self._buffered > self.gateway.config.max_soap_in_flight_bytes:
                raise QuotaExceeded("the gateway is holding too many messages in flight; retry later",
                                    http_status=503)
            parts.append(chunk)
        return b"".join(parts)

    async def _exchange(self, link: Link, call: lk.Call, frame: bytes) -> tuple[Any, memoryview]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()
        link.pending[call.id] = fut
        try:
            await link.ready
            assert link.sock is not None
            link.sock.send_frame(fr.OP_BINARY, frame)
            await link.sock.drain()
            async with asyncio.timeout(self.gateway.config.request_timeout):
                return await fut
        except TimeoutError:
            raise RelayTimeout("the service did not respond in the required time") from None
        except (ConnectionClosed, ListenerUnavailable):
            raise ListenerUnavailable("the service host disconnected during the call") from None
        finally:
            link.pending.pop(call.id, None)

    async def _multicast(self, endpoint: RelayEndpoint, call: lk.Call, frame: bytes,
                         forward: _Forward) -> web.Response:
        links = [lnk for lnk in endpoint.links if lnk.usable]
        if not links and not forward.remote:
            raise ListenerUnavailable(f"no service is listening on '{endpoint.path}'")

        async def one(link: Link) -> int:
            try:
                message, _ = await asyncio.wait_for(self._exchange(link, call, frame), MULTICAST_ACK_TIMEOUT)
            except (TimeoutError, RelayError):
                return 0
            return 1 if isinstance(message, lk.Ack) else 0  # a fault reply means the host refused it

        async def node(url: str) -> int:
            # Every other node with hosts on the path delivers to its own hosts and says how many received it.
            try:
                response = await self._forward(forward, url)
            except RelayError:
                return 0
            return int(response.headers.get("X-Relay-Receivers", "0")) if response.status == 202 else 0

        counts = await asyncio.gather(*(one(link) for link in links),
                                      *(node(url) for url, _ in forward.remote.values()))
        delivered = sum(counts)
        if not delivered:
            raise ListenerUnavailable(f"no service on '{endpoint.path}' received the message")
        return web.Response(status=202, headers={"X-Relay-Receivers": str(delivered)})

    # ---- between nodes -------------------------------------------------------------------------------------------
    def _node_auth(self) -> str:
        """A short-lived token of the namespace's Manage rule: nodes share the configuration, so they share it."""
        expires, token = self._node_token
        now = time.time()
        if now < expires - 30:
            return token
        rule = next((r for r in self.gateway.namespace.rules if Right.MANAGE in r.rights), None)
        if rule is None:
            raise ListenerUnavailable("cluster forwarding needs a namespace rule with the Manage right")
        token = build_token(f"http://cluster/{_CLUSTER_AUDIENCE}", rule.name, rule.primary_key, int(now) + 120)
        self._node_token = (now + 120, token)
        return token

    def _check_node_token(self, token: str) -> None:
        try:
            self.gateway.namespace.authorize(token, _CLUSTER_AUDIENCE, Right.MANAGE, now=time.time())
        except RelayError:
            raise AuthorizationError("forwarded call without a valid node token") from None

    async def _forward(self, forward: _Forward, node_url: str) -> web.Response:
        """Send a call, already authorized here, to another node that has a host for it."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(
                total=self.gateway.config.request_timeout + 5), auto_decompress=False)
        request = forward.request
        url = node_url.rstrip("/") + request.rel_url.raw_path
        if request.rel_url.raw_query_string:
            url += "?" + request.rel_url.raw_query_string
        headers = {**forward.headers, FORWARDED_HEADER: self._node_auth(), PUBLIC_URL_HEADER: forward.public_url}
        try:
            async with self._session.request(request.method, url, data=forward.body, headers=headers,
                                             allow_redirects=False) as reply:
                body = await reply.read()
                out = web.Response(status=reply.status, reason=reply.reason, body=body)
                for name, value in reply.headers.items():
                    if name.lower() not in msgs.HOP_BY_HOP and name.lower() not in ("date", "server"):
                        out.headers.add(name, value)
                return out
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise ListenerUnavailable(f"the node hosting this service is unreachable ({exc.__class__.__name__})") \
                from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    # ---- discovery -----------------------------------------------------------------------------------------------
    async def discovery_feed(self, request: web.Request) -> web.Response:
        """Atom feed of public endpoints (ServiceRegistrySettings, spec wcf-relay §1.4)."""
        scheme = "https" if request.secure else "http"
        base = (self.gateway.config.public_url or f"{scheme}://{request.host}").rstrip("/")
        now = datetime.now(UTC).isoformat()
        feed = etree.Element(f"{{{ATOM_NS}}}feed", nsmap={None: ATOM_NS})
        etree.SubElement(feed, f"{{{ATOM_NS}}}title").text = "Publicly Listed Services"
        etree.SubElement(feed, f"{{{ATOM_NS}}}id").text = base + "/"
        etree.SubElement(feed, f"{{{ATOM_NS}}}updated").text = now
        listed = {e.path.lower(): e for e in self.endpoints.values() if e.links}
        if self.gateway.directory.clustered:
            for path, registration in (await self.gateway.directory.all_links()).items():
                if path.lower() not in listed:
                    listed[path.lower()] = RelayEndpoint(path, lk.Registration.from_query(registration))
        for endpoint in sorted(listed.values(), key=lambda e: e.path.lower()):
            reg = endpoint.registration
            if reg.discovery is not lk.Discovery.PUBLIC:
                continue
            address = f"{base}/{endpoint.path}"
            entry = etree.SubElement(feed, f"{{{ATOM_NS}}}entry")
            etree.SubElement(entry, f"{{{ATOM_NS}}}id").text = address
            etree.SubElement(entry, f"{{{ATOM_NS}}}title").text = reg.display_name or endpoint.path.split("/")[-1]
            etree.SubElement(entry, f"{{{ATOM_NS}}}updated").text = datetime.fromtimestamp(
                endpoint.created, UTC).isoformat()
            etree.SubElement(entry, f"{{{ATOM_NS}}}link", rel="alternate", href=address)
            etree.SubElement(entry, f"{{{ATOM_NS}}}category", term=reg.binding.value)
        body = etree.tostring(feed, xml_declaration=True, encoding="utf-8")
        return web.Response(body=body, content_type="application/atom+xml", charset="utf-8")
