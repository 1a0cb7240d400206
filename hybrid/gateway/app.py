"""The gateway: an aiohttp application that serves listeners, senders and plain HTTP callers on one port.

Routes (spec §1.1):
  GET  /$hc/{hc}[/suffix]?sb-hc-action=listen   listener control channel (WebSocket)
  GET  /$hc/{hc}[/suffix]?sb-hc-action=connect  sender WebSocket (also when the action is missing)
  GET  /$hc/{hc}...?sb-hc-action=accept&sb-hc-id listener's rendezvous for a sender (or its rejection)
  GET  /$hc/{hc}...?sb-hc-action=request&sb-hc-id listener's rendezvous for an HTTP request
  *    /{hc}[/suffix][?query]                    HTTP request relayed to a listener

Extensions (the WCF-style relay layer) see every request first and may answer it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import random
import time
import uuid
import weakref
from collections.abc import Callable, Mapping
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from aiohttp import web

from ..auth import Right, parse_token
from ..errors import (
    AuthenticationError,
    BadRequest,
    ConnectionClosed,
    EndpointNotFound,
    ListenerUnavailable,
    NodeUnreachable,
    ProtocolError,
    QuotaExceeded,
    RelayError,
    RelayTimeout,
    RendezvousExpired,
)
from ..protocol import frames as fr
from ..protocol import messages as msgs
from ..protocol import urls
from ..protocol.handshake import check_upgrade, handshake_headers, offered_subprotocols
from .config import GatewayConfig
from .directory import Directory, ListenerRef, LocalState, RedisDirectory
from .namespace import Entity, Namespace
from .relay import (
    RESPONSE_TIMEOUT,
    SENDER_GONE,
    Accepted,
    BodyPipe,
    FailureLimiter,
    PendingAccept,
    PendingRequest,
    Rejected,
    new_tracking_id,
)
from .wsconn import BDATA, BEND, BSTART, CLOSED, SOCKETS_KEY, TEXT, GatewaySocket, upgrade

__all__ = ["GATEWAY_KEY", "Extension", "Gateway"]

log = logging.getLogger("hybrid.gateway")

GATEWAY_KEY: web.AppKey[Gateway] = web.AppKey("gateway")
#: How many listeners a sender is offered to when the chosen one's node turns out to be gone.
DELIVERY_ATTEMPTS = 3
#: Chunk size when streaming a request body to a listener.
STREAM_CHUNK = 64 * 1024


class Extension(Protocol):
    """Something that serves part of the URL space on the gateway's port (the WCF-style relay layer)."""

    async def handle(self, request: web.Request) -> web.StreamResponse | None: ...

    def claims(self, method: str, raw_path: str) -> bool:
        """Whether ``handle`` might answer this request; ``False`` lets the front end relay it without aiohttp."""
        ...

    def front_call(self, head: Any) -> Any:
        """An object the front end can carry this request with (``start(body, reply)``, ``deadline``,
        ``expire()``, ``cancel()``, see front.py), or None (then ``claims`` decides who serves it)."""
        ...


def error_response(exc: RelayError, *, extra_headers: dict[str, str] | None = None) -> web.Response:
    """Status, a reason phrase a person understands, and Azure's JSON error body (spec §2.8)."""
    return web.Response(status=exc.http_status, reason=exc.reason, body=exc.json_body(),
                        content_type="application/json", charset="utf-8", headers=extra_headers)


class ListenerChannel:
    """One listener's control channel."""

    def __init__(self, gateway: Gateway, entity: Entity, sock: GatewaySocket, *, client_id: str, scheme: str,
                 authority: str, token_expiry: float) -> None:
        self.gateway = gateway
        self.entity = entity
        self.sock = sock
        self.client_id = client_id
        self.scheme = scheme
        self.authority = authority
        self.token_expiry = token_expiry
        self.pending: set[str] = set()
        self.id = ""
        #: every request rendezvous address on this channel is this plus the request's id
        self.request_address_prefix = urls.build_rendezvous_address(
            scheme=scheme, authority=authority, entity=entity.name, suffix="", app_query="",
            action=urls.Action.REQUEST, tracking_id="")

    def address(self, action: urls.Action, tracking_id: str, *, suffix: str = "", app_query: str = "") -> str:
        return urls.build_rendezvous_address(scheme=self.scheme, authority=self.authority, entity=self.entity.name,
                                             suffix=suffix, app_query=app_query, action=action,
                                             tracking_id=tracking_id)

    def check(self, now_wall: float, now_loop: float) -> None:
        """One sweep: ping to find half-open channels (spec §2.9); close 1008 once the token has expired past
        its grace (spec §2.5)."""
        cfg = self.gateway.config
        sock = self.sock
        if not sock.is_open:
            return
        if now_wall > self.token_expiry + cfg.token_grace:
            log.info("listener %s on %s: token expired, closing", self.client_id, self.entity.name)
            sock.send_close(1008, "token expired: renew it with renewToken")
            sock.close_later()
            return
        idle = now_loop - sock.last_seen
        if idle > 2 * cfg.ping_interval + 5:
            log.info("listener %s on %s: no traffic for %.0fs, dropping", self.client_id, self.entity.name, idle)
            sock.abort()
        elif idle >= cfg.ping_interval:
            try:
                sock.send_frame(fr.OP_PING, b"")
            except ConnectionClosed:
                pass


