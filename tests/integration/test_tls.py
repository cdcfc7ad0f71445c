"""TLS end to end against kafka-source's TLS listeners and elasticsearch-auth over HTTPS.

Every properties file is one an operator would hand to MirrorMaker or kafka-consumer-groups; the
lag lag-exporter reports over a listener equals what kafka-consumer-groups (the real Java tool)
reports with the same file over the same listener. The files are the stack's (stack/tls.py).
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from elasticsearch import Elasticsearch
from helpers import (
    DescribeRow,
    JsonLinesExporter,
    commit,
    create_topic,
    doc_time,
    one_line_error,
    parse_table,
    produce,
    run_exporter,
    wait_for,
)

from stack import tls
from stack.stackctl import Stack

pytestmark = pytest.mark.integration

PARTITIONS = 3


def inline_pem(path: str | Path) -> str:
    """A PEM file as a Java properties value: one line per PEM line, continued with \\n\\."""
    return "\\n\\\n".join(Path(path).read_text().strip().splitlines())


def truststore_pkcs12(stack: Stack) -> str:
    return ("ssl.truststore.type=PKCS12\n"
            f"ssl.truststore.location={stack.tls.path('truststore.p12')}\n"
            f"ssl.truststore.password={stack.tls.store_password}\n")


def truststore_pem(stack: Stack) -> str:
    return f"ssl.truststore.type=PEM\nssl.truststore.location={stack.tls.path('ca.pem')}\n"


def keystore_pkcs12(stack: Stack, name: str = "client") -> str:
    return (f"ssl.keystore.type=PKCS12\nssl.keystore.location={stack.tls.path(name + '.p12')}\n"
            f"ssl.keystore.password={stack.tls.store_password}\n")


def scram(stack: Stack) -> str:
    return (f"sasl.mechanism={stack.sasl_mechanism}\nsasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{stack.sasl_username}" password="{stack.sasl_password}";\n')


@dataclass(frozen=True)
class Case:
    name: str
    bootstrap: Callable[[Stack], str]
    properties: Callable[[Stack, Path], str]


def ssl_listener(s: Stack) -> str:
    return s.tls.ssl_bootstrap


def mtls_listener(s: Stack) -> str:
    return s.tls.mtls_bootstrap


PARITY_CASES = [
    Case("SSL, PKCS12 truststore", ssl_listener,
         lambda s, d: "security.protocol=SSL\n" + truststore_pkcs12(s)),
    Case("SSL, PEM truststore file", ssl_listener,
         lambda s, d: "security.protocol=SSL\n" + truststore_pem(s)),
    Case("mutual TLS, PKCS12 truststore and keystore", mtls_listener,
         lambda s, d: "security.protocol=SSL\n" + truststore_pkcs12(s) + keystore_pkcs12(s)),
    Case("mutual TLS, inline PEM truststore, chain and key", mtls_listener,
         lambda s, d: "security.protocol=SSL\nssl.truststore.type=PEM\nssl.keystore.type=PEM\n"
         f"ssl.truststore.certificates={inline_pem(s.tls.path('ca.pem'))}\n"
         f"ssl.keystore.certificate.chain={inline_pem(s.tls.path('client.pem'))}\n"
         f"ssl.keystore.key={inline_pem(s.tls.path('client-key.pem'))}\n"),
    Case("mutual TLS, PEM keystore file", mtls_listener,
         lambda s, d: "security.protocol=SSL\n" + truststore_pem(s) + "ssl.keystore.type=PEM\n"
         f"ssl.keystore.location={pem_keystore_file(s, d)}\n"),
    Case("SASL_SSL SCRAM-SHA-512, PKCS12 truststore", lambda s: s.tls.sasl_ssl_bootstrap,
         lambda s, d: "security.protocol=SASL_SSL\n" + truststore_pkcs12(s) + scram(s)),
    Case("SSL, another host's certificate, hostname verification off",
         lambda s: s.tls.otherhost_bootstrap,
         lambda s, d: "security.protocol=SSL\n" + truststore_pem(s)
         + "ssl.endpoint.identification.algorithm=\n"),
]


def pem_keystore_file(stack: Stack, directory: Path) -> Path:
    """Java's PEM keystore file: the certificate chain and the key in one file."""
    path = directory / "client-keystore.pem"
    path.write_text(Path(stack.tls.path("client.pem")).read_text()
                    + Path(stack.tls.path("client-key.pem")).read_text())
    return path


