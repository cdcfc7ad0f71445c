"""Settings, validated before any I/O. Every problem is a ConfigError with a one-line message."""

from __future__ import annotations

import importlib.util
import math
import os
import re
import tomllib
from dataclasses import dataclass, replace
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import urlsplit

from lag_exporter.errors import ConfigError
from lag_exporter.kafka_properties import load_command_config, to_librdkafka
from lag_exporter.mm2 import (
    DEFAULT_CONNECTOR,
    DEFAULT_SEPARATOR,
    DEFAULT_SOURCE_ALIAS,
    DEFAULT_TARGET_ALIAS,
    REPLICATION_POLICIES,
    MirrorSettings,
    ReplicationPolicy,
    default_label,
    default_offsets_topic,
)
from lag_exporter.selection import GroupSelection, TopicSelection
from lag_exporter.status import StatusRules

# Secrets come from the environment (or files), never from argv, where `ps` shows them.
ES_PASSWORD_ENV = "LAG_EXPORTER_ES_PASSWORD"
ES_API_KEY_ENV = "LAG_EXPORTER_ES_API_KEY"
OPENSEARCH_PASSWORD_ENV = "LAG_EXPORTER_OPENSEARCH_PASSWORD"
OPENSEARCH_API_KEY_ENV = "LAG_EXPORTER_OPENSEARCH_API_KEY"

# Elasticsearch's own rules for index names.
_INDEX_FORBIDDEN = set('\\/*?"<>| ,#:')

MIB = 1024 * 1024
DEFAULT_SPOOL_MAX_MB = 1024
DEFAULT_MEMORY_MAX_MB = 64


