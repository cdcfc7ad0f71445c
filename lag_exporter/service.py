"""`watch`: sample on a fixed schedule, hand each sample to the outbox, deliver in the background.

Tick k starts at start + k x interval on the monotonic clock, so the schedule never drifts. A
sample that overruns skips the ticks it covered (and says so) instead of bunching samples up.
Sampling never waits on a sink: each sink has its own pipeline (its documents, its outbox, its
delivery thread), so a sink that is down queues its own samples and never delays the others.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from lag_exporter.documents import Document, WideDocuments, sample_documents
from lag_exporter.errors import SinkError
from lag_exporter.fleet import Fleet
from lag_exporter.gc_tuning import RELEASE_EVERY_S, relax_gc, release_freed_memory
from lag_exporter.lag import lag_total, partitions_unknown
from lag_exporter.model import GroupLag, PartitionLag, Sample
from lag_exporter.outbox import Outbox
from lag_exporter.sinks import DeliveryReport, Sink
from lag_exporter.status import OK, group_status, status_changes, worst_status

log = logging.getLogger(__name__)

ON_SCHEDULE_TICKS = 10
"""On-time ticks after skipped ones before "on schedule again" is logged (no flapping)."""
SUMMARY_WORST = 5
"""Groups named in the summary line; the rest are counted."""
WARM_UP_MAX_S = 5.0
"""Longest wait for the clusters' clients before the first tick (fleet.py's warm-up): a cluster
that is down at start delays the first documents of the others by no more than this."""


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
        self.rejected = 0
        """Documents the sink refused for good (e.g. a mapping conflict), in all."""
        self.failure: str | None = None
        """Why delivery is failing now; None while it works."""
        self._rejection_reasons: set[str] = set()
        self._stop_after = threading.Event()

    def run(self) -> None:
        """Never ends before finish(): any failure, a sink's or an unexpected one (a closed
        stdout pipe, a bug), is logged when it starts or changes, and the batch retried."""
        backoff = 0.5
        while True:
            batch = self.outbox.oldest(wait_s=0.2)
            if batch is None:
                if self._stop_after.is_set():
                    return
                continue
            try:
                report = self.sink.write(batch.documents)
            except Exception as error:
                unexpected = not isinstance(error, SinkError)
                self._failed(f"{type(error).__name__}: {error}" if unexpected else str(error),
                             error if unexpected else None)
                if self._stop_after.wait(backoff):
                    return  # shutting down: what is left stays spooled
                backoff = min(backoff * 2, self.max_backoff_s)
                continue
            backoff = 0.5
            self._recovered()
            self._note_rejected(report, len(batch.documents))
            self.outbox.delivered(batch)
            self.delivered += 1

    def _failed(self, reason: str, unexpected: BaseException | None = None) -> None:
        self.failures += 1
        if reason != self.failure:
            log.error("%s: delivery failing, samples queue up (%d waiting): %s",
                      self.sink.name, len(self.outbox), reason,
                      exc_info=unexpected)  # a traceback only for what should not happen
        self.failure = reason

    def _recovered(self) -> None:
        if self.failure is not None:
            log.warning("%s: delivery recovered, %d sample(s) still queued",
                        self.sink.name, len(self.outbox))
        self.failure = None

    def _note_rejected(self, report: DeliveryReport, sent: int) -> None:
        """Rejected documents are counted; logged when the reason changes, not per batch."""
        self.rejected += len(report.rejected)
        reasons = set(report.rejected)
        if reasons and reasons != self._rejection_reasons:
            log.error("%s rejected %d of %d document(s) of a sample (%d in all): %s",
                      self.sink.name, len(report.rejected), sent, self.rejected,
                      "; ".join(sorted(reasons)[:3]))
        self._rejection_reasons = reasons

    def finish(self, timeout_s: float) -> bool:
        """Deliver what is queued within timeout_s; True if nothing is left."""
        drained = self.outbox.wait_until_empty(timeout_s)
        self.request_stop()
        self.join(timeout=1.0)
        return drained

    def request_stop(self) -> None:
        """Stop once the batch in flight is done (at once while backing off)."""
        self._stop_after.set()


class SampleDocuments:
    """The documents of one sample in each shape, each built once however many sinks use it."""

    def __init__(self, sample: Sample,
                 wide: Callable[[Sample], list[Document]] = sample_documents) -> None:
        self.sample = sample
        self.wide = wide
        """What builds the wide documents (watch: one WideDocuments, sample after sample)."""
        self._built: dict[Callable[[Sample], list[Document]], list[Document]] = {}

    def get(self, build: Callable[[Sample], list[Document]]) -> list[Document]:
        if build not in self._built:
            self._built[build] = build(self.sample)
        return self._built[build]


def wide_documents(shared: SampleDocuments) -> list[Document]:
    return shared.get(shared.wide)


class Pipeline:
    """One sink's own path: the documents it wants of each sample, its outbox, its delivery."""

    def __init__(self, outbox: Outbox, sink: Sink,
                 documents: Callable[[SampleDocuments], list[Document]] = wide_documents,
                 max_backoff_s: float = 10.0) -> None:
        self.outbox = outbox
        self.delivery = Delivery(outbox, sink, max_backoff_s)
        self.documents = documents

    @property
    def name(self) -> str:
        return self.delivery.sink.name

    def put(self, shared: SampleDocuments) -> None:
        documents = self.documents(shared)
        if documents:
            self.outbox.put(documents)


