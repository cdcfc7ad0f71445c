"""The local stack's test certificate authority and certificates (files under `.stack/tls/`).

Made with `cryptography` (a dependency of lag-exporter, which reads PKCS12 truststores with it)
rather than the JDK's keytool: one Python call writes everything in tens of milliseconds, where
keytool needs a JVM per step and cannot write PEM private keys at all. Keys are ECDSA P-256
(fast to make; Java, OpenSSL and Elasticsearch all take them).

Files (PASSWORD is STORE_PASSWORD):
  ca.pem                     the stack's CA certificate (what clients trust)
  truststore.p12             the same as a Java PKCS12 truststore (trustedCertEntry), PASSWORD
  server.pem, server-key.pem server certificate for 127.0.0.1 / localhost and its key (unencrypted)
  server.p12                 the same as a PKCS12 keystore, PASSWORD (the broker's)
  other-host.p12             a server certificate for other-host.invalid only, PASSWORD
  client.p12                 client certificate CN=lagexp-client and key, PASSWORD
  client.pem, client-key.pem the same in PEM (certificate chain; unencrypted PKCS8 key)
  client-expired.p12 / .pem / -key.pem  a client certificate that expired yesterday
  other-ca.pem               a CA that signed nothing here (the "wrong CA")
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

STORE_PASSWORD = "lagexp-test-secret-3"
OTHER_HOST = "other-host.invalid"
VALID_DAYS = 365
RENEW_WITHIN = dt.timedelta(days=1)


@dataclass(frozen=True)
class Issued:
    """A certificate with its private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "lag-exporter tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(common_name: str, now: dt.datetime) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(_name(common_name)).issuer_name(_name(common_name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return Issued(cert, key)


def issue(ca: Issued, common_name: str, *, server_names: tuple[str, ...] = (),
          not_before: dt.datetime, not_after: dt.datetime) -> Issued:
    """A leaf certificate signed by ca: a server one when server_names are given."""
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (x509.CertificateBuilder()
               .subject_name(_name(common_name)).issuer_name(ca.cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(not_before).not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   ca.key.public_key()), critical=False))
    if server_names:
        sans: list[x509.GeneralName] = []
        for name in server_names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                sans.append(x509.DNSName(name))
        builder = (builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                                  critical=False))
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return Issued(builder.sign(ca.key, hashes.SHA256()), key)


def cert_pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def keystore_p12(issued: Issued, ca: Issued, alias: str, password: str) -> bytes:
    return pkcs12.serialize_key_and_certificates(
        alias.encode(), issued.key, issued.cert, [ca.cert],
        serialization.BestAvailableEncryption(password.encode()))


def truststore_p12(ca: x509.Certificate, password: str) -> bytes:
    return pkcs12.serialize_java_truststore(
        [pkcs12.PKCS12Certificate(ca, b"ca")],
        serialization.BestAvailableEncryption(password.encode()))


def _write(path: Path, data: bytes, private: bool = False) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o600 if private else 0o644)
    tmp.replace(path)


def write_client_files(directory: Path, ca: Issued, name: str, client: Issued,
                       password: str = STORE_PASSWORD) -> None:
    """<name>.p12, <name>.pem (chain) and <name>-key.pem for one client certificate."""
    _write(directory / f"{name}.p12", keystore_p12(client, ca, name, password), private=True)
    _write(directory / f"{name}.pem", cert_pem(client.cert, ca.cert))
    _write(directory / f"{name}-key.pem", key_pem(client.key), private=True)


def load_ca(directory: Path) -> Issued:
    """The stack's CA, for tests that issue certificates of their own (rotation)."""
    cert = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
    key = serialization.load_pem_private_key((directory / "ca-key.pem").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return Issued(cert, key)


def issue_client(ca: Issued, common_name: str, expired: bool = False) -> Issued:
    now = dt.datetime.now(dt.UTC)
    if expired:
        return issue(ca, common_name, not_before=now - dt.timedelta(days=30),
                     not_after=now - dt.timedelta(days=1))
    return issue(ca, common_name, not_before=now - dt.timedelta(hours=1),
                 not_after=now + dt.timedelta(days=VALID_DAYS))


def up_to_date(directory: Path) -> bool:
    """Every file there and the server certificate valid for more than RENEW_WITHIN."""
    if not (directory / ".complete").exists():
        return False
    cert = x509.load_pem_x509_certificate((directory / "server.pem").read_bytes())
    return cert.not_valid_after_utc - dt.datetime.now(dt.UTC) > RENEW_WITHIN


def make_all(directory: Path) -> None:
    """(Re)write every file listed in the module docstring."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / ".complete").unlink(missing_ok=True)
    now = dt.datetime.now(dt.UTC)
    valid = {"not_before": now - dt.timedelta(hours=1),
             "not_after": now + dt.timedelta(days=VALID_DAYS)}
    ca = make_ca("lag-exporter test CA", now)
    server = issue(ca, "localhost", server_names=("localhost", "127.0.0.1"), **valid)
    other_host = issue(ca, OTHER_HOST, server_names=(OTHER_HOST,), **valid)
    _write(directory / "ca.pem", cert_pem(ca.cert))
    _write(directory / "ca-key.pem", key_pem(ca.key), private=True)
    _write(directory / "truststore.p12", truststore_p12(ca.cert, STORE_PASSWORD))
    _write(directory / "server.pem", cert_pem(server.cert, ca.cert))
    _write(directory / "server-key.pem", key_pem(server.key), private=True)
    _write(directory / "server.p12", keystore_p12(server, ca, "server", STORE_PASSWORD),
           private=True)
    _write(directory / "other-host.p12", keystore_p12(other_host, ca, "server", STORE_PASSWORD),
           private=True)
    write_client_files(directory, ca, "client", issue_client(ca, "lagexp-client"))
    write_client_files(directory, ca, "client-expired",
                       issue_client(ca, "lagexp-expired", expired=True))
    _write(directory / "other-ca.pem", cert_pem(make_ca("some other CA", now).cert))
    (directory / ".complete").touch()
