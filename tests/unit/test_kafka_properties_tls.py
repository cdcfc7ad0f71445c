"""Truststores and keystores as operators have them (PKCS12 from keytool / openssl, PEM files),
made here with cryptography, translated to librdkafka's PEM settings."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from lag_exporter.errors import ConfigError
from lag_exporter.kafka_properties import load_command_config, to_librdkafka

SSL = {"security.protocol": "SSL"}
NOW = dt.datetime.now(dt.UTC)


def certificate(name: str, key: ec.EllipticCurvePrivateKey,
                issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None = None
                ) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, issuer_key = issuer or (subject, key)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=1))
            .not_valid_after(NOW + dt.timedelta(days=1))
            .sign(issuer_key, hashes.SHA256()))


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


CA_KEY = ec.generate_private_key(ec.SECP256R1())
CA = certificate("test CA", CA_KEY)
CA2 = certificate("second CA", ec.generate_private_key(ec.SECP256R1()))
CLIENT_KEY = ec.generate_private_key(ec.SECP256R1())
CLIENT = certificate("client", CLIENT_KEY, (CA.subject, CA_KEY))


def truststore(path: Path, password: str, *cas: x509.Certificate) -> str:
    """A Java PKCS12 truststore (trustedCertEntry per CA), as keytool -importcert makes."""
    path.write_bytes(pkcs12.serialize_java_truststore(
        [pkcs12.PKCS12Certificate(ca, f"ca{n}".encode()) for n, ca in enumerate(cas)],
        serialization.BestAvailableEncryption(password.encode())))
    return str(path)


def keystore(path: Path, password: str, key: ec.EllipticCurvePrivateKey | None = CLIENT_KEY,
             cert: x509.Certificate | None = CLIENT) -> str:
    path.write_bytes(pkcs12.serialize_key_and_certificates(
        b"client", key, cert, [CA], serialization.BestAvailableEncryption(password.encode())))
    return str(path)


def test_pkcs12_truststore_becomes_its_ca_certificates(tmp_path: Path) -> None:
    location = truststore(tmp_path / "trust.p12", "trustpw", CA, CA2)
    settings, warnings = to_librdkafka({**SSL, "ssl.truststore.type": "PKCS12",
                                        "ssl.truststore.location": location,
                                        "ssl.truststore.password": "trustpw"})
    assert settings == {"security.protocol": "SSL", "ssl.ca.pem": pem(CA) + pem(CA2),
                        "ssl.endpoint.identification.algorithm": "https"}
    assert warnings == []


@pytest.mark.parametrize(("password", "which"), [("wrong-trust-pw", "wrong"), ("", "missing")])
def test_pkcs12_truststore_with_a_wrong_or_missing_password(
    tmp_path: Path, password: str, which: str
) -> None:
    location = truststore(tmp_path / "trust.p12", "trustpw", CA)
    props = {**SSL, "ssl.truststore.location": location, "ssl.truststore.password": password}
    with pytest.raises(ConfigError) as raised:
        to_librdkafka(props, "c.properties")
    assert str(raised.value) == (
        f"c.properties: ssl.truststore.password: {which} password for the PKCS12 truststore "
        f"'{location}' (or the file is damaged); set ssl.truststore.password to its password")


def test_pkcs12_truststore_without_certificates_is_refused(tmp_path: Path) -> None:
    location = str(tmp_path / "trust.p12")  # only a key: no certificate to trust
    Path(location).write_bytes(pkcs12.serialize_key_and_certificates(
        b"k", CLIENT_KEY, None, None, serialization.BestAvailableEncryption(b"trustpw")))
    props = {**SSL, "ssl.truststore.location": location, "ssl.truststore.password": "trustpw"}
    with pytest.raises(ConfigError) as raised:
        to_librdkafka(props, "c.properties")
    assert str(raised.value) == (
        f"c.properties: ssl.truststore.location: the PKCS12 truststore '{location}' holds no "
        "certificate; import the CA certificates into it")


def test_pkcs12_keystore_becomes_chain_and_key(tmp_path: Path) -> None:
    location = keystore(tmp_path / "client.p12", "storepw")
    settings, warnings = to_librdkafka({**SSL, "ssl.keystore.type": "PKCS12",
                                        "ssl.keystore.location": location,
                                        "ssl.keystore.password": "storepw",
                                        "ssl.key.password": "storepw"})
    assert settings["ssl.certificate.pem"] == pem(CLIENT) + pem(CA)
    key = serialization.load_pem_private_key(settings["ssl.key.pem"].encode(), None)
    assert key.public_key() == CLIENT_KEY.public_key()
    assert "ssl.keystore.location" not in settings and "ssl.keystore.password" not in settings
    assert warnings == []


def test_pkcs12_keystore_opened_with_the_key_password_when_it_differs(tmp_path: Path) -> None:
    location = keystore(tmp_path / "client.p12", "keypw")
    settings, _ = to_librdkafka({**SSL, "ssl.keystore.location": location,
                                 "ssl.keystore.password": "other", "ssl.key.password": "keypw"})
    assert settings["ssl.certificate.pem"].startswith(pem(CLIENT))


def test_pkcs12_keystore_with_a_wrong_password(tmp_path: Path) -> None:
    location = keystore(tmp_path / "client.p12", "storepw")
    props = {**SSL, "ssl.keystore.location": location, "ssl.keystore.password": "wrong-ks-pw"}
    with pytest.raises(ConfigError) as raised:
        to_librdkafka(props, "c.properties")
    assert str(raised.value) == (
        "c.properties: ssl.keystore.password: wrong password for the PKCS12 keystore named by "
        "ssl.keystore.location (or the file is damaged); the password is not shown")


def test_pkcs12_keystore_without_a_key_is_refused(tmp_path: Path) -> None:
    location = keystore(tmp_path / "client.p12", "storepw", key=None, cert=None)
    props = {**SSL, "ssl.keystore.location": location, "ssl.keystore.password": "storepw"}
    with pytest.raises(ConfigError) as raised:
        to_librdkafka(props, "c.properties")
    assert str(raised.value) == (
        "c.properties: ssl.keystore.location: the PKCS12 keystore holds no private key with its "
        "certificate; export the client key and certificate into it")


def test_pem_truststore_file_with_two_cas_and_other_text(tmp_path: Path) -> None:
    path = tmp_path / "ca.pem"
    path.write_text("subject=CN = test CA\n" + pem(CA) + "\n# second\n" + pem(CA2))
    settings, warnings = to_librdkafka({**SSL, "ssl.truststore.type": "PEM",
                                        "ssl.truststore.location": str(path)})
    assert settings["ssl.ca.pem"] == pem(CA) + pem(CA2)
    assert warnings == []


def test_pem_truststore_file_without_certificates_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ca.pem"
    path.write_text("-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----\n")
    with pytest.raises(ConfigError) as raised:
        to_librdkafka({**SSL, "ssl.truststore.location": str(path)}, "c.properties")
    assert str(raised.value) == (
        f"c.properties: ssl.truststore.location: '{path}' holds no PEM certificate "
        "(-----BEGIN CERTIFICATE-----); point it at the CA certificates")


def test_replaced_files_change_the_settings(tmp_path: Path) -> None:
    """What a config reload (SIGHUP) compares: the files' contents, not their paths."""
    (tmp_path / "c.properties").write_text(
        f"security.protocol=SSL\nssl.truststore.location={tmp_path / 'trust.p12'}\n"
        f"ssl.truststore.password=pw\nssl.keystore.location={tmp_path / 'client.p12'}\n"
        "ssl.keystore.password=pw\n")
    truststore(tmp_path / "trust.p12", "pw", CA)
    keystore(tmp_path / "client.p12", "pw")
    before, _ = load_command_config(tmp_path / "c.properties")
    assert load_command_config(tmp_path / "c.properties")[0] == before  # same files: same
    new_key = ec.generate_private_key(ec.SECP256R1())
    keystore(tmp_path / "client.p12", "pw", new_key,
             certificate("client", new_key, (CA.subject, CA_KEY)))
    after_keystore, _ = load_command_config(tmp_path / "c.properties")
    assert after_keystore["ssl.key.pem"] != before["ssl.key.pem"]
    assert after_keystore["ssl.ca.pem"] == before["ssl.ca.pem"]
    truststore(tmp_path / "trust.p12", "pw", CA, CA2)
    after_truststore, _ = load_command_config(tmp_path / "c.properties")
    assert after_truststore["ssl.ca.pem"] == pem(CA) + pem(CA2)


def test_hostname_verification_is_on_unless_emptied() -> None:
    assert to_librdkafka(SSL)[0]["ssl.endpoint.identification.algorithm"] == "https"
    assert to_librdkafka({"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN",
                          "sasl.jaas.config": "org.apache.kafka.common.security.plain."
                          'PlainLoginModule required username="u" password="p";'}
                         )[0]["ssl.endpoint.identification.algorithm"] == "https"
    off = to_librdkafka({**SSL, "ssl.endpoint.identification.algorithm": ""})[0]
    assert off["ssl.endpoint.identification.algorithm"] == "none"
    plaintext = to_librdkafka({"bootstrap.servers": "k:9092"})[0]
    assert "ssl.endpoint.identification.algorithm" not in plaintext
