"""--ha-group: the pure ownership rule, the tick grid, the settings and the flags."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_sampler import FakeKafka

from lag_exporter.app import GridClock
from lag_exporter.cli import cli
from lag_exporter.config import load_config
from lag_exporter.errors import ConfigError
from lag_exporter.fleet import on_grid
from lag_exporter.ha import ASSIGNOR, ha_topic, membership_settings, owned_groups
from lag_exporter.model import GroupOffsets
from lag_exporter.offsets_topic import offsets_partition_of
from lag_exporter.sampler import Sampler

GROUPS = [f"group-{n}" for n in range(500)] + ["", "orders", "é-ü"]


@pytest.mark.parametrize("partitions", [1, 10, 50])
def test_a_split_of_the_partitions_reports_every_group_exactly_once(partitions: int) -> None:
    instances = [set(range(n, partitions, 3)) for n in range(3)]
    reported = [g for owned in instances for g in owned_groups(GROUPS, owned, partitions)]
    assert sorted(reported) == sorted(GROUPS)


def test_a_group_belongs_to_the_partition_holding_its_commits() -> None:
    # Kafka's Utils.abs("orders".hashCode()) % 50 = 43 (offsets_topic's own tests check the hash).
    home = offsets_partition_of("orders", 50)
    assert owned_groups(["orders"], {home}, 50) == ["orders"]
    assert owned_groups(["orders"], set(range(50)) - {home}, 50) == []


def test_nothing_is_owned_before_the_partition_count_is_known() -> None:
    assert owned_groups(GROUPS, {0, 1, 2}, 0) == []


def test_the_sampler_samples_only_the_owned_groups() -> None:
    kafka = FakeKafka()
    kafka.committed = {g: GroupOffsets(g, {}) for g in ("a", "b", "c")}
    sampler = Sampler(kafka, ["a", "b", "c"])
    sampler.owns = lambda groups: [g for g in groups if g != "b"]
    assert [g.group for g in sampler.sample().groups] == ["a", "c"]
    sampler.owns = lambda groups: []
    assert sampler.sample().groups == ()
    assert sampler.groups == ["a", "b", "c"]  # discovery's list is unchanged


def test_tick_times_are_rounded_to_the_interval_grid() -> None:
    moment = datetime(2026, 1, 1, 12, 0, 5, 12_000, tzinfo=UTC)
    assert on_grid(moment, 1.0) == datetime(2026, 1, 1, 12, 0, 5, tzinfo=UTC)
    assert on_grid(moment.replace(microsecond=990_000), 1.0).second == 6
    assert on_grid(moment, 10.0) == datetime(2026, 1, 1, 12, 0, 10, tzinfo=UTC)
    assert on_grid(moment, None) == moment


def test_the_watch_schedule_starts_on_a_wall_clock_multiple_of_the_interval() -> None:
    clock = GridClock(2.0)
    before = time.time()
    start = clock()
    assert start % 2.0 == 0 and before <= start <= before + 2.0
    later = clock()
    assert abs(later - time.time()) < 0.5  # the wall clock, advancing as the monotonic one


def test_membership_settings_never_commit_and_use_the_cooperative_assignor() -> None:
    settings = membership_settings({"bootstrap.servers": "k:9092", "stats_cb": "x"}, "ha", 6.0)
    assert settings["group.id"] == "ha"
    assert settings["partition.assignment.strategy"] == ASSIGNOR == "cooperative-sticky"
    assert settings["enable.auto.commit"] is False
    assert settings["session.timeout.ms"] == 6000
    assert settings["heartbeat.interval.ms"] == 300
    assert settings["max.poll.interval.ms"] == 18000
    assert "stats_cb" not in settings
    assert ha_topic("ha") == "lag-exporter-ha.ha"


def test_the_config_file_sets_the_ha_group(tmp_path: Path) -> None:
    path = tmp_path / "lag-exporter.toml"
    path.write_text('ha_group = "lag-exporters"\nha_session_timeout = 8\n'
                    '[[cluster]]\nname = "c"\nbootstrap_servers = "k:9092"\ngroups = ["a"]\n')
    config = load_config(path)
    assert (config.ha_group, config.ha_session_timeout_s) == ("lag-exporters", 8.0)
    path.write_text('ha_group = "two words"\nha_session_timeout = 0.5\n'
                    '[[cluster]]\nname = "c"\nbootstrap_servers = "k:9092"\ngroups = ["a"]\n')
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert "ha_group: must be 1 to 200 of the characters" in str(raised.value)
    assert "ha_session_timeout: must be at least 1" in str(raised.value)


def test_a_bad_ha_group_flag_is_one_line() -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:  # the command sets up logging for the process: later tests must not see it
        result = CliRunner().invoke(cli, ["watch", "--bootstrap-server", "k:9092", "--group",
                                          "a", "--ha-group", "a/b"])
    finally:
        root.handlers[:], root.level = handlers, level
    assert result.exit_code != 0
    assert "--ha-group must be 1 to 200 of the characters" in result.output
    assert "Traceback" not in result.output
