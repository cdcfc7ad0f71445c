"""The parts of the TLS diagnosis that need no broker (the rest: tests/integration/test_tls.py)."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lag_exporter.tls_diagnosis import explain_tls_failure, first_broker, is_certain_tls_failure

VERIFY_FAILED = ("ssl://k:9093/bootstrap: SSL handshake failed: error:0A000086:SSL routines::"
                 "certificate verify failed: broker certificate could not be verified, verify "
                 "that ssl.ca.location is correctly configured (after 7ms in state "
                 "SSL_HANDSHAKE) (_SSL)")
ALERT = ("ssl://k:9093/bootstrap: Receive failed: error:0A000416:SSL routines::ssl/tls alert "
         "certificate unknown: SSL alert number 46 (after 1ms in state APIVERSION_QUERY) "
         "(_TRANSPORT)")


def client_pem(valid_from: dt.datetime, valid_until: dt.datetime) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "me")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(valid_from).not_valid_after(valid_until)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@pytest.mark.parametrize(("text", "certain"), [
    (VERIFY_FAILED, True),
    (ALERT, True),
    ("ssl://k:9093/bootstrap: Receive failed: ssl/tls alert bad certificate (_TRANSPORT)", True),
    ("ssl://k:9093/bootstrap: Connect to ipv4#127.0.0.1:9093 failed: Connection refused",
     False),
    ("ssl://k:9093/bootstrap: SSL handshake failed: Disconnected (_TRANSPORT)", False),
])
def test_which_tls_failures_are_certain(text: str, certain: bool) -> None:
    assert is_certain_tls_failure(text) is certain


@pytest.mark.parametrize(("bootstrap", "broker"), [
    ("kafka1:9093,kafka2:9093", ("kafka1", 9093)),
    ("SSL://10.0.0.1:9094", ("10.0.0.1", 9094)),
    ("[::1]:9093", ("::1", 9093)),
    ("kafka1", None),
])
def test_first_broker(bootstrap: str, broker: tuple[str, int] | None) -> None:
    assert first_broker(bootstrap) == broker


def test_refused_client_certificate_explained_by_its_dates() -> None:
    now = dt.datetime.now(dt.UTC)
    expired = client_pem(dt.datetime(2025, 1, 2, tzinfo=dt.UTC),
                         dt.datetime(2026, 1, 2, 3, 4, tzinfo=dt.UTC))
    assert explain_tls_failure("k:9093", {"ssl.certificate.pem": expired}, ALERT) == (
        "Kafka at k:9093 refused the TLS client certificate: it expired on 2026-01-02 03:04 UTC "
        "(CN=me, from ssl.keystore.*; TLS alert: certificate unknown)")
    future = client_pem(dt.datetime(2099, 5, 6, 7, 8, tzinfo=dt.UTC),
                        dt.datetime(2100, 1, 1, tzinfo=dt.UTC))
    assert explain_tls_failure("k:9093", {"ssl.certificate.pem": future}, ALERT) == (
        "Kafka at k:9093 refused the TLS client certificate: it is valid only from "
        "2099-05-06 07:08 UTC (CN=me, from ssl.keystore.*; TLS alert: certificate unknown)")
    valid = client_pem(now - dt.timedelta(days=1), now + dt.timedelta(days=1))
    assert explain_tls_failure("k:9093", {"ssl.certificate.pem": valid}, ALERT) == (
        "Kafka at k:9093 refused the TLS client certificate CN=me (TLS alert: certificate "
        "unknown); is it issued by a CA the broker trusts?")


def test_missing_client_certificate() -> None:
    assert explain_tls_failure("k:9093", {}, ALERT) == (
        "Kafka at k:9093 wants a TLS client certificate (TLS alert: certificate unknown) and "
        "none is configured; set ssl.keystore.location (PKCS12 or PEM) or ssl.keystore.key and "
        "ssl.keystore.certificate.chain")


def test_other_errors_are_left_to_librdkafka() -> None:
    assert explain_tls_failure("k:9093", {}, "Connection refused (_TRANSPORT)") is None
    # the broker cannot be reached for a look of our own: librdkafka's text stays
    assert explain_tls_failure("127.0.0.1:1", {}, VERIFY_FAILED) is None