@pytest.fixture(scope="module")
def lagging(stack: Stack) -> tuple[str, str]:
    """(topic, group): a group with lag 5, 3, 1 on three partitions, no member."""
    name = f"tls{os.urandom(5).hex()}"
    topic, group = f"{name}.topic", f"{name}-group"
    create_topic(stack.source_bootstrap, topic, PARTITIONS)
    produce(stack.source_bootstrap, topic, {0: 6, 1: 5, 2: 4})
    commit(stack.source_bootstrap, group, {(topic, 0): 1, (topic, 1): 2, (topic, 2): 3})
    return topic, group


def described(stack: Stack, bootstrap: str, properties: Path, group: str) -> list[DescribeRow]:
    """`kafka-consumer-groups --describe` over that listener with that properties file."""
    done = stack.run_tool("kafka-consumer-groups", "--bootstrap-server", bootstrap,
                          "--command-config", str(properties), "--describe", "--group", group)
    assert done.returncode == 0, done.stderr
    assert "Error:" not in done.stdout, done.stdout
    return [DescribeRow(c[0], c[1], int(c[2]), int(c[3]), int(c[4]), int(c[5]))
            for c in map(str.split, done.stdout.splitlines()) if len(c) >= 6 and c[0] == group]


@pytest.mark.parametrize("case", PARITY_CASES, ids=[c.name for c in PARITY_CASES])
def test_lag_equals_kafka_consumer_groups_over_the_same_listener(
    stack: Stack, lagging: tuple[str, str], case: Case, tmp_path: Path
) -> None:
    _, group = lagging
    properties = tmp_path / "client.properties"
    properties.write_text(case.properties(stack, tmp_path))
    bootstrap = case.bootstrap(stack)
    done = run_exporter("snapshot", "--bootstrap-server", bootstrap,
                        "--command-config", str(properties), "--group", group)
    assert done.returncode == 0, done.stderr
    ours = parse_table(done.stdout)
    assert [row.lag for row in sorted(ours)] == [5, 3, 1]
    assert sorted(ours) == sorted(described(stack, bootstrap, properties, group))


def expired_on(stack: Stack) -> str:
    cert = x509.load_pem_x509_certificate(Path(stack.tls.path("client-expired.pem")).read_bytes())
    return f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M}"


@dataclass(frozen=True)
class Failure:
    name: str
    bootstrap: Callable[[Stack], str]
    properties: Callable[[Stack], str]
    exit_code: int
    line: Callable[[Stack, str], str]
    """The exact stderr line, given the stack and the properties file's path."""


FAILURES = [
    Failure("wrong CA", ssl_listener,
            lambda s: "security.protocol=SSL\nssl.truststore.type=PEM\n"
            f"ssl.truststore.location={s.tls.path('other-ca.pem')}\n", 1,
            lambda s, p: f"lag-exporter: error: Kafka at {s.tls.ssl_bootstrap}: the broker's TLS "
            "certificate is not signed by a CA in the truststore (ssl.truststore.location / "
            "ssl.truststore.certificates): self-signed certificate in certificate chain"),
    Failure("certificate for another host", lambda s: s.tls.otherhost_bootstrap,
            lambda s: "security.protocol=SSL\n" + truststore_pkcs12(s), 1,
            lambda s, p: f"lag-exporter: error: Kafka at {s.tls.otherhost_bootstrap}: the "
            f"broker's TLS certificate is for {s.tls.other_host}, not 127.0.0.1 (hostname "
            "verification); connect by a name the certificate lists, or set "
            "ssl.endpoint.identification.algorithm= (empty) to turn the check off"),
    Failure("expired client certificate", mtls_listener,
            lambda s: "security.protocol=SSL\n" + truststore_pkcs12(s)
            + keystore_pkcs12(s, "client-expired"), 1,
            lambda s, p: f"lag-exporter: error: Kafka at {s.tls.mtls_bootstrap} refused the TLS "
            f"client certificate: it expired on {expired_on(s)} UTC (CN=lagexp-expired,"
            "O=lag-exporter tests, from ssl.keystore.*; TLS alert: certificate unknown)"),
    Failure("no client certificate for mutual TLS", mtls_listener,
            lambda s: "security.protocol=SSL\n" + truststore_pem(s), 1,
            lambda s, p: f"lag-exporter: error: Kafka at {s.tls.mtls_bootstrap} wants a TLS "
            "client certificate (TLS alert: bad certificate) and none is configured; set "
            "ssl.keystore.location (PKCS12 or PEM) or ssl.keystore.key and "
            "ssl.keystore.certificate.chain"),
    Failure("wrong keystore password", mtls_listener,
            lambda s: "security.protocol=SSL\n" + truststore_pem(s)
            + keystore_pkcs12(s).replace(s.tls.store_password, "wrong-keystore-pass-4"), 1,
            lambda s, p: f"lag-exporter: error: {p}: ssl.keystore.password: wrong password for "
            "the PKCS12 keystore named by ssl.keystore.location (or the file is damaged); the "
            "password is not shown"),
    Failure("wrong truststore password", ssl_listener,
            lambda s: "security.protocol=SSL\n"
            + truststore_pkcs12(s).replace(s.tls.store_password, "wrong-truststore-pass-5"), 1,
            lambda s, p: f"lag-exporter: error: {p}: ssl.truststore.password: wrong password "
            f"for the PKCS12 truststore '{s.tls.path('truststore.p12')}' (or the file is "
            "damaged); set ssl.truststore.password to its password"),
]


