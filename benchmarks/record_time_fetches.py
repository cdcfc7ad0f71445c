#!/usr/bin/env python3
"""What reading record timestamps costs in Kafka requests (issue 11: "at most one batched Fetch
per leader every 10 s"), against the local stack's target cluster.

    .venv/bin/python benchmarks/record_time_fetches.py

1. Batches: `KafkaSource.record_times` for the first 100, 1,000 and all partitions of the scale
   benchmark's estate c (`bench.c.*`, 10,000 partitions of 3 records; topics of our own,
   `record-fetches.t*`, are created when it is missing), at offset 1 of each, `--repeat` times
   per size. Two passes of the same calls:
   - production: the KafkaSource as the exporter builds it: wall time and CPU of each call
     (time.process_time: every thread of this process, librdkafka's included);
   - instrumented: the same KafkaSource, except that its record reader also has librdkafka
     statistics (statistics.interval.ms=1000, stats_cb) and debug=protocol. Production strips
     both from the reader (`_new_record_reader`), so they are added here only, by a subclass.
     Requests per call and broker come from the statistics' brokers[].req counters, between
     the last statistics emitted before the call and the first emitted after it; the protocol
     log lines in the same window cross-check the Fetch count and give each Fetch's size and
     round-trip time (an empty long poll waits fetch.wait.max.ms on the broker).
2. Rate limit: the real Sampler + Estimates over `--ticks` simulated seconds (a synthetic
   monotonic clock, one sample per simulated second) on a group of our own,
   `record-fetches-moving`, whose committed offsets move one record per tick, always behind
   everything the watermark history has seen: every tick would want record times, and
   `Estimates.record_time_requests` lets one call through every RECORD_TIME_EVERY_S.

Creates only `record-fetches.*` topics and the `record-fetches-moving` group (idempotent);
never starts or stops a stack component.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from confluent_kafka import Consumer, KafkaException, Producer  # noqa: E402
from confluent_kafka import TopicPartition as KafkaTopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient  # noqa: E402
from confluent_kafka.cimpl import NewTopic  # noqa: E402

from lag_exporter import kafka_source  # noqa: E402
from lag_exporter.errors import SourceError  # noqa: E402
from lag_exporter.estimates import RECORD_TIME_EVERY_S, Estimates  # noqa: E402
from lag_exporter.kafka_source import KafkaSource  # noqa: E402
from lag_exporter.model import TopicPartition  # noqa: E402
from lag_exporter.sampler import Sampler, WrappedSource  # noqa: E402
from stack import stackctl  # noqa: E402

ESTATE_PREFIX = "bench.c."
ESTATE_PARTITIONS = 10_000
OWN_PREFIX = "record-fetches.t"
OWN_TOPICS = 8
OWN_PARTITIONS_EACH = 500
RECORDS_PER_PARTITION = 3
OFFSET = 1  # the estate's committed offset of lag 2
MOVING_TOPIC = "record-fetches.moving"
MOVING_GROUP = "record-fetches-moving"
MOVING_PARTITIONS = 100
TIMEOUT_S = 10.0  # the CLI's --timeout default for watch
STATISTICS_EVERY_MS = 1000  # librdkafka's granularity
SENT = re.compile(r"(\S+): Sent (\w+)Request \(v\d+, (\d+) bytes")
RECEIVED = re.compile(r"(\S+): Received (\w+)Response \(v\d+, (\d+) bytes.*?rtt ([\d.]+)ms")
STATS_TS = re.compile(r'"ts":(\d+)')


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- counting the reader's requests


@dataclass(frozen=True)
class ProtocolLine:
    broker: str
    sent: bool  # False: a response received
    api: str
    size: int
    rtt_ms: float


@dataclass
class Snapshot:
    """One librdkafka statistics event, reduced to what the tables need."""

    ts: float  # librdkafka's monotonic clock (CLOCK_MONOTONIC, as time.monotonic), seconds
    log_index: int  # protocol lines served before it (the same queue: same order)
    requests: dict[str, Counter[str]]  # broker -> API -> requests sent so far
    records_fetched: int  # rxmsgs of every partition
    records_dropped: int  # rx_ver_drops: fetched, then outdated by a pause or an unassign


@dataclass
class ReaderProbe:
    """stats_cb and log handler of the instrumented record reader. The callback only keeps the
    raw text: parsing ~10 MB of statistics at 10,000 partitions inside a call would slow it."""

    events: list[tuple[float, int, str]] = field(default_factory=list)
    lines: list[ProtocolLine] = field(default_factory=list)
    reader: Any = None
    born: tuple[float, int] = (0.0, 0)  # when the reader was made, and the lines before it
    last: Snapshot | None = None  # the statistics taken as the last reader closed

    def on_statistics(self, text: str) -> None:
        match = STATS_TS.search(text, 0, 400)
        ts = int(match.group(1)) / 1e6 if match else time.monotonic()
        self.events.append((ts, len(self.lines), text))

    def on_log(self, message: str) -> None:
        if (sent := SENT.search(message)) is not None:
            self.lines.append(ProtocolLine(sent.group(1), True, sent.group(2),
                                           int(sent.group(3)), 0.0))
        elif (received := RECEIVED.search(message)) is not None:
            self.lines.append(ProtocolLine(received.group(1), False, received.group(2),
                                           int(received.group(3)), float(received.group(4))))

    def snapshot_after(self, moment: float, timeout_s: float = 3.0) -> Snapshot:
        """The first statistics emitted after `moment` (polls the unassigned reader meanwhile,
        which serves its callbacks)."""
        deadline = max(time.monotonic(), moment) + timeout_s
        while True:
            for index, (ts, log_index, text) in enumerate(self.events):
                if abs(ts - time.monotonic()) > 30:
                    raise SystemExit("librdkafka's statistics clock is not time.monotonic's")
                if ts > moment:
                    del self.events[:index + 1]
                    return parse_statistics(ts, log_index, text)
            if time.monotonic() > deadline:
                raise SystemExit("no librdkafka statistics from the record reader within "
                                 f"{timeout_s:g} s")
            self.reader.poll(0.05)


def parse_statistics(ts: float, log_index: int, text: str) -> Snapshot:
    data = json.loads(text)
    requests = {name: Counter({api: int(n) for api, n in broker.get("req", {}).items() if n})
                for name, broker in data.get("brokers", {}).items()}
    fetched = dropped = 0
    for topic in data.get("topics", {}).values():
        for partition in topic.get("partitions", {}).values():
            fetched += int(partition.get("rxmsgs", 0))
            dropped += int(partition.get("rx_ver_drops", 0))
    return Snapshot(ts, log_index, requests, fetched, dropped)


class _ProbeHandler(logging.Handler):
    def __init__(self, probe: ReaderProbe) -> None:
        super().__init__(logging.DEBUG)
        self.probe = probe

    def emit(self, record: logging.LogRecord) -> None:
        self.probe.on_log(record.getMessage())


class TunedSource(KafkaSource):
    """The production KafkaSource; its record reader (built by the production
    `_new_record_reader`, settings unchanged) gets `reader_settings` on top, if any."""

    def __init__(self, cluster: str, client_settings: Mapping[str, str], timeout_s: float,
                 reader_settings: Mapping[str, Any]) -> None:
        super().__init__(cluster, client_settings, timeout_s)
        self.reader_settings = dict(reader_settings)

    def _new_record_reader(self) -> Any:
        if not self.reader_settings:
            return super()._new_record_reader()
        production = vars(kafka_source)["Consumer"]
        extra = self.reader_settings

        def tuned(settings: dict[str, Any]) -> Any:
            return production({**settings, **extra})

        setattr(kafka_source, "Consumer", tuned)  # noqa: B010  (a module global)
        try:
            return super()._new_record_reader()
        finally:
            setattr(kafka_source, "Consumer", production)  # noqa: B010


class InstrumentedSource(TunedSource):
    """Also librdkafka statistics and protocol debug on the record reader: production strips
    statistics from it, so they are added here only."""

    def __init__(self, cluster: str, client_settings: Mapping[str, str], timeout_s: float,
                 reader_settings: Mapping[str, Any], probe: ReaderProbe) -> None:
        super().__init__(cluster, client_settings, timeout_s, {
            **reader_settings, "statistics.interval.ms": STATISTICS_EVERY_MS,
            "stats_cb": probe.on_statistics, "debug": "protocol"})
        self.probe = probe

    def _new_record_reader(self) -> Any:
        self.probe.reader = super()._new_record_reader()
        self.probe.born = (time.monotonic(), len(self.probe.lines))
        return self.probe.reader

    def _close_record_reader(self) -> None:
        """The reader is closed after each read: its statistics are taken first."""
        if self.probe.reader is not None and self._record_reader is not None:
            self.probe.last = self.probe.snapshot_after(time.monotonic())
            self.probe.reader = None
        super()._close_record_reader()


def call_requests(probe: ReaderProbe, before: Snapshot | None, returned_index: int
                  ) -> CallRequests:
    """The requests of the call that just returned: the statistics taken as its reader closed
    (a reader of its own), or between `before` and the next statistics (a kept reader)."""
    if probe.reader is None:  # closed after the read
        assert probe.last is not None
        start, log_index = probe.born
        return requests_between(probe, Snapshot(start, log_index, {}, 0, 0), probe.last,
                                returned_index)
    if before is None:  # the first call creates the reader: count from its birth
        before = Snapshot(probe.born[0], probe.born[1], {}, 0, 0)
    return requests_between(probe, before, probe.snapshot_after(time.monotonic()),
                            returned_index)


def install_log_probe(probe: ReaderProbe) -> None:
    """KafkaSource sends librdkafka's log lines to this logger at DEBUG; the probe before is
    replaced."""
    rdkafka_log = logging.getLogger("lag_exporter.librdkafka")
    rdkafka_log.setLevel(logging.DEBUG)
    rdkafka_log.propagate = False
    for handler in list(rdkafka_log.handlers):
        rdkafka_log.removeHandler(handler)
    rdkafka_log.addHandler(_ProbeHandler(probe))


@dataclass
class CallRequests:
    """What one call caused, between two statistics events."""

    window_s: float
    by_broker: dict[str, Counter[str]]  # broker -> API -> requests (statistics)
    fetches_logged: dict[str, int]  # broker -> Fetch requests sent (protocol log)
    fetches_after_return: int  # of those, logged only after record_times had returned
    fetch_sizes: list[int]  # bytes of each Fetch request sent
    fetch_rtts_ms: list[float]  # round-trip of each Fetch response
    fetch_response_sizes: list[int]
    records_fetched: int
    records_dropped: int


def requests_between(probe: ReaderProbe, before: Snapshot, after: Snapshot, returned_index: int
                     ) -> CallRequests:
    """returned_index: the protocol lines served when the call returned."""
    by_broker = {name: after.requests[name] - before.requests.get(name, Counter())
                 for name in after.requests}
    lines = probe.lines[before.log_index:after.log_index]
    fetches = [line for line in lines if line.api == "Fetch"]
    return CallRequests(
        window_s=after.ts - before.ts,
        by_broker={name: counts for name, counts in by_broker.items() if counts},
        fetches_logged=dict(Counter(line.broker for line in fetches if line.sent)),
        fetches_after_return=sum(
            1 for line in probe.lines[max(before.log_index, returned_index):after.log_index]
            if line.api == "Fetch" and line.sent),
        fetch_sizes=[line.size for line in fetches if line.sent],
        fetch_rtts_ms=[line.rtt_ms for line in fetches if not line.sent],
        fetch_response_sizes=[line.size for line in fetches if not line.sent],
        records_fetched=after.records_fetched - before.records_fetched,
        records_dropped=after.records_dropped - before.records_dropped)


# ---------------------------------------------------------------- the partitions read


def estate_partitions(admin: Any) -> list[tuple[str, int]]:
    """Every partition of the scale estate c, else of our own topics (created if missing)."""
    topics = admin.list_topics(timeout=30).topics
    estate = sorted((name, p) for name, topic in topics.items() if name.startswith(ESTATE_PREFIX)
                    for p in topic.partitions)
    if len(estate) >= ESTATE_PARTITIONS:
        return estate
    say(f"the scale estate c has {len(estate)} partitions: using topics {OWN_PREFIX}*")
    own = {f"{OWN_PREFIX}{n}": OWN_PARTITIONS_EACH for n in range(OWN_TOPICS)}
    ensure_topics(admin, own, RECORDS_PER_PARTITION)
    return sorted((name, p) for name, count in own.items() for p in range(count))


def leaders_ready(admin: Any, topic: str, count: int) -> bool:
    partitions = admin.list_topics(topic=topic, timeout=30).topics[topic].partitions
    return len(partitions) == count and all(p.leader >= 0 for p in partitions.values())


def ensure_topics(admin: Any, wanted: Mapping[str, int], records: int) -> None:
    """Topics of `wanted` partitions with `records` records each, CreateTime explicit (one
    second apart, from an hour ago); existing ones are reused as they are."""
    existing = admin.list_topics(timeout=30).topics
    missing = {name: count for name, count in wanted.items() if name not in existing}
    if not missing:
        return
    futures = admin.create_topics([NewTopic(name, count, 1) for name, count in missing.items()],
                                  request_timeout=60)
    for name, future in futures.items():
        try:
            future.result(timeout=90)
        except KafkaException as error:
            if "TOPIC_ALREADY_EXISTS" not in str(error):
                raise SystemExit(f"cannot create topic {name}: {error}") from error
    deadline = time.monotonic() + 60
    while not all(leaders_ready(admin, name, count) for name, count in missing.items()):
        if time.monotonic() > deadline:
            raise SystemExit(f"topics {sorted(missing)} have no leaders after 60 s")
        time.sleep(0.5)
    producer = Producer({"bootstrap.servers": BOOTSTRAP[0], "linger.ms": 20})
    first_ms = int((time.time() - 3600) * 1000)
    for name, count in missing.items():
        for partition in range(count):
            for offset in range(records):
                while True:
                    try:
                        producer.produce(name, b"x", partition=partition,
                                         timestamp=first_ms + offset * 1000)
                        break
                    except BufferError:
                        producer.poll(0.1)
        producer.poll(0)
    if producer.flush(60):
        raise SystemExit(f"records to {sorted(missing)} not delivered within 60 s")


BOOTSTRAP = [""]  # set by main()



# ---------------------------------------------------------------- part 1: the batches


@dataclass
class CallResult:
    size: int
    wall_s: float
    cpu_s: float
    answered: int
    cpu_after_s: float = 0.0  # CPU of the call and of the AFTER_S that followed it


def timed_call(source: KafkaSource, wanted: dict[TopicPartition, int]) -> CallResult:
    wall, cpu = time.monotonic(), time.process_time()
    answers = source.record_times(wanted)
    wall, cpu = time.monotonic() - wall, time.process_time() - cpu
    answered = sum(1 for answer in answers.values() if not isinstance(answer, SourceError))
    return CallResult(len(wanted), wall, cpu, answered)


def batches(partitions: list[tuple[str, int]], sizes: Sequence[int], repeat: int
            ) -> list[dict[TopicPartition, int]]:
    return [{TopicPartition(t, p): OFFSET for t, p in partitions[:size]}
            for size in sizes for _ in range(repeat)]


AFTER_S = 1.5
"""Production calls are >= 10 s apart: each call is followed by this quiet time, so that the
next one does not wait for its in-flight Fetch, and the CPU librdkafka spends after the call
returned (responses still in flight, the unassignment) is counted too."""


def production_pass(settings: dict[str, str], calls: list[dict[TopicPartition, int]],
                    tuning: Mapping[str, str]) -> list[CallResult]:
    source = TunedSource("bench", settings, TIMEOUT_S, tuning)
    results = []
    try:
        for wanted in calls:
            cpu = time.process_time()
            result = timed_call(source, wanted)
            time.sleep(AFTER_S)
            result.cpu_after_s = time.process_time() - cpu
            results.append(result)
        return results
    finally:
        source.close()


def instrumented_pass(settings: dict[str, str], calls: list[dict[TopicPartition, int]],
                      tuning: Mapping[str, str], probe: ReaderProbe
                      ) -> tuple[list[tuple[CallResult, CallRequests]], CallRequests | None]:
    """Each call between two statistics events; then an idle window of the same reader (None:
    the reader is closed after each read)."""
    source = InstrumentedSource("bench", settings, TIMEOUT_S, tuning, probe)
    results: list[tuple[CallResult, CallRequests]] = []
    try:
        for wanted in calls:
            before = probe.snapshot_after(time.monotonic()) if probe.reader is not None else None
            result = timed_call(source, wanted)
            results.append((result, call_requests(probe, before, len(probe.lines))))
        if probe.reader is None:  # closed after each read: nothing is left to send requests
            return results, None
        before = probe.snapshot_after(time.monotonic())
        idle = requests_between(probe, before, probe.snapshot_after(time.monotonic() + 2.0),
                                len(probe.lines))
        return results, idle
    finally:
        source.close()


# ---------------------------------------------------------------- part 2: the rate limit


class CountingSource(WrappedSource):
    """Counts the record_times calls the sampler makes and the requests each caused."""

    def __init__(self, inner: InstrumentedSource, clock: Callable[[], float]) -> None:
        super().__init__(inner)
        self.probe = inner.probe
        self.clock = clock
        self.calls: list[tuple[float, int, CallRequests]] = []
        self.unanswered = 0

    def record_times(self, requests: Mapping[TopicPartition, int]
                     ) -> dict[TopicPartition, tuple[int, int, float] | SourceError]:
        if not requests:  # the sampler asks on every sample; the reads here are not background
            # (one a call, as the watch's Kafka client process reads them in a thread)
            return {}
        probe = self.probe
        before = probe.snapshot_after(time.monotonic()) if probe.reader is not None else None
        answers = self.inner.record_times(requests)
        self.calls.append((self.clock(), len(requests),
                           call_requests(probe, before, len(probe.lines))))
        self.unanswered += sum(1 for answer in answers.values()
                               if isinstance(answer, SourceError))
        return answers


def rate_limit_run(settings: dict[str, str], admin: Any, ticks: int,
                   tuning: Mapping[str, str], probe: ReaderProbe
                   ) -> list[tuple[float, int, CallRequests]]:
    ensure_topics(admin, {MOVING_TOPIC: MOVING_PARTITIONS}, ticks + 10)
    committer = Consumer({"bootstrap.servers": BOOTSTRAP[0], "group.id": MOVING_GROUP,
                          "enable.auto.commit": False})
    now = [0.0]
    source = CountingSource(InstrumentedSource("bench", settings, TIMEOUT_S, tuning, probe),
                            lambda: now[0])
    sampler = Sampler(source, [MOVING_GROUP], clock=lambda: now[0], estimates=Estimates())
    try:
        for tick in range(ticks):
            # The consumer moves one record a tick, far behind the history's first end offset.
            committer.commit(offsets=[KafkaTopicPartition(MOVING_TOPIC, p, tick)
                                      for p in range(MOVING_PARTITIONS)], asynchronous=False)
            sample = sampler.sample()
            errors = [g.error for g in sample.groups if g.error]
            if errors:
                raise SystemExit(f"sample at simulated t={now[0]:g} s failed: {errors[0]}")
            now[0] += 1.0
    finally:
        committer.close()
        sampler.close()
    if source.unanswered:
        say(f"rate limit run: {source.unanswered} partitions got no record time")
    return source.calls


# ---------------------------------------------------------------- report


def cpu_times() -> tuple[int, int, int]:
    """(busy, steal, total) jiffies of the whole machine, all cores."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]
    steal = fields[7] if len(fields) > 7 else 0
    return sum(fields) - idle, steal, sum(fields)


