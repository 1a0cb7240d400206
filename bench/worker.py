"""A benchmark worker process: ``python -m bench.worker --name NAME [--uvloop]``.

The orchestrator keeps a few of these alive for a whole run and drives them with one JSON command per line on
stdin; each answer is one line ``@@ {json}`` on stdout. One worker plays one role at a time:

* the **direct servers** (``serve_direct``): a ``websockets`` server and an aiohttp server running the code in
  :mod:`bench.apps` — the baseline, and the upstream nginx proxies to;
* the **listener** (``listen``): the same code behind the gateway — a protocol-level WebSocket listener written
  for the bench, and for HTTP the SDK's ``HybridConnectionListener`` (or the bench's raw listener if the SDK is
  not importable or ``http_listener`` says ``raw``);
* a **load client** (``bulk``, ``pingpong``, ``setup``);
* **idle connection holders** for the scale scenario (``idle_listen``, ``idle_connect``, ``release``);
* the **SOAP service** (``soap_serve``): the Calculator's Spyne application hosted twice, by
  ``wcfrelay.service.host.RelayServiceHost`` on the gateway and by a small aiohttp server (the direct baseline),
  both running ``SpyneBytesApp.handle`` on a thread pool of the same size;
* a **SOAP caller** (``soap_open``, ``soap_run``, ``soap_close``): zeep, sync for 1 call in flight, ``AsyncClient``
  on ``wcfrelay.client.AiohttpTransport`` for more, the same client code for the direct and the relayed URL.

Every address is 127.0.0.1. Every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import threading
import time
from typing import Any
from urllib.parse import unquote, urlsplit

from bench.apps import answer, split_target, ws_serve
from bench.common import install_uvloop, percentile, raise_nofile

log = logging.getLogger("bench.worker")

#: Hard cap on how long any one command may run.
COMMAND_TIMEOUT = 3600.0


def _ws_opts(**extra: Any) -> dict[str, Any]:
    """Same client options everywhere: no compression, no size cap, no client pings, never a system proxy."""
    opts: dict[str, Any] = {"compression": None, "max_size": None, "ping_interval": None, "proxy": None,
                            "open_timeout": 30, "close_timeout": 5}
    opts.update(extra)
    return opts


async def _connect(url: str, headers: dict[str, str] | None = None, **extra: Any):
    import websockets

    assert urlsplit(url).hostname == "127.0.0.1", url
    return await websockets.connect(url, additional_headers=headers or None, **_ws_opts(**extra))


def _abort(ws: Any) -> None:
    with contextlib.suppress(Exception):  # already gone
        ws.transport.abort()


# ---- the bench's own protocol-level listener ---------------------------------------------------------------------
class RawListener:
    """A Hybrid Connections listener straight from the spec on ``websockets``: accepts every WebSocket sender and
    serves it with :func:`bench.apps.ws_serve` (``hold`` keeps it idle instead); answers HTTP with
    :func:`bench.apps.answer`, inline or over the rendezvous the gateway asks for."""

    def __init__(self, listen_url: str, token: str, entity: str, *, hold: bool = False) -> None:
        self.listen_url = listen_url
        self.token = token
        self.entity = entity
        self.hold = hold
        self.control: Any = None
        self.rendezvous: set[Any] = set()
        self.tasks: set[asyncio.Task] = set()
        self.accepted = 0
        self.failed = 0
        self._send_lock = asyncio.Lock()

    async def start(self) -> None:
        self.control = await _connect(self.listen_url, {"ServiceBusAuthorization": self.token})
        self._spawn(self._run())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _mode_of(self, address: str) -> tuple[str, dict[str, str]]:
        parts = urlsplit(address)
        path = unquote(parts.path)
        marker = "/" + self.entity
        idx = path.find(marker)
        rest = path[idx + len(marker):] if idx >= 0 else path
        return split_target(rest + "?" + parts.query)

    async def _run(self) -> None:
        import websockets

        deadline = time.monotonic() + COMMAND_TIMEOUT * 24
        try:
            while time.monotonic() < deadline:
                raw = await self.control.recv()
                if isinstance(raw, bytes):
                    continue
                message = json.loads(raw)
                if "accept" in message:
                    self._spawn(self._accept(message["accept"]["address"]))
                elif "request" in message:
                    req = message["request"]
                    if "method" in req:  # inline: the body is the next binary message on this channel
                        body = await self.control.recv() if req.get("body") else b""
                        self._spawn(self._answer_inline(req, body if isinstance(body, bytes) else body.encode()))
                    else:
                        self._spawn(self._answer_rendezvous(req["address"]))
        except websockets.ConnectionClosed:
            pass

    async def _accept(self, address: str) -> None:
        import websockets

        try:
            ws = await _connect(address)
        except Exception:  # noqa: BLE001 - counted, the sender sees the failure
            self.failed += 1
            return
        self.accepted += 1
        self.rendezvous.add(ws)
        try:
            if self.hold:
                await ws.wait_closed()
            else:
                mode, params = self._mode_of(address)
                await ws_serve(ws, mode, params)
        except websockets.ConnectionClosed:
            pass
        finally:
            self.rendezvous.discard(ws)

    @staticmethod
    def _response(req_id: str, status: int, headers: dict[str, str], has_body: bool) -> str:
        return json.dumps({"response": {"requestId": req_id, "statusCode": status, "responseHeaders": headers,
                                        "body": has_body}})

    async def _answer_inline(self, req: dict, body: bytes) -> None:
        import websockets

        status, headers, payload = answer(req["method"], urlsplit(req["requestTarget"]).path, body)
        if len(payload) > 60 * 1024:  # too big to go back inline: listener-initiated rendezvous (spec §2.7)
            try:
                ws = await _connect(req["address"])
                await ws.send(self._response(req["id"], status, headers, True))
                await ws.send(payload)
                await ws.close()
            except websockets.ConnectionClosed:
                pass
            return
        try:
            async with self._send_lock:  # the response and its body travel back to back (spec §2.1)
                await self.control.send(self._response(req["id"], status, headers, bool(payload)))
                if payload:
                    await self.control.send(payload)
        except websockets.ConnectionClosed:
            pass

    async def _answer_rendezvous(self, address: str) -> None:
        import websockets

        try:
            ws = await _connect(address)
            head = json.loads(await ws.recv())["request"]
            body = b""
            if head.get("body"):
                body = await ws.recv()
                body = body if isinstance(body, bytes) else body.encode()
            status, headers, payload = answer(head["method"], urlsplit(head["requestTarget"]).path, body)
            await ws.send(self._response(head["id"], status, headers, bool(payload)))
            if payload:
                await ws.send(payload)
            await ws.close()
        except websockets.ConnectionClosed:
            pass

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        for ws in list(self.rendezvous):
            _abort(ws)
        if self.control is not None:
            _abort(self.control)
        await asyncio.gather(*list(self.tasks), return_exceptions=True)


# ---- the worker ----------------------------------------------------------------------------------------------------
class Worker:
    def __init__(self, name: str) -> None:
        self.name = name
        self.servers: list[Any] = []
        self.listeners: list[Any] = []
        self.sdk_listener: Any = None
        self.idle: list[Any] = []
        self.idle_listeners: list[RawListener] = []
        self.soap_host: Any = None
        self.soap_pool: Any = None
        self.soap_caller: SoapCaller | None = None

    # -- direct servers --------------------------------------------------------------------------------------------
    async def cmd_serve_direct(self) -> dict:
        import websockets
        from aiohttp import web

        async def ws_handler(ws: Any) -> None:
            mode, params = split_target(ws.request.path)
            try:
                await ws_serve(ws, mode, params)
            except websockets.ConnectionClosed:
                pass

        ws_server = await websockets.serve(ws_handler, "127.0.0.1", 0, compression=None, max_size=None,
                                           ping_interval=None, close_timeout=5)
        self.servers.append(ws_server)

        async def http_handler(request: web.Request) -> web.Response:
            body = await request.read() if request.body_exists else b""
            status, headers, payload = answer(request.method, request.path, body)
            return web.Response(status=status, headers=headers, body=payload)

        app = web.Application(client_max_size=64 << 20)
        app.router.add_route("*", "/{tail:.*}", http_handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        self.servers.append(runner)
        http_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        ws_port = next(iter(ws_server.sockets)).getsockname()[1]
        return {"ws_port": ws_port, "http_port": http_port}

    # -- listener behind the gateway -------------------------------------------------------------------------------
    async def cmd_listen(self, gw: dict, ws_entity: str, http_entity: str | None = None,
                         http_listener: str = "sdk") -> dict:
        base = f"ws://127.0.0.1:{gw['port']}/$hc/"
        ws_l = RawListener(base + ws_entity + "?sb-hc-action=listen", gw["tokens"][ws_entity], ws_entity)
        await ws_l.start()
        self.listeners.append(ws_l)
        info: dict[str, Any] = {"ws_listener": "bench raw listener (bench/worker.py RawListener)"}
        if not http_entity:
            return info
        used, note = "raw", ""
        if http_listener == "sdk":
            try:
                listener = await self._sdk_listener(gw, http_entity)
                self.sdk_listener = listener
                used = "sdk"
            except Exception as exc:  # noqa: BLE001 - fall back and say so in the results
                note = f"SDK listener unusable ({type(exc).__name__}: {exc}); used the bench raw listener"
        if used == "raw":
            http_l = RawListener(base + http_entity + "?sb-hc-action=listen", gw["tokens"][http_entity], http_entity)
            await http_l.start()
            self.listeners.append(http_l)
        info["http_listener"] = ("hybrid.client.HybridConnectionListener (SDK)" if used == "sdk"
                                 else "bench raw listener (bench/worker.py RawListener)")
        info["http_listener_kind"] = used
        if note:
            info["note"] = note
        return info

    async def _sdk_listener(self, gw: dict, entity: str) -> Any:
        from hybrid.client import HybridConnectionListener, RelayedHttpResponse

        async def handler(request: Any) -> Any:
            body = await request.read()
            status, headers, payload = answer(request.method, request.path, body)
            return RelayedHttpResponse(status=status, headers=headers, body=payload)

        cs = (f"Endpoint=sb://127.0.0.1:{gw['port']}/;SharedAccessKeyName={gw['key_name']};"
              f"SharedAccessKey={gw['key']};EntityPath={entity}")
        listener = HybridConnectionListener(cs, tls=False, request_handler=handler, proxy=None,
                                            max_message_size=None, reconnect_delays=(0.5, 1.0))
        await asyncio.wait_for(listener.open(), 30)
        return listener

    async def cmd_unlisten(self) -> dict:
        for item in self.listeners:
            await item.close()
        self.listeners.clear()
        if self.sdk_listener is not None:
            await asyncio.wait_for(self.sdk_listener.close(), 30)
            self.sdk_listener = None
        return {}

    # -- load ------------------------------------------------------------------------------------------------------
    async def cmd_bulk(self, url: str, headers: dict | None, total: int, msg_size: int) -> dict:
        """Send ``total`` bytes one way in ``msg_size`` messages; the far side says ``done:<n>`` once it has them
        all, so the time covers delivery, not just buffering."""
        ws = await _connect(url, headers)
        payload = os.urandom(msg_size)
        count = max(1, total // msg_size)
        try:
            start = time.perf_counter()
            for _ in range(count):
                await ws.send(payload)
            reply = await asyncio.wait_for(ws.recv(), COMMAND_TIMEOUT)
            elapsed = time.perf_counter() - start
        finally:
            await ws.close()
        got = int(str(reply).split(":", 1)[1])
        return {"bytes": count * msg_size, "confirmed": got, "seconds": elapsed}

    async def cmd_pingpong(self, url: str, headers: dict | None, size: int, duration: float, warmup: int,
                           max_count: int = 10_000_000) -> dict:
        ws = await _connect(url, headers)
        payload = os.urandom(size)
        samples: list[int] = []
        try:
            for _ in range(warmup):
                await ws.send(payload)
                await ws.recv()
            start = time.perf_counter()
            deadline = start + duration
            clock = time.perf_counter_ns
            for _ in range(max_count):
                t0 = clock()
                await ws.send(payload)
                await ws.recv()
                samples.append(clock() - t0)
                if time.perf_counter() >= deadline:
                    break
            elapsed = time.perf_counter() - start
        finally:
            await ws.close()
        samples.sort()
        return {"count": len(samples), "seconds": elapsed, "rtps": len(samples) / elapsed,
                "p50_us": percentile(samples, 50) / 1e3, "p99_us": percentile(samples, 99) / 1e3,
                "mean_us": sum(samples) / len(samples) / 1e3}

    async def cmd_setup(self, url: str, headers: dict | None, count: int, warmup: int,
                        max_seconds: float = 120.0) -> dict:
        """Sender connect to first echoed byte, in series: ``count`` samples after ``warmup`` discarded."""
        samples: list[int] = []
        failures = 0
        clock = time.perf_counter_ns
        deadline = time.monotonic() + max_seconds
        for i in range(warmup + count):
            if time.monotonic() > deadline:
                break
            t0 = clock()
            try:
                ws = await _connect(url, headers)
                await ws.send(b"x")
                await asyncio.wait_for(ws.recv(), 30)
            except Exception:  # noqa: BLE001 - a failed setup is counted, not fatal
                failures += 1
                continue
            dt = clock() - t0
            if i >= warmup:
                samples.append(dt)
            await ws.close()
        samples.sort()
        return {"count": len(samples), "failures": failures,
                "p50_us": percentile(samples, 50) / 1e3 if samples else None,
                "p99_us": percentile(samples, 99) / 1e3 if samples else None}

    # -- scale: idle connections -----------------------------------------------------------------------------------
    async def cmd_idle_listen(self, gw: dict, entities: list[str], per_entity: int) -> dict:
        base = f"ws://127.0.0.1:{gw['port']}/$hc/"
        start = time.perf_counter()
        failed = 0
        sem = asyncio.Semaphore(32)

        async def one(entity: str) -> None:
            nonlocal failed
            async with sem:
                lst = RawListener(base + entity + "?sb-hc-action=listen", gw["tokens"][entity], entity, hold=True)
                try:
                    await lst.start()
                    self.idle_listeners.append(lst)
                except Exception:  # noqa: BLE001 - counted
                    failed += 1

        await asyncio.gather(*(one(e) for e in entities for _ in range(per_entity)))
        return {"listeners": len(self.idle_listeners), "failed": failed, "seconds": time.perf_counter() - start}

    async def cmd_idle_connect(self, gw: dict, entities: list[str], count: int, concurrency: int = 64) -> dict:
        base = f"ws://127.0.0.1:{gw['port']}/$hc/"
        start = time.perf_counter()
        failed = 0
        errors: dict[str, int] = {}
        sem = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            nonlocal failed
            entity = entities[i % len(entities)]
            async with sem:
                try:
                    ws = await _connect(base + entity, {"ServiceBusAuthorization": gw["tokens"][entity]})
                    self.idle.append(ws)
                except Exception as exc:  # noqa: BLE001 - counted
                    failed += 1
                    key = type(exc).__name__
                    errors[key] = errors.get(key, 0) + 1

        await asyncio.gather(*(one(i) for i in range(count)))
        return {"connected": len(self.idle), "failed": failed, "errors": errors,
                "seconds": time.perf_counter() - start}

    async def cmd_idle_status(self) -> dict:
        return {"senders": len(self.idle), "listeners": len(self.idle_listeners),
                "rendezvous": sum(len(x.rendezvous) for x in self.idle_listeners)}

    async def cmd_release(self) -> dict:
        n = len(self.idle) + len(self.idle_listeners)
        for ws in self.idle:
            _abort(ws)
        self.idle.clear()
        for lst in self.idle_listeners:
            await lst.close()
        self.idle_listeners.clear()
        await asyncio.sleep(0.1)
        return {"released": n}

    # -- SOAP: the service (both paths) and the caller --------------------------------------------------------
    async def cmd_soap_serve(self, gw: dict, path: str, max_workers: int = 16) -> dict:
        """The Calculator (``samples.calculator.service``, SOAP 1.1) behind the gateway and served directly.

        Relayed: ``RelayServiceHost`` + ``BasicHttpRelayBinding`` at ``path`` (its own ``SpyneBytesApp``, its
        own pool of ``max_workers`` threads). Direct: aiohttp at ``http://127.0.0.1:<port>/<path>``, each request
        run by ``SpyneBytesApp.handle`` (built as the host builds it) on a pool of ``max_workers`` threads, so both
        paths run the identical Spyne pipeline; only the transport around it differs.
        """
        import concurrent.futures
        import functools

        from aiohttp import web

        from samples.calculator.service import make_application
        from wcfrelay.bindings import BasicHttpRelayBinding
        from wcfrelay.service import SpyneBytesApp
        from wcfrelay.service.handler import response_headers
        from wcfrelay.service.host import RelayServiceHost

        logging.getLogger("spyne").setLevel(logging.ERROR)
        binding = BasicHttpRelayBinding()
        cs = (f"Endpoint=sb://127.0.0.1:{gw['port']}/;SharedAccessKeyName={gw['key_name']};"
              f"SharedAccessKey={gw['key']}")
        host = RelayServiceHost(cs, tls=False, max_workers=max_workers, proxy=None)
        host.add_endpoint(make_application("soap11"), path, binding)
        await asyncio.wait_for(host.open(), 30)
        self.soap_host = host

        app = SpyneBytesApp(make_application("soap11"), max_request_size=binding.max_message,
                            ws_addressing=binding.ws_addressing)
        pool = concurrent.futures.ThreadPoolExecutor(max_workers, thread_name_prefix="bench-spyne")
        self.soap_pool = pool
        prefix = "/" + path.strip("/")
        port_box: list[int] = []

        async def handler(request: web.Request) -> web.Response:
            body = await request.read()
            suffix = request.path[len(prefix):] or "/"
            call = functools.partial(
                app.handle, body, content_type=request.headers.get("Content-Type", ""),
                soap_action=request.headers.get("SOAPAction"), http_method=request.method,
                query_string=request.query_string, path=suffix,
                public_url=f"http://{request.host}{prefix}", headers=dict(request.headers))
            result = await asyncio.get_running_loop().run_in_executor(pool, call)
            return web.Response(status=result.status, body=result.body, headers=response_headers(result))

        web_app = web.Application(client_max_size=binding.max_message)
        web_app.router.add_route("*", prefix, handler)
        web_app.router.add_route("*", prefix + "/{tail:.*}", handler)
        runner = web.AppRunner(web_app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        self.servers.append(runner)
        port_box.append(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        return {"direct_port": port_box[0], "max_workers": max_workers, "binding": binding.name,
                "host_status": str(host.status.value)}

    async def cmd_soap_stop(self) -> dict:
        if self.soap_host is not None:
            await asyncio.wait_for(self.soap_host.close(), 30)
            self.soap_host = None
        if self.soap_pool is not None:
            self.soap_pool.shutdown(wait=False, cancel_futures=True)
            self.soap_pool = None
        return {}

    async def cmd_soap_open(self, wsdl: str, connection_string: str | None, in_flight: int, warmup: int,
                            seed: int = 0) -> dict:
        """Build the zeep client for ``wsdl`` (loading the WSDL), then ``warmup`` checked calls (not timed)."""
        if self.soap_caller is not None:
            await self.soap_caller.close()
        self.soap_caller = SoapCaller(wsdl, connection_string, in_flight, seed)
        started = time.perf_counter()
        await self.soap_caller.open()
        warm = await self.soap_caller.run(duration=3600.0, max_calls=max(warmup, in_flight))
        return {"client": self.soap_caller.kind, "open_seconds": time.perf_counter() - started,
                "warmup_failures": warm["failures"], "warmup_error": warm.get("first_error")}

    async def cmd_soap_run(self, duration: float, max_calls: int = 10_000_000) -> dict:
        """Calls for ``duration`` seconds (at most ``max_calls``); every result checked; latency of each call."""
        assert self.soap_caller is not None, "soap_open first"
        return await self.soap_caller.run(duration=duration, max_calls=max_calls)

    async def cmd_soap_close(self) -> dict:
        if self.soap_caller is not None:
            await self.soap_caller.close()
            self.soap_caller = None
        return {}

    async def cmd_pid(self) -> dict:
        return {"pid": os.getpid()}


class SoapCaller:
    """zeep calling ``Add(a, b)`` with varying arguments and checking every sum.

    ``in_flight == 1``: the synchronous ``zeep.Client`` on ``zeep.Transport`` (``requests``), run on a helper thread
    so the worker's loop stays free; the relayed client is ``wcfrelay.client.relay_zeep_client`` (the same
    transport class plus the token hook). More in flight: ``zeep.AsyncClient`` on
    ``wcfrelay.client.AiohttpTransport`` for both paths, with the relay token only on the relayed one.
    """

    def __init__(self, wsdl: str, connection_string: str | None, in_flight: int, seed: int) -> None:
        assert urlsplit(wsdl).hostname == "127.0.0.1", wsdl
        self.wsdl = wsdl
        self.connection_string = connection_string
        self.in_flight = max(1, in_flight)
        self.kind = "zeep.Client (requests)" if self.in_flight == 1 else "zeep.AsyncClient + AiohttpTransport"
        self.client: Any = None
        self.next_index = seed * 1_000_003

    def _args(self) -> tuple[int, int]:
        """Different arguments on every call, within xs:int (negative, zero and positive)."""
        i = self.next_index
        self.next_index += 1
        return (i * 7919) % 2_000_001 - 1_000_000, (i * 104_729) % 1_000_003

    async def open(self) -> None:
        if self.in_flight == 1:
            self.client = await asyncio.to_thread(self._build_sync)
            return
        import zeep

        from wcfrelay.client import AiohttpTransport, RelayToken, audience_for

        token = (RelayToken.from_credentials(audience_for(self.wsdl), connection_string=self.connection_string)
                 if self.connection_string else None)
        transport = AiohttpTransport(token=token, limit=max(100, self.in_flight))
        self.client = zeep.AsyncClient(self.wsdl, transport=transport)

    def _build_sync(self) -> Any:
        import requests
        import zeep

        if self.connection_string:
            from wcfrelay.client import relay_zeep_client

            return relay_zeep_client(self.wsdl, connection_string=self.connection_string, session=requests.Session())
        return zeep.Client(self.wsdl, transport=zeep.Transport(session=requests.Session()))

    async def run(self, duration: float, max_calls: int) -> dict:
        if self.in_flight == 1:
            samples, failures, wrong, first_error, elapsed = await asyncio.to_thread(self._run_sync, duration,
                                                                                     max_calls)
        else:
            samples, failures, wrong, first_error, elapsed = await self._run_async(duration, max_calls)
        samples.sort()
        n = len(samples)
        return {"calls": n, "seconds": elapsed, "cps": n / elapsed if elapsed > 0 else 0.0,
                "p50_us": percentile(samples, 50) / 1e3 if samples else None,
                "p99_us": percentile(samples, 99) / 1e3 if samples else None,
                "failures": failures + wrong, "wrong_results": wrong, "exceptions": failures,
                "first_error": first_error}

    def _run_sync(self, duration: float, max_calls: int) -> tuple[list[int], int, int, str | None, float]:
        samples: list[int] = []
        failures = wrong = 0
        first_error: str | None = None
        clock = time.perf_counter_ns
        add = self.client.service.Add
        start = time.perf_counter()
        deadline = start + duration
        for _ in range(max_calls):
            a, b = self._args()
            t0 = clock()
            try:
                got = add(a, b)
            except Exception as exc:  # noqa: BLE001 - counted and reported, never hidden
                failures += 1
                first_error = first_error or f"{type(exc).__name__}: {exc}"[:300]
            else:
                samples.append(clock() - t0)
                if got != a + b:
                    wrong += 1
                    first_error = first_error or f"Add({a}, {b}) returned {got!r}"
            if time.perf_counter() >= deadline:
                break
        return samples, failures, wrong, first_error, time.perf_counter() - start

    async def _run_async(self, duration: float, max_calls: int) -> tuple[list[int], int, int, str | None, float]:
        samples: list[int] = []
        counts = {"failures": 0, "wrong": 0, "left": max_calls}
        errors: list[str] = []
        clock = time.perf_counter_ns
        add = self.client.service.Add
        start = time.perf_counter()
        deadline = start + duration

        async def one_worker() -> None:
            for _ in range(max_calls):
                if counts["left"] <= 0 or time.perf_counter() >= deadline:
                    return
                counts["left"] -= 1
                a, b = self._args()
                t0 = clock()
                try:
                    got = await add(a, b)
                except Exception as exc:  # noqa: BLE001 - counted and reported
                    counts["failures"] += 1
                    errors.append(f"{type(exc).__name__}: {exc}"[:300])
                    continue
                samples.append(clock() - t0)
                if got != a + b:
                    counts["wrong"] += 1
                    errors.append(f"Add({a}, {b}) returned {got!r}")

        await asyncio.gather(*(one_worker() for _ in range(self.in_flight)))
        elapsed = time.perf_counter() - start
        return samples, counts["failures"], counts["wrong"], (errors[0] if errors else None), elapsed

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is None:
            return
        if self.in_flight == 1:
            client.transport.session.close()
        else:
            await client.transport.aclose()


async def _serve(worker: Worker) -> None:
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[str | None] = asyncio.Queue()

    def read_stdin() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(inbox.put_nowait, line)
        loop.call_soon_threadsafe(inbox.put_nowait, None)

    threading.Thread(target=read_stdin, daemon=True).start()
    _reply({"ready": True, "pid": os.getpid(), "loop": type(loop).__module__})
    for _ in range(1_000_000):
        line = await inbox.get()
        if line is None:
            return
        try:
            request = json.loads(line)
        except ValueError:
            _reply({"error": "bad json"})
            continue
        cmd = request.pop("cmd", "")
        if cmd == "exit":
            _reply({"bye": True})
            return
        method = getattr(worker, "cmd_" + cmd, None)
        if method is None:
            _reply({"error": f"unknown command {cmd!r}"})
            continue
        try:
            result = await asyncio.wait_for(method(**request), COMMAND_TIMEOUT)
            _reply({"ok": True, **result})
        except Exception as exc:
            log.exception("command %s failed", cmd)
            _reply({"error": f"{type(exc).__name__}: {exc}"})


def _reply(obj: dict) -> None:
    sys.stdout.write("@@ " + json.dumps(obj) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.worker")
    parser.add_argument("--name", default="worker")
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format=f"%(asctime)s {args.name} %(levelname)s %(name)s: %(message)s")
    raise_nofile()
    if args.uvloop:
        install_uvloop()
    worker = Worker(args.name)
    try:
        asyncio.run(_serve(worker))
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
