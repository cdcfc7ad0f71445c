"""MirrorMaker 2 under IdentityReplicationPolicy (issue 12: "the replicated topic's name ... under
the default replication policy, or the identity policy"), against a real connect-mirror 4.1 that
this test starts next to the stack's own (aliases idsrc -> idtgt, so that its Connect group,
internal topics and offset syncs are its own; the stack's MirrorMaker 2 keeps the default
policy). The replicated topic keeps its name on the target, the positions are stored under the
source topic as with the default policy, and the lag is the SOURCE topic's high watermark -
(stored + 1): while MirrorMaker 2 is stopped, the same-named target topic stays put and the lag
grows by what was produced."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError
from confluent_kafka import TopicPartition as KafkaTopicPartition
from helpers import create_topic, produce, run_exporter, wait_for

from stack.stackctl import Stack, kafka_java

pytestmark = pytest.mark.integration

SOURCE_ALIAS = "idsrc"
TARGET_ALIAS = "idtgt"
OFFSETS_TOPIC = f"mm2-offsets.{SOURCE_ALIAS}.internal"
PARTITIONS = 2


def mm2_properties(stack: Stack, topic: str) -> str:
    return f"""\
clusters={SOURCE_ALIAS},{TARGET_ALIAS}
{SOURCE_ALIAS}.bootstrap.servers={stack.source_bootstrap}
{TARGET_ALIAS}.bootstrap.servers={stack.target_bootstrap}
{SOURCE_ALIAS}->{TARGET_ALIAS}.enabled=true
{SOURCE_ALIAS}->{TARGET_ALIAS}.topics={topic.replace(".", "[.]")}
{TARGET_ALIAS}->{SOURCE_ALIAS}.enabled=false
replication.policy.class=org.apache.kafka.connect.mirror.IdentityReplicationPolicy
emit.heartbeats.enabled=false
emit.checkpoints.enabled=false
sync.group.offsets.enabled=false
sync.topic.acls.enabled=false
replication.factor=1
checkpoints.topic.replication.factor=1
heartbeats.topic.replication.factor=1
offset-syncs.topic.replication.factor=1
offset.storage.replication.factor=1
status.storage.replication.factor=1
config.storage.replication.factor=1
refresh.topics.interval.seconds=2
{TARGET_ALIAS}.offset.flush.interval.ms=1000
plugin.discovery=service_load
"""


class IdentityMirrorMaker:
    """A dedicated-mode MirrorMaker 2 of this test's own: started, stopped (by its pid only)."""

    def __init__(self, stack: Stack, topic: str, directory: Path) -> None:
        self.properties = directory / "mm2-identity.properties"
        self.properties.write_text(mm2_properties(stack, topic))
        self.log = directory / "mm2-identity.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            # C1 only: the JVM's start (Connect's plugin scan) took 36 s instead of 12 s with
            # the full JIT on the loaded 2-core VM; this MirrorMaker lives for seconds
            self.process = subprocess.Popen(
                kafka_java("kafka4", ["-Xms64m", "-Xmx256m", "-XX:TieredStopAtLevel=1"],
                           "org.apache.kafka.connect.mirror.MirrorMaker", str(self.properties)),
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])


@pytest.fixture
def identity_topic(stack: Stack, unique_name: str) -> str:
    topic = f"mm2id.{unique_name}"
    create_topic(stack.source_bootstrap, topic, PARTITIONS)
    return topic


@pytest.fixture
def mirror_maker(stack: Stack, identity_topic: str, tmp_path: Path
                 ) -> Iterator[IdentityMirrorMaker]:
    mm2 = IdentityMirrorMaker(stack, identity_topic, tmp_path)
    try:
        yield mm2
    finally:
        mm2.stop()


