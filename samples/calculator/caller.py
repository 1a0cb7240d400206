"""Call the relayed Calculator with zeep: Add, Echo, Fail (a SOAP fault), the WS-Addressing endpoint and Log.

    python -m samples.calculator.caller "Endpoint=sb://127.0.0.1:9351/;SharedAccessKeyName=…;SharedAccessKey=…" --plaintext

The connection string needs a rule with the Send claim (the root rule has all claims). The WSDL comes from the
gateway (``http(s)://gateway/calculator?wsdl``) and names the gateway as the service address, so zeep needs
nothing but the token, which ``relay_zeep_client`` adds to every request.
"""

from __future__ import annotations

import argparse
import os
import sys
from urllib.parse import urlsplit

import zeep.exceptions
from zeep.wsa import WsAddressingPlugin

from hybrid.auth import ConnectionString
from wcfrelay.client import relay_zeep_client

__all__ = ["base_url", "main"]

ENV_VAR = "WCFRELAY_CONNECTION_STRING"


def base_url(connection_string: str, *, plaintext: bool = False) -> str:
    """``http(s)://host[:port]`` of the gateway named in the connection string's Endpoint."""
    netloc = urlsplit(ConnectionString.parse(connection_string).endpoint).netloc
    return f"{'http' if plaintext else 'https'}://{netloc}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m samples.calculator.caller", description=__doc__.split("\n")[0])
    parser.add_argument("connection_string", nargs="?", default=os.environ.get(ENV_VAR),
                        help=f"Endpoint=sb://…;SharedAccessKeyName=…;SharedAccessKey=… (default: ${ENV_VAR})")
    parser.add_argument("--plaintext", action="store_true", help="http:// instead of https:// (a local gateway)")
    args = parser.parse_args(argv)
    if not args.connection_string:
        parser.error(f"give a connection string or set {ENV_VAR}")
    base = base_url(args.connection_string, plaintext=args.plaintext)

    client = relay_zeep_client(f"{base}/calculator?wsdl", connection_string=args.connection_string)
    print("Add(2, 40) =", client.service.Add(2, 40))
    print("Echo('hello') =", client.service.Echo("hello"))
    try:
        client.service.Fail("on purpose")
    except zeep.exceptions.Fault as fault:
        print(f"Fail -> SOAP fault {fault.code}: {fault.message}")
    client.service.Log("logged through BasicHttp (one-way: HTTP 202)")

    ws = relay_zeep_client(f"{base}/calculator/ws?wsdl", connection_string=args.connection_string,
                           plugins=[WsAddressingPlugin()])
    print("WS2007 Add(20, 22) =", ws.service.Add(20, 22))

    oneway = relay_zeep_client(f"{base}/calculator/log?wsdl", connection_string=args.connection_string)
    oneway.service.Log("delivered over NetOneway")
    print("Log sent over NetOneway")
    return 0


if __name__ == "__main__":
    sys.exit(main())
