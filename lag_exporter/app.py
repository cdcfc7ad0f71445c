"""The Python API behind the CLI: build the pieces from an ExporterConfig and run them.

Data path: Fleet (one ClusterWatch per cluster: KafkaSource → Sampler) → Sample → per sink:
documents → Outbox → Delivery → sink (Elasticsearch, OpenSearch, CloudWatch; stdout when none);
metrics and health observe each Sample on the side.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lag_exporter.cloudwatch_metrics import partitions_due, without_partitions
from lag_exporter.config import (
    CloudWatchSettings,
    ClusterConfig,
    ElasticsearchSettings,
    ExporterConfig,
)
from lag_exporter.documents import Document
from lag_exporter.errors import LagExporterError, SinkUnavailable, SourceError
from lag_exporter.estimates import Estimates
from lag_exporter.fleet import ClusterWatch, Fleet
from lag_exporter.ha import HaMembership
from lag_exporter.isolation import IsolatedKafkaSource
from lag_exporter.kafka_source import KafkaSource
from lag_exporter.mm2_follower import MirroredSource, OffsetsTopicFollower
from lag_exporter.model import Sample
from lag_exporter.outbox import Outbox
from lag_exporter.sampler import OffsetSource
from lag_exporter.service import Pipeline, SampleDocuments, Watch, wide_documents
from lag_exporter.sinks import DeliveryReport, IndexSink, Sink
from lag_exporter.sinks.stdout import StdoutSink

if TYPE_CHECKING:
    from lag_exporter.http_endpoint import HttpEndpoint
    from lag_exporter.metrics import DeliveryState

log = logging.getLogger(__name__)


def kafka_timeout(config: ExporterConfig) -> float:
    """watch must not wait for Kafka much longer than a few intervals; snapshot may."""
    return min(config.timeout_s, max(config.interval_s * 5, 2.0))


def source_factory(timeout_s: float, isolated: bool, follow_commits: bool = False,
                   shared: bool = False) -> Callable[[ClusterConfig], OffsetSource]:
    """isolated: the Kafka client runs in a child process (long-running watch; isolation.py).
    follow_commits: committed offsets from __consumer_offsets per the cluster's offsets_source
    (commit_follower.py; its consumer runs in this process, like the MirrorMaker 2 follower).
    shared (--ha-group): the follower reads only the partitions the HA group gives it."""

    def make(cluster: ClusterConfig) -> OffsetSource:
        for warning in cluster.kafka.warnings:
            log.warning("cluster %s: %s", cluster.name, warning)
        kind = IsolatedKafkaSource if isolated else KafkaSource
        source: OffsetSource = kind(cluster.name, cluster.kafka.client_settings, timeout_s)
        if follow_commits and cluster.offsets_source != "admin" and cluster.has_consumer_groups:
            from lag_exporter.commit_follower import CommitFollower, FollowedSource

            source = FollowedSource(source, CommitFollower(
                cluster.name, cluster.kafka.client_settings, timeout_s, shared=shared),
                cluster.offsets_source, open_in_background=True)
        if cluster.mirrors:
            # The offsets-topic consumers run in this process (mm2_follower.py).
            source = MirroredSource(source, [OffsetsTopicFollower(mirror, timeout_s)
                                             for mirror in cluster.mirrors])
        return source

    return make


def membership_factory(config: ExporterConfig, timeout_s: float
                       ) -> Callable[[ClusterConfig], HaMembership | None] | None:
    """--ha-group: one membership of the HA group per cluster (ha.py); None without."""
    group = config.ha_group
    if group is None:
        return None

    def make(cluster: ClusterConfig) -> HaMembership:
        return HaMembership(cluster.name, cluster.kafka.client_settings, group,
                            config.ha_session_timeout_s, timeout_s,
                            use_offsets_topic=cluster.offsets_source != "admin")

    return make


def share_follower(source: OffsetSource, membership: HaMembership | None) -> HaMembership | None:
    """--ha-group: the cluster's commit follower (if any) reads only the partitions of
    __consumer_offsets its membership owns."""
    from lag_exporter.commit_follower import FollowedSource

    found: object = source
    while not isinstance(found, FollowedSource) and hasattr(found, "inner"):
        found = found.inner
    if membership is not None and isinstance(found, FollowedSource) and found.follower.shared:
        membership.followers.append(found.follower.follow)
    return membership


def make_fleet(config: ExporterConfig, make_source: Callable[[ClusterConfig], OffsetSource],
               one_shot: bool = False, timeout_s: float | None = None) -> Fleet:
    """one_shot (snapshot): no status, which needs the history of a running watch, and no
    HA group, which only a running watch joins."""
    make_membership = None if one_shot else membership_factory(
        config, config.timeout_s if timeout_s is None else timeout_s)
    def watch(cluster: ClusterConfig) -> ClusterWatch:
        source = make_source(cluster)
        membership = None if make_membership is None else make_membership(cluster)
        return ClusterWatch(cluster, source, config.discovery_interval_s,
                            estimates=Estimates(config.status_rules, judge_status=not one_shot),
                            membership=share_follower(source, membership))

    def membership_of(cluster: ClusterConfig, source: OffsetSource) -> HaMembership | None:
        return share_follower(source, None if make_membership is None
                              else make_membership(cluster))

    return Fleet([watch(cluster) for cluster in config.clusters], config.status_rules,
                 membership_of if make_membership is not None else None,
                 grid_s=None if make_membership is None else config.interval_s)


class GridClock:
    """--ha-group: the Watch's monotonic clock, whose first reading (the start of the tick
    schedule) is moved to the next wall-clock multiple of the interval: every instance then
    samples at the same moments, and a group two instances sample during a rebalance gets
    the same @timestamp, so the same document id (stored once)."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._wall_minus_monotonic = time.time() - time.monotonic()
        self._started = False

    def __call__(self) -> float:
        now = time.monotonic() + self._wall_minus_monotonic
        if not self._started:
            self._started = True
            return math.ceil(now / self.interval_s) * self.interval_s
        return now