def fetch_cell(requests: CallRequests) -> str:
    counts = {name: counts["Fetch"] for name, counts in requests.by_broker.items()
              if counts["Fetch"]}
    return ", ".join(f"{n} ({name})" for name, n in sorted(counts.items())) or "0"


def other_cell(requests: CallRequests) -> str:
    others: Counter[str] = Counter()
    for counts in requests.by_broker.values():
        others.update({api: n for api, n in counts.items() if api != "Fetch"})
    return ", ".join(f"{api} {n}" for api, n in sorted(others.items())) or "-"


def fetch_detail(requests: CallRequests) -> str:
    sizes = ", ".join(f"{size:,}" for size in requests.fetch_sizes)
    answers = ", ".join(f"{size:,} B/{rtt:.0f} ms" for size, rtt in
                        zip(requests.fetch_response_sizes, requests.fetch_rtts_ms, strict=False))
    return (f"statistics window {requests.window_s:.1f} s; requests {sizes} B; "
            f"responses {answers}; "
            f"{requests.fetches_after_return} logged after the call returned")


def print_report(args: argparse.Namespace, partitions: int,
                 production: list[CallResult],
                 instrumented: list[tuple[CallResult, CallRequests]], idle: CallRequests | None,
                 rate_calls: list[tuple[float, int, CallRequests]],
                 load: tuple[float, float], started: str, elapsed_s: float) -> None:
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
    print(f"\n## record_times: requests per call (target {BOOTSTRAP[0]}, {partitions:,} "
          f"partitions available, offset {OFFSET})\n")
    tuning = parse_reader_settings(args.reader_setting)
    print("Record reader: " + ("production settings" if not tuning else "production settings "
          "+ " + ", ".join(f"{k}={v}" for k, v in tuning.items()) + " (NOT production)"))
    print(f"{started}, HEAD {head}, {os.cpu_count()} cores; machine busy {load[0]:.0f} % "
          f"(steal {load[1]:.1f} %) during the {elapsed_s:.0f} s run\n")
    print(f"| partitions | call | wall s | CPU s | CPU s incl. {AFTER_S:g} s after | answered "
          "| Fetch requests per broker (statistics) | Fetch (protocol log) | other requests "
          "| records fetched / "
          "dropped | instrumented wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    call_numbers: Counter[int] = Counter()
    for plain, (measured, requests) in zip(production, instrumented, strict=True):
        call_numbers[plain.size] += 1
        cold = " (cold)" if plain is production[0] else ""
        logged = sum(requests.fetches_logged.values())
        print(f"| {plain.size:,} | {call_numbers[plain.size]}{cold} | {plain.wall_s:.3f} | "
              f"{plain.cpu_s:.3f} | {plain.cpu_after_s:.3f} | {plain.answered:,} | "
              f"{fetch_cell(requests)} | {logged} | "
              f"{other_cell(requests)} | {requests.records_fetched:,} / "
              f"{requests.records_dropped:,} | {measured.wall_s:.3f} |")
    if idle is None:
        print("\nNo idle reader: each read had a reader of its own, closed after it.")
    else:
        print(f"\nIdle reader, {idle.window_s:.1f} s after the calls: Fetch {fetch_cell(idle)}, "
              f"other {other_cell(idle)}.")
    print("\nEach Fetch of the instrumented calls (request bytes; response bytes / round trip):")
    call_numbers.clear()
    for measured, requests in instrumented:
        call_numbers[measured.size] += 1
        print(f"- {measured.size:,} partitions, call {call_numbers[measured.size]}: "
              f"{fetch_detail(requests)}")
    by_size: dict[int, list[CallResult]] = {}
    for plain in production[1:]:  # warm calls only
        by_size.setdefault(plain.size, []).append(plain)
    print("\nMedian of the warm production calls: " + "; ".join(
        f"{size:,}: {statistics.median(c.wall_s for c in calls):.3f} s wall, "
        f"{statistics.median(c.cpu_s for c in calls):.3f} s CPU "
        f"({statistics.median(c.cpu_after_s for c in calls):.3f} s with the {AFTER_S:g} s after)"
        for size, calls in sorted(by_size.items())))

    print(f"\n## Rate limit: Sampler + Estimates over {args.ticks} simulated seconds "
          f"(one sample a second, RECORD_TIME_EVERY_S = {RECORD_TIME_EVERY_S:g})\n")
    print("| simulated t (s) | partitions asked | Fetch requests per broker | other requests |")
    print("|---|---|---|---|")
    for at, size, requests in rate_calls:
        print(f"| {at:g} | {size} | {fetch_cell(requests)} | {other_cell(requests)} |")
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(rate_calls)]
    per_minute = len(rate_calls) * 60 / args.ticks
    print(f"\n{len(rate_calls)} record_times calls in {args.ticks} simulated seconds of "
          f"{args.ticks} samples: {per_minute:g} per minute; shortest gap "
          f"{min(gaps) if gaps else float('nan'):g} s.")
    print("\nReproduce: " + shlex.join([".venv/bin/python", "benchmarks/record_time_fetches.py",
                                        *sys.argv[1:]]))


