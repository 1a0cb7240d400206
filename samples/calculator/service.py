"""The Calculator sample: target namespace ``http://tempuri.org/``, service ``CalculatorService``,
port type ``ICalculator`` -- the names a WCF ``ICalculator`` service would publish, so existing WCF,
zeep and suds callers find what they expect.

Operations: ``Add(a, b) -> int`` (``xs:int`` like WCF, not ``xs:integer``), ``Echo(text) -> string``,
``Fail(message)`` (always a client fault), the one-way ``Log(message)`` and ``Notify(event)``, and
``AddAndReport(a, b) -> int``, which on a hybrid WebSocket (SOAP over Hybrid Connections) also calls the caller back
with the one-way ``Equation(eqn)`` of the callback contract ``ICalculatorDuplexCallback`` before it answers, as in
WCF's duplex Calculator sample.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Literal

from wcfrelay import compat

# spyne only after the compatibility measure (the package __init__ applies it too).
compat.ensure_spyne_importable()

from lxml import etree
from spyne import Application, Integer32, Service, Unicode, rpc
from spyne.model.fault import Fault

from wcfrelay.service.handler import callback_channel
from wcfrelay.service.spyne_app import build_application

__all__ = ["CALLBACK_NS", "EQUATION_ACTION", "PORT_TYPE", "SERVICE_NAME", "TNS", "CalculatorService",
           "clear_received", "equation_of", "make_application", "received"]

TNS = "http://tempuri.org/"
SERVICE_NAME = "CalculatorService"
PORT_TYPE = "ICalculator"
#: the callback contract's namespace and the Action of its one-way ``Equation`` message
CALLBACK_NS = "http://tempuri.org/ICalculatorDuplexCallback"
EQUATION_ACTION = "http://tempuri.org/ICalculatorDuplexCallback/Equation"

#: what the one-way operations received, oldest first: ("Log", message) / ("Notify", event).
#: Bounded so a long-running sample cannot grow without limit.
received: deque[tuple[str, str | None]] = deque(maxlen=1000)
_received_lock = threading.Lock()


def clear_received() -> None:
    """Forget what Log/Notify received (for tests)."""
    with _received_lock:
        received.clear()


def _record(operation: str, value: str | None) -> None:
    with _received_lock:
        received.append((operation, value))


def _add(a: int | None, b: int | None) -> int:
    if a is None or b is None:
        raise Fault("Client.ArgumentError", "Add needs both a and b")
    total = a + b
    if not -(2**31) <= total < 2**31:
        # xs:int overflows like a checked Int32 addition in the original C# service.
        raise Fault("Client.Overflow", f"{a} + {b} does not fit in xs:int")
    return total


def equation_element(text: str) -> etree._Element:
    """The Body of the ``Equation`` callback: ``<Equation xmlns="…ICalculatorDuplexCallback"><eqn>…</eqn>``."""
    element = etree.Element(f"{{{CALLBACK_NS}}}Equation", nsmap={None: CALLBACK_NS})
    etree.SubElement(element, f"{{{CALLBACK_NS}}}eqn").text = text
    return element


def equation_of(body: etree._Element | None) -> str | None:
    """The text of an ``Equation`` callback's Body element (for callers)."""
    if body is None:
        return None
    return body.findtext(f"{{{CALLBACK_NS}}}eqn")


class CalculatorService(Service):
    """``ICalculator`` as a Spyne service; one-way operations use Spyne's ``_is_async`` marker."""

    __service_name__ = SERVICE_NAME
    __port_types__ = (PORT_TYPE,)

    @rpc(Integer32, Integer32, _returns=Integer32, _port_type=PORT_TYPE)
    def Add(ctx, a: int | None, b: int | None) -> int:
        return _add(a, b)

    @rpc(Integer32, Integer32, _returns=Integer32, _port_type=PORT_TYPE)
    def AddAndReport(ctx, a: int | None, b: int | None) -> int:
        total = _add(a, b)
        channel = callback_channel()
        if channel is not None:  # the call came over a hybrid WebSocket: tell the caller, before answering
            channel.send(EQUATION_ACTION, equation_element(f"{a} + {b} = {total}"))
        return total

    @rpc(Unicode, _returns=Unicode, _port_type=PORT_TYPE)
    def Echo(ctx, text: str | None) -> str | None:
        return text

    @rpc(Unicode, _port_type=PORT_TYPE)
    def Fail(ctx, message: str | None) -> None:
        raise Fault("Client", message or "Fail was called")

    @rpc(Unicode, _is_async=True, _port_type=PORT_TYPE)
    def Log(ctx, message: str | None) -> None:
        _record("Log", message)

    @rpc(Unicode, _is_async=True, _port_type=PORT_TYPE)
    def Notify(ctx, event: str | None) -> None:
        _record("Notify", event)


def make_application(protocol: Literal["soap11", "soap12", "http"] = "soap11") -> Application:
    """The Calculator as a Spyne Application for one binding style (see ``build_application``)."""
    return build_application([CalculatorService], tns=TNS, name=SERVICE_NAME, protocol=protocol)
