"""A byte pass-through TCP proxy: the floor of any relay hop written in Python on asyncio.

``python -m bench.passthrough UPSTREAM_PORT [--uvloop]`` listens on a free loopback port, prints ``port N``, and
copies bytes both ways between each client connection and a new connection to ``UPSTREAM_PORT``, parsing nothing.
Scenario 5 puts it in front of the direct SOAP server: what a hop costs before any relay work (authorization,
parsing, framing) is done. It runs on the gateway's event loop (asyncio, or uvloop with ``--uvloop``) so the two
hops differ only in what they do per message. Bench-only: it has no limits and no error handling worth the name.
"""

from __future__ import annotations

import argparse
import asyncio

from bench.common import install_uvloop


class _Side(asyncio.Protocol):
    """One end of a proxied connection; ``peer`` is the other end (None until the upstream connection is up)."""

    def __init__(self, upstream_port: int, peer: _Side | None = None) -> None:
        self.upstream_port = upstream_port
        self.peer = peer
        self.transport: asyncio.Transport | None = None
        self._early: list[bytes] = []  # bytes the client sent before the upstream connection was made

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.peer is None:
            asyncio.get_running_loop().create_task(self._connect_upstream())

    async def _connect_upstream(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, upstream = await loop.create_connection(lambda: _Side(self.upstream_port, self), "127.0.0.1",
                                                       self.upstream_port)
        except OSError:
            if self.transport is not None:
                self.transport.close()
            return
        self.peer = upstream
        assert upstream.transport is not None
        for data in self._early:
            upstream.transport.write(data)
        self._early = []

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is None or peer.transport is None:
            self._early.append(data)
        else:
            peer.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


async def _serve(upstream_port: int) -> None:
    server = await asyncio.get_running_loop().create_server(lambda: _Side(upstream_port), "127.0.0.1", 0)
    print(f"port {server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.passthrough", description=__doc__.split("\n")[0])
    parser.add_argument("upstream_port", type=int)
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args(argv)
    if args.uvloop and not install_uvloop():
        parser.error("uvloop is not installed")
    try:
        asyncio.run(_serve(args.upstream_port))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
