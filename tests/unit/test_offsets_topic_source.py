"""FollowedSource's choices (commit_follower.py) with a fake follower and a fake Admin API
source: which groups go to which path, when the topic is tried again, what an outage gives.
The follower against real brokers: tests/integration/test_commit_follower.py."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence

import pytest

from lag_exporter.commit_follower import RETRY_S, CommitFollower, FollowedSource, follower_state
from lag_exporter.errors import SourceError
from lag_exporter.model import GroupOffsets, TopicPartition

TP = TopicPartition("t", 0)


class FakeAdmin:
    """The wrapped source: records what it was asked."""

    cluster = "c"

    def __init__(self) -> None:
        self.asked_offsets: list[list[str]] = []
        self.asked_ends: list[list[TopicPartition]] = []
        self.ends: dict[int, int | SourceError] = {}

    def committed_offsets(self, groups: Sequence[str]) -> dict[str, GroupOffsets | SourceError]:
        self.asked_offsets.append(list(groups))
        return {g: GroupOffsets(g, {TP: 1}) for g in groups}

    def high_watermarks(self, partitions: Sequence[TopicPartition]
                        ) -> dict[TopicPartition, int | SourceError]:
        self.asked_ends.append(list(partitions))
        return {tp: self.ends.get(tp.partition, 100) for tp in partitions}

    def group_members(self, groups: Sequence[str]
                      ) -> dict[str, tuple[str, frozenset[TopicPartition]] | SourceError]:
        return {}

    def topic_partitions(self, topics: Sequence[str]) -> dict[str, list[int] | SourceError]:
        return {}

    def list_groups(self) -> list[str] | SourceError:
        return []

    def record_times(self, requests: Mapping[TopicPartition, int]
                     ) -> dict[TopicPartition, tuple[int, int, float] | SourceError]:
        return {}

    def close(self) -> None:
        pass


class FakeFollower(CommitFollower):
    """Opens as told; groups g0.. live in partition int(name[1:]); partitions in `behind`
    are not read up to their end."""

    def __init__(self, open_answers: list[str | None], authorization: bool = False) -> None:
        super().__init__("c", {"bootstrap.servers": "b:9092"}, 1.0)
        self.open_answers = open_answers
        self.opened = 0
        self.authorization = authorization
        self.behind: set[int] = set()
        self.partitions = 3

    @property
    def running(self) -> bool:
        return self.opened > 0 and self.open_answers[self.opened - 1] is None \
            and self.failure is None

    def open(self) -> str | None:
        self.opened += 1
        answer = self.open_answers[self.opened - 1]
        self.authorization_failed = answer is not None and self.authorization
        return answer

    def partition_of(self, group: str) -> int:
        return int(group[1:])

    def committed_offsets(self, groups: Sequence[str], ends: Mapping[int, int],
                          wait_s: float = 0.0) -> dict[str, dict[TopicPartition, int] | None]:
        return {g: None if self.partition_of(g) in self.behind or self.partition_of(g) not in ends
                else {TP: 7} for g in groups}

    def close(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_groups_behind_are_asked_through_the_admin_api_only() -> None:
    admin, follower = FakeAdmin(), FakeFollower([None])
    source = FollowedSource(admin, follower)
    follower.behind = {1}
    answers = source.committed_offsets(["g0", "g1", "g2"])
    assert admin.asked_ends == [[TopicPartition("__consumer_offsets", p) for p in (0, 1, 2)]]
    assert admin.asked_offsets == [["g1"]]
    assert {g: a.committed_offsets for g, a in answers.items()
            if isinstance(a, GroupOffsets)} == {"g0": {TP: 7}, "g1": {TP: 1}, "g2": {TP: 7}}
    assert (source.topic_groups, source.admin_groups, source.behind_partitions) == (2, 1, 1)
    state = follower_state(source)
    assert (state.path, state.topic_groups, state.admin_groups) == ("topic", 2, 1)


def test_an_unreadable_end_offset_sends_its_groups_to_the_admin_api() -> None:
    admin, follower = FakeAdmin(), FakeFollower([None])
    admin.ends = {2: SourceError("leader not available")}
    source = FollowedSource(admin, follower)
    source.committed_offsets(["g0", "g2"])
    assert admin.asked_offsets == [["g2"]]


def test_no_end_offset_at_all_leaves_every_group_to_the_admin_api() -> None:
    """After a broker restart the offsets partitions' end offsets failed for a while and every
    group failed with them, though the groups' own offsets could be read (test_faults)."""
    admin, follower = FakeAdmin(), FakeFollower([None])
    down = SourceError("Broker: Not leader for partition")
    admin.ends = {0: down, 1: down}
    source = FollowedSource(admin, follower)
    answers = source.committed_offsets(["g0", "g1"])
    assert admin.asked_offsets == [["g0", "g1"]]
    assert all(isinstance(answer, GroupOffsets) for answer in answers.values())
    assert (source.topic_groups, source.admin_groups) == (0, 2)


