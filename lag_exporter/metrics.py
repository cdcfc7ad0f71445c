"""Prometheus metrics and a health verdict, both computed from the samples `watch` takes.

No HTTP here (see http_endpoint.py). The lag gauges are built from the LAST sample only, so a
group or partition that is no longer sampled has no series at all: no stale values, no NaN, no
-1. Lag metric names and labels are kafka-lag-exporter's, so dashboards built for it work
unchanged.

Rendered once per sample, not per scrape: everything that comes from the samples (lag series,
counters, the duration histogram) is rendered at the first scrape after a sample and the bytes
are reused until the next sample (at estate c a render costs ~16 ms of CPU when only the
seconds aged, ~90 ms when every group moved; and scrapers may be several). The delivery
numbers and where committed offsets come from are read and rendered at every scrape: a few
lines, and they must be current.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from lag_exporter.lag import partitions_unknown
from lag_exporter.model import GroupLag, PartitionLag, Sample
from lag_exporter.offsets_topic import FollowerState
from lag_exporter.status import group_status

SAMPLE_DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Seconds. A sample normally takes milliseconds; the top buckets show ticks overrunning."""

HEALTH_FLOOR_S = 3.0
"""Shortest staleness limit, so a very short interval does not make health flap."""
DELIVERY_FLOOR_S = 10.0
"""Shortest delivery limit: a bulk request may take a few seconds on a busy node."""

_GROUP = ("cluster_name", "group")
_PARTITION = ("cluster_name", "group", "topic", "partition")


@dataclass(frozen=True)
class DeliveryState:
    """The delivery side's numbers, read when Prometheus scrapes (not when a sample is queued:
    then the sample just put would always show as queued)."""

    queued: int
    dropped_total: int
    failures_total: int
    rejected_total: int = 0
    oldest_age_s: float = 0.0
    """Age of the oldest undelivered sample; 0 when nothing waits."""


_Delivery = DeliveryState


@dataclass(frozen=True)
class _State:
    """What one scrape sees, copied under the lock so a scrape never mixes two ticks."""

    sample: Sample | None
    """The latest known groups of every cluster (see LagMetrics.observe)."""
    samples_total: int
    duration_buckets: tuple[int, ...]
    """Non-cumulative counts per SAMPLE_DURATION_BUCKETS bound, then one for +Inf."""
    duration_sum: float
    group_errors: dict[tuple[str, str], int]
    generation: int = 0
    """How many samples were observed when this state was copied (the render cache's key)."""


