"""Unit tests for lag_exporter.kafka_properties (no broker needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lag_exporter.errors import ConfigError
from lag_exporter.kafka_properties import (
    IGNORED_KEYS,
    load_command_config,
    parse_java_properties,
    to_librdkafka,
)

PLAIN = "org.apache.kafka.common.security.plain.PlainLoginModule"
SCRAM = "org.apache.kafka.common.security.scram.ScramLoginModule"
SECRET = "s3cr3t-Value"
PEM_CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
PEM_KEY = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"
HTTPS = {"ssl.endpoint.identification.algorithm": "https"}  # on by default under TLS, as in Java


def sasl(jaas: str, mechanism: str | None = "PLAIN") -> dict[str, str]:
    props = {"security.protocol": "SASL_SSL", "sasl.jaas.config": jaas}
    if mechanism is not None:
        props["sasl.mechanism"] = mechanism
    return props


# --------------------------------------------------------------------------- syntax


def test_separators_equals_colon_and_whitespace() -> None:
    text = "a=1\nb: 2\nc 3\nd\t=\t4\ne = = 5\nf\n"
    assert parse_java_properties(text) == {
        "a": "1",
        "b": "2",
        "c": "3",
        "d": "4",
        "e": "= 5",
        "f": "",
    }


def test_comments_blank_lines_and_leading_whitespace() -> None:
    text = "# comment\n! bang comment\n\n   \n   key = value\n\t# indented comment\n"
    assert parse_java_properties(text) == {"key": "value"}


def test_comment_line_ending_in_backslash_does_not_continue() -> None:
    assert parse_java_properties("# note \\\nkey=value\n") == {"key": "value"}


def test_value_keeps_trailing_whitespace() -> None:
    assert parse_java_properties("key=value  \n") == {"key": "value  "}


def test_line_continuation_strips_leading_whitespace() -> None:
    text = "key=one, \\\n     two, \\\n\t three\nnext=x\n"
    assert parse_java_properties(text) == {"key": "one, two, three", "next": "x"}


def test_even_number_of_backslashes_does_not_continue() -> None:
    assert parse_java_properties("a=x\\\\\nb=y\n") == {"a": "x\\", "b": "y"}


def test_continuation_crlf_and_cr_line_endings() -> None:
    assert parse_java_properties("a=1\\\r\n  2\r\nb=3\rc=4") == {"a": "12", "b": "3", "c": "4"}


def test_blank_continuation_line_ends_the_value() -> None:
    assert parse_java_properties("a=1\\\n\nb=2\n") == {"a": "1", "b": "2"}


def test_backslash_at_end_of_file_is_dropped() -> None:
    assert parse_java_properties("a=1\\") == {"a": "1"}


def test_continued_line_starting_with_hash_is_not_a_comment() -> None:
    assert parse_java_properties("a=1\\\n  #2\n") == {"a": "1#2"}


def test_unicode_and_character_escapes() -> None:
    text = "u=caf\\u00e9\\u0041\nc=a\\tb\\nc\\rd\\fe\nother=\\q\\\\\n"
    assert parse_java_properties(text) == {
        "u": "caféA",
        "c": "a\tb\nc\rd\fe",
        "other": "q\\",
    }


def test_escaped_separators_and_spaces_in_keys() -> None:
    text = "a\\=b=1\nc\\:d:2\ne\\ f 3\n\\#notcomment=4\n"
    assert parse_java_properties(text) == {"a=b": "1", "c:d": "2", "e f": "3", "#notcomment": "4"}


def test_later_key_wins() -> None:
    assert parse_java_properties("a=1\na=2\n") == {"a": "2"}


@pytest.mark.parametrize("bad", ["a=\\u12", "a=\\u12zz", "a=x\\uGHIJ"])
def test_malformed_unicode_escape_names_line_and_key(bad: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_java_properties("ok=1\n# c\n" + bad + "\n", "client.properties")
    message = str(info.value)
    assert message.startswith("client.properties: line 3: malformed \\uXXXX escape")
    assert "value of a" in message
    assert "\n" not in message


def test_malformed_unicode_escape_in_key_reports_its_starting_line() -> None:
    with pytest.raises(ConfigError, match=r"^f: line 2: malformed .* in a key"):
        parse_java_properties("a=1\nk\\u1=\\\n  x\n", "f")


# --------------------------------------------------------------------------- pass-through etc.


def test_pass_through_and_rename() -> None:
    props = {
        "bootstrap.servers": " b1:9092,b2:9092 ",
        "client.id": "lag",
        "client.rack": "rack-1",
        "metadata.max.age.ms": "60000",
        "reconnect.backoff.ms": "50",
        "reconnect.backoff.max.ms": "1000",
        "retry.backoff.ms": "100",
        "retry.backoff.max.ms": "1000",
        "socket.connection.setup.timeout.ms": "10000",
        "connections.max.idle.ms": "540000",
        "client.dns.lookup": "use_all_dns_ips",
        "request.timeout.ms": "30000",
    }
    settings, warnings = to_librdkafka(props)
    expected = {k: v.strip() for k, v in props.items() if k != "request.timeout.ms"}
    expected["socket.timeout.ms"] = "30000"
    assert settings == expected
    assert warnings == []


def test_empty_pass_through_value_means_default() -> None:
    assert to_librdkafka({"client.rack": "", "client.id": "  "}) == ({}, [])


@pytest.mark.parametrize(
    ("key", "value"),
    [("retry.backoff.ms", "0"), ("request.timeout.ms", "600000"), ("metadata.max.age.ms", "x")],
)
def test_integer_outside_librdkafka_range_is_error(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=rf"^f: {key}: "):
        to_librdkafka({key: value}, "f")


def test_consumer_and_producer_keys_dropped_silently() -> None:
    props = {
        "bootstrap.servers": "b:9092",
        "group.id": "mm2",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": "false",
        "key.deserializer": "org.apache.kafka.common.serialization.ByteArrayDeserializer",
        "value.deserializer": "org.apache.kafka.common.serialization.ByteArrayDeserializer",
        "max.poll.records": "500",
        "fetch.min.bytes": "1",
        "fetch.max.wait.ms": "500",
        "partition.assignment.strategy": "x",
        "session.timeout.ms": "45000",
        "heartbeat.interval.ms": "3000",
        "isolation.level": "read_committed",
        "exclude.internal.topics": "true",
        "auto.commit.interval.ms": "5000",
        "acks": "all",
    }
    assert to_librdkafka(props) == ({"bootstrap.servers": "b:9092"}, [])


def test_unknown_and_java_only_keys_warn_once_each_naming_the_key() -> None:
    props = {
        "security.protocol": "SSL",
        "ssl.protocol": "TLSv1.3",
        "ssl.enabled.protocols": "TLSv1.2,TLSv1.3",
        "ssl.truststore.type": "PEM",
        "ssl.keystore.type": "PKCS12",
        "ssl.trustmanager.algorithm": "PKIX",
        "ssl.keymanager.algorithm": "SunX509",
        "interceptor.classes": "com.example.Interceptor",
        "some.mirrormaker.only.key": "42",
    }
    settings, warnings = to_librdkafka(props, "mm.properties")
    assert settings == {"security.protocol": "SSL", **HTTPS}
    warned = [w.split(": ")[1] for w in warnings]
    assert warned == [
        "ssl.protocol",
        "ssl.enabled.protocols",
        "ssl.trustmanager.algorithm",
        "ssl.keymanager.algorithm",
        "interceptor.classes",
        "some.mirrormaker.only.key",
    ]
    assert all(w.startswith("mm.properties: ") and "\n" not in w for w in warnings)
    assert not any("42" in w or "TLSv1" in w for w in warnings)


def test_sasl_login_tuning_keys_warn() -> None:
    props = sasl(f'{PLAIN} required username="u" password="p";')
    props["sasl.login.refresh.window.factor"] = "0.8"
    props["sasl.login.retry.backoff.ms"] = "100"
    _, warnings = to_librdkafka(props)
    assert [w.split(": ")[1] for w in warnings] == [
        "sasl.login.refresh.window.factor",
        "sasl.login.retry.backoff.ms",
    ]


@pytest.mark.parametrize(
    "key",
    [
        "sasl.client.callback.handler.class",
        "sasl.login.callback.handler.class",
        "sasl.login.class",
        "ssl.engine.factory.class",
    ],
)
def test_custom_handler_classes_are_errors(key: str) -> None:
    props = sasl(f'{PLAIN} required username="u" password="p";')
    props[key] = "com.example.Custom"
    with pytest.raises(ConfigError, match=rf"^f: {key}: "):
        to_librdkafka(props, "f")


def test_empty_handler_class_means_default() -> None:
    props = sasl(f'{PLAIN} required username="u" password="p";')
    props["sasl.client.callback.handler.class"] = ""
    settings, _ = to_librdkafka(props)
    assert settings["sasl.username"] == "u"


@pytest.mark.parametrize("key", ["ssl.unknown.thing", "sasl.something.new"])
def test_unhandled_security_keys_are_errors(key: str) -> None:
    props = sasl(f'{PLAIN} required username="u" password="p";')
    props[key] = "x"
    with pytest.raises(ConfigError, match=rf"^f: {key}: security setting"):
        to_librdkafka(props, "f")


def test_security_keys_ignored_with_warning_when_protocol_does_not_use_them() -> None:
    props = {
        "ssl.truststore.location": "/does/not/exist.jks",
        "sasl.jaas.config": "com.sun.security.auth.module.Krb5LoginModule required;",
    }
    settings, warnings = to_librdkafka(props, "f")
    assert settings == {}
    assert [w.split(": ")[1] for w in warnings] == ["ssl.truststore.location", "sasl.jaas.config"]
    assert all("PLAINTEXT" in w for w in warnings)


def test_placeholder_is_error_naming_key() -> None:
    props = {"ssl.keystore.password": "${file:/etc/kafka/secrets.properties:keystore.password}"}
    with pytest.raises(ConfigError, match=r"^f: ssl\.keystore\.password: .*placeholder"):
        to_librdkafka(props, "f")


@pytest.mark.parametrize("key", ["config.providers", "config.providers.file.class"])
def test_config_providers_is_error(key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^f: {key}: config providers"):
        to_librdkafka({key: "file"}, "f")


def test_unknown_security_protocol_is_error() -> None:
    with pytest.raises(ConfigError, match=r"^f: security\.protocol: unknown"):
        to_librdkafka({"security.protocol": "TLS"}, "f")


def test_security_protocol_is_case_insensitive() -> None:
    assert to_librdkafka({"security.protocol": "ssl"})[0] == {"security.protocol": "SSL", **HTTPS}


# --------------------------------------------------------------------------- SASL / JAAS


def test_plain_jaas() -> None:
    settings, warnings = to_librdkafka(sasl(f'{PLAIN} required username="alice" password="pw";'))
    assert settings == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
        "sasl.username": "alice",
        "sasl.password": "pw",
        "ssl.endpoint.identification.algorithm": "https",
    }
    assert warnings == []


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_scram_jaas_with_unquoted_tokens_and_other_flag(mechanism: str) -> None:
    jaas = f"{SCRAM} optional username=bob password=pa.ss-w_rd$1 ;"
    settings, _ = to_librdkafka(sasl(jaas, mechanism))
    assert settings["sasl.mechanism"] == mechanism
    assert settings["sasl.username"] == "bob"
    assert settings["sasl.password"] == "pa.ss-w_rd$1"


def test_multiline_continued_jaas_with_escaped_quotes(tmp_path: Path) -> None:
    # In the file: password="p\\\"w\\\\d" -> Properties -> password="p\"w\\d" -> JAAS -> p"w\d
    text = (
        "security.protocol=SASL_SSL\n"
        "sasl.mechanism=SCRAM-SHA-512\n"
        "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required \\\n"
        '    username="mirror" \\\n'
        '    password="p\\\\\\"w\\\\\\\\d";\n'
    )
    path = tmp_path / "consumer.properties"
    path.write_text(text, encoding="utf-8")
    settings, warnings = load_command_config(path)
    assert settings["sasl.username"] == "mirror"
    assert settings["sasl.password"] == 'p"w\\d'
    assert warnings == []


def test_jaas_single_quotes_comments_and_escapes() -> None:
    jaas = f"/* c */ {PLAIN} REQUIRED // line\n username='a b' password=\"x\\ty\\101\";"
    settings, _ = to_librdkafka(sasl(jaas))
    assert settings["sasl.username"] == "a b"
    assert settings["sasl.password"] == "x\tyA"


def test_jaas_unknown_option_warns_and_tokenauth_errors() -> None:
    _, warnings = to_librdkafka(sasl(f'{PLAIN} required username="u" password="p" extra="1";'))
    assert len(warnings) == 1
    assert warnings[0].startswith("<properties>: sasl.jaas.config: an option other than")
    assert "extra" not in warnings[0]
    with pytest.raises(ConfigError, match="tokenauth"):
        to_librdkafka(
            sasl(f'{SCRAM} required username="u" password="p" tokenauth="true";', "SCRAM-SHA-256")
        )


@pytest.mark.parametrize(
    "module",
    [
        "com.sun.security.auth.module.Krb5LoginModule",
        "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule",
        "software.amazon.msk.auth.iam.IAMLoginModule",
    ],
)
def test_unsupported_login_module_is_error_naming_module(module: str) -> None:
    with pytest.raises(ConfigError) as info:
        to_librdkafka(sasl(f'{module} required useKeyTab=true password="{SECRET}";'), "f")
    message = str(info.value)
    assert message.startswith(f"f: sasl.jaas.config: login module {module} is not supported")
    assert SECRET not in message


def test_missing_mechanism_with_plain_jaas_is_error() -> None:
    with pytest.raises(ConfigError, match=r"^f: sasl\.mechanism: missing .*sasl\.mechanism=PLAIN"):
        to_librdkafka(sasl(f'{PLAIN} required username="u" password="p";', None), "f")


def test_gssapi_mechanism_with_plain_jaas_is_error() -> None:
    with pytest.raises(ConfigError, match="GSSAPI"):
        to_librdkafka(sasl(f'{PLAIN} required username="u" password="p";', "GSSAPI"))


def test_plain_mechanism_without_jaas_is_error() -> None:
    with pytest.raises(ConfigError, match=r"^f: sasl\.jaas\.config: missing"):
        to_librdkafka({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN"}, "f")


def test_sasl_without_mechanism_or_jaas_is_gssapi_with_warning() -> None:
    settings, warnings = to_librdkafka({"security.protocol": "SASL_PLAINTEXT"})
    assert settings["sasl.mechanism"] == "GSSAPI"
    assert len(warnings) == 1
    assert "GSSAPI" in warnings[0]


def test_oauthbearer_mechanism_is_error() -> None:
    with pytest.raises(ConfigError, match="OAUTHBEARER"):
        to_librdkafka({"security.protocol": "SASL_SSL", "sasl.mechanism": "OAUTHBEARER"})


@pytest.mark.parametrize(
    ("jaas", "fragment"),
    [
        (f'{PLAIN} required username="u" password="p"', "not terminated"),
        (f'{PLAIN} username="u" password="p";', "control flag"),
        (f'{PLAIN} required username="u";', "no password"),
        (f'{PLAIN} required username="u" password=;', "password has no value"),
        (f'{PLAIN} required username="u" oops;', "an option .name not shown. has no value"),
        (f'{PLAIN} required username="u" password="p;', "not closed"),
        (f'{PLAIN} required username="u" password="p"; {PLAIN} required;', "2 login modules"),
        ('"quoted" required;', "login module class name"),
    ],
)
def test_malformed_jaas(jaas: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        to_librdkafka(sasl(jaas))


# --------------------------------------------------------------------------- TLS


def write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_pem_truststore_by_content(tmp_path: Path) -> None:
    ca = write(tmp_path, "ca.crt", b"Bag Attributes\n" + PEM_CERT.encode())
    props = {
        "security.protocol": "SSL",
        "ssl.truststore.location": ca,
        "ssl.truststore.password": "changeit",
    }
    settings, warnings = to_librdkafka(props)
    # read now (reload sees a replaced file), the certificates only
    assert settings == {"security.protocol": "SSL", "ssl.ca.pem": PEM_CERT, **HTTPS}
    assert len(warnings) == 1
    assert "ssl.truststore.password: ignored, only a PKCS12 truststore" in warnings[0]
    assert "changeit" not in warnings[0]


@pytest.mark.parametrize(
    ("name", "data", "kind"),
    [
        ("trust.jks", b"\xfe\xed\xfe\xed\x00\x00\x00\x02", "a JKS"),
        ("trust.bin", b"garbage", "neither a PEM nor a PKCS12"),
    ],
)
def test_non_pem_truststore_is_error_with_conversion_advice(
    tmp_path: Path, name: str, data: bytes, kind: str
) -> None:
    path = write(tmp_path, name, data)
    props = {"security.protocol": "SSL", "ssl.truststore.location": path}
    with pytest.raises(ConfigError) as info:
        to_librdkafka(props, "f")
    message = str(info.value)
    assert message.startswith("f: ssl.truststore.location: ")
    assert kind in message
    assert "keytool -exportcert -rfc" in message
    assert "ssl.truststore.type=PEM" in message


def test_missing_truststore_file_is_error_naming_path(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.pem")
    props = {"security.protocol": "SSL", "ssl.truststore.location": missing}
    with pytest.raises(ConfigError, match="cannot read") as info:
        to_librdkafka(props, "f")
    assert missing in str(info.value)


def test_inline_truststore_certificates() -> None:
    props = {"security.protocol": "SSL", "ssl.truststore.certificates": PEM_CERT}
    assert to_librdkafka(props)[0]["ssl.ca.pem"] == PEM_CERT.strip()


def test_damaged_pkcs12_keystore_is_error_not_showing_the_password(tmp_path: Path) -> None:
    p12 = write(tmp_path, "client.keystore", b"\x30\x82\x0a\x00")
    props = {
        "security.protocol": "SSL",
        "ssl.keystore.location": p12,
        "ssl.keystore.type": "PKCS12",
        "ssl.keystore.password": "kspw",
    }
    with pytest.raises(ConfigError, match=r"^<properties>: ssl\.keystore\.password: wrong "
                       r"password .* \(or the file is damaged\)") as raised:
        to_librdkafka(props)
    assert "kspw" not in str(raised.value)


def test_pkcs12_keystore_without_password_is_error(tmp_path: Path) -> None:
    p12 = write(tmp_path, "client.p12", b"\x30\x82\x0a\x00")
    props = {"security.protocol": "SSL", "ssl.keystore.location": p12}
    with pytest.raises(ConfigError, match=r"^f: ssl\.keystore\.password: missing"):
        to_librdkafka(props, "f")


def test_jks_keystore_is_error_with_conversion_advice(tmp_path: Path) -> None:
    jks = write(tmp_path, "client.jks", b"\xfe\xed\xfe\xed\x00")
    props = {"security.protocol": "SSL", "ssl.keystore.location": jks, "ssl.keystore.password": "x"}
    with pytest.raises(ConfigError, match="keytool -importkeystore"):
        to_librdkafka(props)


def test_pem_keystore_file_and_inline(tmp_path: Path) -> None:
    pem = write(tmp_path, "client.pem", (PEM_KEY + PEM_CERT).encode())
    props = {
        "security.protocol": "SSL",
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": pem,
        "ssl.key.password": "kpw",
    }
    settings, _ = to_librdkafka(props)
    assert settings["ssl.certificate.pem"] == PEM_CERT
    assert settings["ssl.key.pem"] == PEM_KEY
    assert settings["ssl.key.password"] == "kpw"

    inline = {
        "security.protocol": "SSL",
        "ssl.keystore.type": "PEM",
        "ssl.keystore.key": PEM_KEY,
        "ssl.keystore.certificate.chain": PEM_CERT,
        "ssl.key.password": "kpw",
    }
    settings, _ = to_librdkafka(inline)
    assert settings["ssl.key.pem"] == PEM_KEY.strip()
    assert settings["ssl.certificate.pem"] == PEM_CERT.strip()
    assert settings["ssl.key.password"] == "kpw"


def test_endpoint_identification_and_cipher_suites() -> None:
    base = {"security.protocol": "SSL"}
    on = to_librdkafka({**base, "ssl.endpoint.identification.algorithm": "HTTPS"})[0]
    assert on["ssl.endpoint.identification.algorithm"] == "https"
    off = to_librdkafka({**base, "ssl.endpoint.identification.algorithm": ""})[0]
    assert off["ssl.endpoint.identification.algorithm"] == "none"
    ciphers = "ECDHE-RSA-AES256-GCM-SHA384, ECDHE-RSA-AES128-GCM-SHA256"
    suites = to_librdkafka({**base, "ssl.cipher.suites": ciphers})[0]["ssl.cipher.suites"]
    assert suites == "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256"
    with pytest.raises(ConfigError, match="openssl ciphers -stdname"):
        to_librdkafka({**base, "ssl.cipher.suites": "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"})


# --------------------------------------------------------------------------- files


def test_load_command_config_missing_file_names_path(tmp_path: Path) -> None:
    missing = tmp_path / "absent.properties"
    with pytest.raises(ConfigError) as info:
        load_command_config(missing)
    assert str(info.value).startswith(f"{missing}: cannot read the --command-config file")


def test_load_command_config_latin1_fallback_and_bom(tmp_path: Path) -> None:
    latin = tmp_path / "latin.properties"
    latin.write_bytes("client.id=caf\xe9\n".encode("latin-1"))
    assert load_command_config(latin)[0] == {"client.id": "café"}
    bom = tmp_path / "bom.properties"
    bom.write_bytes("\ufeffclient.id=café\n".encode())
    assert load_command_config(bom)[0] == {"client.id": "café"}


def test_load_command_config_uses_path_as_source(tmp_path: Path) -> None:
    path = tmp_path / "c.properties"
    path.write_text("mystery=1\n", encoding="utf-8")
    assert load_command_config(path)[1] == [
        f"{path}: mystery: ignored, not a setting lag-exporter translates to librdkafka"
    ]


def test_translated_settings_are_accepted_by_librdkafka() -> None:
    confluent_admin = pytest.importorskip("confluent_kafka.admin")
    settings, _ = to_librdkafka(
        {
            "bootstrap.servers": "127.0.0.1:1",
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.jaas.config": f'{SCRAM} required username="u" password="p";',
            "client.dns.lookup": "use_all_dns_ips",
            "request.timeout.ms": "30000",
            "retry.backoff.max.ms": "1000",
            "socket.connection.setup.timeout.ms": "10000",
            "sasl.kerberos.service.name": "kafka",
        }
    )
    confluent_admin.AdminClient(settings)  # raises KafkaException on an unknown/invalid key


# --------------------------------------------------------------------------- secrets


def _secret_cases(tmp_path: Path) -> list[dict[str, str]]:
    jks = write(tmp_path, "k.jks", b"\xfe\xed\xfe\xed")
    p12 = write(tmp_path, "k.p12", b"\x30\x82")
    return [
        sasl(f'{PLAIN} required username="u" password="{SECRET}"'),  # no ';'
        sasl(f'{PLAIN} required username="u" password="{SECRET};'),  # unclosed quote
        sasl(f"{PLAIN} required username=u password={SECRET}@x;"),  # bad unquoted token
        sasl(f"{PLAIN} {SECRET} username=u;"),  # secret where the flag should be
        sasl(f'{SECRET} required password="{SECRET}";'),  # secret where the module should be
        sasl(f'"{SECRET}.x.y" required;'),
        sasl(f'com.example.Custom required password="{SECRET}";'),
        sasl(f'{PLAIN} required password="{SECRET}";'),  # missing username
        sasl(f'{SCRAM} required username="u" password="{SECRET}" tokenauth=true;', None),
        sasl(f'{PLAIN} required username="u" password="{SECRET}" {SECRET}="x";'),
        sasl(f'{PLAIN} required username="u" {SECRET};'),  # forgot "password="
        {**sasl(f'{PLAIN} required username="u" password="p";'), "sasl.weird": SECRET},
        {"ssl.keystore.password": "${vault:" + SECRET + "}"},
        {"security.protocol": "SSL", "ssl.keystore.location": jks, "ssl.keystore.password": SECRET},
        {"security.protocol": "SSL", "ssl.keystore.location": p12, "ssl.key.password": SECRET},
        {
            "security.protocol": "SSL",
            "ssl.keystore.key": SECRET,
            "ssl.keystore.certificate.chain": SECRET,
        },
        {"security.protocol": "SSL", "ssl.keystore.location": str(tmp_path / SECRET)},
        {"security.protocol": "SSL", "ssl.truststore.password": SECRET},
        {"ssl.key.password": SECRET, "sasl.jaas.config": SECRET, "unknown.token": SECRET},
        {"security.protocol": "SSL", "ssl.truststore.certificates": SECRET},
    ]


def test_no_secret_value_in_any_error_or_warning(tmp_path: Path) -> None:
    cases = _secret_cases(tmp_path)
    outcomes = 0
    for props in cases:
        try:
            _, warnings = to_librdkafka(props, "f")
        except ConfigError as exc:
            messages = [str(exc)]
        else:
            messages = warnings
        outcomes += len(messages)
        for message in messages:
            assert SECRET not in message, (props, message)
            assert "\n" not in message
    assert outcomes >= len(cases)


def test_no_secret_in_properties_syntax_errors() -> None:
    with pytest.raises(ConfigError) as info:
        parse_java_properties(f"ssl.key.password={SECRET}\\u00\n", "f")
    assert SECRET not in str(info.value)


# ----------------------------------------------------------------- exact messages
# Every message is part of the interface (the README quotes them; users grep for them), so each
# is checked whole. {dir} stands for the directory of the store files made by `stores`.

J = f'{PLAIN} required username="u" password="p";'
SSL = {"security.protocol": "SSL"}


def S(jaas: str, mechanism: str | None = "PLAIN") -> dict[str, str]:
    return sasl(jaas, mechanism)


@pytest.fixture
def stores(tmp_path: Path) -> Path:
    """ca.pem (PEM), trust.jks (JKS magic), trust.p12 (DER: PKCS#12), other.bin (neither)."""
    (tmp_path / "ca.pem").write_text(PEM_CERT)
    (tmp_path / "trust.jks").write_bytes(b"\xfe\xed\xfe\xed\x00\x00")
    (tmp_path / "trust.p12").write_bytes(b"\x30\x82\x01\x00")
    (tmp_path / "other.bin").write_bytes(b"hello")
    return tmp_path


BAD: dict[str, tuple[dict[str, str], str]] = {
    "placeholder": (
        {"client.id": "${file:/etc/x.properties:id}"},
        'c.properties: client.id: contains a ${provider:...} config-provider '
        'placeholder, which lag-exporter cannot resolve; put the literal value in'
        ' the file',
    ),
    "unknown_protocol": (
        {"security.protocol": "tls"},
        "c.properties: security.protocol: unknown protocol 'TLS'; use one of "
        'PLAINTEXT, SASL_PLAINTEXT, SASL_SSL, SSL',
    ),
    "rejected_key": (
        {"security.protocol": "SASL_SSL", "sasl.client.callback.handler.class": "x.Y"},
        'c.properties: sasl.client.callback.handler.class: a custom SASL callback'
        ' handler changes how credentials are obtained and cannot run in '
        'librdkafka; remove it and give the credentials in sasl.jaas.config '
        '(PLAIN or SCRAM)',
    ),
    "rejected_prefix": (
        {"config.providers.file.class": "x.Y"},
        'c.properties: config.providers.file.class: config providers are not '
        'supported; put literal values in the file',
    ),
    "untranslatable_ssl_key": (
        {**SSL, "ssl.foo": "x"},
        'c.properties: ssl.foo: security setting lag-exporter cannot translate to'
        ' librdkafka and will not silently drop; remove it if the connection '
        'works without it',
    ),
    "not_an_integer": (
        {"metadata.max.age.ms": "soon"},
        "c.properties: metadata.max.age.ms: 'soon' is not an integer; write a "
        'number',
    ),
    "below_range": (
        {"metadata.max.age.ms": "0"},
        "c.properties: metadata.max.age.ms: 0 is outside librdkafka's range "
        '1..86400000; use a value in that range',
    ),
    "above_range": (
        {"metadata.max.age.ms": "86400001"},
        "c.properties: metadata.max.age.ms: 86400001 is outside librdkafka's "
        'range 1..86400000; use a value in that range',
    ),
    "renamed_not_an_integer": (
        {"request.timeout.ms": "x"},
        "c.properties: request.timeout.ms: 'x' is not an integer; write a number",
    ),
    "endpoint_algorithm": (
        {**SSL, "ssl.endpoint.identification.algorithm": "ldaps"},
        'c.properties: ssl.endpoint.identification.algorithm: unsupported value '
        "'ldaps'; use https, or an empty value to disable hostname verification",
    ),
    "java_cipher_names": (
        {**SSL, "ssl.cipher.suites": "ECDHE-RSA-AES128-GCM-SHA256, TLS_AES_128_GCM_SHA256"},
        'c.properties: ssl.cipher.suites: Java (IANA) cipher-suite names are not '
        'OpenSSL names; rewrite them in OpenSSL form (see `openssl ciphers '
        "-stdname`) or remove the key to use OpenSSL's defaults",
    ),
    "java_cipher_names_ssl": (
        {**SSL, "ssl.cipher.suites": "ssl_rsa_with_rc4_128_sha"},
        'c.properties: ssl.cipher.suites: Java (IANA) cipher-suite names are not '
        'OpenSSL names; rewrite them in OpenSSL form (see `openssl ciphers '
        "-stdname`) or remove the key to use OpenSSL's defaults",
    ),
    "truststore_twice": (
        {**SSL, "ssl.truststore.location": "{dir}/ca.pem", "ssl.truststore.certificates": PEM_CERT},
        'c.properties: ssl.truststore.certificates: cannot be combined with '
        'ssl.truststore.location; keep only one of them',
    ),
    "inline_truststore_not_pem": (
        {**SSL, "ssl.truststore.certificates": "MIIB"},
        'c.properties: ssl.truststore.certificates: is not PEM; give PEM '
        'certificates (-----BEGIN CERTIFICATE-----), continuing lines with \\n\\',
    ),
    "jks_truststore": (
        {**SSL, "ssl.truststore.location": "{dir}/trust.jks"},
        "c.properties: ssl.truststore.location: '{dir}/trust.jks' is a JKS file "
        'and lag-exporter reads PEM or PKCS12 truststores; convert it, e.g. `keytool'
        ' -exportcert -rfc -keystore {dir}/trust.jks -alias ALIAS -file ca.pem` '
        '(once per CA), then point ssl.truststore.location at ca.pem and set '
        'ssl.truststore.type=PEM',
    ),
    "p12_truststore_without_password": (
        {**SSL, "ssl.truststore.location": "{dir}/trust.p12", "ssl.truststore.type": "pkcs12"},
        "c.properties: ssl.truststore.password: missing password for the PKCS12 truststore "
        "'{dir}/trust.p12' (or the file is damaged); set ssl.truststore.password to its "
        "password",
    ),
    "unknown_truststore_type": (
        {**SSL, "ssl.truststore.location": "{dir}/other.bin", "ssl.truststore.type": "bks"},
        "c.properties: ssl.truststore.location: '{dir}/other.bin' is neither a PEM nor a "
        'PKCS12 (ssl.truststore.type=BKS) file and lag-exporter reads PEM or PKCS12 '
        'truststores; convert it, e.g. `keytool -exportcert -rfc -keystore '
        '{dir}/other.bin -alias ALIAS -file ca.pem` (once per CA), then point '
        'ssl.truststore.location at ca.pem and set ssl.truststore.type=PEM',
    ),
    "missing_truststore": (
        {**SSL, "ssl.truststore.location": "{dir}/missing.pem"},
        "c.properties: ssl.truststore.location: cannot read '{dir}/missing.pem' "
        '(No such file or directory); check the path and its permissions',
    ),
    "inline_keystore_and_file": (
        {**SSL, "ssl.keystore.key": PEM_KEY, "ssl.keystore.certificate.chain": PEM_CERT,
         "ssl.keystore.location": "{dir}/ca.pem"},
        'c.properties: ssl.keystore.key: cannot be combined with '
        'ssl.keystore.location; keep either the inline PEM key and chain or the '
        'keystore file',
    ),
    "inline_chain_without_key": (
        {**SSL, "ssl.keystore.certificate.chain": PEM_CERT},
        'c.properties: ssl.keystore.key: missing; an inline PEM keystore needs '
        'both ssl.keystore.key and ssl.keystore.certificate.chain',
    ),
    "inline_key_without_chain": (
        {**SSL, "ssl.keystore.key": PEM_KEY},
        'c.properties: ssl.keystore.certificate.chain: missing; an inline PEM '
        'keystore needs both ssl.keystore.key and ssl.keystore.certificate.chain',
    ),
    "inline_key_not_pem": (
        {**SSL, "ssl.keystore.key": "MIIE", "ssl.keystore.certificate.chain": PEM_CERT},
        'c.properties: ssl.keystore.key: is not PEM; give the PEM text',
    ),
    "inline_chain_not_pem": (
        {**SSL, "ssl.keystore.key": PEM_KEY, "ssl.keystore.certificate.chain": "MIIB"},
        'c.properties: ssl.keystore.certificate.chain: is not PEM; give the PEM '
        'text',
    ),
    "p12_keystore_without_password": (
        {**SSL, "ssl.keystore.location": "{dir}/trust.p12"},
        'c.properties: ssl.keystore.password: missing; it is needed to open the '
        'PKCS12 keystore named by ssl.keystore.location, so add it',
    ),
    "jks_keystore": (
        {**SSL, "ssl.keystore.location": "{dir}/trust.jks", "ssl.keystore.password": "pw"},
        'c.properties: ssl.keystore.location: the file is a JKS keystore and '
        'lag-exporter reads only PKCS12 or PEM; convert it, e.g. `keytool '
        '-importkeystore -srckeystore KEYSTORE -destkeystore client.p12 '
        '-deststoretype PKCS12`, then point ssl.keystore.location at client.p12 '
        'and set ssl.keystore.type=PKCS12',
    ),
    "unknown_keystore": (
        {**SSL, "ssl.keystore.location": "{dir}/other.bin"},
        'c.properties: ssl.keystore.location: the file is neither a PKCS12 nor a'
        ' PEM keystore and lag-exporter reads only PKCS12 or PEM; convert it, e.g.'
        ' `keytool -importkeystore -srckeystore KEYSTORE -destkeystore client.p12'
        ' -deststoretype PKCS12`, then point ssl.keystore.location at client.p12 '
        'and set ssl.keystore.type=PKCS12',
    ),
    "missing_keystore": (
        {**SSL, "ssl.keystore.location": "{dir}/missing.p12"},
        'c.properties: ssl.keystore.location: cannot read the file it names (No '
        'such file or directory); check the path and its permissions',
    ),
    "oauthbearer": (
        S(J, "OAUTHBEARER"),
        'c.properties: sasl.mechanism: OAUTHBEARER is not supported by '
        'lag-exporter; use PLAIN or SCRAM credentials',
    ),
    "unknown_mechanism": (
        S(J, "DIGEST-MD5"),
        "c.properties: sasl.mechanism: unknown mechanism 'DIGEST-MD5'; use one of"
        ' GSSAPI, PLAIN, SCRAM-SHA-256, SCRAM-SHA-512',
    ),
    "plain_without_jaas": (
        {"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN"},
        'c.properties: sasl.jaas.config: missing, but sasl.mechanism=PLAIN needs '
        'credentials; add sasl.jaas.config with a PlainLoginModule or '
        'ScramLoginModule and its username and password (a JVM-wide JAAS file is '
        'not read)',
    ),
    "scram256_without_jaas": (
        {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-256"},
        'c.properties: sasl.jaas.config: missing, but '
        'sasl.mechanism=SCRAM-SHA-256 needs credentials; add sasl.jaas.config '
        'with a PlainLoginModule or ScramLoginModule and its username and '
        'password (a JVM-wide JAAS file is not read)',
    ),
    "scram512_without_jaas": (
        {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512"},
        'c.properties: sasl.jaas.config: missing, but '
        'sasl.mechanism=SCRAM-SHA-512 needs credentials; add sasl.jaas.config '
        'with a PlainLoginModule or ScramLoginModule and its username and '
        'password (a JVM-wide JAAS file is not read)',
    ),
    "unsupported_module": (
        S('com.example.OtherLoginModule required username="u" password="p";'),
        'c.properties: sasl.jaas.config: login module '
        'com.example.OtherLoginModule is not supported; lag-exporter supports '
        'only org.apache.kafka.common.security.plain.PlainLoginModule and '
        'org.apache.kafka.common.security.scram.ScramLoginModule',
    ),
    "no_mechanism": (
        S(J, None),
        'c.properties: sasl.mechanism: missing while sasl.jaas.config uses '
        'PlainLoginModule; Java would default to GSSAPI (Kerberos) and fail, so '
        'set sasl.mechanism=PLAIN',
    ),
    "no_mechanism_scram": (
        S(f'{SCRAM} required username="u" password="p";', None),
        'c.properties: sasl.mechanism: missing while sasl.jaas.config uses '
        'ScramLoginModule; Java would default to GSSAPI (Kerberos) and fail, so '
        'set sasl.mechanism=SCRAM-SHA-256 or SCRAM-SHA-512',
    ),
    "gssapi_with_plain": (
        S(J, "GSSAPI"),
        'c.properties: sasl.mechanism: GSSAPI cannot use the PlainLoginModule '
        'credentials in sasl.jaas.config; set sasl.mechanism=PLAIN',
    ),
    "no_username": (
        S(f'{PLAIN} required password="p";'),
        'c.properties: sasl.jaas.config: the PlainLoginModule entry has no '
        'username option; add username="..." before the closing ;',
    ),
    "no_password": (
        S(f'{PLAIN} required username="u";'),
        'c.properties: sasl.jaas.config: the PlainLoginModule entry has no '
        'password option; add password="..." before the closing ;',
    ),
    "tokenauth": (
        S(f'{SCRAM} required username="u" password="p" tokenauth="TRUE";', "SCRAM-SHA-256"),
        'c.properties: sasl.jaas.config: tokenauth=true (delegation-token SCRAM) '
        'is not supported by librdkafka; use a regular SCRAM user',
    ),
    "jaas_starts_with_punct": (
        S('= required;'),
        'c.properties: sasl.jaas.config: does not start with a login module class'
        ' name; fix it',
    ),
    "jaas_not_a_class_name": (
        S('1abc required;'),
        'c.properties: sasl.jaas.config: does not start with a login module class'
        ' name; fix it',
    ),
    "jaas_no_flag": (
        S(f'{PLAIN} username="u" password="p";'),
        'c.properties: sasl.jaas.config: '
        'org.apache.kafka.common.security.plain.PlainLoginModule is not followed '
        'by a control flag; write required, requisite, sufficient or optional '
        'after the module name',
    ),
    "jaas_flag_missing_at_end": (
        S(f'{PLAIN}'),
        'c.properties: sasl.jaas.config: '
        'org.apache.kafka.common.security.plain.PlainLoginModule is not followed '
        'by a control flag; write required, requisite, sufficient or optional '
        'after the module name',
    ),
    "jaas_unexpected_text": (
        S(f'{PLAIN} required "u";'),
        'c.properties: sasl.jaas.config: unexpected text where an option name was'
        ' expected; options look like name="value"',
    ),
    "jaas_known_option_without_value": (
        S(f'{PLAIN} required username password="p";'),
        'c.properties: sasl.jaas.config: username has no value; write '
        'name="value" pairs (quote values containing characters other than '
        'letters, digits, . - _ $)',
    ),
    "jaas_unknown_option_without_value": (
        S(f'{PLAIN} required hunter2;'),
        'c.properties: sasl.jaas.config: an option (name not shown) has no value;'
        ' write name="value" pairs (quote values containing characters other than'
        ' letters, digits, . - _ $)',
    ),
    "jaas_option_at_end_without_value": (
        S(f'{PLAIN} required username='),
        'c.properties: sasl.jaas.config: username has no value; write '
        'name="value" pairs (quote values containing characters other than '
        'letters, digits, . - _ $)',
    ),
    "jaas_not_terminated": (
        S(f'{PLAIN} required username="u" password="p"'),
        "c.properties: sasl.jaas.config: the entry is not terminated by ';'; add "
        'it at the end',
    ),
    "jaas_two_modules": (
        S(J + " " + J),
        'c.properties: sasl.jaas.config: contains 2 login modules; Kafka requires'
        ' exactly one',
    ),
    "jaas_no_module": (
        S('// only a comment'),
        'c.properties: sasl.jaas.config: contains 0 login modules; Kafka requires'
        ' exactly one',
    ),
    "jaas_unterminated_comment": (
        S(f'{PLAIN} required /* username="u" password="p";'),
        'c.properties: sasl.jaas.config: unterminated /* comment; close it with '
        '*/',
    ),
    "jaas_unclosed_quote": (
        S(f'{PLAIN} required username="u password="p";'),
        'c.properties: sasl.jaas.config: a quoted value is not closed; end it '
        'with a matching " (escape quotes inside it as \\\\\\" in a properties file)',
    ),
    "jaas_quote_ends_at_newline": (
        S(f'{PLAIN} required username=\'u\npassword="p";'),
        'c.properties: sasl.jaas.config: a quoted value is not closed; end it '
        'with a matching \' (escape quotes inside it as \\\\\\" in a properties file)',
    ),
    "jaas_bang": (
        S(f'{PLAIN} required ! username="u" password="p";'),
        'c.properties: sasl.jaas.config: unexpected text where an option name was'
        ' expected; options look like name="value"',
    ),
    "jaas_backslash_at_end": (
        S(f'{PLAIN} required username="u\\'),
        'c.properties: sasl.jaas.config: a quoted value is not closed; end it '
        'with a matching " (escape quotes inside it as \\\\\\" in a properties file)',
    ),
    "jaas_escaped_quote_at_end": (
        S(f'{PLAIN} required username="u" password="x\\"'),
        'c.properties: sasl.jaas.config: a quoted value is not closed; end it '
        'with a matching " (escape quotes inside it as \\\\\\" in a properties file)',
    ),
    "jks_declared_truststore": (
        {**SSL, "ssl.truststore.location": "{dir}/trust.jks", "ssl.truststore.type": "JKS"},
        "c.properties: ssl.truststore.location: '{dir}/trust.jks' is a JKS file "
        'and lag-exporter reads PEM or PKCS12 truststores; convert it, e.g. `keytool'
        ' -exportcert -rfc -keystore {dir}/trust.jks -alias ALIAS -file ca.pem` '
        '(once per CA), then point ssl.truststore.location at ca.pem and set '
        'ssl.truststore.type=PEM',
    ),
    "pem_declared_unknown_truststore": (
        {**SSL, "ssl.truststore.location": "{dir}/other.bin", "ssl.truststore.type": "PEM"},
        "c.properties: ssl.truststore.location: '{dir}/other.bin' is neither a PEM nor a "
        'PKCS12 file and lag-exporter reads PEM or PKCS12 truststores; convert it, e.g. '
        '`keytool -exportcert -rfc -keystore {dir}/other.bin -alias ALIAS -file '
        'ca.pem` (once per CA), then point ssl.truststore.location at ca.pem and '
        'set ssl.truststore.type=PEM',
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_each_refusal_has_its_exact_message(case: str, stores: Path) -> None:
    props, message = BAD[case]
    props = {key: value.replace("{dir}", str(stores)) for key, value in props.items()}
    with pytest.raises(ConfigError) as raised:
        to_librdkafka(props, "c.properties")
    assert str(raised.value) == message.replace("{dir}", str(stores))


def test_every_kind_of_key_is_handled_and_the_next_one_still_read() -> None:
    # Ordered so that stopping early after any kind of key would lose the ones after it.
    props = {
        "security.protocol": "ssl",
        "group.id": "g",
        "sasl.mechanism": "PLAIN",
        "config.providers": "",
        "ssl.truststore.password": "tp",
        "client.dns.lookup": "default",
        "client.id": "c",
        "request.timeout.ms": " 0100 ",
        "ssl.protocol": "TLSv1.2",
        "foo.bar": "5",
        "client.rack": "r",
        "ssl.endpoint.identification.algorithm": "HTTPS",
        "ssl.cipher.suites": "ECDHE-RSA-AES128-GCM-SHA256 , , AES256-SHA",
    }
    settings, warnings = to_librdkafka(props, "c.properties")
    assert settings == {
        "security.protocol": "SSL",
        "client.id": "c",
        "socket.timeout.ms": "100",
        "client.rack": "r",
        "ssl.endpoint.identification.algorithm": "https",
        "ssl.cipher.suites": "ECDHE-RSA-AES128-GCM-SHA256:AES256-SHA",
    }
    assert warnings == [
        "c.properties: sasl.mechanism: ignored, security.protocol is SSL, which does not use "
        "SASL (as in Java); set security.protocol if SASL was intended",
        "c.properties: client.dns.lookup: ignored, librdkafka only accepts "
        "resolve_canonical_bootstrap_servers_only or use_all_dns_ips",
        f"c.properties: ssl.protocol: ignored, {IGNORED_KEYS['ssl.protocol']}",
        "c.properties: foo.bar: ignored, not a setting lag-exporter translates to "
        "librdkafka",
        "c.properties: ssl.truststore.password: ignored, only a PKCS12 truststore has a "
        "password",
    ]


def test_tls_keys_without_tls_are_warned_about_by_layer() -> None:
    settings, warnings = to_librdkafka({"ssl.keystore.location": "k.p12"}, "c.properties")
    assert settings == {}
    assert warnings == [
        "c.properties: ssl.keystore.location: ignored, security.protocol is PLAINTEXT, which "
        "does not use TLS (as in Java); set security.protocol if TLS was intended"]


def test_integer_bounds_are_inclusive() -> None:
    low = to_librdkafka({"metadata.max.age.ms": "1"})[0]
    high = to_librdkafka({"metadata.max.age.ms": "86400000"})[0]
    assert (low, high) == ({"metadata.max.age.ms": "1"}, {"metadata.max.age.ms": "86400000"})


def test_empty_endpoint_algorithm_disables_hostname_verification() -> None:
    settings, _ = to_librdkafka({**SSL, "ssl.endpoint.identification.algorithm": ""})
    assert settings["ssl.endpoint.identification.algorithm"] == "none"


def test_inline_pem_truststore_and_keystore(stores: Path) -> None:
    settings, warnings = to_librdkafka({
        **SSL, "ssl.truststore.certificates": PEM_CERT, "ssl.keystore.key": PEM_KEY,
        "ssl.keystore.certificate.chain": PEM_CERT, "ssl.key.password": "kp"})
    assert settings == {"security.protocol": "SSL", "ssl.ca.pem": PEM_CERT.strip(),
                        "ssl.key.pem": PEM_KEY.strip(), "ssl.certificate.pem": PEM_CERT.strip(),
                        "ssl.key.password": "kp", "ssl.endpoint.identification.algorithm": "https"}
    assert warnings == []


def test_pem_keystore_file_holds_key_and_chain(stores: Path) -> None:
    pem = stores / "keystore.pem"
    pem.write_text("Bag Attributes\n" + PEM_CERT + PEM_CERT.replace("MIIB", "MIIC") + PEM_KEY)
    settings, warnings = to_librdkafka({**SSL, "ssl.keystore.location": str(pem),
                                        "ssl.key.password": "kp"})
    assert settings == {"security.protocol": "SSL",
                        "ssl.certificate.pem": PEM_CERT + PEM_CERT.replace("MIIB", "MIIC"),
                        "ssl.key.pem": PEM_KEY, "ssl.key.password": "kp", **HTTPS}
    assert warnings == []
    with pytest.raises(ConfigError) as raised:  # a certificate without its key
        to_librdkafka({**SSL, "ssl.keystore.location": str(stores / "ca.pem")}, "c.properties")
    assert str(raised.value) == (
        "c.properties: ssl.keystore.location: the PEM keystore holds 0 private keys; it needs "
        "the certificate chain and exactly one private key")


def test_keystore_passwords_without_a_keystore_are_warned_about() -> None:
    _, warnings = to_librdkafka({**SSL, "ssl.keystore.password": "a", "ssl.key.password": "b"},
                                "c.properties")
    assert warnings == [
        "c.properties: ssl.keystore.password: ignored, no client keystore is configured",
        "c.properties: ssl.key.password: ignored, no client keystore is configured"]


def test_sasl_without_jaas_or_mechanism_is_kerberos() -> None:
    settings, warnings = to_librdkafka({"security.protocol": "SASL_PLAINTEXT"}, "c.properties")
    assert settings == {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "GSSAPI"}
    assert warnings == [
        "c.properties: sasl.mechanism: GSSAPI (Kerberos, the Java default); librdkafka will use "
        "its kinit command and ticket cache, not the JVM's JAAS file"]


def test_jaas_options_after_username_and_password_are_still_read() -> None:
    jaas = f'{SCRAM} required username="u" password="p" tokenauth=false other="x";'
    settings, warnings = to_librdkafka(S(jaas, "SCRAM-SHA-512"), "c.properties")
    assert (settings["sasl.username"], settings["sasl.password"]) == ("u", "p")
    assert warnings == [
        "c.properties: sasl.jaas.config: an option other than username/password ignored "
        "(name not shown in case it is a secret)"]


@pytest.mark.parametrize(("jaas", "password"), [
    # comments: to the end of the line, to the end of the text, /* */ (also empty)
    (f'// c\n{PLAIN} required // c\nusername="u" /**/ password=/* c */"p"; // end', "p"),
    # octal escapes take at most 3 digits from 0-3, 2 from 4-7; other escapes as in C
    (f'{PLAIN} required username="u" password="\\101\\0123\\477\\n\\t\\q\\"";',
     "A\n3'7\n\tq\""),
    # single quotes; control characters and Unicode spaces between tokens separate them
    (f"{PLAIN}\x01required \u2003username='u'\x1fpassword='p';", "p"),
    # unquoted words: letters, digits, . _ - $ and anything from U+0080 on
    (f"{PLAIN} required username=u password=\x80p.w_d-$\u00e9;", "\x80p.w_d-$\u00e9"),
])
def test_jaas_syntax_as_kafka_reads_it(jaas: str, password: str) -> None:
    settings, _ = to_librdkafka(S(jaas))
    assert (settings["sasl.username"], settings["sasl.password"]) == ("u", password)


def test_escaped_separator_and_doubled_backslashes() -> None:
    text = "a==b\n=v\nk\\=ey=1\nodd=x\\\\\nlonger.key=yy\\\\\\\\\nnext=z\n"
    assert parse_java_properties(text) == {
        "a": "=b", "": "v", "k=ey": "1", "odd": "x\\", "longer.key": "yy\\\\", "next": "z"}


def test_unreadable_command_config_names_the_reason(tmp_path: Path) -> None:
    missing = tmp_path / "missing.properties"
    with pytest.raises(ConfigError) as raised:
        load_command_config(missing)
    assert str(raised.value) == (f"{missing}: cannot read the --command-config file (No such "
                                 "file or directory); check the path and its permissions")
