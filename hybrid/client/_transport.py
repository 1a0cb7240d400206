"""The one place the SDK opens WebSockets: options every relay socket shares (spec §2.6, §2.9)."""

from __future__ import annotations

import asyncio
import ssl as ssl_module
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.protocol import State

from ..entropy import random_bytes
from ..protocol import frames as fr
from .status import translate_connect_error


async def shut_down(ws: ClientConnection | None, reason: str, run_task: asyncio.Task[Any] | None,
                    tasks: set[asyncio.Task[Any]]) -> None:
    """Close a channel politely (at most 10 s), then stop its run loop and the tasks it started.

    Shared by the SDK listener and the WCF-style service host, whose channels end the same way.
    """
    if ws is not None:
        try:
            await asyncio.wait_for(ws.close(1000, reason), 10)
        except (TimeoutError, OSError, websockets.ConnectionClosed):
            pass
    if run_task is not None:
        run_task.cancel()
        await asyncio.gather(run_task, return_exceptions=True)
    pending = list(tasks)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)

__all__ = ["USER_AGENT", "open_websocket", "send_binary", "send_message_pair"]

#: Bytes waiting in a control channel's transport above which a sender waits for them to drain.
DRAIN_ABOVE = 256 * 1024


def _write_frames(ws: ClientConnection, frames: list[tuple[int, bytes]]) -> bool:
    """Frame whole messages here and write them at once, if the connection is plainly open; False otherwise.

    ``websockets`` never writes data frames of its own on our channels (it only answers pings and closes), so its
    view of the connection stays right. Masked as a client must, with entropy from a shared pool.
    """
    protocol = getattr(ws, "protocol", None)
    transport = getattr(ws, "transport", None)
    if protocol is None or transport is None or protocol.state is not State.OPEN or transport.is_closing():
        return False
    transport.write(b"".join(fr.encode_masked_frame(op, payload, random_bytes(4)) for op, payload in frames))
    return True


async def _drain(ws: ClientConnection) -> None:
    if ws.transport.get_write_buffer_size() > DRAIN_ABOVE:
        async with ws.send_context():  # its exit waits until the transport has drained
            pass


async def send_binary(ws: ClientConnection, data: bytes) -> None:
    """One binary message, without ``websockets``' per-send machinery where the connection allows."""
    if _write_frames(ws, [(fr.OP_BINARY, data)]):
        await _drain(ws)
    else:
        await ws.send(data)


async def send_message_pair(ws: ClientConnection, text: str, body: bytes | None, lock: asyncio.Lock) -> None:
    """A text message and the binary message that must follow it directly (spec §2.1), as one write.

    On an open connection both frames are encoded here and leave in one system call, so nothing can come between
    them and no lock is needed; this is the listener's per-request path, and ``websockets``' own send costs
    several times more. Otherwise: two sends under ``lock``.
    """
    frames = [(fr.OP_TEXT, text.encode())] + ([(fr.OP_BINARY, body)] if body is not None else [])
    if _write_frames(ws, frames):
        await _drain(ws)
        return
    async with lock:
        await ws.send(text)
        if body is not None:
            await ws.send(body)

USER_AGENT = f"wcfrelay-python/0.1 websockets/{websockets.__version__}"


async def open_websocket(
    url: str,
    *,
    what: str,
    headers: Mapping[str, str] | None = None,
    subprotocols: Sequence[str] | None = None,
    ssl: ssl_module.SSLContext | None = None,
    proxy: str | bool | None = True,
    open_timeout: float | None = 30.0,
    ping_interval: float | None = 30.0,
    ping_timeout: float | None = 30.0,
    max_size: int | None = 1 << 20,
) -> ClientConnection:
    """Open a client WebSocket to ``url``; failures come out as ``hybrid.errors`` (see ``translate_connect_error``).

    Compression is always off: relayed frames pass through the gateway untouched and must not be deflated
    (spec §2.6). An ``ssl`` context is only used for ``wss://`` URLs; ``websockets`` makes its own default otherwise.
    """
    options: dict[str, Any] = {
        "additional_headers": dict(headers or {}),
        "subprotocols": list(subprotocols) if subprotocols else None,
        "compression": None,
        "user_agent_header": USER_AGENT,
        "proxy": proxy,
        "open_timeout": open_timeout,
        "ping_interval": ping_interval,
        "ping_timeout": ping_timeout,
        "max_size": max_size,
    }
    if ssl is not None and urlsplit(url).scheme.lower() == "wss":
        options["ssl"] = ssl
    try:
        return await connect(url, **options)
    except Exception as exc:
        translated = translate_connect_error(exc, what)
        if translated is exc:
            raise
        raise translated from exc
