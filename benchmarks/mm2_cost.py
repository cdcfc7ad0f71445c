#!/usr/bin/env python3
"""Cost of following MirrorMaker 2's offsets topic vs reading a consumer group (issue 12).

    .venv/bin/python benchmarks/mm2_cost.py --seconds 60 --warmup 10 --rounds 2

On the TARGET cluster of the stack (127.0.0.1:29092), next to the scale benchmark's estate c
(334 topics bench.c.<n>, 10,000 partitions, built by benchmarks/scale.py; never altered here):

1. commits the group `bench-c-all` on all 10,000 partitions at high watermark - 1 (idempotent);
2. creates the compacted topic `bench-mm2-offsets` and writes into it, as MirrorMaker 2's
   MirrorSourceConnector would, one position per source partition (stored offset high
   watermark - 2, so the mirror's next offset and its lag equal the group's), then re-writes all
   10,000 positions every --flush-interval seconds (default 1: MM2 flushing every second, the
   worst case; its default `offset.flush.interval.ms` of 60 s writes 60 times fewer records)
   in a background thread; with --group-commits the group commits its positions as often;
3. runs `lag-exporter watch --interval 1` alternately on (A) the group and (B) the mirror
   (source and target are the same cluster here), --seconds each after --warmup, A B A B...,
   and measures CPU seconds per sample (utime + stime of the watch process and all its
   descendants, from /proc) and RSS; it checks that each run reported all 10,000 partitions;
4. prints a table: CPU per sample, B vs A, RSS.

Both topics and the group are left in place for the next run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scale import REPO, TARGET, plan_estate, proc_stat, say

GROUP = "bench-c-all"
OFFSETS_TOPIC = "bench-mm2-offsets"
OFFSETS_PARTITIONS = 3
MIRROR_LABEL = "mm2:source->target"
EXPORTER = str(REPO / ".venv" / "bin" / "lag-exporter")

Partition = tuple[str, int]


def high_watermarks(partitions: list[Partition]) -> dict[Partition, int]:
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient

    # OffsetSpec is not in confluent_kafka.admin's typed exports
    latest: Any = importlib.import_module("confluent_kafka.admin").OffsetSpec.latest()
    admin = AdminClient({"bootstrap.servers": TARGET})
    answers: dict[Partition, int] = {}
    for start in range(0, len(partitions), 2000):
        batch = partitions[start:start + 2000]
        futures = admin.list_offsets(
            {TopicPartition(t, p): latest for t, p in batch}, request_timeout=60)
        for tp, future in futures.items():
            answers[(tp.topic, tp.partition)] = future.result(timeout=120).offset
    return answers


def commit_group(watermarks: dict[Partition, int]) -> None:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": TARGET, "group.id": GROUP,
                         "enable.auto.commit": False})
    try:
        consumer.commit(offsets=[TopicPartition(t, p, hw - 1)
                                 for (t, p), hw in watermarks.items()], asynchronous=False)
    finally:
        consumer.close()


TOPIC_CONFIG = {"cleanup.policy": "compact", "segment.ms": "60000",
                "min.cleanable.dirty.ratio": "0.1"}
"""Compacted like Connect's offsets topic; segments rolled every minute so the log cleaner keeps
the topic near 10,000 live records across runs (Connect's defaults roll a segment at 1 GB: a
mirror flushing 10,000 positions a second leaves millions of records for the catch-up)."""


def create_offsets_topic() -> None:
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    admin = AdminClient({"bootstrap.servers": TARGET})
    if OFFSETS_TOPIC not in admin.list_topics(timeout=30).topics:
        future = admin.create_topics([NewTopic(OFFSETS_TOPIC, OFFSETS_PARTITIONS, 1,
                                               config=TOPIC_CONFIG)])[OFFSETS_TOPIC]
        future.result(timeout=60)
        return
    kafka_admin: Any = importlib.import_module("confluent_kafka.admin")
    resource = kafka_admin.ConfigResource(
        kafka_admin.ResourceType.TOPIC, OFFSETS_TOPIC,
        incremental_configs=[kafka_admin.ConfigEntry(
            name, value, incremental_operation=kafka_admin.AlterConfigOpType.SET)
            for name, value in TOPIC_CONFIG.items()])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=60)


def position_records(watermarks: dict[Partition, int]) -> list[tuple[bytes, bytes]]:
    """Key and value exactly as MirrorSourceConnector stores them (see lag_exporter/mm2.py)."""
    return [(json.dumps(["MirrorSourceConnector",
                         {"cluster": "source", "partition": p, "topic": t}]).encode(),
             json.dumps({"offset": hw - 2}).encode())
            for (t, p), hw in watermarks.items()]


class MirrorFlusher(threading.Thread):
    """Re-writes every position every `interval_s`, as MM2 with that offset flush interval."""

    def __init__(self, records: list[tuple[bytes, bytes]], interval_s: float) -> None:
        super().__init__(daemon=True)
        from confluent_kafka import Producer

        self.records = records
        self.interval_s = interval_s
        self.producer = Producer({"bootstrap.servers": TARGET, "linger.ms": 50,
                                  "compression.type": "lz4"})
        self.stop = threading.Event()
        self.flushes = 0
        self.late = 0

    def run(self) -> None:
        next_flush = time.monotonic()
        while not self.stop.is_set():
            for key, value in self.records:
                while True:
                    try:
                        self.producer.produce(OFFSETS_TOPIC, value, key)
                        break
                    except BufferError:
                        self.producer.poll(0.05)
            self.producer.flush(30)
            self.flushes += 1
            next_flush += self.interval_s
            wait = next_flush - time.monotonic()
            if wait < 0:
                self.late += 1
                next_flush = time.monotonic()
            self.stop.wait(max(0.0, wait))


class GroupCommitter(threading.Thread):
    """--group-commits: commits the group's 10,000 positions every `interval_s` (the mirror's
    flush interval), so that the group's side has as many records to follow (in
    __consumer_offsets) as the mirror has."""

    def __init__(self, watermarks: dict[Partition, int], interval_s: float) -> None:
        super().__init__(daemon=True)
        from confluent_kafka import Consumer, TopicPartition

        self.offsets = [TopicPartition(t, p, hw - 1) for (t, p), hw in watermarks.items()]
        self.consumer = Consumer({"bootstrap.servers": TARGET, "group.id": GROUP,
                                  "enable.auto.commit": False})
        self.interval_s = interval_s
        self.stop = threading.Event()
        self.commits = 0

    def run(self) -> None:
        next_commit = time.monotonic()
        while not self.stop.is_set():
            self.consumer.commit(offsets=self.offsets, asynchronous=False)
            self.commits += 1
            next_commit += self.interval_s
            self.stop.wait(max(0.0, next_commit - time.monotonic()))
        self.consumer.close()


def descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := proc_stat(int(entry.name))):
            parents[int(entry.name)] = stat[0]
    tree = [root]
    for pid in tree:  # grows while walked: breadth-first
        tree.extend(child for child, parent in parents.items() if parent == pid)
    return tree


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_usage(root: int) -> tuple[float, int]:
    """(CPU seconds, RSS kB) of a process and its live descendants."""
    pids = descendants(root)
    return (sum(stat[1] for pid in pids if (stat := proc_stat(pid))),
            sum(rss_kb(pid) for pid in pids))


@dataclass
class Run:
    label: str
    samples: int
    cpu_s: float
    rss_mb: float
    partitions: int
    lag_total: int
    groups: set[str]

    @property
    def cpu_per_sample_ms(self) -> float:
        return 1000 * self.cpu_s / self.samples if self.samples else float("nan")


def sample_times(output: Path) -> dict[str, list[dict[str, Any]]]:
    """Documents of the watch's stdout by sample timestamp."""
    by_time: dict[str, list[dict[str, Any]]] = {}
    with output.open() as lines:
        for line in lines:
            document = json.loads(line)
            by_time.setdefault(document["@timestamp"], []).append(document)
    return by_time


