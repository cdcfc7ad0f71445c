"""A real MirrorMaker 1 committing every 60 s: lag seconds and status must not flap (issue 11).

    .venv/bin/python benchmarks/mm1_commit_60s.py [--commits 6] [--rate 20] [--max-minutes 10]
        [--commit-interval-ms 60000]   # 5000 --commits 3: a 30-second check of the script

Against the running local stack (`scripts/stack up`; this script never starts or stops a stack
component), about 6 minutes:

1. Removes what a previous run left (its MirrorMaker, the group `mm1-60s`, `mm1-60s.*` topics),
   creates `mm1-60s.src-<time>` (3 partitions) on kafka-source and produces --rate records/s
   to it, round-robin over the partitions, from a thread of this script.
2. Starts `lag-exporter watch --group mm1-60s --interval 1` (the real CLI of .venv/bin, default
   status rules: stop_after 300 s, window 600 s; no --es-url, so it prints its documents on
   stdout) and then a second, real MirrorMaker 1 (Kafka 3.9's kafka.tools.MirrorMaker, as the
   stack's mm1 is run, through stackctl's helpers) with `--offset.commit.interval.ms 60000`
   (the real default; the stack's mm1 commits every 1 s), its own group `mm1-60s`, source ->
   target, component name `mm1-60s` (log: .stack/logs/mm1-60s.log).
3. Polls the group's committed offsets every second (AdminClient) to see when MirrorMaker
   commits; once, a third of an interval (20 s) after the third commit (so no commit races
   it), runs `kafka-consumer-groups --describe` and prints its LAG next to the exporter's
   documents just before and after it (between commits the lag only grows, so it must lie
   between them).
4. Stops after --commits commits (the first + 5) and 15 s more, then prints the commits, the
   lag saw-tooth, lag_seconds per partition, every status / partition_status value seen, and
   "status stayed OK: yes/no".

Exit 0 when the status stayed OK, 1 when another status appeared, 2 when the run was disturbed
(fewer commits than asked within --max-minutes, a process died, the stack is down).
MirrorMaker, the exporter and the producer are stopped on every exit path (also Ctrl-C or
SIGTERM); the topics and the group are deleted at the end.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

REPO = Path(__file__).resolve().parent.parent
sys.path.append(str(REPO))
from stack import stackctl  # noqa: E402

COMPONENT = "mm1-60s"
"""stackctl component name of this script's MirrorMaker (its marker, pid file and log)."""
GROUP = "mm1-60s"
TOPIC_PREFIX = "mm1-60s."
INCLUDE = r"mm1-60s\..*"
SOURCE = f"127.0.0.1:{stackctl.KAFKAS['kafka-source'].port}"
TARGET = f"127.0.0.1:{stackctl.KAFKAS['kafka-target'].port}"
EXPORTER = REPO / ".venv" / "bin" / "lag-exporter"
TAIL_S = 15.0
"""Watched after the last counted commit, so the exporter samples it and re-evaluates status."""


class Stopped(Exception):
    """SIGTERM: unwind like Ctrl-C so the finally blocks stop every process."""


def on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Stopped


# ---------------------------------------------------------------- Kafka side


def admin(bootstrap: str) -> Any:
    return AdminClient({"bootstrap.servers": bootstrap})


def delete_leftovers() -> None:
    """A previous run's MirrorMaker, group and topics (only this script's names)."""
    stackctl.stop(COMPONENT)
    source = admin(SOURCE)
    for future in source.delete_consumer_groups([GROUP], request_timeout=30).values():
        try:
            future.result()
        except KafkaException as err:
            if "GROUP_ID_NOT_FOUND" not in str(err):
                raise
    for bootstrap in (SOURCE, TARGET):
        client = admin(bootstrap)
        topics = [t for t in client.list_topics(timeout=10).topics if t.startswith(TOPIC_PREFIX)]
        if topics:
            for future in client.delete_topics(topics, operation_timeout=30).values():
                future.result()


