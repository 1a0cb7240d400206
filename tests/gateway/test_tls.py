"""TLS server contexts and the self-signed development certificate, checked with real handshakes."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import os
import shutil
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hybrid.errors import ConfigError
from hybrid.gateway.tls import ensure_dev_certificate, server_ssl_context


async def serve_echo(context: ssl.SSLContext) -> tuple[asyncio.AbstractServer, int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(await reader.readline())
            await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=context)
    return server, server.sockets[0].getsockname()[1]


async def round_trip(port: int, client: ssl.SSLContext, server_hostname: str) -> tuple[bytes, str]:
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname=server_hostname), 10)
    try:
        writer.write(b"hello relay\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 10)
        version = writer.get_extra_info("ssl_object").version()
        return line, version
    finally:
        writer.close()


def client_context(cafile: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=cafile)
    # Python 3.13 turns strict X.509 checks on by default; ask for them now so the certificate stays trusted there.
    if hasattr(ssl, "VERIFY_X509_STRICT"):
        context.verify_flags |= ssl.VERIFY_X509_STRICT
    return context


# ---------------------------------------------------------------------------------------------------------------
# Development certificate


def test_dev_certificate_contents(tmp_path):
    cert_path, key_path = ensure_dev_certificate(tmp_path / "state")
    assert Path(cert_path).parent == tmp_path / "state"
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600

    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1)
    assert cert.public_key() == key.public_key()
    assert cert.issuer == cert.subject  # self-signed
    cert.verify_directly_issued_by(cert)

    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert set(san.get_values_for_type(x509.IPAddress)) == {ipaddress.ip_address("127.0.0.1"),
                                                            ipaddress.ip_address("::1")}
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True

    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=364) < lifetime < dt.timedelta(days=367)
    now = dt.datetime.now(dt.UTC)
    assert cert.not_valid_before_utc <= now < cert.not_valid_after_utc


def test_dev_certificate_reused_across_restarts(tmp_path):
    first = ensure_dev_certificate(tmp_path)
    cert_bytes, key_bytes = Path(first[0]).read_bytes(), Path(first[1]).read_bytes()
    second = ensure_dev_certificate(tmp_path)
    assert second == first
    assert Path(second[0]).read_bytes() == cert_bytes and Path(second[1]).read_bytes() == key_bytes
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def write_cert_for_existing_key(key_path: str, cert_path: str, *, not_after: dt.datetime) -> None:
    """Replace the certificate with one for the same key that expires at ``not_after``."""
    key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    san = x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                       x509.IPAddress(ipaddress.ip_address("::1"))])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_after - dt.timedelta(days=365)).not_valid_after(not_after)
            .add_extension(san, critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    Path(cert_path).write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def test_dev_certificate_close_to_expiry_is_replaced(tmp_path):
    cert_path, key_path = ensure_dev_certificate(tmp_path)
    now = dt.datetime.now(dt.UTC)
    write_cert_for_existing_key(key_path, cert_path, not_after=now + dt.timedelta(hours=12))
    old = Path(cert_path).read_bytes()
    ensure_dev_certificate(tmp_path)
    new = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    assert Path(cert_path).read_bytes() != old
    assert new.not_valid_after_utc - now > dt.timedelta(days=300)


def test_dev_certificate_with_two_days_left_is_kept(tmp_path):
    cert_path, key_path = ensure_dev_certificate(tmp_path)
    write_cert_for_existing_key(key_path, cert_path,
                                not_after=dt.datetime.now(dt.UTC) + dt.timedelta(days=2))
    kept = Path(cert_path).read_bytes()
    ensure_dev_certificate(tmp_path)
    assert Path(cert_path).read_bytes() == kept


@pytest.mark.parametrize("damage", ["garbage cert", "garbage key", "other key", "missing cert"])
def test_damaged_dev_certificate_is_regenerated(tmp_path, damage):
    cert_path, key_path = ensure_dev_certificate(tmp_path)
    if damage == "garbage cert":
        Path(cert_path).write_text("not a certificate")
    elif damage == "garbage key":
        Path(key_path).write_text("not a key")
    elif damage == "other key":
        other = ec.generate_private_key(ec.SECP256R1())
        Path(key_path).write_bytes(other.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    else:
        os.unlink(cert_path)
    ensure_dev_certificate(tmp_path)
    # The regenerated pair loads as a matching pair.
    server_ssl_context(cert_path, key_path)
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600


def test_dev_certificate_state_dir_is_a_file(tmp_path):
    blocker = tmp_path / "state"
    blocker.write_text("")
    with pytest.raises(ConfigError, match=str(blocker)):
        ensure_dev_certificate(blocker)


# ---------------------------------------------------------------------------------------------------------------
# Real handshakes


@pytest.mark.parametrize("server_hostname", ["localhost", "127.0.0.1"])
async def test_dev_certificate_is_trusted_as_its_own_ca(tmp_path, server_hostname):
    cert_path, key_path = ensure_dev_certificate(tmp_path)
    server, port = await serve_echo(server_ssl_context(cert_path, key_path))
    try:
        line, version = await round_trip(port, client_context(cert_path), server_hostname)
    finally:
        server.close()
        await server.wait_closed()
    assert line == b"hello relay\n"
    assert version in ("TLSv1.2", "TLSv1.3")


async def test_connecting_to_localhost_by_name(tmp_path):
    """The brief's exact scenario: dial ``localhost`` (whatever it resolves to first) and verify."""
    cert_path, key_path = ensure_dev_certificate(tmp_path)
    context = server_ssl_context(cert_path, key_path)

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    try:
        # If localhost resolves to ::1 first, asyncio falls back to 127.0.0.1 after the refused attempt.
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("localhost", port, ssl=client_context(cert_path)), 10)
        writer.write(b"ping\n")
        assert await asyncio.wait_for(reader.readline(), 10) == b"ping\n"
        writer.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_untrusted_client_rejects_dev_certificate(tmp_path):
    """Trust comes from the cafile: without it the same server fails verification."""
    cert_path, key_path = ensure_dev_certificate(tmp_path)
    server, port = await serve_echo(server_ssl_context(cert_path, key_path))
    try:
        empty = ssl.create_default_context()
        empty.load_verify_locations(cadata=_unrelated_ca_pem())
        with pytest.raises(ssl.SSLCertVerificationError):
            await round_trip(port, empty, "localhost")
    finally:
        server.close()
        await server.wait_closed()