@dataclass
class GroupHealth:
    """Logs a failure once when it starts and once when it ends, not every tick.

    When every group of a cluster fails (broker down, refused credentials) that is one line for
    the cluster instead of one per group; groups that were failing before keep their state (no
    "sampling again" for them while the whole cluster is down). Groups and clusters that are no
    longer sampled are forgotten.
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
            if cluster_down:
                continue
            for g in group_lags:
                self._transition(("group", cluster, g.group), f"cluster {cluster} group {g.group}",
                                 g.error)
        self._forget_unsampled(sample, by_cluster)

    def _forget_unsampled(self, sample: Sample, by_cluster: dict[str, list[GroupLag]]) -> None:
        present = {(g.cluster, g.group) for g in sample.groups}
        known_clusters = set(by_cluster) | set(sample.pending_clusters)
        for key in list(self.failing):
            cluster = key[1]
            group_gone = (key[0] == "group" and cluster in by_cluster
                          and (cluster, key[2]) not in present)
            if cluster not in known_clusters or group_gone:
                self.failing.discard(key)

    def _transition(self, key: tuple[str, ...], what: str, error: str | None) -> None:
        if error and key not in self.failing:
            self.failing.add(key)
            log.error("%s: cannot sample: %s", what, error)
        elif not error and key in self.failing:
            self.failing.discard(key)
            log.warning("%s: sampling again", what)


_GroupStatuses = tuple[tuple[PartitionLag, ...], dict[tuple[str, str, str], str],
                       dict[tuple[str, str, str], tuple[int, str]]]


def _statuses_of(group_lag: GroupLag) -> tuple[dict[tuple[str, str, str], str],
                                               dict[tuple[str, str, str], tuple[int, str]]]:
    """The group's status per cluster x group x topic, and per topic its most severe partition
    that is not OK (number, status), for the log line."""
    by_topic: dict[str, list[str]] = {}
    worst: dict[tuple[str, str, str], tuple[int, str]] = {}
    for p in group_lag.partitions:
        if p.status is not None:
            by_topic.setdefault(p.topic, []).append(p.status)
            key = (group_lag.cluster, group_lag.group, p.topic)
            named = worst.get(key)
            if p.status != OK and (named is None
                                   or worst_status((named[1], p.status)) != named[1]):
                worst[key] = (p.partition, p.status)
    return ({(group_lag.cluster, group_lag.group, topic): group_status(statuses)
             for topic, statuses in by_topic.items()}, worst)


class Watch:
    def __init__(
        self,
        fleet: Fleet,
        outbox: Outbox | None = None,
        sink: Sink | None = None,
        interval_s: float = 1.0,
        summary_every_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        pipelines: Sequence[Pipeline] = (),
    ) -> None:
        """One sink (outbox and sink, the wide documents) or several (pipelines)."""
        self.fleet = fleet
        if outbox is not None and sink is not None:
            pipelines = (Pipeline(outbox, sink), *pipelines)
        if not pipelines:
            raise ValueError("a watch needs at least one sink")
        self.pipelines = tuple(pipelines)
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
        self._wide_documents = WideDocuments()
        self._warnings_shown: set[str] = set()
        self._last_summary = 0.0
        self._statuses: dict[tuple[str, str, str], str] = {}
        """Status of each cluster x group x topic at the last sample, to log changes."""
        self._group_statuses: dict[tuple[str, str], _GroupStatuses] = {}
        """Per cluster x group, its statuses per topic and most severe partitions, with the
        partitions they were read from: a group passed on unchanged is not walked again."""
        self._skipping_since: int | None = None
        """ticks_skipped when the current episode of skipped ticks began; None: on schedule."""
        self._on_time = 0

    @property
    def outbox(self) -> Outbox:
        """The first sink's outbox (the only one of a single-sink watch)."""
        return self.pipelines[0].outbox

    @property
    def delivery(self) -> Delivery:
        """The first sink's delivery thread."""
        return self.pipelines[0].delivery

    def queued(self) -> int:
        """Samples waiting, all sinks together."""
        return sum(len(pipeline.outbox) for pipeline in self.pipelines)

    def stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        """Reload before the next tick (from a signal handler: no work done here)."""
        self._reload_requested.set()

    def run(self, max_samples: int | None = None, shutdown_timeout_s: float = 4.0) -> None:
        relax_gc()  # a long-running process from here on
        for pipeline in self.pipelines:
            pipeline.delivery.start()
        # The schedule starts once the clients are ready: a first sample that starts them
        # overran the interval and the second tick was skipped.
        self.fleet.warm_up(WARM_UP_MAX_S, self._stop)
        start = self._clock()
        self._last_summary = start
        next_release = start
        tick = 0
        try:
            while not self._stop.is_set():
                if self._stop.wait(max(0.0, start + tick * self.interval_s - self._clock())):
                    break
                self._take_sample()
                if max_samples is not None and self.samples_taken >= max_samples:
                    break
                if self._clock() >= next_release:
                    release_freed_memory()
                    next_release = self._clock() + RELEASE_EVERY_S
                # Right after a sample, so that a replaced Kafka client (new certificates) has
                # the rest of the interval to start before the next tick: no gap in documents.
                if self._reload_requested.is_set() and self.reload is not None:
                    self._reload_requested.clear()
                    self._reload()
                skipped = ticks_to_skip(start, self.interval_s, tick, self._clock())
                self._note_schedule(skipped)
                tick += 1 + skipped
        finally:
            self._flush(shutdown_timeout_s)
            self.fleet.close()
            behind = ", ".join(f"{name} {count}" for name, count
                               in sorted(self.fleet.ticks_skipped.items()))
            delivered = "; ".join((f"{p.name}: " if len(self.pipelines) > 1 else "")
                                  + f"{p.delivery.delivered} delivered, {p.outbox.dropped} dropped"
                                  for p in self.pipelines)
            log.info("stopped after %d samples (%d ticks skipped%s, %s)",
                     self.samples_taken, self.ticks_skipped,
                     f"; skipped by slow clusters: {behind}" if behind else "", delivered)

    def _flush(self, timeout_s: float) -> None:
        """Every sink delivers what it can within one shared timeout_s (they send
        concurrently); what is left stays in each one's spool."""
        deadline = time.monotonic() + timeout_s
        for pipeline in self.pipelines:
            drained = pipeline.outbox.wait_until_empty(max(0.0, deadline - time.monotonic()))
            if not drained:
                log.warning("%sstopping with %d undelivered sample(s)%s",
                            f"{pipeline.name}: " if len(self.pipelines) > 1 else "",
                            len(pipeline.outbox),
                            " (kept in the spool)" if pipeline.outbox.spool_dir else "")
        for pipeline in self.pipelines:
            pipeline.delivery.request_stop()
        for pipeline in self.pipelines:
            pipeline.delivery.join(timeout=max(0.0, deadline + 1.0 - time.monotonic()))
            pipeline.outbox.close()

    def _reload(self) -> None:
        """A reload that fails for any reason keeps the running config (and the process)."""
        assert self.reload is not None
        try:
            self.reload()
        except Exception:
            log.exception("config reload failed, keeping the running config")

    def _note_schedule(self, skipped: int) -> None:
        """The first skipped tick of an episode is a warning; the rest are counted, and the
        end of the episode is logged once the schedule has held for ON_SCHEDULE_TICKS ticks."""
        if skipped:
            if self._skipping_since is None:
                log.warning("sample took longer than the interval: skipped %d tick(s)", skipped)
                self._skipping_since = self.ticks_skipped
            self.ticks_skipped += skipped
            self._on_time = 0
        elif self._skipping_since is not None:
            self._on_time += 1
            if self._on_time >= ON_SCHEDULE_TICKS:
                log.info("sampling on schedule again (%d tick(s) skipped meanwhile)",
                         self.ticks_skipped - self._skipping_since)
                self._skipping_since = None

    def _take_sample(self) -> None:
        # A slow cluster may use most of the interval, never more: the others' ticks go on.
        sample = self.fleet.sample(wait_s=self.interval_s * 0.9)
        self.samples_taken += 1
        for warning in sorted(set(sample.warnings) - self._warnings_shown):
            log.warning("%s", warning)  # once while it lasts, not every tick
        self._warnings_shown = set(sample.warnings)
        self._health.update(sample)
        self._log_status_changes(sample)
        shared = SampleDocuments(sample, self._wide_documents)
        for pipeline in self.pipelines:
            try:
                pipeline.put(shared)
            except Exception:  # one sink's documents must never cost the others theirs
                log.exception("%s: building the documents of a sample failed", pipeline.name)
        for observe in self.sample_observers:
            try:
                observe(sample)
            except Exception:  # metrics or health must never stop the sampling
                log.exception("a sample observer failed")
        self._maybe_summarise(sample)

    def _log_status_changes(self, sample: Sample) -> None:
        """One line per change of a group x topic's status (not per partition, not per tick)."""
        current = {key: value for key, value in self._statuses.items()
                   if key[0] in sample.pending_clusters}  # their sample comes later
        worst: dict[tuple[str, str, str], tuple[int, str]] = {}
        group_statuses: dict[tuple[str, str], _GroupStatuses] = {}
        for group_lag in sample.groups:
            if group_lag.error:  # unknown now: keep what was known
                current.update((key, value) for key, value in self._statuses.items()
                               if key[:2] == (group_lag.cluster, group_lag.group))
                continue
            known = self._group_statuses.get((group_lag.cluster, group_lag.group))
            if known is None or known[0] is not group_lag.partitions:
                known = (group_lag.partitions, *_statuses_of(group_lag))
            group_statuses[(group_lag.cluster, group_lag.group)] = known
            current.update(known[1])
            worst.update(known[2])
        self._group_statuses = group_statuses
        for (cluster, group, topic), old, new in status_changes(self._statuses, current):
            if new is None:
                continue  # no longer reported: the group or topic is gone, not recovered
            named = worst.get((cluster, group, topic))
            detail = f" (p{named[0]} {named[1]})" if named else ""
            log.log(logging.WARNING if new != OK else logging.INFO,
                    "cluster %s group %s topic %s: status %s -> %s%s", cluster, group, topic,
                    old or "new", new, detail)
        self._statuses = current

    def _maybe_summarise(self, sample: Sample) -> None:
        now = self._clock()
        # Half an interval of slack: ticks jitter by milliseconds around the summary period.
        if now - self._last_summary < self.summary_every_s - self.interval_s / 2:
            return
        self._last_summary = now
        log.info("%d samples, last took %.0f ms, %s, %d queued for delivery",
                 self.samples_taken, sample.duration_s * 1000, summarise_lag(sample),
                 self.queued())


