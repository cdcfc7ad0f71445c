"""Translate a Java Kafka client properties file (``--command-config``) to librdkafka settings.

The file is the one MirrorMaker's consumer.properties or ``kafka-consumer-groups.sh
--command-config`` reads. lag-exporter only builds an AdminClient (confluent-kafka 2.16 /
librdkafka 2.16), so consumer/producer keys are irrelevant, and security keys are translated or
refused: a security setting is never dropped silently.

Policy at a glance (the tables below are the policy):

* ``PASS_THROUGH_KEYS``: same name and meaning in librdkafka.
* ``RENAMED_KEYS``: same meaning, different librdkafka name.
* ``TLS_KEYS`` / ``SASL_KEYS``: translated by dedicated code (truststore, keystore, JAAS).
  Truststores and keystores (PEM or PKCS12 files, or inline PEM) are read here and handed to
  librdkafka as PEM text (``ssl.ca.pem``, ``ssl.certificate.pem``, ``ssl.key.pem``): librdkafka
  cannot read a PKCS12 truststore, a wrong password is found before any connection, and a
  config reload (SIGHUP) sees replaced certificate files as a changed connection (rotation).
* ``REJECTED_KEYS`` / ``REJECTED_PREFIXES``: a non-empty value is a ConfigError.
* ``IGNORED_KEYS`` / ``IGNORED_PREFIXES``: Java-only, dropped with one warning per key.
* ``SILENTLY_DROPPED_KEYS`` / ``SILENTLY_DROPPED_PREFIXES``: consumer/producer only, dropped.
* Any other ``ssl.*`` / ``sasl.*`` key is a ConfigError; any other key is a warning.
* ``ssl.*`` keys are only used when security.protocol is SSL/SASL_SSL and ``sasl.*`` keys only
  when it is SASL_*, exactly as the Java client does; otherwise each gets a warning.

Values are trimmed before translation, as Kafka's ConfigDef trims STRING and PASSWORD values.
Error messages and warnings never contain the value of a key that looks secret
(see ``SECRET_KEY_MARKERS``), nor any part of a JAAS string except its login-module class name.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final, Literal

from lag_exporter.errors import ConfigError, StorePasswordError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.serialization.pkcs12 import PKCS12KeyAndCertificates

__all__ = ["load_command_config", "parse_java_properties", "to_librdkafka"]

# A key whose lower-cased name contains any of these holds a value we never echo.
SECRET_KEY_MARKERS: Final = ("password", "secret", "jaas", "token", "key")

# Same name and meaning in librdkafka. Empty values are treated as unset (librdkafka default).
PASS_THROUGH_KEYS: Final = frozenset(
    {
        "bootstrap.servers",
        "client.id",
        "client.rack",
        "client.dns.lookup",  # librdkafka >= 2.2 has it with the same two values
        "metadata.max.age.ms",
        "reconnect.backoff.ms",
        "reconnect.backoff.max.ms",
        "retry.backoff.ms",
        "retry.backoff.max.ms",
        "socket.connection.setup.timeout.ms",
        "connections.max.idle.ms",
        "sasl.kerberos.service.name",
        "sasl.kerberos.min.time.before.relogin",
    }
)

# Java's request.timeout.ms is the per-request network timeout. librdkafka's request.timeout.ms
# is a producer (topic-level) setting that an AdminClient ignores; the admin API's default
# request timeout is socket.timeout.ms ("Admin requests will use socket.timeout.ms"), so map it.
RENAMED_KEYS: Final[Mapping[str, str]] = {"request.timeout.ms": "socket.timeout.ms"}

# Allowed ranges in librdkafka 2.16 (checked against the installed library); Java allows wider
# ranges for some of them, and an out-of-range value would only fail later, in librdkafka.
INTEGER_RANGES: Final[Mapping[str, tuple[int, int]]] = {
    "metadata.max.age.ms": (1, 86_400_000),
    "reconnect.backoff.ms": (0, 3_600_000),
    "reconnect.backoff.max.ms": (0, 3_600_000),
    "retry.backoff.ms": (1, 300_000),
    "retry.backoff.max.ms": (1, 300_000),
    "socket.connection.setup.timeout.ms": (1000, 2_147_483_647),
    "connections.max.idle.ms": (0, 2_147_483_647),
    "sasl.kerberos.min.time.before.relogin": (0, 86_400_000),
    "request.timeout.ms": (10, 300_000),  # range of socket.timeout.ms, its librdkafka target
}

CLIENT_DNS_LOOKUP_VALUES: Final = frozenset(
    {"use_all_dns_ips", "resolve_canonical_bootstrap_servers_only"}
)

# Translated by _translate_tls (only when security.protocol uses TLS).
TLS_KEYS: Final = frozenset(
    {
        "ssl.truststore.location",
        "ssl.truststore.certificates",
        "ssl.truststore.type",
        "ssl.truststore.password",
        "ssl.keystore.location",
        "ssl.keystore.password",
        "ssl.keystore.type",
        "ssl.keystore.key",
        "ssl.keystore.certificate.chain",
        "ssl.key.password",
        "ssl.endpoint.identification.algorithm",
        "ssl.cipher.suites",
    }
)

# Translated by _translate_sasl (only when security.protocol is SASL_*).
SASL_KEYS: Final = frozenset({"sasl.mechanism", "sasl.jaas.config"})

SECURITY_PROTOCOLS: Final = frozenset({"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"})
SUPPORTED_SASL_MECHANISMS: Final = frozenset({"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI"})

PLAIN_LOGIN_MODULE: Final = "org.apache.kafka.common.security.plain.PlainLoginModule"
SCRAM_LOGIN_MODULE: Final = "org.apache.kafka.common.security.scram.ScramLoginModule"
JAAS_CONTROL_FLAGS: Final = frozenset({"required", "requisite", "sufficient", "optional"})
# The only JAAS option names messages may show; any other token could be a misplaced secret.
JAAS_OPTION_NAMES: Final = frozenset({"username", "password", "tokenauth"})

# A non-empty value is a ConfigError: these change how the client logs in or encrypts, or make
# values come from somewhere we cannot read. (An empty value means "Java default": ignored.)
REJECTED_KEYS: Final[Mapping[str, str]] = {
    "config.providers": "config providers are not supported; put literal values in the file",
    "sasl.client.callback.handler.class": (
        "a custom SASL callback handler changes how credentials are obtained and cannot run in "
        "librdkafka; remove it and give the credentials in sasl.jaas.config (PLAIN or SCRAM)"
    ),
    "sasl.login.callback.handler.class": (
        "a custom SASL login callback handler cannot run in librdkafka; remove it and use "
        "PLAIN or SCRAM credentials in sasl.jaas.config"
    ),
    "sasl.login.class": (
        "a custom SASL login class cannot run in librdkafka; remove it and use PLAIN or SCRAM "
        "credentials in sasl.jaas.config"
    ),
    "ssl.engine.factory.class": (
        "a custom SSL engine factory cannot run in librdkafka; remove it and configure TLS "
        "with the standard ssl.truststore.* / ssl.keystore.* keys"
    ),
    "security.providers": (
        "custom Java security providers cannot be loaded by librdkafka; remove the key"
    ),
}
REJECTED_PREFIXES: Final[Mapping[str, str]] = {
    "config.providers.": "config providers are not supported; put literal values in the file",
}

# Java-only keys with no librdkafka equivalent: dropped with one warning each.
IGNORED_KEYS: Final[Mapping[str, str]] = {
    "ssl.protocol": "librdkafka negotiates the highest TLS version OpenSSL supports",
    "ssl.enabled.protocols": "librdkafka negotiates the highest TLS version OpenSSL supports",
    "ssl.trustmanager.algorithm": "Java-only (JSSE) setting",
    "ssl.keymanager.algorithm": "Java-only (JSSE) setting",
    "ssl.secure.random.implementation": "Java-only (JSSE) setting",
    "ssl.provider": "Java-only (JSSE) setting",
    "ssl.client.auth": "broker-side setting, not used by clients",
    "ssl.principal.mapping.rules": "broker-side setting, not used by clients",
    "sasl.kerberos.kinit.cmd": (
        "librdkafka's sasl.kerberos.kinit.cmd is a full command template, not a path"
    ),
    "sasl.kerberos.ticket.renew.jitter": "Java-only Kerberos tuning",
    "sasl.kerberos.ticket.renew.window.factor": "Java-only Kerberos tuning",
    "interceptor.classes": "Java interceptors cannot run in librdkafka",
    "metric.reporters": "Java metrics reporters cannot run in librdkafka",
    "auto.include.jmx.reporter": "Java-only metrics setting",
    "enable.metrics.push": "Java-only metrics setting",
    "default.api.timeout.ms": "lag-exporter sets its own admin call timeouts",
    "send.buffer.bytes": "Java-only socket setting (librdkafka uses OS defaults)",
    "receive.buffer.bytes": "Java-only socket setting (librdkafka uses OS defaults)",
}
IGNORED_PREFIXES: Final[Mapping[str, str]] = {
    "sasl.login.": "Java-only SASL login tuning (token refresh, retries)",
    "sasl.oauthbearer.": "OAUTHBEARER is not supported, so its settings are unused",
    "metrics.": "Java-only metrics setting",
}

# Consumer/producer-only keys: irrelevant for an AdminClient, dropped without a warning.
SILENTLY_DROPPED_KEYS: Final = frozenset(
    {
        "group.id",
        "group.instance.id",
        "group.protocol",
        "group.remote.assignor",
        "auto.offset.reset",
        "enable.auto.commit",
        "auto.commit.interval.ms",
        "key.deserializer",
        "value.deserializer",
        "key.serializer",
        "value.serializer",
        "max.poll.records",
        "max.poll.interval.ms",
        "max.partition.fetch.bytes",
        "partition.assignment.strategy",
        "session.timeout.ms",
        "heartbeat.interval.ms",
        "isolation.level",
        "exclude.internal.topics",
        "allow.auto.create.topics",
        "check.crcs",
        "internal.leave.group.on.close",
        "acks",
        "batch.size",
        "linger.ms",
        "buffer.memory",
        "compression.type",
        "max.request.size",
        "max.block.ms",
        "delivery.timeout.ms",
        "enable.idempotence",
        "transactional.id",
        "transaction.timeout.ms",
        "max.in.flight.requests.per.connection",
        "retries",
        "partitioner.class",
    }
)
SILENTLY_DROPPED_PREFIXES: Final = ("fetch.",)

# Kafka's ConfigTransformer placeholder: ${provider:[path:]key}
_PLACEHOLDER = re.compile(r"\$\{[^}]*?:[^}]*?\}")
_JAVA_CLASS_NAME = re.compile(r"[A-Za-z_$][\w$]*(\.[A-Za-z_$][\w$]*)+")

StoreKind = Literal["pem", "pkcs12", "jks", "unknown"]


# --------------------------------------------------------------------------- properties syntax


def parse_java_properties(text: str, source: str = "<properties>") -> dict[str, str]:
    """Parse ``text`` exactly as ``java.util.Properties.load`` does. Later keys win."""
    result: dict[str, str] = {}
    for line_no, logical in _logical_lines(text):
        key_raw, value_raw = _split_key_value(logical)
        key = _unescape(key_raw, source, line_no, None)
        result[key] = _unescape(value_raw, source, line_no, key)
    return result


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Join continued lines; drop comments and blank lines. Returns (first line number, text)."""
    natural = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    out: list[tuple[int, str]] = []
    i = 0
    while i < len(natural):
        start = i
        line = natural[i].lstrip(" \t\f")
        i += 1
        if not line or line[0] in "#!":
            continue  # comment lines never continue, even if they end in a backslash
        parts: list[str] = []
        while True:
            trailing = len(line) - len(line.rstrip("\\"))
            if trailing % 2 == 0:
                parts.append(line)
                break
            parts.append(line[:-1])
            if i >= len(natural):
                break  # backslash at end of file: dropped, as Java does
            line = natural[i].lstrip(" \t\f")
            i += 1
            if not line:
                break  # a blank continuation line ends the logical line
        out.append((start + 1, "".join(parts)))
    return out


