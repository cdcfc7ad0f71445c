"""The committed offsets followed in `__consumer_offsets` (commit_follower.py) against the real
Kafka 4.1 broker of the stack: parity with `kafka-consumer-groups --describe` on every partition,
classic and consumer-protocol groups, transactional commits (committed and aborted), deleted
offsets and groups, a fresh commit, the first read, and the fallbacks. Both brokers of the stack
run Kafka 4.1, so the Kafka 3.9 case starts a private single-node 3.9 broker (the stack's 3.9
jars, the ones MirrorMaker 1 runs on) for the module, and stops it."""

from __future__ import annotations

import logging
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka import TopicPartition as KafkaTopicPartition
from helpers import (
    commit,
    create_topic,
    describe_group,
    lags_by_partition,
    parse_table,
    produce,
    wait_for,
    wait_until_kafka_serves,
)

from lag_exporter.commit_follower import (
    CommitFollower,
    FollowedSource,
    describe_offsets_source,
    follower_state,
)
from lag_exporter.errors import SourceError
from lag_exporter.kafka_source import KafkaSource
from lag_exporter.mm2_follower import MirroredSource
from lag_exporter.model import GroupOffsets, TopicPartition
from lag_exporter.offsets_topic import GROUP_METADATA, GROUP_PROTOCOL_RECORD
from lag_exporter.sampler import Sampler
from stack import stackctl
from stack.stackctl import Stack

pytestmark = pytest.mark.integration


@pytest.fixture
def followed(stack: Stack) -> Iterator[FollowedSource]:
    settings = {"bootstrap.servers": stack.source_bootstrap}
    source = FollowedSource(KafkaSource("source", settings, 10.0),
                            CommitFollower("source", settings, 10.0), mode="topic")
    yield source
    source.close()


def offsets(answer: GroupOffsets | SourceError) -> dict[TopicPartition, int]:
    assert isinstance(answer, GroupOffsets), answer
    return answer.committed_offsets


def caught_up(source: FollowedSource, groups: list[str]) -> dict[str, dict[TopicPartition, int]]:
    """Committed offsets once the follower answers every group (after its first read)."""
    answers: dict[str, GroupOffsets | SourceError] = {}

    def all_from_topic() -> bool:
        answers.update(source.committed_offsets(groups))
        return source.topic_groups == len(groups)

    wait_for(all_from_topic, 30, "the follower to read __consumer_offsets", poll_s=0.1)
    return {group: offsets(answers[group]) for group in groups}


def members_now(source: FollowedSource, group: str
                ) -> tuple[str, frozenset[TopicPartition]] | SourceError:
    """One sample's view of the group's members: committed offsets first (the follower is
    brought up to the partitions' ends), then the description (reused while unchanged)."""
    source.committed_offsets([group])
    return source.group_members([group])[group]


def described(stack: Stack, group: str) -> dict[TopicPartition, int]:
    """CURRENT-OFFSET of every partition kafka-consumer-groups shows with a commit."""
    return {TopicPartition(row.topic, row.partition): row.current_offset
            for row in describe_group(stack, group) if row.current_offset is not None}


def test_parity_with_kafka_consumer_groups(stack: Stack, followed: FollowedSource,
                                           unique_name: str) -> None:
    u = unique_name
    topics = {f"{u}.a": 6, f"{u}.b": 3, f"{u}.empty": 2}
    for topic, partitions in topics.items():
        create_topic(stack.source_bootstrap, topic, partitions)
        if topic != f"{u}.empty":
            produce(stack.source_bootstrap, topic, {p: 5 + p for p in range(partitions)})
    groups = [f"{u}-memberless", f"{u}-partial", f"{u}-beyond", f"{u}-classic",
              f"{u}-consumer-protocol", f"{u}-never"]
    commit(stack.source_bootstrap, groups[0],
           {(t, p): p for t, n in topics.items() if t != f"{u}.empty" for p in range(n)})
    commit(stack.source_bootstrap, groups[1], {(f"{u}.a", 1): 2, (f"{u}.empty", 0): 0})
    commit(stack.source_bootstrap, groups[2], {(f"{u}.b", 0): 1000, (f"{u}.empty", 1): 7})
    members = []
    for group, protocol in ((groups[3], "classic"), (groups[4], "consumer")):
        consumer = Consumer({"bootstrap.servers": stack.source_bootstrap, "group.id": group,
                             "group.protocol": protocol, "auto.offset.reset": "earliest",
                             "enable.auto.commit": False})
        consumer.subscribe([f"{u}.a"])
        read = 0
        deadline = time.monotonic() + 30
        while read < sum(5 + p for p in range(6)) and time.monotonic() < deadline:
            read += sum(1 for m in consumer.consume(100, 0.2) if m.error() is None)
        consumer.commit(asynchronous=False)
        members.append(consumer)
    try:
        followed.committed_offsets(groups)  # opens the follower
        got = caught_up(followed, groups)
        for group in groups[:-1]:  # kafka-consumer-groups fails on a group that never was
            assert got[group] == described(stack, group), group
        assert got[groups[4]] == {TopicPartition(f"{u}.a", p): 5 + p for p in range(6)}
        assert got[groups[5]] == {}
        assert got[groups[2]][TopicPartition(f"{u}.b", 0)] == 1000
        assert followed.path == "topic"
        # The lags a sample computes through the follower: kafka-consumer-groups' LAG column
        # (a commit beyond the end is lag 0 here, negative there).
        sampled = Sampler(followed, groups[:-1]).sample()
        assert followed.topic_groups == len(groups) - 1
        for group_lag in sampled.groups:
            assert group_lag.error is None, group_lag
            expected = {tp: lag if lag is None else max(0, lag) for tp, lag in
                        lags_by_partition(describe_group(stack, group_lag.group)).items()}
            assert {(p.topic, p.partition): p.lag for p in group_lag.partitions} == expected, \
                group_lag.group
        # Kafka 4's consumer protocol writes its own records next to the commits: skipped.
        assert followed.follower.store.skipped[GROUP_PROTOCOL_RECORD] > 0
    finally:
        for consumer in members:
            consumer.close()


