"""Issue 10, items 4, 6, 11, 13 and 14: delivery that never stops for good, health that includes
delivery and in-flight samples, signals from the first line, logs that report changes only."""

import logging
import os
import signal
import threading
from datetime import UTC, datetime

import pytest

from lag_exporter.documents import Document
from lag_exporter.errors import SinkError
from lag_exporter.fleet import ON_SCHEDULE_TICKS, Fleet
from lag_exporter.metrics import DeliveryState, Health, LagMetrics
from lag_exporter.model import GroupLag, PartitionLag, Sample
from lag_exporter.outbox import Outbox
from lag_exporter.service import Delivery, GroupHealth, Signals, summarise_lag
from lag_exporter.sinks import DeliveryReport

MOMENT = datetime(2026, 1, 1, tzinfo=UTC)


class BrokenThenFine:
    """Fails with errors that are not SinkError (a closed stdout pipe, a bug), then works."""

    name = "broken"

    def __init__(self, errors: list[Exception]) -> None:
        self.errors = errors
        self.received: list[str] = []
        self.done = threading.Event()

    def write(self, documents: list[Document]) -> DeliveryReport:
        if self.errors:
            raise self.errors.pop(0)
        self.received += [d.doc_id for d in documents]
        self.done.set()
        return DeliveryReport(stored=len(documents))

    def close(self) -> None:
        pass


def test_delivery_survives_unexpected_errors_and_delivers_after_them() -> None:
    outbox = Outbox()
    outbox.put([Document("a", {})])
    sink = BrokenThenFine([BrokenPipeError(32, "Broken pipe"), KeyError("bug"),
                           SinkError("down")])
    delivery = Delivery(outbox, sink, max_backoff_s=0.01)
    delivery.start()
    assert sink.done.wait(5), "the delivery thread died"
    assert delivery.finish(timeout_s=1)
    assert sink.received == ["a"] and delivery.failures == 3 and delivery.failure is None


class Rejecting:
    name = "es"

    def write(self, documents: list[Document]) -> DeliveryReport:
        return DeliveryReport(stored=0, rejected=tuple("400 mapper_parsing_exception: p0"
                                                       for _ in documents))

    def close(self) -> None:
        pass


def test_rejected_documents_are_counted_and_logged_once_per_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="lag_exporter")
    outbox = Outbox()
    for n in range(5):
        outbox.put([Document(f"{n}a", {}), Document(f"{n}b", {})])
    delivery = Delivery(outbox, Rejecting())
    delivery.start()
    assert delivery.finish(timeout_s=5)
    assert delivery.rejected == 10
    lines = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert lines == ["es rejected 2 of 2 document(s) of a sample (2 in all): "
                     "400 mapper_parsing_exception: p0"]


def group(name: str, error: str | None = None, cluster: str = "c") -> GroupLag:
    partitions = () if error else (PartitionLag("t", 0, 1, 3, 2),)
    return GroupLag(cluster, name, partitions, error=error)


def test_a_group_failing_before_its_cluster_went_down_is_not_said_to_sample_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="lag_exporter")
    health = GroupHealth()
    health.update(Sample(MOMENT, (group("a"), group("b", "no such group"))))
    health.update(Sample(MOMENT, (group("a", "down"), group("b", "down"))))  # cluster down
    health.update(Sample(MOMENT, (group("a"), group("b", "no such group"))))  # back
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["cluster c group b: cannot sample: no such group",
                        "cluster c: cannot sample: down",
                        "cluster c: sampling again"]


def test_group_health_forgets_groups_and_clusters_no_longer_sampled() -> None:
    health = GroupHealth()
    health.update(Sample(MOMENT, (group("a"), group("gone", "boom"),
                                  group("x", "down", cluster="removed"))))
    assert ("group", "c", "gone") in health.failing
    health.update(Sample(MOMENT, (group("a"),)))
    assert health.failing == set()


def test_group_health_keeps_the_state_of_a_cluster_still_sampling() -> None:
    health = GroupHealth()
    health.update(Sample(MOMENT, (group("x", "down", cluster="slow"),)))
    health.update(Sample(MOMENT, (), pending_clusters=("slow",)))
    assert ("cluster", "slow") in health.failing


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_tick_with_a_cluster_still_in_flight_is_not_healthy() -> None:
    clock = Clock()
    health = Health(1.0, clock=clock)
    health.observe(Sample(MOMENT, (group("a"),)))
    for _ in range(5):  # the broker is gone: the cluster's sample never comes back
        clock.now += 1.0
        health.observe(Sample(MOMENT, (), pending_clusters=("c",)))
    assert health.status() == (False, "no successful sample for 5.0 s (limit 3.0 s): "
                                      "cluster c: sample still running after 4.0 s")