async def test_wrong_host_name_is_rejected(tmp_path):
    cert_path, key_path = ensure_dev_certificate(tmp_path)
    server, port = await serve_echo(server_ssl_context(cert_path, key_path))
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            await round_trip(port, client_context(cert_path), "relay.example.test")
    finally:
        server.close()
        await server.wait_closed()


def test_server_context_requires_tls_1_2(tmp_path):
    context = server_ssl_context(*ensure_dev_certificate(tmp_path))
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.protocol == ssl.PROTOCOL_TLS_SERVER


async def test_tls_1_1_client_is_refused(tmp_path):
    cert_path, key_path = ensure_dev_certificate(tmp_path)
    server, port = await serve_echo(server_ssl_context(cert_path, key_path))
    client = client_context(cert_path)
    try:
        client.minimum_version = ssl.TLSVersion.TLSv1
        client.maximum_version = ssl.TLSVersion.TLSv1_1
        client.set_ciphers("DEFAULT:@SECLEVEL=0")
    except (ValueError, ssl.SSLError):
        pytest.skip("this OpenSSL cannot even offer TLS 1.1")
    try:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await round_trip(port, client, "localhost")
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
async def test_node_trusts_dev_certificate_via_node_extra_ca_certs(tmp_path):
    cert_path, key_path = ensure_dev_certificate(tmp_path)
    server, port = await serve_echo(server_ssl_context(cert_path, key_path))
    script = (
        "const tls = require('tls');"
        f"const s = tls.connect({{host: '127.0.0.1', port: {port}, servername: 'localhost'}}, () => {{"
        "  s.write('from node\\n'); });"
        "s.on('data', d => { process.stdout.write(String(d)); s.end(); });"
        "s.on('error', e => { console.error(e.code || e.message); process.exit(2); });"
    )
    env = {k: v for k, v in os.environ.items() if k != "NODE_TLS_REJECT_UNAUTHORIZED"}
    env["NODE_EXTRA_CA_CERTS"] = cert_path
    try:
        proc = await asyncio.create_subprocess_exec("node", "-e", script, env=env, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        server.close()
        await server.wait_closed()
    assert proc.returncode == 0, err.decode()
    assert out == b"from node\n"


# ---------------------------------------------------------------------------------------------------------------
# server_ssl_context errors


def _unrelated_ca_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "unrelated")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def test_missing_cert_file(tmp_path):
    _, key_path = ensure_dev_certificate(tmp_path)
    missing = tmp_path / "nope.pem"
    with pytest.raises(ConfigError, match=f"^{missing}: tls_cert: file not found"):
        server_ssl_context(missing, key_path)