def _split_key_value(line: str) -> tuple[str, str]:
    backslash = False
    key_end = len(line)
    value_start = len(line)
    has_sep = False
    for idx, ch in enumerate(line):
        if not backslash and ch in "=:":
            key_end, value_start, has_sep = idx, idx + 1, True
            break
        if not backslash and ch in " \t\f":
            key_end, value_start = idx, idx + 1
            break
        backslash = ch == "\\" and not backslash
    while value_start < len(line):
        ch = line[value_start]
        if ch not in " \t\f":
            if not has_sep and ch in "=:":
                has_sep = True
            else:
                break
        value_start += 1
    return line[:key_end], line[value_start:]


_SIMPLE_ESCAPES: Final[Mapping[str, str]] = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


def _unescape(raw: str, source: str, line_no: int, key: str | None) -> str:
    out: list[str] = []
    i = 0
    while i < len(raw):
        ch = raw[i]
        i += 1
        if ch != "\\" or i >= len(raw):
            out.append(ch)
            continue
        ch = raw[i]
        i += 1
        if ch == "u":
            digits = raw[i : i + 4]
            if len(digits) != 4 or any(d not in "0123456789abcdefABCDEF" for d in digits):
                where = "in a key" if key is None else f"in the value of {key}"
                raise ConfigError(
                    f"{source}: line {line_no}: malformed \\uXXXX escape {where}; "
                    "write exactly four hex digits after \\u (or \\\\u for a literal backslash)"
                )
            out.append(chr(int(digits, 16)))
            i += 4
        else:
            out.append(_SIMPLE_ESCAPES.get(ch, ch))
    return "".join(out)


