from pathlib import Path

import pytest

from lag_exporter.config import (
    check_es_url,
    check_index_name,
    check_interval,
    default_spool_dir,
    elasticsearch_settings,
    kafka_settings,
)
from lag_exporter.errors import ConfigError


@pytest.mark.parametrize("interval", [0, -1, float("nan")])
def test_interval_must_be_positive(interval: float) -> None:
    with pytest.raises(ConfigError, match="--interval must be greater than 0"):
        check_interval(interval)


@pytest.mark.parametrize("name", ["Consumer_Lag", "lag*", "-lag", "_lag", "a b", "..", ""])
def test_invalid_index_names(name: str) -> None:
    with pytest.raises(ConfigError, match="invalid Elasticsearch index name"):
        check_index_name(name)


def test_valid_index_name() -> None:
    assert check_index_name("consumer_lag") == "consumer_lag"


@pytest.mark.parametrize("url", ["localhost:9200", "ftp://x", "http://", "http://h:notaport"])
def test_malformed_es_urls(url: str) -> None:
    with pytest.raises(ConfigError, match="malformed Elasticsearch URL"):
        check_es_url(url)


def test_es_url_with_credentials_is_refused_without_echoing_them() -> None:
    with pytest.raises(ConfigError) as caught:
        check_es_url("http://elastic:hunter2@localhost:9200")
    assert "hunter2" not in str(caught.value)


def test_es_settings_split_node_lists_and_read_secrets_from_env(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LAG_EXPORTER_ES_PASSWORD", "s3cret")
    settings = elasticsearch_settings(("http://a:9200,http://b:9200", "http://c:9200"),
                                      "consumer_lag", "elastic", None, 5.0)
    assert settings is not None
    assert settings.urls == ("http://a:9200", "http://b:9200", "http://c:9200")
    assert settings.password == "s3cret"
    assert "s3cret" not in repr(settings)


def test_username_without_password_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LAG_EXPORTER_ES_PASSWORD", raising=False)
    with pytest.raises(ConfigError, match="LAG_EXPORTER_ES_PASSWORD is empty"):
        elasticsearch_settings(("http://a:9200",), "consumer_lag", "elastic", None, 5.0)


def test_no_es_url_means_no_elasticsearch() -> None:
    assert elasticsearch_settings((), "consumer_lag", None, None, 5.0) is None


def test_kafka_needs_a_bootstrap_server() -> None:
    with pytest.raises(ConfigError, match="no Kafka cluster given"):
        kafka_settings(None, None)


def test_bootstrap_flag_overrides_command_config(tmp_path: Path) -> None:
    config = tmp_path / "consumer.properties"
    config.write_text("bootstrap.servers=old:9092\ngroup.id=oasis-group\n")
    settings = kafka_settings("new:9092", str(config), "src")
    assert settings.client_settings["bootstrap.servers"] == "new:9092"
    assert "group.id" not in settings.client_settings


def test_spool_dir_default_is_per_user_and_index(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", "/state")
    assert default_spool_dir("consumer_lag") == Path("/state/lag-exporter/spool/consumer_lag")
