"""lag-exporter's lag equals the LAG column of the real kafka-consumer-groups, partition by
partition, on a quiescent cluster."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from confluent_kafka import Consumer, TopicPartition
from helpers import (
    DescribeRow,
    commit,
    create_topic,
    describe_group,
    lags_by_partition,
    parse_table,
    produce,
    run_exporter,
)

from stack.stackctl import Stack

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Estate:
    topics: dict[str, int]
    full_group: str
    partial_group: str


@pytest.fixture(scope="module")
def unique_name_module() -> str:
    return f"m{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def estate(stack: Stack, unique_name_module: str) -> Estate:
    u = unique_name_module
    topics = {
        f"par-{u}.one": 1,
        f"par_{u}-eighteen": 18,
        f"par.{u}.forty": 40,
        f"{u}test": 3,   # `grep test` in the old pipeline also matched the next one
        f"{u}test2": 3,
    }
    for topic, partitions in topics.items():
        create_topic(stack.source_bootstrap, topic, partitions)
        produce(stack.source_bootstrap, topic, {p: 3 + p % 7 for p in range(partitions)})
    full_group, partial_group = f"par-full-{u}", f"par_partial.{u}"
    commit(stack.source_bootstrap, full_group,
           {(t, p): p % 4 for t, n in topics.items() for p in range(n)})
    commit(stack.source_bootstrap, partial_group,
           {(f"par_{u}-eighteen", p): 1 for p in range(0, 18, 3)})
    return Estate(topics, full_group, partial_group)


def snapshot_rows(stack: Stack, group: str, *extra: str) -> list[DescribeRow]:
    done = run_exporter("snapshot", "--bootstrap-server", stack.source_bootstrap,
                        "--group", group, *extra)
    assert done.returncode == 0, done.stderr
    return parse_table(done.stdout)


def test_every_partition_matches_kafka_consumer_groups(stack: Stack, estate: Estate) -> None:
    ours = snapshot_rows(stack, estate.full_group)
    theirs = describe_group(stack, estate.full_group)
    assert len(ours) == sum(estate.topics.values()) == 65
    assert sorted(ours) == sorted(theirs)  # offsets and lag, row for row


def test_group_with_commits_on_some_partitions(stack: Stack, estate: Estate) -> None:
    ours = snapshot_rows(stack, estate.partial_group)
    theirs = describe_group(stack, estate.partial_group)
    assert lags_by_partition(ours) == lags_by_partition(theirs)
    assert len(ours) == 6


def test_topic_names_that_contain_each_other_stay_apart(stack: Stack, estate: Estate,
                                                        unique_name_module: str) -> None:
    u = unique_name_module
    ours = snapshot_rows(stack, estate.full_group, "--topic", f"{u}test")
    assert {row.topic for row in ours} == {f"{u}test"}
    assert len(ours) == 3


def test_explicit_topic_shows_uncommitted_partitions_as_null_in_json(
    stack: Stack, estate: Estate, unique_name_module: str
) -> None:
    topic = f"par_{unique_name_module}-eighteen"
    done = run_exporter("snapshot", "--bootstrap-server", stack.source_bootstrap, "--group",
                        estate.partial_group, "--topic", topic, "--format", "json")
    assert done.returncode == 0, done.stderr
    (document,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert document["topic"] == topic and document["group"] == estate.partial_group
    for partition in range(18):
        committed = partition % 3 == 0
        expected = (3 + partition % 7) - 1 if committed else None
        assert document[f"p{partition}"] == expected
    assert document["lag_total"] == sum((3 + p % 7) - 1 for p in range(0, 18, 3))


@pytest.fixture
def active_member(stack: Stack, unique_name: str) -> Iterator[tuple[str, str]]:
    """A live consumer that owns all 4 partitions but has committed on partition 0 only."""
    topic, group = f"active-{unique_name}", f"active-group-{unique_name}"
    create_topic(stack.source_bootstrap, topic, 4)
    produce(stack.source_bootstrap, topic, {p: 5 for p in range(4)})
    consumer = Consumer({"bootstrap.servers": stack.source_bootstrap, "group.id": group,
                         "enable.auto.commit": False, "auto.offset.reset": "latest"})
    assigned = threading.Event()
    stop = threading.Event()

    def on_assign(c: Consumer, partitions: list[TopicPartition]) -> None:
        assigned.set()

    consumer.subscribe([topic], on_assign=on_assign)

    def poll() -> None:
        while not stop.is_set():
            consumer.poll(0.2)

    while not assigned.is_set():
        consumer.poll(0.2)
    consumer.commit(offsets=[TopicPartition(topic, 0, 2)], asynchronous=False)
    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    yield topic, group
    stop.set()
    poller.join()
    consumer.close()


def test_assigned_partitions_without_commit_show_dash_like_the_tool(
    stack: Stack, active_member: tuple[str, str]
) -> None:
    topic, group = active_member
    ours = snapshot_rows(stack, group)
    theirs = describe_group(stack, group)
    assert lags_by_partition(ours) == lags_by_partition(theirs) == {
        (topic, 0): 3, (topic, 1): None, (topic, 2): None, (topic, 3): None}