@dataclass(frozen=True)
class Bounds:
    """The valid range of a number setting, shared by its flag and its config key."""

    minimum: float
    maximum: float = math.inf
    minimum_included: bool = False
    unit: str = "seconds"

    def describe(self) -> str:
        low = (f"at least {self.minimum:g}" if self.minimum_included
               else f"greater than {self.minimum:g}")
        return low if self.maximum == math.inf else f"{low} and at most {self.maximum:g}"

    def problem(self, value: object) -> str | None:
        """None when `value` is a finite number in range, else what is wrong with it."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"must be a number of {self.unit}, got {_shown_value(value)}"
        above = value >= self.minimum if self.minimum_included else value > self.minimum
        finite = isinstance(value, int) or math.isfinite(value)  # no float(int): may overflow
        if not (above and value <= self.maximum and finite):
            return f"must be {self.describe()} {self.unit}, got {_shown_value(value)}"
        return None


INTERVAL = Bounds(0, 3600)
# librdkafka accepts socket.timeout.ms from 10 to 300,000 only.
TIMEOUT = Bounds(0.01, 300, minimum_included=True)
DISCOVERY_INTERVAL = Bounds(0, 86400)
HA_SESSION_TIMEOUT = Bounds(1, 300, minimum_included=True)
HA_GROUP_NAME = re.compile(r"[A-Za-z0-9._-]{1,200}")
"""Also part of the own topic's name (lag-exporter-ha.<NAME>): Kafka's topic characters."""
SUMMARY_INTERVAL = Bounds(0)
MEGABYTES = Bounds(0, 1024 * 1024, unit="MiB")  # up to 1 TiB
DEFAULT_STATUS_RULES = StatusRules()
STATUS_WINDOW = Bounds(0, 7 * 86400)
STOP_AFTER = Bounds(0, 7 * 86400)
ALLOWED_LAG = Bounds(0, 2**62, minimum_included=True, unit="records")


def check_number(flag: str, value: float, bounds: Bounds) -> float:
    """A number flag (--interval, --timeout, ...), checked against the same bounds as its key."""
    problem = bounds.problem(value)
    if problem:
        raise ConfigError(f"{flag} {problem}")
    return value


def check_interval(interval_s: float) -> float:
    return check_number("--interval", interval_s, INTERVAL)


def check_timeout(timeout_s: float) -> float:
    return check_number("--timeout", timeout_s, TIMEOUT)


def megabytes_to_bytes(megabytes: float) -> int:
    return max(1, int(megabytes * MIB))


def check_ha_group(where: str, name: str) -> str | None:
    """Why an HA group name is not valid; None when it is."""
    if HA_GROUP_NAME.fullmatch(name):
        return None
    return (f"{where} must be 1 to 200 of the characters A-Z a-z 0-9 . _ - "
            f"(it names a Kafka group and topic), got {name!r}")


def check_names(flag: str, names: tuple[str, ...]) -> tuple[str, ...]:
    """Group names from flags: Kafka has no empty names (and the client raises)."""
    if any(not name for name in names):
        raise ConfigError(f"{flag} must not be empty")
    return names


_TOPIC_NAME_CHARACTERS = re.compile(r"[a-zA-Z0-9._-]+")
TOPIC_NAME_MAX_LENGTH = 249


def topic_name_problem(name: str) -> str | None:
    """Why Kafka can have no topic of this name (its Topic.validate), None when it can: an
    explicit topic that can never exist is a typo to report, not a topic to wait for."""
    if not name:
        return "must not be empty"
    if name in (".", ".."):
        return "cannot be '.' or '..'"
    if len(name) > TOPIC_NAME_MAX_LENGTH:
        return f"is {len(name)} characters long, Kafka allows {TOPIC_NAME_MAX_LENGTH}"
    if not _TOPIC_NAME_CHARACTERS.fullmatch(name):
        return "is not a Kafka topic name: ASCII letters, digits, '.', '_' and '-' only"
    return None


def check_topic_names(flag: str, names: tuple[str, ...]) -> tuple[str, ...]:
    """Topic names from flags (--topic), as Kafka allows them."""
    for name in names:
        if (problem := topic_name_problem(name)) is not None:
            raise ConfigError(f"{flag} {problem}" if not name else f"{flag} {name!r} {problem}")
    return names


DocumentShape = Literal["wide", "partition"]


@dataclass(frozen=True)
class ElasticsearchSettings:
    urls: tuple[str, ...]
    index: str = "consumer_lag"
    username: str | None = None
    password: str | None = None
    api_key: str | None = None
    ca_file: str | None = None
    timeout_s: float = 10.0
    document_shape: DocumentShape = "wide"
    """"wide": one `consumer_lag` document per group x topic (p0..pN); "partition": one per
    partition, for topics too wide for one document."""

    def __repr__(self) -> str:  # never show secrets, even in a debugger or a traceback
        return f"ElasticsearchSettings(urls={self.urls!r}, index={self.index!r})"


DEFAULT_CLOUDWATCH_NAMESPACE = "KafkaLag"
CLOUDWATCH_INSTALL = "pip install 'lag-exporter[cloudwatch]'"
CLOUDWATCH_OWN_DIMENSIONS = ("Cluster Name", "Consumer Group", "Topic", "Partition")
"""The dimensions every metric already has (Amazon MSK's names): not extra dimensions."""
CLOUDWATCH_MAX_DIMENSIONS = 30
"""PutMetricData's limit per metric."""


@dataclass(frozen=True)
class CloudWatchSettings:
    """Where the metrics go. Credentials come from the standard AWS chain only (environment,
    shared config and credentials files, SSO, an instance or task role), never from here."""

    namespace: str = DEFAULT_CLOUDWATCH_NAMESPACE
    region: str | None = None
    """None: the chain's region (AWS_REGION, AWS_DEFAULT_REGION, ~/.aws/config)."""
    endpoint_url: str | None = None
    """A VPC endpoint, or a local stand-in (moto's server) in tests."""
    dimensions: tuple[tuple[str, str], ...] = ()
    """Extra dimensions of every metric, e.g. (("Environment", "prod"),)."""
    partition_metrics_interval_s: float | None = None
    """Per-partition OffsetLag at most once per this many seconds (aligned on the clock);
    None: with every sample; 0: never."""
    timeout_s: float = 10.0


@dataclass(frozen=True)
class KafkaSettings:
    cluster: str
    client_settings: dict[str, str]
    """librdkafka settings; may hold SASL/SSL secrets, so never logged whole."""
    warnings: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return (f"KafkaSettings(cluster={self.cluster!r}, "
                f"bootstrap={self.client_settings.get('bootstrap.servers')!r})")


def kafka_settings(
    bootstrap_server: str | None, command_config: str | None, cluster: str | None = None
) -> KafkaSettings:
    """cluster: the name in the documents; by default the bootstrap servers as given, which
    tells clusters apart without asking Kafka anything first."""
    client_settings: dict[str, str] = {}
    warnings: list[str] = []
    if command_config:
        client_settings, warnings = load_command_config(command_config)
    if bootstrap_server:
        client_settings["bootstrap.servers"] = bootstrap_server
    bootstrap = client_settings.get("bootstrap.servers")
    if not bootstrap:
        raise ConfigError("no Kafka cluster given: pass --bootstrap-server (or set "
                          "bootstrap.servers in the --command-config file)")
    return KafkaSettings(cluster or bootstrap, client_settings, tuple(warnings))


def check_index_name(index: str) -> str:
    problem = None
    if not index:
        problem = "it is empty"
    elif index != index.lower():
        problem = "it must be lowercase"
    elif _INDEX_FORBIDDEN & set(index):
        problem = f"it must not contain any of {''.join(sorted(_INDEX_FORBIDDEN))!r}"
    elif index.startswith(("-", "_", "+")) or index in (".", ".."):
        problem = "it must not start with '-', '_' or '+', nor be '.' or '..'"
    elif len(index.encode()) > 255:
        problem = "it is longer than 255 bytes"
    if problem is not None:
        raise ConfigError(f"invalid Elasticsearch index name {index!r}: {problem}")
    return index


def check_es_url(url: str) -> str:
    if "@" in url:  # checked first: the message below shows the URL
        raise ConfigError("Elasticsearch URL must not carry credentials: use --es-username "
                          f"and ${ES_PASSWORD_ENV} (or ${ES_API_KEY_ENV})")
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("http", "https") or not parts.hostname or port == -1:
        raise ConfigError(f"malformed Elasticsearch URL {url!r}: expected "
                          "http(s)://host[:port], e.g. http://127.0.0.1:9200")
    return url


def elasticsearch_settings(
    urls: tuple[str, ...],
    index: str,
    username: str | None,
    ca_file: str | None,
    timeout_s: float,
) -> ElasticsearchSettings | None:
    """None when no URL is given (then watch prints documents to stdout)."""
    split_urls = tuple(u for url in urls for u in url.replace(",", " ").split())
    if not split_urls:
        return None
    for url in split_urls:
        check_es_url(url)
    password = os.environ.get(ES_PASSWORD_ENV) or None
    api_key = os.environ.get(ES_API_KEY_ENV) or None
    if username and not password:
        raise ConfigError(f"--es-username is set but ${ES_PASSWORD_ENV} is empty")
    if ca_file and not Path(ca_file).is_file():
        raise ConfigError(f"--es-ca-file {ca_file}: no such file")
    return ElasticsearchSettings(
        urls=split_urls,
        index=check_index_name(index),
        username=username,
        password=password,
        api_key=api_key,
        ca_file=ca_file,
        timeout_s=timeout_s,
    )


def default_spool_dir(index: str) -> Path:
    """Per user, per index: $XDG_STATE_HOME/lag-exporter/spool/<index>."""
    state_home = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state_home) / "lag-exporter" / "spool" / re.sub(r"[^a-z0-9_.-]", "_", index)


