"""Small helpers the integration tests share: make topics and groups, run the real tools."""

from __future__ import annotations

import json
import math
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


def create_topics(bootstrap: str, partitions: Mapping[str, int]) -> None:
    """Several topics in one request (each create_topic call costs about a second)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, count, 1)
                                   for topic, count in partitions.items()], operation_timeout=30)
    for future in futures.values():
        future.result(timeout=60)
    deadline = time.monotonic() + 30  # the topics exist before their partitions have leaders
    while time.monotonic() < deadline:
        metadata = admin.list_topics(timeout=5).topics
        if all(topic in metadata and metadata[topic].error is None
               and len(metadata[topic].partitions) == count
               and all(p.leader >= 0 for p in metadata[topic].partitions.values())
               for topic, count in partitions.items()):
            return
        time.sleep(0.2)
    raise AssertionError(f"topics {sorted(partitions)} have no leader everywhere after 30 s")


class TimedProducer:
    """Writes records with explicit CreateTimes (back-dated, steady streams, bursts) and keeps,
    from the delivery reports, the CreateTime of every offset written: the ground truth of lag
    in seconds. Steady streams and bursts are produced by a thread every 20 ms; a stream's
    records are stamped with their scheduled time, so the timestamps are exactly periodic."""

    def __init__(self, bootstrap: str) -> None:
        self._producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5,
                                   "enable.idempotence": True})
        self._lock = threading.Lock()
        self._times: dict[tuple[str, int], list[float]] = {}
        """(topic, partition) -> CreateTime (s) of offset 0, 1, ... up to the first offset not
        reported yet."""
        self._early: dict[tuple[str, int], dict[int, float]] = {}
        """Reports of offsets past that gap: two threads serving delivery reports (flush and
        poll) can run the callbacks of two batches out of order."""
        self._streams: dict[tuple[str, int], tuple[float, float]] = {}
        """(topic, partition) -> (next scheduled time, period)."""
        self._bursts: list[tuple[str, int, int]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TimedProducer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._producer.flush(30)
        with self._lock:
            self.errors += [f"{key}: offset {len(self._times[key])} never reported, "
                            f"{len(early)} after it were" for key, early in self._early.items()
                            if early]

    def _delivered(self, error: object, message: Any) -> None:
        if error is not None:
            self.errors.append(str(error))
            return
        key = (message.topic(), message.partition())
        with self._lock:
            times = self._times.setdefault(key, [])
            early = self._early.setdefault(key, {})
            early[message.offset()] = message.timestamp()[1] / 1000
            while len(times) in early:  # idempotent producer: no gaps, no duplicates
                times.append(early.pop(len(times)))

    def _produce(self, topic: str, partition: int, at: float) -> None:
        while True:
            try:
                self._producer.produce(topic, b"x", partition=partition,
                                       timestamp=round(at * 1000), on_delivery=self._delivered)
                return
            except BufferError:  # local queue full: let deliveries drain it
                self._producer.poll(0.1)

    def backfill(self, topic: str, partition: int, first: float, last: float,
                 rate: float) -> None:
        """Records stamped first, first + 1/rate, ... < last, written now (before start)."""
        period = 1 / rate
        count = max(0, math.ceil((last - first) * rate - 1e-9))
        expected = self.delivered(topic, partition) + count
        for n in range(count):
            self._produce(topic, partition, first + n * period)
        assert self._producer.flush(60) == 0
        # The last reports may still be in the callbacks of the producing thread's poll.
        deadline = time.monotonic() + 10
        while self.delivered(topic, partition) < expected and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.delivered(topic, partition) == expected, self.errors[:3]

    def stream(self, topic: str, partition: int, rate: float, first: float | None = None
               ) -> None:
        """From `first` (default now) on, one record every 1/rate s, stamped with its time."""
        with self._lock:
            self._streams[(topic, partition)] = (time.time() if first is None else first,
                                                 1 / rate)

    def stop_stream(self, topic: str, partition: int) -> None:
        with self._lock:
            self._streams.pop((topic, partition), None)

    def burst(self, topic: str, partition: int, count: int) -> None:
        """`count` records at once, stamped now (by the producing thread, in stream order)."""
        with self._lock:
            self._bursts.append((topic, partition, count))

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            now = time.time()
            with self._lock:
                bursts, self._bursts = self._bursts, []
                due: list[tuple[str, int, float]] = []
                for key, (scheduled, period) in self._streams.items():
                    while scheduled <= now:
                        due.append((*key, scheduled))
                        scheduled += period
                    self._streams[key] = (scheduled, period)
            for topic, partition, at in due:
                self._produce(topic, partition, at)
            for topic, partition, count in bursts:
                for _ in range(count):
                    self._produce(topic, partition, now)
            self._producer.poll(0)

    def create_times(self, topic: str, partition: int) -> list[float]:
        """CreateTime (s) of each offset delivered so far (up to the first not reported yet)."""
        with self._lock:
            return list(self._times.get((topic, partition), ()))

    def delivered(self, topic: str, partition: int) -> int:
        """Records delivered so far: the high watermark they made."""
        with self._lock:
            return len(self._times.get((topic, partition), ()))


class MemberlessCommitter:
    """Commits offsets for groups without joining them (as a stopped or external consumer),
    one long-lived client per group: a commit takes milliseconds, not a client start."""

    def __init__(self, bootstrap: str) -> None:
        self._bootstrap = bootstrap
        self._consumers: dict[str, Consumer] = {}

    def commit(self, group: str, offsets: Mapping[tuple[str, int], int]) -> tuple[float, float]:
        """Commit synchronously; (wall time before, wall time after)."""
        consumer = self._consumers.get(group)
        if consumer is None:
            consumer = self._consumers[group] = Consumer({
                "bootstrap.servers": self._bootstrap, "group.id": group,
                "enable.auto.commit": False})
        started = time.time()
        consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                        asynchronous=False)
        return started, time.time()

    def close(self) -> None:
        for consumer in self._consumers.values():
            consumer.close()
        self._consumers.clear()


class JsonLinesExporter:
    """`lag-exporter watch` (no --es-url) as a real process: its JSON lines and its log lines
    are collected by two threads while it runs. Use as a context manager: it is stopped with
    SIGTERM (killed if it hangs) whatever happens."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "lag_exporter", "watch", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._lock = threading.Lock()
        self._documents: list[dict[str, Any]] = []
        self._log: list[str] = []
        self._threads = [threading.Thread(target=self._read, args=(stream, parse), daemon=True)
                         for stream, parse in ((self.process.stdout, True),
                                               (self.process.stderr, False))]
        for thread in self._threads:
            thread.start()
        self.returncode: int | None = None

    def _read(self, stream: Any, parse: bool) -> None:
        for line in stream:
            with self._lock:
                if parse:
                    self._documents.append(json.loads(line))
                else:
                    self._log.append(line.rstrip("\n"))

    def __enter__(self) -> JsonLinesExporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def documents(self, group: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [doc for doc in self._documents if group is None or doc["group"] == group]

    def log(self) -> list[str]:
        with self._lock:
            return list(self._log)

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM, wait, and return the exit code (killed after `timeout`)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        for thread in self._threads:
            thread.join(timeout=10)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
        self.returncode = self.process.returncode
        return self.returncode