def test_a_commit_is_in_the_next_answer_and_a_rare_one_stays(
        stack: Stack, followed: FollowedSource, unique_name: str) -> None:
    topic, group, rare = f"{unique_name}.t", f"{unique_name}-g", f"{unique_name}-rare"
    create_topic(stack.source_bootstrap, topic, 1)
    produce(stack.source_bootstrap, topic, {0: 50})
    commit(stack.source_bootstrap, rare, {(topic, 0): 3})  # as MirrorMaker 1 every 60 s
    commit(stack.source_bootstrap, group, {(topic, 0): 1})
    caught_up(followed, [group, rare])
    consumer = Consumer({"bootstrap.servers": stack.source_bootstrap, "group.id": group,
                         "enable.auto.commit": False})
    try:
        for offset in range(2, 12):
            consumer.commit(offsets=[KafkaTopicPartition(topic, 0, offset)], asynchronous=False)
            started = time.monotonic()
            answer = followed.committed_offsets([group, rare])
            assert time.monotonic() - started < 1.0
            assert offsets(answer[group]) == {TopicPartition(topic, 0): offset}
            assert offsets(answer[rare]) == {TopicPartition(topic, 0): 3}
            assert followed.admin_groups == 0
    finally:
        consumer.close()
    history = followed.commit_history(group, TopicPartition(topic, 0))
    assert [offset for offset, _ in history] == [8, 9, 10, 11]
    assert all(abs(at - time.time()) < 60 for _, at in history)


def test_transactional_commits_count_once_committed(stack: Stack, followed: FollowedSource,
                                                    unique_name: str) -> None:
    topic, group = f"{unique_name}.t", f"{unique_name}-streams"
    create_topic(stack.source_bootstrap, topic, 2)
    produce(stack.source_bootstrap, topic, {0: 20, 1: 20})
    commit(stack.source_bootstrap, group, {(topic, 0): 1, (topic, 1): 1})
    caught_up(followed, [group])
    consumer = Consumer({"bootstrap.servers": stack.source_bootstrap, "group.id": group,
                         "enable.auto.commit": False})
    producer = Producer({"bootstrap.servers": stack.source_bootstrap,
                         "transactional.id": f"{unique_name}-tx"})
    try:
        producer.init_transactions(30)
        metadata = consumer.consumer_group_metadata()
        for offset, keep in ((5, True), (9, False), (12, True)):
            producer.begin_transaction()
            producer.produce(topic, b"output", partition=1)
            producer.send_offsets_to_transaction(
                [KafkaTopicPartition(topic, 0, offset)], metadata, 30)
            if keep:
                producer.commit_transaction(30)
            else:
                producer.abort_transaction(30)
            answer = followed.committed_offsets([group])
            expected = 12 if offset == 12 else 5
            assert offsets(answer[group])[TopicPartition(topic, 0)] == expected
            assert followed.admin_groups == 0  # read past the markers, not asked again
        assert described(stack, group)[TopicPartition(topic, 0)] == 12
    finally:
        producer.flush(10)
        consumer.close()


