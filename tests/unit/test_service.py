import logging
import threading
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from lag_exporter.documents import Document
from lag_exporter.errors import SinkError
from lag_exporter.fleet import Fleet
from lag_exporter.model import GroupLag, PartitionLag, Sample
from lag_exporter.outbox import Outbox
from lag_exporter.service import (
    Delivery,
    GroupHealth,
    Pipeline,
    SampleDocuments,
    Watch,
    ticks_to_skip,
)
from lag_exporter.sinks import DeliveryReport


def test_on_time_sample_skips_nothing() -> None:
    assert ticks_to_skip(start=0.0, interval=1.0, tick=3, now=3.4) == 0


def test_overrun_skips_the_ticks_it_covered() -> None:
    assert ticks_to_skip(start=0.0, interval=1.0, tick=3, now=6.5) == 3


def test_schedule_does_not_drift() -> None:
    # tick k is due at start + k x interval whatever earlier samples cost
    assert ticks_to_skip(start=100.0, interval=0.5, tick=10, now=105.49) == 0


class FlakySink:
    name = "flaky"

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.received: list[str] = []
        self.done = threading.Event()

    def write(self, documents: list[Document]) -> DeliveryReport:
        if self.failures > 0:
            self.failures -= 1
            raise SinkError("down")
        self.received.extend(d.doc_id for d in documents)
        if len(self.received) == 3:
            self.done.set()
        return DeliveryReport(stored=len(documents))

    def close(self) -> None:
        pass


def test_delivery_retries_in_order_until_the_sink_recovers() -> None:
    outbox = Outbox()
    for n in range(3):
        outbox.put([Document(str(n), {})])
    sink = FlakySink(failures=2)
    delivery = Delivery(outbox, sink, max_backoff_s=0.01)
    delivery.start()
    assert sink.done.wait(5)
    assert delivery.finish(timeout_s=1)
    assert sink.received == ["0", "1", "2"]
    assert len(outbox) == 0


def group(name: str, error: str | None) -> GroupLag:
    partitions: Sequence[PartitionLag] = () if error else (PartitionLag("t", 0, 1, 1, 0),)
    return GroupLag("c", name, tuple(partitions), error=error)


def test_group_failure_is_logged_once_and_recovery_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="lag_exporter")
    health = GroupHealth()
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    for error in ["timed out", "timed out", "timed out", None, None]:
        health.update(Sample(moment, (group("g", error),)))
    messages = [r.getMessage() for r in caplog.records]
    assert sum("cannot sample" in m for m in messages) == 1
    assert sum("sampling again" in m for m in messages) == 1


def test_a_whole_cluster_down_is_one_line_not_one_per_group(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="lag_exporter")
    health = GroupHealth()
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    down = Sample(moment, (group("a", "refused"), group("b", "refused")))
    up = Sample(moment, (group("a", None), group("b", None)))
    for sample in (down, down, up, up):
        health.update(sample)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["cluster c: cannot sample: refused", "cluster c: sampling again"]


