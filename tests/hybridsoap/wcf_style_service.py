"""A stand-in for an on-premises WCF service, run as its own process: SOAP 1.1 over HTTP with WCF-shaped metadata.

    python -m tests.hybridsoap.wcf_style_service [--port 0]      # prints "ready http://127.0.0.1:PORT/CalcService.svc"

It publishes what ``svcutil`` clients see from a WCF ``basicHttpBinding`` service whose contract namespace differs
from the service namespace: ``?wsdl`` (binding and service, ``soap:address`` and a ``wsa10:EndpointReference`` with
the service's own local URLs) imports ``?wsdl=wsdl0`` (messages and port type), whose types import ``?xsd=xsd0``,
which imports ``?xsd=xsd1``. Operations (document/literal): ``Add(a, b)``, ``Echo(text)`` and ``Fail(message)``,
which always answers with a SOAP fault of the service's own (faultcode ``a:CalcFailure``, a ``CalcFault`` detail).
``GET /CalcService.svc/blob?size=N`` streams N bytes of ``application/octet-stream`` (chunked);
``GET /CalcService.svc/echo-path/…`` answers with the raw path and query it received.
The service knows nothing about the relay.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from xml.sax.saxutils import escape

from aiohttp import web
from lxml import etree

SVC = "/CalcService.svc"
CONTRACT_NS = "http://contoso.example/calc"
SER_NS = "http://schemas.microsoft.com/2003/10/Serialization/"
S11 = "http://schemas.xmlsoap.org/soap/envelope/"
FAULT_NS = "http://contoso.example/calc/faults"
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


def root_wsdl(base: str, other_host_base: str) -> str:
    ops = "".join(
        f'<wsdl:operation name="{op}"><soap:operation soapAction="{CONTRACT_NS}/ICalcService/{op}" style="document"/>'
        '<wsdl:input><soap:body use="literal"/></wsdl:input><wsdl:output><soap:body use="literal"/></wsdl:output>'
        "</wsdl:operation>"
        for op in ("Add", "Echo", "Fail"))
    return f'''<?xml version="1.0" encoding="utf-8"?>
<wsdl:definitions name="CalcService" targetNamespace="http://tempuri.org/" xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/"
    xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/" xmlns:wsa10="http://www.w3.org/2005/08/addressing"
    xmlns:tns="http://tempuri.org/" xmlns:i0="{CONTRACT_NS}">
  <wsdl:import namespace="{CONTRACT_NS}" location="{base}?wsdl=wsdl0"/>
  <wsdl:types/>
  <wsdl:binding name="BasicHttpBinding_ICalcService" type="i0:ICalcService">
    <soap:binding transport="http://schemas.xmlsoap.org/soap/http"/>
    {ops}
  </wsdl:binding>
  <wsdl:service name="CalcService">
    <wsdl:port name="BasicHttpBinding_ICalcService" binding="tns:BasicHttpBinding_ICalcService">
      <soap:address location="{base}"/>
      <wsa10:EndpointReference><wsa10:Address>{other_host_base}</wsa10:Address></wsa10:EndpointReference>
    </wsdl:port>
  </wsdl:service>
</wsdl:definitions>'''


def contract_wsdl(base: str) -> str:
    messages = "".join(
        f'<wsdl:message name="ICalcService_{op}_InputMessage"><wsdl:part name="parameters" element="tns:{op}"/>'
        f'</wsdl:message><wsdl:message name="ICalcService_{op}_OutputMessage">'
        f'<wsdl:part name="parameters" element="tns:{op}Response"/></wsdl:message>'
        for op in ("Add", "Echo", "Fail"))
    operations = "".join(
        f'<wsdl:operation name="{op}"><wsdl:input message="tns:ICalcService_{op}_InputMessage"/>'
        f'<wsdl:output message="tns:ICalcService_{op}_OutputMessage"/></wsdl:operation>'
        for op in ("Add", "Echo", "Fail"))
    return f'''<?xml version="1.0" encoding="utf-8"?>
<wsdl:definitions targetNamespace="{CONTRACT_NS}" xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/"
    xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:tns="{CONTRACT_NS}">
  <wsdl:types>
    <xsd:schema targetNamespace="{CONTRACT_NS}/Imports">
      <xsd:import schemaLocation="{base}?xsd=xsd0" namespace="{CONTRACT_NS}"/>
      <xsd:import schemaLocation="{base}?xsd=xsd1" namespace="{SER_NS}"/>
    </xsd:schema>
  </wsdl:types>
  {messages}
  <wsdl:portType name="ICalcService">{operations}</wsdl:portType>
</wsdl:definitions>'''


def xsd0(base: str) -> str:
    return f'''<?xml version="1.0" encoding="utf-8"?>
<xs:schema elementFormDefault="qualified" targetNamespace="{CONTRACT_NS}" xmlns:xs="http://www.w3.org/2001/XMLSchema"
    xmlns:tns="{CONTRACT_NS}" xmlns:ser="{SER_NS}">
  <xs:import schemaLocation="{base}?xsd=xsd1" namespace="{SER_NS}"/>
  <xs:element name="Add"><xs:complexType><xs:sequence>
    <xs:element minOccurs="0" name="a" type="xs:int"/><xs:element minOccurs="0" name="b" type="xs:int"/>
  </xs:sequence></xs:complexType></xs:element>
  <xs:element name="AddResponse"><xs:complexType><xs:sequence>
    <xs:element minOccurs="0" name="AddResult" type="xs:int"/>
    <xs:element minOccurs="0" name="Trace" type="ser:guid"/>
  </xs:sequence></xs:complexType></xs:element>
  <xs:element name="Echo"><xs:complexType><xs:sequence>
    <xs:element minOccurs="0" name="text" nillable="true" type="xs:string"/>
  </xs:sequence></xs:complexType></xs:element>
  <xs:element name="EchoResponse"><xs:complexType><xs:sequence>
    <xs:element minOccurs="0" name="EchoResult" nillable="true" type="xs:string"/>
  </xs:sequence></xs:complexType></xs:element>
  <xs:element name="Fail"><xs:complexType><xs:sequence>
    <xs:element minOccurs="0" name="message" nillable="true" type="xs:string"/>
  </xs:sequence></xs:complexType></xs:element>
  <xs:element name="FailResponse"><xs:complexType><xs:sequence/></xs:complexType></xs:element>
</xs:schema>'''


def xsd1() -> str:
    return f'''<?xml version="1.0" encoding="utf-8"?>
<xs:schema attributeFormDefault="qualified" elementFormDefault="qualified" targetNamespace="{SER_NS}"
    xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:tns="{SER_NS}">
  <xs:simpleType name="guid"><xs:restriction base="xs:string">
    <xs:pattern value="[\\da-fA-F]{{8}}-[\\da-fA-F]{{4}}-[\\da-fA-F]{{4}}-[\\da-fA-F]{{4}}-[\\da-fA-F]{{12}}"/>
  </xs:restriction></xs:simpleType>
</xs:schema>'''


def envelope(body: str) -> bytes:
    return f'<s:Envelope xmlns:s="{S11}"><s:Body>{body}</s:Body></s:Envelope>'.encode()


def fault(message: str) -> bytes:
    return envelope(
        f'<s:Fault><faultcode xmlns:a="{FAULT_NS}">a:CalcFailure</faultcode>'
        f'<faultstring xml:lang="en-US">{escape(message)}</faultstring>'
        f'<detail><CalcFault xmlns="{CONTRACT_NS}"><Reason>{escape(message)}</Reason><Code>4711</Code></CalcFault>'
        "</detail></s:Fault>")


class CalcService:
    def __init__(self) -> None:
        self.port = 0
        self.requests: list[tuple[str, str]] = []

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}{SVC}"

    async def metadata(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(("GET", request.path_qs))
        query = request.query_string.lower()
        if query == "wsdl":
            text = root_wsdl(self.base, f"http://localhost:{self.port}{SVC}")
        elif query == "wsdl=wsdl0":
            text = contract_wsdl(self.base)
        elif query == "xsd=xsd0":
            text = xsd0(self.base)
        elif query == "xsd=xsd1":
            text = xsd1()
        else:
            return web.Response(status=200, text="<html><body>CalcService (WCF-style test service)</body></html>",
                                content_type="text/html")
        return web.Response(body=text.encode("utf-8"), content_type="text/xml", charset="utf-8")

    async def blob(self, request: web.Request) -> web.StreamResponse:
        size = int(request.query.get("size", "0"))
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream", "X-Blob-Size": str(size)})
        response.enable_chunked_encoding()
        await response.prepare(request)
        sent = 0
        while sent < size:
            chunk = bytes((sent + i) % 251 for i in range(min(32768, size - sent)))
            await response.write(chunk)
            sent += len(chunk)
        await response.write_eof()
        return response

    async def echo_path(self, request: web.Request) -> web.Response:
        return web.Response(text=request.raw_path, content_type="text/plain")

    async def call(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append(("POST", request.headers.get("SOAPAction", "")))
        if not request.headers.get("Content-Type", "").startswith("text/xml"):
            return web.Response(status=415, text="SOAP 1.1 (text/xml) only")
        try:
            root = etree.fromstring(body, _PARSER)
            operation = root.find(f"{{{S11}}}Body")[0]
        except (etree.XMLSyntaxError, TypeError, IndexError):
            return web.Response(status=400, body=fault("bad request"), content_type="text/xml", charset="utf-8")
        name = etree.QName(operation).localname

        def arg(local: str) -> str | None:
            return operation.findtext(f"{{{CONTRACT_NS}}}{local}")

        if name == "Add":
            total = int(arg("a") or 0) + int(arg("b") or 0)
            out = (f'<AddResponse xmlns="{CONTRACT_NS}"><AddResult>{total}</AddResult>'
                   "<Trace>0f8fad5b-d9cb-469f-a165-70867728950e</Trace></AddResponse>")
        elif name == "Echo":
            out = f'<EchoResponse xmlns="{CONTRACT_NS}"><EchoResult>{escape(arg("text") or "")}</EchoResult></EchoResponse>'
        elif name == "Fail":
            return web.Response(status=500, body=fault(arg("message") or "Fail was called"), content_type="text/xml",
                                charset="utf-8")
        else:
            return web.Response(status=500, body=fault(f"no operation {name}"), content_type="text/xml",
                                charset="utf-8")
        return web.Response(body=envelope(out), content_type="text/xml", charset="utf-8")


async def serve(port: int) -> None:
    service = CalcService()
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_get(SVC, service.metadata)
    app.router.add_get(SVC + "/blob", service.blob)
    app.router.add_get(SVC + "/echo-path/{tail:.*}", service.echo_path)
    app.router.add_post(SVC, service.call)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    service.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"ready {service.base}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
