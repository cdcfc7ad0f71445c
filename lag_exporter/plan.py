"""`lag-exporter check-config`: what a config would watch, read from Kafka, nothing written."""

from __future__ import annotations

from lag_exporter.config import ClusterConfig, ExporterConfig
from lag_exporter.errors import SourceError
from lag_exporter.kafka_source import KafkaSource


def _patterns(label: str, patterns: tuple[object, ...]) -> str:
    texts = [getattr(p, "pattern", str(p)) for p in patterns]
    return f"{label} {', '.join(texts)}" if texts else ""


def describe_cluster(cluster: ClusterConfig, timeout_s: float) -> tuple[list[str], bool]:
    settings = cluster.kafka.client_settings
    security = settings.get("security.protocol", "PLAINTEXT")
    mechanism = settings.get("sasl.mechanism")
    lines = [f"cluster {cluster.name}: {settings.get('bootstrap.servers')} ({security}"
             f"{'/' + mechanism if mechanism else ''})"]
    selection = "; ".join(part for part in (
        _patterns("groups", cluster.groups.names),
        _patterns("group patterns", cluster.groups.patterns),
        _patterns("excluding", cluster.groups.exclude)) if part)
    topics = "; ".join(part for part in (
        _patterns("topics", cluster.topics.names),
        _patterns("topic patterns", cluster.topics.patterns),
        _patterns("excluding", cluster.topics.exclude)) if part) or "all topics"
    lines += [f"  selects {selection}", f"  reports {topics}"]
    source = KafkaSource(cluster.name, settings, timeout_s)
    try:
        discovered: list[str] = []
        if cluster.groups.needs_discovery:
            found = source.list_groups()
            if isinstance(found, SourceError):
                return [*lines, f"  UNREACHABLE: {found}"], False
            discovered = found
        groups = cluster.groups.select(discovered)
        offsets = source.committed_offsets(groups)
        for group in groups:
            answer = offsets[group]
            if isinstance(answer, SourceError):
                lines.append(f"  group {group}: cannot read offsets: {answer}")
                if all(isinstance(a, SourceError) for a in offsets.values()):
                    return lines, False
                continue
            partitions = [tp for tp in answer.committed_offsets
                          if cluster.topics.allows(tp.topic)]
            topic_count = len({tp.topic for tp in partitions})
            state = "no commits (does it exist?)" if not answer.committed_offsets else \
                f"{topic_count} topic(s), {len(partitions)} partition(s) with commits"
            lines.append(f"  group {group}: {state}")
        if not groups:
            lines.append("  no group matches right now")
        return lines, True
    finally:
        source.close()


def describe_plan(config: ExporterConfig) -> tuple[list[str], bool]:
    """Human-readable plan, and whether every cluster answered. Secrets are never shown."""
    lines = [f"interval {config.interval_s:g} s, Kafka timeout {config.timeout_s:g} s, "
             f"group discovery every {config.discovery_interval_s:g} s"]
    es = config.elasticsearch
    if es is None:
        lines.append("sink: stdout (JSON lines)")
    else:
        auth = ("API key" if es.api_key else f"basic auth as {es.username}" if es.username
                else "no auth")
        lines.append(f"sink: Elasticsearch {', '.join(es.urls)} index {es.index} ({auth}), "
                     f"spool {config.spool_dir}")
    if config.http_port is not None:
        lines.append(f"http: /metrics and /healthz on {config.http_host}:{config.http_port}")
    reachable = True
    for cluster in config.clusters:
        cluster_lines, ok = describe_cluster(cluster, config.timeout_s)
        lines += cluster_lines
        reachable = reachable and ok
    return lines, reachable
