"""The original setup: MirrorMaker 1 mirrors an 18-partition topic as `oasis-group` while
`lag-exporter watch --group oasis-group` writes to Elasticsearch for 30 seconds. Every document is
checked against kafka-consumer-groups output taken in the same seconds."""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import (
    DescribeRow,
    ExporterProcess,
    SteadyProducer,
    create_topic,
    describe_group,
    doc_time,
    document_stamps,
    offsets_now,
    search_all,
    wait_for,
    wait_until_kafka_serves,
)

from stack.stackctl import Stack

pytestmark = pytest.mark.integration

PARTITIONS = 18
GROUP = "oasis-group"
# Documents are stamped every second and must lie in [start, end - 0.5 s] of a reading: a reading
# of at least 1.6 s always contains one (CI saw 17 documents for 20 readings of ~1.4 s each).
MIN_READING_S = 1.6


@dataclass(frozen=True)
class Reading:
    """A kafka-consumer-groups run, bracketed by two direct reads of the same offsets."""

    started: float
    finished: float
    rows: list[DescribeRow]
    lowest: dict[int, int]
    """Per partition, the smallest lag possible in the window: HWM before - commit after."""
    highest: dict[int, int]
    """The largest: HWM after - commit before (offsets only grow)."""


def read_with_bounds(stack: Stack, topic: str) -> Reading:
    started = time.time()
    watermarks_before, committed_before = offsets_now(stack.source_bootstrap, GROUP, topic,
                                                      PARTITIONS)
    rows = [row for row in describe_group(stack, GROUP) if row.topic == topic]
    time.sleep(max(0.0, started + MIN_READING_S - time.time()))
    watermarks_after, committed_after = offsets_now(stack.source_bootstrap, GROUP, topic,
                                                    PARTITIONS)
    finished = time.time()
    lowest = {p: watermarks_before[p] - committed_after[p] for p in range(PARTITIONS)}
    highest = {p: watermarks_after[p] - committed_before[p] for p in range(PARTITIONS)}
    return Reading(started, finished, rows, lowest, highest)


def wait_for_mirroring(stack: Stack, topic: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, committed = offsets_now(stack.source_bootstrap, GROUP, topic, PARTITIONS)
        if len(committed) == PARTITIONS:
            return
        time.sleep(1)
    pytest.fail(f"MirrorMaker 1 did not commit {GROUP} offsets on all partitions of {topic}")


def test_30_second_watch_matches_kafka_consumer_groups(
    stack: Stack, unique_name: str, tmp_path: Path
) -> None:
    topic, index = f"oasis.{unique_name}", f"mm1-{unique_name}"
    wait_until_kafka_serves(stack.source_bootstrap)  # an earlier test may have restarted it
    create_topic(stack.source_bootstrap, topic, PARTITIONS)
    with SteadyProducer(stack.source_bootstrap, topic, PARTITIONS, rate=300) as producer:
        wait_for_mirroring(stack, topic)
        exporter = ExporterProcess("--bootstrap-server", stack.source_bootstrap, "--group", GROUP,
                                   "--cluster-name", "oasis", "--topic", topic,
                                   "--es-url", stack.es_url, "--es-index", index,
                                   "--interval", "1", "--spool-dir", str(tmp_path))
        deadline = time.monotonic() + 30
        wait_for(lambda: bool(document_stamps(stack.es_url, index, topic=topic)), timeout=30,
                 what="the first document", exporter=exporter)
        readings = []
        while time.monotonic() < deadline - 3:
            readings.append(read_with_bounds(stack, topic))
        # 30 s of watch: as many samples as whole seconds since the first one was stored
        wait_for(lambda: len(document_stamps(stack.es_url, index, topic=topic)) >= 29,
                 timeout=max(0.0, deadline - time.monotonic()) + 10, what="29 documents",
                 exporter=exporter)
        code, _ = exporter.stop(signal.SIGTERM)
    assert code == 0, exporter.stderr
    assert producer.sent > 5000

    documents = [doc for doc in search_all(stack.es_url, index) if doc["topic"] == topic]
    assert 28 <= len(documents) <= 32
    assert len(documents) == exporter.samples_taken()
    assert all(doc["group"] == GROUP and doc["cluster"] == "oasis" for doc in documents)
    assert all(set(doc) >= {f"p{p}" for p in range(PARTITIONS)} for doc in documents)

    checked = 0
    for reading in readings:
        assert len(reading.rows) == PARTITIONS
        for row in reading.rows:  # the reference tool itself stays within the bounds
            assert row.lag is not None
            assert reading.lowest[row.partition] <= row.lag <= reading.highest[row.partition]
        for doc in documents:
            stamp = doc_time(doc)
            if not reading.started <= stamp <= reading.finished - 0.5:
                continue
            for p in range(PARTITIONS):
                assert max(0, reading.lowest[p]) <= doc[f"p{p}"] <= reading.highest[p], (p, doc)
            checked += 1
    assert len(readings) >= 4
    assert checked >= len(readings)  # at least one document checked per reference reading