def create_topic(topic: str, partitions: int) -> None:
    client = admin(SOURCE)
    client.create_topics([NewTopic(topic, partitions, 1)], operation_timeout=30)[topic].result()
    deadline = time.monotonic() + 30  # the topic exists before its partitions have leaders
    while time.monotonic() < deadline:
        metadata = client.list_topics(topic, timeout=5).topics[topic]
        if metadata.error is None and len(metadata.partitions) == partitions and all(
                p.leader >= 0 for p in metadata.partitions.values()):
            return
        time.sleep(0.2)
    raise SystemExit(f"topic {topic} has no leader for every partition after 30 s")


class SteadyProducer(threading.Thread):
    """`rate` records per second, round-robin over the partitions, until stopped."""

    def __init__(self, topic: str, partitions: int, rate: float) -> None:
        super().__init__(name="producer", daemon=True)
        self.topic, self.partitions, self.rate = topic, partitions, rate
        self.stop_event = threading.Event()
        self.sent = 0
        self.failed = 0

    def on_delivery(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.failed += 1

    def run(self) -> None:
        producer = Producer({"bootstrap.servers": SOURCE, "linger.ms": 5})
        next_at = time.monotonic()
        while not self.stop_event.is_set():
            producer.produce(self.topic, value=f"record {self.sent}".encode(),
                             partition=self.sent % self.partitions, on_delivery=self.on_delivery)
            self.sent += 1
            producer.poll(0)
            next_at += 1 / self.rate
            self.stop_event.wait(max(0.0, next_at - time.monotonic()))
        producer.flush(10)


def committed_offsets(client: Any) -> dict[int, int] | None:
    """The group's committed offsets by partition; None when they cannot be read now."""
    request = [ConsumerGroupTopicPartitions(GROUP)]
    try:
        answer = client.list_consumer_group_offsets(request, request_timeout=5)[GROUP].result()
    except KafkaException:
        return None
    return {tp.partition: tp.offset for tp in answer.topic_partitions
            if tp.topic.startswith(TOPIC_PREFIX) and tp.offset >= 0}


# ---------------------------------------------------------------- MirrorMaker 1


def start_mirror_maker(commit_interval_ms: int) -> None:
    """Like stackctl.start_mm1, with its own group and pattern and the real 60 s commits."""
    conf = stackctl.data_dir(COMPONENT)
    consumer = stackctl.write(conf / "consumer.properties", f"""\
bootstrap.servers={SOURCE}
group.id={GROUP}
auto.offset.reset=earliest
""")
    producer = stackctl.write(conf / "producer.properties", f"""\
bootstrap.servers={TARGET}
linger.ms=5
""")
    offset = stackctl.log_size(COMPONENT)
    stackctl.spawn(COMPONENT, stackctl.kafka_java(
        "kafka39", ["-Xms128m", "-Xmx256m"], "kafka.tools.MirrorMaker",
        "--consumer.config", str(consumer), "--producer.config", str(producer),
        "--include", INCLUDE, "--offset.commit.interval.ms", str(commit_interval_ms)))
    subscribed = stackctl.log_contains(COMPONENT, offset, "Subscribed to pattern")
    stackctl.wait_until(COMPONENT, subscribed, 90)


# ---------------------------------------------------------------- the exporter


@dataclass
class Watch:
    """`lag-exporter watch` as a child process; its documents collected with arrival times."""

    process: subprocess.Popen[str]
    log_path: Path
    documents: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("{"):
                with self.lock:
                    self.documents.append(json.loads(line))

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.documents)


def exporter_command() -> list[str]:
    return [str(EXPORTER), "watch", "--bootstrap-server", SOURCE, "--group", GROUP,
            "--interval", "1"]


def start_exporter() -> Watch:
    # Default rules and no Elasticsearch: nothing from LAG_EXPORTER_* variables of the caller.
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAG_EXPORTER_")}
    log_path = stackctl.log_file(f"{COMPONENT}-watch")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        process = subprocess.Popen(exporter_command(), stdout=subprocess.PIPE, stderr=log,
                                   stdin=subprocess.DEVNULL, text=True, env=env)
    watch = Watch(process, log_path)
    threading.Thread(target=watch.read, name="exporter-stdout", daemon=True).start()
    return watch


