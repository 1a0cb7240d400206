"""Where listeners are: one interface, two implementations.

* :class:`LocalDirectory` — one node, nothing external (the default). Every listener is local.
* :class:`RedisDirectory` — a cluster. Each node registers with a heartbeat key that expires, so a dead node's
  listeners drop out of every lookup within :data:`NODE_TTL` seconds, and survivors delete its entries.

What crosses nodes, and why (see docs/cluster.md):

* Hybrid Connections: only *control messages* (an ``accept`` or a rendezvous-only ``request``, a few hundred
  bytes) go from the sender's node to the listener's node, over Redis pub/sub. The rendezvous address in them
  points at the sender's node, so the listener opens its rendezvous there and the payload never crosses nodes.
  Pub/sub also says at once when nobody is subscribed for a node (PUBLISH returns 0), so a sender never waits for
  a dead node.
* WCF-style links: a host's link lives on one node, so calls are forwarded node to node over HTTP (bodies of up to
  16 MiB do not belong in Redis); Redis only holds which node has which path.

When Redis is unreachable each node keeps serving its own listeners, says so in its log and health endpoint, and
registers its state again when Redis is back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["NODE_TTL", "Directory", "ListenerRef", "LocalDirectory", "LocalState", "RedisDirectory"]

log = logging.getLogger("hybrid.gateway.directory")

#: A node whose heartbeat is older than this is dead.
NODE_TTL = 6.0
HEARTBEAT = 2.0
MessageHandler = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class ListenerRef:
    node: str
    id: str


@dataclass
class LocalState:
    """What a node re-registers when Redis comes back."""

    listeners: list[tuple[str, str]]  # (entity, listener id)
    entities: list[str]
    links: list[tuple[str, str, str]]  # (path, link id, registration query)


class Directory:
    """The single-node directory: nobody else exists. Also the interface :class:`RedisDirectory` implements."""

    clustered = False

    def __init__(self, node_id: str | None = None, node_url: str = "") -> None:
        self.node_id = node_id or uuid.uuid4().hex[:12]
        self.node_url = node_url
        self.healthy = True

    async def start(self, on_message: MessageHandler, snapshot: Callable[[], LocalState]) -> None:
        return None

    async def close(self) -> None:
        return None

    async def add_listener(self, entity: str, listener_id: str, limit: int) -> bool:
        """Register a local listener; False when the cluster already has ``limit`` on the entity."""
        return True

    async def remove_listener(self, entity: str, listener_id: str) -> None:
        return None

    async def remote_listeners(self, entity: str) -> list[ListenerRef]:
        """Listeners of ``entity`` on other live nodes."""
        return []

    async def add_entity(self, name: str) -> None:
        return None

    def known_entities(self) -> frozenset[str]:
        return frozenset()

    async def send(self, node: str, message: dict[str, Any]) -> bool:
        """Deliver ``message`` to ``node``; False if no such node is listening."""
        return False

    async def add_link(self, path: str, link_id: str, registration: str) -> None:
        return None

    async def remove_link(self, path: str, link_id: str) -> None:
        return None

    async def remote_links(self, path: str) -> dict[str, tuple[str, str]]:
        """``{node: (node_url, registration query)}`` for other live nodes with links on ``path``."""
        return {}

    async def all_links(self) -> dict[str, str]:
        """``{path: registration query}`` across the cluster (for the discovery feed)."""
        return {}

    async def count_remote_links(self, path: str) -> int:
        """How many hosts other live nodes have on ``path`` (for the cluster-wide listener limit)."""
        return 0

    async def node_url_of(self, node: str) -> str | None:
        return None

    def suspect(self, node: str) -> None:
        """A message to ``node`` reached nobody: route around it until its heartbeat has had time to expire."""
        return

    def status(self) -> dict[str, Any]:
        return {"node": self.node_id, "directory": "local", "redis": "off"}


LocalDirectory = Directory


class RedisDirectory(Directory):
    """Cluster directory in Redis. Keys (prefix ``wcfrelay:``):

    ``nodes`` hash node → url · ``alive:{node}`` heartbeat with TTL · ``hc:{entity}`` hash listener → node ·
    ``owned:{node}`` set of ``hc\\0entity\\0id`` / ``wcf\\0path\\0id`` this node registered · ``entities`` set ·
    ``wcf:{path}`` hash link → json {node, registration} · channel ``to:{node}`` per node, ``events`` broadcast.
    """

    clustered = True

    def __init__(self, url: str, node_id: str | None = None, node_url: str = "", prefix: str = "wcfrelay:") -> None:
        super().__init__(node_id, node_url)
        import redis.asyncio as aioredis  # optional dependency, only for clusters

        self._redis = aioredis.from_url(url, socket_connect_timeout=2, socket_timeout=2,
                                        health_check_interval=10)
        self._url_for_log = url.split("@")[-1]
        self.p = prefix
        self.healthy = False
        self._alive: set[str] = set()
        self._suspects: dict[str, float] = {}  # node -> until when it is skipped
        self._entities: set[str] = set()
        self._tasks: list[asyncio.Task] = []
        self._on_message: MessageHandler | None = None
        self._snapshot: Callable[[], LocalState] | None = None
        self._pubsub: Any = None
        self.last_error = ""

    # ---- lifecycle -----------------------------------------------------------------------------------------------
    async def start(self, on_message: MessageHandler, snapshot: Callable[[], LocalState]) -> None:
        self._on_message = on_message
        self._snapshot = snapshot
        await self._connect()
        self._tasks.append(asyncio.create_task(self._heartbeat_loop()))
        self._tasks.append(asyncio.create_task(self._subscribe_loop()))

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        if self.healthy:
            try:
                await self._forget_node(self.node_id)
                await self._redis.hdel(self.p + "nodes", self.node_id)
            except Exception as exc:  # noqa: BLE001 - best effort on the way out; the node's keys expire anyway
                log.debug("could not remove node %s from the directory on close (%s)", self.node_id,
                          type(exc).__name__)
        try:
            await self._redis.aclose()
        except Exception as exc:  # noqa: BLE001
            log.debug("closing the redis connection failed (%s)", type(exc).__name__)

    async def _connect(self) -> None:
        """(Re-)register this node and everything it serves."""
        try:
            await self._redis.set(self.p + f"alive:{self.node_id}", "1", px=int(NODE_TTL * 1000))
            await self._redis.hset(self.p + "nodes", self.node_id, self.node_url)
            if self._snapshot is not None:
                state = self._snapshot()
                for entity, lid in state.listeners:
                    await self._add_listener_unchecked(entity, lid)
                for name in state.entities:
                    if await self._redis.sadd(self.p + "entities", name):
                        await self._redis.publish(self.p + "events", json.dumps({"type": "entity", "name": name}))
                for path, lid, reg in state.links:
                    await self._add_link_unchecked(path, lid, reg)
            await self._refresh_entities()
            await self._refresh_alive()
            if self.last_error:  # back after an outage that was logged as a warning
                log.warning("redis %s reachable again: node %s registered", self._url_for_log, self.node_id)
            elif not self.healthy:  # the first connection: an ordinary start
                log.info("redis %s connected: node %s registered", self._url_for_log, self.node_id)
            self.healthy = True
            self.last_error = ""
        except Exception as exc:  # noqa: BLE001 - any Redis failure means "degraded", never a crash
            self._degrade(exc)

    def _degrade(self, exc: BaseException) -> None:
        if self.healthy or not self.last_error:
            log.warning("redis %s unreachable (%s): serving local listeners only", self._url_for_log,
                        exc.__class__.__name__)
        self.healthy = False
        self.last_error = f"{exc.__class__.__name__}: {exc}"[:200]

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT)
            if not self.healthy:
                await self._connect()
                continue
            try:
                await self._redis.set(self.p + f"alive:{self.node_id}", "1", px=int(NODE_TTL * 1000))
                await self._refresh_alive()
                await self._refresh_entities()
                nodes = await self._redis.hkeys(self.p + "nodes")
                for raw in nodes:
                    node = raw.decode() if isinstance(raw, bytes) else raw
                    if node not in self._alive:
                        await self._forget_node(node)
            except Exception as exc:  # noqa: BLE001
                self._degrade(exc)

    async def _refresh_entities(self) -> None:
        # A union: Redis may have restarted empty while this node still knows entities others will re-announce.
        members = await self._redis.smembers(self.p + "entities") or ()
        self._entities |= {e.decode() if isinstance(e, bytes) else e for e in members}

    async def _refresh_alive(self) -> None:
        nodes = [n.decode() if isinstance(n, bytes) else n for n in await self._redis.hkeys(self.p + "nodes")]
        if not nodes:
            self._alive = set()
            return
        flags = await self._redis.mget([self.p + f"alive:{n}" for n in nodes])
        self._alive = {n for n, f in zip(nodes, flags) if f is not None}

    async def _forget_node(self, node: str) -> None:
        """Remove a dead (or departing) node's registrations."""
        owned_key = self.p + f"owned:{node}"
        for raw in await self._redis.smembers(owned_key):
            item = raw.decode() if isinstance(raw, bytes) else raw
            kind, name, lid = item.split("\0", 2)
            await self._redis.hdel(self.p + (f"hc:{name}" if kind == "hc" else f"wcf:{name}"), lid)
        await self._redis.delete(owned_key)
        if node != self.node_id:
            await self._redis.hdel(self.p + "nodes", node)
            log.info("node %s is gone: its registrations were removed", node)

    async def _subscribe_loop(self) -> None:
        while True:
            try:
                self._pubsub = self._redis.pubsub()
                await self._pubsub.subscribe(self.p + f"to:{self.node_id}", self.p + "events")
                async for item in self._pubsub.listen():
                    if item.get("type") != "message":
                        continue
                    try:
                        message = json.loads(item["data"])
                    except (ValueError, TypeError):
                        continue
                    channel = item["channel"].decode() if isinstance(item["channel"], bytes) else item["channel"]
                    if channel == self.p + "events":
                        if message.get("type") == "entity" and isinstance(message.get("name"), str):
                            self._entities.add(message["name"])
                    elif self._on_message is not None:
                        asyncio.ensure_future(self._on_message(message))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001
                self._degrade(exc)
                await asyncio.sleep(HEARTBEAT)

    # ---- listeners -----------------------------------------------------------------------------------------------
    _ADD_LIMITED = """
    local n = redis.call('HLEN', KEYS[1])
    if n >= tonumber(ARGV[3]) then return 0 end
    redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
    redis.call('SADD', KEYS[2], ARGV[4])
    return 1
    """

    async def add_listener(self, entity: str, listener_id: str, limit: int) -> bool:
        if not self.healthy:
            return True  # degraded: the local limit alone applies
        try:
            ok = await self._redis.eval(self._ADD_LIMITED, 2, self.p + f"hc:{entity.lower()}",
                                        self.p + f"owned:{self.node_id}", listener_id, self.node_id, limit,
                                        f"hc\0{entity.lower()}\0{listener_id}")
            return bool(ok)
        except Exception as exc:  # noqa: BLE001
            self._degrade(exc)
            return True

    async def _add_listener_unchecked(self, entity: str, listener_id: str) -> None:
        await self._redis.hset(self.p + f"hc:{entity.lower()}", listener_id, self.node_id)
        await self._redis.sadd(self.p + f"owned:{self.node_id}", f"hc\0{entity.lower()}\0{listener_id}")

    async def remove_listener(self, entity: str, listener_id: str) -> None:
        if not self.healthy:
            return
        try:
            await self._redis.hdel(self.p + f"hc:{entity.lower()}", listener_id)
            await self._redis.srem(self.p + f"owned:{self.node_id}", f"hc\0{entity.lower()}\0{listener_id}")
        except Exception as exc:  # noqa: BLE001
            self._degrade(exc)

    async def remote_listeners(self, entity: str) -> list[ListenerRef]:
        if not self.healthy:
            return []
        try:
            entries = await self._redis.hgetall(self.p + f"hc:{entity.lower()}")
        except Exception as exc:  # noqa: BLE001
            self._degrade(exc)
            return []
        refs = []
        now = time.monotonic()
        for lid, node in entries.items():
            node_s = node.decode() if isinstance(node, bytes) else node
            if node_s in self._suspects and self._suspects[node_s] < now:
                del self._suspects[node_s]
            if node_s != self.node_id and node_s in self._alive and node_s not in self._suspects:
                refs.append(ListenerRef(node_s, lid.decode() if isinstance(lid, bytes) else lid))
        return refs

    # ---- entities ------------------------------------------------------------------------------------------------
    async def add_entity(self, name: str) -> None:
        self._entities.add(name)
        if not self.healthy:
            return
        try:
            if await self._redis.sadd(self.p + "entities", name):
                await self._redis.publish(self.p + "events", json.dumps({"type": "entity", "name": name}))
        except Exception as exc:  # noqa: BLE001
            self._degrade(exc)

    def known_entities(self) -> frozenset[str]:
        return frozenset(self._entities)

    # ---- messages ------------------------------------------------------------------------------------------------
    async def send(self, node: str, message: dict[str, Any]) -> bool:
        if not self.healthy:
            return False
        try:
            return bool(await self._redis.publish(self.p + f"to:{node}", json.dumps(message)))
        except Exception as exc:  # noqa: BLE001
            self._degrade(exc)
            return False

    # ---- WCF links -----------------------------------------------------------------------------------------------
    async def add_link(self, path: str, link_id: str, registration: str) -> None:
        if not self.healthy:
            return
        try:
            await self._add_link_unchecked(path, link_id, registration)
        except Exception as exc:  # noqa: BLE001
            self._degrade(exc)

    async def _add_link_unchecked(self, path: str, link_id: str, registration: str) -> None:
        value = json.dumps({"node": self.node_id, "registration": registration, "path": path})
        await self._redis.hset(self.p + f"wcf:{path.lower()}", link_id, value)
        await self._redis.sadd(self.p + "wcf-paths", path.lower())
        await self._redis.sadd(self.p + f"owned:{self.node_id}", f"wcf\0{path.lower()}\0{link_id}")

    async def remove_link(self, path: str, link_id: str) -> None:
        if not self.healthy:
            return
        try:
            await self._redis.hdel(self.p + f"wcf:{path.lower()}", link_id)
            await self._redis.srem(self.p + f"owned:{self.node_id}", f"wcf\0{path.lower()}\0{link_id}")
        except Exception as exc:  # noqa: BLE001
            self._degrade(exc)

    async def _links(self, path_key: str) -> list[dict[str, str]]:
        entries = await self._redis.hgetall(self.p + f"wcf:{path_key}")
        out = []
        for value in entries.values():
            try:
                item = json.loads(value)
            except ValueError:
                continue
            if item.get("node") in self._alive:
                out.append(item)
        return out

    async def remote_links(self, path: str) -> dict[str, tuple[str, str]]:
        if not self.healthy:
            return {}
        try:
            items = await self._links(path.lower())
            urls = await self._redis.hgetall(self.p + "nodes")
        except Exception as exc:  # noqa: BLE001
            self._degrade(exc)
            return {}
        by_node: dict[str, str] = {(k.decode() if isinstance(k, bytes) else str(k)):
                                   (v.decode() if isinstance(v, bytes) else str(v)) for k, v in urls.items()}
        return {i["node"]: (by_node.get(i["node"], ""), i["registration"]) for i in items
                if i["node"] != self.node_id and by_node.get(i["node"])}

    async def count_remote_links(self, path: str) -> int:
        if not self.healthy:
            return 0
        try:
            # Every registered entry counts, as for hybrid connections: a dead node's are cleaned up within
            # seconds, and until then erring towards "full" is the safe side of a limit.
            entries = await self._redis.hgetall(self.p + f"wcf:{path.lower()}")
            return sum(1 for value in entries.values() if json.loads(value).get("node") != self.node_id)
        except Exception as exc:  # noqa: BLE001
            self._degrade(exc)
            return 0

    async def all_links(self) -> dict[str, str]:
        if not self.healthy:
            return {}
        try:
            out: dict[str, str] = {}
            for raw in await self._redis.smembers(self.p + "wcf-paths"):
                key = raw.decode() if isinstance(raw, bytes) else raw
                items = await self._links(key)
                if items:
                    out[items[0].get("path", key)] = items[0]["registration"]
            return out
        except Exception as exc:  # noqa: BLE001
            self._degrade(exc)
            return {}

    async def node_url_of(self, node: str) -> str | None:
        try:
            value = await self._redis.hget(self.p + "nodes", node)
        except Exception as exc:  # noqa: BLE001
            self._degrade(exc)
            return None
        return value.decode() if isinstance(value, bytes) else value

    def suspect(self, node: str) -> None:
        self._suspects[node] = time.monotonic() + NODE_TTL

    def status(self) -> dict[str, Any]:
        return {"node": self.node_id, "directory": "redis", "redis": "up" if self.healthy else "down",
                "redis_error": self.last_error or None, "nodes_alive": sorted(self._alive),
                "checked_at": time.time()}
