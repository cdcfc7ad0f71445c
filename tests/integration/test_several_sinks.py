"""Elasticsearch, OpenSearch and CloudWatch from one `watch`, configured by the README's example
(examples/lag-exporter-three-sinks.toml with the stack's addresses put in): while one sink is
down the other two keep receiving every sample, and the one that was down gets every queued
sample once it is back, each once.

The example's Elasticsearch is the stack's elasticsearch-auth (HTTPS, basic auth, the password
from $LAG_EXPORTER_ES_PASSWORD as the example says); its OpenSearch is the stack's opensearch,
which has no security plugin, so the example's OpenSearch username is left out.
"""

from __future__ import annotations

import itertools
import math
import re
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cloudwatch_helpers import (  # noqa: F401 - the fixture
    EXPORTER_ENV,
    REGION,
    CloudWatchServer,
    cloudwatch_fixture,
    series,
)
from elasticsearch import Elasticsearch
from helpers import ExporterProcess, commit, create_topic, doc_time, produce, wait_for
from search_servers import exists, search

from lag_exporter.outbox import read_spool
from stack.stackctl import Stack

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "lag-exporter-three-sinks.toml"
SINKS = ("elasticsearch-auth", "opensearch", "cloudwatch")
"""The stack component behind each sink of the example."""
SINK_NAMES = {"elasticsearch-auth": "elasticsearch", "opensearch": "opensearch",
              "cloudwatch": "cloudwatch"}
"""The exporter's name of each sink, as in its log lines."""
DURING_OUTAGE = 5
"""Samples each sink that stays up must receive while another is down."""
LAG_BY_PARTITION = {0: 4, 1: 0}


def lagging_group(stack: Stack, unique_name: str) -> tuple[str, str]:
    topic, group = f"sinks.{unique_name}", f"sinks-{unique_name}"
    create_topic(stack.source_bootstrap, topic, 2)
    produce(stack.source_bootstrap, topic, {0: 5, 1: 3})
    commit(stack.source_bootstrap, group, {(topic, 0): 1, (topic, 1): 3})
    return topic, group


def ticks_skipped_by_the_cluster(stderr: str) -> int:
    """Ticks the cluster missed because a sample of it overran (e.g. the first one, while its
    commit follower starts on a busy machine): those ticks have no documents."""
    match = re.search(r"skipped by slow clusters: [^)]*\bdc1-orders (\d+)", stderr)
    return int(match.group(1)) if match else 0


def delivered_and_dropped(stderr: str, sink: str) -> tuple[int, int]:
    """A sink's samples delivered and dropped, from the exporter's closing line."""
    match = re.search(rf"\b{SINK_NAMES[sink]}: (\d+) delivered, (\d+) dropped", stderr)
    assert match, stderr
    return int(match.group(1)), int(match.group(2))


def substitute(text: str, replacements: list[tuple[str, str]]) -> str:
    """Each old text must be in the example exactly once: a changed example fails here, in
    words, instead of silently testing something else."""
    for old, new in replacements:
        assert text.count(old) == 1, f"{EXAMPLE.name} no longer has exactly one {old!r}"
        text = text.replace(old, new)
    return text