@pytest.mark.parametrize("failure", FAILURES, ids=[f.name for f in FAILURES])
def test_tls_failure_is_one_line_saying_which(
    stack: Stack, lagging: tuple[str, str], failure: Failure, tmp_path: Path
) -> None:
    properties = tmp_path / "client.properties"
    properties.write_text(failure.properties(stack))
    started = time.monotonic()
    done = run_exporter("snapshot", "--bootstrap-server", failure.bootstrap(stack),
                        "--command-config", str(properties), "--group", lagging[1],
                        "--timeout", "30")
    assert time.monotonic() - started < 15  # said at once, not after the 30 s timeout
    assert done.returncode == failure.exit_code, done.stderr
    assert one_line_error(done) == failure.line(stack, str(properties))
    for password in (stack.tls.store_password, "wrong-keystore-pass-4", "wrong-truststore-pass-5"):
        assert password not in done.stdout + done.stderr


# ---------------------------------------------------------------- Elasticsearch over HTTPS


def es_auth_args(stack: Stack, index: str) -> list[str]:
    return ["--es-url", stack.es_auth_url, "--es-username", stack.es_auth_username,
            "--es-index", index]


def es_auth_client(stack: Stack) -> Elasticsearch:
    return Elasticsearch(stack.es_auth_url, ca_certs=stack.es_auth_ca_file,
                         basic_auth=(stack.es_auth_username, stack.es_auth_password))


def test_elasticsearch_over_https_with_the_ca_file(
    stack: Stack, lagging: tuple[str, str], unique_name: str
) -> None:
    assert stack.es_auth_url.startswith("https://")
    done = run_exporter("snapshot", "--bootstrap-server", stack.source_bootstrap, "--group",
                        lagging[1], *es_auth_args(stack, unique_name),
                        "--es-ca-file", stack.es_auth_ca_file,
                        env={"LAG_EXPORTER_ES_PASSWORD": stack.es_auth_password})
    assert done.returncode == 0, done.stderr
    client = es_auth_client(stack)
    try:
        client.indices.refresh(index=unique_name)
        assert client.count(index=unique_name)["count"] == 1
        client.indices.delete(index=unique_name)
    finally:
        client.close()


@pytest.mark.parametrize("ca_file", ["other-ca.pem", None], ids=["wrong CA", "no CA file"])
def test_elasticsearch_with_an_untrusted_certificate_is_refused(
    stack: Stack, lagging: tuple[str, str], unique_name: str, ca_file: str | None
) -> None:
    """No fallback to unverified TLS: without the stack's CA the certificate is refused."""
    ca = ["--es-ca-file", stack.tls.path(ca_file)] if ca_file else []
    done = run_exporter("snapshot", "--bootstrap-server", stack.source_bootstrap, "--group",
                        lagging[1], *es_auth_args(stack, unique_name), *ca,
                        env={"LAG_EXPORTER_ES_PASSWORD": stack.es_auth_password})
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [  # one line, the reason TLS gave, what to check
        f"lag-exporter: error: Elasticsearch at {stack.es_auth_url}: TLS refused the server's "
        "certificate (self-signed certificate in certificate chain); check --es-ca-file / "
        "ca_file: the CA there must have signed it"]
    client = es_auth_client(stack)
    try:
        assert not client.indices.exists(index=unique_name)
    finally:
        client.close()


# ---------------------------------------------------------------- certificate rotation


def replace_file(path: Path, data: bytes) -> None:
    """As a deployment tool replaces a file: written aside, then renamed over it."""
    aside = path.with_name(path.name + ".new")
    aside.write_bytes(data)
    aside.replace(path)