def with_default_spool_dir(config: ExporterConfig) -> ExporterConfig:
    """The default spool directory when a sink that spools is configured and none is given:
    named after the Elasticsearch index (as before), else the OpenSearch index, else
    'cloudwatch'. Each sink but Elasticsearch spools in a subdirectory of it (app.py)."""
    if config.spool_dir is not None:
        return config
    name = next((settings.index for settings in (config.elasticsearch, config.opensearch)
                 if settings is not None), "cloudwatch" if config.cloudwatch else None)
    return config if name is None else replace(config, spool_dir=default_spool_dir(name))


# -- the TOML config file (--config) ---------------------------------------------------------


OffsetsSource = Literal["auto", "topic", "admin"]
OFFSETS_SOURCES = ("auto", "topic", "admin")
"""auto: __consumer_offsets when readable, else the Admin API; topic: __consumer_offsets or
fail; admin: OffsetFetch per group."""


@dataclass(frozen=True)
class ClusterConfig:
    name: str
    kafka: KafkaSettings
    groups: GroupSelection
    topics: TopicSelection
    mirrors: tuple[MirrorSettings, ...] = ()
    """MirrorMaker 2 flows from this cluster, reported as groups named by their labels (which
    are also in `groups.names`)."""
    offsets_source: OffsetsSource = "auto"
    """How watch and top read committed offsets (commit_follower.py); snapshot always asks
    the Admin API."""

    @property
    def has_consumer_groups(self) -> bool:
        """Whether consumer groups are reported besides the mirrors: a cluster watched only for
        its MirrorMaker 2 flows has no commits to follow in `__consumer_offsets` (reading
        another application's 10,000 commits a second there cost ~45 ms per sample)."""
        mirror_labels = {mirror.label for mirror in self.mirrors}
        return bool(self.groups.patterns) or any(name not in mirror_labels
                                                 for name in self.groups.names)


@dataclass(frozen=True)
class ExporterConfig:
    """Everything `watch` needs, from a config file and/or the command line."""

    clusters: tuple[ClusterConfig, ...]
    elasticsearch: ElasticsearchSettings | None = None
    opensearch: ElasticsearchSettings | None = None
    """The same settings and documents as Elasticsearch's, written with opensearch-py."""
    cloudwatch: CloudWatchSettings | None = None
    interval_s: float = 1.0
    timeout_s: float = 10.0
    discovery_interval_s: float = 30.0
    spool_dir: Path | None = None
    http_host: str = "0.0.0.0"
    http_port: int | None = None
    status_rules: StatusRules = DEFAULT_STATUS_RULES
    """The verdict's window, allowed lag and STOP/STALL threshold (status.py)."""
    spool_max_bytes: int = DEFAULT_SPOOL_MAX_MB * MIB
    """Disk bound of the outbox's spool."""
    memory_max_bytes: int = DEFAULT_MEMORY_MAX_MB * MIB
    """Memory bound of the outbox: all of it without a spool, what is not yet on disk with one."""
    ha_group: str | None = None
    """--ha-group: the Kafka consumer group through which several instances share the work."""
    ha_session_timeout_s: float = 10.0
    """How long a dead instance keeps its share before the others take it over."""


TOP_KEYS = {"interval", "timeout", "discovery_interval", "spool_dir", "spool_max_mb",
            "memory_max_mb", "http_host", "http_port", "elasticsearch", "opensearch",
            "cloudwatch", "cluster", "status", "ha_group", "ha_session_timeout"}
STATUS_KEYS = {"window", "allowed_lag", "stop_after"}
ES_KEYS = {"urls", "index", "username", "password", "password_file", "api_key", "api_key_file",
           "ca_file", "document_shape"}