class ListenerReader:
    """What a listener sends on a control channel or an HTTP rendezvous: responses, bodies, renewals. Runs in the
    socket's read callback (no task, no queue): a response reaches its request in the same callback.

    A body is the one binary message right after its ``response`` (spec §2.1); any other binary message, such as
    the empty one hyco-https sends after ``body:false`` (§2.4), is read and dropped. A body up to the inline limit
    is collected and handed over whole; a larger one is streamed through a bounded :class:`BodyPipe`, and the
    socket stops reading while the pipe is full.
    """

    def __init__(self, gateway: Gateway, sock: GatewaySocket, channel: ListenerChannel | None,
                 rendezvous_for: str | None = None) -> None:
        self.gateway = gateway
        self.sock = sock
        self.channel = channel
        self.rendezvous_for = rendezvous_for
        self.announced: tuple[PendingRequest | None, msgs.Response] | None = None  # a response awaiting its body
        self.target: tuple[PendingRequest | None, msgs.Response] | None = None  # whose body is arriving now
        self.collected: list[bytes] | None = None
        self.size = 0
        self.pipe: BodyPipe | None = None
        sock.on_event = self.on_event

    def on_event(self, kind: str, value: Any) -> None:
        try:
            if kind == BDATA:
                if self.pipe is not None:
                    self._put(value)
                elif self.collected is not None:
                    self.collected.append(value)
                    self.size += len(value)
                    if self.size > msgs.INLINE_BODY_LIMIT:  # too big to hold: stream the rest
                        self.pipe = BodyPipe()
                        _hand_over(self.target, self.pipe)
                        for chunk in self.collected:
                            self._put(chunk)
                        self.collected = None
            elif kind == BSTART:
                self.target, self.announced = self.announced, None
                self.size = 0
                self.collected = [] if self.target is not None and self.target[0] is not None else None
            elif kind == BEND:
                if self.pipe is not None:
                    self.pipe.finish()
                elif self.collected is not None:
                    _hand_over(self.target, b"".join(self.collected))
                self.target, self.pipe, self.collected = None, None, None
            elif kind == TEXT:
                if self.announced is not None:  # a body was announced but another message came: §2.1 broken
                    _fail(self.announced, ProtocolError("listener sent no body after body:true"))
                self.announced = handle_listener_message(self.gateway, self.sock, self.channel, value,
                                                         self.rendezvous_for)
            elif kind == CLOSED:
                self._closed()
        except RelayError as exc:
            self.sock.fail(exc.close_code if exc.close_code != 1011 else 1008, exc.reason)

    def _put(self, chunk: bytes) -> None:
        pipe = self.pipe
        assert pipe is not None
        if pipe.put(chunk) and pipe.on_writable is None:
            self.sock.pause_reading()
            pipe.on_writable = self.sock.resume_reading

    def _closed(self) -> None:
        gone = ListenerUnavailable("the listener disconnected while sending the response")
        if self.pipe is not None:
            self.pipe.finish(gone)
        for waiting in (self.announced, self.target):
            if waiting is not None:
                _fail(waiting, gone)
        self.announced = self.target = self.pipe = self.collected = None


def _hand_over(target: tuple[PendingRequest | None, msgs.Response] | None, body: bytes | BodyPipe) -> None:
    pending = target[0] if target is not None else None
    if target is None or pending is None:
        return
    if not pending.resolve((target[1], body)) and isinstance(body, BodyPipe):
        body.abandon()


def _fail(target: tuple[PendingRequest | None, msgs.Response], error: RelayError) -> None:
    pending = target[0]
    if pending is not None:
        pending.fail(error)


