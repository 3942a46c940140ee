"""Throw-away certificates for TLS tests, made at test time.

Usage::

    from pki import Pki                      # tests/ is on sys.path under pytest

    pki = Pki(tmp_dir)                       # a CA: pki.ca (PEM path)
    server = pki.issue("server", ips=["127.0.0.1"])       # .cert, .key paths
    client = pki.issue("client")
    expired = pki.issue("old", ips=["127.0.0.1"], expired=True)
    other = Pki(other_dir)                   # an unrelated CA nobody trusts

Keys are EC P-256 (fast to make); every certificate is signed by its ``Pki``'s CA.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = dt.timedelta(days=1)
"""How long a fresh certificate is valid."""


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, as PEM files."""

    cert: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


class Pki:
    """A certificate authority in ``directory`` (created if missing).

    :param directory: where the PEM files go.
    :param name: the CA's common name (default ``schemacache test CA``).
    """

    def __init__(self, directory: Path, name: str = "schemacache test CA") -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name)).issuer_name(_name(name))
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True,
                                         False, False), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.ca = directory / "ca.pem"
        self.ca.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, name: str, ips: tuple[str, ...] | list[str] = (),
              dns: tuple[str, ...] | list[str] = (), expired: bool = False) -> Issued:
        """A certificate for ``name`` (its common name and file stem).

        :param ips: IP subject alternative names (a server's addresses).
        :param dns: DNS subject alternative names.
        :param expired: valid only in the past (default ``False``).
        """
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        start, end = ((now - 2 * VALIDITY, now - VALIDITY) if expired
                      else (now - dt.timedelta(minutes=5), now + VALIDITY))
        # etcd checks client certificates for clientAuth; one usage set serves both ends.
        usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(name)).issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        )
        sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        sans += [x509.DNSName(d) for d in dns]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        issued = Issued(cert=self.directory / f"{name}.pem",
                        key=self.directory / f"{name}-key.pem")
        issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, issued.key)
        return issued

    def jwt_keys(self) -> Issued:
        """An RSA key pair for etcd's JWT auth tokens (``cert`` is the public key)."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pair = Issued(cert=self.directory / "jwt.pub", key=self.directory / "jwt.key")
        pair.cert.write_bytes(key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        _write_key(key, pair.key)
        return pair