"""The keys of [elasticsearch] and of [opensearch]."""
DOCUMENT_SHAPES: tuple[DocumentShape, ...] = ("wide", "partition")
CLOUDWATCH_KEYS = {"namespace", "region", "endpoint_url", "dimensions",
                   "partition_metrics_interval_s"}
PARTITION_METRICS_INTERVAL = Bounds(0, 86400, minimum_included=True)
_CREDENTIAL_WORDS = ("key", "secret", "token", "password", "credential", "profile")
"""A [cloudwatch] key with one of these words in its name is taken for a credential."""
_AWS_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]+")
CLUSTER_KEYS = {"name", "bootstrap_servers", "command_config", "client", "groups",
                "group_patterns", "exclude_groups", "topics", "topic_patterns", "exclude_topics",
                "mirror", "offsets_source"}
MIRROR_KEYS = {"label", "target_bootstrap_servers", "target_command_config", "source_alias",
               "target_alias", "offsets_topic", "connector", "topic_patterns", "exclude_topics",
               "replication_policy", "replication_policy_separator"}


def _toml_type(value: object) -> str:
    kinds: list[tuple[type | tuple[type, ...], str]] = [
        (bool, "a boolean"), (int, "an integer"), (float, "a float"), (str, "a string"),
        (list, "an array"), (dict, "a table"), ((datetime, date, time), "a date/time")]
    return next((name for kind, name in kinds if isinstance(value, kind)), type(value).__name__)


def _shown_value(value: object) -> str:
    """A value in a message: short scalars as they are, anything else by its TOML type."""
    if isinstance(value, float) and math.isfinite(value) and float(f"{value:g}") == value:
        return f"{value:g}"  # 0, not 0.0 (flags are floats)
    if isinstance(value, bool | int | float | str):
        text = repr(value)
        if len(text) <= 40:
            return text
    return _toml_type(value)


def _one_line(text: str) -> str:
    """Keys and values come from the file: escape anything that would break the line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class _Problems:
    """Collects every problem of a config file, so that one run shows them all."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: list[str] = []

    def add(self, key: str, problem: str) -> None:
        self.lines.append(_one_line(f"{self.source}: {key}: {problem}"))

    def unknown_keys(self, table: dict[str, Any], known: set[str], where: str) -> None:
        for key in sorted(set(table) - known):
            self.add(f"{where}{key}", f"unknown key (known: {', '.join(sorted(known))})")

    def raise_if_any(self) -> None:
        if self.lines:
            raise ConfigError("; ".join(self.lines))


def _number(table: dict[str, Any], key: str, default: float, bounds: Bounds,
            problems: _Problems) -> float:
    value = table.get(key, default)
    problem = bounds.problem(value)
    if problem:
        problems.add(key, problem)
        return default
    return float(value)


def _string(table: dict[str, Any], key: str, problems: _Problems, where: str,
            secret: bool = False) -> str | None:
    """An optional non-empty string; a secret's value is never shown."""
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        got = "" if secret else f", got {_shown_value(value)}"
        problems.add(f"{where}{key}", f"must be a non-empty string{got}")
        return None
    return value


def _path(table: dict[str, Any], key: str, base: Path, problems: _Problems, where: str,
          must_be_file: bool = False) -> Path | None:
    """A path relative to the config file's directory."""
    text = _string(table, key, problems, where)
    if text is None:
        return None
    if "\0" in text:
        problems.add(f"{where}{key}", "a path cannot contain a NUL character")
        return None
    path = base / text
    if must_be_file and not path.is_file():
        problems.add(f"{where}{key}", f"no such file: {path}")
        return None
    return path


def _strings(table: dict[str, Any], key: str, problems: _Problems, where: str) -> tuple[str, ...]:
    value = table.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.add(f"{where}{key}", f"must be a list of strings, got {_shown_value(value)}")
        return ()
    if not all(value):
        problems.add(f"{where}{key}", "must not contain an empty string")
        return ()
    return tuple(value)


def _topic_names(table: dict[str, Any], key: str, problems: _Problems, where: str
                 ) -> tuple[str, ...]:
    names = _strings(table, key, problems, where)
    for n, name in enumerate(names):
        if (problem := topic_name_problem(name)) is not None:
            problems.add(f"{where}{key}[{n}]", f"{name!r} {problem}")
    return names


def _regexes(table: dict[str, Any], key: str, problems: _Problems, where: str
             ) -> tuple[re.Pattern[str], ...]:
    compiled = []
    for n, text in enumerate(_strings(table, key, problems, where)):
        try:
            compiled.append(re.compile(text))
        except (re.error, OverflowError, RecursionError) as error:
            problems.add(f"{where}{key}[{n}]", f"invalid regex {text!r}: {error}")
    return tuple(compiled)