class LagMetrics:
    """The exporter's Prometheus registry, fed one Sample per tick.

    observe() runs on the sampling thread and only swaps a reference and bumps counters; the
    series are built when Prometheus scrapes, from whatever sample was observed last.

    The sample duration is a histogram rather than a summary: buckets aggregate across instances
    and give quantiles through histogram_quantile(), while the Python client's Summary has no
    quantiles at all. It is kept here, under the same lock as the rest, rather than in a
    prometheus_client Histogram, so that one scrape sees one consistent state (its count always
    equals lag_exporter_samples_total) and no extra `_created` series appears.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._lock = threading.Lock()
        self._sample: Sample | None = None
        self._samples_total = 0
        self._duration_buckets = [0] * (len(SAMPLE_DURATION_BUCKETS) + 1)
        self._duration_sum = 0.0
        self._group_errors: dict[tuple[str, str], int] = {}
        self._delivery: _Delivery | None = None
        self._delivery_source: Callable[[], DeliveryState] | None = None
        self._followers_source: Callable[[], Sequence[FollowerState]] | None = None
        self._generation = 0
        self._render_lock = threading.Lock()
        self._rendered: tuple[int, bytes] | None = None
        """(generation, text) of the per-sample part, reused until the next sample."""
        self._pinned: _State | None = None
        self._lag_text = _LagText()
        self.renders = 0
        """How often the per-sample part was rendered (once per sample scraped)."""
        self.registry.register(_SampleCollector(self._pinned_state))
        self.live_registry = CollectorRegistry()
        """What is read at every scrape: delivery, and where committed offsets come from."""
        self.live_registry.register(_LiveCollector(self._live_state))

    def observe(self, sample: Sample) -> None:
        """Make `sample` the one scrapes report, and count it (and its failed groups).

        A cluster whose sample is still running at this tick (`pending_clusters`) keeps the
        groups of its previous sample, so its series do not blink out for a tick; a cluster
        neither sampled nor pending (removed from the config) and a group no longer sampled
        lose their series and counters at once (no unbounded growth with short-lived groups).
        """
        duration = max(0.0, sample.duration_s)
        bucket = bisect.bisect_left(SAMPLE_DURATION_BUCKETS, duration)  # first bound >= duration
        with self._lock:
            self._sample = _merge_pending(self._sample, sample)
            self._generation += 1
            self._samples_total += 1
            self._duration_buckets[bucket] += 1
            self._duration_sum += duration
            current = {(g.cluster, g.group) for g in self._sample.groups}
            for key in set(self._group_errors) - current:
                del self._group_errors[key]
            for group_lag in sample.groups:
                key = (group_lag.cluster, group_lag.group)
                # Start every group's counter at 0 so rate() sees its first error.
                self._group_errors[key] = (self._group_errors.get(key, 0)
                                           + (1 if group_lag.error else 0))

    def read_delivery_from(self, source: Callable[[], DeliveryState]) -> None:
        """Read the delivery numbers from `source` at every scrape."""
        with self._lock:
            self._delivery_source = source

    def read_offsets_sources_from(self, source: Callable[[], Sequence[FollowerState]]) -> None:
        """Read where each cluster's committed offsets come from at every scrape."""
        with self._lock:
            self._followers_source = source

    def read_ha_from(self, source: Callable[[], Sequence[tuple[str, str, str, int, int]]]
                     ) -> None:
        """--ha-group: per cluster (cluster, HA group, topic deciding ownership, groups
        reported in the last sample, partitions owned now), read at every scrape."""
        self.live_registry.register(_HaCollector(source))

    def observe_delivery(self, queued: int, dropped_total: int, failures_total: int) -> None:
        """Record the outbox depth and the running totals the delivery side keeps.

        Totals are taken as given (the caller owns them); the outbox series appear only once
        this has been called, so an exporter without delivery does not claim an empty outbox.
        """
        with self._lock:
            self._delivery = _Delivery(queued, dropped_total, failures_total)

    def render(self) -> bytes:
        """Everything in the Prometheus text format: the per-sample part rendered at most
        once per sample (concurrent scrapes wait for one render), the live part every time."""
        with self._render_lock:
            with self._lock:
                generation = self._generation
            if self._rendered is None or self._rendered[0] != generation:
                self._pinned = self._state()  # may be newer than `generation`: then rendered
                self._rendered = (self._pinned.generation, b"".join((
                    self._lag_text.render(self._pinned.sample),
                    generate_latest(self.registry), _group_state_text(self._pinned))))
                self._pinned = None  # again at the next scrape, which is harmless
                self.renders += 1
            sample_part = self._rendered[1]
        return sample_part + generate_latest(self.live_registry)

    def _state(self) -> _State:
        with self._lock:
            return _State(self._sample, self._samples_total, tuple(self._duration_buckets),
                          self._duration_sum, dict(self._group_errors), self._generation)

    def _pinned_state(self) -> _State:
        """The state being rendered (a registry collected outside render() sees the latest)."""
        return self._pinned or self._state()

    def _live_state(self) -> tuple[_Delivery | None, Sequence[FollowerState]]:
        with self._lock:
            delivery_source, delivery = self._delivery_source, self._delivery
            followers_source = self._followers_source
        if delivery_source is not None:
            delivery = delivery_source()
        return delivery, followers_source() if followers_source is not None else ()


def _merge_pending(previous: Sample | None, sample: Sample) -> Sample:
    """`sample`, plus the previous groups of the clusters still being sampled."""
    if previous is None or not sample.pending_clusters:
        return sample
    pending = set(sample.pending_clusters)
    kept = tuple(g for g in previous.groups if g.cluster in pending)
    return replace(sample, groups=sample.groups + kept)


class _SampleCollector:
    """Builds the metric families from a consistent copy of LagMetrics' state."""

    def __init__(self, state: Callable[[], _State]) -> None:
        self._get_state = state

    def collect(self) -> Iterable[Metric]:
        state = self._get_state()
        yield from _exporter_families(state)