class ThreeSinks:
    """The example run against the stack, and what each of its sinks has received."""

    def __init__(self, stack: Stack, cloudwatch: CloudWatchServer, unique_name: str,
                 tmp_path: Path) -> None:
        self.stack = stack
        self.cloudwatch = cloudwatch
        self.topic, self.group = lagging_group(stack, unique_name)
        self.index = f"sinks-{unique_name}"
        self.data_stream = f"kafka_lag-{unique_name}"
        self.namespace = f"KafkaLag/{unique_name}"
        self.spool = tmp_path / "spool"
        self.dimensions = {"Cluster Name": "dc1-orders", "Consumer Group": self.group,
                           "Topic": self.topic, "Environment": "prod"}
        self.config = tmp_path / "lag-exporter.toml"
        self.config.write_text(self.example_for_the_stack())

    def example_for_the_stack(self) -> str:
        stack = self.stack
        return substitute(EXAMPLE.read_text(), [
            ('# spool_dir = "/var/lib/lag-exporter/spool"', f'spool_dir = "{self.spool}"  #'),
            ('urls = ["https://es-node1:9200", "https://es-node2:9200"]',
             f'urls = ["{stack.es_auth_url}"]\nca_file = "{stack.es_auth_ca_file}"'),
            ('index = "consumer_lag"', f'index = "{self.index}"'),
            ('username = "lag_writer"         # password from $LAG_EXPORTER_ES_PASSWORD',
             f'username = "{stack.es_auth_username}"'),
            ('urls = ["https://search-lag.eu-west-1.es.amazonaws.com:443"]',
             f'urls = ["{stack.opensearch_url}"]'),
            ('index = "kafka_lag"', f'index = "{self.data_stream}"'),
            ('username = "lag_writer"         # password from $LAG_EXPORTER_OPENSEARCH_PASSWORD',
             "# no username: the stack's OpenSearch has no security plugin"),
            ('namespace = "KafkaLag"', f'namespace = "{self.namespace}"'),
            ('region = "eu-west-1"', f'region = "{REGION}"'),
            ('# endpoint_url = "https://vpce-0123-abcd.monitoring.eu-west-1.vpce.amazonaws.com"',
             f'endpoint_url = "{self.cloudwatch.endpoint}"'),
            ('command_config = "mm-orders-consumer.properties"',
             f'bootstrap_servers = "{stack.source_bootstrap}"'),
            ('groups = ["oasis-group"]', f'groups = ["{self.group}"]'),
            ('topics = ["orders"]', f'topics = ["{self.topic}"]'),
        ])

    def start_exporter(self) -> ExporterProcess:
        return ExporterProcess("--config", str(self.config),
                               env={**EXPORTER_ENV,
                                    "LAG_EXPORTER_ES_PASSWORD": self.stack.es_auth_password})

    def es_documents(self) -> list[dict[str, Any]]:
        """The wide documents in Elasticsearch ([] before the index exists)."""
        stack = self.stack
        client = Elasticsearch(stack.es_auth_url, ca_certs=stack.es_auth_ca_file,
                               basic_auth=(stack.es_auth_username, stack.es_auth_password))
        try:
            if not client.indices.exists(index=self.index):
                return []
            client.indices.refresh(index=self.index)
            answer = client.search(index=self.index, size=10_000, query={"match_all": {}})
            return [hit["_source"] | {"_id": hit["_id"]} for hit in answer["hits"]["hits"]]
        finally:
            client.close()

    def opensearch_documents(self) -> list[dict[str, Any]]:
        """The per-partition documents in OpenSearch's data stream ([] before it exists)."""
        url = self.stack.opensearch_url
        return search(url, self.data_stream) if exists(url, self.data_stream) else []

    def cloudwatch_counts(self) -> dict[int, int]:
        """SumOffsetLag data points per second (Unix second -> how many)."""
        counts = series(self.cloudwatch.client(), self.namespace, "SumOffsetLag",
                        self.dimensions, stat="SampleCount")
        return {int(second): int(count) for second, count in counts.items()}

    def received(self, sink: str) -> Counter[int]:
        """The samples a sink has, counted per Unix second of their sample time."""
        if sink == "elasticsearch-auth":
            return Counter(math.floor(doc_time(doc)) for doc in self.es_documents())
        if sink == "opensearch":  # one document per partition: one sample time per sample
            stamps = {doc_time(doc) for doc in self.opensearch_documents()}
            return Counter(math.floor(stamp) for stamp in stamps)
        return Counter(self.cloudwatch_counts())

    def spooled_documents(self, sink: str) -> list[dict[str, Any]]:
        """What the sink's spool still holds after the exporter stopped (its shutdown gives
        delivery a few seconds; on a busy machine the last sample may stay on disk)."""
        folder = {"elasticsearch-auth": self.spool, "opensearch": self.spool / "opensearch",
                  "cloudwatch": self.spool / "cloudwatch"}[sink]
        return [document.source for batch in read_spool(folder) for document in batch.documents]

    def spooled(self, sink: str) -> Counter[int]:
        return Counter(math.floor(stamp) for stamp in
                       {doc_time(doc) for doc in self.spooled_documents(sink)})


@pytest.fixture
def restore_the_sinks(stack: Stack) -> Iterator[None]:
    """Whichever sink a test stopped runs again afterwards, even if the test failed."""
    yield
    for component in SINKS:
        stack.start(component)  # nothing to do when it runs


def after(counts: Counter[int], second: float) -> Counter[int]:
    """The counts of the seconds that begin after `second`."""
    return Counter({s: n for s, n in counts.items() if s > second})


def up_to(counts: Counter[int], last: int) -> Counter[int]:
    return Counter({s: n for s, n in counts.items() if s <= last})


