"""Issue 11, lag in seconds against ground truth, on the real stack.

A producer writes 10 records/s per partition with explicit CreateTimes; "consumers" (memberless
groups) are held N seconds behind by committing, every second, the offset of the record stamped
now - N. Long lags are built at once: each topic's history is written back-dated (records
stamped now - 700 s ... now) before the exporter starts, so it has no history that far back and
must use the record time it reads from the broker. Ground truth for each document: its
@timestamp minus the CreateTime of the record at the offset committed when it was sampled (from
the delivery reports, checked against the broker). All scenarios run in one exporter, one group
and topic each, for about 30 s.

Commits happen half a tick after the exporter's ticks, so each document saw exactly one known
commit; a document whose commit could be either of two is left out (counted).
"""

from __future__ import annotations

import logging
import time
import uuid
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from statistics import mean
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
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
log = logging.getLogger(__name__)

RATE = 10.0
"""Records per second per partition."""
PARTITIONS = 2
INTERVAL_S = 1.0
TARGET_S = 1.0 + INTERVAL_S
"""The issue's target: 1 s plus one sample interval while the history covers the lag; 2 s
beyond it (the same number at a 1-s interval)."""
RUN_S = 28.0
"""Watched after the first document: three record-time reads (every 10 s) and a burst."""
BURST = 300
"""Records per partition in the burst (30 s of production at once)."""
BURST_AT_S = 8.0
DRAIN_PER_S = 50
"""The burst group's consumption: 40 records/s more than production, drained in ~8 s."""
SCENARIOS = ("held 5 s behind", "held 60 s behind", "held 600 s behind", "burst, drained")
COMMIT_GUARD_S = 0.3
"""A sample's OffsetFetch is done this long after its tick at most (commits come at +0.5 s)."""


@dataclass
class Scenario:
    name: str
    topic: str
    group: str
    behind_s: float | None
    """Held this many seconds behind; None: the burst group (caught up, then draining)."""
    backdate_s: float
    commits: list[tuple[float, float, dict[int, int]]] = field(default_factory=list)
    """(started, finished, partition -> offset), in order."""


@dataclass(frozen=True)
class Comparison:
    scenario: str
    at: float
    partition: int
    committed: int
    truth: float
    reported: float | None
    covered: bool
    """The exporter watched the record at the committed offset being written (its own history
    covers the lag); False: it was written before the exporter started."""

    @property
    def error(self) -> float:
        assert self.reported is not None
        return self.reported - self.truth


@dataclass
class Run:
    comparisons: list[Comparison]
    ambiguous: int
    quiet: list[dict[str, Any]]
    quiet_record_time: float
    caught_up: list[dict[str, Any]]
    burst_reported: list[tuple[float, float]]
    broker_mismatches: list[str]
    table: str
    returncode: int | None
    log_lines: list[str]


def held_offsets(producer: TimedProducer, topic: str, behind_s: float, now: float
                 ) -> dict[int, int]:
    """Per partition, the offset of the first record stamped now - behind_s or later."""
    return {p: bisect_left(producer.create_times(topic, p), now - behind_s)
            for p in range(PARTITIONS)}


def committed_at(commits: list[tuple[float, float, dict[int, int]]], at: float
                 ) -> dict[int, int] | None:
    """The commit a sample ticked at `at` read: the last one finished before the tick, unless
    another started before its OffsetFetch could have been done (then None: ambiguous)."""
    finished = [c for c in commits if c[1] <= at]
    started = [c for c in commits if c[0] <= at + COMMIT_GUARD_S]
    if not finished or finished[-1] is not started[-1]:
        return None
    return finished[-1][2]


def true_seconds(create_times: list[float], committed: int, at: float) -> float:
    """Age at `at` of the record at `committed`: 0 when it had not been written yet."""
    if committed >= len(create_times) or create_times[committed] > at:
        return 0.0
    return at - create_times[committed]


