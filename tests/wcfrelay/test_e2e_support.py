"""Shared pieces of the WCF-relay end-to-end tests (imported by the other ``test_e2e_*`` modules).

A :class:`HostThread` runs a real :class:`RelayServiceHost` on its own event loop in a background thread, so
blocking callers (zeep, suds, requests) can be used straight from the test. Everything talks to a real gateway
process over loopback.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self

from lxml import etree

from tests.support.gateway_process import TIMEOUT_FACTOR, GatewayProcess, start_gateway
from wcfrelay import soap
from wcfrelay.service.host import RelayServiceHost

S11 = soap.SOAP11_ENV_NS
S12 = soap.SOAP12_ENV_NS
TNS = "http://tempuri.org/"
CT11 = "text/xml; charset=utf-8"
CT12 = "application/soap+xml; charset=utf-8"
WSA = "http://www.w3.org/2005/08/addressing"


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy (a bounded wait for an observable state)."""
    deadline = time.monotonic() + timeout * TIMEOUT_FACTOR
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


async def async_wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout * TIMEOUT_FACTOR
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class HostThread:
    """A RelayServiceHost served by an event loop on a daemon thread."""

    def __init__(self, host: RelayServiceHost) -> None:
        self.host = host
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="relay-host", daemon=True)

    def call(self, coro: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout * TIMEOUT_FACTOR)

    def start(self) -> Self:
        self.thread.start()
        try:
            self.call(self.host.open())
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.thread.is_alive():
            try:
                self.call(self.host.close())
            finally:
                self.loop.call_soon_threadsafe(self.loop.stop)
                self.thread.join(10)
        self.loop.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def env11(body: str, header: str = "") -> bytes:
    head = f"<s:Header>{header}</s:Header>" if header else ""
    return f'<s:Envelope xmlns:s="{S11}">{head}<s:Body>{body}</s:Body></s:Envelope>'.encode()


def env12(body: str, header: str = "") -> bytes:
    head = f"<s:Header>{header}</s:Header>" if header else ""
    return f'<s:Envelope xmlns:s="{S12}">{head}<s:Body>{body}</s:Body></s:Envelope>'.encode()


def add_body(a: int, b: int) -> str:
    return f'<Add xmlns="{TNS}"><a>{a}</a><b>{b}</b></Add>'


def soap_fault(body: bytes) -> dict[str, str | None]:
    """Parse a SOAP 1.1 or 1.2 fault; fails the test if ``body`` is not one."""
    try:
        root = etree.fromstring(body)
    except etree.XMLSyntaxError as exc:  # pragma: no cover - the assertion message is the point
        raise AssertionError(f"not XML: {body[:300]!r}") from exc
    ns = etree.QName(root).namespace
    assert ns in (S11, S12), f"not a SOAP envelope: {body[:300]!r}"
    fault = root.find(f"{{{ns}}}Body/{{{ns}}}Fault")
    assert fault is not None, f"no Fault in {body[:300]!r}"
    if ns == S11:
        return {"version": "1.1", "code": fault.findtext("faultcode"), "subcode": None,
                "reason": fault.findtext("faultstring"), "relay_code": fault.findtext(".//{urn:wcfrelay:relay-error}Code")}
    return {"version": "1.2", "code": fault.findtext(f"{{{ns}}}Code/{{{ns}}}Value"),
            "subcode": fault.findtext(f"{{{ns}}}Code/{{{ns}}}Subcode/{{{ns}}}Value"),
            "reason": fault.findtext(f"{{{ns}}}Reason/{{{ns}}}Text"),
            "relay_code": fault.findtext(".//{urn:wcfrelay:relay-error}Code")}


def module_gateway(tmp_path_factory) -> Iterator[GatewayProcess]:
    """Body of a module-scoped gateway fixture: one gateway process for a whole test module."""
    gw = start_gateway(Path(tmp_path_factory.mktemp("wcf-gw")))
    yield gw
    gw.stop()
