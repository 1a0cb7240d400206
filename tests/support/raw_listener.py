"""A listener written straight from the protocol (spec §2) on raw `websockets`, so gateway tests pin the wire
behaviour independently of our SDK. Every message it receives is recorded for assertions."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Self

import websockets
from websockets.asyncio.client import ClientConnection

HttpHandler = Callable[[dict, bytes], Awaitable[tuple[int, dict, bytes]]]


async def default_http(head: dict, body: bytes) -> tuple[int, dict, bytes]:
    headers = {"X-Target": head["requestTarget"], "X-Method": head["method"],
               "X-Seen-Headers": json.dumps(head.get("requestHeaders", {}))}
    return 200, headers, b"echo:" + body


@dataclass
class RawListener:
    url: str
    token: str | None
    http: HttpHandler = default_http
    #: "accept", "reject", or "ignore" for WebSocket connects
    ws_mode: str = "accept"
    reject_status: tuple[int, str] = (401, "Status Description from test")
    reject_spelling: str = "sb-hc"
    subprotocol: str | None = None
    accepts: list[dict] = field(default_factory=list)
    requests: list[dict] = field(default_factory=list)
    rendezvous_status: list[int] = field(default_factory=list)
    #: ids of the requests answered (their response sent, or cut off by the gateway: see ``cut_off``)
    answered: list[str] = field(default_factory=list)
    #: ids of the requests whose response body the gateway stopped taking (its sender went away)
    cut_off: list[str] = field(default_factory=list)
    control: ClientConnection | None = None
    tasks: set = field(default_factory=set)
    #: send responses bigger than this over a listener-initiated rendezvous
    inline_limit: int = 64 * 1024
    ssl: Any = None

    async def __aenter__(self) -> Self:
        headers = {"ServiceBusAuthorization": self.token} if self.token else {}
        self.control = await websockets.connect(self.url, additional_headers=headers, compression=None,
                                                max_size=None, **self._tls())
        self._spawn(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        for t in list(self.tasks):
            t.cancel()
        if self.control is not None:
            await self.control.close()

    def _tls(self) -> dict:
        return {"ssl": self.ssl} if self.ssl is not None else {}

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self) -> None:
        assert self.control is not None
        try:
            async for raw in self.control:
                if isinstance(raw, bytes):
                    continue
                message = json.loads(raw)
                if "accept" in message:
                    self.accepts.append(message["accept"])
                    self._spawn(self._on_accept(message["accept"]))
                elif "request" in message:
                    req = message["request"]
                    self.requests.append(req)
                    if "method" in req:
                        body = await self.control.recv() if req["body"] else b""
                        await self._answer(self.control, req, body, req["address"])
                        self.answered.append(req["id"])
                    else:
                        self._spawn(self._on_rendezvous_request(req["address"]))
        except websockets.ConnectionClosed:
            pass

    async def _on_accept(self, accept: dict) -> None:
        if self.ws_mode == "ignore":
            return
        if self.ws_mode == "reject":
            code, desc = self.reject_status
            prefix = "sb-hc-" if self.reject_spelling == "sb-hc" else ""
            from urllib.parse import quote
            url = f"{accept['address']}&{prefix}statusCode={code}&{prefix}statusDescription={quote(desc)}"
            try:
                async with websockets.connect(url, compression=None, **self._tls()):
                    pass
            except websockets.InvalidStatus as exc:
                self.rendezvous_status.append(exc.response.status_code)
            return
        protocols = [self.subprotocol] if self.subprotocol else None
        async with websockets.connect(accept["address"], compression=None, max_size=None,
                                      subprotocols=protocols, **self._tls()) as ws:
            async for data in ws:
                await ws.send(data)

    async def _on_rendezvous_request(self, address: str) -> None:
        async with websockets.connect(address, compression=None, max_size=None, **self._tls()) as ws:
            head = json.loads(await ws.recv())["request"]
            self.requests.append(head)
            body = await ws.recv() if head["body"] else b""
            await self._answer(ws, head, body, address, on_rendezvous=True)
            self.answered.append(head["id"])
            try:
                await ws.recv()  # the gateway closes it once the response is through
            except websockets.ConnectionClosed:
                pass

    async def _answer(self, ws: ClientConnection, head: dict, body: bytes, address: str,
                      on_rendezvous: bool = False) -> None:
        status, headers, payload = await self.http(head, body if isinstance(body, bytes) else body.encode())
        response = json.dumps({"response": {"requestId": head["id"], "statusCode": status,
                                             "responseHeaders": headers, "body": payload is not None}})
        if not on_rendezvous and payload is not None and len(payload) > self.inline_limit:
            # Listener-initiated rendezvous for a large response (spec §2.7).
            async with websockets.connect(address, compression=None, max_size=None, **self._tls()) as rv:
                try:
                    await rv.send(response)
                    await rv.send(payload)
                except websockets.ConnectionClosed:
                    self.cut_off.append(head["id"])
                    return
                try:
                    await rv.recv()
                except websockets.ConnectionClosed:
                    pass
            return
        try:
            await ws.send(response)
            if payload is not None:
                await ws.send(payload)
        except websockets.ConnectionClosed:
            if not on_rendezvous:
                raise  # the control channel is gone: the listener's run ends
            self.cut_off.append(head["id"])
