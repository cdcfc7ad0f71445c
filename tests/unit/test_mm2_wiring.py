"""MirrorMaker 2 without Kafka: the --mm2-* flags, and a mirror answered as a memberless group
next to the cluster's own groups (the offsets topic itself is read in tests/integration)."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_cli import keep_logging, run  # noqa: F401 (keep_logging: an autouse fixture)
from test_config_file import toml_document, toml_values
from test_sampler import FakeKafka

from lag_exporter.app import source_factory
from lag_exporter.cli import resolve_config
from lag_exporter.commit_follower import FollowedSource
from lag_exporter.config import MIRROR_KEYS, load_config
from lag_exporter.errors import ConfigError, SourceError
from lag_exporter.fleet import same_connection
from lag_exporter.mm2 import MirrorSettings
from lag_exporter.mm2_follower import MIRROR_STATE, MirroredSource, OffsetsTopicFollower
from lag_exporter.model import GroupOffsets, TopicPartition
from lag_exporter.sampler import Sampler

TP = TopicPartition




def params(**given: Any) -> dict[str, Any]:
    """What click hands resolve_config for `snapshot` with only `given` set."""
    names = ["config", "bootstrap_server", "command_config", "cluster_name", "groups", "topics",
             "timeout_s", "es_urls", "es_index", "es_username", "es_ca_file",
             "mm2_target_bootstrap_server", "mm2_target_command_config", "mm2_source_alias",
             "mm2_target_alias", "mm2_offsets_topic", "mm2_connector", "mm2_label",
             "mm2_topic_patterns", "mm2_exclude_topics", "mm2_replication_policy",
             "mm2_replication_policy_separator"]
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
    (("--mm2-target-bootstrap-server", "d:1", "--mm2-replication-policy-separator", "/"),
     "--mm2-replication-policy-separator must be characters allowed in a topic name (letters, "
     "digits, '.', '_', '-'), got '/'"),
    (("--mm2-target-bootstrap-server", "d:1", "--mm2-replication-policy-separator", ""),
     "--mm2-replication-policy-separator must not be empty"),
    (("--mm2-replication-policy", "identity"),
     "--mm2-replication-policy needs --mm2-target-bootstrap-server (the cluster where "
     "MirrorMaker 2's offsets topic is)"),
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


def write_config(tmp_path: Any, text: str) -> Any:
    path = tmp_path / "lag-exporter.toml"
    path.write_text(text)
    return path


def test_mirrors_in_the_config_file(tmp_path: Any) -> None:
    (tmp_path / "dc2.properties").write_text("bootstrap.servers=dc2-kafka:9092\n")
    path = write_config(tmp_path, """
[[cluster]]
name = "dc1"
bootstrap_servers = "dc1-kafka:9092"
groups = ["oasis-group"]

[[cluster.mirror]]
target_command_config = "dc2.properties"
source_alias = "dc1"
target_alias = "dc2"
topic_patterns = ["oasis\\\\..*"]

