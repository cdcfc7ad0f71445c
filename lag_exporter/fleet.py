"""Every configured cluster, sampled concurrently on each tick, each in its own thread.

A cluster that is down or slow must not cost the others their samples: each tick waits for the
clusters up to a deadline (a little under the interval). A cluster whose sample is not finished
by then skips ticks until it is; its sample is then handed on with the time it was taken (late,
never lost), and the next one starts.
Groups given by regex are re-discovered every `discovery_interval_s`, in the cluster's own
thread, so that discovery on a slow cluster delays nobody else either.

A cluster's first sample is slow: the Kafka client process starts, connects (TLS handshakes),
finds the group coordinators and opens the record-time reader; at 1 s it overran the interval
and a tick was skipped. So a cluster is warmed up by one sample whose result is dropped: before
the first tick (warm_up), and when a config reload replaces its connection (new certificates),
while the old client goes on sampling until the new one has answered (no gap in the documents).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import replace
from datetime import UTC, datetime

from lag_exporter.config import ClusterConfig
from lag_exporter.errors import SourceError
from lag_exporter.estimates import Estimates
from lag_exporter.ha import HaMembership
from lag_exporter.model import GroupLag, Sample
from lag_exporter.sampler import OffsetSource, Sampler
from lag_exporter.status import StatusRules

log = logging.getLogger(__name__)

SourceFactory = Callable[[ClusterConfig], OffsetSource]
MembershipFactory = Callable[[ClusterConfig, OffsetSource], HaMembership | None]


class ClusterWatch:
    """One cluster: its Kafka client, its sampler, its group discovery."""

    def __init__(
        self,
        config: ClusterConfig,
        source: OffsetSource,
        discovery_interval_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        estimates: Estimates | None = None,
        membership: HaMembership | None = None,
    ) -> None:
        """membership (--ha-group): report only the groups this instance owns now."""
        self.config = config
        self.source = source
        self.discovery_interval_s = discovery_interval_s
        self.sampler = Sampler(source, config.groups.select(), config.topics, clock=clock,
                               estimates=estimates)
        self._clock = clock
        self._next_discovery = clock()
        self._discovery_error: str | None = None
        self._missing_once: set[str] = set()
        self._executor = ThreadPoolExecutor(max_workers=1,
                                            thread_name_prefix=f"cluster-{config.name}")
        self._in_flight: Future[Sample] | None = None
        self._warming: Future[Sample] | None = None
        self.membership = membership
        self.owned_groups = 0
        """--ha-group: the groups reported in the last sample."""
        self._owned_announced: tuple[int, int] | None = None
        if membership is not None:
            self.sampler.owns = self._owned
            membership.start()

    def _owned(self, groups: Sequence[str]) -> list[str]:
        assert self.membership is not None
        owned = self.membership.owns_groups(groups)
        self.owned_groups = len(owned)
        counts = (len(owned), len(groups))
        if counts != self._owned_announced:  # the test and the operator read this line
            self._owned_announced = counts
            log.info("cluster %s: HA group %s: reporting %d of %d groups", self.name,
                     self.membership.group, *counts)
        return owned

    @property
    def name(self) -> str:
        return self.config.name

    def start(self, taken_at: datetime) -> None:
        """Start this tick's sample, unless the previous one is still running or not collected."""
        if self._in_flight is None:
            self._in_flight = self._executor.submit(self.sample, taken_at)

    def in_flight(self) -> Future[Sample] | None:
        return self._in_flight

    def warm_up(self) -> Future[Sample]:
        """A sample in the cluster's thread whose result is dropped: it starts the clients (and
        discovers the groups) before the first real sample, which then waits behind it."""
        self._warming = self._executor.submit(self.sample, datetime.now(UTC))
        return self._warming

    def ready(self) -> bool:
        """Not warming up (any more): the warm-up sample is done, or there was none."""
        return self._warming is None or self._warming.done()

    def collect(self) -> Sample | None:
        """The finished sample, once (None while it is still running)."""
        if self._in_flight is None or not self._in_flight.done():
            return None
        finished, self._in_flight = self._in_flight, None
        error = finished.exception()
        if error is not None:
            log.error("cluster %s: sampling failed", self.name, exc_info=error)
            return Sample(datetime.now(UTC), tuple(self.failed(f"internal error: {error!r}")))
        return finished.result()

    def sample(self, taken_at: datetime) -> Sample:
        if self.config.groups.needs_discovery and self._clock() >= self._next_discovery:
            self.discover()
        return self.sampler.sample(taken_at)

    def discover(self) -> None:
        """Match the cluster's groups against the configured names and patterns."""
        self._next_discovery = self._clock() + self.discovery_interval_s
        found = self.source.list_groups()
        if isinstance(found, SourceError):
            if str(found) != self._discovery_error:
                log.error("cluster %s: cannot list consumer groups: %s", self.name, found)
            self._discovery_error = str(found)
            # Retry soon, but not every tick: each failed attempt can cost a whole timeout.
            self._next_discovery = self._clock() + min(self.discovery_interval_s, 5.0)
            return
        self._discovery_error = None
        groups = self.config.groups.select(found)
        before = set(self.sampler.groups)
        # A group missing from one listing may be a broker still loading its groups: it is
        # dropped only when the next listing misses it too.
        missing = before - set(groups)
        gone = missing & self._missing_once
        self._missing_once = missing - gone
        groups += sorted(self._missing_once)
        for group in sorted(set(groups) - before):
            log.info("cluster %s: watching group %s", self.name, group)
        for group in sorted(gone):
            log.info("cluster %s: group %s is gone; no longer reported", self.name, group)
        self.sampler.set_groups(groups)

    def reconfigure(self, config: ClusterConfig) -> None:
        """New group/topic selection for the same connection (config reload)."""
        self.config = config
        self.sampler.set_topics(config.topics)
        self.sampler.set_groups(config.groups.select(self.sampler.groups))
        self._next_discovery = self._clock()

    def failed(self, why: str) -> list[GroupLag]:
        return [GroupLag(self.name, group, (), error=why) for group in self.sampler.groups]

    def close(self) -> None:
        if self.membership is not None:
            self.membership.close()  # leave the HA group first: the others take over at once
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.sampler.close()


