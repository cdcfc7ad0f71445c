"""Issue 11, the status verdict on the real stack: one scenario per verdict, all at once in one
`watch` with short windows (--status-window 40 --stop-after 5 --allowed-lag 1), for about 45 s.

Each scenario is a group on its own one-partition topic. Memberless consumers commit, every
second, half a tick after the exporter's ticks; the STALL consumer is a real member of its group
(subscribed, polling, committing one fixed offset), started before the exporter so that its first
description of the group already shows the assignment. REWIND is the real
`kafka-consumer-groups --reset-offsets --to-earliest --execute`.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition
from helpers import (
    JsonLinesExporter,
    MemberlessCommitter,
    TimedProducer,
    create_topics,
    doc_time,
    wait_for,
)

from stack.stackctl import Stack

pytestmark = pytest.mark.integration

WINDOW_S = 40.0
STOP_AFTER_S = 5.0
RUN_S = 42.0
"""Watched after the first document: the saw-tooth group's last 10-s interval ends at 41 s."""
SAW_TOOTH_EVERY = 10
"""Cycles (seconds) between the saw-tooth group's commits (MirrorMaker 1's 60 s, scaled down)."""
STOPS_AFTER_CYCLE = 7
REWIND_AT_CYCLE = 6
STALLED_AT = 10
LATE_S = 3.0 + 5.0
"""How late a verdict may show after its rule allows it: a couple of ticks, plus a status
re-evaluated only every few seconds (evaluations may be spaced to save CPU at scale)."""
"""The offset the STALL member commits again and again."""


@dataclass
class Scenario:
    topic: str
    group: str
    next_offset: Callable[[int, int, int], int | None] | None
    """(cycle, current committed offset, records written) -> the offset to commit, None for
    no commit; None: this group's commits are not made by the memberless committer."""
    offset: int


class StalledMember:
    """A real consumer in the group: subscribed, polling, holding the partition, and committing
    the same offset every second while records arrive."""

    def __init__(self, bootstrap: str, group: str, topic: str, offset: int) -> None:
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                                   "enable.auto.commit": False, "auto.offset.reset": "earliest"})
        self._consumer.subscribe([topic])
        self._commit = [TopicPartition(topic, 0, offset)]
        self.assigned = threading.Event()
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_commit = 0.0
        try:
            while not self._stop.is_set():
                self._consumer.poll(0.2)
                if self._consumer.assignment() and time.monotonic() >= next_commit:
                    self._consumer.commit(offsets=self._commit, asynchronous=False)
                    self.assigned.set()
                    next_commit = time.monotonic() + 1
        except KafkaException as error:
            self.errors.append(str(error))
        finally:
            self._consumer.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


@dataclass
class Run:
    documents: dict[str, list[dict[str, Any]]]
    """Scenario name -> its documents, in order."""
    status_lines: dict[str, list[str]]
    """Scenario name -> its "status A -> B (detail)" log lines, in order."""
    first: float
    saw_tooth_commits: list[float]
    """When the saw-tooth group's commits were made (wall clock)."""
    reset_output: str
    returncode: int | None
    log_lines: list[str]