def test_health_includes_delivery() -> None:
    clock, wall = Clock(), Clock()
    oldest: list[float | None] = [None]
    health = Health(1.0, clock=clock, oldest_undelivered=lambda: oldest[0], wall_clock=wall)
    health.observe(Sample(MOMENT, (group("a"),)))
    assert health.status() == (True, "ok")
    oldest[0] = wall.now - 10.0
    assert health.status() == (True, "ok")  # at the limit
    oldest[0] = wall.now - 42.0
    assert health.status() == (False, "delivery behind: the oldest undelivered sample is "
                                      "42 s old (limit 10 s)")


def test_outbox_numbers_are_read_at_scrape_time() -> None:
    """queued read 1 in steady state when recorded right after a sample was queued."""
    metrics = LagMetrics()
    queued = [1]
    metrics.read_delivery_from(lambda: DeliveryState(queued[0], 0, 0, 0, 0.0))
    metrics.observe(Sample(MOMENT, (group("a"),)))
    queued[0] = 0  # delivered between the tick and the scrape
    assert b"lag_exporter_outbox_queued 0.0" in metrics.render()


def test_metrics_keep_a_pending_cluster_and_forget_a_removed_one() -> None:
    metrics = LagMetrics()
    metrics.observe(Sample(MOMENT, (group("a"), group("b", cluster="slow"),
                                    group("z", cluster="removed"))))
    metrics.observe(Sample(MOMENT, (group("a"),), pending_clusters=("slow",)))
    text = metrics.render().decode()
    assert 'cluster_name="slow",group="b"' in text
    assert 'cluster_name="removed"' not in text  # series and error counters are gone


def test_metrics_forget_groups_that_are_gone() -> None:
    metrics = LagMetrics()
    for n in range(50):  # console-consumer-<n> groups come and go
        metrics.observe(Sample(MOMENT, (group(f"console-consumer-{n}"),)))
    assert metrics.render().decode().count("lag_exporter_group_errors_total{") == 1


def test_summary_names_the_worst_groups_first_and_counts_the_rest() -> None:
    groups = [GroupLag("c", f"g{n}", (PartitionLag("t", 0, 0, n, n),)) for n in range(500)]
    groups += [group("down", "timed out"), GroupLag("c", "new", ())]
    line = summarise_lag(Sample(MOMENT, tuple(groups)))
    assert line == ("lag 124750 in 500 group(s): g499=499 g498=498 g497=497 g496=496 g495=495, "
                    "+496 more; 1 failing: down")
    assert len(line) < 200


def test_summary_says_why_a_group_has_no_number() -> None:
    line = summarise_lag(Sample(MOMENT, (GroupLag("c", "new", ()),
                                         GroupLag("c", "part", (PartitionLag("t", 0, 0, 4, 4),
                                                                PartitionLag("t", 1, 0, None,
                                                                             None))))))
    assert line == "lag 0 in 0 group(s): new=no commits yet part>=4 (1 partition(s) unknown)"


class SlowThenFast:
    """A cluster whose sample alternates between overrunning and on time (an outage)."""

    def __init__(self) -> None:
        self.name = "c"
        self.ticks = 0

    def start(self, taken_at: datetime) -> None:
        self.ticks += 1

    def in_flight(self) -> None:
        return None

    def collect(self) -> Sample | None:
        return None if self.ticks % 2 else Sample(MOMENT, ())

    def close(self) -> None:
        pass


def test_behind_and_on_schedule_are_not_logged_every_other_tick(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="lag_exporter")
    fleet = Fleet([SlowThenFast()])  # type: ignore[list-item]
    for _ in range(40):
        fleet.sample(wait_s=0)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and "takes longer than the interval" in messages[0]
    fleet.clusters[0].collect = lambda: Sample(MOMENT, ())  # type: ignore[method-assign]
    for _ in range(ON_SCHEDULE_TICKS):
        fleet.sample(wait_s=0)
    assert [r.getMessage() for r in caplog.records][1:] == ["cluster c: sampling on schedule "
                                                            "again"]


class Recorder:
    def __init__(self) -> None:
        self.stopped = threading.Event()
        self.reloads = 0

    def stop(self) -> None:
        self.stopped.set()

    def request_reload(self) -> None:
        self.reloads += 1


def test_signals_before_the_watch_exists_are_kept_for_it() -> None:
    """SIGHUP during the spool restore or the first Elasticsearch contact killed the process."""
    before = signal.getsignal(signal.SIGHUP)  # SIG_IGN under nohup, else SIG_DFL
    with Signals() as signals:
        os.kill(os.getpid(), signal.SIGHUP)
        os.kill(os.getpid(), signal.SIGTERM)
        watch = Recorder()
        signals.attach(watch)  # type: ignore[arg-type]
        assert watch.stopped.is_set() and watch.reloads == 1
        with pytest.raises(KeyboardInterrupt):  # a second stop signal forces the exit
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGHUP) is before  # given back as it was
