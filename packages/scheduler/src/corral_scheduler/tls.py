"""TLS for a control plane that listens beyond loopback: certificate files, or a self-signed pair.

`corral up` refuses a non-loopback `--host` without TLS unless the operator passes `--insecure`.
With `--tls-self-signed` the pair is generated once into `$CORRAL_HOME/tls/` (key mode 0600) and
clients pin the certificate (`CORRAL_TLS_CA`, or `server.json`'s `ca` on the same host).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

CERT_FILE = "cert.pem"
KEY_FILE = "key.pem"
_VALID_DAYS = 825  # the longest validity clients commonly accept for a server certificate


@dataclass(frozen=True)
class TlsFiles:
    """A server's certificate chain and private key, as PEM files."""

    cert: Path
    key: Path

    def read(self) -> tuple[bytes, bytes]:
        """(certificate chain, private key) as PEM bytes."""
        return self.cert.read_bytes(), self.key.read_bytes()


def is_loopback(host: str) -> bool:
    """Whether listening on `host` reaches only this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def self_signed(directory: Path, host: str) -> TlsFiles:
    """The self-signed pair in `directory`, generated on first use for this machine's names and `host`.

    The certificate names localhost, 127.0.0.1, ::1, this machine's host name and `host` (unless it is
    a wildcard address), so clients connecting by any of them can verify it against the pinned file."""
    files = TlsFiles(directory / CERT_FILE, directory / KEY_FILE)
    if files.cert.exists() and files.key.exists():
        return files
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    names: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.DNSName(socket.gethostname())]
    addresses = {"127.0.0.1", "::1"}
    if host not in ("0.0.0.0", "::", ""):
        try:
            addresses.add(str(ipaddress.ip_address(host.strip("[]"))))
        except ValueError:
            names.append(x509.DNSName(host))
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in sorted(addresses)]
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"corral control plane on {socket.gethostname()}")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=_VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    descriptor = os.open(files.key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return files
