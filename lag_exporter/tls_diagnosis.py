"""Why a TLS connection to Kafka failed, in one line an operator can act on.

librdkafka reports every failed check of the broker's certificate as "certificate verify failed:
broker certificate could not be verified, verify that ssl.ca.location is correctly configured
...", whether the CA is unknown, the certificate is another host's or it expired; and a client
certificate the broker refused only as a TLS alert ("certificate unknown", "bad certificate").
After such an error lag-exporter looks once itself, with Python's ssl module and the same CA and
hostname check, and reads the client certificate it sent, to say which it was.
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
from collections.abc import Mapping

# librdkafka's texts for the two kinds of failure (librdkafka 2.16 with OpenSSL 3).
SERVER_CERT_REJECTED = "certificate verify failed"
CLIENT_CERT_ALERTS = ("alert bad certificate", "alert certificate unknown",
                      "alert certificate required", "alert certificate expired",
                      "alert certificate revoked", "alert unknown ca",
                      "alert unsupported certificate")
PROBE_TIMEOUT_S = 3.0
# OpenSSL's X509_V_ERR_* codes, as Python's SSLCertVerificationError.verify_code gives them.
CERT_HAS_EXPIRED = 10
CERT_NOT_YET_VALID = 9
HOSTNAME_MISMATCH = 62
IP_ADDRESS_MISMATCH = 64


def is_certain_tls_failure(client_error: str) -> bool:
    """A failure that retrying within the timeout cannot fix: a certificate was refused."""
    lowered = client_error.lower()
    return SERVER_CERT_REJECTED in lowered or any(a in lowered for a in CLIENT_CERT_ALERTS)


def first_broker(bootstrap: str) -> tuple[str, int] | None:
    """(host, port) of the first bootstrap server, e.g. "SSL://kafka1:9093,..." -> kafka1, 9093."""
    first = bootstrap.split(",")[0].strip().rpartition("://")[2]
    host, _, port = first.rpartition(":")
    if not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def explain_tls_failure(bootstrap: str, settings: Mapping[str, str], client_error: str
                        ) -> str | None:
    """One line naming the cause, or None when it cannot be told (then librdkafka's text)."""
    lowered = client_error.lower()
    if SERVER_CERT_REJECTED in lowered:
        return _server_certificate_problem(bootstrap, settings)
    alert = next((a for a in CLIENT_CERT_ALERTS if a in lowered), None)
    if alert is not None:
        return _client_certificate_problem(bootstrap, settings, alert.removeprefix("alert "))
    return None


def _server_certificate_problem(bootstrap: str, settings: Mapping[str, str]) -> str | None:
    broker = first_broker(bootstrap)
    if broker is None:
        return None
    host, port = broker
    context = ssl.create_default_context(cadata=settings.get("ssl.ca.pem") or None)
    context.check_hostname = settings.get("ssl.endpoint.identification.algorithm") != "none"
    try:
        with socket.create_connection(broker, timeout=PROBE_TIMEOUT_S) as sock, \
                context.wrap_socket(sock, server_hostname=host):
            return None  # accepted now: say what librdkafka said
    except ssl.SSLCertVerificationError as error:
        code, reason = error.verify_code, error.verify_message
    except OSError:
        return None
    where = f"Kafka at {host}:{port}"
    if code in (HOSTNAME_MISMATCH, IP_ADDRESS_MISMATCH):
        names = _server_names(broker)
        shown = f"for {', '.join(names)}" if names else "for another host"
        return (f"{where}: the broker's TLS certificate is {shown}, not {host} (hostname "
                "verification); connect by a name the certificate lists, or set "
                "ssl.endpoint.identification.algorithm= (empty) to turn the check off")
    if code in (CERT_HAS_EXPIRED, CERT_NOT_YET_VALID):
        return f"{where}: the broker's TLS certificate is not valid now ({reason})"
    return (f"{where}: the broker's TLS certificate is not signed by a CA in the truststore "
            f"(ssl.truststore.location / ssl.truststore.certificates): {reason}")


def _server_names(broker: tuple[str, int]) -> list[str]:
    """The DNS names and IP addresses the broker's certificate is for (fetched unverified)."""
    from cryptography import x509

    try:
        pem = ssl.get_server_certificate(broker, timeout=PROBE_TIMEOUT_S)
        cert = x509.load_pem_x509_certificate(pem.encode())
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return []
    return [*names.get_values_for_type(x509.DNSName),
            *(str(ip) for ip in names.get_values_for_type(x509.IPAddress))]


def _client_certificate_problem(bootstrap: str, settings: Mapping[str, str], alert: str) -> str:
    where = f"Kafka at {bootstrap}"
    chain = settings.get("ssl.certificate.pem")
    if not chain:
        return (f"{where} wants a TLS client certificate (TLS alert: {alert}) and none is "
                "configured; set ssl.keystore.location (PKCS12 or PEM) or ssl.keystore.key "
                "and ssl.keystore.certificate.chain")
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(chain.encode())
    except ValueError:
        return f"{where} refused the TLS client certificate (TLS alert: {alert})"
    subject = cert.subject.rfc4514_string()
    now = dt.datetime.now(dt.UTC)
    if cert.not_valid_after_utc < now:
        return (f"{where} refused the TLS client certificate: it expired on "
                f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC ({subject}, from "
                f"ssl.keystore.*; TLS alert: {alert})")
    if cert.not_valid_before_utc > now:
        return (f"{where} refused the TLS client certificate: it is valid only from "
                f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC ({subject}, from "
                f"ssl.keystore.*; TLS alert: {alert})")
    return (f"{where} refused the TLS client certificate {subject} (TLS alert: {alert}); is it "
            "issued by a CA the broker trusts?")
