"""MirrorMaker 2 (issue 12), against the stack's real connect-mirror 4.1 (dedicated mode,
offset.flush.interval.ms=1000): `lag-exporter watch --mm2-target-bootstrap-server ...` reports
the mirror as a group of the source cluster. Its lag is checked against high watermark -
(stored offset + 1) computed here from a raw read of the offsets topic: bracketed while MM2
copies, exactly while it is stopped. Records of another connector, another source alias and a
tombstone written into the offsets topic change nothing and are counted."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer
from confluent_kafka import TopicPartition as KafkaTopicPartition
from helpers import (
    JsonLinesExporter,
    SteadyProducer,
    create_topic,
    doc_time,
    free_port,
    metric_values,
    produce,
    run_exporter,
    wait_for,
)

from stack.stackctl import Stack

pytestmark = pytest.mark.integration

PARTITIONS = 3
LABEL = "mm2:source->target"
STOP_AFTER_S = 4


def stored_positions(bootstrap: str, offsets_topic: str, topic: str) -> dict[int, int]:
    """The offsets topic read from its start to its end, parsed here (not by lag_exporter):
    the latest stored offset per partition of `topic`, as MirrorSourceConnector wrote it."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "test-mm2-raw",
                         "enable.auto.commit": False, "enable.partition.eof": True})
    try:
        partitions = consumer.list_topics(offsets_topic, timeout=10).topics[offsets_topic]
        not_at_end = set(partitions.partitions)
        consumer.assign([KafkaTopicPartition(offsets_topic, p, OFFSET_BEGINNING)
                         for p in not_at_end])
        stored: dict[int, int] = {}
        deadline = time.monotonic() + 30
        while not_at_end:
            assert time.monotonic() < deadline, "offsets topic not read to its end in 30 s"
            message = consumer.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                assert error.code() == KafkaError._PARTITION_EOF, error
                not_at_end.discard(message.partition())
                continue
            key = json.loads(message.key() or b"null")
            if (isinstance(key, list) and key[0] == "MirrorSourceConnector"
                    and isinstance(key[1], dict)
                    and key[1].get("cluster") == "source" and key[1].get("topic") == topic):
                value = message.value()
                if value is None:
                    stored.pop(key[1]["partition"], None)
                else:
                    stored[key[1]["partition"]] = json.loads(value)["offset"]
        return stored
    finally:
        consumer.close()


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "test-mm2-raw"})
    try:
        return {p: consumer.get_watermark_offsets(KafkaTopicPartition(topic, p), timeout=10)[1]
                for p in range(PARTITIONS)}
    finally:
        consumer.close()


@dataclass(frozen=True)
class Reading:
    started: float
    finished: float
    lowest: dict[int, int]
    """Per partition, the smallest lag possible in between: HWM before - (stored after + 1)."""
    highest: dict[int, int]
    """The largest: HWM after - (stored before + 1)."""


def bracketed_reading(stack: Stack, topic: str, between_s: float) -> Reading:
    watermarks_before = end_offsets(stack.source_bootstrap, topic)
    stored_before = stored_positions(stack.target_bootstrap, stack.mm2_offsets_topic, topic)
    started = time.time()
    time.sleep(between_s)  # the exporter's documents of these seconds are checked
    finished = time.time()
    stored_after = stored_positions(stack.target_bootstrap, stack.mm2_offsets_topic, topic)
    watermarks_after = end_offsets(stack.source_bootstrap, topic)
    return Reading(started, finished,
                   {p: max(0, watermarks_before[p] - stored_after[p] - 1)
                    for p in range(PARTITIONS)},
                   {p: watermarks_after[p] - stored_before[p] - 1 for p in range(PARTITIONS)})


def latest_lags(exporter: JsonLinesExporter, topic: str, since: float = 0.0
                ) -> dict[int, int] | None:
    docs = [d for d in exporter.documents(LABEL) if d["topic"] == topic and doc_time(d) >= since]
    if not docs:
        return None
    return {p: docs[-1][f"p{p}"] for p in range(PARTITIONS) if f"p{p}" in docs[-1]}


def expected_lags(stack: Stack, topic: str) -> dict[int, int]:
    stored = stored_positions(stack.target_bootstrap, stack.mm2_offsets_topic, topic)
    watermarks = end_offsets(stack.source_bootstrap, topic)
    return {p: watermarks[p] - (stored[p] + 1) for p in range(PARTITIONS)}


def skip_counts(stack: Stack) -> str:
    """The counts a fresh snapshot logs after its catch-up of the offsets topic."""
    done = run_exporter("snapshot", "--bootstrap-server", stack.source_bootstrap,
                        "--mm2-target-bootstrap-server", stack.target_bootstrap,
                        "--format", "tsv")
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if "skipped:" in line]
    assert len(lines) == 1, done.stderr
    return lines[0].split("skipped: ")[1]


