"""TLS for the gateway: a server context from PEM files, and a self-signed development certificate.

.NET clients always dial ``wss://`` (spec §7), so a development gateway needs a certificate that local clients can
be told to trust: ``NODE_EXTRA_CA_CERTS=<cert>`` for Node, ``ssl.create_default_context(cafile=<cert>)`` for
Python. Both treat the file as a trust anchor, which is why the certificate is marked CA:TRUE.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..errors import ConfigError

__all__ = [
    "DEV_CERT_LIFETIME",
    "DEV_CERT_MIN_REMAINING",
    "DEV_CERT_NAME",
    "DEV_KEY_NAME",
    "ensure_dev_certificate",
    "server_ssl_context",
]

DEV_CERT_NAME = "dev-cert.pem"
DEV_KEY_NAME = "dev-key.pem"
DEV_CERT_LIFETIME = dt.timedelta(days=365)
#: a stored certificate with less validity left than this is replaced at start-up
DEV_CERT_MIN_REMAINING = dt.timedelta(days=1)
_DEV_DNS = ("localhost",)
_DEV_IPS = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what}: file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: {what}: is a directory, expected a PEM file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: {what}: cannot read file: {exc.strerror or exc}") from None


def _public_der(key: object) -> bytes:
    return key.public_bytes(serialization.Encoding.DER,  # type: ignore[attr-defined]
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def server_ssl_context(cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str]) -> ssl.SSLContext:
    """A TLS 1.2+ server context. ConfigError names the file when it is missing, unreadable, not PEM, encrypted,
    or when the key does not belong to the certificate."""
    cert_file, key_file = Path(cert_path), Path(key_path)
    cert_data = _read(cert_file, "tls_cert")
    key_data = _read(key_file, "tls_key")
    # Parse with cryptography first: OpenSSL's errors ("PEM lib") do not say which file is wrong, and an encrypted
    # key would make OpenSSL prompt for a password on the terminal.
    try:
        chain = x509.load_pem_x509_certificates(cert_data)
    except ValueError:
        raise ConfigError(
            f"{cert_file}: tls_cert: not a PEM certificate (expected '-----BEGIN CERTIFICATE-----')") from None
    try:
        key = serialization.load_pem_private_key(key_data, password=None)
    except TypeError:
        raise ConfigError(f"{key_file}: tls_key: the private key is encrypted; give an unencrypted key") from None
    except ValueError:
        raise ConfigError(f"{key_file}: tls_key: not a PEM private key") from None
    except UnsupportedAlgorithm as exc:
        raise ConfigError(f"{key_file}: tls_key: unsupported private key type: {exc}") from None
    if _public_der(chain[0].public_key()) != _public_der(key.public_key()):
        raise ConfigError(f"{key_file}: tls_key: does not match the certificate in {cert_file}")

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_file, key_file, password=_refuse_password)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"{cert_file}: tls_cert/tls_key: OpenSSL refused them: {exc}") from None
    return context


def _refuse_password() -> bytes:
    # Never block on a terminal prompt; encrypted keys were already rejected above.
    raise ConfigError("tls_key: the private key is encrypted")


# ---------------------------------------------------------------------------------------------------------------


def ensure_dev_certificate(state_dir: str | os.PathLike[str]) -> tuple[str, str]:
    """``(cert_path, key_path)`` of a self-signed certificate for localhost, 127.0.0.1 and ::1 in ``state_dir``.

    A stored pair is reused while it matches and stays valid for more than a day, so clients told to trust it
    keep working across restarts; otherwise a new EC P-256 pair valid for a year replaces it.
    """
    directory = Path(state_dir)
    cert_file, key_file = directory / DEV_CERT_NAME, directory / DEV_KEY_NAME
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{directory}: cannot create the state directory: {exc.strerror or exc}") from None
    with _exclusive(directory / ".dev-cert.lock"):
        # Under the lock, so two gateways starting together never pair one's key with the other's certificate.
        if not _usable(cert_file, key_file):
            cert_pem, key_pem = _generate()
            _write_atomic(key_file, key_pem, 0o600)  # key first: a cert without its key is useless anyway
            # The certificate is public and clients (maybe another user's) must read it to trust it.
            _write_atomic(cert_file, cert_pem, 0o644)
    return str(cert_file), str(key_file)


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # not POSIX: concurrent first starts are the only risk, accept it
        yield
        return
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise ConfigError(f"{lock_path}: cannot create lock file: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _usable(cert_file: Path, key_file: Path) -> bool:
    """True if the stored pair parses, matches, names our hosts and is valid for more than a day."""
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return False
    if _public_der(cert.public_key()) != _public_der(key.public_key()):
        return False
    now = dt.datetime.now(dt.UTC)
    if cert.not_valid_before_utc > now or cert.not_valid_after_utc - now <= DEV_CERT_MIN_REMAINING:
        return False
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False
    names_ok = set(_DEV_DNS) <= set(san.get_values_for_type(x509.DNSName)) and set(_DEV_IPS) <= set(
        san.get_values_for_type(x509.IPAddress))
    return names_ok and ca


def _generate() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, "localhost"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "wcfrelay development gateway"),
    ])
    # Backdate a little so a client whose clock is slightly behind does not see a "not yet valid" certificate.
    now = dt.datetime.now(dt.UTC)
    public = key.public_key()
    ski = x509.SubjectKeyIdentifier.from_public_key(public)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + DEV_CERT_LIFETIME)
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName(d) for d in _DEV_DNS] + [x509.IPAddress(ip) for ip in _DEV_IPS]), critical=False)
        # CA:TRUE lets Node (NODE_EXTRA_CA_CERTS) and Python (cafile=) use this very file as the trust anchor.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        # keyCertSign plus SKI/AKI keep OpenSSL's strict mode (Python 3.13+ default) happy with a CA certificate.
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=True, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write via a temporary file (created 0600) and rename, so a crash never leaves half a PEM file behind."""
    try:
        fd, tmp_name = tempfile.mkstemp(prefix="." + path.name + "-", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise ConfigError(f"{path.parent}: cannot write in the state directory: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, path)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write: {exc.strerror or exc}") from None
    finally:
        Path(tmp_name).unlink(missing_ok=True)