def test_auto_after_an_authorization_error_stays_with_the_admin_api() -> None:
    clock = Clock()
    admin = FakeAdmin()
    follower = FakeFollower(["denied (TOPIC_AUTHORIZATION_FAILED)"], authorization=True)
    source = FollowedSource(admin, follower, "auto", clock=clock)
    for _ in range(3):
        assert source.committed_offsets(["g0"])["g0"] == GroupOffsets("g0", {TP: 1})
        clock.now += RETRY_S * 10
    assert follower.opened == 1 and source.path == "admin" and source.admin_groups == 1
    assert "TOPIC_AUTHORIZATION_FAILED" in source.describe()
    assert follower_state(source).path == "admin"


def test_auto_tries_the_topic_again_after_other_errors() -> None:
    clock = Clock()
    admin, follower = FakeAdmin(), FakeFollower(["no __consumer_offsets yet", None])
    source = FollowedSource(admin, follower, "auto", clock=clock)
    source.committed_offsets(["g0"])
    clock.now += RETRY_S - 0.1
    source.committed_offsets(["g0"])
    assert follower.opened == 1 and source.path == "admin"
    clock.now += 0.2
    assert source.committed_offsets(["g0"])["g0"] == GroupOffsets("g0", {TP: 7})
    assert follower.opened == 2 and source.path == "topic"


def test_topic_mode_fails_the_groups_with_the_reason() -> None:
    admin = FakeAdmin()
    source = FollowedSource(admin, FakeFollower(["cannot read __consumer_offsets: denied"]),
                            "topic")
    failed = source.committed_offsets(["g0"])["g0"]
    assert isinstance(failed, SourceError)
    assert str(failed) == ('cannot read __consumer_offsets: denied; offsets_source = "topic" '
                           "needs Describe and Read on __consumer_offsets")
    assert admin.asked_offsets == []


def test_a_failure_while_following_switches_auto_to_the_admin_api() -> None:
    admin, follower = FakeAdmin(), FakeFollower([None])
    source = FollowedSource(admin, follower)
    source.committed_offsets(["g0"])
    assert source.path == "topic"
    follower.failure = "cannot read __consumer_offsets: Topic authorization failed"
    follower.authorization_failed = True
    assert source.committed_offsets(["g0"])["g0"] == GroupOffsets("g0", {TP: 1})
    assert source.path == "admin" and follower.opened == 1


def test_only_auto_and_topic_wrap() -> None:
    try:
        FollowedSource(FakeAdmin(), FakeFollower([None]), "admin")
    except ValueError as error:
        assert "expected auto or topic" in str(error)
    else:
        raise AssertionError("admin mode needs no wrapper")


class SlowFollower(FakeFollower):
    """Its open() waits until the test lets it finish."""

    def __init__(self, open_answers: list[str | None]) -> None:
        super().__init__(open_answers)
        self.may_finish = threading.Event()

    def open(self) -> str | None:
        self.may_finish.wait(5)
        return super().open()


def test_opened_in_the_background_the_admin_api_answers_until_the_follower_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A first sample that waited for the follower's connection took longer than the interval
    and skipped a tick at every start."""
    admin, follower = FakeAdmin(), SlowFollower([None])
    source = FollowedSource(admin, follower, open_in_background=True)
    caplog.set_level(logging.INFO)
    source.committed_offsets(["g0"])
    assert admin.asked_offsets == [["g0"]] and source.path == "admin"
    assert caplog.records == []  # nothing decided yet: no "through the Admin API" warning
    follower.may_finish.set()
    assert source._opening is not None
    source._opening.join(5)
    source.committed_offsets(["g0"])
    assert admin.asked_offsets == [["g0"]] and source.path == "topic"
    assert "committed offsets followed in" in caplog.text
    source.close()


def test_opened_in_the_background_a_failure_is_retried_later() -> None:
    clock = Clock()
    admin, follower = FakeAdmin(), FakeFollower(["no __consumer_offsets yet", None])
    source = FollowedSource(admin, follower, clock=clock, open_in_background=True)
    assert source._opening is not None
    source._opening.join(5)
    source.committed_offsets(["g0"])
    assert follower.opened == 1 and source.path == "admin"
    clock.now += 11
    source.committed_offsets(["g0"])
    assert follower.opened == 2 and source.path == "topic"
