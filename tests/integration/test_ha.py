"""--ha-group: three real `lag-exporter watch` processes share 100 groups through Kafka's
consumer-group protocol, into one Elasticsearch index.

One run, in phases: all three running (every (group, topic, second) documented exactly once),
one SIGKILLed (its groups resume on the others within the session timeout + 2 ticks), one
started again (the share spreads over three again)."""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient
from elasticsearch import Elasticsearch
from elasticsearch.helpers import scan
from helpers import create_topic, doc_time, free_port, metric_values, wait_for

from stack.stackctl import Stack

pytestmark = pytest.mark.integration

GROUPS = 100
SESSION_TIMEOUT_S = 6  # the broker's group.min.session.timeout.ms
INTERVAL_S = 1
REPORTING = re.compile(r"HA group \S+: reporting (\d+) of (\d+) groups")


class Instance:
    """One `lag-exporter watch --ha-group` process; its log goes to a file read while it runs."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        self.log_path = log_path
        self.port = free_port()
        args = [*args, "--http-port", str(self.port), "--http-host", "127.0.0.1"]
        self._log = log_path.open("w")
        self.process = subprocess.Popen([sys.executable, "-m", "lag_exporter", "watch", *args],
                                        stdout=subprocess.DEVNULL, stderr=self._log,
                                        env=dict(os.environ))

    def log(self) -> str:
        return self.log_path.read_text()

    def reporting(self) -> int | None:
        """The number of groups it reports, from its last "reporting K of N groups" line."""
        found = REPORTING.findall(self.log())
        return int(found[-1][0]) if found else None

    def answered_from_the_follower(self) -> bool:
        """Its last sample's committed offsets all came from the commit follower, which reads
        only the partitions it owns (none through the Admin API)."""
        name = "lag_exporter_offsets_source_groups"
        topic = metric_values(self.port, name, source="topic")
        admin = metric_values(self.port, name, source="admin")
        return topic == [float(self.reporting() or 0)] and topic[0] > 0 and admin == [0.0]

    def stop(self, sig: int) -> int:
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=15)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(timeout=10)
            self._log.close()


def commit_groups(bootstrap: str, groups: list[str], topic: str) -> None:
    """Commit offset 0 on the topic's partition for every group, through the Admin API."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures: list[Future[Any]] = []
    for group in groups:  # the API takes one group per call; the calls run concurrently
        futures += admin.alter_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, 0, 0)])]).values()
    for future in futures:
        future.result(timeout=60)


def stamps(es_url: str, index: str) -> dict[tuple[str, str], list[float]]:
    """(group, topic) -> the @timestamps of its documents, sorted; checks ids are unique."""
    client = Elasticsearch(es_url)
    try:
        client.indices.refresh(index=index)
        found: dict[tuple[str, str], list[float]] = defaultdict(list)
        ids: Counter[str] = Counter()
        for hit in scan(client, index=index, query={"query": {"match_all": {}}},
                        _source=["group", "topic", "@timestamp"]):
            source = hit["_source"]
            ids[hit["_id"]] += 1
            found[(source["group"], source["topic"])].append(doc_time(source))
    finally:
        client.close()
    assert max(ids.values(), default=1) == 1
    return {key: sorted(times) for key, times in found.items()}


def seconds_between(times: list[float], start: float, end: float) -> list[float]:
    return [t for t in times if start <= t < end]


def biggest_gap(times: list[float], start: float, end: float) -> float:
    inside = seconds_between(times, start, end)
    return max((b - a for a, b in itertools.pairwise(inside)), default=float("inf"))