def stored_positions(bootstrap: str, topic: str) -> dict[int, int]:
    """The offsets topic read to its end and parsed here: the latest stored offset per
    partition of `topic` under MirrorSourceConnector and the source alias."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "test-mm2-identity-raw",
                         "enable.auto.commit": False, "enable.partition.eof": True})
    try:
        described = consumer.list_topics(OFFSETS_TOPIC, timeout=10).topics[OFFSETS_TOPIC]
        if described.error is not None:
            return {}
        not_at_end = set(described.partitions)
        consumer.assign([KafkaTopicPartition(OFFSETS_TOPIC, p, OFFSET_BEGINNING)
                         for p in not_at_end])
        stored: dict[int, int] = {}
        deadline = time.monotonic() + 30
        while not_at_end:
            assert time.monotonic() < deadline, "offsets topic not read to its end in 30 s"
            message = consumer.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                assert error.code() == KafkaError._PARTITION_EOF, error
                not_at_end.discard(message.partition())
                continue
            key, value = json.loads(message.key() or b"null"), message.value()
            if (isinstance(key, list) and key[0] == "MirrorSourceConnector"
                    and key[1].get("cluster") == SOURCE_ALIAS and key[1].get("topic") == topic
                    and value is not None):
                stored[key[1]["partition"]] = json.loads(value)["offset"]
        return stored
    finally:
        consumer.close()


def end_offsets(bootstrap: str, topic: str) -> dict[int, int] | None:
    """High watermarks per partition, None if the topic does not exist (yet)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "test-mm2-identity-raw"})
    try:
        if topic not in consumer.list_topics(timeout=10).topics:
            return None
        return {p: consumer.get_watermark_offsets(KafkaTopicPartition(topic, p), timeout=10)[1]
                for p in range(PARTITIONS)}
    finally:
        consumer.close()


def topic_names(bootstrap: str) -> set[str]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "test-mm2-identity-raw"})
    try:
        return set(consumer.list_topics(timeout=10).topics)
    finally:
        consumer.close()


def snapshot_lags(config: Path, topic: str) -> dict[int, int]:
    done = run_exporter("snapshot", "--config", str(config), "--format", "tsv")
    assert done.returncode == 0, done.stderr
    rows = [line.split("\t") for line in done.stdout.splitlines()[1:]]
    return {int(row[2]): int(row[5]) for row in rows if row[0] == "id-mirror" and row[1] == topic}


def test_identity_policy_keeps_the_name_and_lag_comes_from_the_source_topic(
        stack: Stack, identity_topic: str, mirror_maker: IdentityMirrorMaker,
        tmp_path: Path) -> None:
    topic = identity_topic
    produce(stack.source_bootstrap, topic, {0: 10, 1: 15})
    began = time.monotonic()
    mirror_maker.start()
    copied = {0: 10, 1: 15}
    try:
        wait_for(lambda: end_offsets(stack.target_bootstrap, topic) == copied
                 and stored_positions(stack.target_bootstrap, topic) == {0: 9, 1: 14},
                 90, "the identity MirrorMaker 2 to copy the topic under its own name and "
                     "store its positions")
    except AssertionError:
        raise AssertionError(mirror_maker.tail()) from None
    print(f"identity MM2 copied the topic after {time.monotonic() - began:.1f} s")
    # the default policy's name was never created
    assert f"{SOURCE_ALIAS}.{topic}" not in topic_names(stack.target_bootstrap)

    config = tmp_path / "identity.toml"
    config.write_text(f"""
[[cluster]]
name = "src"
bootstrap_servers = "{stack.source_bootstrap}"
[[cluster.mirror]]
label = "id-mirror"
target_bootstrap_servers = "{stack.target_bootstrap}"
source_alias = "{SOURCE_ALIAS}"
target_alias = "{TARGET_ALIAS}"
replication_policy = "identity"
topic_patterns = ["{topic.replace(".", "[.]")}"]
""")
    plan = run_exporter("check-config", "--config", str(config))
    assert plan.returncode == 0, plan.stderr
    assert (f"  mirror id-mirror: connector MirrorSourceConnector, source alias {SOURCE_ALIAS}, "
            f"offsets topic {OFFSETS_TOPIC} on {stack.target_bootstrap}: {PARTITIONS} source "
            f"partition(s) of 1 topic(s): {topic} (replicated as {topic}, ... under the "
            "identity replication policy;") in plan.stdout, plan.stdout
    assert snapshot_lags(config, topic) == {0: 0, 1: 0}

    # stopped while the source grows: the same-named target topic stays put, the lag is the
    # source's high watermark - (stored + 1)
    mirror_maker.stop()
    produce(stack.source_bootstrap, topic, {0: 7, 1: 3})
    assert end_offsets(stack.target_bootstrap, topic) == copied
    assert end_offsets(stack.source_bootstrap, topic) == {0: 17, 1: 18}
    assert stored_positions(stack.target_bootstrap, topic) == {0: 9, 1: 14}
    assert snapshot_lags(config, topic) == {0: 7, 1: 3}
    print(f"done after {time.monotonic() - began:.1f} s")