def statuses(docs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(topic status, p0's status) per document; partition_status lists only the partitions
    that are not OK (documents.py)."""
    return [(doc["status"], doc.get("partition_status", {}).get("p0", "OK")) for doc in docs]


@pytest.fixture(scope="module")
def run(stack: Stack) -> Iterator[Run]:
    bootstrap = stack.source_bootstrap
    name = f"t{uuid.uuid4().hex[:10]}"

    def caught_up(cycle: int, offset: int, written: int) -> int:
        return written

    def until_stopped(cycle: int, offset: int, written: int) -> int | None:
        return written if cycle <= STOPS_AFTER_CYCLE else None

    def slower_than_production(cycle: int, offset: int, written: int) -> int:
        return offset + 5  # 5 records a second; 20 are written

    def faster_than_production(cycle: int, offset: int, written: int) -> int:
        return min(written, offset + 40)  # 40 records a second; 10 are written

    def saw_tooth(cycle: int, offset: int, written: int) -> int | None:
        return written if cycle % SAW_TOOTH_EVERY == 0 else None

    def never(cycle: int, offset: int, written: int) -> None:
        return None

    # name -> (records written before, records written per second, commit rule, first offset)
    plan: dict[str, tuple[int, float, Callable[[int, int, int], int | None] | None, int]] = {
        "healthy": (20, 10.0, caught_up, 20),
        "stops committing": (20, 10.0, until_stopped, 20),
        "stalled member": (20, 10.0, None, STALLED_AT),
        "reset to earliest": (200, 0.0, never, 200),
        "falling behind": (40, 20.0, slower_than_production, 20),
        "catching up": (1200, 10.0, faster_than_production, 0),
        "caught up, quiet": (20, 0.0, never, 20),
        "saw-tooth commits": (20, 10.0, saw_tooth, 20),
    }
    scenarios = {key: Scenario(f"status{n}.{name}", f"status{n}-{name}", rule, offset)
                 for n, (key, (_, _, rule, offset)) in enumerate(plan.items())}
    create_topics(bootstrap, {s.topic: 1 for s in scenarios.values()})
    committer = MemberlessCommitter(bootstrap)
    saw_tooth_commits: list[float] = []
    with TimedProducer(bootstrap) as producer, ThreadPoolExecutor(1) as tools:
        setup = time.time()
        for key, (before, rate, _, _) in plan.items():
            topic = scenarios[key].topic
            producer.backfill(topic, 0, setup - before, setup, 1.0)
            if rate:
                producer.stream(topic, 0, rate, first=setup)
        for s in scenarios.values():
            if s.next_offset is not None:
                committer.commit(s.group, {(s.topic, 0): s.offset})
        stalled = scenarios["stalled member"]
        member = StalledMember(bootstrap, stalled.group, stalled.topic, STALLED_AT)
        reset: Future[Any] | None = None
        try:
            # The exporter describes group membership every 30 s: the member holds the
            # partition before its first description.
            assert member.assigned.wait(30), member.errors
            rewound = scenarios["reset to earliest"]
            exporter = JsonLinesExporter(
                "--bootstrap-server", bootstrap, "--interval", "1",
                "--status-window", str(WINDOW_S), "--stop-after", str(STOP_AFTER_S),
                "--allowed-lag", "1",
                *(a for s in scenarios.values() for a in ("--group", s.group)))
            with exporter:
                wait_for(lambda: len(exporter.documents()) > 0, 30, "the first document",
                         poll_s=0.05)
                first = min(doc_time(d) for d in exporter.documents())
                cycle = 0
                while max(doc_time(d) for d in exporter.documents()) < first + RUN_S:
                    time.sleep(max(0.0, first + 0.5 + cycle - time.time()))
                    assert exporter.running(), "\n".join(exporter.log()[-30:])
                    for key, s in scenarios.items():
                        if s.next_offset is None:
                            continue
                        offset = s.next_offset(cycle, s.offset, producer.delivered(s.topic, 0))
                        if offset is not None:
                            committer.commit(s.group, {(s.topic, 0): offset})
                            s.offset = offset
                            if key == "saw-tooth commits":
                                saw_tooth_commits.append(time.time())
                    if cycle == REWIND_AT_CYCLE:
                        reset = tools.submit(
                            stack.run_tool, "kafka-consumer-groups", "--bootstrap-server",
                            bootstrap, "--group", rewound.group, "--topic", rewound.topic,
                            "--reset-offsets", "--to-earliest", "--execute")
                    cycle += 1
        finally:
            member.close()
            committer.close()
        assert reset is not None
        done = reset.result(timeout=120)
        assert done.returncode == 0, done.stderr
    assert not producer.errors and not member.errors, (producer.errors, member.errors)

    pattern = re.compile(r"group (\S+) topic (\S+): status (.*)$")
    status_lines: dict[str, list[str]] = {key: [] for key in scenarios}
    by_group = {s.group: key for key, s in scenarios.items()}
    for line in exporter.log():
        match = pattern.search(line)
        if match and match.group(1) in by_group:
            status_lines[by_group[match.group(1)]].append(match.group(3))
    yield Run({key: exporter.documents(s.group) for key, s in scenarios.items()}, status_lines,
              first, saw_tooth_commits, done.stdout, exporter.returncode, exporter.log())


def test_the_exporter_ran_and_stopped_cleanly(run: Run) -> None:
    assert run.returncode == 0, "\n".join(run.log_lines[-30:])
    assert not any("Traceback" in line for line in run.log_lines)
    assert "NEW-OFFSET" in run.reset_output, run.reset_output


def test_every_document_has_a_status(run: Run) -> None:
    for key, docs in run.documents.items():
        assert len(docs) >= RUN_S - 2, key
        for doc in docs:
            assert doc["status"] in ("OK", "WARN", "ERR"), (key, doc)
            if doc["status"] == "OK":
                assert "partition_status" not in doc, (key, doc)
            else:
                assert set(doc["partition_status"]) == {"p0"}, (key, doc)
                assert doc["partition_status"]["p0"] != "OK", (key, doc)


def test_one_log_line_per_status_change(run: Run) -> None:
    """Each change of a topic's status in the documents is logged exactly once, in order, with
    the partition's word when it is not OK; a topic appearing as OK is not news."""
    for key, docs in run.documents.items():
        expected = []
        previous: str | None = None
        for status, word in statuses(docs):
            if status != previous and not (previous is None and status == "OK"):
                detail = f" (p0 {word})" if word != "OK" else ""
                expected.append(f"{previous or 'new'} -> {status}{detail}")
            previous = status
        assert run.status_lines[key] == expected, key


@pytest.mark.parametrize("key", ["healthy", "catching up", "caught up, quiet"])
def test_ok_throughout(run: Run, key: str) -> None:
    """A healthy consumer, one behind but catching up, and a caught-up one on a quiet topic
    (Burrow says STOP: no commit for longer than its threshold) are OK at every sample."""
    docs = run.documents[key]
    assert statuses(docs) == [("OK", "OK")] * len(docs)
    assert run.status_lines[key] == []
    if key == "catching up":  # it was far behind, and is catching up
        assert docs[0]["p0"] >= 1000 and docs[-1]["p0"] <= docs[0]["p0"] - 600
    if key == "caught up, quiet":
        assert docs[-1]["p0"] == 0 and doc_time(docs[-1]) - doc_time(docs[0]) > 5 * STOP_AFTER_S


def verdict_starts(run: Run, key: str, word: str) -> float:
    """Seconds after the first document at which `word` first shows; then it stays."""
    docs = run.documents[key]
    words = [w for _, w in statuses(docs)]
    assert word in words, (key, statuses(docs))
    start = words.index(word)
    assert words[:start] == ["OK"] * start, (key, statuses(docs))
    assert words[start:] == [word] * (len(words) - start), (key, statuses(docs))
    group_word = "WARN" if word == "WARN" else "ERR"
    assert {s for s, _ in statuses(docs)[start:]} == {group_word}
    assert run.status_lines[key] == [f"OK -> {group_word} (p0 {word})"]
    return doc_time(docs[start]) - run.first


def test_stop_when_a_memberless_consumer_stops_committing(run: Run) -> None:
    """The last offset change is seen at 8 s (commits at +0.5 s each cycle up to cycle 7):
    STOP once it has not moved for more than 5 s."""
    started = verdict_starts(run, "stops committing", "STOP")
    last_change_seen = STOPS_AFTER_CYCLE + 1
    assert last_change_seen + STOP_AFTER_S <= started <= last_change_seen + STOP_AFTER_S + LATE_S


def test_stall_when_a_member_commits_the_same_offset_while_records_arrive(run: Run) -> None:
    started = verdict_starts(run, "stalled member", "STALL")
    assert STOP_AFTER_S <= started <= STOP_AFTER_S + LATE_S


def test_rewind_after_kafka_consumer_groups_reset_offsets(run: Run) -> None:
    started = verdict_starts(run, "reset to earliest", "REWIND")
    assert started > REWIND_AT_CYCLE
    docs = run.documents["reset to earliest"]
    assert docs[0]["p0"] == 0 and docs[-1]["p0"] == 200


def test_warn_when_falling_further_behind(run: Run) -> None:
    """Five trend points at least window/20 = 2 s apart, all rising: from about 8 s on."""
    started = verdict_starts(run, "falling behind", "WARN")
    assert 4 * WINDOW_S / 20 <= started <= 4 * WINDOW_S / 20 + 4 + LATE_S
    lags = [doc["p0"] for doc in run.documents["falling behind"]]
    assert lags[-1] > lags[0] + 300


def test_saw_tooth_commits_are_not_stop_between_commits(run: Run) -> None:
    """A group committing every 10 s, watched with --stop-after 5: once the exporter has seen one
    whole interval between two commits, the threshold is 3 x 10 s, and the group stays OK through
    the next intervals although each is twice --stop-after. Before that (its first interval
    watched) it knows no interval and uses --stop-after alone."""
    docs = run.documents["saw-tooth commits"]
    second_change_seen = run.saw_tooth_commits[1] + LATE_S
    after = [doc for doc in docs if doc_time(doc) > second_change_seen]
    watched_intervals = sum(1 for at in run.saw_tooth_commits[2:]
                            if at < doc_time(docs[-1]))
    assert watched_intervals >= 2 and doc_time(docs[-1]) - second_change_seen >= 2 * SAW_TOOTH_EVERY
    assert statuses(after) == [("OK", "OK")] * len(after)
    lags = [doc["p0"] for doc in after]
    assert max(lags) >= 80  # the saw-tooth: 10 s of records between commits
