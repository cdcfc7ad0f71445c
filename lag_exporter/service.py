"""`watch`: sample on a fixed schedule, hand each sample to the outbox, deliver in the background.

Tick k starts at start + k x interval on the monotonic clock, so the schedule never drifts. A
sample that overruns skips the ticks it covered (and says so) instead of bunching samples up.
Sampling never waits on the sink: the outbox takes the documents and a delivery thread sends them.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType

from lag_exporter.documents import sample_documents
from lag_exporter.errors import SinkError
from lag_exporter.fleet import Fleet
from lag_exporter.gc_tuning import relax_gc
from lag_exporter.lag import lag_total
from lag_exporter.model import GroupLag, Sample
from lag_exporter.outbox import Outbox
from lag_exporter.sinks import Sink

log = logging.getLogger(__name__)


def ticks_to_skip(start: float, interval: float, tick: int, now: float) -> int:
    """How many scheduled ticks after `tick` have already passed at `now`."""
    next_due = start + (tick + 1) * interval
    if now <= next_due:
        return 0
    return math.floor((now - start) / interval) - tick


class Delivery(threading.Thread):
    """Sends the outbox's batches to the sink, oldest first, retrying with backoff."""

    def __init__(self, outbox: Outbox, sink: Sink, max_backoff_s: float = 10.0) -> None:
        super().__init__(name=f"deliver-{sink.name}", daemon=True)
        self.outbox = outbox
        self.sink = sink
        self.max_backoff_s = max_backoff_s
        self.delivered = 0
        self.failures = 0
        """Failed delivery attempts, in all."""
        self.failure: str | None = None
        self._stop_after = threading.Event()

    def run(self) -> None:
        backoff = 0.5
        while True:
            batch = self.outbox.oldest(wait_s=0.2)
            if batch is None:
                if self._stop_after.is_set():
                    return
                continue
            try:
                report = self.sink.write(batch.documents)
            except SinkError as error:
                self._failed(str(error))
                if self._stop_after.wait(backoff):
                    return  # shutting down: what is left stays spooled
                backoff = min(backoff * 2, self.max_backoff_s)
                continue
            backoff = 0.5
            self._recovered()
            for line in report.rejected:
                log.error("%s rejected a document: %s", self.sink.name, line)
            self.outbox.delivered(batch)
            self.delivered += 1

    def _failed(self, reason: str) -> None:
        self.failures += 1
        if reason != self.failure:
            log.error("%s: delivery failing, samples queue up (%d waiting): %s",
                      self.sink.name, len(self.outbox), reason)
        self.failure = reason

    def _recovered(self) -> None:
        if self.failure is not None:
            log.warning("%s: delivery recovered, %d sample(s) still queued",
                        self.sink.name, len(self.outbox))
        self.failure = None

    def finish(self, timeout_s: float) -> bool:
        """Deliver what is queued within timeout_s; True if nothing is left."""
        drained = self.outbox.wait_until_empty(timeout_s)
        self._stop_after.set()
        self.join(timeout=1.0)
        return drained


@dataclass
class GroupHealth:
    """Logs a failure once when it starts and once when it ends, not every tick.

    When every group of a cluster fails (broker down, refused credentials) that is one line for
    the cluster instead of one per group.
    """

    failing: set[tuple[str, ...]] = field(default_factory=set)

    def update(self, sample: Sample) -> None:
        by_cluster: dict[str, list[GroupLag]] = {}
        for group_lag in sample.groups:
            by_cluster.setdefault(group_lag.cluster, []).append(group_lag)
        for cluster, group_lags in by_cluster.items():
            cluster_down = all(g.error for g in group_lags)
            self._transition(("cluster", cluster), f"cluster {cluster}",
                             group_lags[0].error if cluster_down else None)
            for g in group_lags:
                self._transition(("group", cluster, g.group), f"cluster {cluster} group {g.group}",
                                 None if cluster_down else g.error)

    def _transition(self, key: tuple[str, ...], what: str, error: str | None) -> None:
        if error and key not in self.failing:
            self.failing.add(key)
            log.error("%s: cannot sample: %s", what, error)
        elif not error and key in self.failing:
            self.failing.discard(key)
            log.warning("%s: sampling again", what)


