"""A throwaway PKI for the end-to-end upstream servers.

Real clients (kubectl, git, the AWS CLI, Python's ssl) verify certificates the way
they do in production, so the fake upstreams need real ones: a server CA whose leaf
certificate names every loopback spelling a client may dial, and a separate client CA
issuing the ``kube-admin`` certificate that a Kubernetes API server maps to
``system:masters``.  Keeping the client CA separate lets tests prove that the proxy
presents *that* certificate upstream rather than something signed by the server CA.

Certificates use ECDSA P-256 (fast to generate, accepted by Go, OpenSSL and curl) and
carry the extensions that strict verifiers (Go, OpenSSL's X509_STRICT) insist on:
basicConstraints, keyUsage, extendedKeyUsage, subject/authority key identifiers.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = datetime.timedelta(days=7)
_BACKDATE = datetime.timedelta(hours=1)

SERVER_SANS: tuple[str, ...] = ("127.0.0.1", "::1", "localhost")
"""Every name a loopback client may use to reach an upstream server."""


@dataclass(frozen=True)
class CertifiedKey:
    """A certificate with its private key, both available as PEM bytes."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def common_name(self) -> str:
        attrs = self.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return str(attrs[0].value) if attrs else ""


@dataclass(frozen=True)
class PkiFiles:
    """Paths of a :class:`ThrowawayPki` written to disk (keys are mode 0600).

    ``client_pem`` holds the client certificate followed by its key in one file,
    the shape mitmproxy's ``client_certs`` option and curl's ``--cert`` accept.
    ``ca_bundle`` holds both CA certificates.
    """

    directory: Path
    ca_cert: Path
    client_ca_cert: Path
    ca_bundle: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    client_pem: Path


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization is not None:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attrs)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def make_ca(common_name: str) -> CertifiedKey:
    """Create a self-signed CA that may only sign certificates (pathlen 0)."""
    key = _new_key()
    name = _name(common_name, "guardproxy e2e")
    cert = (
        _builder(name, name, key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return CertifiedKey(cert, key)


def _leaf(
    ca: CertifiedKey,
    subject: x509.Name,
    usage: x509.ObjectIdentifier,
    sans: x509.SubjectAlternativeName | None,
) -> CertifiedKey:
    key = _new_key()
    builder = (
        _builder(subject, ca.cert.subject, key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
    )
    if sans is not None:
        builder = builder.add_extension(sans, critical=False)
    return CertifiedKey(builder.sign(ca.key, hashes.SHA256()), key)


def make_server_cert(ca: CertifiedKey, names: tuple[str, ...] = SERVER_SANS) -> CertifiedKey:
    """Issue a TLS server certificate whose SANs are ``names`` (IPs or DNS names)."""
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return _leaf(
        ca, _name(names[0]), ExtendedKeyUsageOID.SERVER_AUTH, x509.SubjectAlternativeName(entries)
    )


def make_client_cert(
    ca: CertifiedKey, common_name: str, organization: str | None = None
) -> CertifiedKey:
    """Issue a TLS client certificate; Kubernetes reads CN as user and O as group."""
    return _leaf(ca, _name(common_name, organization), ExtendedKeyUsageOID.CLIENT_AUTH, None)


def _write(path: Path, data: bytes, mode: int) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, mode)  # O_CREAT's mode is masked by umask and ignored for existing files
    return path


@dataclass(frozen=True)
class ThrowawayPki:
    """Server CA + server certificate, client CA + ``kube-admin`` client certificate."""

    ca: CertifiedKey
    server: CertifiedKey
    client_ca: CertifiedKey
    client: CertifiedKey

    @classmethod
    def create(cls) -> ThrowawayPki:
        ca = make_ca("guardproxy-e2e server CA")
        client_ca = make_ca("guardproxy-e2e client CA")
        return cls(
            ca=ca,
            server=make_server_cert(ca),
            client_ca=client_ca,
            client=make_client_cert(client_ca, "kube-admin", "system:masters"),
        )

    def write(self, directory: Path) -> PkiFiles:
        """Write every PEM into ``directory`` (created if needed); keys get mode 0600."""
        directory.mkdir(parents=True, exist_ok=True)
        public, private = 0o644, 0o600
        return PkiFiles(
            directory=directory,
            ca_cert=_write(directory / "ca.crt", self.ca.cert_pem, public),
            client_ca_cert=_write(directory / "client-ca.crt", self.client_ca.cert_pem, public),
            ca_bundle=_write(
                directory / "ca-bundle.crt", self.ca.cert_pem + self.client_ca.cert_pem, public
            ),
            server_cert=_write(directory / "server.crt", self.server.cert_pem, public),
            server_key=_write(directory / "server.key", self.server.key_pem, private),
            client_cert=_write(directory / "client.crt", self.client.cert_pem, public),
            client_key=_write(directory / "client.key", self.client.key_pem, private),
            client_pem=_write(
                directory / "client.pem", self.client.cert_pem + self.client.key_pem, private
            ),
        )


def load_cert_chain(ctx: ssl.SSLContext, identity: CertifiedKey) -> None:
    """Load a certificate and key into ``ctx``.

    ``ssl`` only reads chains from files, so this goes through a private (0600)
    temporary file that is deleted at once.
    """
    with tempfile.NamedTemporaryFile("wb", suffix=".pem") as fh:
        os.chmod(fh.name, 0o600)
        fh.write(identity.cert_pem + identity.key_pem)
        fh.flush()
        ctx.load_cert_chain(fh.name)


def client_ssl_context(ca: CertifiedKey, identity: CertifiedKey | None = None) -> ssl.SSLContext:
    """Client-side TLS context trusting only ``ca``, presenting ``identity`` if given."""
    ctx = ssl.create_default_context(cadata=ca.cert_pem.decode())
    if identity is not None:
        load_cert_chain(ctx, identity)
    return ctx