class _LiveCollector:
    """The few series read at every scrape."""

    def __init__(self, state: Callable[[], tuple[_Delivery | None, Sequence[FollowerState]]]
                 ) -> None:
        self._get_state = state

    def collect(self) -> Iterable[Metric]:
        delivery, followers = self._get_state()
        if delivery is not None:
            yield from _delivery_families(delivery)
        if followers:
            yield from _follower_families(followers)


_LAG_FAMILIES = (
    # (name, help); the order families are written in
    ("kafka_consumergroup_group_lag", "Group offset lag of a partition."),
    ("kafka_consumergroup_group_offset",
     "Last group consumed (committed) offset of a partition."),
    ("kafka_consumergroup_group_max_lag", "Max group offset lag."),
    ("kafka_consumergroup_group_sum_lag", "Sum of group offset lag."),
    ("kafka_consumergroup_group_topic_sum_lag",
     "Sum of group offset lag across topic partitions."),
    ("kafka_partition_latest_offset", "Latest offset (high watermark) of a partition."),
    ("lag_exporter_partitions_unknown",
     "Partitions with a commit whose end offset could not be read in the last sample: while > 0 "
     "the topic's (and group's) sum and max lag are not exported."),
    ("kafka_consumergroup_group_lag_seconds",
     "How long ago the record at the committed offset was written (0 when caught up)."),
    ("kafka_consumergroup_group_max_lag_seconds",
     "Max group lag in seconds (only when every partition's is known)."),
    ("lag_exporter_group_topic_status",
     "1 for the group x topic's status (OK, WARN or ERR) over the recent samples."),
)


class _HaCollector:
    """--ha-group: this instance's share, read at every scrape."""

    def __init__(self, source: Callable[[], Sequence[tuple[str, str, str, int, int]]]) -> None:
        self._source = source

    def collect(self) -> Iterable[Metric]:
        groups = GaugeMetricFamily(
            "lag_exporter_ha_owned_groups",
            "--ha-group: consumer groups this instance reported in the last sample (those of "
            "the partitions it is assigned).", labels=("cluster_name", "ha_group"))
        partitions = GaugeMetricFamily(
            "lag_exporter_ha_owned_partitions",
            "--ha-group: partitions of the topic deciding ownership assigned to this instance "
            "now.", labels=("cluster_name", "ha_group", "topic"))
        for cluster, ha_group, topic, owned_groups, owned_partitions in self._source():
            groups.add_metric((cluster, ha_group), owned_groups)
            partitions.add_metric((cluster, ha_group, topic), owned_partitions)
        return [groups, partitions]


def _label(value: str) -> str:
    """A label value escaped as the text format wants it."""
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return value


def _number(value: float) -> str:
    if isinstance(value, int) or -math.inf < value < math.inf:
        return repr(value)
    return "NaN" if math.isnan(value) else "+Inf" if value > 0 else "-Inf"


class _GroupText:
    """One group's lines of each lag family (partition-level ones joined, encoded), reused
    while the group's partitions are equal to those of the previous sample (idle groups, groups
    between two commits): comparing two tuples of NamedTuples is far cheaper than formatting
    them. When only their age changed (GroupLag.seconds_age), only the seconds values are
    formatted again, behind labels built once."""

    __slots__ = ("complete", "families", "partitions", "seconds", "seconds_age", "watermarks")

    def __init__(self, group_lag: GroupLag) -> None:
        self.partitions = group_lag.partitions
        self.seconds_age = group_lag.seconds_age
        self.watermarks: dict[tuple[str, int], int] = {}
        lines, self.complete = _group_lines(group_lag, self.watermarks)
        self.families = {name: text.encode() for name, text in lines.items()}
        self.seconds = _SecondsLines(group_lag, self.complete)
        self.families.update(self.seconds.render(self.seconds_age))

    def age(self, group_lag: GroupLag) -> None:
        """The same partitions, seconds_age later."""
        self.seconds_age = group_lag.seconds_age
        self.families.update(self.seconds.render(self.seconds_age))


_LAG, _OFFSET, _MAX, _SUM, _TOPIC_SUM, _LATEST, _UNKNOWN, _SECONDS, _MAX_SECONDS, _STATUS = (
    name for name, _ in _LAG_FAMILIES)


def _group_labels(group_lag: GroupLag) -> str:
    return f'cluster_name="{_label(group_lag.cluster)}",group="{_label(group_lag.group)}"'


