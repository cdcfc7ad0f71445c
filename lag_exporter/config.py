"""Settings, validated before any I/O. Every problem is a ConfigError with a one-line message."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from lag_exporter.errors import ConfigError
from lag_exporter.kafka_properties import load_command_config
from lag_exporter.sinks.elasticsearch import ElasticsearchSettings

# Secrets come from the environment (or files), never from argv, where `ps` shows them.
ES_PASSWORD_ENV = "LAG_EXPORTER_ES_PASSWORD"
ES_API_KEY_ENV = "LAG_EXPORTER_ES_API_KEY"

# Elasticsearch's own rules for index names.
_INDEX_FORBIDDEN = set('\\/*?"<>| ,#:')


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
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("http", "https") or not parts.hostname or port == -1:
        shown = f"{parts.scheme}://{parts.hostname}" if parts.hostname else "the value given"
        raise ConfigError(f"malformed Elasticsearch URL ({shown}): expected "
                          "http(s)://host[:port], e.g. http://127.0.0.1:9200")
    if parts.password or parts.username:
        raise ConfigError("Elasticsearch URL must not carry credentials: use --es-username "
                          f"and ${ES_PASSWORD_ENV} (or ${ES_API_KEY_ENV})")
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
