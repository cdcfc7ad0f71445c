"""Membership records of `__consumer_offsets` (offsets_topic.py: membership_group, CommitStore's
membership_seen) and the group descriptions FollowedSource reuses while they say nothing
changed (commit_follower.py), with a fake Admin API source and a follower fed raw records.
Against real brokers: tests/integration/test_commit_follower_membership.py."""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lag_exporter import offsets_topic
from lag_exporter.commit_follower import (
    DESCRIPTION_REUSE_S,
    CommitFollower,
    FollowedSource,
    reuse_period_s,
)
from lag_exporter.errors import SourceError
from lag_exporter.model import GroupOffsets, TopicPartition
from lag_exporter.offsets_topic import (
    GROUP_METADATA,
    GROUP_PROTOCOL_RECORD,
    UNKNOWN_KEY_VERSION,
    CommitStore,
    membership_group,
)

TP = TopicPartition("t", 0)
Members = tuple[str, frozenset[TopicPartition]]


def string(text: str) -> bytes:
    data = text.encode()
    return struct.pack(">h", len(data)) + data


def membership_key(group: str, version: int = 2, rest: bytes = b"") -> bytes:
    """Any membership record's key: the group id first, then (member id, topic...) `rest`."""
    return struct.pack(">h", version) + string(group) + rest


def commit_key(group: str) -> bytes:
    return struct.pack(">h", 1) + string(group) + string("t") + struct.pack(">i", 0)


COMMIT_VALUE = struct.pack(">hqih", 3, 5, 0, 0) + struct.pack(">q", 1000)

# -- the pure decoder --------------------------------------------------------------------------


@given(st.binary(max_size=64))
def test_membership_group_never_raises(key: bytes) -> None:
    group = membership_group(key)
    assert group is None or isinstance(group, str)


@given(group=st.text(max_size=60), version=st.integers(2, 23), rest=st.binary(max_size=40))
def test_the_group_of_every_membership_key_round_trips(group: str, version: int,
                                                       rest: bytes) -> None:
    assert membership_group(membership_key(group, version, rest)) == group


@given(group=st.text(max_size=20),
       version=st.integers(-(2**15), 2**15 - 1).filter(lambda v: not 2 <= v <= 23))
def test_other_key_versions_have_no_membership_group(group: str, version: int) -> None:
    assert membership_group(membership_key(group, version)) is None


def test_a_group_that_does_not_parse_is_none() -> None:
    assert membership_group(struct.pack(">hh", 2, -1)) is None  # null
    assert membership_group(struct.pack(">hh", 5, 3) + b"ab") is None  # truncated
    assert membership_group(struct.pack(">hh", 3, 1) + b"\xff") is None  # not UTF-8
    assert membership_group(b"\0") is None


# -- CommitStore -------------------------------------------------------------------------------


def test_membership_seen_changes_with_each_record_of_the_group_only() -> None:
    store = CommitStore()
    before = store.membership_seen("g")
    store.add(commit_key("g"), COMMIT_VALUE)
    store.add(membership_key("other", 2), b"x")
    assert store.membership_seen("g") == before  # a commit, another group's record
    seen = [before]
    for key, value in [(membership_key("g", 2), b"v"),  # classic generation
                       (membership_key("g", 5, string("member")), b"v"),  # consumer member
                       (membership_key("g", 8, string("member")), None),  # tombstone
                       (membership_key("g", 2), None)]:  # group deleted
        store.add(key, value)
        assert store.membership_seen("g") > seen[-1]
        seen.append(store.membership_seen("g"))
    # Still counted as records giving no offset, as before.
    assert store.skipped == {GROUP_METADATA: 3, GROUP_PROTOCOL_RECORD: 2}
    store.add(membership_key("g", 24), b"v")  # a version Kafka 4.1 does not write: unknown
    assert store.skipped[UNKNOWN_KEY_VERSION] == 1
    assert store.membership_seen("g") == seen[-1]
    store.add(struct.pack(">hh", 2, -1), b"v")  # no group to count it for
    assert store.membership_seen("g") == seen[-1]