def stop_exporter(watch: Watch) -> None:
    if watch.process.poll() is None:
        watch.process.send_signal(signal.SIGINT)
        try:
            watch.process.wait(30)
        except subprocess.TimeoutExpired:
            watch.process.kill()
            watch.process.wait()


def at(document: dict[str, Any]) -> float:
    return datetime.fromisoformat(document["@timestamp"]).timestamp()


# ---------------------------------------------------------------- kafka-consumer-groups


def describe_lags() -> tuple[float, float, dict[int, int | None], str]:
    """(start, end, LAG by partition, raw output) of the real `kafka-consumer-groups`."""
    started = time.time()
    done = stackctl.run_tool("kafka-consumer-groups", ["--bootstrap-server", SOURCE,
                                                       "--describe", "--group", GROUP])
    ended = time.time()
    lags: dict[int, int | None] = {}
    for line in done.stdout.splitlines():
        cells = line.split()
        if len(cells) >= 6 and cells[0] == GROUP and cells[1].startswith(TOPIC_PREFIX):
            lags[int(cells[2])] = None if cells[5] == "-" else int(cells[5])
    return started, ended, lags, (done.stdout + done.stderr).strip()


def partition_lags(document: dict[str, Any], partitions: int) -> dict[int, int | None]:
    return {p: document.get(f"p{p}") for p in range(partitions)}


def compare_with_describe(docs: list[dict[str, Any]], described: tuple[
        float, float, dict[int, int | None], str], partitions: int) -> list[str]:
    started, ended, lags, raw = described
    before = [d for d in docs if at(d) <= started]
    after = [d for d in docs if at(d) >= ended]
    lines = ["kafka-consumer-groups --describe (once, mid-interval):",
             *("  " + line for line in raw.splitlines())]
    if not before or not after or not lags:
        lines.append("  no exporter document on both sides of it: not compared")
        return lines
    low, high = partition_lags(before[-1], partitions), partition_lags(after[0], partitions)
    inside = True
    lines.append(f"  exporter before ({before[-1]['@timestamp']}) / tool / exporter after "
                 f"({after[0]['@timestamp']}), tool ran {ended - started:.1f} s:")
    for p in range(partitions):
        low_p, tool_p, high_p = low[p], lags.get(p), high[p]
        ok = (low_p is not None and tool_p is not None and high_p is not None
              and low_p <= tool_p <= high_p)
        inside = inside and ok
        lines.append(f"    p{p}: {low_p} <= {tool_p} <= {high_p}: {'yes' if ok else 'NO'}")
    lines.append("  tool's LAG between the exporter's before and after: "
                 + ("yes" if inside else "no"))
    return lines


# ---------------------------------------------------------------- the run


@dataclass
class Run:
    started: float
    commits: list[tuple[float, dict[int, int]]]
    poll_failures: int
    documents: list[dict[str, Any]]
    described: tuple[float, float, dict[int, int | None], str] | None
    status_log: list[str]
    disturbed: list[str]
    produced: int
    produce_failures: int


