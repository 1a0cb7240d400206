"""The one place the SDK opens WebSockets: options every relay socket shares (spec §2.6, §2.9)."""

from __future__ import annotations

import asyncio
import ssl as ssl_module
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import websockets
from websockets.asyncio.client import ClientConnection, connect

from .status import translate_connect_error


async def shut_down(ws: ClientConnection | None, reason: str, run_task: "asyncio.Task[Any] | None",
                    tasks: "set[asyncio.Task[Any]]") -> None:
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

__all__ = ["USER_AGENT", "open_websocket", "send_message_pair"]


async def send_message_pair(ws: ClientConnection, text: str, body: bytes | None, lock: asyncio.Lock) -> None:
    """A text message and the binary message that must follow it directly (spec §2.1), as one write.

    Inside ``websockets``' send context both frames are queued on its sans-I/O protocol object and leave in one
    system call, so nothing can come between them and no lock is needed. Where that API is missing, two sends
    under ``lock``.
    """
    send_context = getattr(ws, "send_context", None)
    protocol = getattr(ws, "protocol", None)
    if send_context is not None and protocol is not None:
        async with send_context():
            protocol.send_text(text.encode())
            if body is not None:
                protocol.send_binary(body)
            ws.transport.write(b"".join(protocol.data_to_send()))
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
