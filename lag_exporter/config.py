"""Settings, validated before any I/O. Every problem is a ConfigError with a one-line message."""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lag_exporter.errors import ConfigError
from lag_exporter.kafka_properties import load_command_config, to_librdkafka
from lag_exporter.selection import GroupSelection, TopicSelection

# Secrets come from the environment (or files), never from argv, where `ps` shows them.
ES_PASSWORD_ENV = "LAG_EXPORTER_ES_PASSWORD"
ES_API_KEY_ENV = "LAG_EXPORTER_ES_API_KEY"

# Elasticsearch's own rules for index names.
_INDEX_FORBIDDEN = set('\\/*?"<>| ,#:')


@dataclass(frozen=True)
class ElasticsearchSettings:
    urls: tuple[str, ...]
    index: str = "consumer_lag"
    username: str | None = None
    password: str | None = None
    api_key: str | None = None
    ca_file: str | None = None
    timeout_s: float = 10.0

    def __repr__(self) -> str:  # never show secrets, even in a debugger or a traceback
        return f"ElasticsearchSettings(urls={self.urls!r}, index={self.index!r})"


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
    bootstrap_server: str | None, command_config: str | None, cluster: str = "default"
) -> KafkaSettings:
    client_settings: dict[str, str] = {}
    warnings: list[str] = []
    if command_config:
        client_settings, warnings = load_command_config(command_config)
    if bootstrap_server:
        client_settings["bootstrap.servers"] = bootstrap_server
    if not client_settings.get("bootstrap.servers"):
        raise ConfigError("no Kafka cluster given: pass --bootstrap-server (or set "
                          "bootstrap.servers in the --command-config file)")
    return KafkaSettings(cluster, client_settings, tuple(warnings))


def check_interval(interval_s: float) -> float:
    if not interval_s > 0:
        raise ConfigError(f"--interval must be greater than 0 seconds, got {interval_s:g}")
    return interval_s


def check_index_name(index: str) -> str:
    problem = None
    if not index:
        problem = "it is empty"
    elif index != index.lower():
        problem = "it must be lowercase"
    elif _INDEX_FORBIDDEN & set(index):
        problem = f"it must not contain any of {''.join(sorted(_INDEX_FORBIDDEN))!r}"
    elif index[0] in "-_+" or index in (".", ".."):
        problem = "it must not start with '-', '_' or '+', nor be '.' or '..'"
    elif len(index.encode()) > 255:
        problem = "it is longer than 255 bytes"
    if problem:
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


# -- the TOML config file (--config) ---------------------------------------------------------


@dataclass(frozen=True)
class ClusterConfig:
    name: str
    kafka: KafkaSettings
    groups: GroupSelection
    topics: TopicSelection


@dataclass(frozen=True)
class ExporterConfig:
    """Everything `watch` needs, from a config file and/or the command line."""

    clusters: tuple[ClusterConfig, ...]
    elasticsearch: ElasticsearchSettings | None = None
    interval_s: float = 1.0
    timeout_s: float = 10.0
    discovery_interval_s: float = 30.0
    spool_dir: Path | None = None
    http_host: str = "0.0.0.0"
    http_port: int | None = None


TOP_KEYS = {"interval", "timeout", "discovery_interval", "spool_dir", "http_host", "http_port",
            "elasticsearch", "cluster"}
ES_KEYS = {"urls", "index", "username", "password", "password_file", "api_key", "api_key_file",
           "ca_file"}
CLUSTER_KEYS = {"name", "bootstrap_servers", "command_config", "client", "groups",
                "group_patterns", "exclude_groups", "topics", "topic_patterns", "exclude_topics"}