def _group_lines(group_lag: GroupLag, watermarks: dict[tuple[str, int], int]
                 ) -> tuple[dict[str, str], bool]:
    """The group's lines per family but the seconds ones (each line ending in a newline), and
    whether every partition's end offset is known; fills `watermarks`."""
    lines: dict[str, list[str]] = {}
    group_labels = _group_labels(group_lag)
    by_topic: dict[str, list[PartitionLag]] = {}
    for p in group_lag.partitions:
        by_topic.setdefault(p.topic, []).append(p)
        if p.high_watermark is not None:
            key = (p.topic, p.partition)
            watermarks[key] = max(p.high_watermark, watermarks.get(key, p.high_watermark))
    lag: list[str] = []
    offset: list[str] = []
    every_lag: list[int] = []
    complete = True
    for topic, partitions in by_topic.items():
        topic_labels = f'{group_labels},topic="{_label(topic)}"'
        head = "{" + topic_labels + ',partition="'
        for p in partitions:
            if p.lag is not None:
                lag.append(f'{_LAG}{head}{p.partition}"}} {p.lag}\n')
            if p.committed_offset is not None:
                offset.append(f'{_OFFSET}{head}{p.partition}"}} {p.committed_offset}\n')
        missing = partitions_unknown(partitions)
        lines.setdefault(_UNKNOWN, []).append(f"{_UNKNOWN}{{{topic_labels}}} {missing}\n")
        known = [p.lag for p in partitions if p.lag is not None]
        complete = complete and not missing
        if known and not missing:  # a sum over part of a topic would understate it
            lines.setdefault(_TOPIC_SUM, []).append(
                f"{_TOPIC_SUM}{{{topic_labels}}} {sum(known)}\n")
        every_lag += known
        statuses = [p.status for p in partitions if p.status is not None]
        if statuses:
            lines.setdefault(_STATUS, []).append(
                f'{_STATUS}{{{topic_labels},status="{_label(group_status(statuses))}"}} 1\n')
    if every_lag and complete:
        lines[_MAX] = [f"{_MAX}{{{group_labels}}} {max(every_lag)}\n"]
        lines[_SUM] = [f"{_SUM}{{{group_labels}}} {sum(every_lag)}\n"]
    lines[_LAG], lines[_OFFSET] = lag, offset
    return {name: "".join(group_lines) for name, group_lines in lines.items()
            if group_lines}, complete


class _SecondsLines:
    """A group's seconds lines, as of its sample, and as they read `age` seconds later: a
    lagging partition's seconds grow by the age, a caught-up one's (0) stays 0."""

    __slots__ = ("_lines", "_max_head", "_max_seconds")

    def __init__(self, group_lag: GroupLag, complete: bool) -> None:
        group_labels = _group_labels(group_lag)
        self._lines: list[tuple[str, float | None]] = []
        """(labels up to the value, seconds that age) or (the whole line, None): a line that
        does not change with age (0, or a value that is not a finite number)."""
        every_seconds: list[float] = []
        seconds_complete = True
        heads: dict[str, str] = {}
        for p in group_lag.partitions:
            if p.seconds is None:
                seconds_complete = seconds_complete and p.lag is None
                continue
            head = heads.get(p.topic)
            if head is None:
                head = heads[p.topic] = (f'{_SECONDS}{{{group_labels},topic="{_label(p.topic)}"'
                                         ',partition="')
            head = f'{head}{p.partition}"}} '
            if p.seconds and math.isfinite(p.seconds):
                self._lines.append((head, p.seconds))
            else:
                self._lines.append((f"{head}{_number(p.seconds)}\n", None))
            every_seconds.append(p.seconds)
        self._max_head = f"{_MAX_SECONDS}{{{group_labels}}} "
        self._max_seconds = (max(every_seconds) if every_seconds and complete
                             and seconds_complete else None)
        """None when no group maximum is exported (some partition's lag or seconds unknown)."""

    def render(self, age: float) -> dict[str, bytes]:
        """The seconds families' text `age` seconds after the sample (empty when none)."""
        text = "".join([head if seconds is None else f"{head}{seconds + age!r}\n"
                        for head, seconds in self._lines])
        lines = {_SECONDS: text.encode(), _MAX_SECONDS: b""}
        top = self._max_seconds
        if top is not None:  # seconds are never negative: the largest stays the largest
            lines[_MAX_SECONDS] = f"{self._max_head}{_number(top + age if top else top)}\n".encode()
        return lines