def describe_ha(config: ExporterConfig) -> list[str]:
    """check-config's lines on the HA group."""
    from lag_exporter.ha import describe_ownership

    return [describe_ownership(cluster.name, cluster.kafka.client_settings,
                               config.ha_group or "", config.ha_session_timeout_s,
                               cluster.offsets_source != "admin", config.timeout_s)
            for cluster in config.clusters]


def take_snapshot(config: ExporterConfig) -> Sample:
    """One sample of every cluster; raises SourceError when no group at all could be sampled."""
    fleet = make_fleet(config, source_factory(config.timeout_s, isolated=False), one_shot=True)
    try:
        for cluster in fleet.clusters:
            if cluster.config.groups.needs_discovery:
                cluster.discover()
        sample = fleet.sample()
    finally:
        fleet.close()
    failed = [g for g in sample.groups if g.error]
    if failed and len(failed) == len(sample.groups):
        reasons = sorted({g.error or "" for g in failed})
        raise SourceError(reasons[0] if len(reasons) == 1 else
                          "; ".join(f"{g.group}: {g.error}" for g in failed))
    return sample


def make_sink(elasticsearch: ElasticsearchSettings | None, opensearch: bool = False) -> Sink:
    """An Elasticsearch (or OpenSearch) sink whose index is checked now; stdout without one."""
    if elasticsearch is None:
        return StdoutSink()
    sink: IndexSink
    if opensearch:
        from lag_exporter.sinks.opensearch import OpenSearchSink  # only when configured

        sink = OpenSearchSink(elasticsearch)
    else:
        from lag_exporter.sinks.elasticsearch import ElasticsearchSink  # 0.3 s: when needed

        sink = ElasticsearchSink(elasticsearch)
    try:
        sink.ensure_index()  # fail fast on refused credentials or a bad index name
    except SinkUnavailable as error:
        # A monitor must come up even when the store is not up yet: samples queue meanwhile.
        log.warning("%s; sampling anyway, documents queue until it answers", error)
    return sink


def partition_shaped(shared: SampleDocuments) -> list[Document]:
    from lag_exporter.partition_documents import partition_documents

    return shared.get(partition_documents)


def index_documents(settings: ElasticsearchSettings) -> Callable[[SampleDocuments],
                                                                 list[Document]]:
    """The documents of an Elasticsearch or OpenSearch index, in its configured shape."""
    return partition_shaped if settings.document_shape == "partition" else wide_documents


