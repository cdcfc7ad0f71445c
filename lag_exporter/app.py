"""The Python API behind the CLI: build the pieces from settings and run them."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from lag_exporter.config import KafkaSettings
from lag_exporter.documents import sample_documents
from lag_exporter.errors import SinkUnavailable, SourceError
from lag_exporter.isolation import IsolatedKafkaSource
from lag_exporter.kafka_source import KafkaSource
from lag_exporter.model import Sample
from lag_exporter.outbox import Outbox
from lag_exporter.sampler import OffsetSource, Sampler
from lag_exporter.service import Watch
from lag_exporter.sinks import DeliveryReport, Sink
from lag_exporter.sinks.elasticsearch import ElasticsearchSettings, ElasticsearchSink
from lag_exporter.sinks.stdout import StdoutSink

log = logging.getLogger(__name__)


def make_sampler(
    kafka: KafkaSettings,
    groups: Sequence[str],
    topics: Sequence[str],
    timeout_s: float,
    isolated: bool = False,
) -> Sampler:
    """isolated: run the Kafka client in a child process (long-running watch; see isolation.py)."""
    for warning in kafka.warnings:
        log.warning("%s", warning)
    source: OffsetSource = (
        IsolatedKafkaSource(kafka.cluster, kafka.client_settings, timeout_s) if isolated
        else KafkaSource(kafka.cluster, kafka.client_settings, timeout_s))
    return Sampler(source, groups, topics)


def take_snapshot(
    kafka: KafkaSettings, groups: Sequence[str], topics: Sequence[str], timeout_s: float
) -> Sample:
    """One sample; raises SourceError when no group at all could be sampled."""
    sample = make_sampler(kafka, groups, topics, timeout_s).sample()
    failed = [g for g in sample.groups if g.error]
    if failed and len(failed) == len(sample.groups):
        reasons = sorted({g.error or "" for g in failed})
        raise SourceError("; ".join(reasons) if len(reasons) == 1 else
                          "; ".join(f"{g.group}: {g.error}" for g in failed))
    return sample


def make_sink(elasticsearch: ElasticsearchSettings | None) -> Sink:
    if elasticsearch is None:
        return StdoutSink()
    sink = ElasticsearchSink(elasticsearch)
    try:
        sink.ensure_index()  # fail fast on refused credentials or a bad index name
    except SinkUnavailable as error:
        # A monitor must come up even when Elasticsearch is not up yet: samples queue meanwhile.
        log.warning("%s; sampling anyway, documents queue until it answers", error)
    return sink


def make_watch(
    kafka: KafkaSettings,
    groups: Sequence[str],
    topics: Sequence[str],
    elasticsearch: ElasticsearchSettings | None,
    interval_s: float,
    timeout_s: float,
    spool_dir: Path | None,
    summary_every_s: float = 10.0,
) -> Watch:
    sink = make_sink(elasticsearch)
    outbox = Outbox(spool_dir if elasticsearch is not None else None)
    return Watch(make_sampler(kafka, groups, topics, timeout_s, isolated=True), outbox, sink,
                 interval_s,
                 summary_every_s)


def write_once(elasticsearch: ElasticsearchSettings, sample: Sample) -> DeliveryReport:
    """snapshot's write: synchronous, one bulk request."""
    sink = ElasticsearchSink(elasticsearch)
    try:
        sink.ensure_index()
        report = sink.write(sample_documents(sample))
    finally:
        sink.close()
    for line in report.rejected:
        log.error("Elasticsearch rejected a document: %s", line)
    return report
