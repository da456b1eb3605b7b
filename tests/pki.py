"""A throwaway PKI for TLS tests, written as PEM files under a temporary directory.

`make_pki` makes a CA and a server certificate for 127.0.0.1 (SAN IP) signed by it;
`issue_client_cert` signs client certificates with the same CA; `make_rsa_key` and
`make_ec_key` make signing keys for client assertions. Certificates carry the
extensions strict verifiers ask for (basic constraints, key usage, key identifiers),
so that a refused handshake in a test means what the test says, not a sloppy cert.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

_LIFETIME = datetime.timedelta(days=1)
SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class Pki:
    """A CA and a server certificate for 127.0.0.1, as PEM file paths."""

    directory: Path
    ca_cert: Path
    server_cert: Path
    server_key: Path
    ca_key: ec.EllipticCurvePrivateKey = field(repr=False)
    ca_certificate: x509.Certificate = field(repr=False)


@dataclass(frozen=True)
class ClientCert:
    """A client certificate and its key as PEM files; `subject_dn` in RFC 4514 form."""

    cert: Path
    key: Path
    subject_dn: str


@dataclass(frozen=True)
class KeyPair:
    """A private key as a PEM file and string, with its public half as PEM."""

    private_key: Path
    private_pem: str = field(repr=False)
    public_pem: str


def make_pki(directory: Path, ca_name: str = "Demo Test CA") -> Pki:
    """Make a CA and a server certificate for 127.0.0.1 in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_subject = x509.Name.from_rfc4514_string(f"CN={ca_name}")
    ca_certificate = _sign(
        _builder(ca_subject, ca_subject, ca_key.public_key(), ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True),
        ca_key,
    )

    server_key = ec.generate_private_key(ec.SECP256R1())
    server_san = x509.SubjectAlternativeName(
        [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    )
    server_certificate = _sign(
        _leaf_builder(
            ca_certificate, x509.Name.from_rfc4514_string("CN=127.0.0.1"), server_key
        )
        .add_extension(server_san, critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
        ca_key,
    )

    return Pki(
        directory=directory,
        ca_cert=_write_cert(directory / "ca.pem", ca_certificate),
        server_cert=_write_cert(directory / "server.pem", server_certificate),
        server_key=_write_key(directory / "server.key", server_key),
        ca_key=ca_key,
        ca_certificate=ca_certificate,
    )


def issue_client_cert(
    pki: Pki, subject_dn: str, *, san_dns: str | None = None
) -> ClientCert:
    """Sign a client certificate for `subject_dn` (RFC 4514) with the PKI's CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name.from_rfc4514_string(subject_dn)
    builder = _leaf_builder(pki.ca_certificate, subject, key).add_extension(
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
    )
    if san_dns is not None:
        san = x509.SubjectAlternativeName([x509.DNSName(san_dns)])
        builder = builder.add_extension(san, critical=False)

    stem = f"client-{x509.random_serial_number():x}"
    return ClientCert(
        cert=_write_cert(pki.directory / f"{stem}.pem", _sign(builder, pki.ca_key)),
        key=_write_key(pki.directory / f"{stem}.key", key),
        subject_dn=subject.rfc4514_string(),
    )


def make_rsa_key(directory: Path, name: str = "rsa") -> KeyPair:
    """An RSA-2048 key for RS256, written to `directory/name.key`."""
    return _key_pair(directory / f"{name}.key", rsa.generate_private_key(65537, 2048))


def make_ec_key(directory: Path, name: str = "ec") -> KeyPair:
    """An EC P-256 key for ES256, written to `directory/name.key`."""
    return _key_pair(directory / f"{name}.key", ec.generate_private_key(ec.SECP256R1()))


def server_ssl_context(pki: Pki, require_client_cert: bool) -> ssl.SSLContext:
    """A server context presenting the 127.0.0.1 certificate.

    It always asks for a client certificate and verifies one against the CA; with
    `require_client_cert` False (`ssl.CERT_OPTIONAL`) a client may also send none
    and the application decides, as RFC 8705 token endpoints do.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    context.load_verify_locations(cafile=pki.ca_cert)
    context.verify_mode = (
        ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    )
    return context


def client_ssl_context(
    pki: Pki, client_cert: ClientCert | None = None
) -> ssl.SSLContext:
    """A client context trusting the PKI's CA, presenting `client_cert` if given."""
    context = ssl.create_default_context(cafile=pki.ca_cert)
    if client_cert is not None:
        context.load_cert_chain(client_cert.cert, client_cert.key)
    return context


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    issuer_public_key: ec.EllipticCurvePublicKey,
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _LIFETIME)
        .not_valid_after(now + _LIFETIME)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public_key), False
        )
    )


def _leaf_builder(
    ca: x509.Certificate, subject: x509.Name, key: ec.EllipticCurvePrivateKey
) -> x509.CertificateBuilder:
    ca_public_key = ca.public_key()
    assert isinstance(ca_public_key, ec.EllipticCurvePublicKey)
    return (
        _builder(subject, ca.subject, key.public_key(), ca_public_key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        .add_extension(_key_usage(ca=False), critical=True)
    )


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _sign(
    builder: x509.CertificateBuilder, ca_key: ec.EllipticCurvePrivateKey
) -> x509.Certificate:
    return builder.sign(ca_key, hashes.SHA256())


def _key_pair(path: Path, key: SigningKey) -> KeyPair:
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_key(path, key)
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return KeyPair(path, path.read_text(), public_pem.decode())


def _write_cert(path: Path, certificate: x509.Certificate) -> Path:
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path


def _write_key(path: Path, key: SigningKey) -> Path:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.write_bytes(pem)
    return path