def _secret(table: dict[str, Any], key: str, base: Path, problems: _Problems, where: str
            ) -> str | None:
    """`key` inline or `key_file` (a path, relative to the config file); never echoed."""
    inline = _string(table, key, problems, where, secret=True)
    path = _path(table, f"{key}_file", base, problems, where, must_be_file=True)
    if path is None:
        return inline
    try:
        return path.read_text().strip()
    except OSError as error:
        problems.add(f"{where}{key}_file", f"cannot read {path}: {error.strerror}")
    except UnicodeDecodeError:
        problems.add(f"{where}{key}_file", f"cannot read {path}: not UTF-8 text")
    return None


def _elasticsearch(table: dict[str, Any], base: Path, timeout_s: float, problems: _Problems,
                   section: str = "elasticsearch") -> ElasticsearchSettings | None:
    """[elasticsearch], or [opensearch] (same keys and checks; its own secret variables)."""
    where = f"{section}."
    problems.unknown_keys(table, ES_KEYS, where)
    urls = _strings(table, "urls", problems, where)
    username = _string(table, "username", problems, where)
    ca_file = _path(table, "ca_file", base, problems, where, must_be_file=True)
    # Checked even when the environment overrides them: a wrong file is wrong either way.
    password = _secret(table, "password", base, problems, where)
    api_key = _secret(table, "api_key", base, problems, where)
    shape = _string(table, "document_shape", problems, where) or "wide"
    if shape not in DOCUMENT_SHAPES:
        problems.add(f"{where}document_shape", f"must be 'wide' (one document per group x "
                     f"topic) or 'partition' (one per partition), got {_shown_value(shape)}")
        shape = "wide"
    # Each shape its own index by default: an index holds one shape (the sinks check).
    index = (_string(table, "index", problems, where)
             or ("consumer_lag_partitions" if shape == "partition" else "consumer_lag"))
    if section == "opensearch" and (api_key or os.environ.get(OPENSEARCH_API_KEY_ENV)):
        given = ("api_key_file" if "api_key_file" in table and "api_key" not in table
                 else "api_key")  # the key the file has, to be found by its name
        problems.add(f"{where}{given}", "OpenSearch takes username and password, not an "
                     "Elasticsearch API key")
    if table.get("urls") in (None, []):
        problems.add(f"{where}urls", f"give at least one URL, or leave out [{section}]")
    for checked_key, check, values in (("urls", check_es_url, urls),
                                       ("index", check_index_name, (index,))):
        for value in values:
            try:
                check(value)
            except ConfigError as error:
                problems.add(f"{where}{checked_key}", str(error))
    if not urls:
        return None
    password_env, api_key_env = ((ES_PASSWORD_ENV, ES_API_KEY_ENV) if section == "elasticsearch"
                                 else (OPENSEARCH_PASSWORD_ENV, OPENSEARCH_API_KEY_ENV))
    return ElasticsearchSettings(
        urls=urls, index=index, username=username,
        password=os.environ.get(password_env) or password,
        api_key=os.environ.get(api_key_env) or api_key,
        ca_file=str(ca_file) if ca_file else None, timeout_s=timeout_s,
        document_shape="partition" if shape == "partition" else "wide")


def _cloudwatch_dimensions(table: dict[str, Any], problems: _Problems
                           ) -> tuple[tuple[str, str], ...]:
    """[cloudwatch.dimensions]: names and values as CloudWatch takes them (ASCII, 1-255 and
    1-1024 characters), none of the metrics' own, at most 30 in all."""
    value = table.get("dimensions", {})
    if not isinstance(value, dict):
        problems.add("cloudwatch.dimensions", "must be a table of names and values, e.g. "
                     f"dimensions = {{ Environment = \"prod\" }}, got {_toml_type(value)}")
        return ()
    dimensions = []
    for name, text in value.items():
        where = f"cloudwatch.dimensions.{name}"
        if not isinstance(text, str) or not text or len(text) > 1024 or not text.isascii():
            problems.add(where, "must be a string of 1 to 1024 ASCII characters, got "
                         f"{_shown_value(text)}")
        elif not name or len(name) > 255 or not name.isascii() or name.startswith(":"):
            problems.add(where, "a dimension name has 1 to 255 ASCII characters, not starting "
                         "with ':'")
        elif name in CLOUDWATCH_OWN_DIMENSIONS:
            problems.add(where, f"every metric has it already (from the samples): "
                         f"{', '.join(CLOUDWATCH_OWN_DIMENSIONS)}")
        else:
            dimensions.append((name, text))
    room = CLOUDWATCH_MAX_DIMENSIONS - len(CLOUDWATCH_OWN_DIMENSIONS)
    if len(value) > room:
        problems.add("cloudwatch.dimensions", f"at most {room} (CloudWatch takes "
                     f"{CLOUDWATCH_MAX_DIMENSIONS} per metric, "
                     f"{len(CLOUDWATCH_OWN_DIMENSIONS)} are the metrics' own), got {len(value)}")
    return tuple(dimensions)


