import logging
import threading
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from lag_exporter.documents import Document
from lag_exporter.errors import SinkError
from lag_exporter.model import GroupLag, PartitionLag, Sample
from lag_exporter.outbox import Outbox
from lag_exporter.service import Delivery, GroupHealth, ticks_to_skip
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
