"""A throwaway PKI for TLS tests: a CA, a broker certificate for 127.0.0.1, a client
certificate, and an expired broker certificate, all written as PEM files."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    expired_cert: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing here: "unknown CA"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    os.chmod(path, 0o600)
    return path


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
          issuer_key: ec.EllipticCurvePrivateKey, ca: bool = False, server: bool = False,
          expired: bool = False) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    start, end = ((now - dt.timedelta(days=30), now - dt.timedelta(days=1)) if expired
                  else (now - dt.timedelta(hours=1), now + dt.timedelta(days=2)))
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(start).not_valid_after(end)
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                          crl_sign=True, content_commitment=False,
                                          key_encipherment=False, data_encipherment=False,
                                          key_agreement=False, encipher_only=False,
                                          decipher_only=False), critical=True)
    if server:
        b = b.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def make_pki(where: Path) -> Pki:
    where.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("test CA", ca_key, _name("test CA"), ca_key, ca=True)
    other_key = ec.generate_private_key(ec.SECP256R1())
    other = _cert("other CA", other_key, _name("other CA"), other_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _cert("127.0.0.1", server_key, ca.subject, ca_key, server=True)
    expired = _cert("127.0.0.1", server_key, ca.subject, ca_key, server=True, expired=True)
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _cert("test-gw", client_key, ca.subject, ca_key)

    def pem(cert: x509.Certificate, name: str) -> Path:
        path = where / name
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    return Pki(ca=pem(ca, "ca.pem"), server_cert=pem(server, "server.pem"),
               server_key=_write_key(server_key, where / "server.key"),
               expired_cert=pem(expired, "expired.pem"), client_cert=pem(client, "client.pem"),
               client_key=_write_key(client_key, where / "client.key"),
               other_ca=pem(other, "other-ca.pem"))