def run(commits_wanted: int, partitions: int, rate: float, commit_interval_ms: int,
        max_s: float) -> Run:
    topic = f"{TOPIC_PREFIX}src-{time.strftime('%Y%m%d%H%M%S')}"
    delete_leftovers()
    create_topic(topic, partitions)
    producer = SteadyProducer(topic, partitions, rate)
    producer.start()
    watch = start_exporter()
    commits: list[tuple[float, dict[int, int]]] = []
    poll_failures = 0
    described = None
    disturbed: list[str] = []
    try:
        start_mirror_maker(commit_interval_ms)
        started = time.time()
        print(f"{time.strftime('%T')} MirrorMaker 1 subscribed; topic {topic}, "
              f"waiting for {commits_wanted} commits", file=sys.stderr, flush=True)
        source = admin(SOURCE)
        last: dict[int, int] = {}
        done_at: float | None = None
        while True:
            now = time.time()
            if done_at is not None and now >= done_at:
                break
            if now - started > max_s:
                disturbed.append(f"only {len(commits)} commit(s) in {max_s / 60:.0f} minutes")
                break
            if watch.process.poll() is not None:
                disturbed.append(f"the exporter exited ({watch.process.returncode})")
                break
            if not stackctl.running(COMPONENT):
                disturbed.append("MirrorMaker exited (see its log)")
                break
            offsets = committed_offsets(source)
            if offsets is None:
                poll_failures += 1
            elif offsets and offsets != last:
                commits.append((now, offsets))
                last = offsets
                print(f"{time.strftime('%T')} commit {len(commits)}: {offsets}",
                      file=sys.stderr, flush=True)
                if len(commits) == commits_wanted:
                    done_at = now + TAIL_S
            if (described is None and len(commits) >= 3
                    and now - commits[2][0] >= commit_interval_ms / 3000):
                described = describe_lags()
            time.sleep(max(0.0, 1 - (time.time() - now)))
    finally:
        stop_exporter(watch)
        stackctl.stop(COMPONENT)
        producer.stop_event.set()
        producer.join(15)
    status_log = [line.rstrip() for line in watch.log_path.read_text().splitlines()
                  if "status" in line]
    if not stackctl.port_open(stackctl.KAFKAS["kafka-source"].port):
        disturbed.append("kafka-source is down")
    return Run(started, commits, poll_failures, watch.snapshot(), described, status_log,
               disturbed, producer.sent, producer.failed)


# ---------------------------------------------------------------- the report


def span(values: list[float]) -> str:
    return f"{min(values):g} .. {max(values):g}" if values else "none"