class _LagText:
    """Renders the lag families in the Prometheus text format directly: prometheus_client
    builds an object per series and escapes every label of every line (~0.3-0.6 s of CPU per
    render at 20,000 series). Here labels are escaped once per group and topic, a group whose
    partitions did not change since the last render is not formatted again, and the end offsets
    are not gathered again when no group changed."""

    def __init__(self) -> None:
        self._groups: dict[tuple[str, str], _GroupText] = {}
        self._latest = b""
        """The kafka_partition_latest_offset lines of the last render."""

    def render(self, sample: Sample | None) -> bytes:
        previous, self._groups = self._groups, {}
        chunks: dict[str, list[bytes]] = {name: [] for name, _ in _LAG_FAMILIES}
        changed = False
        for group_lag in sample.groups if sample else ():
            if group_lag.error:
                continue  # no lag series at all rather than zeros
            key = (group_lag.cluster, group_lag.group)
            text = previous.get(key)
            if text is None or text.partitions != group_lag.partitions:
                text = _GroupText(group_lag)
                changed = True
            elif text.seconds_age != group_lag.seconds_age:
                text.age(group_lag)
            self._groups[key] = text
            for name, lines in text.families.items():
                chunks[name].append(lines)
        if changed or len(self._groups) != len(previous):
            self._latest = _latest_offsets(self._groups)
        chunks[_LATEST].append(self._latest)
        out: list[bytes] = []
        for name, help_text in _LAG_FAMILIES:
            out.append(f"# HELP {name} {help_text}\n# TYPE {name} gauge\n".encode())
            out += chunks[name]
        return b"".join(out)


def _latest_offsets(groups: dict[tuple[str, str], _GroupText]) -> bytes:
    """One kafka_partition_latest_offset line per partition that any group reads."""
    watermarks: dict[tuple[str, str, int], int] = {}
    for (cluster, _), text in groups.items():
        for (topic, partition), watermark in text.watermarks.items():
            # Groups read watermarks moments apart; the highest is the latest.
            at = (cluster, topic, partition)
            if watermarks.get(at, -1) < watermark:
                watermarks[at] = watermark
    latest: list[str] = []
    heads: dict[tuple[str, str], str] = {}
    for (cluster, topic, partition), watermark in sorted(watermarks.items()):
        head = heads.get((cluster, topic))
        if head is None:
            head = heads[(cluster, topic)] = (f'{_LATEST}{{cluster_name="{_label(cluster)}"'
                                              f',topic="{_label(topic)}",partition="')
        latest.append(f'{head}{partition}"}} {watermark}\n')
    return "".join(latest).encode()


def _exporter_families(state: _State) -> list[Metric]:
    samples = CounterMetricFamily("lag_exporter_samples", "Samples taken.",
                                  value=state.samples_total)
    cumulative, running = [], 0
    for bound, count in zip((*map(repr, SAMPLE_DURATION_BUCKETS), "+Inf"),
                            state.duration_buckets, strict=True):
        running += count
        cumulative.append((bound, running))
    duration = HistogramMetricFamily("lag_exporter_sample_duration_seconds",
                                     "Time one sample (all clusters and groups) took.",
                                     buckets=cumulative, sum_value=state.duration_sum)
    families: list[Metric] = [duration, samples]
    if state.sample is not None:
        taken_at = state.sample.taken_at
        if taken_at.tzinfo is None:
            taken_at = taken_at.replace(tzinfo=UTC)  # the model says naive means UTC
        families.append(GaugeMetricFamily(
            "lag_exporter_last_sample_timestamp_seconds",
            "Unix time at which the last sample started.", value=taken_at.timestamp()))
    return families


def _group_state_text(state: _State) -> bytes:
    """lag_exporter_group_errors_total and lag_exporter_group_up, written directly (a line per
    group: through prometheus_client they cost more than all the unchanged lag lines)."""
    errors = [f'{_ERRORS}{{cluster_name="{_label(cluster)}",group="{_label(group)}"}} '
              f"{float(count)!r}\n"
              for (cluster, group), count in sorted(state.group_errors.items())]
    groups = state.sample.groups if state.sample is not None else ()
    up = [f"{_UP}{{{_group_labels(g)}}} {0.0 if g.error else 1.0}\n" for g in groups]
    return "".join((
        f"# HELP {_ERRORS} Ticks in which a group could not be sampled.\n"
        f"# TYPE {_ERRORS} counter\n", *errors,
        f"# HELP {_UP} 1 if the group was sampled in the last tick, 0 if it failed.\n"
        f"# TYPE {_UP} gauge\n", *up)).encode()


