"""Bad input from callers reaches them as SOAP faults: broken XML, DOCTYPE attacks, the wrong SOAP version, unknown
operations, missing/expired/wrong-path tokens in every carrier, oversize one-way messages, and no host at all.
Relay tokens never reach the service."""

from __future__ import annotations

import json
import time

import pytest
import requests

from samples.calculator import service as calculator
from tests.support.gateway_process import TIMEOUT_FACTOR, GatewayProcess
from tests.wcfrelay.test_e2e_support import (
    CT11,
    CT12,
    TNS,
    HostThread,
    add_body,
    env11,
    env12,
    module_gateway,
    soap_fault,
)
from wcfrelay import compat, soap
from wcfrelay.bindings import BasicHttpRelayBinding, NetOnewayRelayBinding
from wcfrelay.service.host import RelayServiceHost
from wcfrelay.service.spyne_app import build_application

compat.ensure_spyne_importable()
from spyne import Service, Unicode, rpc


@pytest.fixture(scope="module")
def shared_gateway(tmp_path_factory) -> GatewayProcess:
    yield from module_gateway(tmp_path_factory)


class ProbeService(Service):
    """Reports what reached the service: relay tokens must have been stripped by the gateway."""

    @rpc(_returns=Unicode)
    def Seen(ctx) -> str:
        environ = ctx.transport.req_env
        body = b"".join(part if isinstance(part, bytes) else part.encode() for part in ctx.in_string or ())
        return json.dumps({
            "ServiceBusAuthorization": environ.get("HTTP_SERVICEBUSAUTHORIZATION"),
            "Authorization": environ.get("HTTP_AUTHORIZATION"),
            "RelayAccessToken": b"RelayAccessToken" in body,
            **({"X-Name": environ["HTTP_X_NAME"]} if "HTTP_X_NAME" in environ else {}),
        })


SEEN = f'<Seen xmlns="{TNS}"/>'


@pytest.fixture(scope="module")
def gw(shared_gateway: GatewayProcess) -> GatewayProcess:
    host = RelayServiceHost(shared_gateway.connection_string(), tls=False)
    host.add_endpoint(calculator.make_application("soap11"), "calc", BasicHttpRelayBinding())
    host.add_endpoint(calculator.make_application("soap12"), "calc/log", NetOnewayRelayBinding())
    host.add_endpoint(build_application([ProbeService], tns=TNS, name="Probe"), "probe", BasicHttpRelayBinding())
    with HostThread(host):
        yield shared_gateway


def post(gw: GatewayProcess, path: str, body: bytes, *, content_type: str = CT11, token: str | None = "auto",
         headers: dict | None = None) -> requests.Response:
    all_headers = {"Content-Type": content_type, **(headers or {})}
    if token == "auto":
        all_headers["ServiceBusAuthorization"] = gw.token(path)
    elif token is not None:
        all_headers["ServiceBusAuthorization"] = token
    return requests.post(f"{gw.http_base}/{path}", data=body, headers=all_headers, timeout=10 * TIMEOUT_FACTOR)


# ----------------------------------------------------------------------------------------------- envelopes


def test_non_xml_body_is_a_client_fault(gw: GatewayProcess) -> None:
    response = post(gw, "calc", b"this is not XML at all")
    assert response.status_code in (400, 500)
    fault = soap_fault(response.content)
    assert fault["code"].startswith("s:Client")
    assert "XML" in fault["reason"]


BILLION_LAUGHS = (
    b'<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
    + b"".join(
        f' <!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">\n'.encode() for i in range(1, 10)
    )
    + b"]>\n"
)