# --------------------------------------------------------------------------- translation


def to_librdkafka(
    java_properties: Mapping[str, str], source: str = "<properties>"
) -> tuple[dict[str, str], list[str]]:
    """Translate Java client properties to librdkafka AdminClient settings.

    Returns ``(settings, warnings)``; raises ConfigError for anything that cannot be
    translated safely.
    """
    props = {key: value.strip() for key, value in java_properties.items()}
    settings: dict[str, str] = {}
    warnings: list[str] = []

    for key, value in props.items():
        if _PLACEHOLDER.search(value):
            raise ConfigError(
                f"{source}: {key}: contains a ${{provider:...}} config-provider placeholder, "
                "which lag-exporter cannot resolve; put the literal value in the file"
            )

    protocol = props.get("security.protocol", "") or "PLAINTEXT"
    protocol = protocol.upper()
    if protocol not in SECURITY_PROTOCOLS:
        raise ConfigError(
            f"{source}: security.protocol: unknown protocol {protocol!r}; "
            f"use one of {', '.join(sorted(SECURITY_PROTOCOLS))}"
        )
    if "security.protocol" in props:
        settings["security.protocol"] = protocol
    uses_tls = protocol in ("SSL", "SASL_SSL")
    uses_sasl = protocol.startswith("SASL_")

    for key, value in props.items():
        if key == "security.protocol":
            continue
        if key in SILENTLY_DROPPED_KEYS or key.startswith(SILENTLY_DROPPED_PREFIXES):
            continue
        is_ssl, is_sasl = key.startswith("ssl."), key.startswith("sasl.")
        if (is_ssl and not uses_tls) or (is_sasl and not uses_sasl):
            layer = "TLS" if is_ssl else "SASL"
            warnings.append(
                f"{source}: {key}: ignored, security.protocol is {protocol}, which does not use "
                f"{layer} (as in Java); set security.protocol if {layer} was intended"
            )
            continue
        rejected = REJECTED_KEYS.get(key) or _by_prefix(REJECTED_PREFIXES, key)
        if rejected is not None:
            if value:
                raise ConfigError(f"{source}: {key}: {rejected}")
            continue
        if key in TLS_KEYS or key in SASL_KEYS:
            continue  # translated below, as a group
        if key in PASS_THROUGH_KEYS:
            if key == "client.dns.lookup" and value and value not in CLIENT_DNS_LOOKUP_VALUES:
                warnings.append(
                    f"{source}: {key}: ignored, librdkafka only accepts "
                    f"{' or '.join(sorted(CLIENT_DNS_LOOKUP_VALUES))}"
                )
                continue
            if value:
                settings[key] = _checked_integer(key, value, source)
            continue
        if key in RENAMED_KEYS:
            if value:
                settings[RENAMED_KEYS[key]] = _checked_integer(key, value, source)
            continue
        ignored = IGNORED_KEYS.get(key) or _by_prefix(IGNORED_PREFIXES, key)
        if ignored is not None:
            warnings.append(f"{source}: {key}: ignored, {ignored}")
            continue
        if is_ssl or is_sasl:
            raise ConfigError(
                f"{source}: {key}: security setting lag-exporter cannot translate to librdkafka "
                "and will not silently drop; remove it if the connection works without it"
            )
        warnings.append(
            f"{source}: {key}: ignored, not a setting lag-exporter translates to librdkafka"
        )

    if uses_tls:
        _translate_tls(props, source, settings, warnings)
    if uses_sasl:
        _translate_sasl(props, source, settings, warnings)
    return settings, warnings


