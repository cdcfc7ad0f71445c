"""The CloudWatch sink against moto's standalone server (the stack's `cloudwatch` component):
`watch` with [cloudwatch] and [elasticsearch] in one config file, the metrics read back with
GetMetricData and compared with `kafka-consumer-groups` and with the Elasticsearch documents."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from cloudwatch_helpers import (  # noqa: F401 - the fixture
    EXPORTER_ENV,
    CloudWatchServer,
    cloudwatch_config,
    cloudwatch_fixture,
    series,
)
from helpers import (
    ExporterProcess,
    commit,
    create_topic,
    describe_group,
    doc_time,
    lags_by_partition,
    produce,
    run_exporter,
    search_all,
    wait_for,
)

from stack.stackctl import Stack

pytestmark = pytest.mark.integration

SAMPLES = 4


def test_watch_sends_msk_named_metrics_equal_to_kafka_consumer_groups_with_the_sample_time(
    stack: Stack, cloudwatch: CloudWatchServer, unique_name: str, tmp_path: Path
) -> None:
    topic, group = f"cw.{unique_name}", f"cw-{unique_name}"
    create_topic(stack.source_bootstrap, topic, 3)
    produce(stack.source_bootstrap, topic, {0: 9, 1: 4, 2: 6})
    commit(stack.source_bootstrap, group, {(topic, 0): 2, (topic, 1): 4, (topic, 2): 1})
    expected = lags_by_partition(describe_group(stack, group))
    assert expected == {(topic, 0): 7, (topic, 1): 0, (topic, 2): 5}  # kafka-consumer-groups
    namespace, index = f"LagTest/{unique_name}", f"cw-{unique_name}"
    config = cloudwatch_config(tmp_path / "lag-exporter.toml", bootstrap=stack.source_bootstrap,
                               group=group, namespace=namespace, endpoint=cloudwatch.endpoint,
                               es_url=stack.es_url, index=index)
    client = cloudwatch.client()
    topic_dimensions = {"Cluster Name": "dc1", "Consumer Group": group, "Topic": topic,
                        "Environment": "test"}

    exporter = ExporterProcess("--config", str(config), env=EXPORTER_ENV)
    wait_for(lambda: len(series(client, namespace, "SumOffsetLag", topic_dimensions)) >= SAMPLES,
             timeout=60, what=f"{SAMPLES} samples in CloudWatch", exporter=exporter)
    code, _ = exporter.stop(signal.SIGTERM)
    assert code == 0, exporter.stderr
    samples = exporter.samples_taken()

    documents = search_all(stack.es_url, index)
    assert len(documents) == samples  # both sinks got every sample
    stamps = {int(doc_time(doc)) for doc in documents}
    for partition in range(3):
        # in the order sent: moto (unlike CloudWatch) matches dimension lists in order
        offset_lag = series(client, namespace, "OffsetLag",
                            {"Cluster Name": "dc1", "Consumer Group": group, "Topic": topic,
                             "Partition": str(partition), "Environment": "test"})
        assert set(offset_lag) == stamps  # one data point per sample, at the sample's time
        assert set(offset_lag.values()) == {expected[(topic, partition)]}
    assert set(series(client, namespace, "MaxOffsetLag", topic_dimensions).values()) == {7}
    sums = series(client, namespace, "SumOffsetLag", topic_dimensions)
    assert sums == dict.fromkeys(stamps, 12)
    # sent once each: no sample's data counted twice
    counts = series(client, namespace, "SumOffsetLag", topic_dimensions, stat="SampleCount")
    assert set(counts.values()) == {1.0}
    # seconds where the exporter has them, equal to the documents' lag_seconds_max
    seconds = series(client, namespace, "EstimatedMaxTimeLag", topic_dimensions)
    with_seconds = {int(doc_time(doc)): doc["lag_seconds_max"] for doc in documents
                    if "lag_seconds_max" in doc}
    assert with_seconds, documents[0]
    assert seconds == pytest.approx(with_seconds)
    assert "Traceback" not in exporter.stderr


def test_credentials_in_the_config_file_are_refused_in_one_line(
    stack: Stack, unique_name: str, tmp_path: Path
) -> None:
    config = cloudwatch_config(tmp_path / "lag-exporter.toml", bootstrap=stack.source_bootstrap,
                               group="g", namespace="KafkaLag", endpoint=stack.cloudwatch_endpoint,
                               extra='aws_secret_access_key = "wJalrXUtnFEMI-secret"\n')
    done = run_exporter("watch", "--config", str(config), env=EXPORTER_ENV, timeout=30)
    assert done.returncode == 2
    assert done.stderr == (
        f"lag-exporter: error: {config}: cloudwatch.aws_secret_access_key: AWS credentials "
        "never go in the config file: they come from the standard AWS chain "
        "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE, an instance or task role)\n")
    assert "wJalrXUtnFEMI" not in done.stderr + done.stdout


def test_no_credentials_in_the_chain_stops_watch_at_start_in_one_line(
    stack: Stack, unique_name: str, tmp_path: Path
) -> None:
    config = cloudwatch_config(tmp_path / "lag-exporter.toml", bootstrap=stack.source_bootstrap,
                               group="g", namespace="KafkaLag", endpoint=stack.cloudwatch_endpoint)
    env = {**EXPORTER_ENV, "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}
    done = run_exporter("watch", "--config", str(config), env=env, timeout=60)
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines()[-1] == (
        "lag-exporter: error: CloudWatch: no AWS credentials found in the standard chain "
        "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws/credentials, an "
        "instance or task role)")
    assert "Traceback" not in done.stderr