@pytest.mark.parametrize("with_token_header", [False, True], ids=["host-checks", "gateway-checks"])
def test_billion_laughs_is_refused_without_expansion(gw: GatewayProcess, with_token_header: bool) -> None:
    # With a RelayAccessToken marker in the body the gateway parses the envelope itself; without, the host does.
    header = f'<RelayAccessToken xmlns="{soap.RELAY_CONNECT_NS}"/>' if with_token_header else ""
    body = BILLION_LAUGHS + env11(f'<Echo xmlns="{TNS}"><text>&lol9;</text></Echo>', header)
    started = time.monotonic()
    response = post(gw, "calc", body)
    assert time.monotonic() - started < 5 * TIMEOUT_FACTOR
    assert response.status_code in (400, 500)
    assert "DOCTYPE" in soap_fault(response.content)["reason"]
    assert b"lollollol" not in response.content
    assert len(response.content) < 4096


@pytest.mark.parametrize("with_token_header", [False, True], ids=["host-checks", "gateway-checks"])
def test_external_entity_is_refused(gw: GatewayProcess, with_token_header: bool) -> None:
    header = f'<RelayAccessToken xmlns="{soap.RELAY_CONNECT_NS}"/>' if with_token_header else ""
    body = (b'<?xml version="1.0"?>\n<!DOCTYPE s [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
            + env11(f'<Echo xmlns="{TNS}"><text>&xxe;</text></Echo>', header))
    response = post(gw, "calc", body)
    assert response.status_code in (400, 500)
    assert "DOCTYPE" in soap_fault(response.content)["reason"]
    assert b"root:" not in response.content


def test_soap12_envelope_on_the_soap11_endpoint_is_a_version_mismatch(gw: GatewayProcess) -> None:
    response = post(gw, "calc", env12(add_body(1, 2)), content_type=CT12)
    assert response.status_code == 500
    fault = soap_fault(response.content)
    assert fault["code"].endswith("VersionMismatch")


def test_unknown_operation_is_a_client_fault(gw: GatewayProcess) -> None:
    response = post(gw, "calc", env11(f'<Divide xmlns="{TNS}"><a>1</a><b>0</b></Divide>'))
    assert response.status_code == 500
    fault = soap_fault(response.content)
    assert fault["code"].endswith("Client.OperationNotFound")
    assert "Divide" in fault["reason"]


def test_a_65_kb_one_way_message_is_refused_with_a_clear_fault(gw: GatewayProcess) -> None:
    text = "x" * (65 * 1024)
    response = post(gw, "calc/log", env12(f'<Log xmlns="{TNS}"><message>{text}</message></Log>'), content_type=CT12)
    assert response.status_code == 413
    fault = soap_fault(response.content)
    assert fault["version"] == "1.2"
    assert fault["relay_code"] == "PayloadTooLarge"
    assert "65536" in fault["reason"]


def test_one_way_with_no_host_connected_is_a_soap_fault(shared_gateway: GatewayProcess) -> None:
    host = RelayServiceHost(shared_gateway.connection_string(), tls=False)
    host.add_endpoint(calculator.make_application("soap12"), "gone/log", NetOnewayRelayBinding())
    with HostThread(host):
        pass  # registered, then every host left
    response = post(shared_gateway, "gone/log", env12(f'<Log xmlns="{TNS}"><message>m</message></Log>'),
                    content_type=CT12)
    assert response.status_code >= 400
    assert "xml" in response.headers.get("Content-Type", ""), response.text
    fault = soap_fault(response.content)
    assert fault["version"] == "1.2"


# ----------------------------------------------------------------------------------------------- tokens


def _with_carrier(gw: GatewayProcess, carrier: str, token: str | None) -> tuple[bytes, dict]:
    """The request body and headers that carry ``token`` in ``carrier`` (None: an empty carrier)."""
    if carrier == "ServiceBusAuthorization":
        return env11(add_body(1, 2)), {"ServiceBusAuthorization": token or ""}
    if carrier == "Authorization":
        return env11(add_body(1, 2)), {"Authorization": token or ""}
    if token is None:
        header = (f'<RelayAccessToken xmlns="{soap.RELAY_CONNECT_NS}"><wsse:BinarySecurityToken '
                  f'xmlns:wsse="{soap.WSSE_NS}"/></RelayAccessToken>')
    else:
        from lxml import etree

        header = etree.tostring(soap.relay_token_header(token)).decode()
    return env11(add_body(1, 2), header), {}