_ERRORS, _UP = "lag_exporter_group_errors_total", "lag_exporter_group_up"


def _delivery_families(delivery: _Delivery) -> list[Metric]:
    return [
        GaugeMetricFamily("lag_exporter_outbox_queued",
                          "Samples waiting in the outbox for delivery.",
                          value=delivery.queued),
        CounterMetricFamily("lag_exporter_outbox_dropped",
                            "Undelivered samples dropped because the outbox was full.",
                            value=delivery.dropped_total),
        CounterMetricFamily("lag_exporter_delivery_failures",
                            "Failed delivery attempts.",
                            value=delivery.failures_total),
        CounterMetricFamily("lag_exporter_documents_rejected",
                            "Documents the sink refused for good (e.g. a mapping conflict).",
                            value=delivery.rejected_total),
        GaugeMetricFamily("lag_exporter_outbox_oldest_age_seconds",
                          "Age of the oldest undelivered sample (0 when none waits).",
                          value=delivery.oldest_age_s),
    ]


def _follower_families(followers: Sequence[FollowerState]) -> list[Metric]:
    source = GaugeMetricFamily(
        "lag_exporter_offsets_source",
        "1 for where committed offsets are read: topic (__consumer_offsets followed) or admin "
        "(OffsetFetch per group).", labels=("cluster_name", "source"))
    groups = GaugeMetricFamily(
        "lag_exporter_offsets_source_groups",
        "Groups whose committed offsets came from each source in the last sample (admin while "
        "the follower had not read their partition up to the sample's start).",
        labels=("cluster_name", "source"))
    behind = GaugeMetricFamily(
        "lag_exporter_offsets_follower_behind_partitions",
        "Partitions of __consumer_offsets the follower had not read up to the last sample's "
        "start (their groups were asked through the Admin API).", labels=("cluster_name",))
    records = CounterMetricFamily(
        "lag_exporter_offsets_follower_records",
        "Records of __consumer_offsets read.", labels=("cluster_name",))
    skipped = CounterMetricFamily(
        "lag_exporter_offsets_follower_skipped",
        "Records of __consumer_offsets that hold no offset commit, by reason (unknown versions "
        "and undecodable records included).", labels=("cluster_name", "reason"))
    for state in followers:
        source.add_metric((state.cluster, state.path), 1)
        groups.add_metric((state.cluster, "topic"), state.topic_groups)
        groups.add_metric((state.cluster, "admin"), state.admin_groups)
        if state.path == "topic":
            behind.add_metric((state.cluster,), state.behind_partitions)
            records.add_metric((state.cluster,), state.records)
            for reason, count in state.skipped:
                skipped.add_metric((state.cluster, reason), count)
    return [source, groups, behind, records, skipped]


def _group_failures(groups: Iterable[GroupLag], limit: int = 3) -> str:
    failed = [g for g in groups if g.error]
    text = "; ".join(f"cluster {g.cluster} group {g.group}: {g.error}" for g in failed[:limit])
    if len(failed) > limit:
        text += f"; and {len(failed) - limit} more failing group(s)"
    return text


def _unknown_partitions(groups: Iterable[GroupLag]) -> dict[tuple[str, str, str], int]:
    """(cluster, group, topic) -> partitions with a commit but no end offset, where any."""
    unknown: dict[tuple[str, str, str], int] = {}
    for group_lag in groups:
        for p in group_lag.partitions:
            if p.committed_offset is not None and p.high_watermark is None:
                key = (group_lag.cluster, group_lag.group, p.topic)
                unknown[key] = unknown.get(key, 0) + 1
    return unknown


def _lasting_unknown(unknown_since: dict[tuple[str, str, str], tuple[float, int]], now: float,
                     limit_s: float, shown: int = 3) -> str | None:
    """One line naming the group x topics whose unknown partitions outlasted the limit."""
    lasting = sorted((key, now - since, count) for key, (since, count) in unknown_since.items()
                     if now - since > limit_s)
    if not lasting:
        return None
    named = "; ".join(f"cluster {cluster} group {group} topic {topic}: {count} partition(s) "
                      f"without end offset for {age:.1f} s"
                      for (cluster, group, topic), age, count in lasting[:shown])
    more = f"; and {len(lasting) - shown} more" if len(lasting) > shown else ""
    return f"lag not fully known (limit {limit_s:.1f} s): {named}{more}"


