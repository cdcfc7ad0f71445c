from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lag_exporter.config import (
    ElasticsearchSettings,
    KafkaSettings,
    check_es_url,
    check_index_name,
    check_interval,
    check_names,
    check_timeout,
    check_topic_names,
    default_spool_dir,
    elasticsearch_settings,
    kafka_settings,
    megabytes_to_bytes,
    topic_name_problem,
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
    with pytest.raises(ConfigError, match=r"^--topic must not be empty$"):
        check_topic_names("--topic", ("t", ""))
    assert check_topic_names("--topic", ("t",)) == ("t",)


@pytest.mark.parametrize("name", ["a", "orders.v1_eu-2", "...", "_", "x" * 249])
def test_names_kafka_takes_are_topic_names(name: str) -> None:
    assert topic_name_problem(name) is None


@pytest.mark.parametrize(("name", "problem"), [
    (".", "cannot be '.' or '..'"),
    ("..", "cannot be '.' or '..'"),
    ("x" * 250, "is 250 characters long, Kafka allows 249"),
    ("orders[eu]", "is not a Kafka topic name"),
    ("orders eu", "is not a Kafka topic name"),
    ("orders/eu", "is not a Kafka topic name"),
    ("örders", "is not a Kafka topic name"),
    ("orders\n", "is not a Kafka topic name"),
])
def test_names_kafka_refuses_are_reported_with_the_reason(name: str, problem: str) -> None:
    assert (topic_name_problem(name) or "").startswith(problem)
    with pytest.raises(ConfigError) as caught:
        check_topic_names("--topic", ("ok", name))
    assert str(caught.value) == f"--topic {name!r} {topic_name_problem(name)}"
    assert "\n" not in str(caught.value)


KAFKA_TOPIC_CHARACTERS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


@given(st.text(alphabet=st.sampled_from(sorted(KAFKA_TOPIC_CHARACTERS)) | st.characters(),
               max_size=260))
def test_a_topic_name_is_accepted_exactly_when_kafka_would(name: str) -> None:
    """Kafka's Topic.validate, written out differently: not empty, not '.' or '..', at most 249
    characters, each one of ASCII letters, digits, '.', '_', '-' (a regex with \\w or \\d, or
    one not anchored at both ends, lets other names through)."""
    kafka_takes = (0 < len(name) <= 249 and name not in (".", "..")
                   and all(character in KAFKA_TOPIC_CHARACTERS for character in name))
    assert (topic_name_problem(name) is None) == kafka_takes


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


# -- settings from the command line (each a user-visible rule) ------------------------------

def test_es_settings_keep_every_flag(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LAG_EXPORTER_ES_PASSWORD", "pw-1")
    monkeypatch.setenv("LAG_EXPORTER_ES_API_KEY", "key-2")
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text("a certificate\n")
    settings = elasticsearch_settings((" http://a:9200 ,\thttps://b:9243 ",), "lag_index",
                                      "writer", str(ca_file), 2.5)
    assert settings == ElasticsearchSettings(
        urls=("http://a:9200", "https://b:9243"), index="lag_index", username="writer",
        password="pw-1", api_key="key-2", ca_file=str(ca_file), timeout_s=2.5)


def test_es_secrets_set_empty_in_the_environment_are_absent(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAG_EXPORTER_ES_PASSWORD", "")
    monkeypatch.setenv("LAG_EXPORTER_ES_API_KEY", "")
    settings = elasticsearch_settings(("http://a:9200",), "consumer_lag", None, None, 5.0)
    assert settings is not None
    assert settings.password is None and settings.api_key is None


def test_es_settings_without_secrets_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LAG_EXPORTER_ES_PASSWORD", raising=False)
    monkeypatch.delenv("LAG_EXPORTER_ES_API_KEY", raising=False)
    settings = elasticsearch_settings(("http://a:9200",), "consumer_lag", None, None, 5.0)
    assert settings is not None
    assert settings.password is None and settings.api_key is None
    assert settings.username is None and settings.ca_file is None


def test_every_es_url_is_checked_not_only_the_first() -> None:
    with pytest.raises(ConfigError, match=r"malformed Elasticsearch URL 'es2:9200'"):
        elasticsearch_settings(("http://es1:9200,es2:9200",), "consumer_lag", None, None, 5.0)


def test_only_blanks_and_commas_mean_no_elasticsearch() -> None:
    assert elasticsearch_settings((" , ", ""), "consumer_lag", None, None, 5.0) is None


def test_es_username_without_password_names_the_variable(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAG_EXPORTER_ES_PASSWORD", "")
    with pytest.raises(ConfigError) as caught:
        elasticsearch_settings(("http://a:9200",), "consumer_lag", "elastic", None, 5.0)
    assert str(caught.value) == "--es-username is set but $LAG_EXPORTER_ES_PASSWORD is empty"


def test_an_api_key_needs_no_username(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LAG_EXPORTER_ES_PASSWORD", raising=False)
    monkeypatch.setenv("LAG_EXPORTER_ES_API_KEY", "key-2")
    settings = elasticsearch_settings(("http://a:9200",), "consumer_lag", None, None, 5.0)
    assert settings is not None and settings.api_key == "key-2"


def test_a_missing_es_ca_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.pem"
    with pytest.raises(ConfigError) as caught:
        elasticsearch_settings(("https://a:9200",), "consumer_lag", None, str(missing), 5.0)
    assert str(caught.value) == f"--es-ca-file {missing}: no such file"
    with pytest.raises(ConfigError, match="no such file"):  # a directory is no CA file either
        elasticsearch_settings(("https://a:9200",), "consumer_lag", None, str(tmp_path), 5.0)


def test_the_es_index_flag_is_checked() -> None:
    with pytest.raises(ConfigError, match="invalid Elasticsearch index name 'Lag'"):
        elasticsearch_settings(("http://a:9200",), "Lag", None, None, 5.0)


def test_es_settings_repr_shows_no_secret() -> None:
    settings = ElasticsearchSettings(("http://a:9200",), "lag", "writer", "pw-1", "key-2")
    assert repr(settings) == "ElasticsearchSettings(urls=('http://a:9200',), index='lag')"


def test_kafka_settings_repr_shows_cluster_and_bootstrap_only(tmp_path: Path) -> None:
    config = tmp_path / "client.properties"
    config.write_text("security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\n"
                      "sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule "
                      'required username="u" password="top-secret-9";\n')
    settings = kafka_settings("k1:9092", str(config), "dc1")
    assert "top-secret-9" in settings.client_settings["sasl.password"]
    assert repr(settings) == "KafkaSettings(cluster='dc1', bootstrap='k1:9092')"


def test_kafka_settings_pass_the_command_config_warnings_on(tmp_path: Path) -> None:
    config = tmp_path / "client.properties"
    config.write_text("bootstrap.servers=k1:9092\nmetrics.num.samples=3\n")
    settings = kafka_settings(None, str(config))
    assert settings == KafkaSettings(
        "k1:9092", {"bootstrap.servers": "k1:9092"},
        (f"{config}: metrics.num.samples: ignored, Java-only metrics setting",))
    assert kafka_settings("k2:9092", None) == KafkaSettings(
        "k2:9092", {"bootstrap.servers": "k2:9092"}, ())


def test_an_empty_bootstrap_flag_falls_back_to_the_command_config(tmp_path: Path) -> None:
    config = tmp_path / "client.properties"
    config.write_text("bootstrap.servers=k1:9092\n")
    assert kafka_settings("", str(config)).client_settings == {"bootstrap.servers": "k1:9092"}
    config.write_text("client.id=x\n")
    with pytest.raises(ConfigError) as caught:
        kafka_settings(None, str(config))
    assert str(caught.value) == ("no Kafka cluster given: pass --bootstrap-server (or set "
                                 "bootstrap.servers in the --command-config file)")


def test_spool_dir_default_without_xdg_state_home_is_under_home(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    for unset in (None, ""):
        if unset is None:
            monkeypatch.delenv("XDG_STATE_HOME", raising=False)
        else:
            monkeypatch.setenv("XDG_STATE_HOME", unset)
        assert default_spool_dir("lag") == tmp_path / ".local/state/lag-exporter/spool/lag"


def test_spool_dir_default_makes_the_index_one_safe_directory_name(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", "/state")
    assert default_spool_dir("a.b-c_9") == Path("/state/lag-exporter/spool/a.b-c_9")
    assert default_spool_dir("lag~dc1\u00e9") == Path("/state/lag-exporter/spool/lag_dc1_")
