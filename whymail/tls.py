"""TLS for the listeners: the configured certificate, or a self-signed one made on first start."""

from __future__ import annotations

import datetime as dt
import fcntl
import ipaddress
import os
import ssl
from pathlib import Path

from whymail.config import TlsConfig


def ensure_self_signed(directory: Path, hostname: str) -> tuple[Path, Path]:
    """A self-signed certificate for `hostname` in `directory` (made once, kept across restarts)."""
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    directory.mkdir(parents=True, exist_ok=True)
    # Several gateways start at once on a fresh state dir: one makes the pair under a lock, the others
    # wait and use it (two writers would leave one's key beside the other's certificate).
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if cert_path.exists() and key_path.exists():
            return cert_path, key_path
        _make_pair(cert_path, key_path, hostname)
    return cert_path, key_path


def _make_pair(cert_path: Path, key_path: Path, hostname: str) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = dt.datetime.now(dt.UTC)
    names: list[x509.GeneralName] = [x509.DNSName(hostname), x509.DNSName("localhost")]
    names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(key, hashes.SHA256())
    )
    tmp_key = key_path.with_suffix(".tmp")
    fd = os.open(tmp_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    tmp_cert = cert_path.with_suffix(".tmp")
    tmp_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    # The key first, the certificate last: a reader that sees the certificate sees its key.
    os.replace(tmp_key, key_path)
    os.replace(tmp_cert, cert_path)


def server_context(tls: TlsConfig, state_dir: Path, hostname: str) -> ssl.SSLContext:
    """A server-side TLS context (TLS 1.2+) from the configured files or the self-signed pair."""
    if tls.cert_file and tls.key_file:
        cert, key = Path(tls.cert_file), Path(tls.key_file)
    else:
        cert, key = ensure_self_signed(state_dir / "tls", hostname)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context