def count(counts: str, reason: str) -> int:
    for part in counts.split(", "):
        number, _, what = part.partition(" ")
        if what == reason:
            return int(number)
    return 0


def write_foreign_records(stack: Stack, topic: str) -> None:
    """Into MM2's offsets topic, without disturbing MM2: another connector's position for our
    topic, another source alias's, and a tombstone for a partition MM2 never mirrored."""
    producer = Producer({"bootstrap.servers": stack.target_bootstrap,
                         "partitioner": "murmur2_random"})  # Java's partitioner, as Connect

    def send(key: Any, value: Mapping[str, Any] | None) -> None:
        producer.produce(stack.mm2_offsets_topic, key=json.dumps(key).encode(),
                         value=None if value is None else json.dumps(value).encode())

    send(["OtherSourceConnector", {"cluster": "source", "partition": 0, "topic": topic}],
         {"offset": 0})
    send(["MirrorSourceConnector", {"cluster": "elsewhere", "partition": 0, "topic": topic}],
         {"offset": 0})
    send(["MirrorSourceConnector", {"cluster": "source", "partition": 0,
                                    "topic": f"{topic}-never-mirrored"}], None)
    assert producer.flush(30) == 0


def test_mirrormaker2_lag_parity_stop_restart_and_foreign_records(
        stack: Stack, unique_name: str, tmp_path: Path) -> None:
    topic = f"mm2.{unique_name}"
    began = time.monotonic()
    create_topic(stack.source_bootstrap, topic, PARTITIONS)
    produce(stack.source_bootstrap, topic, {p: 20 + 5 * p for p in range(PARTITIONS)})
    # MM2 picks new topics up within refresh.topics.interval.seconds (2 s) and flushes its
    # positions every second
    wait_for(lambda: expected_lags(stack, topic) == dict.fromkeys(range(PARTITIONS), 0)
             if len(stored_positions(stack.target_bootstrap, stack.mm2_offsets_topic, topic))
             == PARTITIONS else False, 90, "MM2 to copy the new topic and store its positions")

    print(f"MM2 copied the new topic after {time.monotonic() - began:.1f} s")
    plan = run_exporter("check-config", "--bootstrap-server", stack.source_bootstrap,
                        "--mm2-target-bootstrap-server", stack.target_bootstrap,
                        "--mm2-topic-pattern", topic.replace(".", "\\."))
    assert plan.returncode == 0, plan.stderr
    # only a mirror on this cluster: no group's commits to follow in __consumer_offsets
    assert "  committed offsets: none to read (only MirrorMaker 2 flows)" in \
        plan.stdout.splitlines(), plan.stdout
    mirror_lines = [line for line in plan.stdout.splitlines() if line.startswith("  mirror ")]
    assert len(mirror_lines) == 1 and mirror_lines[0].startswith(
        f"  mirror {LABEL}: connector MirrorSourceConnector, source alias source, offsets topic "
        f"{stack.mm2_offsets_topic} on {stack.target_bootstrap}: {PARTITIONS} source "
        f"partition(s) of 1 topic(s): {topic} (replicated as source.{topic}, ..."), plan.stdout
    # the same mirror from a config file, next to a group: snapshot's rows for our topic
    config = tmp_path / "mm2.toml"
    config.write_text(f"""
[[cluster]]
name = "src"
bootstrap_servers = "{stack.source_bootstrap}"
groups = ["{stack.mm1_group}"]
[[cluster.mirror]]
target_bootstrap_servers = "{stack.target_bootstrap}"
label = "dc-mirror"
topic_patterns = ["{topic.replace(".", "[.]")}"]
""")
    done = run_exporter("snapshot", "--config", str(config), "--format", "tsv")
    assert done.returncode == 0, done.stderr
    rows = [line.split("\t") for line in done.stdout.splitlines()[1:]]
    assert [row[:6] for row in rows if row[0] == "dc-mirror"] == [
        ["dc-mirror", topic, str(p), str(20 + 5 * p), str(20 + 5 * p), "0"]
        for p in range(PARTITIONS)], done.stdout
    assert any(row[0] == stack.mm1_group for row in rows), done.stdout

    mm2_stopped = False
    port = free_port()
    with JsonLinesExporter("--bootstrap-server", stack.source_bootstrap,
                           "--mm2-target-bootstrap-server", stack.target_bootstrap,
                           "--interval", "0.5", "--summary-interval", "3600",
                           "--stop-after", str(STOP_AFTER_S), "--http-port", str(port)
                           ) as exporter:
        try:
            # caught up, nothing produced: exactly 0 on every partition
            wait_for(lambda: latest_lags(exporter, topic) == dict.fromkeys(range(PARTITIONS), 0),
                     30, "the mirror's documents with lag 0")

            # steady production: every document lies within a bracket of raw reads
            with SteadyProducer(stack.source_bootstrap, topic, PARTITIONS, rate=60):
                readings = [bracketed_reading(stack, topic, between_s=2.5) for _ in range(3)]
            for reading in readings:
                checked = 0
                # the exporter follows the topic within a fetch (0.1 s): margins of 0.5 s
                for doc in exporter.documents(LABEL):
                    if doc["topic"] != topic or not (
                            reading.started + 0.5 <= doc_time(doc) <= reading.finished - 0.5):
                        continue
                    for p in range(PARTITIONS):
                        assert reading.lowest[p] <= doc[f"p{p}"] <= reading.highest[p], (
                            p, doc, reading)
                    checked += 1
                assert checked >= 2, (checked, reading)
            steady = [d for d in exporter.documents(LABEL) if d["topic"] == topic]
            # near 0: bounded by what MM2 copies between its flushes (every second here: 20
            # records per partition; seen up to 18); 3 s of a partition's production at most
            print("steady lag_max:", sorted(d["lag_max"] for d in steady))
            assert max(d["lag_max"] for d in steady) <= 60, "lag beyond 3 s of production"
            # a flush every second is progress: never judged stopped
            assert not {s for d in steady for s in d.get("partition_status", {}).values()} & {
                "STOP", "STALL"}, [d.get("partition_status") for d in steady]

            wait_for(lambda: latest_lags(exporter, topic) == dict.fromkeys(range(PARTITIONS), 0),
                     30, "lag 0 once production stopped")
            assert latest_lags(exporter, topic) == expected_lags(stack, topic)

            # MM2 stopped while records arrive: lag grows by exactly what was produced
            print(f"steady phase done at {time.monotonic() - began:.1f} s")
            stack.stop("mm2")
            mm2_stopped = True
            before = expected_lags(stack, topic)
            produced = {0: 40, 1: 25, 2: 7}
            produce(stack.source_bootstrap, topic, produced)
            grown = {p: before[p] + produced[p] for p in range(PARTITIONS)}
            assert expected_lags(stack, topic) == grown  # nothing stored meanwhile
            wait_for(lambda: latest_lags(exporter, topic) == grown, 30,
                     f"lags {grown} while MM2 is stopped")
            for p in range(PARTITIONS):  # /metrics: the same series as for a group
                wait_for(lambda p=p: metric_values(  # type: ignore[misc]
                    port, "kafka_consumergroup_group_lag", group=LABEL, topic=topic,
                    partition=str(p)) == [grown[p]], 10, f"/metrics lag of partition {p}")
            copied = end_offsets(stack.target_bootstrap, f"source.{topic}")
            stored = stored_positions(stack.target_bootstrap, stack.mm2_offsets_topic, topic)
            assert all(copied[p] >= stored[p] + 1 for p in range(PARTITIONS)), (copied, stored)

            # foreign records in the offsets topic: counted, and the numbers do not move
            counts_before = skip_counts(stack)
            write_foreign_records(stack, topic)
            wrote_at = time.time()
            counts_after = skip_counts(stack)
            for reason in ("tombstone", "other source alias"):
                assert count(counts_after, reason) == count(counts_before, reason) + 1, (
                    counts_before, counts_after)
            assert count(counts_after, "other connector") > count(counts_before,
                                                                  "other connector")
            wait_for(lambda: latest_lags(exporter, topic, since=wrote_at + 1.0) is not None,
                     10, "documents after the foreign records")
            after = [d for d in exporter.documents(LABEL)
                     if d["topic"] == topic and doc_time(d) >= wrote_at]
            assert after and all({p: d[f"p{p}"] for p in range(PARTITIONS)} == grown
                                 for d in after), after

            # a memberless mirror whose position does not move while behind: STOP
            # (partition_status lists the partitions that are not OK: here every one, STOP)
            wait_for(lambda: any(d.get("partition_status") == {f"p{p}": "STOP"
                                                                for p in range(PARTITIONS)}
                                 for d in exporter.documents(LABEL) if d["topic"] == topic),
                     STOP_AFTER_S * 5, "STOP while MM2 is stopped")

            # restarted: back to 0
            print(f"restarting MM2 at {time.monotonic() - began:.1f} s")
            stack.start("mm2")
            mm2_stopped = False
            wait_for(lambda: latest_lags(exporter, topic) == dict.fromkeys(range(PARTITIONS), 0),
                     120, "lag 0 after MM2 restarted")
            assert expected_lags(stack, topic) == dict.fromkeys(range(PARTITIONS), 0)
            assert exporter.running(), exporter.log()[-20:]
        finally:
            if mm2_stopped:
                stack.start("mm2")