class _Problems:
    """Collects every problem of a config file, so that one run shows them all."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: list[str] = []

    def add(self, key: str, problem: str) -> None:
        self.lines.append(f"{self.source}: {key}: {problem}")

    def unknown_keys(self, table: dict[str, Any], known: set[str], where: str) -> None:
        for key in sorted(set(table) - known):
            self.add(f"{where}{key}", f"unknown key (known: {', '.join(sorted(known))})")

    def raise_if_any(self) -> None:
        if self.lines:
            raise ConfigError("; ".join(self.lines))


def _number(table: dict[str, Any], key: str, default: float, problems: _Problems,
            where: str = "") -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        problems.add(f"{where}{key}", f"must be a number greater than 0, got {value!r}")
        return default
    return float(value)


def _strings(table: dict[str, Any], key: str, problems: _Problems, where: str) -> tuple[str, ...]:
    value = table.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.add(f"{where}{key}", "must be a list of strings")
        return ()
    return tuple(value)


def _regexes(table: dict[str, Any], key: str, problems: _Problems, where: str
             ) -> tuple[re.Pattern[str], ...]:
    compiled = []
    for n, text in enumerate(_strings(table, key, problems, where)):
        try:
            compiled.append(re.compile(text))
        except re.error as error:
            problems.add(f"{where}{key}[{n}]", f"invalid regex {text!r}: {error}")
    return tuple(compiled)


def _secret(table: dict[str, Any], key: str, base: Path, problems: _Problems) -> str | None:
    """`key` inline or `key_file` (a path, relative to the config file); never echoed."""
    if table.get(f"{key}_file"):
        path = base / str(table[f"{key}_file"])
        try:
            return path.read_text().strip()
        except OSError as error:
            problems.add(f"elasticsearch.{key}_file", f"cannot read {path}: {error.strerror}")
            return None
    value = table.get(key)
    if value is not None and not isinstance(value, str):
        problems.add(f"elasticsearch.{key}", "must be a string")
        return None
    return value


def _elasticsearch(table: dict[str, Any], base: Path, timeout_s: float, problems: _Problems
                   ) -> ElasticsearchSettings | None:
    problems.unknown_keys(table, ES_KEYS, "elasticsearch.")
    urls = _strings(table, "urls", problems, "elasticsearch.")
    if not urls:
        problems.add("elasticsearch.urls", "give at least one URL, or leave out [elasticsearch]")
        return None
    index = str(table.get("index", "consumer_lag"))
    try:
        for url in urls:
            check_es_url(url)
        check_index_name(index)
    except ConfigError as error:
        problems.add("elasticsearch", str(error))
        return None
    ca_file = table.get("ca_file")
    return ElasticsearchSettings(
        urls=urls, index=index, username=table.get("username"),
        password=os.environ.get(ES_PASSWORD_ENV) or _secret(table, "password", base, problems),
        api_key=os.environ.get(ES_API_KEY_ENV) or _secret(table, "api_key", base, problems),
        ca_file=str(base / ca_file) if ca_file else None, timeout_s=timeout_s)


def _cluster(table: dict[str, Any], n: int, base: Path, problems: _Problems
             ) -> ClusterConfig | None:
    name = table.get("name")
    if not isinstance(name, str) or not name:
        problems.unknown_keys(table, CLUSTER_KEYS, f"cluster[{n}].")
        problems.add(f"cluster[{n}].name", "every [[cluster]] needs a name (it goes into "
                     "documents)")
        return None
    where = f"cluster[{name}]."
    problems.unknown_keys(table, CLUSTER_KEYS, where)
    client: dict[str, str] = {}
    warnings: list[str] = []
    try:
        if table.get("command_config"):
            client, warnings = load_command_config(base / str(table["command_config"]))
        inline = table.get("client", {})
        if not isinstance(inline, dict):
            raise ConfigError(f"{where}client must be a table of Java client properties")
        if inline:
            extra, more = to_librdkafka({k: str(v) for k, v in inline.items()},
                                        f"{problems.source} {where}client")
            client.update(extra)
            warnings += more
    except ConfigError as error:
        problems.add(f"{where}command_config", str(error))
        return None
    if table.get("bootstrap_servers"):
        client["bootstrap.servers"] = str(table["bootstrap_servers"])
    if not client.get("bootstrap.servers"):
        problems.add(f"{where}bootstrap_servers", "missing (or set it in command_config)")
    groups = GroupSelection(_strings(table, "groups", problems, where),
                            _regexes(table, "group_patterns", problems, where),
                            _regexes(table, "exclude_groups", problems, where))
    if not groups.names and not table.get("group_patterns"):
        problems.add(f"{where}groups", "give groups and/or group_patterns")
    topics = TopicSelection(_strings(table, "topics", problems, where),
                            _regexes(table, "topic_patterns", problems, where),
                            _regexes(table, "exclude_topics", problems, where))
    return ClusterConfig(name, KafkaSettings(name, client, tuple(warnings)), groups, topics)


def load_config(path: str | Path) -> ExporterConfig:
    """Parse and validate a TOML config file; every problem of the file in one ConfigError."""
    path = Path(path)
    try:
        document = tomllib.loads(path.read_text())
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from error
    problems = _Problems(str(path))
    base = path.parent
    problems.unknown_keys(document, TOP_KEYS, "")
    timeout_s = _number(document, "timeout", 10.0, problems)
    es_table = document.get("elasticsearch")
    elasticsearch = (_elasticsearch(es_table, base, timeout_s, problems)
                     if isinstance(es_table, dict) else None)
    cluster_tables = document.get("cluster", [])
    if not isinstance(cluster_tables, list) or not cluster_tables:
        problems.add("cluster", "describe at least one [[cluster]]")
        cluster_tables = []
    clusters = [c for n, t in enumerate(cluster_tables) if (c := _cluster(t, n, base, problems))]
    names = [c.name for c in clusters]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.add(f"cluster[{name}].name", "used twice")
    http_port = document.get("http_port")
    if http_port is not None and (not isinstance(http_port, int) or not 0 <= http_port < 65536):
        problems.add("http_port", f"must be a port number, got {http_port!r}")
    spool = document.get("spool_dir")
    config = ExporterConfig(
        clusters=tuple(clusters), elasticsearch=elasticsearch,
        interval_s=_number(document, "interval", 1.0, problems), timeout_s=timeout_s,
        discovery_interval_s=_number(document, "discovery_interval", 30.0, problems),
        spool_dir=base / str(spool) if spool else None,
        http_host=str(document.get("http_host", "0.0.0.0")), http_port=http_port)
    problems.raise_if_any()
    return config