def load_command_config(path: str | os.PathLike[str]) -> tuple[dict[str, str], list[str]]:
    """Read, parse and translate a ``--command-config`` file."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise ConfigError(
            f"{source}: cannot read the --command-config file ({exc.strerror or exc}); "
            "check the path and its permissions"
        ) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")  # what java.util.Properties.load(InputStream) reads
    text = text.removeprefix("\ufeff")
    return to_librdkafka(parse_java_properties(text, source), source)


def _by_prefix(table: Mapping[str, str], key: str) -> str | None:
    for prefix, reason in table.items():
        if key.startswith(prefix):
            return reason
    return None


def _is_secret_key(key: str) -> bool:
    lowered = key.lower()
    return any(marker in lowered for marker in SECRET_KEY_MARKERS)


def _checked_integer(key: str, value: str, source: str) -> str:
    bounds = INTEGER_RANGES.get(key)
    if bounds is None:
        return value
    low, high = bounds
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{source}: {key}: {value!r} is not an integer; write a number") from None
    if not low <= number <= high:
        raise ConfigError(
            f"{source}: {key}: {number} is outside librdkafka's range {low}..{high}; "
            "use a value in that range"
        )
    return str(number)


# --------------------------------------------------------------------------- TLS


def _sniff_store(key: str, path: str, source: str) -> StoreKind:
    shown = "the file it names" if _is_secret_key(key) else repr(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(65536)
    except OSError as exc:
        raise ConfigError(
            f"{source}: {key}: cannot read {shown} ({exc.strerror or type(exc).__name__}); "
            "check the path and its permissions"
        ) from None
    if b"-----BEGIN" in head:
        return "pem"
    if head[:4] in (b"\xfe\xed\xfe\xed", b"\xce\xce\xce\xce"):  # JKS, JCEKS
        return "jks"
    if head[:1] == b"\x30":  # DER SEQUENCE: PKCS#12
        return "pkcs12"
    return "unknown"


def _translate_tls(
    props: Mapping[str, str], source: str, settings: dict[str, str], warnings: list[str]
) -> None:
    _translate_truststore(props, source, settings, warnings)
    _translate_keystore(props, source, settings, warnings)

    if "ssl.endpoint.identification.algorithm" in props:
        algorithm = props["ssl.endpoint.identification.algorithm"].lower()
        if algorithm not in ("", "https"):
            raise ConfigError(
                f"{source}: ssl.endpoint.identification.algorithm: unsupported value "
                f"{algorithm!r}; use https, or an empty value to disable hostname verification"
            )
        settings["ssl.endpoint.identification.algorithm"] = algorithm or "none"
    else:  # Java's default since Kafka 2.0; said explicitly, whatever librdkafka's default is
        settings["ssl.endpoint.identification.algorithm"] = "https"

    suites = [s.strip() for s in props.get("ssl.cipher.suites", "").split(",") if s.strip()]
    if suites:
        if any(s.upper().startswith(("TLS_", "SSL_")) for s in suites):
            raise ConfigError(
                f"{source}: ssl.cipher.suites: Java (IANA) cipher-suite names are not OpenSSL "
                "names; rewrite them in OpenSSL form (see `openssl ciphers -stdname`) or remove "
                "the key to use OpenSSL's defaults"
            )
        settings["ssl.cipher.suites"] = ":".join(suites)


def _translate_truststore(
    props: Mapping[str, str], source: str, settings: dict[str, str], warnings: list[str]
) -> None:
    """The CA certificates go to librdkafka as PEM text (ssl.ca.pem), read from the file now: a
    PKCS12 truststore is converted, and a config reload sees a replaced file as a change."""
    location = props.get("ssl.truststore.location", "")
    inline = props.get("ssl.truststore.certificates", "")
    password = props.get("ssl.truststore.password", "")
    declared = props.get("ssl.truststore.type", "").upper()
    if location and inline:
        raise ConfigError(
            f"{source}: ssl.truststore.certificates: cannot be combined with "
            "ssl.truststore.location; keep only one of them"
        )
    if inline:
        if "-----BEGIN" not in inline:
            raise ConfigError(
                f"{source}: ssl.truststore.certificates: is not PEM; give PEM certificates "
                "(-----BEGIN CERTIFICATE-----), continuing lines with \\n\\"
            )
        settings["ssl.ca.pem"] = inline
    kind = _truststore_file(location, password, declared, source, settings) if location else None
    if password and kind != "pkcs12":
        warnings.append(
            f"{source}: ssl.truststore.password: ignored, only a PKCS12 truststore has a password"
        )


def _truststore_file(
    location: str, password: str, declared: str, source: str, settings: dict[str, str]
) -> StoreKind:
    """Reads the truststore file into settings["ssl.ca.pem"]; returns its kind."""
    kind = _sniff_store("ssl.truststore.location", location, source)
    if kind == "pem":
        certificates = _pem_blocks(_read(location, "ssl.truststore.location", source),
                                   _CERTIFICATE_BLOCK)
        if not certificates:
            raise ConfigError(
                f"{source}: ssl.truststore.location: {location!r} holds no PEM certificate "
                "(-----BEGIN CERTIFICATE-----); point it at the CA certificates"
            )
        settings["ssl.ca.pem"] = "".join(certificates)
    elif kind == "pkcs12":
        settings["ssl.ca.pem"] = _pkcs12_truststore(location, password, source)
    else:
        what = "a JKS" if kind == "jks" else "neither a PEM nor a PKCS12"
        if declared and declared not in ("PEM", "JKS", "PKCS12"):
            what += f" (ssl.truststore.type={declared})"
        raise ConfigError(
            f"{source}: ssl.truststore.location: {location!r} is {what} file and lag-exporter "
            "reads PEM or PKCS12 truststores; convert it, e.g. `keytool -exportcert -rfc "
            f"-keystore {location} -alias ALIAS -file ca.pem` (once per CA), then point "
            "ssl.truststore.location at ca.pem and set ssl.truststore.type=PEM"
        )
    return kind


def _translate_keystore(
    props: Mapping[str, str], source: str, settings: dict[str, str], warnings: list[str]
) -> None:
    """The client certificate chain and key go to librdkafka as PEM text (ssl.certificate.pem,
    ssl.key.pem), read from the file now, for the same reasons as the truststore's."""
    location = props.get("ssl.keystore.location", "")
    store_password = props.get("ssl.keystore.password", "")
    key_password = props.get("ssl.key.password", "")
    inline_key = props.get("ssl.keystore.key", "")
    inline_chain = props.get("ssl.keystore.certificate.chain", "")

    if inline_key or inline_chain:
        if location:
            raise ConfigError(
                f"{source}: ssl.keystore.key: cannot be combined with ssl.keystore.location; "
                "keep either the inline PEM key and chain or the keystore file"
            )
        if not (inline_key and inline_chain):
            missing = "ssl.keystore.key" if not inline_key else "ssl.keystore.certificate.chain"
            raise ConfigError(
                f"{source}: {missing}: missing; an inline PEM keystore needs both "
                "ssl.keystore.key and ssl.keystore.certificate.chain"
            )
        for key, value in (
            ("ssl.keystore.key", inline_key),
            ("ssl.keystore.certificate.chain", inline_chain),
        ):
            if "-----BEGIN" not in value:
                raise ConfigError(f"{source}: {key}: is not PEM; give the PEM text")
        settings["ssl.key.pem"] = inline_key
        settings["ssl.certificate.pem"] = inline_chain
        if key_password:
            settings["ssl.key.password"] = key_password
        return

    if not location:
        for key in ("ssl.keystore.password", "ssl.key.password"):
            if props.get(key):
                warnings.append(f"{source}: {key}: ignored, no client keystore is configured")
        return

    kind = _sniff_store("ssl.keystore.location", location, source)
    if kind == "pkcs12":
        if not store_password:
            raise ConfigError(
                f"{source}: ssl.keystore.password: missing; it is needed to open the PKCS12 "
                "keystore named by ssl.keystore.location, so add it"
            )
        settings["ssl.certificate.pem"], settings["ssl.key.pem"] = _pkcs12_keystore(
            location, store_password, key_password, source
        )
    elif kind == "pem":
        # A PEM keystore file holds the key and the chain, as Java's PEM keystore type.
        text = _read(location, "ssl.keystore.location", source)
        chain = _pem_blocks(text, _CERTIFICATE_BLOCK)
        keys = _pem_blocks(text, _PRIVATE_KEY_BLOCK)
        if not chain or len(keys) != 1:
            held = "no certificate" if not chain else f"{len(keys)} private keys"
            raise ConfigError(
                f"{source}: ssl.keystore.location: the PEM keystore holds {held}; it needs the "
                "certificate chain and exactly one private key"
            )
        settings["ssl.certificate.pem"] = "".join(chain)
        settings["ssl.key.pem"] = keys[0]
        if key_password:
            settings["ssl.key.password"] = key_password
    else:
        what = "a JKS" if kind == "jks" else "neither a PKCS12 nor a PEM"
        raise ConfigError(
            f"{source}: ssl.keystore.location: the file is {what} keystore and lag-exporter "
            "reads only PKCS12 or PEM; convert it, e.g. `keytool -importkeystore -srckeystore "
            "KEYSTORE -destkeystore client.p12 -deststoretype PKCS12`, then point "
            "ssl.keystore.location at client.p12 and set ssl.keystore.type=PKCS12"
        )