def test_deleted_offsets_and_groups_are_tombstoned(stack: Stack, followed: FollowedSource,
                                                   unique_name: str) -> None:
    a, b, group = f"{unique_name}.a", f"{unique_name}.b", f"{unique_name}-g"
    for topic in (a, b):
        create_topic(stack.source_bootstrap, topic, 2)
    commit(stack.source_bootstrap, group, {(a, 0): 0, (a, 1): 0, (b, 0): 0})
    assert caught_up(followed, [group])[group] == {
        TopicPartition(a, 0): 0, TopicPartition(a, 1): 0, TopicPartition(b, 0): 0}
    done = stack.run_tool("kafka-consumer-groups", "--bootstrap-server", stack.source_bootstrap,
                          "--delete-offsets", "--group", group, "--topic", a)
    assert done.returncode == 0, done.stderr
    assert offsets(followed.committed_offsets([group])[group]) == {TopicPartition(b, 0): 0}
    done = stack.run_tool("kafka-consumer-groups", "--bootstrap-server", stack.source_bootstrap,
                          "--delete", "--group", group)
    assert done.returncode == 0, done.stderr
    assert offsets(followed.committed_offsets([group])[group]) == {}
    assert followed.admin_groups == 0
    assert followed.follower.store.tombstones >= 3


def test_first_read_asks_the_admin_api_and_says_so(stack: Stack, unique_name: str) -> None:
    settings = {"bootstrap.servers": stack.source_bootstrap}
    topic, group = f"{unique_name}.t", f"{unique_name}-g"
    create_topic(stack.source_bootstrap, topic, 1)
    commit(stack.source_bootstrap, group, {(topic, 0): 0})
    source = FollowedSource(KafkaSource("source", settings, 10.0),
                            CommitFollower("source", settings, 10.0))
    try:
        first = source.committed_offsets([group])  # the follower has read nothing yet
        assert (source.topic_groups, source.admin_groups) == (0, 1)
        assert source.behind_partitions == 1
        assert offsets(first[group]) == {TopicPartition(topic, 0): 0}
        assert caught_up(source, [group])[group] == {TopicPartition(topic, 0): 0}
        assert source.path == "topic"
        assert "__consumer_offsets on 127.0.0.1" in source.describe()
        state = follower_state(MirroredSource(source, []))  # found inside a mirror's wrapper
        assert (state.cluster, state.path, state.topic_groups, state.admin_groups) == (
            "source", "topic", 1, 0)
        assert state.records > 0
    finally:
        source.close()


