"""The application code every path runs: the same functions answer on the direct server, behind nginx and behind
the gateway, so the only difference between a baseline and a relayed figure is the hop in the middle.

WebSocket behaviours (chosen by the first path segment after the entity or server root):

* ``echo``      send every message back;
* ``sink``      read ``n`` bytes, then send the text ``done:<n>``;
* ``slowsink``  like ``sink`` but read at most ``rate`` bytes per second (a slow reader).

HTTP (``answer``): ``…/echo`` returns the request body, anything else a 13-byte text.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import parse_qs

__all__ = ["HELLO", "answer", "split_target", "ws_serve"]

HELLO = b"Hello, World!"
#: Upper bound on how long one served WebSocket may live (every loop here is bounded).
MAX_SESSION_SECONDS = 3600.0


def answer(method: str, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body for one HTTP request."""
    if path.rstrip("/").endswith("/echo"):
        return 200, {"Content-Type": "application/octet-stream"}, body
    return 200, {"Content-Type": "text/plain"}, HELLO


def split_target(path_and_query: str, prefix: str = "") -> tuple[str, dict[str, str]]:
    """``/prefix/mode?x=1`` -> ("mode", {"x": "1"})."""
    path, _, query = path_and_query.partition("?")
    if prefix and path.startswith(prefix):
        path = path[len(prefix):]
    mode = path.strip("/").split("/", 1)[0]
    params = {k: v[0] for k, v in parse_qs(query).items()}
    return mode, params


async def ws_serve(ws: Any, mode: str, params: dict[str, str]) -> None:
    """Serve one ``websockets`` connection (server side or a listener's rendezvous, same code)."""
    deadline = time.monotonic() + MAX_SESSION_SECONDS
    if mode == "echo":
        while time.monotonic() < deadline:
            message = await ws.recv()
            await ws.send(message)
        return
    if mode in ("sink", "slowsink"):
        want = int(params.get("n", "0"))
        rate = float(params.get("rate", "0")) if mode == "slowsink" else 0.0
        got = 0
        start = time.monotonic()
        while got < want and time.monotonic() < deadline:
            message = await ws.recv()
            got += len(message)
            if rate > 0:
                ahead = got / rate - (time.monotonic() - start)
                if ahead > 0:
                    await asyncio.sleep(ahead)
        await ws.send(f"done:{got}")
        await ws.wait_closed()
        return
    await ws.close(1008, f"unknown bench mode {mode!r}")