[[cluster.mirror]]
label = "dc1-connect"
target_bootstrap_servers = "connect-kafka:9092"
offsets_topic = "connect-offsets"
connector = "dc1-source"
exclude_topics = ["tmp.*"]
""")
    cluster, = load_config(path).clusters
    first, second = cluster.mirrors
    assert (first.label, first.target_bootstrap, first.offsets_topic, first.connector) == (
        "mm2:dc1->dc2", "dc2-kafka:9092", "mm2-offsets.dc1.internal", "MirrorSourceConnector")
    assert first.topics.allows("oasis.a") and not first.topics.allows("other")
    assert (second.label, second.target_bootstrap, second.offsets_topic, second.connector) == (
        "dc1-connect", "connect-kafka:9092", "connect-offsets", "dc1-source")
    assert second.topics.allows("oasis.a") and not second.topics.allows("tmp1")
    assert cluster.groups.select() == ["oasis-group", "mm2:dc1->dc2", "dc1-connect"]


def test_a_cluster_with_only_a_mirror_needs_no_group(tmp_path: Any) -> None:
    path = write_config(tmp_path, '[[cluster]]\nname = "a"\nbootstrap_servers = "k:1"\n'
                                  '[[cluster.mirror]]\ntarget_bootstrap_servers = "t:1"\n')
    assert load_config(path).clusters[0].groups.select() == ["mm2:source->target"]


@pytest.mark.parametrize(("text", "problem"), [
    ('[[cluster.mirror]]\nsource_alias = "x"\n',
     "cluster[a].mirror[0].target_bootstrap_servers: missing (or set it in "
     "target_command_config)"),
    ('[[cluster.mirror]]\ntarget_bootstrap_servers = "t:1"\nlabel = ""\n',
     "cluster[a].mirror[0].label: must be a non-empty string, got ''"),
    ('[[cluster.mirror]]\ntarget_bootstrap_servers = "t:1"\ntopic = "x"\n',
     "cluster[a].mirror[0].topic: unknown key (known: connector, exclude_topics, label, "
     "offsets_topic, replication_policy, replication_policy_separator, source_alias, "
     "target_alias, target_bootstrap_servers, target_command_config, topic_patterns)"),
    ('[[cluster.mirror]]\ntarget_bootstrap_servers = "t:1"\ntopic_patterns = ["("]\n',
     "cluster[a].mirror[0].topic_patterns[0]: invalid regex '('"),
    ('[[cluster.mirror]]\ntarget_bootstrap_servers = "t:1"\n'
     '[[cluster.mirror]]\ntarget_bootstrap_servers = "u:1"\n',
     "cluster[a].mirror: label 'mm2:source->target' used twice"),
    ('[[cluster.mirror]]\ntarget_bootstrap_servers = "t:1"\nlabel = "g"\n',
     "cluster[a].mirror: label 'g' is also a group: give another label"),
    ('mirror = "dc2"\n', "cluster[a].mirror: write one [[cluster.mirror]] table per "
                         "MirrorMaker 2 flow, got 'dc2'"),
])
def test_bad_mirrors_in_the_config_file(tmp_path: Any, text: str, problem: str) -> None:
    head = '[[cluster]]\nname = "a"\nbootstrap_servers = "k:1"\ngroups = ["g"]\n'
    if text.startswith("mirror"):
        path = write_config(tmp_path, head.replace('groups = ["g"]\n', text + 'groups = ["g"]\n'))
    else:
        path = write_config(tmp_path, head + text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert f"{path}: {problem}" in str(caught.value)


VALID_MIRROR: dict[str, Any] = {
    "label": "m", "target_bootstrap_servers": "t:9092", "target_command_config": "t.properties",
    "source_alias": "dc1", "target_alias": "dc2", "offsets_topic": "connect-offsets",
    "connector": "c", "topic_patterns": ["o.*"], "exclude_topics": ["__.*"],
    "replication_policy": "identity", "replication_policy_separator": "_"}
assert set(VALID_MIRROR) == MIRROR_KEYS


@settings(max_examples=200, deadline=None, database=None)
@given(key=st.sampled_from(sorted(MIRROR_KEYS)), value=st.one_of(st.just(None), toml_values))
def test_any_value_of_any_mirror_key_is_loaded_or_a_config_error_naming_it(
        tmp_path_factory: pytest.TempPathFactory, key: str, value: object) -> None:
    directory = tmp_path_factory.mktemp("mirror", numbered=True)
    (directory / "t.properties").write_text("client.id=x\n")
    mirror = dict(VALID_MIRROR)
    if value is None:
        del mirror[key]
    else:
        mirror[key] = value
    document = {"cluster": [{"name": "a", "bootstrap_servers": "k:1", "mirror": [mirror]}]}
    path = directory / "lag-exporter.toml"
    path.write_text(toml_document(document))
    try:
        config = load_config(path)
    except ConfigError as error:
        message = str(error)
        assert f"{path}: cluster[a].mirror" in message and key in message, message
        assert len(message.splitlines()) == 1, message
    else:
        assert len(config.clusters[0].mirrors) == 1


def test_the_replication_policy_flags() -> None:
    config = resolve_config(params(bootstrap_server="s:1", mm2_target_bootstrap_server="d:1",
                                   mm2_source_alias="dc1", mm2_replication_policy="identity"))
    assert config.clusters[0].mirrors[0].replicated_topic("oasis.a") == "oasis.a"
    separated = resolve_config(params(bootstrap_server="s:1", mm2_target_bootstrap_server="d:1",
                                      mm2_source_alias="dc1",
                                      mm2_replication_policy_separator="_"))
    assert separated.clusters[0].mirrors[0].replicated_topic("oasis.a") == "dc1_oasis.a"


def test_a_cluster_watched_only_for_its_mirrors_follows_no_commits() -> None:
    """Following __consumer_offsets there would read every other application's commits for
    nothing (benchmarks/mm2_cost.py --group-commits: +45 ms per sample)."""
    mirror_only = resolve_config(params(bootstrap_server="127.0.0.1:1",
                                        mm2_target_bootstrap_server="127.0.0.1:1")).clusters[0]
    with_group = resolve_config(params(bootstrap_server="127.0.0.1:1", groups=("oasis-group",),
                                       mm2_target_bootstrap_server="127.0.0.1:1")).clusters[0]
    with_pattern = dataclasses.replace(mirror_only, groups=dataclasses.replace(
        mirror_only.groups, patterns=(re.compile("oasis-.*"),)))
    assert not mirror_only.has_consumer_groups
    assert with_group.has_consumer_groups and with_pattern.has_consumer_groups
    make = source_factory(timeout_s=1.0, isolated=False, follow_commits=True)
    for cluster, follows in ((mirror_only, False), (with_group, True), (with_pattern, True)):
        source = make(cluster)
        try:
            assert isinstance(source, MirroredSource)
            assert isinstance(source.inner, FollowedSource) is follows
        finally:
            source.close()
    # A reload that adds the first group builds the cluster's clients again, with the follower.
    assert not same_connection(mirror_only, with_group)
    assert same_connection(with_group, dataclasses.replace(with_group, groups=with_pattern.groups))