def write_client(stack: Stack, directory: Path, name: str, common_name: str,
                 expired: bool = False, password: str = tls.STORE_PASSWORD) -> None:
    """<name>.p12, <name>.pem and <name>-key.pem: a client certificate from the stack's CA;
    the PKCS12 keystore and the PEM key encrypted with `password`."""
    ca = tls.load_ca(stack.tls.dir)
    client = tls.issue_client(ca, common_name, expired)
    tls.write_client_files(directory, ca, name, client, password)
    (directory / f"{name}-key.pem").write_bytes(client.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password.encode())))


def largest_gap(stamps: list[float]) -> float:
    return max(b - a for a, b in itertools.pairwise(stamps))


@pytest.mark.parametrize("mode", ["--config", "--command-config"])
@pytest.mark.parametrize("file_format", ["PKCS12", "PEM"])
def test_rotated_client_certificate_is_used_after_sighup_without_a_gap(
    stack: Stack, lagging: tuple[str, str], tmp_path: Path, file_format: str, mode: str
) -> None:
    """In both ways of configuring a cluster: a config file naming the properties file, or the
    properties file given by flag (no --config)."""
    topic, group = lagging
    live = tmp_path / "live"
    live.mkdir()
    # Passwords of their own (the truststore's is the stack's), searched for in the log below.
    password = "rotation-keystore-pass-8" if file_format == "PKCS12" else "rotation-key-pass-9"
    write_client(stack, tmp_path, "first", "lagexp-first", password=password)
    write_client(stack, tmp_path, "second", "lagexp-second", password=password)
    write_client(stack, tmp_path, "expired", "lagexp-old", expired=True, password=password)
    if file_format == "PKCS12":
        keystore = (f"ssl.keystore.type=PKCS12\nssl.keystore.location={live / 'client.p12'}\n"
                    f"ssl.keystore.password={password}\nssl.key.password={password}\n")
    else:  # the key encrypted, as ssl.key.password says
        keystore = (f"ssl.keystore.type=PEM\nssl.keystore.location={live / 'keystore.pem'}\n"
                    f"ssl.key.password={password}\n")

    def install(name: str) -> None:
        if name == "damaged":  # e.g. a half-written file: the reload is rejected
            replace_file(live / ("client.p12" if file_format == "PKCS12" else "keystore.pem"),
                         b"\x30\x82\x05")
        elif file_format == "PKCS12":
            replace_file(live / "client.p12", (tmp_path / f"{name}.p12").read_bytes())
        else:
            replace_file(live / "keystore.pem", (tmp_path / f"{name}.pem").read_bytes()
                         + (tmp_path / f"{name}-key.pem").read_bytes())

    install("first")
    properties = tmp_path / "client.properties"
    properties.write_text("security.protocol=SSL\n" + truststore_pkcs12(stack) + keystore)
    if mode == "--config":
        config = tmp_path / "lag-exporter.toml"
        config.write_text(f'interval = 1\n[[cluster]]\nname = "tls"\nbootstrap_servers = '
                          f'"{stack.tls.mtls_bootstrap}"\ncommand_config = "{properties}"\n'
                          f'groups = ["{group}"]\n')
        cluster = ["--config", str(config)]
    else:
        cluster = ["--bootstrap-server", stack.tls.mtls_bootstrap, "--command-config",
                   str(properties), "--group", group, "--interval", "1"]
    with JsonLinesExporter(*cluster, "--summary-interval", "3600") as exporter:
        def stamps() -> list[float]:
            return [doc_time(d) for d in exporter.documents(group) if d["topic"] == topic]

        wait_for(lambda: len(stamps()) >= 4, 60, "documents over mutual TLS")
        # No gap from here on: from the last two documents before the first SIGHUP to the
        # end, both reloads included (how fast a fresh watch starts is not this test's claim).
        measured_from = stamps()[-2]
        install("damaged")
        exporter.process.send_signal(signal.SIGHUP)
        wait_for(lambda: any("config reload rejected" in line for line in exporter.log()), 20,
                 "the rejected reload")
        install("second")
        reloaded_at = time.time()
        exporter.process.send_signal(signal.SIGHUP)
        wait_for(lambda: any("config reloaded" in line for line in exporter.log()), 20,
                 "the reload")
        # The old client samples until the new one has answered once (fleet.py).
        wait_for(lambda: any("now sampled with the reloaded connection settings" in line
                             for line in exporter.log()), 30, "the new client taking over")
        switched_at = time.time()
        wait_for(lambda: len([t for t in stamps() if t > switched_at]) >= 3, 30,
                 "documents after the rotation")
        # Every tick has its document, through the reloads (interval 1 s; a skipped tick: 2 s).
        through_reloads = [t for t in stamps() if t >= measured_from]
        gaps = [(round(a - reloaded_at, 2), round(b - a, 2))
                for a, b in itertools.pairwise(through_reloads)]
        assert largest_gap(through_reloads) < 1.5, (gaps, exporter.log())
        assert exporter.documents(group)[-1]["lag_total"] == 9
        # The files are really read again: an expired certificate now fails the group.
        install("expired")
        exporter.process.send_signal(signal.SIGHUP)
        wait_for(lambda: any("expired on" in line for line in exporter.log()), 30,
                 "the expired certificate's refusal")
    rejected = [line for line in exporter.log() if "config reload rejected" in line]
    assert len(rejected) == 1 and "client.properties: ssl.keystore" in rejected[0], rejected
    refusals = [line for line in exporter.log() if "expired on" in line]
    assert "CN=lagexp-old" in refusals[0], refusals
    assert sum("config reloaded" in line for line in exporter.log()) == 2
    for secret in (password, stack.tls.store_password):  # through both reloads and a refusal
        assert not [line for line in exporter.log() if secret in line]