def summarise_lag(sample: Sample, worst: int = SUMMARY_WORST) -> str:
    """Pure: the lag of a sample in one short line, worst groups first, whatever the count:
    'lag 1200 in 3 group(s): g1=1000 g2=200 g3=0' or '..., +497 more; 2 failing: a, b'."""
    totals: list[tuple[int, str]] = []
    notes: list[str] = []
    failing: list[str] = []
    for group_lag in sample.groups:
        name = group_lag.group if len({g.cluster for g in sample.groups}) == 1 \
            else f"{group_lag.cluster}/{group_lag.group}"
        if group_lag.error:
            failing.append(name)
            continue
        total = lag_total(group_lag.partitions)
        unknown = partitions_unknown(group_lag.partitions)
        if unknown:
            notes.append(f"{name}>={total or 0} ({unknown} partition(s) unknown)")
        elif total is None:
            notes.append(f"{name}=no commits yet")
        else:
            totals.append((total, name))
    totals.sort(key=lambda item: (-item[0], item[1]))
    shown = [f"{name}={total}" for total, name in totals] + notes
    line = (f"lag {sum(total for total, _ in totals)} in {len(totals)} group(s)"
            + (f": {' '.join(shown[:worst])}" if shown else "")
            + (f", +{len(shown) - worst} more" if len(shown) > worst else ""))
    if failing:
        line += (f"; {len(failing)} failing: {', '.join(sorted(failing)[:worst])}"
                 + (", ..." if len(failing) > worst else ""))
    if sample.pending_clusters:
        line += f"; still sampling {', '.join(sample.pending_clusters)}"
    return line