class CloudWatchDocuments:
    """What the CloudWatch sink is given of each sample: the wide documents, without their
    partitions when per-partition metrics are not due (partition_metrics_interval_s)."""

    def __init__(self, settings: CloudWatchSettings) -> None:
        self.interval_s = settings.partition_metrics_interval_s
        self._last_with_partitions: float | None = None

    def __call__(self, shared: SampleDocuments) -> list[Document]:
        documents = wide_documents(shared)
        taken_at = shared.sample.taken_at.timestamp()
        if partitions_due(taken_at, self._last_with_partitions, self.interval_s):
            self._last_with_partitions = taken_at
            return documents
        return [without_partitions(document) for document in documents]


SUBDIRECTORIES = {"opensearch": "opensearch", "cloudwatch": "cloudwatch"}
"""Each sink's spool directory under the configured one; Elasticsearch keeps the configured
directory itself, so a spool written by a version with one sink is delivered after upgrading."""


def make_pipelines(config: ExporterConfig) -> list[Pipeline]:
    """One pipeline per configured sink; stdout when none. Every outbox (the local checks of
    its spool directory) comes before any sink is contacted."""
    def spool(name: str | None) -> Path | None:
        if config.spool_dir is None:
            return None
        return config.spool_dir if name is None else config.spool_dir / name

    def outbox(name: str | None) -> Outbox:
        return Outbox(spool(name), max_bytes=config.spool_max_bytes,
                      memory_max_bytes=config.memory_max_bytes)

    if config.elasticsearch is None and config.opensearch is None and config.cloudwatch is None:
        return [Pipeline(Outbox(None, max_bytes=config.spool_max_bytes,
                                memory_max_bytes=config.memory_max_bytes), StdoutSink())]
    outboxes: dict[str, Outbox] = {}
    try:
        if config.elasticsearch is not None:
            outboxes["elasticsearch"] = outbox(None)
        if config.opensearch is not None:
            outboxes["opensearch"] = outbox(SUBDIRECTORIES["opensearch"])
        if config.cloudwatch is not None:
            outboxes["cloudwatch"] = outbox(SUBDIRECTORIES["cloudwatch"])
        return _connect_sinks(config, outboxes)
    except BaseException:
        for opened in outboxes.values():
            opened.close()
        raise


def _connect_sinks(config: ExporterConfig, outboxes: dict[str, Outbox]) -> list[Pipeline]:
    pipelines: list[Pipeline] = []
    try:
        if config.elasticsearch is not None:
            pipelines.append(Pipeline(outboxes["elasticsearch"], make_sink(config.elasticsearch),
                                      index_documents(config.elasticsearch)))
        if config.opensearch is not None:
            pipelines.append(Pipeline(outboxes["opensearch"],
                                      make_sink(config.opensearch, opensearch=True),
                                      index_documents(config.opensearch)))
        if config.cloudwatch is not None:
            from lag_exporter.sinks.cloudwatch import CloudWatchSink  # boto3: only when needed

            sink = CloudWatchSink(config.cloudwatch)
            pipelines.append(Pipeline(outboxes["cloudwatch"], sink,
                                      CloudWatchDocuments(config.cloudwatch)))
            sink.check_credentials()
    except BaseException:
        for pipeline in pipelines:
            pipeline.delivery.sink.close()
        raise
    return pipelines


def delivery_state(watch: Watch) -> DeliveryState:
    """Every sink's delivery in one: counts added up, the oldest waiting sample of any."""
    from lag_exporter.metrics import DeliveryState

    pipelines = watch.pipelines
    oldest = oldest_undelivered(watch)
    return DeliveryState(
        sum(len(p.outbox) for p in pipelines), sum(p.outbox.dropped for p in pipelines),
        sum(p.delivery.failures for p in pipelines), sum(p.delivery.rejected for p in pipelines),
        0.0 if oldest is None else max(0.0, time.time() - oldest))


def oldest_undelivered(watch: Watch) -> float | None:
    """Wall-clock time of the oldest sample some sink has not taken yet (health: the worst)."""
    times = [t for p in watch.pipelines if (t := p.outbox.oldest_created_at()) is not None]
    return min(times) if times else None


