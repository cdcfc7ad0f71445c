from pathlib import Path

import pytest

from lag_exporter.config import (
    check_es_url,
    check_index_name,
    check_interval,
    check_names,
    check_timeout,
    default_spool_dir,
    elasticsearch_settings,
    kafka_settings,
    megabytes_to_bytes,
)
from lag_exporter.errors import ConfigError


@pytest.mark.parametrize("interval", [0, -1, float("nan"), float("inf"), 3600.5])
def test_interval_must_be_positive_and_at_most_an_hour(interval: float) -> None:
    with pytest.raises(ConfigError, match="--interval must be greater than 0 and at most 3600"):
        check_interval(interval)
    assert check_interval(3600) == 3600 and check_interval(0.001) == 0.001


@pytest.mark.parametrize("timeout", [0, -1, 0.005, 300.5, 301, float("nan"), float("inf")])
def test_timeout_must_be_within_librdkafkas_range(timeout: float) -> None:
    """socket.timeout.ms takes 10..300,000 ms: outside, snapshot died in librdkafka."""
    with pytest.raises(ConfigError, match=r"--timeout must be at least 0\.01 and at most 300 "):
        check_timeout(timeout)
    assert check_timeout(0.01) == 0.01 and check_timeout(300) == 300


def test_group_and_topic_names_must_not_be_empty() -> None:
    with pytest.raises(ConfigError, match=r"^--group must not be empty$"):
        check_names("--group", ("g", ""))
    assert check_names("--topic", ("t",)) == ("t",)


def test_megabytes_are_mebibytes_and_never_zero_bytes() -> None:
    assert megabytes_to_bytes(64) == 64 * 1024 * 1024
    assert megabytes_to_bytes(1e-12) == 1


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


def test_an_unnamed_cluster_is_called_by_its_bootstrap_servers(tmp_path: Path) -> None:
    """Not 'default': two single-cluster exporters writing one index must stay apart."""
    assert kafka_settings("k1:9092,k2:9092", None).cluster == "k1:9092,k2:9092"
    config = tmp_path / "consumer.properties"
    config.write_text("bootstrap.servers=dc2-kafka:9092\n")
    assert kafka_settings(None, str(config)).cluster == "dc2-kafka:9092"
    assert kafka_settings("k1:9092", None, "dc1").cluster == "dc1"


def test_bootstrap_flag_overrides_command_config(tmp_path: Path) -> None:
    config = tmp_path / "consumer.properties"
    config.write_text("bootstrap.servers=old:9092\ngroup.id=oasis-group\n")
    settings = kafka_settings("new:9092", str(config), "src")
    assert settings.client_settings["bootstrap.servers"] == "new:9092"
    assert "group.id" not in settings.client_settings


def test_spool_dir_default_is_per_user_and_index(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", "/state")
    assert default_spool_dir("consumer_lag") == Path("/state/lag-exporter/spool/consumer_lag")
