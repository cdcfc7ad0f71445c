"""Unit tests for lag_exporter.kafka_properties (no broker needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lag_exporter.errors import ConfigError
from lag_exporter.kafka_properties import (
    load_command_config,
    parse_java_properties,
    to_librdkafka,
)

PLAIN = "org.apache.kafka.common.security.plain.PlainLoginModule"
SCRAM = "org.apache.kafka.common.security.scram.ScramLoginModule"
SECRET = "s3cr3t-Value"
PEM_CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
PEM_KEY = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"


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
    assert settings == {"security.protocol": "SSL"}
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
    assert to_librdkafka({"security.protocol": "ssl"})[0] == {"security.protocol": "SSL"}


# --------------------------------------------------------------------------- SASL / JAAS


def test_plain_jaas() -> None:
    settings, warnings = to_librdkafka(sasl(f'{PLAIN} required username="alice" password="pw";'))
    assert settings == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
        "sasl.username": "alice",
        "sasl.password": "pw",
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
    assert settings == {"security.protocol": "SSL", "ssl.ca.location": ca}
    assert len(warnings) == 1
    assert "ssl.truststore.password: ignored" in warnings[0]
    assert "changeit" not in warnings[0]


@pytest.mark.parametrize(
    ("name", "data", "kind"),
    [
        ("trust.jks", b"\xfe\xed\xfe\xed\x00\x00\x00\x02", "a JKS"),
        ("trust.p12", b"\x30\x82\x0a\x00\x02\x01\x03", "a PKCS#12"),
        ("trust.bin", b"garbage", "not a PEM"),
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


def test_pkcs12_keystore(tmp_path: Path) -> None:
    p12 = write(tmp_path, "client.keystore", b"\x30\x82\x0a\x00")
    props = {
        "security.protocol": "SSL",
        "ssl.keystore.location": p12,
        "ssl.keystore.type": "PKCS12",
        "ssl.keystore.password": "kspw",
    }
    settings, warnings = to_librdkafka(props)
    assert settings == {
        "security.protocol": "SSL",
        "ssl.keystore.location": p12,
        "ssl.keystore.password": "kspw",
    }
    assert warnings == []


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
    assert settings["ssl.certificate.location"] == pem
    assert settings["ssl.key.location"] == pem
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
