"""[cloudwatch] and [opensearch] in the config file: defaults, every setting as written, and
each problem as one line naming the file and the key (credentials never echoed)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from lag_exporter.config import (
    CloudWatchSettings,
    ElasticsearchSettings,
    ExporterConfig,
    load_config,
    with_default_spool_dir,
)
from lag_exporter.errors import ConfigError

CLUSTER = '\n[[cluster]]\nname = "dc1"\nbootstrap_servers = "k:9092"\ngroups = ["g"]\n'


def load(tmp_path: Path, text: str) -> ExporterConfig:
    path = tmp_path / "lag-exporter.toml"
    path.write_text(text + CLUSTER)
    return load_config(path)


def problem(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    message = str(caught.value)
    assert len(message.splitlines()) == 1
    prefix = f"{tmp_path / 'lag-exporter.toml'}: "
    assert message.startswith(prefix)
    return message.removeprefix(prefix)


def test_cloudwatch_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, "timeout = 4\n[cloudwatch]\n")
    assert config.cloudwatch == CloudWatchSettings(timeout_s=4.0)
    assert config.cloudwatch.namespace == "KafkaLag"
    assert config.cloudwatch.partition_metrics_interval_s is None  # with every sample


def test_every_cloudwatch_setting_as_written(tmp_path: Path) -> None:
    config = load(tmp_path, '[cloudwatch]\nnamespace = "Kafka/Lag"\nregion = "eu-west-1"\n'
                  'endpoint_url = "https://vpce-1.monitoring.eu-west-1.vpce.amazonaws.com"\n'
                  'partition_metrics_interval_s = 0\n'
                  '[cloudwatch.dimensions]\nEnvironment = "prod"\nTeam = "payments"\n')
    assert config.cloudwatch == CloudWatchSettings(
        namespace="Kafka/Lag", region="eu-west-1",
        endpoint_url="https://vpce-1.monitoring.eu-west-1.vpce.amazonaws.com",
        dimensions=(("Environment", "prod"), ("Team", "payments")),
        partition_metrics_interval_s=0.0)


@pytest.mark.parametrize(("text", "expected"), [
    ('namespace = "AWS/Kafka"', "cloudwatch.namespace: must be 1 to 255 ASCII characters "
     "without ':', not starting with 'AWS/' (reserved for AWS), got 'AWS/Kafka'"),
    ('region = "Ireland"', "cloudwatch.region: not an AWS region name such as 'eu-west-1', "
     "got 'Ireland'"),
    ('endpoint_url = "monitoring.eu-west-1.amazonaws.com"', "cloudwatch.endpoint_url: expected "
     "http(s)://host[:port] without credentials, e.g. https://monitoring.eu-west-1.amazonaws.com"),
    ("partition_metrics_interval_s = -1", "cloudwatch.partition_metrics_interval_s: must be "
     "at least 0 and at most 86400 seconds, got -1 (0: never)"),
    ('dimensions = { Topic = "x" }', "cloudwatch.dimensions.Topic: every metric has it already "
     "(from the samples): Cluster Name, Consumer Group, Topic, Partition"),
    ('dimensions = { Environment = "" }', "cloudwatch.dimensions.Environment: must be a string "
     "of 1 to 1024 ASCII characters, got ''"),
    ('dimensions = "prod"', "cloudwatch.dimensions: must be a table of names and values, e.g. "
     'dimensions = { Environment = "prod" }, got a string'),
    ("bucket = 1", "cloudwatch.bucket: unknown key (known: dimensions, endpoint_url, namespace, "
     "partition_metrics_interval_s, region)"),
    ('cloudwatch = 1', None),
])
def test_each_cloudwatch_problem_is_one_line_naming_the_key(
    tmp_path: Path, text: str, expected: str | None
) -> None:
    if expected is None:  # not a table at all
        assert problem(tmp_path, text) == "cloudwatch: must be a table ([cloudwatch]), got 1"
    else:
        assert problem(tmp_path, f"[cloudwatch]\n{text}\n") == expected


def test_too_many_extra_dimensions(tmp_path: Path) -> None:
    names = "\n".join(f'D{n} = "v"' for n in range(27))
    assert problem(tmp_path, f"[cloudwatch.dimensions]\n{names}\n") == (
        "cloudwatch.dimensions: at most 26 (CloudWatch takes 30 per metric, 4 are the "
        "metrics' own), got 27")


@pytest.mark.parametrize("key", ["aws_access_key_id", "aws_secret_access_key",
                                 "aws_session_token", "secret_key", "profile", "password"])
def test_credentials_in_the_file_are_refused_and_never_shown(tmp_path: Path, key: str) -> None:
    message = problem(tmp_path, f'[cloudwatch]\n{key} = "AKIA-very-secret-value"\n')
    assert message == (f"cloudwatch.{key}: AWS credentials never go in the config file: they "
                       "come from the standard AWS chain (AWS_ACCESS_KEY_ID / "
                       "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, an instance or task role)")


def test_without_boto3_the_cloudwatch_section_names_the_extra_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)  # as if not installed
    assert problem(tmp_path, "[cloudwatch]\n") == (
        "cloudwatch: needs boto3, which is not installed: pip install 'lag-exporter[cloudwatch]'")
    from lag_exporter.sinks.cloudwatch import CloudWatchSink

    with pytest.raises(ConfigError, match=r"pip install 'lag-exporter\[cloudwatch\]'"):
        CloudWatchSink(CloudWatchSettings(region="eu-west-1"))


def test_opensearch_takes_the_elasticsearch_keys_and_its_own_secret_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAG_EXPORTER_OPENSEARCH_PASSWORD", "os-secret")
    monkeypatch.setenv("LAG_EXPORTER_ES_PASSWORD", "es-secret")
    config = load(tmp_path, '[elasticsearch]\nurls = ["http://es:9200"]\nusername = "w"\n'
                  '[opensearch]\nurls = ["https://os1:9200", "https://os2:9200"]\n'
                  'index = "kafka_lag"\nusername = "w"\ndocument_shape = "partition"\n')
    assert config.opensearch == ElasticsearchSettings(
        urls=("https://os1:9200", "https://os2:9200"), index="kafka_lag", username="w",
        password="os-secret", document_shape="partition")
    assert config.elasticsearch is not None
    assert (config.elasticsearch.password, config.elasticsearch.document_shape) == (
        "es-secret", "wide")


@pytest.mark.parametrize(("text", "expected"), [
    ('[opensearch]\nurls = []\n', "opensearch.urls: give at least one URL, or leave out "
     "[opensearch]"),
    ('[opensearch]\nurls = ["http://os:9200"]\nindex = "Lag"\n', "opensearch.index: invalid "
     "Elasticsearch index name 'Lag': it must be lowercase"),
    ('[elasticsearch]\nurls = ["http://es:9200"]\ndocument_shape = "narrow"\n',
     "elasticsearch.document_shape: must be 'wide' (one document per group x topic) or "
     "'partition' (one per partition), got 'narrow'"),
    ('[opensearch]\nurls = ["http://os:9200"]\npassword = 5\n',
     "opensearch.password: must be a non-empty string"),
    ('[opensearch]\nurls = ["http://os:9200"]\napi_key = "k"\n',
     "opensearch.api_key: OpenSearch takes username and password, not an Elasticsearch API key"),
])
def test_opensearch_and_document_shape_problems(tmp_path: Path, text: str, expected: str) -> None:
    assert problem(tmp_path, text) == expected


def test_an_api_key_file_for_opensearch_is_named_as_written(tmp_path: Path) -> None:
    """The key the file has (found by hypothesis: the line said opensearch.api_key)."""
    (tmp_path / "key").write_text("k")
    assert problem(tmp_path, '[opensearch]\nurls = ["http://os:9200"]\napi_key_file = "key"\n') \
        == ("opensearch.api_key_file: OpenSearch takes username and password, not an "
            "Elasticsearch API key")


def test_each_document_shape_has_its_own_default_index(tmp_path: Path) -> None:
    config = load(tmp_path, '[elasticsearch]\nurls = ["http://es:9200"]\n'
                  '[opensearch]\nurls = ["http://os:9200"]\ndocument_shape = "partition"\n')
    assert config.elasticsearch is not None and config.opensearch is not None
    assert (config.elasticsearch.index, config.opensearch.index) == (
        "consumer_lag", "consumer_lag_partitions")


def test_the_default_spool_directory_follows_the_first_sink_that_spools(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    spool = tmp_path / "lag-exporter" / "spool"
    es = ElasticsearchSettings(urls=("http://es:9200",), index="lag_es")
    opensearch = ElasticsearchSettings(urls=("http://os:9200",), index="lag_os")
    assert with_default_spool_dir(ExporterConfig((), elasticsearch=es, opensearch=opensearch,
                                                 cloudwatch=CloudWatchSettings())
                                  ).spool_dir == spool / "lag_es"
    assert with_default_spool_dir(ExporterConfig((), opensearch=opensearch)
                                  ).spool_dir == spool / "lag_os"
    assert with_default_spool_dir(ExporterConfig((), cloudwatch=CloudWatchSettings())
                                  ).spool_dir == spool / "cloudwatch"
    assert with_default_spool_dir(ExporterConfig(())).spool_dir is None  # stdout: no spool
    given = ExporterConfig((), cloudwatch=CloudWatchSettings(), spool_dir=tmp_path / "mine")
    assert with_default_spool_dir(given).spool_dir == tmp_path / "mine"


def test_the_shipped_three_sink_example_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "lag-exporter-three-sinks.toml"
    monkeypatch.setenv("LAG_EXPORTER_ES_PASSWORD", "x")
    monkeypatch.setenv("LAG_EXPORTER_OPENSEARCH_PASSWORD", "y")
    config = load_config(example)
    assert config.elasticsearch is not None and config.opensearch is not None
    assert (config.elasticsearch.document_shape, config.opensearch.document_shape) == (
        "wide", "partition")
    assert config.cloudwatch == CloudWatchSettings(
        namespace="KafkaLag", region="eu-west-1", dimensions=(("Environment", "prod"),),
        partition_metrics_interval_s=60.0)
    assert [c.name for c in config.clusters] == ["dc1-orders"]
