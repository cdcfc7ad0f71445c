"""MirrorMaker 2's replication policies: the name a source topic gets on the target under
DefaultReplicationPolicy (with any `replication.policy.separator`) and IdentityReplicationPolicy,
from the config file to check-config's line. Only names change: lag is computed from the source
topic's high watermark either way."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lag_exporter.config import load_config
from lag_exporter.errors import ConfigError, SourceError
from lag_exporter.mm2 import (
    HEARTBEATS_TOPIC,
    MirrorPositions,
    MirrorSettings,
    ReplicationPolicy,
    replicated_topic,
)
from lag_exporter.model import GroupOffsets, TopicPartition
from lag_exporter.plan import mirror_answer_line

# Kafka's legal topic characters
names = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABC0123456789._-", min_size=1, max_size=30)


@pytest.mark.parametrize(("policy", "separator", "topic", "expected"), [
    ("default", ".", "oasis.demo", "dc1.oasis.demo"),
    ("default", "_", "oasis.demo", "dc1_oasis.demo"),
    ("default", "--", "orders", "dc1--orders"),
    ("identity", ".", "oasis.demo", "oasis.demo"),
    ("identity", "_", "oasis.demo", "oasis.demo"),
    # IdentityReplicationPolicy defers to the default policy for heartbeat topics
    ("identity", ".", "heartbeats", "dc1.heartbeats"),
    ("identity", "_", "dc0.heartbeats", "dc1_dc0.heartbeats"),
])
def test_the_replicated_name_as_mirrormaker_2_formats_it(
        policy: ReplicationPolicy, separator: str, topic: str, expected: str) -> None:
    mirror = MirrorSettings("m", {}, source_alias="dc1", replication_policy=policy,
                            replication_separator=separator)
    assert mirror.replicated_topic(topic) == expected


@given(alias=names, separator=names, topic=names)
def test_the_default_policy_prefixes_the_alias_and_separator(
        alias: str, separator: str, topic: str) -> None:
    name = replicated_topic(topic, alias, "default", separator)
    assert name.startswith(alias + separator) and name.endswith(topic)
    assert len(name) == len(alias) + len(separator) + len(topic)
    # the separator is the default one unless given
    assert replicated_topic(topic, alias) == f"{alias}.{topic}"


@given(alias=names, separator=names, topic=names)
def test_the_identity_policy_keeps_every_name_but_heartbeats(
        alias: str, separator: str, topic: str) -> None:
    name = replicated_topic(topic, alias, "identity", separator)
    if topic.endswith(HEARTBEATS_TOPIC):
        assert name == replicated_topic(topic, alias, "default", separator)
    else:
        assert name == topic


def write(tmp_path: Path, mirror_lines: str) -> Path:
    path = tmp_path / "lag-exporter.toml"
    path.write_text('[[cluster]]\nname = "a"\nbootstrap_servers = "k:1"\n'
                    '[[cluster.mirror]]\ntarget_bootstrap_servers = "t:1"\nsource_alias = "dc1"\n'
                    + mirror_lines)
    return path


def test_the_policy_and_separator_from_the_config_file(tmp_path: Path) -> None:
    identity, = load_config(write(tmp_path, 'replication_policy = "identity"\n')
                            ).clusters[0].mirrors
    assert identity.replicated_topic("oasis.demo") == "oasis.demo"
    separated, = load_config(write(tmp_path, 'replication_policy = "default"\n'
                                             'replication_policy_separator = "_"\n')
                             ).clusters[0].mirrors
    assert separated.replicated_topic("oasis.demo") == "dc1_oasis.demo"
    default, = load_config(write(tmp_path, "")).clusters[0].mirrors
    assert (default.replication_policy, default.replication_separator) == ("default", ".")
    assert default.replicated_topic("oasis.demo") == "dc1.oasis.demo"


@pytest.mark.parametrize(("line", "problem"), [
    ('replication_policy = "Identity"\n',
     "cluster[a].mirror[0].replication_policy: must be 'default' (DefaultReplicationPolicy: "
     "<source alias><separator><topic>) or 'identity' (IdentityReplicationPolicy: the source "
     "topic's name), got 'Identity'"),
    ("replication_policy = 1\n",
     "cluster[a].mirror[0].replication_policy: must be a non-empty string, got 1"),
    ('replication_policy_separator = ""\n',
     "cluster[a].mirror[0].replication_policy_separator: must be a non-empty string, got ''"),
    ('replication_policy_separator = "/"\n',
     "cluster[a].mirror[0].replication_policy_separator: must be characters allowed in a "
     "topic name (letters, digits, '.', '_', '-'), got '/'"),
])
def test_a_bad_policy_or_separator_is_one_line(tmp_path: Path, line: str, problem: str) -> None:
    path = write(tmp_path, line)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}: {problem}"


def test_check_config_names_the_replicated_topic_under_the_mirrors_policy() -> None:
    positions = MirrorPositions(source_alias="dc1")
    positions.add(b'["MirrorSourceConnector", {"cluster": "dc1", "partition": 0, '
                  b'"topic": "oasis.a"}]', b'{"offset": 4}')
    answer = GroupOffsets("m", positions.committed_offsets())
    assert answer.committed_offsets == {TopicPartition("oasis.a", 0): 5}

    def line(policy: ReplicationPolicy = "default", separator: str = ".") -> str:
        mirror = MirrorSettings("m", {}, source_alias="dc1", replication_policy=policy,
                                replication_separator=separator)
        text, readable = mirror_answer_line(mirror, "offsets topic x on t:1", positions, answer)
        assert readable
        return text

    expected = ("  mirror m: connector MirrorSourceConnector, source alias dc1, offsets topic x "
                "on t:1: 1 source partition(s) of 1 topic(s): oasis.a (replicated as {}, ... "
                "under {}; 1 records read, none skipped)")
    assert line() == expected.format("dc1.oasis.a", "the default replication policy")
    assert line(separator="_") == expected.format(
        "dc1_oasis.a", "the default replication policy, separator '_'")
    assert line(policy="identity") == expected.format(
        "oasis.a", "the identity replication policy")
    failed, readable = mirror_answer_line(MirrorSettings("m", {}), "w", positions,
                                          SourceError("unknown offsets topic x on t:1"))
    assert not readable and failed == ("  mirror m: connector MirrorSourceConnector, source "
                                       "alias source: cannot read its positions: unknown "
                                       "offsets topic x on t:1")