def on_grid(moment: datetime, grid_s: float | None) -> datetime:
    """moment rounded to the nearest multiple of grid_s (unchanged without one)."""
    if grid_s is None:
        return moment
    return datetime.fromtimestamp(round(moment.timestamp() / grid_s) * grid_s, UTC)


ON_SCHEDULE_TICKS = 10
"""A cluster that fell behind is logged "on schedule again" only after this many on-time ticks:
during an outage samples alternate between slow and fast, and each change is not news."""


def same_connection(a: ClusterConfig, b: ClusterConfig) -> bool:
    """Whether a reload can keep a cluster's clients (only its groups and topics changed)."""
    return (a.kafka.client_settings == b.kafka.client_settings and a.mirrors == b.mirrors
            and a.offsets_source == b.offsets_source
            and a.has_consumer_groups == b.has_consumer_groups)  # the commit follower or not


class Fleet:
    def __init__(self, clusters: Sequence[ClusterWatch],
                 status_rules: StatusRules | None = None,
                 make_membership: MembershipFactory | None = None,
                 grid_s: float | None = None) -> None:
        """grid_s (--ha-group): each tick's time is rounded to a multiple of it, so that
        instances sampling a group in the same tick during a rebalance write the same
        document id (stored once)."""
        self.clusters = list(clusters)
        self.make_membership = make_membership
        self.grid_s = grid_s
        self.status_rules = status_rules
        """For the clusters a config reload adds."""
        self.ticks_skipped: dict[str, int] = {}
        """Per cluster: ticks it had no sample for because the previous one was still running."""
        self._behind: dict[str, int] = {}
        """Clusters that fell behind -> on-time ticks since (see ON_SCHEDULE_TICKS)."""
        self._warming: dict[str, ClusterWatch] = {}
        """Clusters a reload gave new connection settings, warming up; each replaces its
        namesake in `clusters` once warm."""

    def warm_up(self, max_wait_s: float, stop: threading.Event | None = None) -> None:
        """Before the first tick: warm every cluster up, concurrently, and wait until all are
        ready, for at most max_wait_s (a cluster that is down delays the others' first
        documents no longer than that) or until `stop` is set."""
        warming = [cluster.warm_up() for cluster in self.clusters]
        deadline = time.monotonic() + max_wait_s
        while warming and (stop is None or not stop.is_set()):
            left = deadline - time.monotonic()
            if left <= 0 or not wait(warming, timeout=min(left, 0.1)).not_done:
                return

    def sample(self, wait_s: float | None = None, taken_at: datetime | None = None) -> Sample:
        """One tick over every cluster; wait_s bounds how long a slow cluster may hold it up."""
        started = time.monotonic()
        taken_at = taken_at or on_grid(datetime.now(UTC), self.grid_s)
        self._take_warmed_up()
        for cluster in self.clusters:
            cluster.start(taken_at)
        wait([f for c in self.clusters if (f := c.in_flight()) is not None], timeout=wait_s)
        groups: list[GroupLag] = []
        warnings: list[str] = []
        pending: list[str] = []
        durations = [0.0]
        for cluster in self.clusters:
            finished = cluster.collect()
            if finished is None:
                self._note_skipped(cluster)
                pending.append(cluster.name)
                continue
            self._note_caught_up(cluster)
            durations.append(finished.duration_s)
            late = finished.taken_at != taken_at
            groups += [replace(g, taken_at=finished.taken_at) if late else g
                       for g in finished.groups]
            warnings += finished.warnings
        # duration: the slowest cluster sample handed on, which a late one may make > the tick.
        duration = max(max(durations), time.monotonic() - started)
        return Sample(taken_at, tuple(groups), duration, tuple(warnings), tuple(pending))

    def _note_skipped(self, cluster: ClusterWatch) -> None:
        self.ticks_skipped[cluster.name] = self.ticks_skipped.get(cluster.name, 0) + 1
        if cluster.name not in self._behind:
            log.warning("cluster %s: a sample takes longer than the interval; skipping ticks "
                        "until it is done (it is delivered late, with its own time)", cluster.name)
        self._behind[cluster.name] = 0

    def _note_caught_up(self, cluster: ClusterWatch) -> None:
        on_time = self._behind.get(cluster.name)
        if on_time is None:
            return
        if on_time + 1 < ON_SCHEDULE_TICKS:
            self._behind[cluster.name] = on_time + 1
        else:
            del self._behind[cluster.name]
            log.info("cluster %s: sampling on schedule again", cluster.name)

    def _take_warmed_up(self) -> None:
        """At the start of a tick: the clusters done warming up replace their namesakes, each
        once the old one has no sample in flight (its sample, due at a later tick, would be
        lost)."""
        for index, old in enumerate(self.clusters):
            new = self._warming.get(old.name)
            if new is None or not new.ready() or old.in_flight() is not None:
                continue
            del self._warming[old.name]
            self.clusters[index] = new
            old.close()
            log.info("cluster %s: now sampled with the reloaded connection settings", old.name)

    def reconfigure(self, configs: Sequence[ClusterConfig], make_source: SourceFactory,
                    discovery_interval_s: float) -> None:
        """Apply a reloaded config: same connection → keep the client; else a new one, warmed
        up while the old one goes on sampling (see the module's docstring)."""
        current = {cluster.name: cluster for cluster in self.clusters}
        updated = []
        for config in configs:
            existing = current.pop(config.name, None)
            if existing is not None:
                updated.append(existing)
            warming = self._warming.pop(config.name, None)
            if warming is not None:
                if same_connection(warming.config, config):  # reloaded again while warming
                    warming.reconfigure(config)
                    self._warming[config.name] = warming
                    continue
                warming.close()  # superseded before it was used
            if existing is not None and same_connection(existing.config, config):
                existing.reconfigure(config)
                continue
            new = self._cluster(config, make_source, discovery_interval_s)
            if existing is None or self.make_membership is not None:
                # A new cluster has no documents a slow start could leave a gap in. With
                # --ha-group two members of one instance would split its share of the groups,
                # the old one's going unreported: the client is replaced at once.
                if existing is not None:
                    existing.close()
                    updated.remove(existing)
                updated.append(new)
                continue
            new.warm_up()
            self._warming[config.name] = new
        for gone in current.values():
            log.info("cluster %s removed from the config", gone.name)
            self._behind.pop(gone.name, None)
            gone.close()
        for name in set(self._warming) - {config.name for config in configs}:
            self._warming.pop(name).close()
        self.clusters = updated

    def _cluster(self, config: ClusterConfig, make_source: SourceFactory,
                 discovery_interval_s: float) -> ClusterWatch:
        source = make_source(config)
        membership = (None if self.make_membership is None
                      else self.make_membership(config, source))
        return ClusterWatch(config, source, discovery_interval_s,
                            estimates=Estimates(self.status_rules), membership=membership)

    def close(self) -> None:
        for cluster in [*self.clusters, *self._warming.values()]:
            cluster.close()
