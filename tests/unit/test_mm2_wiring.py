"""MirrorMaker 2 without Kafka: the --mm2-* flags, and a mirror answered as a memberless group
next to the cluster's own groups (the offsets topic itself is read in tests/integration)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from click.testing import CliRunner, Result
from test_sampler import FakeKafka

from lag_exporter.cli import _Cli, cli, resolve_config
from lag_exporter.errors import SourceError
from lag_exporter.mm2 import MirrorSettings
from lag_exporter.mm2_follower import MIRROR_STATE, MirroredSource, OffsetsTopicFollower
from lag_exporter.model import GroupOffsets, TopicPartition
from lag_exporter.sampler import Sampler

TP = TopicPartition


@pytest.fixture(autouse=True)
def keep_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level
    _Cli.debug = False


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def params(**given: Any) -> dict[str, Any]:
    """What click hands resolve_config for `snapshot` with only `given` set."""
    names = ["config", "bootstrap_server", "command_config", "cluster_name", "groups", "topics",
             "timeout_s", "es_urls", "es_index", "es_username", "es_ca_file",
             "mm2_target_bootstrap_server", "mm2_target_command_config", "mm2_source_alias",
             "mm2_target_alias", "mm2_offsets_topic", "mm2_connector", "mm2_label",
             "mm2_topic_patterns", "mm2_exclude_topics"]
    values: dict[str, Any] = {name: None for name in names}
    values.update(groups=(), topics=(), es_urls=(), mm2_topic_patterns=(),
                  mm2_exclude_topics=())
    values.update(given)
    return values


def test_one_mirror_from_flags_with_the_dedicated_mode_defaults() -> None:
    config = resolve_config(params(bootstrap_server="src:9092",
                                   mm2_target_bootstrap_server="dst:9092"))
    cluster, = config.clusters
    mirror, = cluster.mirrors
    assert mirror.label == "mm2:source->target"
    assert mirror.offsets_topic == "mm2-offsets.source.internal"
    assert mirror.connector == "MirrorSourceConnector"
    assert mirror.target_bootstrap == "dst:9092"
    assert mirror.replicated_topic("orders") == "source.orders"
    assert cluster.groups.select() == ["mm2:source->target"]  # --group may be omitted
    assert mirror.topics.allows("anything")


def test_every_mirror_flag_is_used() -> None:
    config = resolve_config(params(
        bootstrap_server="src:9092", groups=("oasis-group",),
        mm2_target_bootstrap_server="dst:9092", mm2_source_alias="dc1", mm2_target_alias="dc2",
        mm2_connector="dc1-mirror", mm2_topic_patterns=("oasis\\..*",),
        mm2_exclude_topics=("oasis\\.tmp.*",)))
    cluster, = config.clusters
    mirror, = cluster.mirrors
    assert (mirror.label, mirror.offsets_topic, mirror.connector) == (
        "mm2:dc1->dc2", "mm2-offsets.dc1.internal", "dc1-mirror")
    assert cluster.groups.select() == ["oasis-group", "mm2:dc1->dc2"]
    assert [mirror.topics.allows(t) for t in ("oasis.a", "oasis.tmp1", "xoasis.a")] == [
        True, False, False]
    named = resolve_config(params(bootstrap_server="s:1", mm2_target_bootstrap_server="d:1",
                                  mm2_label="eu-mirror", mm2_offsets_topic="connect-offsets"))
    assert (named.clusters[0].mirrors[0].label,
            named.clusters[0].mirrors[0].offsets_topic) == ("eu-mirror", "connect-offsets")


def test_no_mirror_without_flags() -> None:
    config = resolve_config(params(bootstrap_server="src:9092", groups=("g",)))
    assert config.clusters[0].mirrors == ()


@pytest.mark.parametrize(("args", "message"), [
    (("--mm2-label", "x"), "--mm2-label needs --mm2-target-bootstrap-server (the cluster "
                           "where MirrorMaker 2's offsets topic is)"),
    (("--mm2-target-bootstrap-server", "d:1", "--mm2-topic-pattern", "("),
     "--mm2-topic-pattern: invalid regex '(': missing ), unterminated subpattern at position 0"),
    (("--mm2-target-bootstrap-server", "d:1", "--mm2-source-alias", ""),
     "--mm2-source-alias must not be empty"),
    (("--mm2-target-bootstrap-server", "d:1", "--group", "m", "--mm2-label", "m"),
     "--mm2-label 'm' is also a --group: give the mirror another label"),
    (("--mm2-target-command-config", "/dev/null"),
     "no MirrorMaker 2 target cluster given: pass --mm2-target-bootstrap-server (or set "
     "bootstrap.servers in the --mm2-target-command-config file)"),
    ((), "give --group (repeatable) or --config"),
])
def test_bad_mirror_flags_are_one_line_and_exit_2(args: tuple[str, ...], message: str) -> None:
    done = run("snapshot", "--bootstrap-server", "127.0.0.1:1", *args)
    assert done.exit_code == 2, done.output
    assert done.stderr == f"lag-exporter: error: {message}\n"


def test_mirror_flags_are_cluster_flags(tmp_path: Any) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[[cluster]]\nname = "a"\nbootstrap_servers = "x:1"\ngroups = ["g"]\n')
    done = run("snapshot", "--config", str(config), "--mm2-target-bootstrap-server", "d:1",
               "--mm2-target-alias", "b", "--mm2-topic-pattern", "x")
    assert done.exit_code == 2, done.output
    assert done.stderr == ("lag-exporter: error: --mm2-target-bootstrap-server, "
                           "--mm2-target-alias, --mm2-topic-pattern cannot be combined with "
                           "--config: describe the clusters in the config file\n")


class StoredFollower(OffsetsTopicFollower):
    """A follower whose positions are given, not read (its reading is tested on the stack)."""

    def __init__(self, label: str, answer: GroupOffsets | SourceError) -> None:
        super().__init__(MirrorSettings(label, {"bootstrap.servers": "d:1"}), 1.0)
        self.answer = answer
        self.closed = False

    def group_offsets(self) -> GroupOffsets | SourceError:
        return self.answer

    def close(self) -> None:
        self.closed = True


def test_a_mirror_is_a_memberless_group_next_to_the_clusters_groups() -> None:
    kafka = FakeKafka()
    kafka.committed["g"] = GroupOffsets("g", {TP("t", 0): 10})
    kafka.members["g"] = ("STABLE", frozenset({TP("t", 0)}))
    kafka.watermarks = {TP("t", 0): 15, TP("mm2.a", 0): 50, TP("mm2.a", 1): 7}
    follower = StoredFollower("mm2:source->target", GroupOffsets(
        "mm2:source->target", {TP("mm2.a", 0): 41, TP("mm2.a", 1): 7}))
    source = MirroredSource(kafka, [follower])
    sample = Sampler(source, ["g", "mm2:source->target"]).sample(datetime(2026, 1, 1, tzinfo=UTC))
    group, mirror = sample.groups
    assert group.group == "g" and [p.lag for p in group.partitions] == [5]
    assert mirror.group == "mm2:source->target" and mirror.state == MIRROR_STATE
    assert [(p.topic, p.partition, p.committed_offset, p.high_watermark, p.lag)
            for p in mirror.partitions] == [("mm2.a", 0, 41, 50, 9), ("mm2.a", 1, 7, 7, 0)]
    # the cluster is asked only about its own groups
    assert kafka.described == [["g"]]
    assert source.group_members(["mm2:source->target"]) == {
        "mm2:source->target": (MIRROR_STATE, frozenset())}
    source.close()
    assert follower.closed and "close" in kafka.calls


def test_an_unreadable_mirror_fails_alone() -> None:
    kafka = FakeKafka()
    kafka.committed["g"] = GroupOffsets("g", {TP("t", 0): 10})
    kafka.watermarks = {TP("t", 0): 15}
    follower = StoredFollower("m", SourceError("unknown offsets topic x on d:1"))
    sample = Sampler(MirroredSource(kafka, [follower]), ["g", "m"]).sample(
        datetime(2026, 1, 1, tzinfo=UTC))
    group, mirror = sample.groups
    assert group.error is None and mirror.error == "unknown offsets topic x on d:1"


def test_only_mirrors_do_not_ask_the_cluster_for_groups() -> None:
    kafka = FakeKafka()
    kafka.watermarks = {TP("a", 0): 3}
    source = MirroredSource(kafka, [StoredFollower("m", GroupOffsets("m", {TP("a", 0): 1}))])
    assert source.committed_offsets(["m"]) == {"m": GroupOffsets("m", {TP("a", 0): 1})}
    assert kafka.calls == []
