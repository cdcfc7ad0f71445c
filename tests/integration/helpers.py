"""Small helpers the integration tests share: make topics and groups, run the real tools."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._listoffsets import OffsetSpec
from confluent_kafka.cimpl import NewTopic
from elasticsearch import Elasticsearch
from prometheus_client.parser import text_string_to_metric_families

from stack.stackctl import Stack


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, partitions, 1)], operation_timeout=30)
    futures[topic].result(timeout=60)
    deadline = time.monotonic() + 30  # the topic exists before its partitions have leaders
    while time.monotonic() < deadline:
        metadata = admin.list_topics(topic, timeout=5).topics[topic]
        if metadata.error is None and len(metadata.partitions) == partitions and all(
                p.leader >= 0 for p in metadata.partitions.values()):
            return
        time.sleep(0.2)
    raise AssertionError(f"topic {topic} has no leader for every partition after 30 s")


def produce(bootstrap: str, topic: str, counts: Mapping[int, int]) -> None:
    """counts[partition] records into each partition."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for partition, count in counts.items():
        for n in range(count):
            producer.produce(topic, value=f"record {n}".encode(), partition=partition)
    assert producer.flush(30) == 0


def commit(bootstrap: str, group: str, offsets: Mapping[tuple[str, int], int]) -> None:
    """Commit offsets for a group that has no active member (as a stopped MirrorMaker)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "enable.auto.commit": False})
    try:
        consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                        asynchronous=False)
    finally:
        consumer.close()


def run_exporter(*args: str, env: Mapping[str, str] | None = None,
                 timeout: float = 60) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "lag_exporter", *args], capture_output=True,
                          text=True, timeout=timeout, env=full_env, check=False)


@dataclass(frozen=True, order=True)
class DescribeRow:
    group: str
    topic: str
    partition: int
    current_offset: int | None
    log_end_offset: int | None
    lag: int | None


def _number(cell: str) -> int | None:
    return None if cell == "-" else int(cell)


def describe_group(stack: Stack, group: str, *extra: str) -> list[DescribeRow]:
    """`kafka-consumer-groups --describe` (the real tool), parsed."""
    done = stack.run_tool("kafka-consumer-groups", "--bootstrap-server", stack.source_bootstrap,
                          "--describe", "--group", group, *extra)
    assert done.returncode == 0, done.stderr
    assert "Error:" not in done.stdout, done.stdout
    rows = []
    for line in done.stdout.splitlines():
        cells = line.split()
        if len(cells) >= 6 and cells[0] == group:
            rows.append(DescribeRow(cells[0], cells[1], int(cells[2]), _number(cells[3]),
                                    _number(cells[4]), _number(cells[5])))
    return rows


def parse_table(text: str) -> list[DescribeRow]:
    """lag-exporter snapshot's table, parsed the same way."""
    rows = []
    for line in text.splitlines()[1:]:
        cells = line.split()
        rows.append(DescribeRow(cells[0], cells[1], int(cells[2]), _number(cells[3]),
                                _number(cells[4]), _number(cells[5])))
    return rows


def lags_by_partition(rows: Iterable[DescribeRow]) -> dict[tuple[str, int], int | None]:
    return {(row.topic, row.partition): row.lag for row in rows}


def documents_by_topic(lines: Sequence[str]) -> dict[str, dict[str, Any]]:
    return {doc["topic"]: doc for doc in map(json.loads, lines)}


def search_all(es_url: str, index: str) -> list[dict[str, Any]]:
    """Every document of an index, oldest first (after a refresh)."""
    client = Elasticsearch(es_url)
    try:
        client.indices.refresh(index=index)
        answer = client.search(index=index, size=10_000, sort=["@timestamp", "topic"],
                               query={"match_all": {}})
        return [hit["_source"] | {"_id": hit["_id"]} for hit in answer["hits"]["hits"]]
    finally:
        client.close()


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    """The CLI's error contract: exactly one line on stderr, no traceback."""
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert "Traceback" not in done.stderr, done.stderr
    assert len(lines) == 1, done.stderr
    return lines[0]


class ExporterProcess:
    """`lag-exporter watch` as a real background process, stopped with a real signal."""

    def __init__(self, *args: str, env: Mapping[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "lag_exporter", "watch", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **(env or {})},
        )
        self.stdout = ""
        self.stderr = ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> tuple[int, float]:
        """Send sig; return (exit code, seconds it took to exit)."""
        started = time.monotonic()
        self.process.send_signal(sig)
        try:
            self.stdout, self.stderr = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()  # never leave an exporter running behind a failed test
            raise
        return self.process.returncode, time.monotonic() - started

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.stdout, self.stderr = self.process.communicate(timeout=10)

    def samples_taken(self) -> int:
        """From the exporter's closing log line."""
        match = re.search(r"stopped after (\d+) samples", self.stderr)
        assert match, self.stderr
        return int(match.group(1))