_CERTIFICATE_BLOCK: Final = re.compile(
    r"-----BEGIN CERTIFICATE-----[^-]*-----END CERTIFICATE-----"
)
_PRIVATE_KEY_BLOCK: Final = re.compile(
    r"-----BEGIN ((?:ENCRYPTED |RSA |EC |DSA )?PRIVATE KEY)-----[^-]*-----END \1-----"
)


def _pem_blocks(text: str, pattern: re.Pattern[str]) -> list[str]:
    return [match.group(0) + "\n" for match in pattern.finditer(text)]


def _read(path: str, key: str, source: str) -> str:
    shown = "the file it names" if _is_secret_key(key) else repr(path)
    try:
        with open(path, "rb") as handle:
            return handle.read().decode("ascii", errors="replace")
    except OSError as exc:
        raise ConfigError(
            f"{source}: {key}: cannot read {shown} ({exc.strerror or type(exc).__name__}); "
            "check the path and its permissions"
        ) from None


def _read_pkcs12(
    path: str, passwords: list[str], key: str, source: str
) -> PKCS12KeyAndCertificates | None:
    """The parsed store (cryptography's PKCS12KeyAndCertificates), opened with the first
    password that works; None when none does (wrong password, or not a PKCS12 file)."""
    from cryptography.hazmat.primitives.serialization import pkcs12  # only when TLS is used

    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise ConfigError(
            f"{source}: {key}: cannot read the file it names "
            f"({exc.strerror or type(exc).__name__}); check the path and its permissions"
        ) from None
    for password in passwords:
        try:
            return pkcs12.load_pkcs12(data, password.encode() if password else None)
        except ValueError:
            continue
    return None


