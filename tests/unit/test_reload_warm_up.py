"""SIGHUP and start-up without a gap: what `watch` reads again in each mode (cli.py), the
warm-up before the first tick, and a replaced connection warmed up while the old client samples
(fleet.py). Fake Kafka sources; no I/O but files."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from lag_exporter import app
from lag_exporter.cli import _Cli, cli
from lag_exporter.config import ClusterConfig, ExporterConfig, KafkaSettings
from lag_exporter.errors import ConfigError, SourceError
from lag_exporter.fleet import ClusterWatch, Fleet
from lag_exporter.model import GroupOffsets, Sample, TopicPartition
from lag_exporter.selection import GroupSelection, TopicSelection

TP = TopicPartition


@pytest.fixture(autouse=True)
def keep_logging() -> Iterator[None]:
    """The command points the root logger at the runner's stderr: undo that after each test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level
    _Cli.debug = False


# -- cli.py: what SIGHUP reads again ------------------------------------------------------------


class NoWatch:
    def stop(self) -> None:
        pass

    def request_reload(self) -> None:
        pass


class NoService:
    watch = NoWatch()

    def run(self) -> None:
        pass


def watch_reload(monkeypatch: pytest.MonkeyPatch, *args: str) -> Callable[[], ExporterConfig]:
    """Run `watch ARGS` up to the service and return what it calls on SIGHUP."""
    reloads: list[Callable[[], ExporterConfig] | None] = []

    def make_service(config: ExporterConfig, summary_s: float,
                     load_config: Callable[[], ExporterConfig] | None) -> NoService:
        reloads.append(load_config)
        return NoService()

    monkeypatch.setattr(app, "make_service", make_service)
    done = CliRunner().invoke(cli, ["watch", *args])
    assert done.exit_code == 0, done.output
    (reload,) = reloads
    assert reload is not None
    return reload


def sasl_properties(password: str) -> str:
    return ("security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\nsasl.jaas.config="
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'username="u" password="{password}";\n')