def report(result: Run, partitions: int, commits_wanted: int) -> tuple[list[str], int]:
    lines = []
    t0 = result.started
    lines.append(f"produced {result.produced} records ({result.produce_failures} failed), "
                 f"{len(result.documents)} exporter documents, "
                 f"{result.poll_failures} failed offset polls")
    times = [t for t, _ in result.commits]
    intervals = [b - a for a, b in itertools.pairwise(times)]
    lines.append(f"commits seen (committed offset moved, polled every 1 s): {len(times)}, at "
                 + ", ".join(f"{t - t0:.0f}" for t in times) + " s after MirrorMaker started")
    if intervals:
        lines.append("  intervals: " + ", ".join(f"{i:.0f}" for i in intervals)
                     + f" s (median {statistics.median(intervals):.1f})")
    for n, (_, offsets) in enumerate(result.commits, 1):
        lines.append(f"  commit {n}: " + " ".join(f"p{p}={o}" for p, o in sorted(offsets.items())))

    docs = result.documents
    first = next((i for i, d in enumerate(docs)
                  if all(f"p{p}" in d for p in range(partitions))), None)
    if first is None:
        lines.append("no exporter document with every partition's lag: nothing to judge")
        return lines, 2
    after = docs[first:]
    lines.append(f"exporter documents from the first commit on: {len(after)} "
                 f"(first {after[0]['@timestamp']}, {len(docs) - len(after)} before it)")
    gaps = [at(b) - at(a) for a, b in itertools.pairwise(after)]
    lines.append(f"  longest gap between documents: {max(gaps, default=0):.1f} s")
    drops = sum(1 for a, b in itertools.pairwise(after)
                if (b.get("lag_total") or 0) < (a.get("lag_total") or 0))
    lines.append(f"  ticks where the exporter's lag_total fell (commits it saw): {drops}")
    totals = [float(d["lag_total"]) for d in after if "lag_total" in d]
    lines.append(f"lag_total min .. max: {span(totals)}")
    for p in range(partitions):
        lags = [float(d[f"p{p}"]) for d in after if d.get(f"p{p}") is not None]
        seconds = [float(d["lag_seconds"][f"p{p}"]) for d in after
                   if d.get("lag_seconds", {}).get(f"p{p}") is not None]
        nulls = [at(d) - at(after[0]) for d in after
                 if d.get("lag_seconds", {}).get(f"p{p}") is None]
        lines.append(f"  p{p}: lag {span(lags)}; lag_seconds {span(seconds)}; "
                     f"lag_seconds null in {len(nulls)} of {len(after)} documents"
                     + (" (at +" + ", +".join(f"{t:.0f}" for t in nulls[:20])
                        + " s)" if nulls else ""))
    maxima = [float(d["lag_seconds_max"]) for d in after if "lag_seconds_max" in d]
    lines.append(f"lag_seconds_max min .. max: {span(maxima)} "
                 f"(absent in {len(after) - len(maxima)} documents)")

    statuses = Counter(str(d.get("status")) for d in docs)
    lines.append("status values (all documents): "
                 + ", ".join(f"{s}={n}" for s, n in statuses.most_common()))
    # partition_status lists only the partitions that are not OK (documents.py)
    partition_statuses = Counter(
        f"p{p}={d.get('partition_status', {}).get(f'p{p}', 'OK') if 'status' in d else None}"
        for d in docs for p in range(partitions))
    lines.append("partition_status values: "
                 + ", ".join(f"{s}: {n}" for s, n in sorted(partition_statuses.items())))
    if result.status_log:
        lines.append("exporter log lines about status:")
        lines += ["  " + line for line in result.status_log]
    if result.described is not None:
        lines += compare_with_describe(docs, result.described, partitions)
    else:
        lines.append("kafka-consumer-groups --describe: not run (fewer than 3 commits)")

    not_ok = {s for s in statuses if s not in ("OK", "None")}
    stayed_ok = not not_ok and statuses.get("OK", 0) > 0
    lines.append(f"status stayed OK: {'yes' if stayed_ok else 'no'}")
    if result.disturbed or len(result.commits) < commits_wanted:
        lines.append("run disturbed: " + "; ".join(result.disturbed or ["too few commits"]))
        return lines, 1 if not_ok else 2
    return lines, 0 if stayed_ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commits", type=int, default=6,
                        help="MirrorMaker commits to watch, the first included [6]")
    parser.add_argument("--rate", type=float, default=20.0, help="records per second [20]")
    parser.add_argument("--partitions", type=int, default=3, help="of the topic [3]")
    parser.add_argument("--commit-interval-ms", type=int, default=60_000,
                        help="MirrorMaker's --offset.commit.interval.ms [60000, its default]")
    parser.add_argument("--max-minutes", type=float, default=10.0,
                        help="give up (exit 2) when the commits take longer [10]")
    args = parser.parse_args()
    if args.commits < 2 or args.rate <= 0 or args.partitions < 1 or args.max_minutes <= 0 \
            or args.commit_interval_ms < 1:
        parser.error("--commits must be at least 2; the other numbers positive")
    if not stackctl.port_open(stackctl.KAFKAS["kafka-source"].port) or not stackctl.port_open(
            stackctl.KAFKAS["kafka-target"].port):
        print("kafka-source or kafka-target is not up: `scripts/stack status`, `scripts/stack up`",
              file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        result = run(args.commits, args.partitions, args.rate, args.commit_interval_ms,
                     args.max_minutes * 60)
    except (KeyboardInterrupt, Stopped):
        print("interrupted: MirrorMaker, exporter and producer stopped", file=sys.stderr)
        return 130
    finally:
        try:
            delete_leftovers()
        except KafkaException as err:
            print(f"cleanup: {err}", file=sys.stderr)
    lines, code = report(result, args.partitions, args.commits)
    print(f"MirrorMaker 1 (Kafka 3.9) --offset.commit.interval.ms {args.commit_interval_ms}, "
          f"group {GROUP}, {args.rate:g} records/s over {args.partitions} partitions")
    print("exporter: " + " ".join(exporter_command()).replace(str(REPO) + "/", ""))
    print("\n".join(lines))
    print(" ".join(["reproduce: scripts/stack up && .venv/bin/python benchmarks/mm1_commit_60s.py",
                    *sys.argv[1:]]))
    return code


if __name__ == "__main__":
    sys.exit(main())