def _pkcs12_truststore(location: str, password: str, source: str) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding

    store = _read_pkcs12(location, [password], "ssl.truststore.location", source)
    if store is None:
        which = "wrong" if password else "missing"
        raise StorePasswordError(
            f"{source}: ssl.truststore.password: {which} password for the PKCS12 truststore "
            f"{location!r} (or the file is damaged); set ssl.truststore.password to its password"
        )
    certificates = [entry.certificate for entry in store.additional_certs]
    if store.cert is not None:
        certificates.insert(0, store.cert.certificate)
    if not certificates:
        raise ConfigError(
            f"{source}: ssl.truststore.location: the PKCS12 truststore {location!r} holds no "
            "certificate; import the CA certificates into it"
        )
    return "".join(cert.public_bytes(Encoding.PEM).decode() for cert in certificates)


def _pkcs12_keystore(
    location: str, store_password: str, key_password: str, source: str
) -> tuple[str, str]:
    """(certificate chain, unencrypted key) as PEM text."""
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    passwords = [store_password] + ([key_password] if key_password not in ("", store_password)
                                    else [])
    store = _read_pkcs12(location, passwords, "ssl.keystore.location", source)
    if store is None:
        raise StorePasswordError(
            f"{source}: ssl.keystore.password: wrong password for the PKCS12 keystore named by "
            "ssl.keystore.location (or the file is damaged); the password is not shown"
        )
    if store.key is None or store.cert is None:
        raise ConfigError(
            f"{source}: ssl.keystore.location: the PKCS12 keystore holds no private key with "
            "its certificate; export the client key and certificate into it"
        )
    chain = [store.cert.certificate] + [entry.certificate for entry in store.additional_certs]
    chain_pem = "".join(cert.public_bytes(Encoding.PEM).decode() for cert in chain)
    key_pem = store.key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
    return chain_pem, key_pem