def write_once(elasticsearch: ElasticsearchSettings, sample: Sample) -> DeliveryReport:
    """snapshot's write: synchronous, one bulk request."""
    from lag_exporter.sinks.elasticsearch import ElasticsearchSink  # 0.3 s: only when needed

    sink = ElasticsearchSink(elasticsearch)
    try:
        sink.ensure_index()
        report = sink.write(index_documents(elasticsearch)(SampleDocuments(sample)))
    finally:
        sink.close()
    for line in report.rejected:
        log.error("Elasticsearch rejected a document: %s", line)
    return report


@dataclass
class Service:
    """A running watch with its optional HTTP endpoint."""

    watch: Watch
    endpoint: HttpEndpoint | None = None  # imported lazily, like the Elasticsearch client

    def run(self) -> None:
        if self.endpoint is not None:
            self.endpoint.start()
        try:
            self.watch.run()
        finally:
            if self.endpoint is not None:
                self.endpoint.stop()


def make_service(
    config: ExporterConfig,
    summary_every_s: float = 10.0,
    load_config: Callable[[], ExporterConfig] | None = None,
) -> Service:
    """Build a watch from config; load_config (if given) is called again on SIGHUP."""
    timeout_s = kafka_timeout(config)
    make_source = source_factory(timeout_s, isolated=True, follow_commits=True,
                                 shared=config.ha_group is not None)
    pipelines = make_pipelines(config)
    watch = Watch(make_fleet(config, make_source, timeout_s=timeout_s),
                  interval_s=config.interval_s, summary_every_s=summary_every_s,
                  pipelines=pipelines,
                  clock=time.monotonic if config.ha_group is None else GridClock(config.interval_s))
    endpoint = None
    if config.http_port is not None:
        from lag_exporter.http_endpoint import HttpEndpoint, LagView
        from lag_exporter.metrics import Health, LagMetrics

        metrics = LagMetrics()
        metrics.read_delivery_from(lambda: delivery_state(watch))
        from lag_exporter.commit_follower import follower_state

        metrics.read_offsets_sources_from(lambda: [
            follower_state(c.source, len(c.sampler.groups)) for c in watch.fleet.clusters])
        read_ha_from = getattr(metrics, "read_ha_from", None)  # lag_exporter_ha_owned_groups
        if config.ha_group is not None and read_ha_from is not None:
            read_ha_from(lambda: ha_shares(watch))
        health = Health(config.interval_s, oldest_undelivered=lambda: oldest_undelivered(watch))
        view = LagView()  # the page and /api/lag (top --from): latest rows and their history
        watch.sample_observers += [metrics.observe, health.observe, view.observe]
        endpoint = HttpEndpoint(config.http_host, config.http_port, metrics, health, view=view)
    if load_config is not None:
        watch.reload = lambda: reload(watch, config, load_config, make_source)
    return Service(watch, endpoint)


def ha_shares(watch: Watch) -> list[tuple[str, str, str, int, int]]:
    """--ha-group, for /metrics: per cluster (cluster, HA group, topic deciding ownership,
    groups reported in the last sample, partitions owned now)."""
    shares = []
    for cluster in watch.fleet.clusters:
        membership = cluster.membership
        if membership is not None:
            shares.append((cluster.name, membership.group, membership.topic,
                           cluster.owned_groups, len(membership.owned()[0])))
    return shares


def reload(watch: Watch, running: ExporterConfig, load_config: Callable[[], ExporterConfig],
           make_source: Callable[[ClusterConfig], OffsetSource]) -> None:
    """Apply a changed config file; a bad one is rejected and the old one keeps running."""
    try:
        new = load_config()
    except LagExporterError as error:
        log.error("config reload rejected, keeping the running config: %s", error)
        return
    if (new.elasticsearch != running.elasticsearch or new.opensearch != running.opensearch
            or new.cloudwatch != running.cloudwatch or new.interval_s != running.interval_s
            or new.status_rules != running.status_rules or new.ha_group != running.ha_group
            or new.ha_session_timeout_s != running.ha_session_timeout_s):
        log.warning("config reload: sink (Elasticsearch, OpenSearch, CloudWatch), interval, "
                    "status and HA group changes need a restart")
    watch.fleet.reconfigure(new.clusters, make_source, new.discovery_interval_s)
    log.info("config reloaded: %d cluster(s): %s", len(new.clusters),
             ", ".join(c.name for c in new.clusters))

