"""The WCF-style relay layer inside the gateway: listener links, SOAP/REST endpoints, the discovery feed.

It is an *extension* of the Hybrid Connections gateway: it shares its namespace (rules, authorization), its
configuration and its port, and sees every HTTP request first. ``hybrid`` never imports this module.

    GET  /$wcf/{path}?binding=…   a service host's listener link (WebSocket, Listen token), see wcfrelay/link.py
    *    /{path}[/suffix]         a caller: SOAP POST, ``?wsdl`` GET, REST call → one of the path's hosts
    GET  /                        Atom feed of the endpoints registered with public discovery
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import unquote

from aiohttp import web
from lxml import etree

from hybrid.auth import Right, parse_token
from hybrid.errors import (
    AuthenticationError,
    BadRequest,
    ConnectionClosed,
    ListenerUnavailable,
    PayloadTooLarge,
    ProtocolError,
    QuotaExceeded,
    RelayError,
    RelayTimeout,
)
from hybrid.gateway.app import Gateway, error_response
from hybrid.gateway.relay import new_tracking_id
from hybrid.gateway.wsconn import BDATA, BEND, BSTART, CLOSED, TEXT, GatewaySocket, upgrade
from hybrid.protocol import frames as fr
from hybrid.protocol import messages as msgs
from hybrid.protocol import urls
from hybrid.protocol.handshake import check_upgrade, handshake_headers

from . import link as lk
from .soap import SoapVersion, extract_relay_token, relay_error_fault

__all__ = ["WcfRelayExtension", "RelayEndpoint"]

log = logging.getLogger("wcfrelay.gateway")

MAX_LINKS_PER_ENDPOINT = 25
#: How long a multicast waits for its receivers to acknowledge.
MULTICAST_ACK_TIMEOUT = 10.0
_TOKEN_MARKER = b"RelayAccessToken"
ATOM_NS = "http://www.w3.org/2005/Atom"


class Conflict(RelayError):
    """The path is registered with another binding."""

    http_status = 409
    code = "AddressAlreadyInUse"


@dataclass(eq=False)
class Link:
    """One service host's link for one endpoint."""

    endpoint: "RelayEndpoint"
    sock: GatewaySocket
    client: str
    token_expiry: float
    pending: dict[str, asyncio.Future] = field(default_factory=dict)


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