# --------------------------------------------------------------------------- SASL


def _translate_sasl(
    props: Mapping[str, str], source: str, settings: dict[str, str], warnings: list[str]
) -> None:
    mechanism = props.get("sasl.mechanism", "")
    jaas = props.get("sasl.jaas.config", "")
    if mechanism == "OAUTHBEARER":
        raise ConfigError(
            f"{source}: sasl.mechanism: OAUTHBEARER is not supported by lag-exporter; "
            "use PLAIN or SCRAM credentials"
        )
    if mechanism and mechanism not in SUPPORTED_SASL_MECHANISMS:
        raise ConfigError(
            f"{source}: sasl.mechanism: unknown mechanism {mechanism!r}; use one of "
            f"{', '.join(sorted(SUPPORTED_SASL_MECHANISMS))}"
        )

    if not jaas:
        if mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
            raise ConfigError(
                f"{source}: sasl.jaas.config: missing, but sasl.mechanism={mechanism} needs "
                "credentials; add sasl.jaas.config with a PlainLoginModule or ScramLoginModule "
                "and its username and password (a JVM-wide JAAS file is not read)"
            )
        settings["sasl.mechanism"] = "GSSAPI"
        warnings.append(
            f"{source}: sasl.mechanism: GSSAPI (Kerberos, the Java default); librdkafka will "
            "use its kinit command and ticket cache, not the JVM's JAAS file"
        )
        return

    module, options = _parse_jaas(jaas, source)
    if module not in (PLAIN_LOGIN_MODULE, SCRAM_LOGIN_MODULE):
        raise ConfigError(
            f"{source}: sasl.jaas.config: login module {module} is not supported; lag-exporter "
            f"supports only {PLAIN_LOGIN_MODULE} and {SCRAM_LOGIN_MODULE}"
        )
    short = module.rsplit(".", 1)[1]
    wanted = "PLAIN" if module == PLAIN_LOGIN_MODULE else "SCRAM-SHA-256 or SCRAM-SHA-512"
    if not mechanism:
        raise ConfigError(
            f"{source}: sasl.mechanism: missing while sasl.jaas.config uses {short}; Java "
            f"would default to GSSAPI (Kerberos) and fail, so set sasl.mechanism={wanted}"
        )
    if mechanism == "GSSAPI":
        raise ConfigError(
            f"{source}: sasl.mechanism: GSSAPI cannot use the {short} credentials in "
            f"sasl.jaas.config; set sasl.mechanism={wanted}"
        )
    for required in ("username", "password"):
        if not options.get(required):
            raise ConfigError(
                f"{source}: sasl.jaas.config: the {short} entry has no {required} option; "
                f'add {required}="..." before the closing ;'
            )
    for name, value in options.items():
        if name in ("username", "password"):
            continue
        if name == "tokenauth":
            if value.lower() == "true":
                raise ConfigError(
                    f"{source}: sasl.jaas.config: tokenauth=true (delegation-token SCRAM) is "
                    "not supported by librdkafka; use a regular SCRAM user"
                )
            continue
        # Not echoed: a mangled entry can put a secret where an option name belongs.
        warnings.append(
            f"{source}: sasl.jaas.config: an option other than username/password ignored "
            "(name not shown in case it is a secret)"
        )
    settings["sasl.mechanism"] = mechanism
    settings["sasl.username"] = options["username"]
    settings["sasl.password"] = options["password"]