def _bad_token(gw: GatewayProcess, kind: str) -> str | None:
    if kind == "missing":
        return None
    if kind == "expired":
        return gw.token("calc", expiry=int(time.time()) - 3600)
    if kind == "wrong-path":
        return gw.token("other")
    if kind == "wrong-key":
        return gw.token("calc", key="bm90IHRoZSBrZXk=")
    return "SharedAccessSignature sr=garbage"


@pytest.mark.parametrize("carrier", ["ServiceBusAuthorization", "Authorization", "soap"])
@pytest.mark.parametrize("kind", ["missing", "expired", "wrong-path", "wrong-key", "malformed"])
def test_bad_tokens_in_each_carrier_are_soap_faults(gw: GatewayProcess, carrier: str, kind: str) -> None:
    body, headers = _with_carrier(gw, carrier, _bad_token(gw, kind))
    response = post(gw, "calc", body, token=None, headers=headers)
    assert response.status_code in (401, 403), response.text
    fault = soap_fault(response.content)
    assert fault["version"] == "1.1"
    assert fault["code"].startswith("s:Client")
    assert fault["relay_code"] in ("Unauthorized", "Forbidden")


def test_no_token_at_all_is_a_soap_fault(gw: GatewayProcess) -> None:
    response = post(gw, "calc", env11(add_body(1, 2)), token=None)
    assert response.status_code == 401
    assert soap_fault(response.content)["relay_code"] == "Unauthorized"


@pytest.mark.parametrize("carrier", ["ServiceBusAuthorization", "Authorization", "soap"])
def test_good_tokens_in_each_carrier_work_and_never_reach_the_service(gw: GatewayProcess, carrier: str) -> None:
    from lxml import etree

    token = gw.token("probe")
    if carrier == "soap":
        body, headers = env11(SEEN, etree.tostring(soap.relay_token_header(token)).decode()), {}
    else:
        body, headers = env11(SEEN), {carrier: token}
    response = post(gw, "probe", body, token=None, headers=headers)
    assert response.status_code == 200, response.text
    seen = json.loads(etree.fromstring(response.content).findtext(f".//{{{TNS}}}SeenResult"))
    assert seen == {"ServiceBusAuthorization": None, "Authorization": None, "RelayAccessToken": False}


def test_end_to_end_authorization_header_passes_through(gw: GatewayProcess) -> None:
    """With the relay token in ServiceBusAuthorization, Authorization is the service's own business."""
    from lxml import etree

    response = post(gw, "probe", env11(SEEN), headers={"Authorization": "Bearer app-level"})
    assert response.status_code == 200, response.text
    seen = json.loads(etree.fromstring(response.content).findtext(f".//{{{TNS}}}SeenResult"))
    assert seen == {"ServiceBusAuthorization": None, "Authorization": "Bearer app-level", "RelayAccessToken": False}


def test_a_header_value_that_is_not_utf8_reaches_the_service_as_latin1(gw: GatewayProcess) -> None:
    """obs-text (RFC 9110 §5.5): bytes that are not UTF-8 are read as ISO-8859-1 rather than refused or lost."""
    import socket

    from lxml import etree

    body = env11(SEEN)
    head = (f"POST /probe HTTP/1.1\r\nHost: {gw.host}:{gw.port}\r\nContent-Type: {CT11}\r\n"
            f"ServiceBusAuthorization: {gw.token('probe')}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n").encode() + b"X-Name: caf\xe9 cr\xe8me\r\n\r\n"
    with socket.create_connection((gw.host, gw.port), timeout=10 * TIMEOUT_FACTOR) as sock:
        sock.sendall(head + body)
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    status_line, _, rest = raw.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 200 "), raw[:500]
    envelope = rest.partition(b"\r\n\r\n")[2]
    seen = json.loads(etree.fromstring(envelope).findtext(f".//{{{TNS}}}SeenResult"))
    assert seen["X-Name"] == "caf\u00e9 cr\u00e8me"