def stamp(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def measure(label: str, command: list[str], warmup_s: float, seconds: float,
            workdir: Path) -> Run:
    output, errors = workdir / f"{label}.ndjson", workdir / f"{label}.log"
    with output.open("w") as out, errors.open("w") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err)
    try:
        # The warm-up starts at the first sample written: the mirror's catch-up (reading the
        # offsets topic from its beginning, once) is not a per-sample cost.
        deadline = time.monotonic() + 600
        while output.stat().st_size == 0 and process.poll() is None:
            if time.monotonic() > deadline:
                raise SystemExit(f"{label}: no sample after 600 s: {errors.read_text()[-2000:]}")
            time.sleep(0.2)
        time.sleep(warmup_s)
        cpu_before, _ = tree_usage(process.pid)
        started = time.time()
        time.sleep(seconds)
        cpu_after, rss = tree_usage(process.pid)
        ended = time.time()
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.returncode not in (0, -15):
        raise SystemExit(f"{label}: watch exited {process.returncode}: "
                         f"{errors.read_text()[-2000:]}")
    samples = sample_times(output)
    # A sample's @timestamp is when it started; one that started in the window is counted.
    in_window = [t for t in samples if stamp(started) <= t < stamp(ended)]
    last = samples[in_window[-1]] if in_window else []
    partition_lags = [value for document in last for key, value in document.items()
                      if key[0] == "p" and key[1:].isdigit()]
    return Run(label, len(in_window), cpu_after - cpu_before, rss / 1024, len(partition_lags),
               sum(partition_lags), {str(d["group"]) for d in last})


