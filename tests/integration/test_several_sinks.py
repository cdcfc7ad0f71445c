"""Elasticsearch and CloudWatch from one `watch`: an outage of one never delays or loses the
other's data, and the one that was down gets every queued sample once it is back, once."""

from __future__ import annotations

import itertools
import signal
import time
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
    doc_time,
    document_stamps,
    produce,
    search_all,
    wait_for,
)

from lag_exporter.outbox import read_spool
from stack.stackctl import Stack

pytestmark = pytest.mark.integration

DURING_OUTAGE = 5
"""Samples the sink that stays up must receive while the other is down."""


def lagging_group(stack: Stack, unique_name: str) -> tuple[str, str]:
    topic, group = f"sinks.{unique_name}", f"sinks-{unique_name}"
    create_topic(stack.source_bootstrap, topic, 2)
    produce(stack.source_bootstrap, topic, {0: 5, 1: 3})
    commit(stack.source_bootstrap, group, {(topic, 0): 1, (topic, 1): 3})
    return topic, group


def assert_one_document_per_second(documents: list[dict[str, object]], samples: int) -> None:
    assert len(documents) == samples  # every sample, including those queued during the outage
    assert len({doc["_id"] for doc in documents}) == len(documents)  # none twice
    stamps = sorted(doc_time(doc) for doc in documents)
    gaps = [later - earlier for earlier, later in itertools.pairwise(stamps)]
    assert all(0.5 < gap < 1.5 for gap in gaps), gaps  # no hole where the outage was


def test_elasticsearch_down_cloudwatch_keeps_receiving_then_elasticsearch_gets_the_queue(
    stack: Stack, cloudwatch: CloudWatchServer, unique_name: str, tmp_path: Path,
    restart_elasticsearch: None,
) -> None:
    topic, group = lagging_group(stack, unique_name)
    namespace, index = f"Sinks/{unique_name}", f"sinks-{unique_name}"
    config = cloudwatch_config(tmp_path / "lag-exporter.toml", bootstrap=stack.source_bootstrap,
                               group=group, namespace=namespace, endpoint=cloudwatch.endpoint,
                               es_url=stack.es_url, index=index)
    client = cloudwatch.client()
    dimensions = {"Cluster Name": "dc1", "Consumer Group": group, "Topic": topic,
                  "Environment": "test"}
    exporter = ExporterProcess("--config", str(config), env=EXPORTER_ENV)
    try:
        wait_for(lambda: len(document_stamps(stack.es_url, index)) >= 2, timeout=60,
                 what="the first documents in Elasticsearch", exporter=exporter)
        stack.stop("elasticsearch")
        stopped_at = time.time()
        wait_for(lambda: len([s for s in series(client, namespace, "SumOffsetLag", dimensions)
                              if s > stopped_at + 1]) >= DURING_OUTAGE,
                 timeout=30, what="CloudWatch data points while Elasticsearch is down",
                 exporter=exporter)
        stack.start("elasticsearch")
        started_at = time.time()
        # Delivered in order: a document sampled after the restart means the queue is through.
        wait_for(lambda: any(s > started_at for s in document_stamps(stack.es_url, index)),
                 timeout=60, what="Elasticsearch to catch up", exporter=exporter)
    finally:
        code, _ = exporter.stop(signal.SIGTERM)
    assert code == 0, exporter.stderr
    samples = exporter.samples_taken()
    assert read_spool(tmp_path / "spool") == []
    documents = search_all(stack.es_url, index)
    assert_one_document_per_second(documents, samples)
    outage = [s for s in (doc_time(doc) for doc in documents) if stopped_at + 1 < s < started_at]
    assert len(outage) >= DURING_OUTAGE
    sums = series(client, namespace, "SumOffsetLag", dimensions)
    assert {int(s) for s in outage} <= set(sums)  # CloudWatch had them while ES was down
    assert set(sums.values()) == {4.0}
    assert "elasticsearch: delivery failing" in exporter.stderr
    assert "cloudwatch: delivery failing" not in exporter.stderr


def test_cloudwatch_down_elasticsearch_keeps_receiving_then_cloudwatch_gets_the_queue(
    stack: Stack, cloudwatch: CloudWatchServer, unique_name: str, tmp_path: Path,
) -> None:
    topic, group = lagging_group(stack, unique_name)
    namespace, index = f"Sinks/{unique_name}", f"sinks-{unique_name}"
    config = cloudwatch_config(tmp_path / "lag-exporter.toml", bootstrap=stack.source_bootstrap,
                               group=group, namespace=namespace, endpoint=cloudwatch.endpoint,
                               es_url=stack.es_url, index=index)
    dimensions = {"Cluster Name": "dc1", "Consumer Group": group, "Topic": topic,
                  "Environment": "test"}
    exporter = ExporterProcess("--config", str(config), env=EXPORTER_ENV)
    try:
        wait_for(lambda: len(series(cloudwatch.client(), namespace, "SumOffsetLag",
                                    dimensions)) >= 2,
                 timeout=60, what="the first CloudWatch data points", exporter=exporter)
        cloudwatch.stop()  # moto keeps nothing: what it has after the restart came after it
        stopped_at = time.time()
        wait_for(lambda: len([s for s in document_stamps(stack.es_url, index)
                              if s > stopped_at + 1]) >= DURING_OUTAGE,
                 timeout=30, what="documents while CloudWatch is down", exporter=exporter)
        cloudwatch.start()
        started_at = time.time()
        wait_for(lambda: any(s > started_at for s in series(cloudwatch.client(), namespace,
                                                            "SumOffsetLag", dimensions)),
                 timeout=60, what="CloudWatch to catch up", exporter=exporter)
    finally:
        code, _ = exporter.stop(signal.SIGTERM)
    assert code == 0, exporter.stderr
    samples = exporter.samples_taken()
    documents = search_all(stack.es_url, index)
    assert_one_document_per_second(documents, samples)
    outage = {int(s) for s in (doc_time(doc) for doc in documents)
              if stopped_at + 1 < s < started_at}
    assert len(outage) >= DURING_OUTAGE
    client = cloudwatch.client()
    sums = series(client, namespace, "SumOffsetLag", dimensions)
    assert outage <= set(sums)  # the samples queued while it was down, delivered after
    assert set(sums.values()) == {4.0}
    counts = series(client, namespace, "SumOffsetLag", dimensions, stat="SampleCount")
    assert set(counts.values()) == {1.0}  # none sent twice
    assert "cloudwatch: delivery failing" in exporter.stderr
    assert "elasticsearch: delivery failing" not in exporter.stderr