def parse_sizes(text: str, available: int) -> list[int]:
    sizes = []
    for item in text.split(","):
        if item.strip() == "all":
            sizes.append(available)
        elif item.strip().isdigit() and 0 < int(item) <= available:
            sizes.append(int(item))
        else:
            raise SystemExit(f"--sizes: {item!r} is not a partition count from 1 to "
                             f"{available:,} or 'all'")
    return sizes


def parse_reader_settings(items: Sequence[str]) -> dict[str, str]:
    tuning = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"--reader-setting: {item!r} is not KEY=VALUE")
        tuning[key.strip()] = value.strip()
    return tuning


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sizes", default="100,1000,all",
                        help="partitions per call, comma-separated ('all': every partition)")
    parser.add_argument("--repeat", type=int, default=3, help="calls per size (default 3)")
    parser.add_argument("--ticks", type=int, default=120,
                        help="simulated seconds (samples) of the rate-limit run (default 120)")
    parser.add_argument("--bootstrap", default=f"127.0.0.1:{stackctl.KAFKAS['kafka-target'].port}",
                        help="the stack's target cluster (default %(default)s)")
    parser.add_argument("--reader-setting", action="append", default=[], metavar="KEY=VALUE",
                        help="try a librdkafka setting on the record reader on top of "
                             "production's (repeatable; the numbers are then NOT production's)")
    args = parser.parse_args(argv)
    tuning = parse_reader_settings(args.reader_setting)
    if args.repeat < 1 or args.ticks < 1:
        raise SystemExit("--repeat and --ticks must be at least 1")
    BOOTSTRAP[0] = args.bootstrap
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    began, load_before = time.monotonic(), cpu_times()
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    try:
        partitions = estate_partitions(admin)
    except KafkaException as error:
        raise SystemExit(f"cannot reach Kafka at {args.bootstrap}: {error}") from error
    calls = batches(partitions, parse_sizes(args.sizes, len(partitions)), args.repeat)
    settings = {"bootstrap.servers": args.bootstrap}

    say(f"production pass: {len(calls)} calls")
    production = production_pass(settings, calls, tuning)
    say("instrumented pass (statistics + protocol log)")
    probe = ReaderProbe()
    install_log_probe(probe)
    instrumented, idle = instrumented_pass(settings, calls, tuning, probe)
    say(f"rate limit: {args.ticks} samples")
    rate_probe = ReaderProbe()
    install_log_probe(rate_probe)
    rate_calls = rate_limit_run(settings, admin, args.ticks, tuning, rate_probe)

    load_after = cpu_times()
    busy, steal, total = (after - before for after, before in zip(load_after, load_before,
                                                                     strict=True))
    print_report(args, len(partitions), production, instrumented, idle, rate_calls,
                 (100 * busy / total if total else 0.0, 100 * steal / total if total else 0.0),
                 started, time.monotonic() - began)


if __name__ == "__main__":
    main()