def handle_listener_message(gateway: Gateway, sock: GatewaySocket, channel: ListenerChannel | None,
                            text: bytes, rendezvous_for: str | None = None
                            ) -> tuple[PendingRequest | None, msgs.Response] | None:
    """Act on one control message; returns the response whose body comes next, if any.

    A response counts only where its request went: on the control channel it was sent on, or on that
    request's own rendezvous. Anything else is dropped, so one socket can never answer for another.
    """
    message = msgs.parse_message(text)
    if isinstance(message, msgs.Response):
        pending = gateway.pending_requests.get(message.request_id)
        if pending is not None and (
                (rendezvous_for is not None and message.request_id != rendezvous_for)
                or (rendezvous_for is None and pending.channel is not channel)):
            log.warning("response for request %s on a socket it was not sent to: dropped", message.request_id[:80])
            pending = None
        if pending is None or pending.done:
            log.info("response for unknown or finished request %s ignored", message.request_id[:80])
            return (None, message) if message.body else None  # its body is read and dropped
        if not message.body:
            pending.resolve((message, None))
            return None
        return pending, message
    if isinstance(message, msgs.RenewToken):
        if channel is None:
            raise ProtocolError("renewToken is only valid on the control channel")
        try:
            gateway.namespace.authorize(message.token, channel.entity.name, Right.LISTEN, now=time.time())
            channel.token_expiry = parse_token(message.token).expiry
        except RelayError as exc:
            raise AuthenticationError(f"token renewal rejected: {exc.reason}") from None
        return None
    log.debug("ignoring control message %s", type(message).__name__)
    return None


