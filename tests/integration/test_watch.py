"""`lag-exporter watch` as a long-running process: schedule, delivery, clean shutdown."""

from __future__ import annotations

import itertools
import json
import signal
from collections import Counter
from pathlib import Path

import pytest
from helpers import (
    ExporterProcess,
    commit,
    create_topic,
    doc_time,
    document_stamps,
    free_port,
    metric_values,
    produce,
    search_all,
    wait_for,
)

from lag_exporter.outbox import read_spool
from stack.stackctl import Stack

pytestmark = pytest.mark.integration


@pytest.fixture
def two_topic_group(stack: Stack, unique_name: str) -> str:
    group = f"watch-{unique_name}"
    for name in ("a", "b"):
        topic = f"watch.{unique_name}.{name}"
        create_topic(stack.source_bootstrap, topic, 2)
        produce(stack.source_bootstrap, topic, {0: 4, 1: 6})
        commit(stack.source_bootstrap, group, {(topic, 0): 1, (topic, 1): 1})
    return group


def test_one_document_per_topic_per_tick_and_clean_sigterm(
    stack: Stack, two_topic_group: str, unique_name: str, tmp_path: Path
) -> None:
    index = f"watch-{unique_name}"
    exporter = ExporterProcess("--bootstrap-server", stack.source_bootstrap,
                               "--group", two_topic_group, "--es-url", stack.es_url,
                               "--es-index", index, "--interval", "1",
                               "--spool-dir", str(tmp_path / "spool"))
    wait_for(lambda: len(document_stamps(stack.es_url, index, group=two_topic_group)) >= 2 * 6,
             timeout=60, what="6 samples of both topics in Elasticsearch", exporter=exporter)
    code, took = exporter.stop(signal.SIGTERM)
    assert code == 0, exporter.stderr
    assert took < 5
    samples = exporter.samples_taken()
    assert samples >= 5
    documents = search_all(stack.es_url, index)
    per_topic = Counter(doc["topic"] for doc in documents)
    assert set(per_topic.values()) == {samples}  # every sample delivered, once
    assert len({doc["_id"] for doc in documents}) == len(documents)
    assert {(doc["p0"], doc["p1"], doc["lag_total"]) for doc in documents} == {(3, 5, 8)}
    stamps = sorted({doc_time(doc) for doc in documents})
    gaps = [later - earlier for earlier, later in itertools.pairwise(stamps)]
    assert all(0.8 < gap < 1.2 for gap in gaps), gaps  # a fixed 1 s schedule
    assert read_spool(tmp_path / "spool") == []


def test_without_elasticsearch_documents_go_to_stdout_as_json_lines(
    stack: Stack, two_topic_group: str
) -> None:
    port = free_port()
    exporter = ExporterProcess("--bootstrap-server", stack.source_bootstrap,
                               "--group", two_topic_group, "--interval", "0.5",
                               "--http-port", str(port))
    wait_for(lambda: sum(metric_values(port, "lag_exporter_samples_total")) >= 5, timeout=60,
             what="5 samples", exporter=exporter)
    code, took = exporter.stop(signal.SIGINT)
    assert code == 0, exporter.stderr
    assert took < 5
    documents = [json.loads(line) for line in exporter.stdout.splitlines()]
    assert len(documents) == 2 * exporter.samples_taken()
    assert {doc["group"] for doc in documents} == {two_topic_group}
    assert all(doc["p0"] == 3 and doc["p1"] == 5 for doc in documents)