def _cloudwatch(table: dict[str, Any], timeout_s: float, problems: _Problems
                ) -> CloudWatchSettings | None:
    credentials = sorted(key for key in table
                         if any(word in key.lower() for word in _CREDENTIAL_WORDS))
    for key in credentials:  # its value is never shown
        problems.add(f"cloudwatch.{key}", "AWS credentials never go in the config file: they "
                     "come from the standard AWS chain (AWS_ACCESS_KEY_ID / "
                     "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, an instance or task role)")
    problems.unknown_keys({k: v for k, v in table.items() if k not in credentials},
                          CLOUDWATCH_KEYS, "cloudwatch.")
    namespace = (_string(table, "namespace", problems, "cloudwatch.")
                 or DEFAULT_CLOUDWATCH_NAMESPACE)
    if (len(namespace) > 255 or not namespace.isascii() or ":" in namespace
            or namespace.startswith("AWS/")):
        problems.add("cloudwatch.namespace", "must be 1 to 255 ASCII characters without ':', "
                     f"not starting with 'AWS/' (reserved for AWS), got {_shown_value(namespace)}")
    region = _string(table, "region", problems, "cloudwatch.")
    if region is not None and not _AWS_REGION.fullmatch(region):
        problems.add("cloudwatch.region", f"not an AWS region name such as 'eu-west-1', got "
                     f"{_shown_value(region)}")
    endpoint_url = _string(table, "endpoint_url", problems, "cloudwatch.")
    if endpoint_url is not None:
        parts = urlsplit(endpoint_url)
        if "@" in endpoint_url or parts.scheme not in ("http", "https") or not parts.hostname:
            problems.add("cloudwatch.endpoint_url", "expected http(s)://host[:port] without "
                         "credentials, e.g. https://monitoring.eu-west-1.amazonaws.com")
    interval = table.get("partition_metrics_interval_s")
    problem = None if interval is None else PARTITION_METRICS_INTERVAL.problem(interval)
    if problem:
        problems.add("cloudwatch.partition_metrics_interval_s", problem + " (0: never)")
        interval = None
    if importlib.util.find_spec("boto3") is None:
        problems.add("cloudwatch", f"needs boto3, which is not installed: {CLOUDWATCH_INSTALL}")
    return CloudWatchSettings(
        namespace=namespace, region=region, endpoint_url=endpoint_url,
        dimensions=_cloudwatch_dimensions(table, problems),
        partition_metrics_interval_s=None if interval is None else float(interval),
        timeout_s=timeout_s)


def _table(document: dict[str, Any], name: str, problems: _Problems) -> dict[str, Any] | None:
    """An optional [name] section; anything but a table there is a problem."""
    table = document.get(name)
    if table is not None and not isinstance(table, dict):
        problems.add(name, f"must be a table ([{name}]), got {_shown_value(table)}")
        return None
    return table


def _client_properties(table: dict[str, Any], problems: _Problems, where: str
                       ) -> dict[str, str] | None:
    """The inline `client` table: Java client properties, so scalar values only."""
    inline = table.get("client", {})
    if not isinstance(inline, dict):
        problems.add(f"{where}client", "must be a table of Java client properties, got "
                     f"{_toml_type(inline)}")
        return None
    properties: dict[str, str] = {}
    for key, value in inline.items():
        if isinstance(value, bool):
            properties[key] = "true" if value else "false"  # as Java writes them
        elif isinstance(value, str | int | float):
            properties[key] = str(value)
        else:  # the value may be a secret: only its type is shown
            problems.add(f"{where}client.{key}", "must be a string, number or boolean, got "
                         f"{_toml_type(value)}")
    return properties if len(properties) == len(inline) else None


def _cluster(table: object, n: int, base: Path, problems: _Problems) -> ClusterConfig | None:
    if not isinstance(table, dict):
        problems.add(f"cluster[{n}]", "must be a table: write one [[cluster]] section per "
                     f"cluster, got {_shown_value(table)}")
        return None
    name = table.get("name")
    if not isinstance(name, str) or not name:
        problems.unknown_keys(table, CLUSTER_KEYS, f"cluster[{n}].")
        problems.add(f"cluster[{n}].name", "every [[cluster]] needs a name, a non-empty string "
                     "(it goes into documents)")
        return None
    where = f"cluster[{name}]."
    problems.unknown_keys(table, CLUSTER_KEYS, where)
    client: dict[str, str] = {}
    warnings: list[str] = []
    command_config = _path(table, "command_config", base, problems, where, must_be_file=True)
    if command_config is not None:
        try:
            client, warnings = load_command_config(command_config)
        except ConfigError as error:
            problems.add(f"{where}command_config", str(error))
    inline = _client_properties(table, problems, where)
    if inline:
        try:
            extra, more = to_librdkafka(inline, f"{problems.source} {where}client")
            client.update(extra)
            warnings += more
        except ConfigError as error:
            problems.add(f"{where}client", str(error))
    bootstrap = _string(table, "bootstrap_servers", problems, where)
    if bootstrap:
        client["bootstrap.servers"] = bootstrap
    if not client.get("bootstrap.servers") and "bootstrap_servers" not in table:
        problems.add(f"{where}bootstrap_servers", "missing (or set it in command_config)")
    mirrors = _mirrors(table, base, problems, where, warnings)
    names = _strings(table, "groups", problems, where)
    for label in sorted({m.label for m in mirrors} & set(names)):
        problems.add(f"{where}mirror", f"label {label!r} is also a group: give another label")
    groups = GroupSelection(names + tuple(m.label for m in mirrors),
                            _regexes(table, "group_patterns", problems, where),
                            _regexes(table, "exclude_groups", problems, where))
    if not table.get("groups") and not table.get("group_patterns") and not mirrors:
        problems.add(f"{where}groups", "give groups and/or group_patterns (or a mirror)")
    topics = TopicSelection(_topic_names(table, "topics", problems, where),
                            _regexes(table, "topic_patterns", problems, where),
                            _regexes(table, "exclude_topics", problems, where))
    offsets_source = _string(table, "offsets_source", problems, where) or "auto"
    if offsets_source not in OFFSETS_SOURCES:
        problems.add(f"{where}offsets_source",
                     f"must be auto, topic or admin, got {_shown_value(offsets_source)}")
        offsets_source = "auto"
    return ClusterConfig(name, KafkaSettings(name, client, tuple(warnings)), groups, topics,
                         mirrors, cast(OffsetsSource, offsets_source))