# ---------------------------------------------------------------- secrets


def test_keystore_and_truststore_passwords_and_keys_never_printed(
    stack: Stack, lagging: tuple[str, str], tmp_path: Path, unique_name: str
) -> None:
    """Real commands, debug logging, distinct secrets in every place; everything printed is
    searched for them."""
    ca = tls.load_ca(stack.tls.dir)
    keystore_password, truststore_password = "kspass-secret-6", "tspass-secret-7"
    client = tls.issue_client(ca, "lagexp-secrets")
    tls.write_client_files(tmp_path, ca, "client", client, keystore_password)
    (tmp_path / "trust.p12").write_bytes(tls.truststore_p12(ca.cert, truststore_password))
    key_body = (tmp_path / "client-key.pem").read_text().splitlines()[1]
    properties = tmp_path / "client.properties"
    properties.write_text(
        f"security.protocol=SASL_SSL\nssl.truststore.type=PKCS12\n"
        f"ssl.truststore.location={tmp_path / 'trust.p12'}\n"
        f"ssl.truststore.password={truststore_password}\nssl.keystore.type=PKCS12\n"
        f"ssl.keystore.location={tmp_path / 'client.p12'}\n"
        f"ssl.keystore.password={keystore_password}\nssl.key.password={keystore_password}\n"
        + scram(stack))
    config = tmp_path / "c.toml"
    config.write_text(f"""
[elasticsearch]
urls = ["{stack.es_auth_url}"]
index = "{unique_name}"
username = "{stack.es_auth_username}"
password = "{stack.es_auth_password}"
ca_file = "{stack.es_auth_ca_file}"
[[cluster]]
name = "src"
bootstrap_servers = "{stack.tls.sasl_ssl_bootstrap}"
command_config = "{properties}"
groups = ["{lagging[1]}"]
""")
    outputs = [run_exporter("--log-level", "debug", command, "--config", str(config))
               for command in ("snapshot", "check-config")]
    wrong = properties.read_text().replace(keystore_password, "wrong-" + keystore_password)
    (tmp_path / "wrong.properties").write_text(wrong)
    outputs.append(run_exporter("--debug", "snapshot", "--bootstrap-server",
                                stack.tls.sasl_ssl_bootstrap, "--command-config",
                                str(tmp_path / "wrong.properties"), "--group", lagging[1]))
    assert [done.returncode for done in outputs] == [0, 0, 1], outputs[0].stderr
    assert "Traceback" in outputs[2].stderr  # --debug: the traceback, still without secrets
    assert "wrong password for the PKCS12 keystore" in outputs[2].stderr
    printed = "".join(done.stdout + done.stderr for done in outputs)
    for secret in (keystore_password, truststore_password, key_body, stack.sasl_password,
                   stack.es_auth_password):
        assert secret not in printed
    es = es_auth_client(stack)
    try:
        es.indices.delete(index=unique_name)
    finally:
        es.close()


def test_the_stack_certificates_are_valid_now(stack: Stack) -> None:
    """The fixture's certificates: the server's valid, the expired one expired (else the
    failure tests above would test something else)."""
    now = dt.datetime.now(dt.UTC)
    server = x509.load_pem_x509_certificate(Path(stack.tls.path("server.pem")).read_bytes())
    expired = x509.load_pem_x509_certificate(
        Path(stack.tls.path("client-expired.pem")).read_bytes())
    assert server.not_valid_before_utc < now < server.not_valid_after_utc
    assert expired.not_valid_after_utc < now