class Gateway:
    """State of one gateway node and its aiohttp application."""

    def __init__(self, config: GatewayConfig, directory: Directory | None = None) -> None:
        self.config = config
        if directory is None:
            directory = (RedisDirectory(config.redis_url, config.node_id) if config.redis_url
                         else Directory(config.node_id))
        self.directory = directory
        self.namespace = Namespace(config, cluster_entities=directory.known_entities)
        self.listeners: dict[str, list[ListenerChannel]] = {}
        self.channels_by_id: dict[str, ListenerChannel] = {}
        #: this node's own address (scheme://host:port); rendezvous addresses use it in a cluster
        self.node_url = ""
        self._sweeper: asyncio.Task | None = None
        self.pending_accepts: dict[str, PendingAccept] = {}
        self.pending_requests: dict[str, PendingRequest] = {}
        self.failed_listens = FailureLimiter(config.failed_listen_limit)
        self.extensions: list[Extension] = []
        #: connections the front end is serving (front.py); the sweeper closes idle ones
        self.front_ends: set[Any] = set()
        #: requests the front end carried itself, and connections it handed to aiohttp (shown by /$health)
        self.front_stats = {"carried": 0, "handed_over": 0}
        self.sockets = 0
        # Best-effort fairness is all spec §4 asks; ids that must be unguessable use os.urandom instead.
        self._random = random.Random(os.urandom(16))

    # ---- application ---------------------------------------------------------------------------------------------
    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024, handler_args={"max_field_size": 32 * 1024})
        app[GATEWAY_KEY] = self
        app[SOCKETS_KEY] = weakref.WeakSet()
        app.router.add_route("*", "/{tail:.*}", self.dispatch)
        app.on_shutdown.append(self._say_goodbye)
        return app

    async def start(self, node_url: str) -> None:
        """Called once the node is bound: join the directory (a no-op on a single node), start the sweeper."""
        self.node_url = node_url
        self._sweeper = asyncio.create_task(self._sweep())
        self.directory.node_url = node_url
        await self.directory.start(self._on_node_message, self._snapshot)
        log.info("node %s (%s directory) at %s, event loop %s", self.directory.node_id,
                 "redis" if self.directory.clustered else "local", node_url,
                 type(asyncio.get_running_loop()).__module__.split(".")[0])

    async def _sweep(self) -> None:
        """One task for every listener's keepalive and token expiry and every front-end request's deadline,
        instead of a task or timer each. Deadlines are kept to within a second."""
        loop = asyncio.get_running_loop()
        tick = min(self.config.ping_interval, 1.0)
        while True:
            await asyncio.sleep(tick)
            now_wall, now_loop = time.time(), loop.time()
            for channel in list(self.channels_by_id.values()):
                channel.check(now_wall, now_loop)
            for front_end in list(self.front_ends):
                front_end.check(now_loop)

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for ext in self.extensions:
            close = getattr(ext, "close", None)
            if close is not None:
                await close()
        await self.directory.close()

    def _snapshot(self) -> LocalState:
        return LocalState(
            listeners=[(c.entity.name, cid) for cid, c in self.channels_by_id.items()],
            entities=[e.name for e in self.namespace.entities() if not e.declared],
            links=[link for ext in self.extensions for link in getattr(ext, "local_links", list)()],
        )

    def health(self) -> dict[str, Any]:
        return {
            **self.directory.status(),
            "node_url": self.node_url,
            "listeners": {name: len(chs) for name, chs in self.listeners.items() if chs},
            "sockets": self.sockets,
            "pending": {"accepts": len(self.pending_accepts), "requests": len(self.pending_requests)},
            "front_end": {"connections": len(self.front_ends), **self.front_stats},
            **{k: v for ext in self.extensions for k, v in getattr(ext, "health", dict)().items()},
        }

    async def _say_goodbye(self, app: web.Application) -> None:
        """Close every socket with 1001 so clients know to reconnect elsewhere (spec §2.6, §2.8)."""
        for front_end in list(self.front_ends):
            front_end.close()
        sockets = [s for s in app[SOCKETS_KEY] if s.is_open]
        for sock in sockets:
            sock.going_away()
        if sockets:
            await asyncio.wait([s.done for s in sockets], timeout=2.0)

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        try:
            for ext in self.extensions:
                response = await ext.handle(request)
                if response is not None:
                    return response
            raw_path = request.rel_url.raw_path
            if raw_path == "/$health" and request.method == "GET":
                return web.json_response(self.health())
            if raw_path == "/$hc" or raw_path.startswith("/$hc/"):
                return await self.handle_hc(request)
            return await self.handle_http(request)
        except RelayError as exc:
            log.info("%s %s -> %d %s", request.method, request.rel_url.path[:200], exc.http_status, exc.reason)
            return error_response(exc)

    # ---- $hc WebSockets ------------------------------------------------------------------------------------------
    async def handle_hc(self, request: web.Request) -> web.StreamResponse:
        raw_query = request.rel_url.raw_query_string
        params = urls.parse_query(raw_query)
        action = urls.action_of(params)
        if request.headers.get("Upgrade", "").lower() != "websocket":
            raise BadRequest("this address takes WebSocket upgrades only")
        path = unquote(request.rel_url.raw_path)
        if action is urls.Action.LISTEN:
            return await self.handle_listen(request, path, params)
        name, suffix = urls.split_entity(path, self.namespace.is_known, hc=True)
        if not name:
            raise EndpointNotFound(f"no hybrid connection at '{path[4:][:200]}'")
        entity = self.namespace.get(name)
        assert entity is not None
        if action is urls.Action.CONNECT:
            return await self.handle_connect(request, entity, suffix, params, raw_query)
        if action is urls.Action.ACCEPT:
            return await self.handle_accept(request, params)
        return await self.handle_request_rendezvous(request, params)

    def _client(self, request: web.Request) -> str:
        return request.remote or "?"

    async def handle_listen(self, request: web.Request, path: str, params: dict[str, str]) -> web.StreamResponse:
        client = self._client(request)
        if self.failed_listens.blocked(client):
            await asyncio.sleep(1.0)  # tarpit: a client retrying with no backoff gets one try a second
            raise QuotaExceeded("too many failed listen attempts from this address; slow down", http_status=429)
        segments = [s for s in path.split("/") if s][1:]
        name = "/".join(segments)
        try:
            if not name:
                raise BadRequest("no hybrid connection name in the path")
            token, _, _ = urls.extract_token(params, request.headers, authorization_required=True)
            entity = self.namespace.get(name)
            if entity is None and not self.namespace.dynamic:
                raise EndpointNotFound(f"no hybrid connection named '{name}'")
            self.namespace.authorize(token, name, Right.LISTEN, now=time.time())
            entity = self.namespace.ensure(name)
            listeners = self.listeners.setdefault(entity.name.lower(), [])
            if len(listeners) >= entity.max_listeners:
                raise QuotaExceeded(
                    f"'{entity.name}' already has {entity.max_listeners} listeners, the most it allows")
            self._check_capacity()
            key = check_upgrade(request.method, request.headers)
        except (AuthenticationError, EndpointNotFound, BadRequest):
            self.failed_listens.record(client)
            raise
        expiry = parse_token(token).expiry if token else time.time() + 3600
        scheme, authority = self._public_authority(request)
        channel_id = uuid.uuid4().hex
        if not entity.declared:
            await self.directory.add_entity(entity.name)
        if not await self.directory.add_listener(entity.name, channel_id, entity.max_listeners):
            raise QuotaExceeded(
                f"'{entity.name}' already has {entity.max_listeners} listeners in the cluster, the most it allows")
        try:
            sock = await upgrade(request, handshake_headers(key, None), label=f"listener:{entity.name}",
                                 attach=False)
        except BaseException:
            await self.directory.remove_listener(entity.name, channel_id)
            raise
        channel = ListenerChannel(self, entity, sock, client_id=params.get("sb-hc-id", "")[:64], scheme=scheme,
                                  authority=authority, token_expiry=expiry)
        channel.id = channel_id
        ListenerReader(self, sock, channel)
        sock.attach(request)
        listeners.append(channel)
        self.channels_by_id[channel_id] = channel
        self.sockets += 1
        log.info("listener %s online on %s from %s (%d listening)", channel.client_id, entity.name, client,
                 len(listeners))
        try:
            await sock.done
        finally:
            self.sockets -= 1
            listeners.remove(channel)
            self.channels_by_id.pop(channel_id, None)
            await self.directory.remove_listener(entity.name, channel_id)
            for rid in list(channel.pending):
                pending = self.pending_requests.get(rid)
                if pending is not None:
                    pending.fail(ListenerUnavailable("the listener disconnected before answering"))
            log.info("listener %s offline on %s (%d listening)", channel.client_id, entity.name, len(listeners))
        return sock.handler_response()

    def _public_authority(self, request: web.Request) -> tuple[str, str]:
        """Where a listener should open rendezvous sockets: the address it reached us at (spec §5.3), or the
        configured public URL. Taken from the *listener's* request, never a sender's, so a sender cannot send a
        listener elsewhere."""
        base = self.config.public_url or (self.node_url if self.directory.clustered else "")
        if base:
            # In a cluster the rendezvous must reach *this* node, not whichever one a load balancer picks.
            parts = urlsplit(base)
            scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
            return scheme, parts.netloc
        return ("wss" if request.secure else "ws"), request.host

    def _check_capacity(self) -> None:
        if self.sockets >= self.config.max_connections:
            raise QuotaExceeded("the gateway is at its connection limit", http_status=503)

    def choose_listener(self, entity: Entity) -> ListenerChannel | None:
        """Random choice among this node's open listeners."""
        open_ = [c for c in self.listeners.get(entity.name.lower(), ()) if c.sock.is_open]
        return self._random.choice(open_) if open_ else None

    async def choose_target(self, entity: Entity) -> ListenerChannel | ListenerRef | None:
        """Random choice among the cluster's listeners (spec §4: random, best-effort fair)."""
        local: list[ListenerChannel | ListenerRef] = [
            c for c in self.listeners.get(entity.name.lower(), ()) if c.sock.is_open]
        remote = await self.directory.remote_listeners(entity.name) if self.directory.clustered else []
        candidates = local + list(remote)
        if len(candidates) <= 1:
            return candidates[0] if candidates else None
        return self._random.choice(candidates)

    def rendezvous_authority(self, target: ListenerChannel | ListenerRef) -> tuple[str, str]:
        """Scheme and authority of rendezvous addresses: the listener's own view locally, this node's URL when
        the listener is on another node (it must come here, where the sender waits)."""
        if isinstance(target, ListenerChannel):
            return target.scheme, target.authority
        base = self.config.public_url or self.node_url
        parts = urlsplit(base)
        return {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme), parts.netloc

    async def deliver(self, target: ListenerChannel | ListenerRef, text: str, pending_id: str) -> None:
        """Put one control message on the target listener's control channel, here or on its node."""
        if isinstance(target, ListenerChannel):
            target.sock.send_text(text)
            await target.sock.drain()
            return
        sent = await self.directory.send(target.node, {"type": "control", "listener": target.id, "text": text,
                                                       "from": self.directory.node_id, "pending": pending_id})
        if not sent:
            self.directory.suspect(target.node)
            raise NodeUnreachable("the listener's gateway node is unreachable")

    async def _on_node_message(self, message: dict[str, Any]) -> None:
        """Messages from other nodes: control messages for our listeners, and delivery failures."""
        kind = message.get("type")
        if kind == "control":
            channel = self.channels_by_id.get(str(message.get("listener")))
            if channel is not None and channel.sock.is_open and isinstance(message.get("text"), str):
                channel.sock.send_text(message["text"])
                return
            await self.directory.send(str(message.get("from")), {"type": "undeliverable",
                                                                  "pending": message.get("pending")})
        elif kind == "undeliverable":
            pending_id = str(message.get("pending"))
            error = ListenerUnavailable("the chosen listener disconnected")
            accept = self.pending_accepts.get(pending_id)
            if accept is not None and not accept.outcome.done():
                accept.outcome.set_exception(error)
            request = self.pending_requests.get(pending_id)
            if request is not None:
                request.fail(error)

    async def handle_connect(self, request: web.Request, entity: Entity, suffix: str, params: dict[str, str],
                             raw_query: str) -> web.StreamResponse:
        token, _, strip_auth = urls.extract_token(params, request.headers,
                                                  authorization_required=entity.requires_client_authorization)
        self.namespace.authorize(token, entity.name, Right.SEND, now=time.time(),
                                 anonymous_ok=not entity.requires_client_authorization)
        key = check_upgrade(request.method, request.headers)
        self._check_capacity()
        tracking_id = new_tracking_id(params.get("sb-hc-id"))
        connect_headers = {
            k: v for k, v in msgs.join_headers(request.headers.items()).items()
            if k.lower() != "servicebusauthorization" and not (strip_auth and k.lower() == "authorization")
        }
        pending = PendingAccept(tracking_id, entity.name, time.monotonic() + self.config.accept_timeout)
        self.pending_accepts[tracking_id] = pending
        try:
            host, port = request.transport.get_extra_info("peername")[:2] if request.transport else ("", 0)
            for attempt in range(DELIVERY_ATTEMPTS):
                target = await self.choose_target(entity)
                if target is None:
                    raise EndpointNotFound("there are no listeners connected for the endpoint")
                scheme, authority = self.rendezvous_authority(target)
                address = urls.build_rendezvous_address(scheme=scheme, authority=authority, entity=entity.name,
                                                        suffix=suffix, app_query=urls.filter_query(raw_query),
                                                        action=urls.Action.ACCEPT, tracking_id=tracking_id)
                try:
                    await self.deliver(target, msgs.encode(msgs.Accept(address, tracking_id, connect_headers,
                                                                       msgs.RemoteEndpoint(str(host), int(port)))),
                                       tracking_id)
                    break
                except NodeUnreachable:
                    if attempt == DELIVERY_ATTEMPTS - 1:
                        raise  # nobody got the accept: another listener may take the sender
            try:
                # A timeout context, not wait_for: no extra task per connect (it is on the setup-latency path).
                async with asyncio.timeout(self.config.accept_timeout):
                    outcome = await pending.outcome
            except TimeoutError:
                raise RelayTimeout("the listener did not accept the connection in time") from None
        finally:
            self.pending_accepts.pop(tracking_id, None)
            if not pending.outcome.done():
                pending.outcome.cancel()
        if isinstance(outcome, Rejected):
            return web.Response(status=outcome.status, reason=outcome.description,
                                text=json.dumps({"error": {"code": "Rejected", "message": outcome.description}}),
                                content_type="application/json")
        accepted: Accepted = outcome
        lsock: GatewaySocket = accepted.socket
        try:
            ssock = await upgrade(request, handshake_headers(key, accepted.subprotocol),
                                  label=f"sender:{entity.name}", attach=False)
        except (ConnectionError, RuntimeError):
            lsock.send_close(1001, "the sender went away")
            lsock.close_later(1.0)
            lsock.attach(accepted.request)
            raise ConnectionClosed("sender disconnected during the handshake") from None
        ssock.pair(lsock)
        lsock.attach(accepted.request)
        ssock.attach(request)
        self.sockets += 2
        log.debug("relay %s open on %s", tracking_id[:36], entity.name)
        try:
            await ssock.done
            await lsock.done
        finally:
            self.sockets -= 2
            log.debug("relay %s closed on %s (%s)", tracking_id[:36], entity.name,
                      ssock.close_code or lsock.close_code)
        return ssock.handler_response()

    async def handle_accept(self, request: web.Request, params: dict[str, str]) -> web.StreamResponse:
        tracking_id = params.get("sb-hc-id", "")
        pending = self.pending_accepts.pop(tracking_id, None)
        if pending is None or pending.outcome.done() or time.monotonic() > pending.expires:
            raise RendezvousExpired("the accept address is unknown, already used or expired")
        rejection = urls.reject_parameters(params)
        if rejection is not None:
            pending.outcome.set_result(Rejected(*rejection))
            return web.Response(status=410, reason="Gone")  # .NET reads 410 as a successful rejection (§2.6)
        key = check_upgrade(request.method, request.headers)
        offered = offered_subprotocols(request.headers)
        subprotocol = offered[0] if offered else None
        lsock = await upgrade(request, handshake_headers(key, subprotocol), label="listener-rendezvous",
                              attach=False)
        pending.outcome.set_result(Accepted(lsock, request, subprotocol))
        await lsock.done
        return lsock.handler_response()

    async def handle_request_rendezvous(self, request: web.Request, params: dict[str, str]) -> web.StreamResponse:
        """A listener's socket for one HTTP request, opened at our request or its own (spec §2.7)."""
        tracking_id = params.get("sb-hc-id", "")
        pending = self.pending_requests.get(tracking_id)
        if pending is None or pending.rendezvous_used or pending.done:
            raise RendezvousExpired("the request address is unknown, already used or expired")
        pending.rendezvous_used = True
        key = check_upgrade(request.method, request.headers)
        sock = await upgrade(request, handshake_headers(key, None), label="http-rendezvous", attach=False)
        ListenerReader(self, sock, None, rendezvous_for=tracking_id)
        sock.attach(request)
        self.sockets += 1
        if not pending.rendezvous.done():
            pending.rendezvous.set_result(sock)
        try:
            await sock.done
        finally:
            self.sockets -= 1
        return sock.handler_response()

    # ---- plain HTTP ----------------------------------------------------------------------------------------------
    # The front end (front.py) relays simple requests itself; the aiohttp path below takes every other one.
    # Both go through route_http, open_request, send_inline, close_request and response_parts.
    def route_http(self, method: str, raw_path: str, raw_query: str, headers: Mapping[str, str]) -> tuple[Entity, bool]:
        """The hybrid connection a plain HTTP request is for, once its sender is authorized; and whether its
        ``Authorization`` header carried the relay token (and must not reach the listener)."""
        path = unquote(raw_path)
        if method == "CONNECT":
            raise BadRequest("CONNECT is not relayed")
        if headers.get("Upgrade"):
            raise BadRequest("protocol upgrades are not relayed over HTTP; use /$hc/ for WebSockets")
        name, _suffix = urls.split_entity(path, self.namespace.is_known, hc=False)
        if not name:
            raise EndpointNotFound(f"no hybrid connection at '{path[:200]}'")
        entity = self.namespace.get(name)
        assert entity is not None
        params = urls.parse_query(raw_query)
        token, _, strip_auth = urls.extract_token(params, headers,
                                                  authorization_required=entity.requires_client_authorization)
        self.namespace.authorize(token, entity.name, Right.SEND, now=time.time(),
                                 anonymous_ok=not entity.requires_client_authorization)
        return entity, strip_auth

    @staticmethod
    def fits_inline(headers: Mapping[str, str], request_target: str, has_body: bool, length: int | None) -> bool:
        """Whether a request travels on the control channel (spec §2.7) rather than on a rendezvous."""
        # JSON adds a few bytes per header; an estimate is enough to choose.
        head_size = sum(len(k) + len(v) + 8 for k, v in headers.items()) + len(request_target)
        return head_size <= msgs.INLINE_BODY_LIMIT // 2 and (
            not has_body or (length is not None and length + head_size <= msgs.INLINE_BODY_LIMIT))

    def open_request(self, entity: Entity, target: ListenerChannel | ListenerRef, method: str, request_target: str,
                     headers: dict[str, str], has_body: bool, remote: msgs.RemoteEndpoint | None,
                     on_response: Callable[[Any, RelayError | None], None] | None = None) -> PendingRequest:
        """Register a request that is about to go to ``target``; :meth:`close_request` ends it. The response
        comes through ``on_response`` if given, else through the ``response`` future."""
        if len(self.pending_requests) >= self.config.max_connections:
            # Each pending request may hold an inline body of up to 64 KiB: their number is what bounds memory.
            raise QuotaExceeded("the gateway has too many requests in flight; retry later", http_status=503)
        tracking_id = new_tracking_id()  # URL-safe: [A-Za-z0-9_-]
        channel = target if isinstance(target, ListenerChannel) else None
        if channel is not None:
            address = channel.request_address_prefix + tracking_id
        else:
            scheme, authority = self.rendezvous_authority(target)
            address = urls.build_rendezvous_address(scheme=scheme, authority=authority, entity=entity.name,
                                                    suffix="", app_query="", action=urls.Action.REQUEST,
                                                    tracking_id=tracking_id)
        head = msgs.Request(address=address, id=tracking_id, method=method, request_target=request_target,
                            request_headers=headers, body=has_body, remote_endpoint=remote)
        pending = PendingRequest(tracking_id, entity.name, channel, head,
                                 time.monotonic() + self.config.request_timeout, on_response)
        self.pending_requests[tracking_id] = pending
        if channel is not None:
            channel.pending.add(tracking_id)
        return pending

    @staticmethod
    def send_inline(pending: PendingRequest, body: bytes) -> None:
        """The request and its body on the control channel, back to back in one callback: nothing can come
        between them (spec §2.1)."""
        sock = pending.channel.sock
        head = pending.head
        if bool(body) != head.body:
            head = dataclasses.replace(head, body=bool(body))
        sock.send_message_batched(fr.OP_TEXT, msgs.encode_bytes(head))
        if body:
            sock.send_message_batched(fr.OP_BINARY, body)

    def close_request(self, pending: PendingRequest) -> None:
        """Forget a request whose response is complete (or failed), and close its rendezvous if it had one."""
        self.pending_requests.pop(pending.id, None)
        if pending.channel is not None:
            pending.channel.pending.discard(pending.id)
        rendezvous = pending.rendezvous_socket()
        if rendezvous is not None and rendezvous.is_open:
            rendezvous.send_close(1000, "response complete")
            rendezvous.close_later()

    @staticmethod
    def response_parts(message: msgs.Response, method: str, host: str
                       ) -> tuple[str | None, list[tuple[str, str]], bool]:
        """Reason phrase, headers, and whether the response has no body (HEAD, 1xx, 204, 304)."""
        reason = urls.sanitize_reason(message.status_description or "") or None
        if message.status_code in (502, 504):
            log.info("listener answered %d, which is reserved for the gateway", message.status_code)
        headers = msgs.response_headers_for_sender(message.response_headers, via=f"1.1 {host}")
        no_body = method == "HEAD" or message.status_code in (204, 304) or message.status_code < 200
        return reason, headers, no_body

    async def handle_http(self, request: web.Request) -> web.StreamResponse:
        entity, strip_auth = self.route_http(request.method, request.rel_url.raw_path,
                                             request.rel_url.raw_query_string, request.headers)
        raw_query = request.rel_url.raw_query_string
        for attempt in range(DELIVERY_ATTEMPTS):
            target = await self.choose_target(entity)
            if target is None:
                raise ListenerUnavailable("there are no listeners connected for the endpoint")
            try:
                return await self.relay_http(request, entity, target, raw_query, strip_auth)
            except NodeUnreachable:
                # Nothing was sent yet (the control message reached nobody): another listener can take it.
                if attempt == DELIVERY_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    async def relay_http(self, request: web.Request, entity: Entity, target: ListenerChannel | ListenerRef,
                         raw_query: str, strip_auth: bool) -> web.StreamResponse:
        headers = msgs.request_headers_for_listener(request.headers.items(), strip_authorization=strip_auth,
                                                    via=f"1.1 {request.host}")
        query = urls.filter_query(raw_query)
        request_target = request.rel_url.raw_path + ("?" + query if query else "")
        peer = request.transport.get_extra_info("peername") if request.transport else None
        remote = msgs.RemoteEndpoint(str(peer[0]), int(peer[1])) if peer else None
        has_body = request.body_exists
        channel = target if isinstance(target, ListenerChannel) else None
        # Requests for a listener on another node always use a rendezvous here, so the exchange stays on this node.
        inline = channel is not None and self.fits_inline(headers, request_target, has_body, request.content_length)
        pending = self.open_request(entity, target, request.method, request_target, headers, has_body, remote)
        try:
            if inline:
                self.send_inline(pending, await request.read() if has_body else b"")
                await pending.channel.sock.drain()
            else:
                await self.deliver(target, msgs.encode(msgs.Request(address=pending.head.address, id=pending.id)),
                                   pending.id)
                rendezvous = await self._wait(pending.rendezvous, pending.expires,
                                              "the listener did not open the request rendezvous in time")
                rendezvous.send_text(msgs.encode(pending.head))
                if has_body:
                    await self._stream_body(request, rendezvous)
            message, body = await self._wait(pending.response, pending.expires, RESPONSE_TIMEOUT)
            return await self._send_response(request, message, body)
        except ConnectionClosed as exc:
            raise ListenerUnavailable(f"the listener connection closed: {exc.reason}") from None
        finally:
            self.close_request(pending)

    async def _wait(self, fut: asyncio.Future, deadline: float, what: str) -> Any:
        try:
            async with asyncio.timeout_at(asyncio.get_running_loop().time() + max(0.0, deadline - time.monotonic())):
                return await fut
        except TimeoutError:
            raise RelayTimeout(what) from None

    async def _stream_body(self, request: web.Request, sock: GatewaySocket) -> None:
        """The request body as one binary message, one fragment per chunk read: never held whole (§2.1, §2.7)."""
        opcode = fr.OP_BINARY
        async for chunk in request.content.iter_chunked(STREAM_CHUNK):
            if not chunk:
                continue
            sock.send_frame(opcode, chunk, fin=False)
            opcode = fr.OP_CONT
            await sock.drain()
        sock.send_frame(opcode, b"", fin=True)
        await sock.drain()

    async def _send_response(self, request: web.Request, message: msgs.Response,
                             body: bytes | BodyPipe | None) -> web.StreamResponse:
        reason, headers, no_body = self.response_parts(message, request.method, request.host)
        pipe = body if isinstance(body, BodyPipe) else None
        if no_body and pipe is not None:
            pipe.abandon()
            pipe = None
        # Buffer up to the inline limit: a small body (the common case) goes out in one write with its length.
        first: list[bytes] = [body] if isinstance(body, bytes) else []
        rest = None
        if pipe is not None:
            size = 0
            rest = pipe.__aiter__()
            try:
                async for chunk in rest:
                    first.append(chunk)
                    size += len(chunk)
                    if size > msgs.INLINE_BODY_LIMIT:
                        break
                else:
                    rest = None
            except RelayError as exc:
                pipe.abandon()
                raise ListenerUnavailable(f"the listener failed while sending the response: {exc.reason}") from None
        if rest is None and not no_body:
            whole = web.Response(status=message.status_code, reason=reason, body=b"".join(first))
            for name, value in headers:
                whole.headers.add(name, value)
            return whole  # aiohttp writes it, and handles a sender that has gone meanwhile itself
        response = web.StreamResponse(status=message.status_code, reason=reason)
        for name, value in headers:
            response.headers.add(name, value)
        try:
            await response.prepare(request)
            if not no_body:  # (no body and no invented Content-Length: for HEAD the real length is unknown)
                await response.write(b"".join(first))
                assert pipe is not None and rest is not None
                async for chunk in rest:
                    await response.write(chunk)
            await response.write_eof()
        except RelayError:
            # Headers are out: the only honest signal left is to cut the connection before the end.
            assert pipe is not None
            pipe.abandon()
            if request.transport is not None:
                request.transport.abort()
        except ConnectionError:
            # The sender reset or closed its connection: the rest of the body has nowhere to go. An everyday
            # event, not a server error (aiohttp would log it with a traceback).
            if pipe is not None:
                pipe.abandon()
            log.info("%s %s: %s", request.method, request.rel_url.raw_path[:200], SENDER_GONE)
        except asyncio.CancelledError:
            if pipe is not None:
                pipe.abandon()
            raise
        return response