class Health:
    """Healthy while the last successful sample is recent and delivery keeps up.

    A sample succeeds when no group in it has an error and no cluster's sample was still
    running at the tick's deadline (a sample with no groups succeeds too). "Recent" means at
    most max(3 x interval, 3 s) ago on `clock`, so one or two failed or late ticks do not flip
    the verdict, but a group failing for three intervals, or sampling stalling, does. Before
    the first sample, and after only failed ones, it is unhealthy.

    Delivery: with `oldest_undelivered` (wall-clock time of the oldest sample not yet in the
    sink), it is also unhealthy while that sample is older than `delivery_limit_s`
    (max(5 x interval, 10 s)): samples that pile up are not being exported.

    Unknown partitions: a group x topic whose end offsets stay unreadable for some partitions
    (offline partition, leader gone) is written without totals; once that has lasted longer
    than the same limit as failing groups, health says so: its lag is not being reported.
    """

    def __init__(
        self,
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
        oldest_undelivered: Callable[[], float | None] | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.limit_s = max(3 * interval_s, HEALTH_FLOOR_S)
        self.delivery_limit_s = max(5 * interval_s, DELIVERY_FLOOR_S)
        self._clock = clock
        self._wall_clock = wall_clock
        self._oldest_undelivered = oldest_undelivered
        self._lock = threading.Lock()
        self._last: Sample | None = None
        self._last_at = 0.0
        self._last_success_at: float | None = None
        self._pending_since: dict[str, float] = {}
        self._unknown_since: dict[tuple[str, str, str], tuple[float, int]] = {}
        """(cluster, group, topic) -> (since when, how many partitions) of partitions whose
        end offset is unknown."""

    def observe(self, sample: Sample) -> None:
        now = self._clock()
        unknown = _unknown_partitions(sample.groups)
        with self._lock:
            self._last = sample
            self._last_at = now
            self._pending_since = {cluster: self._pending_since.get(cluster, now)
                                   for cluster in sample.pending_clusters}
            self._unknown_since = {
                key: (self._unknown_since.get(key, (now, 0))[0], count)
                for key, count in unknown.items()}
            if not any(g.error for g in sample.groups) and not sample.pending_clusters:
                self._last_success_at = now

    def status(self) -> tuple[bool, str]:
        """(healthy, "ok") or (False, what is wrong, in one line)."""
        with self._lock:
            last, last_at, success_at = self._last, self._last_at, self._last_success_at
            pending_since = dict(self._pending_since)
            unknown_since = dict(self._unknown_since)
        if last is None:
            return False, "no sample yet"
        now = self._clock()
        problems = [_group_failures(last.groups)] if any(g.error for g in last.groups) else []
        problems += [f"cluster {cluster}: sample still running after {now - since:.1f} s"
                     for cluster, since in sorted(pending_since.items())]
        failures = "; ".join(problems)
        delivery = self._delivery_problem()
        if success_at is None:
            return False, "; ".join(p for p in (f"no successful sample yet: {failures}"
                                                if failures else "no successful sample yet",
                                                delivery) if p)
        age = now - success_at
        if age > self.limit_s:
            if failures:
                return False, (f"no successful sample for {age:.1f} s (limit "
                               f"{self.limit_s:.1f} s): {failures}")
            return False, (f"no sample for {now - last_at:.1f} s (limit {self.limit_s:.1f} s): "
                           "sampling has stalled")
        if delivery:
            return False, delivery
        unknown = _lasting_unknown(unknown_since, now, self.limit_s)
        if unknown:
            return False, unknown
        return True, "ok"

    def _delivery_problem(self) -> str | None:
        if self._oldest_undelivered is None:
            return None
        oldest = self._oldest_undelivered()
        if oldest is None:
            return None
        age = self._wall_clock() - oldest
        if age <= self.delivery_limit_s:
            return None
        return (f"delivery behind: the oldest undelivered sample is {age:.0f} s old "
                f"(limit {self.delivery_limit_s:.0f} s)")