def offsets_topic_records() -> int:
    """Records a catch-up reads: high minus low watermark, summed over the topic's partitions."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": TARGET, "group.id": "mm2-cost-probe"})
    try:
        total = 0
        for n in range(OFFSETS_PARTITIONS):
            low, high = consumer.get_watermark_offsets(TopicPartition(OFFSETS_TOPIC, n), 30)
            total += high - low
        return total
    finally:
        consumer.close()


def follower_requests(seconds: float) -> tuple[int, dict[str, int]]:
    """Samples taken and requests sent by the follower's consumer (librdkafka statistics, by
    API), following the offsets topic in this process as watch does, one sample a second."""
    from confluent_kafka import Consumer

    from lag_exporter.mm2 import MirrorSettings
    from lag_exporter.mm2_follower import OffsetsTopicFollower

    snapshots: list[dict[str, int]] = []

    def on_statistics(text: str) -> None:
        requests: dict[str, int] = {}
        for broker in json.loads(text)["brokers"].values():
            for api, count in broker.get("req", {}).items():
                requests[api] = requests.get(api, 0) + count
        snapshots.append(requests)

    def make_consumer(settings: dict[str, Any]) -> Consumer:
        return Consumer({**settings, "statistics.interval.ms": 1000, "stats_cb": on_statistics})

    mirror = MirrorSettings(MIRROR_LABEL, {"bootstrap.servers": TARGET},
                            offsets_topic=OFFSETS_TOPIC)
    follower = OffsetsTopicFollower(mirror, 10, make_consumer)
    try:
        while not follower.caught_up:  # the one catch-up read is not per sample
            if isinstance(follower.group_offsets(), Exception):
                time.sleep(0.5)
        start = len(snapshots)
        deadline = time.monotonic() + seconds
        samples = 0
        while time.monotonic() < deadline:
            follower.group_offsets()
            samples += 1
            time.sleep(1)
        first, last = snapshots[start] if len(snapshots) > start else {}, snapshots[-1]
        return samples, {api: count - first.get(api, 0) for api, count in last.items()
                         if count - first.get(api, 0)}
    finally:
        follower.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=60, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=10, help="seconds before measuring")
    parser.add_argument("--rounds", type=int, default=2, help="A B pairs")
    parser.add_argument("--group-commits", action="store_true",
                        help="the group also commits its 10,000 positions at every flush of the "
                             "mirror (the same record rate on both sides)")
    parser.add_argument("--flush-interval", type=float, default=1.0,
                        help="seconds between two flushes of the mirror's 10,000 positions (MM2's "
                             "offset.flush.interval.ms; its default is 60 s)")
    args = parser.parse_args(argv)

    estate = plan_estate("c")
    partitions = [(t, p) for t, n in estate.topics.items() for p in range(n)]
    say(f"reading the high watermarks of {len(partitions)} partitions")
    watermarks = high_watermarks(partitions)
    if min(watermarks.values()) < 2:
        raise SystemExit("estate c has partitions with fewer than 2 records: "
                         "run benchmarks/scale.py --scales c first")
    say(f"committing {GROUP} at high watermark - 1")
    commit_group(watermarks)
    create_offsets_topic()
    every = f"every {args.flush_interval:g} s"
    flusher = MirrorFlusher(position_records(watermarks), args.flush_interval)
    flusher.start()
    say(f"writing {len(partitions)} positions to {OFFSETS_TOPIC} {every}")
    committer = GroupCommitter(watermarks, args.flush_interval) if args.group_commits else None
    if committer is not None:
        committer.start()
        say(f"committing {GROUP}'s {len(partitions)} positions {every}")

    common = [EXPORTER, "watch", "--bootstrap-server", TARGET, "--interval", "1"]
    commands = {
        "A group": [*common, "--group", GROUP],
        "B mirror": [*common, "--mm2-target-bootstrap-server", TARGET,
                     "--mm2-offsets-topic", OFFSETS_TOPIC],
    }
    say("counting the follower's requests")
    probe_samples, requests = follower_requests(20)
    say(f"{OFFSETS_TOPIC}: offsets span {offsets_topic_records()} (records before compaction)")
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="mm2-cost-") as work:
        for round_number in range(args.rounds):
            for label, command in commands.items():
                say(f"round {round_number + 1}: {label}")
                run = measure(label, command, args.warmup, args.seconds, Path(work))
                say(f"  {run.samples} samples, {run.cpu_per_sample_ms:.0f} ms CPU/sample, "
                    f"{run.partitions} partitions, lag total {run.lag_total}, {run.groups}")
                runs.append(run)
    flusher.stop.set()
    flusher.join(30)
    if committer is not None:
        committer.stop.set()
        committer.join(30)
        print(f"the group committed its {len(partitions)} positions {every} "
              f"({committer.commits} commits)")

    expected_lag = sum(hw - (hw - 1) for hw in watermarks.values())
    print(f"estate c: {len(partitions)} partitions; mirror positions re-written {every} "
          f"({flusher.flushes} flushes of {len(partitions)} records, {flusher.late} late)")
    print(f"{'run':<10} {'samples':>8} {'CPU s':>7} {'CPU ms/sample':>14} {'RSS MB':>7} "
          f"{'partitions':>10} {'lag total':>9}")
    for run in runs:
        print(f"{run.label:<10} {run.samples:>8} {run.cpu_s:>7.1f} "
              f"{run.cpu_per_sample_ms:>14.1f} {run.rss_mb:>7.0f} {run.partitions:>10} "
              f"{run.lag_total:>9}")
    mean = {label: statistics.mean(r.cpu_per_sample_ms for r in runs if r.label == label)
            for label in commands}
    rss = {label: statistics.mean(r.rss_mb for r in runs if r.label == label)
           for label in commands}
    a, b = mean["A group"], mean["B mirror"]
    print(f"mean CPU per sample: A {a:.1f} ms, B {b:.1f} ms: B vs A {100 * (b - a) / a:+.1f} %; "
          f"RSS A {rss['A group']:.0f} MB, B {rss['B mirror']:.0f} MB")
    per_sample = ", ".join(f"{api} {count / probe_samples:.1f}"
                           for api, count in sorted(requests.items()))
    print(f"follower requests per sample (librdkafka statistics, {probe_samples} samples, "
          f"1 s apart): {per_sample}")
    problems = [f"{r.label}: {r.partitions} partitions, lag total {r.lag_total}"
                for r in runs if r.partitions != len(partitions) or r.lag_total != expected_lag]
    print("check: every run reported all partitions with the expected lag total "
          f"{expected_lag}" if not problems else "check FAILED: " + "; ".join(problems))
    print("reproduce: .venv/bin/python benchmarks/mm2_cost.py "
          f"--seconds {args.seconds:g} --warmup {args.warmup:g} --rounds {args.rounds}"
          + (" --group-commits" if args.group_commits else "")
          + (f" --flush-interval {args.flush_interval:g}" if args.flush_interval != 1.0 else ""))
    print(f"commands: A: {' '.join(commands['A group'][1:])}")
    print(f"          B: {' '.join(commands['B mirror'][1:])}")
    sys.stdout.flush()
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