class WcfRelayExtension:
    """Serves the WCF-style relay bindings on a :class:`hybrid.gateway.app.Gateway`."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.endpoints: dict[str, RelayEndpoint] = {}
        self._random = random.SystemRandom()

    # ---- routing -------------------------------------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse | None:
        raw_path = request.rel_url.raw_path
        if raw_path.startswith(lk.LINK_PREFIX) or raw_path == lk.LINK_PREFIX.rstrip("/"):
            return await self.handle_link(request)
        if raw_path == "/" and request.method in ("GET", "HEAD") and not request.headers.get("Upgrade"):
            return self.discovery_feed(request)
        if raw_path.startswith("/$hc"):
            return None
        path = unquote(raw_path)
        name, suffix = urls.split_entity(path, self._is_endpoint, hc=False) if path != "/" else ("", "")
        if not name:
            return None
        endpoint = self.endpoints[name.lower()]
        try:
            return await self.handle_call(request, endpoint, suffix)
        except RelayError as exc:
            return self.error_reply(request, endpoint, exc)

    def _is_endpoint(self, name: str) -> bool:
        return name.lower() in self.endpoints

    def error_reply(self, request: web.Request, endpoint: RelayEndpoint, exc: RelayError) -> web.Response:
        """Gateway errors reach SOAP callers as SOAP faults, never as HTML pages: in the caller's SOAP version
        when its content type says (a SOAP 1.2 caller sends application/soap+xml), else the endpoint's."""
        log.info("%s: %d %s", endpoint.path, exc.http_status, exc.reason)
        if endpoint.binding is lk.Binding.WEB_HTTP:
            return error_response(exc)
        content_type = request.headers.get("Content-Type", "").lower()
        if "application/soap+xml" in content_type:
            version = SoapVersion.SOAP12
        elif "text/xml" in content_type:
            version = SoapVersion.SOAP11
        else:
            version = endpoint.soap_version
        if version is None:
            return error_response(exc)
        fault = relay_error_fault(version, exc, keep_http_status=True)
        return web.Response(status=fault.status, body=fault.body, headers={"Content-Type": fault.content_type})

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
            raise Conflict(f"'{path}' is already registered with binding {endpoint.binding.value}")
        if endpoint is not None and len(endpoint.links) >= MAX_LINKS_PER_ENDPOINT:
            raise QuotaExceeded(f"'{path}' already has {MAX_LINKS_PER_ENDPOINT} listeners, the most it allows")
        if self.gateway.namespace.is_known(path):
            raise Conflict(f"'{path}' is a hybrid connection")
        key = check_upgrade(request.method, request.headers)
        self.gateway._check_capacity()
        sock = await upgrade(request, handshake_headers(key, None), label=f"wcf-link:{path}")
        if endpoint is None or not endpoint.links:
            endpoint = RelayEndpoint(path, registration)
            self.endpoints[path.lower()] = endpoint
        expiry = parse_token(token).expiry if token else time.time() + 3600
        link = Link(endpoint, sock, client, expiry)
        endpoint.links.append(link)
        self.gateway.sockets += 1
        log.info("wcf link online: %s (%s) from %s, %d hosts", path, registration.binding.value, client,
                 len(endpoint.links))
        watchdog = asyncio.create_task(self._watch(link))
        try:
            await self._pump(link)
            await sock.done
        finally:
            watchdog.cancel()
            self.gateway.sockets -= 1
            endpoint.links.remove(link)
            if not endpoint.links and self.endpoints.get(path.lower()) is endpoint:
                del self.endpoints[path.lower()]  # dynamic, as WCF Relay's: gone with its last listener
            for fut in link.pending.values():
                if not fut.done():
                    fut.set_exception(ListenerUnavailable("the service host disconnected during the call"))
                    fut.exception()
            log.info("wcf link offline: %s, %d hosts", path, len(endpoint.links))
        return sock.response  # type: ignore[return-value]

    async def _watch(self, link: Link) -> None:
        cfg = self.gateway.config
        loop = asyncio.get_running_loop()
        while link.sock.is_open:
            await asyncio.sleep(min(cfg.ping_interval, 5.0))
            if time.time() > link.token_expiry + cfg.token_grace:
                await link.sock.close(1008, "token expired: renew it with renewToken")
                return
            idle = loop.time() - link.sock.last_seen
            if idle > 2 * cfg.ping_interval + 5:
                link.sock.abort()
                return
            if idle >= cfg.ping_interval and link.sock.is_open:
                link.sock.send_frame(fr.OP_PING, b"")

    async def _pump(self, link: Link) -> None:
        """Read the host's messages: each is one binary message, bounded by the endpoint's message size."""
        limit = link.endpoint.registration.max_message + lk.MAX_HEADER + 4
        parts: list[bytes] = []
        size = 0
        sock = link.sock
        try:
            while True:
                kind, value = await sock.receive()
                if kind == BDATA:
                    size += len(value)
                    if size > limit:
                        raise PayloadTooLarge(f"link message larger than {limit} bytes")
                    parts.append(value)
                elif kind == BSTART:
                    parts, size = [], 0
                elif kind == BEND:
                    self._on_message(link, b"".join(parts))
                    parts, size = [], 0
                elif kind == TEXT:
                    raise ProtocolError("link messages are binary")
                elif kind == CLOSED:
                    return
        except RelayError as exc:
            sock.fail(exc.close_code if exc.close_code != 1011 else 1008, exc.reason)

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
        link.sock.send_frame(fr.OP_BINARY, lk.encode(lk.LinkError("hosts may not send that message")))

    # ---- callers -------------------------------------------------------------------------------------------------
    async def handle_call(self, request: web.Request, endpoint: RelayEndpoint, suffix: str) -> web.StreamResponse:
        registration = endpoint.registration
        if request.headers.get("Upgrade"):
            raise BadRequest("relay endpoints do not take protocol upgrades")
        length = request.content_length
        if length is not None and length > registration.max_message:
            raise PayloadTooLarge(f"the message is larger than the endpoint's limit of {registration.max_message} "
                                  f"bytes")
        body = await self._read_body(request, registration.max_message)
        raw_query = request.rel_url.raw_query_string
        params = urls.parse_query(raw_query)
        required = registration.client_auth is lk.ClientAuth.RELAY_ACCESS_TOKEN
        token, _, strip_auth = urls.extract_token(params, request.headers, authorization_required=required)
        if _TOKEN_MARKER in body and endpoint.soap_version is not None:
            # Third-party SOAP callers put the token in a RelayAccessToken header (spec wcf-relay §1.3).
            soap_token, body = extract_relay_token(body, max_size=registration.max_message)
            token = token or soap_token
        self.gateway.namespace.authorize(token, endpoint.path, Right.SEND, now=time.time(), anonymous_ok=not required)
        headers = {
            k: v for k, v in msgs.join_headers(request.headers.items()).items()
            if k.lower() not in msgs.HOP_BY_HOP and k.lower() != "servicebusauthorization"
            and not (strip_auth and k.lower() == "authorization")
        }
        scheme = "https" if request.secure else "http"
        public_url = (self.gateway.config.public_url.rstrip("/") if self.gateway.config.public_url
                      else f"{scheme}://{request.host}") + "/" + endpoint.path
        call = lk.Call(id=new_tracking_id(), method=request.method, path=suffix, query=urls.filter_query(raw_query),
                       headers=headers, public_url=public_url, one_way=registration.binding.one_way)
        frame = lk.encode(call, body)
        if registration.binding is lk.Binding.NET_EVENT:
            return await self._multicast(endpoint, call, frame)
        links = [lnk for lnk in endpoint.links if lnk.sock.is_open]
        if not links:
            raise ListenerUnavailable(f"no service is listening on '{endpoint.path}'")
        link = self._random.choice(links)
        message, reply_body = await self._exchange(link, call, frame)
        if isinstance(message, lk.Ack):
            return web.Response(status=202)
        assert isinstance(message, lk.Reply)
        response = web.Response(status=message.status, body=bytes(reply_body))
        for name, value in msgs.response_headers_for_sender(message.headers, via=f"1.1 {request.host}"):
            if name.lower() != "via":
                response.headers[name] = value
        return response

    async def _read_body(self, request: web.Request, limit: int) -> bytes:
        parts: list[bytes] = []
        size = 0
        async for chunk in request.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"the message is larger than the endpoint's limit of {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)

    async def _exchange(self, link: Link, call: lk.Call, frame: bytes) -> tuple[Any, memoryview]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()
        link.pending[call.id] = fut
        try:
            link.sock.send_frame(fr.OP_BINARY, frame)
            await link.sock.drain()
            return await asyncio.wait_for(fut, self.gateway.config.request_timeout)
        except asyncio.TimeoutError:
            raise RelayTimeout("the service did not respond in the required time") from None
        except ConnectionClosed:
            raise ListenerUnavailable("the service host disconnected during the call") from None
        finally:
            link.pending.pop(call.id, None)

    async def _multicast(self, endpoint: RelayEndpoint, call: lk.Call, frame: bytes) -> web.Response:
        links = [lnk for lnk in endpoint.links if lnk.sock.is_open]
        if not links:
            raise ListenerUnavailable(f"no service is listening on '{endpoint.path}'")

        async def one(link: Link) -> bool:
            try:
                await asyncio.wait_for(self._exchange(link, call, frame), MULTICAST_ACK_TIMEOUT)
                return True
            except (RelayError, asyncio.TimeoutError):
                return False

        delivered = sum(await asyncio.gather(*(one(link) for link in links)))
        if not delivered:
            raise ListenerUnavailable(f"no service on '{endpoint.path}' received the message")
        return web.Response(status=202, headers={"X-Relay-Receivers": str(delivered)})

    # ---- discovery -----------------------------------------------------------------------------------------------
    def discovery_feed(self, request: web.Request) -> web.Response:
        """Atom feed of public endpoints (ServiceRegistrySettings, spec wcf-relay §1.4)."""
        scheme = "https" if request.secure else "http"
        base = (self.gateway.config.public_url or f"{scheme}://{request.host}").rstrip("/")
        now = datetime.now(timezone.utc).isoformat()
        feed = etree.Element(f"{{{ATOM_NS}}}feed", nsmap={None: ATOM_NS})
        etree.SubElement(feed, f"{{{ATOM_NS}}}title").text = "Publicly Listed Services"
        etree.SubElement(feed, f"{{{ATOM_NS}}}id").text = base + "/"
        etree.SubElement(feed, f"{{{ATOM_NS}}}updated").text = now
        for endpoint in sorted(self.endpoints.values(), key=lambda e: e.path.lower()):
            reg = endpoint.registration
            if reg.discovery is not lk.Discovery.PUBLIC or not endpoint.links:
                continue
            address = f"{base}/{endpoint.path}"
            entry = etree.SubElement(feed, f"{{{ATOM_NS}}}entry")
            etree.SubElement(entry, f"{{{ATOM_NS}}}id").text = address
            etree.SubElement(entry, f"{{{ATOM_NS}}}title").text = reg.display_name or endpoint.path.split("/")[-1]
            etree.SubElement(entry, f"{{{ATOM_NS}}}updated").text = datetime.fromtimestamp(
                endpoint.created, timezone.utc).isoformat()
            etree.SubElement(entry, f"{{{ATOM_NS}}}link", rel="alternate", href=address)
            etree.SubElement(entry, f"{{{ATOM_NS}}}category", term=reg.binding.value)
        body = etree.tostring(feed, xml_declaration=True, encoding="utf-8")
        return web.Response(body=body, content_type="application/atom+xml", charset="utf-8")