def test_auto_falls_back_to_the_admin_api_when_the_topic_cannot_be_read(
        stack: Stack, unique_name: str, caplog: pytest.LogCaptureFixture) -> None:
    settings = {"bootstrap.servers": stack.source_bootstrap}
    topic, group = f"{unique_name}.t", f"{unique_name}-g"
    create_topic(stack.source_bootstrap, topic, 1)
    commit(stack.source_bootstrap, group, {(topic, 0): 0})
    # No readable offsets topic here: a name that does not exist stands in for a denied one.
    missing = f"{unique_name}-no-offsets-topic"
    auto = FollowedSource(KafkaSource("source", settings, 10.0),
                          CommitFollower("source", settings, 10.0, topic=missing))
    forced = FollowedSource(KafkaSource("source", settings, 10.0),
                            CommitFollower("source", settings, 10.0, topic=missing), mode="topic")
    try:
        with caplog.at_level(logging.INFO, logger="lag_exporter.commit_follower"):
            for _ in range(3):
                assert offsets(auto.committed_offsets([group])[group]) == {
                    TopicPartition(topic, 0): 0}
        assert auto.path == "admin" and auto.admin_groups == 1
        assert follower_state(auto).path == "admin"
        assert "through the Admin API" in auto.describe()
        said = [r.getMessage() for r in caplog.records if "Admin API" in r.getMessage()]
        assert len(said) == 1 and missing in said[0], said
        failed = forced.committed_offsets([group])[group]
        assert isinstance(failed, SourceError)
        assert missing in str(failed) and "Describe and Read" in str(failed)
        line, ok = describe_offsets_source("source", settings, 5.0, "auto", topic=missing)
        assert ok and line.startswith("  committed offsets: Admin API") and missing in line
        line, ok = describe_offsets_source("source", settings, 5.0, "topic", topic=missing)
        assert not ok and "UNREADABLE" in line and "Describe and Read" in line
        line, ok = describe_offsets_source("source", settings, 5.0, "auto")
        assert ok and line.startswith("  committed offsets: followed in __consumer_offsets")
        assert describe_offsets_source("source", settings, 5.0, "admin") == (
            "  committed offsets: Admin API, one OffsetFetch per group (offsets_source = admin)",
            True)
    finally:
        auto.close()
        forced.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def kafka39(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private Kafka 3.9.1 broker (KRaft, one node, 5 offsets partitions); its bootstrap."""
    home: Path = tmp_path_factory.mktemp("kafka39")
    port, controller = free_port(), free_port()
    properties = home / "server.properties"
    properties.write_text(f"""\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={home / "data"}
offsets.topic.replication.factor=1
offsets.topic.num.partitions=5
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
""")
    subprocess.run(stackctl.kafka_java("kafka39", ["-Xmx128m"], "kafka.tools.StorageTool",
                                       "format", "-t", stackctl.new_cluster_id(),
                                       "-c", str(properties)),
                   check=True, capture_output=True, timeout=120)
    with (home / "broker.log").open("wb") as broker_log:
        broker = subprocess.Popen(stackctl.kafka_java("kafka39", ["-Xmx256m"], "kafka.Kafka",
                                                      str(properties)),
                                  stdout=broker_log, stderr=subprocess.STDOUT)
    try:
        bootstrap = f"127.0.0.1:{port}"
        wait_until_kafka_serves(bootstrap, 90)
        yield bootstrap
    finally:
        broker.terminate()
        try:
            broker.wait(30)
        except subprocess.TimeoutExpired:
            broker.kill()
            broker.wait(10)


def test_kafka_3_9_commits_parity_transactions_and_tombstones(
        stack: Stack, kafka39: str, unique_name: str) -> None:
    topic, plain, streams = f"{unique_name}.t", f"{unique_name}-plain", f"{unique_name}-streams"
    create_topic(kafka39, topic, 3)
    produce(kafka39, topic, {0: 10, 1: 10, 2: 10})
    commit(kafka39, plain, {(topic, 0): 4, (topic, 1): 10, (topic, 2): 0})
    settings = {"bootstrap.servers": kafka39}
    source = FollowedSource(KafkaSource("k39", settings, 10.0),
                            CommitFollower("k39", settings, 10.0), mode="topic")
    consumer = Consumer({"bootstrap.servers": kafka39, "group.id": streams,
                         "enable.auto.commit": False})
    producer = Producer({"bootstrap.servers": kafka39, "transactional.id": f"{unique_name}-tx"})
    try:
        source.committed_offsets([plain])
        caught_up(source, [plain, streams])
        producer.init_transactions(30)
        for offset, keep in ((6, True), (8, False)):
            producer.begin_transaction()
            producer.send_offsets_to_transaction([KafkaTopicPartition(topic, 0, offset)],
                                                 consumer.consumer_group_metadata(), 30)
            if keep:
                producer.commit_transaction(30)
            else:
                producer.abort_transaction(30)
        done = stack.run_tool("kafka-consumer-groups", "--bootstrap-server", kafka39,
                              "--delete-offsets", "--group", plain, "--topic", f"{topic}:2")
        assert done.returncode == 0, done.stderr
        # Answered from the topic (on a loaded machine the follower may need more than one
        # sample's 0.5 s to read the new records; until then the Admin API would answer).
        answer = caught_up(source, [plain, streams])
        for group in (plain, streams):
            done = stack.run_tool("kafka-consumer-groups", "--bootstrap-server", kafka39,
                                  "--describe", "--group", group)
            assert done.returncode == 0, done.stderr
            rows = [row for row in parse_table(done.stdout.strip()) if row.group == group]
            assert answer[group] == {TopicPartition(r.topic, r.partition): r.current_offset
                                     for r in rows if r.current_offset is not None}
        assert answer[streams] == {TopicPartition(topic, 0): 6}
        assert answer[plain] == {TopicPartition(topic, 0): 4, TopicPartition(topic, 1): 10}
        # Kafka 3.9's coordinator writes value version 3 (4.1 writes the flexible version 4).
        assert set(source.follower.store.value_versions) == {3}
        assert source.follower.store.tombstones >= 1
        # A classic member joining and leaving: group metadata records (key version 2, the
        # group id first) make the next description ask Kafka (commit_follower.py).
        store = source.follower.store
        before = store.membership_seen(plain)
        assert members_now(source, plain) == ("EMPTY", frozenset())
        member = Consumer({"bootstrap.servers": kafka39, "group.id": plain,
                           "enable.auto.commit": False})
        try:
            member.subscribe([topic])
            everything = frozenset(TopicPartition(topic, p) for p in range(3))

            def joined() -> bool:
                member.poll(0.05)
                return members_now(source, plain) == ("STABLE", everything)

            wait_for(joined, 30, "the member to show", poll_s=0.1)
            assert store.membership_seen(plain) > before
            before = store.membership_seen(plain)
        finally:
            member.close()
        wait_for(lambda: members_now(source, plain) == ("EMPTY", frozenset()), 30,
                 "the member to leave", poll_s=0.1)
        assert store.membership_seen(plain) > before
        assert store.skipped[GROUP_METADATA] >= 2
    finally:
        producer.flush(10)
        consumer.close()
        source.close()