def _parse_jaas(text: str, source: str) -> tuple[str, dict[str, str]]:
    """Parse Kafka's one-entry JAAS syntax: ``Module flag key=value ... ;``.

    Mirrors Kafka's JaasConfig (a java.io.StreamTokenizer): ``//`` and ``/* */`` comments,
    '"' or "'" quoted values with backslash escapes, unquoted word values. Messages never show
    tokens other than a module name that looks like a Java class name.
    """
    prefix = f"{source}: sasl.jaas.config:"
    tokens = _jaas_tokens(text, prefix)
    entries: list[tuple[str, dict[str, str]]] = []
    i = 0
    while i < len(tokens):
        kind, module = tokens[i]
        if kind != "word":
            raise ConfigError(f"{prefix} does not start with a login module class name; fix it")
        if not _JAVA_CLASS_NAME.fullmatch(module):
            raise ConfigError(f"{prefix} does not start with a login module class name; fix it")
        i += 1
        if (
            i >= len(tokens)
            or tokens[i][0] != "word"
            or tokens[i][1].lower() not in (JAAS_CONTROL_FLAGS)
        ):
            raise ConfigError(
                f"{prefix} {module} is not followed by a control flag; write "
                "required, requisite, sufficient or optional after the module name"
            )
        i += 1
        options: dict[str, str] = {}
        while i < len(tokens) and tokens[i] != ("punct", ";"):
            name_kind, name = tokens[i]
            if name_kind != "word":
                raise ConfigError(
                    f"{prefix} unexpected text where an option name was expected; "
                    'options look like name="value"'
                )
            if (
                i + 2 >= len(tokens)
                or tokens[i + 1] != ("punct", "=")
                or tokens[i + 2][0] not in ("word", "quoted")
            ):
                shown = name if name in JAAS_OPTION_NAMES else "an option (name not shown)"
                raise ConfigError(
                    f'{prefix} {shown} has no value; write name="value" pairs '
                    "(quote values containing characters other than letters, digits, . - _ $)"
                )
            options[name] = tokens[i + 2][1]
            i += 3
        if i >= len(tokens):
            raise ConfigError(f"{prefix} the entry is not terminated by ';'; add it at the end")
        i += 1
        entries.append((module, options))
    if len(entries) != 1:
        raise ConfigError(
            f"{prefix} contains {len(entries)} login modules; Kafka requires exactly one"
        )
    return entries[0]


_JAAS_ESCAPES: Final[Mapping[str, str]] = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
}


def _is_jaas_word_char(ch: str) -> bool:
    return ch.isalnum() or ch in "._-$" or ord(ch) >= 128


def _jaas_tokens(text: str, prefix: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace() or ord(ch) <= 32:
            i += 1
        elif text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise ConfigError(f"{prefix} unterminated /* comment; close it with */")
            i = end + 2
        elif ch in "\"'":
            value, i = _jaas_quoted(text, i, prefix)
            tokens.append(("quoted", value))
        elif _is_jaas_word_char(ch):
            start = i
            while i < n and _is_jaas_word_char(text[i]):
                i += 1
            tokens.append(("word", text[start:i]))
        else:
            tokens.append(("punct", ch))
            i += 1
    return tokens


def _jaas_quoted(text: str, start: int, prefix: str) -> tuple[str, int]:
    quote = text[start]
    out: list[str] = []
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == quote:
            return "".join(out), i + 1
        if ch in "\r\n":
            break
        if ch == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt in "01234567":
                j = i + 1
                limit = j + (3 if nxt in "0123" else 2)
                while j < limit and j < len(text) and text[j] in "01234567":
                    j += 1
                out.append(chr(int(text[i + 1 : j], 8)))
                i = j
                continue
            out.append(_JAAS_ESCAPES.get(nxt, nxt))
            i += 2
            continue
        out.append(ch)
        i += 1
    raise ConfigError(
        f"{prefix} a quoted value is not closed; end it with a matching {quote} "
        '(escape quotes inside it as \\\\\\" in a properties file)'
    )