def test_missing_key_file(tmp_path):
    cert_path, _ = ensure_dev_certificate(tmp_path)
    missing = tmp_path / "nope-key.pem"
    with pytest.raises(ConfigError, match=f"^{missing}: tls_key: file not found"):
        server_ssl_context(cert_path, missing)


def test_unreadable_cert_path(tmp_path):
    _, key_path = ensure_dev_certificate(tmp_path)
    with pytest.raises(ConfigError, match=f"^{tmp_path}: tls_cert: is a directory"):
        server_ssl_context(tmp_path, key_path)
    blocked = Path(key_path) / "x.pem"  # a file used as a folder: unreadable even for root
    with pytest.raises(ConfigError, match=f"^{blocked}: tls_cert: cannot read file"):
        server_ssl_context(blocked, key_path)


def test_cert_that_is_not_pem(tmp_path):
    _, key_path = ensure_dev_certificate(tmp_path)
    bad = tmp_path / "bad.pem"
    bad.write_text("hello")
    with pytest.raises(ConfigError, match=f"^{bad}: tls_cert: not a PEM certificate"):
        server_ssl_context(bad, key_path)


def test_key_that_is_not_pem(tmp_path):
    cert_path, _ = ensure_dev_certificate(tmp_path)
    bad = tmp_path / "bad-key.pem"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ConfigError, match=f"^{bad}: tls_key: not a PEM private key"):
        server_ssl_context(cert_path, bad)


def test_key_and_cert_swapped(tmp_path):
    cert_path, key_path = ensure_dev_certificate(tmp_path)
    with pytest.raises(ConfigError, match=f"^{key_path}: tls_cert: not a PEM certificate"):
        server_ssl_context(key_path, cert_path)


def test_key_not_matching_certificate(tmp_path):
    cert_path, _ = ensure_dev_certificate(tmp_path / "a")
    _, other_key = ensure_dev_certificate(tmp_path / "b")
    with pytest.raises(ConfigError, match=f"^{other_key}: tls_key: does not match the certificate in {cert_path}"):
        server_ssl_context(cert_path, other_key)


def test_encrypted_key_is_refused_without_prompting(tmp_path):
    cert_path, key_path = ensure_dev_certificate(tmp_path)
    key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
    encrypted = tmp_path / "enc-key.pem"
    encrypted.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.BestAvailableEncryption(b"secret-pass")))
    with pytest.raises(ConfigError, match=f"^{encrypted}: tls_key: the private key is encrypted"):
        server_ssl_context(cert_path, encrypted)


def test_cert_file_with_chain_is_accepted(tmp_path):
    cert_path, key_path = ensure_dev_certificate(tmp_path)
    chain = tmp_path / "chain.pem"
    chain.write_text(Path(cert_path).read_text() + _unrelated_ca_pem())
    assert isinstance(server_ssl_context(chain, key_path), ssl.SSLContext)