class Watch:
    def __init__(
        self,
        fleet: Fleet,
        outbox: Outbox,
        sink: Sink,
        interval_s: float = 1.0,
        summary_every_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fleet = fleet
        self.outbox = outbox
        self.delivery = Delivery(outbox, sink)
        self.interval_s = interval_s
        self.summary_every_s = summary_every_s
        self.samples_taken = 0
        self.ticks_skipped = 0
        self.sample_observers: list[Callable[[Sample], None]] = []
        """Called with every sample, in the sampling thread (metrics, health): keep them cheap."""
        self.reload: Callable[[], None] | None = None
        self._clock = clock
        self._stop = threading.Event()
        self._reload_requested = threading.Event()
        self._health = GroupHealth()
        self._warnings_shown: set[str] = set()
        self._last_summary = 0.0

    def stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        """Reload before the next tick (from a signal handler: no work done here)."""
        self._reload_requested.set()

    def run(self, max_samples: int | None = None, shutdown_timeout_s: float = 4.0) -> None:
        relax_gc()  # a long-running process from here on
        self.delivery.start()
        start = self._clock()
        self._last_summary = start
        tick = 0
        try:
            while not self._stop.is_set():
                if self._stop.wait(max(0.0, start + tick * self.interval_s - self._clock())):
                    break
                if self._reload_requested.is_set() and self.reload is not None:
                    self._reload_requested.clear()
                    self.reload()
                self._take_sample()
                if max_samples is not None and self.samples_taken >= max_samples:
                    break
                skipped = ticks_to_skip(start, self.interval_s, tick, self._clock())
                if skipped:
                    self.ticks_skipped += skipped
                    log.warning("sample took longer than the interval: skipped %d tick(s)",
                                skipped)
                tick += 1 + skipped
        finally:
            if not self.delivery.finish(shutdown_timeout_s):
                log.warning("stopping with %d undelivered sample(s)%s", len(self.outbox),
                            " (kept in the spool)" if self.outbox.spool_dir else "")
            self.outbox.close()
            self.fleet.close()
            behind = ", ".join(f"{name} {count}" for name, count
                               in sorted(self.fleet.ticks_skipped.items()))
            log.info("stopped after %d samples (%d ticks skipped%s, %d delivered, %d dropped)",
                     self.samples_taken, self.ticks_skipped,
                     f"; skipped by slow clusters: {behind}" if behind else "",
                     self.delivery.delivered, self.outbox.dropped)

    def _take_sample(self) -> None:
        # A slow cluster may use most of the interval, never more: the others' ticks go on.
        sample = self.fleet.sample(wait_s=self.interval_s * 0.9)
        self.samples_taken += 1
        for warning in sorted(set(sample.warnings) - self._warnings_shown):
            log.warning("%s", warning)  # once while it lasts, not every tick
        self._warnings_shown = set(sample.warnings)
        self._health.update(sample)
        documents = sample_documents(sample)
        if documents:
            self.outbox.put(documents)
        for observe in self.sample_observers:
            observe(sample)
        self._maybe_summarise(sample)

    def _maybe_summarise(self, sample: Sample) -> None:
        now = self._clock()
        # Half an interval of slack: ticks jitter by milliseconds around the summary period.
        if now - self._last_summary < self.summary_every_s - self.interval_s / 2:
            return
        self._last_summary = now
        parts = []
        for group_lag in sample.groups:
            total = lag_total(group_lag.partitions)
            parts.append(f"{group_lag.group}={'error' if group_lag.error else total}")
        log.info("%d samples, last took %.0f ms, lag %s, %d queued for delivery",
                 self.samples_taken, sample.duration_s * 1000, " ".join(parts), len(self.outbox))


@contextmanager
def stop_on_signals(watch: Watch) -> Iterator[None]:
    """SIGINT/SIGTERM ask the loop to stop after the sample in flight; a second one forces it.
    SIGHUP asks for a config reload."""
    received: list[int] = []

    def handle(signum: int, frame: FrameType | None) -> None:
        if received:
            raise KeyboardInterrupt
        received.append(signum)
        log.info("received %s: finishing the current sample and flushing",
                 signal.Signals(signum).name)
        watch.stop()

    def reload(signum: int, frame: FrameType | None) -> None:
        log.info("received SIGHUP: reloading the config before the next tick")
        watch.request_reload()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, reload)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