def test_sighup_without_config_reads_the_command_config_file_again(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    properties = tmp_path / "client.properties"
    properties.write_text(sasl_properties("first"))
    reload = watch_reload(monkeypatch, "--bootstrap-server", "k:9092", "--command-config",
                          str(properties), "--group", "g", "--interval", "2")
    properties.write_text(sasl_properties("second"))  # e.g. a rotated credential
    (cluster,) = reload().clusters
    assert cluster.kafka.client_settings["sasl.password"] == "second"
    assert cluster.name == "k:9092" and cluster.groups.names == ("g",)
    assert reload().interval_s == 2  # the flags apply again too
    properties.write_text("security.protocol=SSL\nssl.keystore.location=/nonexistent.p12\n")
    with pytest.raises(ConfigError, match=r"client\.properties: ssl\.keystore\.location"):
        reload()  # app.reload logs it and keeps the running config


def test_sighup_with_config_reads_the_config_file_again(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "c.toml"
    body = '[[cluster]]\nname = "c"\nbootstrap_servers = "k:9092"\n'
    config.write_text(body + 'groups = ["g1"]\n')
    reload = watch_reload(monkeypatch, "--config", str(config), "--interval", "3")
    config.write_text(body + 'groups = ["g1", "g2"]\n')
    reloaded = reload()
    assert reloaded.clusters[0].groups.names == ("g1", "g2")
    assert reloaded.interval_s == 3


# -- fleet.py: warm-up --------------------------------------------------------------------------


class FakeKafka:
    """A cluster with one group whose end offset says which client answered; its first
    committed_offsets call waits for `ready` (a client still connecting)."""

    def __init__(self, end: int, ready: bool = True) -> None:
        self.cluster = "c"
        self.end = end
        self.ready = threading.Event()
        if ready:
            self.ready.set()
        self.closed = False

    def committed_offsets(self, groups: Sequence[str]) -> dict[str, GroupOffsets | SourceError]:
        self.ready.wait(10)
        return {g: GroupOffsets(g, {TP("t", 0): 0}) for g in groups}

    def group_members(
        self, groups: Sequence[str]
    ) -> dict[str, tuple[str, frozenset[TopicPartition]] | SourceError]:
        return {g: ("EMPTY", frozenset()) for g in groups}

    def topic_partitions(self, topics: Sequence[str]) -> dict[str, list[int] | SourceError]:
        return {}

    def high_watermarks(
        self, partitions: Sequence[TopicPartition]
    ) -> dict[TopicPartition, int | SourceError]:
        return dict.fromkeys(partitions, self.end)

    def list_groups(self) -> list[str] | SourceError:
        return ["g"]

    def record_times(
        self, requests: Mapping[TopicPartition, int]
    ) -> dict[TopicPartition, tuple[int, int, float] | SourceError]:
        return {tp: SourceError("no record") for tp in requests}

    def close(self) -> None:
        self.closed = True
        self.ready.set()


def cluster_config(bootstrap: str = "k:9092") -> ClusterConfig:
    return ClusterConfig("c", KafkaSettings("c", {"bootstrap.servers": bootstrap}),
                         GroupSelection(("g",)), TopicSelection())


def lag_of(sample: Sample) -> int | None:
    """The group's lag in a sample (None: the cluster's sample is not in it)."""
    if not sample.groups:
        return None
    return sample.groups[0].partitions[0].lag


def test_warm_up_waits_for_the_first_sample_so_that_the_first_tick_is_on_time() -> None:
    kafka = FakeKafka(5, ready=False)
    fleet = Fleet([ClusterWatch(cluster_config(), kafka)])
    connected = threading.Timer(0.3, kafka.ready.set)  # the client takes 0.3 s to connect
    connected.start()
    fleet.warm_up(max_wait_s=10)
    assert kafka.ready.is_set()
    # Without the warm-up this tick would wait behind the connection and be skipped.
    assert lag_of(fleet.sample(wait_s=0.2)) == 5
    assert fleet.ticks_skipped == {}
    fleet.close()


def test_warm_up_waits_no_longer_than_its_bound_or_a_stop() -> None:
    fleet = Fleet([ClusterWatch(cluster_config(), FakeKafka(5, ready=False))])
    started = time.monotonic()
    fleet.warm_up(max_wait_s=0.2)  # a cluster that is down at start
    assert time.monotonic() - started < 3
    stop = threading.Event()
    threading.Timer(0.1, stop.set).start()
    started = time.monotonic()
    fleet.warm_up(max_wait_s=30, stop=stop)  # SIGTERM during the warm-up
    assert time.monotonic() - started < 5
    fleet.close()


def test_a_replaced_connection_warms_up_while_the_old_client_samples(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="lag_exporter")
    old, new = FakeKafka(5), FakeKafka(7, ready=False)
    fleet = Fleet([ClusterWatch(cluster_config(), old)])
    assert lag_of(fleet.sample(wait_s=5)) == 5

    def make_source(config: ClusterConfig) -> Any:
        return new

    fleet.reconfigure([cluster_config("k2:9092")], make_source, 30)  # new certificates, say
    for _ in range(3):  # the new client is still connecting: the old one has every tick
        assert lag_of(fleet.sample(wait_s=5)) == 5
    assert not old.closed
    new.ready.set()
    lags = [lag_of(fleet.sample(wait_s=5))]
    deadline = time.monotonic() + 10
    while lags[-1] != 7 and time.monotonic() < deadline:  # once the warm-up sample is done
        lags.append(lag_of(fleet.sample(wait_s=5)))
    assert set(lags) <= {5, 7} and lags[-1] == 7  # no tick without the group
    assert old.closed and fleet.ticks_skipped == {}
    assert "cluster c: now sampled with the reloaded connection settings" in caplog.messages
    fleet.close()
    assert new.closed


def test_a_reload_while_warming_up_replaces_the_warming_client_or_keeps_it() -> None:
    old, first, second = FakeKafka(5), FakeKafka(7, ready=False), FakeKafka(9, ready=False)
    made = iter([first, second])
    fleet = Fleet([ClusterWatch(cluster_config(), old)])

    def make_source(config: ClusterConfig) -> Any:
        return next(made)

    fleet.reconfigure([cluster_config("k2:9092")], make_source, 30)
    fleet.reconfigure([cluster_config("k2:9092")], make_source, 30)  # same again: kept
    assert not first.closed
    fleet.reconfigure([cluster_config("k3:9092")], make_source, 30)  # changed again
    assert first.closed and not old.closed
    fleet.reconfigure([cluster_config()], make_source, 30)  # back to the running one
    assert second.closed and not old.closed
    assert lag_of(fleet.sample(wait_s=5)) == 5
    fleet.reconfigure([], make_source, 30)  # removed
    assert old.closed
    fleet.close()