@pytest.mark.parametrize("down", SINKS)
def test_one_sink_down_the_others_keep_receiving_then_it_gets_its_queue_once(
    down: str, stack: Stack, cloudwatch: CloudWatchServer, unique_name: str, tmp_path: Path,
    restore_the_sinks: None,
) -> None:
    sinks = ThreeSinks(stack, cloudwatch, unique_name, tmp_path)
    others = [sink for sink in SINKS if sink != down]
    exporter = sinks.start_exporter()
    try:
        wait_for(lambda: all(sum(sinks.received(sink).values()) >= 2 for sink in SINKS),
                 timeout=60, what="the first samples in all three sinks", exporter=exporter)
        stack.stop(down)
        stopped_at = time.time()
        wait_for(lambda: all(sum(after(sinks.received(sink), stopped_at + 1).values())
                             >= DURING_OUTAGE for sink in others),
                 timeout=30, what=f"samples in {' and '.join(others)} while {down} is down",
                 exporter=exporter)
        during = {sink: sinks.received(sink) for sink in others}
        stack.start(down)  # returns once it answers
        started_at = time.time()
        # Delivered in order: a sample taken after the restart means the queue is through.
        wait_for(lambda: any(s > started_at for s in sinks.received(down)), timeout=60,
                 what=f"{down} to catch up", exporter=exporter)
    finally:
        code, _ = exporter.stop(signal.SIGTERM)
    assert code == 0, exporter.stderr
    skipped = ticks_skipped_by_the_cluster(exporter.stderr)
    samples = exporter.samples_taken() - skipped

    # Elasticsearch (or its spool) has every sample, each once, a second apart: the reference.
    es_documents = sinks.es_documents() + sinks.spooled_documents("elasticsearch-auth")
    assert len(es_documents) == samples, exporter.stderr
    assert len({doc["_id"] for doc in es_documents}) == samples  # none twice
    stamps = sorted(doc_time(doc) for doc in es_documents)
    gaps = [later - earlier for earlier, later in itertools.pairwise(stamps)]
    holes = [gap for gap in gaps if gap >= 1.5]  # only where the cluster skipped ticks
    assert all(gap > 0.5 for gap in gaps) and len(holes) <= skipped, gaps
    assert all(hole < skipped + 1.5 for hole in holes), gaps
    assert {doc["lag_total"] for doc in es_documents} == {4}
    every_sample = Counter(math.floor(stamp) for stamp in stamps)

    # While `down` was down, each other sink had every sample up to the newest it had.
    for sink in others:
        newest = max(during[sink])
        assert up_to(after(during[sink], stopped_at + 1), newest) == up_to(
            after(every_sample, stopped_at + 1), newest), sink
        assert sum(after(during[sink], stopped_at + 1).values()) >= DURING_OUTAGE

    # OpenSearch: one document per partition of every sample, each once.
    os_documents = sinks.opensearch_documents() + sinks.spooled_documents("opensearch")
    assert len({doc["_id"] for doc in os_documents}) == len(os_documents) == 2 * samples
    for partition, lag in LAG_BY_PARTITION.items():
        mine = [doc for doc in os_documents if doc["kafka"]["partition"]["id"] == partition]
        assert sorted(doc_time(doc) for doc in mine) == stamps
        assert {doc["kafka"]["consumergroup"]["consumer_lag"] for doc in mine} == {lag}

    # CloudWatch: every sample once. moto keeps nothing over a restart: when CloudWatch was
    # the one down, only what was sampled after it stopped can be asked of it.
    cloudwatch_has = sinks.received("cloudwatch") + sinks.spooled("cloudwatch")
    if down == "cloudwatch":
        assert after(cloudwatch_has, stopped_at + 1) == after(every_sample, stopped_at + 1)
    else:
        assert cloudwatch_has == every_sample
    sums = series(cloudwatch.client(), sinks.namespace, "SumOffsetLag", sinks.dimensions)
    assert set(sums.values()) == {4.0}

    # Each sink took every sample (what is spooled is taken at the next start).
    for sink in SINKS:
        spooled_samples = len({doc_time(doc) for doc in sinks.spooled_documents(sink)})
        assert delivered_and_dropped(exporter.stderr, sink) == (samples - spooled_samples, 0)

    assert f"{SINK_NAMES[down]}: delivery failing" in exporter.stderr
    for sink in others:
        assert f"{SINK_NAMES[sink]}: delivery failing" not in exporter.stderr
    assert "Traceback" not in exporter.stderr, exporter.stderr