# -- Watch.run on a fake clock: the schedule and what it logs ---------------------------------


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class ClockedStop(threading.Event):
    """Watch's stop event, whose timed waits pass on the fake clock instead of in real time."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self._clock = clock

    def wait(self, timeout: float | None = None) -> bool:
        if not self.is_set() and timeout:
            self._clock.advance(timeout)
        return self.is_set()


class ScriptedFleet(Fleet):
    """Each sample takes the next of `durations` on the fake clock; records when it started."""

    def __init__(self, clock: FakeClock, durations: Sequence[float],
                 warnings: tuple[str, ...] = ()) -> None:
        super().__init__([])
        self.clock = clock
        self.durations = list(durations)
        self.warnings = warnings
        self.started: list[float] = []

    def sample(self, wait_s: float | None = None, taken_at: datetime | None = None) -> Sample:
        self.started.append(self.clock())
        duration = self.durations[len(self.started) - 1]
        self.clock.advance(duration)
        lagging = GroupLag("c", "orders-mirror", (PartitionLag("t", 0, 58, 100, 42),))
        return Sample(taken_at=taken_at or datetime.now(UTC), groups=(lagging,),
                      duration_s=duration, warnings=self.warnings)


class RecordingSink:
    name = "recording"

    def __init__(self) -> None:
        self.batches = 0

    def write(self, documents: list[Document]) -> DeliveryReport:
        self.batches += 1
        return DeliveryReport(stored=len(documents))

    def close(self) -> None:
        pass


def run_watch(durations: Sequence[float], interval_s: float = 1.0, summary_every_s: float = 60.0,
              warnings: tuple[str, ...] = ()) -> tuple[Watch, ScriptedFleet, float]:
    """Watch.run for len(durations) samples on a fake clock; (watch, fleet, start time)."""
    clock = FakeClock()
    fleet = ScriptedFleet(clock, durations, warnings)
    watch = Watch(fleet, Outbox(), RecordingSink(), interval_s=interval_s,
                  summary_every_s=summary_every_s, clock=clock)
    watch._stop = ClockedStop(clock)  # the only hook for the waits between ticks
    start = clock()
    watch.run(max_samples=len(durations))
    return watch, fleet, start


@pytest.fixture(autouse=True)
def no_gc_tuning(monkeypatch: pytest.MonkeyPatch) -> None:
    """Watch.run freezes the collector for a long-running process; not for the test process."""
    monkeypatch.setattr("lag_exporter.service.relax_gc", lambda: None)


def test_tick_k_starts_at_start_plus_k_intervals_whatever_the_samples_took() -> None:
    # Waiting `interval` after each sample instead would start them at 1, 2.3, 4.2, 5.3, 6.8.
    _, fleet, start = run_watch([0.3, 0.9, 0.1, 0.5, 0.2], interval_s=1.0)
    assert fleet.started == pytest.approx([start + k for k in range(5)])


def test_an_overrun_skips_the_ticks_it_covered_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="lag_exporter")
    watch, fleet, start = run_watch([2.5, 0.1, 0.1], interval_s=1.0)
    assert fleet.started == pytest.approx([start, start + 3, start + 4])
    assert watch.ticks_skipped == 2
    (skipped,) = [r for r in caplog.records if "skipped 2 tick" in r.getMessage()]
    assert (skipped.name, skipped.levelno) == ("lag_exporter.service", logging.WARNING)


def test_the_summary_line_is_logged_at_info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="lag_exporter")
    run_watch([0.1] * 4, interval_s=1.0, summary_every_s=2.0)
    summaries = [r for r in caplog.records if "orders-mirror" in r.getMessage()]
    assert summaries, "no summary line"
    assert all((r.name, r.levelno) == ("lag_exporter.service", logging.INFO) for r in summaries)
    assert all("42" in r.getMessage() for r in summaries)


def test_a_lasting_warning_is_logged_once_not_every_tick(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="lag_exporter")
    warning = "topic t: no end offset for partition 3"
    run_watch([0.1] * 5, warnings=(warning,))
    logged = [r for r in caplog.records if r.getMessage() == warning]
    assert [r.levelno for r in logged] == [logging.WARNING]


# -- several sinks: each with its own outbox and delivery thread ------------------------------


class BlockedSink:
    """A sink whose first write hangs until released (an Elasticsearch that stopped answering)."""

    name = "blocked"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.received: list[str] = []

    def write(self, documents: list[Document]) -> DeliveryReport:
        self.release.wait(10)
        self.received += [d.doc_id for d in documents]
        return DeliveryReport(stored=len(documents))

    def close(self) -> None:
        pass


def test_a_sink_that_hangs_delays_nothing_of_the_other_sink_and_keeps_its_own_queue(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="lag_exporter")
    clock = FakeClock()
    fleet = ScriptedFleet(clock, [0.1] * 5)
    blocked, recording = BlockedSink(), RecordingSink()
    watch = Watch(fleet, interval_s=1.0, summary_every_s=60.0, clock=clock,
                  pipelines=[Pipeline(Outbox(), blocked), Pipeline(Outbox(), recording)])
    watch._stop = ClockedStop(clock)
    watch.run(max_samples=5, shutdown_timeout_s=1.0)
    assert recording.batches == 5  # every sample, while the other sink hung on the first
    assert blocked.received == []
    assert watch.pipelines[0].outbox.dropped == 0
    messages = [r.getMessage() for r in caplog.records]
    assert "blocked: stopping with 5 undelivered sample(s)" in messages
    assert messages[-1].endswith("blocked: 0 delivered, 0 dropped; recording: 5 delivered, "
                                 "0 dropped)")
    blocked.release.set()


def test_a_failing_sink_is_retried_on_its_own_while_the_other_delivers() -> None:
    failing, recording = FlakySink(failures=3), RecordingSink()
    outboxes = [Outbox(), Outbox()]
    pipelines = [Pipeline(outboxes[0], failing, max_backoff_s=0.01),
                 Pipeline(outboxes[1], recording)]
    watch = Watch(Fleet([]), pipelines=pipelines)
    for n in range(3):
        watch.pipelines[0].outbox.put([Document(str(n), {})])
        watch.pipelines[1].outbox.put([Document(str(n), {})])
    for pipeline in pipelines:
        pipeline.delivery.start()
    assert failing.done.wait(5)
    for pipeline in pipelines:
        assert pipeline.delivery.finish(timeout_s=1)
    assert failing.received == ["0", "1", "2"] and recording.batches == 3
    assert pipelines[0].delivery.failures == 3 and pipelines[1].delivery.failures == 0


def test_each_shape_of_documents_is_built_once_per_sample_for_every_sink() -> None:
    built: list[Sample] = []

    def build(sample: Sample) -> list[Document]:
        built.append(sample)
        return [Document("d", {"lag_total": 1})]

    def documents(shared: SampleDocuments) -> list[Document]:
        return shared.get(build)

    outboxes = [Outbox(), Outbox()]
    watch = Watch(ScriptedFleet(FakeClock(), [0.1]), summary_every_s=3600,
                  pipelines=[Pipeline(outbox, RecordingSink(), documents) for outbox in outboxes])
    watch._take_sample()
    assert len(built) == 1
    assert [len(outbox) for outbox in outboxes] == [1, 1]
    assert watch.queued() == 2
    for outbox in outboxes:
        outbox.close()


def test_one_sink_whose_documents_fail_to_build_costs_the_others_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(shared: SampleDocuments) -> list[Document]:
        raise KeyError("bug")

    outboxes = [Outbox(), Outbox()]
    watch = Watch(ScriptedFleet(FakeClock(), [0.1]), summary_every_s=3600,
                  pipelines=[Pipeline(outboxes[0], RecordingSink(), broken),
                             Pipeline(outboxes[1], RecordingSink())])
    watch._take_sample()
    assert [len(outbox) for outbox in outboxes] == [0, 1]
    assert "recording: building the documents of a sample failed" in caplog.text
    for outbox in outboxes:
        outbox.close()


def test_a_watch_needs_a_sink() -> None:
    with pytest.raises(ValueError, match="at least one sink"):
        Watch(Fleet([]))


def test_freed_memory_is_given_back_after_the_first_sample_then_every_10_seconds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    released: list[int] = []
    watch_ref: list[Watch] = []
    monkeypatch.setattr("lag_exporter.service.release_freed_memory",
                        lambda: released.append(watch_ref[0].samples_taken))
    clock = FakeClock()
    watch = Watch(ScriptedFleet(clock, [0.1] * 35), Outbox(), RecordingSink(), interval_s=1.0,
                  summary_every_s=3600, clock=clock)
    watch_ref.append(watch)
    watch._stop = ClockedStop(clock)
    watch.run(max_samples=35)
    assert released == [1, 11, 21, 31]  # seconds 0.1, 10.1, 20.1, 30.1: not every tick