def test_three_instances_share_fail_over_and_spread_again(stack: Stack, tmp_path: Path) -> None:
    name = f"ha-{uuid.uuid4().hex[:8]}"
    topic, index = f"{name}-topic", f"{name}-index"
    groups = [f"{name}-g{n:03d}" for n in range(GROUPS)]
    create_topic(stack.source_bootstrap, topic, 1)
    commit_groups(stack.source_bootstrap, groups, topic)
    args = ["--bootstrap-server", stack.source_bootstrap, *[a for g in groups
                                                           for a in ("--group", g)],
            "--es-url", stack.es_url, "--es-index", index, "--interval", str(INTERVAL_S),
            "--ha-group", name, "--ha-session-timeout", str(SESSION_TIMEOUT_S),
            "--summary-interval", "3600"]

    def start(n: int) -> Instance:
        return Instance([*args, "--spool-dir", str(tmp_path / f"spool{n}")],
                        tmp_path / f"instance{n}.log")

    instances = [start(n) for n in range(3)]
    try:
        # Phase 1: three instances; wait until each reports a share and all groups are written.
        def all_share() -> bool:
            counts = [i.reporting() for i in instances]
            return all(c is not None and c > 0 for c in counts) and sum(
                c or 0 for c in counts) == GROUPS
        wait_for(all_share, timeout=60, what="three instances sharing 100 groups")
        wait_for(lambda: all(i.answered_from_the_follower() for i in instances), timeout=30,
                 what="each instance's followed partitions answering for its groups")
        ready = time.time() + 2  # every instance samples its share from here on
        wait_for(lambda: time.time() > ready + 30, timeout=40, what="30 s of three instances")

        # Phase 2: SIGKILL one; the others take its groups over. First every group's documents
        # up to the last two seconds are in Elasticsearch: what the killed instance had not
        # delivered yet is lost (its spool is not restarted), and would count as its gap.
        def delivered_until(moment: float) -> bool:
            latest = stamps(stack.es_url, index)
            return len(latest) == GROUPS and all(t[-1] >= moment for t in latest.values())
        now = time.time()
        wait_for(lambda: delivered_until(now - 2), timeout=60,
                 what="every group's documents delivered")
        killed = instances.pop(0)
        killed_share = killed.reporting()
        assert killed.stop(signal.SIGKILL) == -signal.SIGKILL
        killed_at = time.time()
        wait_for(lambda: sum(i.reporting() or 0 for i in instances) == GROUPS, timeout=30,
                 what="the two survivors reporting all 100 groups")
        taken_over = time.time()

        # Phase 3: one more instance; the share spreads over three again.
        instances.append(start(3))
        wait_for(all_share, timeout=60, what="the share spread over three instances again")
        wait_for(lambda: all(i.answered_from_the_follower() for i in instances), timeout=30,
                 what="the followers answering again")
        spread = time.time() + 2
        wait_for(lambda: time.time() > spread + 10, timeout=20, what="10 s of three again")
        end = time.time()
    finally:
        codes = [i.stop(signal.SIGTERM) for i in instances]
    logs = "\n".join(i.log() for i in instances)
    assert codes == [0, 0, 0], logs[-3000:]

    found = stamps(stack.es_url, index)
    assert set(found) == {(g, topic) for g in groups}
    # Every (group, topic, second) exactly once while three instances run steadily: one
    # document per second of the window, on the whole-second grid.
    window = range(int(ready) + 1, int(killed_at))
    for key, times in found.items():
        steady = seconds_between(times, window.start, window.stop)
        assert steady == [float(s) for s in window], key
        assert len(set(times)) == len(times), key  # no (group, topic, @timestamp) twice
    assert all(t == int(t) for times in found.values() for t in times)

    # After the SIGKILL: the killed instance's groups resume within session timeout + 2 ticks.
    gaps = {key: biggest_gap(times, ready, end) for key, times in found.items()}
    worst = max(gaps.values())
    print(f"killed instance reported {killed_share} groups; biggest gap per group "
          f"{worst:.0f} s (session timeout {SESSION_TIMEOUT_S} s); survivors reported all "
          f"{taken_over - killed_at:.1f} s after the kill")
    assert worst <= SESSION_TIMEOUT_S + 2 * INTERVAL_S
    # Only the killed instance's groups had a gap of more than the rebalances' few ticks.
    moved = [key for key, gap in gaps.items() if gap > 3 * INTERVAL_S]
    assert killed_share is not None and len(moved) <= killed_share
    # And the last 10 s with three instances again: every group every second.
    for key, times in found.items():
        tail = seconds_between(times, int(spread) + 1, int(end) - 1)
        assert tail == [float(s) for s in range(int(spread) + 1, int(end) - 1)], key


def test_two_instances_reporting_the_same_groups_store_each_second_once(
        stack: Stack, tmp_path: Path) -> None:
    """The overlap of a rebalance, made to last: two instances in HA groups of their own both
    report every group; ticks on the wall-clock grid give their documents the same ids. One
    follows __consumer_offsets, the other asks the Admin API (its own topic decides)."""
    name = f"ha-{uuid.uuid4().hex[:8]}"
    topic, index = f"{name}-topic", f"{name}-index"
    groups = [f"{name}-g{n}" for n in range(5)]
    create_topic(stack.source_bootstrap, topic, 1)
    commit_groups(stack.source_bootstrap, groups, topic)
    instances = [Instance(["--bootstrap-server", stack.source_bootstrap,
                           *[a for g in groups for a in ("--group", g)],
                           "--es-url", stack.es_url, "--es-index", index, "--interval", "1",
                           "--ha-group", f"{name}-{n}", "--spool-dir", str(tmp_path / f"s{n}"),
                           "--offsets-source", ("topic", "admin")[n]],
                          tmp_path / f"instance{n}.log") for n in range(2)]
    try:
        wait_for(lambda: all(i.reporting() == len(groups) for i in instances), timeout=60,
                 what="both instances reporting every group")
        both = time.time() + 1
        wait_for(lambda: time.time() > both + 8, timeout=15, what="8 s of both")
    finally:
        codes = [i.stop(signal.SIGTERM) for i in instances]
    assert codes == [0, 0]
    # The Admin API instance's share is decided by a topic of its own, created for it.
    assert f"created topic lag-exporter-ha.{name}-1 (50 partitions)" in instances[1].log()
    assert f"partitions of lag-exporter-ha.{name}-1 assigned" in instances[1].log()
    assert "partitions of __consumer_offsets assigned" in instances[0].log()
    delivered = [int(m.group(1)) for i in instances
                 if (m := re.search(r"\((?:\d+) ticks skipped, (\d+) delivered", i.log()))]
    assert len(delivered) == 2 and min(delivered) >= 8  # both wrote every second
    found = stamps(stack.es_url, index)  # ids unique
    for key, times in found.items():
        assert len(set(times)) == len(times), key
        overlap = seconds_between(times, int(both) + 1, int(both) + 8)
        assert overlap == [float(s) for s in range(int(both) + 1, int(both) + 8)], key