def broker_create_time(bootstrap: str, topic: str, partition: int, offset: int) -> float:
    """CreateTime of the record at `offset`, read from the broker."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"truth-{uuid.uuid4()}",
                         "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                assert message.offset() == offset
                return float(message.timestamp()[1]) / 1000
        raise AssertionError(f"no record at {topic} {partition} {offset} within 20 s")
    finally:
        consumer.close()


def accuracy_table(comparisons: list[Comparison], ambiguous: int) -> str:
    rows = [f"lag_seconds vs ground truth: interval {INTERVAL_S:g} s, {RATE:g} records/s per "
            f"partition, {PARTITIONS} partitions per topic, target {TARGET_S:g} s",
            f"{'scenario':<22}{'lag covered by':<18}{'samples':>8}{'mean |err| s':>14}"
            f"{'max |err| s':>13}{'mean err s':>12}"]
    for scenario, covered in sorted(dict.fromkeys((c.scenario, c.covered) for c in comparisons),
                                    key=lambda key: (SCENARIOS.index(key[0]), key[1])):
        errors = [c.error for c in comparisons
                  if (c.scenario, c.covered) == (scenario, covered) and c.reported is not None]
        if not errors:
            continue
        rows.append(f"{scenario:<22}{'exporter history' if covered else 'broker record time':<18}"
                    f"{len(errors):>8}{mean(map(abs, errors)):>14.3f}"
                    f"{max(map(abs, errors)):>13.3f}{mean(errors):>12.3f}")
    rows.append(f"(documents left out because two commits could have been read: {ambiguous})")
    return "\n".join(rows)


@pytest.fixture(scope="module")
def run(stack: Stack) -> Iterator[Run]:
    bootstrap = stack.source_bootstrap
    name = f"t{uuid.uuid4().hex[:10]}"
    scenarios = [
        Scenario(SCENARIOS[0], f"secs5.{name}", f"secs5-{name}", 5.0, 20.0),
        Scenario(SCENARIOS[1], f"secs60.{name}", f"secs60-{name}", 60.0, 100.0),
        Scenario(SCENARIOS[2], f"secs600.{name}", f"secs600-{name}", 600.0, 700.0),
        Scenario(SCENARIOS[3], f"burst.{name}", f"burst-{name}", None, 10.0),
    ]
    quiet_topic, quiet_group = f"quiet.{name}", f"quiet-{name}"
    caught_topic, caught_group = f"caught.{name}", f"caught-{name}"
    create_topics(bootstrap, {**{s.topic: PARTITIONS for s in scenarios},
                              quiet_topic: 1, caught_topic: 1})
    committer = MemberlessCommitter(bootstrap)
    with TimedProducer(bootstrap) as producer:
        setup = time.time()
        for s in scenarios:
            for p in range(PARTITIONS):
                producer.backfill(s.topic, p, setup - s.backdate_s, setup, RATE)
                producer.stream(s.topic, p, RATE, first=setup)
        # Quiet topics: one record a second written 130 s ago, then nothing.
        producer.backfill(quiet_topic, 0, setup - 130, setup - 110, 1.0)
        producer.backfill(caught_topic, 0, setup - 130, setup - 110, 1.0)
        committer.commit(quiet_group, {(quiet_topic, 0): 5})
        committer.commit(caught_group, {(caught_topic, 0): 20})
        quiet_record_time = producer.create_times(quiet_topic, 0)[5]
        positions: dict[int, int] = {}

        def commit_all(now: float, cycle: int) -> None:
            for s in scenarios:
                if s.behind_s is not None:
                    offsets = held_offsets(producer, s.topic, s.behind_s, now)
                else:
                    for p in range(PARTITIONS):
                        end = producer.delivered(s.topic, p)
                        positions[p] = min(end, positions.get(p, end) + DRAIN_PER_S)
                    offsets = dict(positions)
                    if cycle == round(BURST_AT_S):
                        for p in range(PARTITIONS):
                            producer.burst(s.topic, p, BURST)
                started, finished = committer.commit(
                    s.group, {(s.topic, p): o for p, o in offsets.items()})
                s.commits.append((started, finished, offsets))

        commit_all(time.time(), -1)
        groups = [s.group for s in scenarios] + [quiet_group, caught_group]
        exporter = JsonLinesExporter("--bootstrap-server", bootstrap, "--interval",
                                     str(INTERVAL_S), *(a for g in groups for a in ("--group", g)))
        try:
            wait_for(lambda: len(exporter.documents()) > 0, 30, "the first document",
                     poll_s=0.05)
            first = min(doc_time(d) for d in exporter.documents())
            # The consumers commit every second, half a tick after the exporter's ticks.
            cycle = 0
            while True:
                next_commit = first + 0.5 + cycle
                time.sleep(max(0.0, next_commit - time.time()))
                assert exporter.running(), "\n".join(exporter.log()[-30:])
                commit_all(time.time(), cycle)
                cycle += 1
                if max(doc_time(d) for d in exporter.documents()) >= first + RUN_S:
                    break
        finally:
            returncode = exporter.stop()
            committer.close()
    assert not producer.errors, producer.errors[:5]

    comparisons: list[Comparison] = []
    ambiguous = 0
    burst_reported: list[tuple[float, float]] = []
    by_group = {s.group: s for s in scenarios}
    for doc in exporter.documents():
        scenario = by_group.get(doc["group"])
        if scenario is None:
            continue
        at = doc_time(doc)
        if scenario.behind_s is None:
            burst_reported.append((at, doc.get("lag_seconds_max", -1.0)))
        offsets = committed_at(scenario.commits, at)
        if offsets is None:
            ambiguous += 1
            continue
        for p, committed in offsets.items():
            times = producer.create_times(scenario.topic, p)
            truth = true_seconds(times, committed, at)
            covered = truth == 0.0 or times[committed] >= first + 0.5
            comparisons.append(Comparison(scenario.name, at, p, committed, truth,
                                          doc.get("lag_seconds", {}).get(f"p{p}"), covered))

    # The ground truth (delivery reports) is what the broker stores.
    mismatches = []
    for s in scenarios:
        for p, offset in s.commits[-1][2].items():
            logged = producer.create_times(s.topic, p)[offset]
            stored = broker_create_time(bootstrap, s.topic, p, offset)
            if abs(stored - logged) > 0.0005:
                mismatches.append(f"{s.topic} p{p} @{offset}: broker {stored}, log {logged}")

    table = accuracy_table(comparisons, ambiguous)
    print("\n" + table)
    log.info("accuracy table\n%s", table)
    yield Run(comparisons, ambiguous, exporter.documents(quiet_group), quiet_record_time,
              exporter.documents(caught_group), burst_reported, mismatches, table, returncode,
              exporter.log())


def test_the_exporter_ran_and_stopped_cleanly(run: Run) -> None:
    assert run.returncode == 0, "\n".join(run.log_lines[-30:])
    assert not any("Traceback" in line for line in run.log_lines)
    assert run.ambiguous <= 8, run.table  # the commit schedule held: almost every document counts


def test_ground_truth_is_what_the_broker_stores(run: Run) -> None:
    assert run.broker_mismatches == []


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_lag_seconds_within_target(run: Run, scenario: str) -> None:
    compared = [c for c in run.comparisons if c.scenario == scenario]
    assert len(compared) >= PARTITIONS * (RUN_S - 3), run.table
    unknown = [c for c in compared if c.reported is None]
    assert unknown == [], unknown[:3]  # a committed offset with a lag always has seconds
    worst = max(compared, key=lambda c: abs(c.error))
    assert abs(worst.error) <= TARGET_S, f"{worst}\n{run.table}"


def test_held_behind_uses_both_the_broker_and_the_history(run: Run) -> None:
    """The 5-s consumer starts beyond the history and is covered by it after 5 s; the 600-s one
    never is (its every value comes from record times read from the broker)."""
    five = [c for c in run.comparisons if c.scenario == SCENARIOS[0]]
    assert any(not c.covered for c in five) and sum(c.covered for c in five) >= 30
    assert not any(c.covered for c in run.comparisons if c.scenario == SCENARIOS[2])


def test_a_burst_shows_then_drains(run: Run) -> None:
    """While the burst drains, the age of the oldest unconsumed record grows (the burst's records
    were all written at once), then drops back to about nothing."""
    peak = max(seconds for _, seconds in run.burst_reported)
    assert peak >= BURST / (DRAIN_PER_S - RATE) - TARGET_S - 1, run.burst_reported
    assert run.burst_reported[-1][1] < 1.0, run.burst_reported[-5:]


def test_caught_up_is_zero(run: Run) -> None:
    assert len(run.caught_up) >= RUN_S - 2
    for doc in run.caught_up:
        assert doc["p0"] == 0 and doc["lag_seconds"] == {"p0": 0.0}, doc
        assert doc["lag_seconds_max"] == 0.0


def test_quiet_topic_behind_grows_with_wall_time(run: Run) -> None:
    """Nothing is written any more, the consumer is 15 records behind: the record at its offset
    is older at every sample, by the time that passed (within 0.5 s: seconds are computed when
    the end offsets were read, a little after the tick, and the first sample reads late)."""
    docs = run.quiet
    assert len(docs) >= RUN_S - 2
    for doc in docs:
        assert doc["p0"] == 15
        truth = doc_time(doc) - run.quiet_record_time
        assert abs(doc["lag_seconds"]["p0"] - truth) <= TARGET_S, (doc, truth)
    reported = [doc["lag_seconds"]["p0"] for doc in docs]
    assert all(later > earlier for earlier, later in pairwise(reported))
    elapsed = doc_time(docs[-1]) - doc_time(docs[0])
    assert abs((reported[-1] - reported[0]) - elapsed) <= 0.5, (reported, elapsed)