def _mirrors(table: dict[str, Any], base: Path, problems: _Problems, where: str,
             warnings: list[str]) -> tuple[MirrorSettings, ...]:
    """[[cluster.mirror]]: MirrorMaker 2 flows from this cluster (mm2.py)."""
    tables = table.get("mirror", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        problems.add(f"{where}mirror", "write one [[cluster.mirror]] table per MirrorMaker 2 "
                     f"flow, got {_shown_value(tables)}")
        return ()
    mirrors = []
    for n, mirror in enumerate(tables):
        at = f"{where}mirror[{n}]."
        problems.unknown_keys(mirror, MIRROR_KEYS, at)
        client: dict[str, str] = {}
        command_config = _path(mirror, "target_command_config", base, problems, at,
                               must_be_file=True)
        if command_config is not None:
            try:
                client, more = load_command_config(command_config)
                warnings += [f"mirror[{n}] target_command_config: {w}" for w in more]
            except ConfigError as error:
                problems.add(f"{at}target_command_config", str(error))
        bootstrap = _string(mirror, "target_bootstrap_servers", problems, at)
        if bootstrap:
            client["bootstrap.servers"] = bootstrap
        if not client.get("bootstrap.servers") and "target_bootstrap_servers" not in mirror:
            problems.add(f"{at}target_bootstrap_servers",
                         "missing (or set it in target_command_config)")
        source_alias = _string(mirror, "source_alias", problems, at) or DEFAULT_SOURCE_ALIAS
        target_alias = _string(mirror, "target_alias", problems, at) or DEFAULT_TARGET_ALIAS
        mirrors.append(MirrorSettings(
            label=(_string(mirror, "label", problems, at)
                   or default_label(source_alias, target_alias)),
            target_settings=client,
            offsets_topic=(_string(mirror, "offsets_topic", problems, at)
                           or default_offsets_topic(source_alias)),
            source_alias=source_alias, target_alias=target_alias,
            connector=_string(mirror, "connector", problems, at) or DEFAULT_CONNECTOR,
            topics=TopicSelection(patterns=_regexes(mirror, "topic_patterns", problems, at),
                                  exclude=_regexes(mirror, "exclude_topics", problems, at)),
            replication_policy=_replication_policy(mirror, problems, at),
            replication_separator=_replication_separator(mirror, problems, at)))
    labels = [m.label for m in mirrors]
    for label in sorted({label for label in labels if labels.count(label) > 1}):
        problems.add(f"{where}mirror", f"label {label!r} used twice")
    return tuple(mirrors)


def _replication_policy(mirror: dict[str, Any], problems: _Problems, at: str
                        ) -> ReplicationPolicy:
    """MirrorMaker 2's replication.policy.class, for the replicated topics' names."""
    policy = _string(mirror, "replication_policy", problems, at) or "default"
    for known in REPLICATION_POLICIES:
        if policy == known:
            return known
    problems.add(f"{at}replication_policy",
                 "must be 'default' (DefaultReplicationPolicy: <source alias><separator><topic>)"
                 " or 'identity' (IdentityReplicationPolicy: the source topic's name), got "
                 f"{_shown_value(policy)}")
    return "default"


def _replication_separator(mirror: dict[str, Any], problems: _Problems, at: str) -> str:
    """MirrorMaker 2's replication.policy.separator: it goes into topic names."""
    separator = _string(mirror, "replication_policy_separator", problems, at)
    if separator is None:
        return DEFAULT_SEPARATOR
    if not _TOPIC_NAME_CHARACTERS.fullmatch(separator):
        problems.add(f"{at}replication_policy_separator",
                     "must be characters allowed in a topic name (letters, digits, '.', '_', "
                     f"'-'), got {_shown_value(separator)}")
        return DEFAULT_SEPARATOR
    return separator


def _clusters(document: dict[str, Any], base: Path, problems: _Problems) -> list[ClusterConfig]:
    tables = document.get("cluster")
    if isinstance(tables, dict):
        problems.add("cluster", "write [[cluster]] (an array of tables), not [cluster]")
        return []
    if not isinstance(tables, list) or not tables:
        problems.add("cluster", "describe at least one [[cluster]]")
        return []
    clusters = [c for n, t in enumerate(tables) if (c := _cluster(t, n, base, problems))]
    names = [c.name for c in clusters]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.add(f"cluster[{name}].name", "used twice")
    return clusters


def status_rules(window_s: float | None, allowed_lag: float | None, stop_after_s: float | None,
                 base: StatusRules = DEFAULT_STATUS_RULES) -> StatusRules:
    """The rules with the given settings changed (already checked against their bounds)."""
    changes: dict[str, Any] = {}
    if window_s is not None:
        changes["window_s"] = float(window_s)
    if allowed_lag is not None:
        if allowed_lag != int(allowed_lag):
            raise ConfigError(f"allowed lag must be a whole number of records, got {allowed_lag:g}")
        changes["allowed_lag"] = int(allowed_lag)
    if stop_after_s is not None:
        changes["stop_after_s"] = float(stop_after_s)
    return replace(base, **changes)


def _status(document: dict[str, Any], problems: _Problems) -> StatusRules:
    table = document.get("status", {})
    if not isinstance(table, dict):
        problems.add("status", f"must be a table ([status]), got {_shown_value(table)}")
        return StatusRules()
    problems.unknown_keys(table, STATUS_KEYS, "status.")
    values: dict[str, float | None] = {}
    for key, bounds in (("window", STATUS_WINDOW), ("allowed_lag", ALLOWED_LAG),
                        ("stop_after", STOP_AFTER)):
        value = table.get(key)
        problem = None if value is None else bounds.problem(value)
        if problem:
            problems.add(f"status.{key}", problem)
        elif key == "allowed_lag" and value is not None and not isinstance(value, int):
            problems.add("status.allowed_lag", f"must be a whole number, got {_shown_value(value)}")
        else:
            values[key] = value
    return status_rules(values.get("window"), values.get("allowed_lag"), values.get("stop_after"))


def load_config(path: str | Path) -> ExporterConfig:
    """Parse and validate a TOML config file; every problem of the file in one ConfigError.
    Every key is type-checked: nothing but a ConfigError comes out of a bad file."""
    path = Path(path)
    try:
        document = tomllib.loads(path.read_text())
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from error
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text: {error.reason}") from error
    except ValueError as error:  # TOMLDecodeError, or an integer too long to convert
        raise ConfigError(_one_line(f"{path}: not valid TOML: {error}")) from error
    problems = _Problems(str(path))
    base = path.parent
    problems.unknown_keys(document, TOP_KEYS, "")
    timeout_s = _number(document, "timeout", 10.0, TIMEOUT, problems)
    es_table = _table(document, "elasticsearch", problems)
    elasticsearch = (None if es_table is None
                     else _elasticsearch(es_table, base, timeout_s, problems))
    opensearch_table = _table(document, "opensearch", problems)
    opensearch = (None if opensearch_table is None
                  else _elasticsearch(opensearch_table, base, timeout_s, problems, "opensearch"))
    cloudwatch_table = _table(document, "cloudwatch", problems)
    cloudwatch = (None if cloudwatch_table is None
                  else _cloudwatch(cloudwatch_table, timeout_s, problems))
    clusters = _clusters(document, base, problems)
    http_port = document.get("http_port")
    if http_port is not None and (isinstance(http_port, bool) or not isinstance(http_port, int)
                                  or not 0 <= http_port < 65536):
        problems.add("http_port", f"must be a port number, got {_shown_value(http_port)}")
    spool_dir = _path(document, "spool_dir", base, problems, "")
    ha_group = _string(document, "ha_group", problems, "")
    if ha_group is not None and (problem := check_ha_group("ha_group", ha_group)):
        problems.add("ha_group", problem.removeprefix("ha_group "))
    config = ExporterConfig(
        clusters=tuple(clusters), elasticsearch=elasticsearch, opensearch=opensearch,
        cloudwatch=cloudwatch,
        interval_s=_number(document, "interval", 1.0, INTERVAL, problems), timeout_s=timeout_s,
        discovery_interval_s=_number(document, "discovery_interval", 30.0, DISCOVERY_INTERVAL,
                                     problems),
        spool_dir=spool_dir, http_host=_string(document, "http_host", problems, "") or "0.0.0.0",
        http_port=http_port,
        spool_max_bytes=megabytes_to_bytes(_number(
            document, "spool_max_mb", DEFAULT_SPOOL_MAX_MB, MEGABYTES, problems)),
        memory_max_bytes=megabytes_to_bytes(_number(
            document, "memory_max_mb", DEFAULT_MEMORY_MAX_MB, MEGABYTES, problems)),
        status_rules=_status(document, problems), ha_group=ha_group,
        ha_session_timeout_s=_number(document, "ha_session_timeout", 10.0, HA_SESSION_TIMEOUT,
                                     problems))
    problems.raise_if_any()
    return config