def test_membership_seen_never_goes_back_when_the_bound_is_reached(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(offsets_topic, "KEYS_REMEMBERED", 3)
    store = CommitStore()
    for group in ("a", "b", "c"):
        store.add(membership_key(group), b"v")
    seen = {group: store.membership_seen(group) for group in ("a", "b", "c", "new")}
    store.add(membership_key("d"), b"v")  # forgets a, b and c
    for group, before in seen.items():
        assert store.membership_seen(group) > before, group


# -- FollowedSource.group_members ---------------------------------------------------------------


class CountingAdmin:
    """The wrapped source: answers descriptions as set, counts who was described."""

    cluster = "c"

    def __init__(self) -> None:
        self.members: dict[str, Members | SourceError] = {}
        self.described: list[list[str]] = []
        self.while_describing: Callable[[], None] = lambda: None

    def committed_offsets(self, groups: Sequence[str]) -> dict[str, GroupOffsets | SourceError]:
        return {g: GroupOffsets(g, {TP: 1}) for g in groups}

    def high_watermarks(self, partitions: Sequence[TopicPartition]
                        ) -> dict[TopicPartition, int | SourceError]:
        return {tp: 100 for tp in partitions}

    def group_members(self, groups: Sequence[str]) -> dict[str, Members | SourceError]:
        self.described.append(list(groups))
        self.while_describing()
        return {g: self.members.get(g, ("EMPTY", frozenset())) for g in groups}

    def topic_partitions(self, topics: Sequence[str]) -> dict[str, list[int] | SourceError]:
        return {}

    def list_groups(self) -> list[str] | SourceError:
        return []

    def record_times(self, requests: Mapping[TopicPartition, int]
                     ) -> dict[TopicPartition, tuple[int, int, float] | SourceError]:
        return {}

    def close(self) -> None:
        pass


class Follower(CommitFollower):
    """Running, groups g0.. in partition int(name[1:]); partitions in `behind` are not read up
    to their end; membership records are given to its real CommitStore with record()."""

    def __init__(self) -> None:
        super().__init__("c", {"bootstrap.servers": "b:9092"}, 1.0)
        self.partitions = 3
        self.behind: set[int] = set()
        self.up = True

    @property
    def running(self) -> bool:
        return self.up

    def partition_of(self, group: str) -> int:
        return int(group[1:])

    def committed_offsets(self, groups: Sequence[str], ends: Mapping[int, int],
                          wait_s: float = 0.0) -> dict[str, dict[TopicPartition, int] | None]:
        return {g: None if self.partition_of(g) in self.behind else {TP: 7} for g in groups}

    def record(self, group: str, version: int = 2) -> None:
        self.store.add(membership_key(group, version), b"value")

    def close(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def sample(source: FollowedSource, groups: list[str], clock: Clock, after_s: float = 1.0
           ) -> dict[str, Members | SourceError]:
    """As the sampler does: committed offsets of all groups, then the descriptions."""
    clock.now += after_s
    source.committed_offsets(groups)
    return source.group_members(groups)


@pytest.fixture
def parts() -> tuple[CountingAdmin, Follower, Clock, FollowedSource]:
    admin, follower, clock = CountingAdmin(), Follower(), Clock()
    return admin, follower, clock, FollowedSource(admin, follower, "topic", clock=clock)


def test_an_unchanged_group_is_described_once(
        parts: tuple[CountingAdmin, Follower, Clock, FollowedSource]) -> None:
    admin, _follower, clock, source = parts
    admin.members["g1"] = ("STABLE", frozenset({TP}))
    for _ in range(30):
        answers = sample(source, ["g0", "g1"], clock, after_s=5.0)
        assert answers == {"g0": ("EMPTY", frozenset()), "g1": ("STABLE", frozenset({TP}))}
    assert admin.described == [["g0", "g1"]]
    assert (source.described_groups, source.reused_descriptions) == (0, 2)


def test_a_membership_record_makes_the_next_answer_ask_kafka(
        parts: tuple[CountingAdmin, Follower, Clock, FollowedSource]) -> None:
    admin, follower, clock, source = parts
    sample(source, ["g0", "g1"], clock)
    follower.record("g1", version=5)  # a KIP-848 member joined
    admin.members["g1"] = ("STABLE", frozenset({TP}))
    assert source.membership_changed(["g0", "g1"]) == ["g1"]
    assert sample(source, ["g0", "g1"], clock)["g1"] == ("STABLE", frozenset({TP}))
    assert admin.described == [["g0", "g1"], ["g1"]]
    assert source.membership_changed(["g0", "g1"]) == []


def test_a_record_read_while_kafka_answers_is_not_lost(
        parts: tuple[CountingAdmin, Follower, Clock, FollowedSource]) -> None:
    """The answer may predate the record: the count is the one read before asking."""
    admin, follower, clock, source = parts
    admin.while_describing = lambda: follower.record("g0")
    sample(source, ["g0"], clock)
    admin.while_describing = lambda: None
    sample(source, ["g0"], clock)
    sample(source, ["g0"], clock)
    assert admin.described == [["g0"], ["g0"]]


def test_a_description_is_reused_for_its_period_only(
        parts: tuple[CountingAdmin, Follower, Clock, FollowedSource]) -> None:
    admin, _follower, clock, source = parts
    period = reuse_period_s("g0")
    sample(source, ["g0"], clock, after_s=0)
    sample(source, ["g0"], clock, after_s=period - 0.1)
    assert admin.described == [["g0"]]
    sample(source, ["g0"], clock, after_s=0.1)
    assert admin.described == [["g0"], ["g0"]]


def test_reuse_periods_are_spread_over_the_second_half_of_the_longest() -> None:
    periods = [reuse_period_s(f"group-{n}") for n in range(1000)]
    assert all(DESCRIPTION_REUSE_S / 2 <= p < DESCRIPTION_REUSE_S for p in periods)
    assert min(periods) < DESCRIPTION_REUSE_S * 0.55 and max(periods) > DESCRIPTION_REUSE_S * 0.95
    assert reuse_period_s("group-1") == reuse_period_s("group-1")


def test_a_partition_not_read_to_its_end_is_asked(
        parts: tuple[CountingAdmin, Follower, Clock, FollowedSource]) -> None:
    admin, follower, clock, source = parts
    sample(source, ["g0", "g1"], clock)
    follower.behind = {1}  # a record of g1 may be written and not read yet
    sample(source, ["g0", "g1"], clock)
    assert admin.described == [["g0", "g1"], ["g1"]]


@pytest.mark.parametrize("answer", [("PREPARING_REBALANCE", frozenset()), ("DEAD", frozenset()),
                                    ("UNKNOWN", frozenset()),
                                    SourceError("Broker: Coordinator not available"),
                                    SourceError("GROUP_ID_NOT_FOUND")])
def test_passing_states_and_errors_are_not_reused(
        parts: tuple[CountingAdmin, Follower, Clock, FollowedSource],
        answer: Members | SourceError) -> None:
    admin, _follower, clock, source = parts
    admin.members["g0"] = answer
    sample(source, ["g0"], clock)
    sample(source, ["g0"], clock)
    assert admin.described == [["g0"], ["g0"]]


def test_a_passing_state_is_described_again_once_its_group_writes_a_record(
        parts: tuple[CountingAdmin, Follower, Clock, FollowedSource]) -> None:
    admin, follower, clock, source = parts
    admin.members["g0"] = ("UNKNOWN", frozenset())  # how librdkafka shows KIP-848 Reconciling
    sample(source, ["g0"], clock)
    assert source.membership_changed(["g0"]) == []
    follower.record("g0", version=8)  # the member's assignment reconciled
    assert source.membership_changed(["g0"]) == ["g0"]


def test_without_the_follower_every_description_asks_kafka(
        parts: tuple[CountingAdmin, Follower, Clock, FollowedSource]) -> None:
    admin, follower, clock, source = parts
    sample(source, ["g0"], clock)
    follower.up = False  # no membership record is read meanwhile: nothing may be reused
    source.group_members(["g0"])
    follower.up = True
    sample(source, ["g0"], clock)
    assert admin.described == [["g0"], ["g0"], ["g0"]]
    assert source.membership_changed(["g0"]) == []


def test_groups_no_longer_sampled_are_forgotten(
        parts: tuple[CountingAdmin, Follower, Clock, FollowedSource]) -> None:
    admin, _follower, clock, source = parts
    sample(source, ["g0", "g1"], clock)
    sample(source, ["g0"], clock)
    sample(source, ["g0", "g1"], clock)
    assert admin.described == [["g0", "g1"], ["g1"]]