class Signals:
    """SIGINT/SIGTERM ask the loop to stop after the sample in flight; a second one forces the
    exit. SIGHUP asks for a config reload.

    Installed on the first line of `watch`: a signal that arrives while the spool is restored
    or Elasticsearch is first contacted must not kill the process (systemd would count that as
    a clean exit). What arrives before the watch exists is handed to it by attach().
    """

    def __init__(self) -> None:
        self._watch: Watch | None = None
        self._stop_requested = False
        self._reload_requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Signals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._on_stop)
        self._previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._on_reload)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def attach(self, watch: Watch) -> None:
        self._watch = watch
        if self._stop_requested:
            watch.stop()
        if self._reload_requested:
            watch.request_reload()

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        if self._stop_requested:
            raise KeyboardInterrupt
        self._stop_requested = True
        log.info("received %s: finishing the current sample and flushing",
                 signal.Signals(signum).name)
        if self._watch is not None:
            self._watch.stop()

    def _on_reload(self, signum: int, frame: FrameType | None) -> None:
        log.info("received SIGHUP: reloading the config before the next tick")
        self._reload_requested = True
        if self._watch is not None:
            self._watch.request_reload()


@contextmanager
def stop_on_signals(watch: Watch) -> Iterator[None]:
    """Signals for a watch that already exists (tests, embedding)."""
    with Signals() as signals:
        signals.attach(watch)
        yield