def doc_time(doc: Mapping[str, Any]) -> float:
    """A document's @timestamp as Unix seconds."""
    return datetime.fromisoformat(str(doc["@timestamp"]).replace("Z", "+00:00")).timestamp()


def wait_until_kafka_serves(bootstrap: str, timeout: float = 60) -> float:
    """After a broker restart: block until groups can be listed completely and every partition
    answers ListOffsets (the port opens before that). Returns the time it was reached."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            listing = admin.list_consumer_groups(request_timeout=5).result(timeout=10)
            metadata = admin.list_topics(timeout=5)
            # Metadata names a leader before that broker has loaded the partition: only an
            # answered ListOffsets for every partition says it serves what the exporter asks.
            latest = {TopicPartition(name, p): OffsetSpec.latest()  # type: ignore[no-untyped-call]
                      for name, t in metadata.topics.items() for p in t.partitions}
            for future in admin.list_offsets(latest, request_timeout=5).values():
                future.result(timeout=10)
            if not listing.errors:
                return time.time()
        except KafkaException:
            pass
        time.sleep(0.5)
    raise AssertionError(f"Kafka at {bootstrap} did not serve within {timeout} s")


def offsets_now(bootstrap: str, group: str, topic: str, partitions: int
                ) -> tuple[dict[int, int], dict[int, int]]:
    """(high watermarks, committed offsets) of one topic, read straight from Kafka. Retries for
    a few seconds: a new topic's leader can answer NOT_LEADER for a moment after creation."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    request = [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p)
                                                    for p in range(partitions)])]
    latest = {TopicPartition(topic, p): OffsetSpec.latest()  # type: ignore[no-untyped-call]
              for p in range(partitions)}
    for attempt in range(20):
        try:
            answer = admin.list_consumer_group_offsets(request)[group].result(timeout=30)
            watermarks = {tp.partition: future.result(timeout=30).offset
                          for tp, future in admin.list_offsets(latest).items()}
        except KafkaException:
            if attempt == 19:
                raise
            time.sleep(0.5)
            continue
        committed = {tp.partition: tp.offset for tp in answer.topic_partitions if tp.offset >= 0}
        return watermarks, committed
    raise AssertionError("unreachable")


class SteadyProducer:
    """Produces `rate` records per second round-robin over the partitions, in a thread."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, rate: int) -> None:
        self._producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
        self._topic, self._partitions, self._rate = topic, partitions, rate
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.sent = 0

    def __enter__(self) -> SteadyProducer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._producer.flush(30)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            for _ in range(self._rate // 10):
                self._producer.produce(self._topic, b"x", partition=self.sent % self._partitions)
                self.sent += 1
            self._producer.poll(0)


def wait_for(check: Callable[[], bool], timeout: float, what: str, poll_s: float = 0.5,
             exporter: ExporterProcess | None = None) -> None:
    """Poll `check` until it holds: the way to synchronise with the stack and the exporter
    (never a fixed sleep). Fails naming `what` after `timeout` seconds; with `exporter`, also as
    soon as it exits, and then (or on the timeout) with its stderr, killed if still running."""
    deadline = time.monotonic() + timeout
    while not check():
        exited = exporter is not None and exporter.process.poll() is not None
        if exited or time.monotonic() > deadline:
            why = "the exporter exited" if exited else f"timed out after {timeout:.0f} s"
            if exporter is not None:
                exporter.kill()
                why += f"; its stderr:\n{exporter.stderr[-3000:]}"
            raise AssertionError(f"{why} waiting for {what}")
        time.sleep(poll_s)


def document_stamps(es_url: str, index: str, **match: str) -> list[float]:
    """@timestamps (Unix seconds, sorted) of the index's documents whose fields equal `match`,
    after a refresh; [] while the index does not exist yet."""
    client = Elasticsearch(es_url)
    try:
        if not client.indices.exists(index=index):
            return []
        client.indices.refresh(index=index)
        query = {"bool": {"filter": [{"term": {name: value}} for name, value in match.items()]}}
        answer = client.search(index=index, size=10_000, query=query,
                               source={"includes": ["@timestamp"]})
        return sorted(doc_time(hit["_source"]) for hit in answer["hits"]["hits"])
    finally:
        client.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def scrape_metrics(port: int) -> dict[str, list[Any]]:
    """GET /metrics of an exporter on 127.0.0.1:port: family name -> its samples."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def metric_values(port: int, name: str, **labels: str) -> list[float]:
    """Values of the series of `name` whose labels include `labels`; [] if it has none (or the
    exporter does not answer yet)."""
    try:
        families = scrape_metrics(port)
    except OSError:
        return []
    return [s.value for family in families.values() for s in family
            if s.name == name and labels.items() <= s.labels.items()]
