"""`lag-exporter check-config`: what a config would watch, read from Kafka, nothing written."""

from __future__ import annotations

from collections.abc import Sequence

from lag_exporter.config import MIB, ClusterConfig, ExporterConfig
from lag_exporter.errors import SourceError
from lag_exporter.kafka_source import KafkaSource
from lag_exporter.mm2 import MirrorPositions, MirrorSettings
from lag_exporter.mm2_follower import OffsetsTopicFollower
from lag_exporter.model import GroupOffsets
from lag_exporter.selection import FULL_MATCH_NOTE

LISTED = 20
"""Names listed per line; past that, a count (500 discovered groups would be unreadable)."""


def _patterns(label: str, patterns: tuple[object, ...]) -> str:
    texts = [getattr(p, "pattern", str(p)) for p in patterns]
    return f"{label} {', '.join(texts)}" if texts else ""


def listed(names: Sequence[str]) -> str:
    """The first LISTED names, then how many more."""
    shown = ", ".join(names[:LISTED])
    return shown if len(names) <= LISTED else f"{shown} and {len(names) - LISTED} more"


def selection_lines(cluster: ClusterConfig) -> list[str]:
    """What the cluster's config asks for (pure: nothing read from Kafka)."""
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
    if (cluster.groups.patterns or cluster.groups.exclude or cluster.topics.patterns
            or cluster.topics.exclude):
        lines.append(f"  ({FULL_MATCH_NOTE})")
    return lines


def matched_groups_line(cluster: ClusterConfig, groups: Sequence[str]) -> list[str]:
    """The groups the patterns match now (names given exactly are listed with their state)."""
    if not cluster.groups.patterns:
        return []
    found = [g for g in groups if g not in cluster.groups.names]
    if not found:
        return ["  group patterns match no group right now"]
    return [f"  group patterns match {len(found)} group(s): {listed(found)}"]


def group_line(cluster: ClusterConfig, group: str, answer: GroupOffsets) -> str:
    """One group: the topics it has committed on that will be reported, and those left out."""
    committed = sorted({tp.topic for tp in answer.committed_offsets})
    if not committed:
        return f"  group {group}: no commits (does it exist?)"
    reported = [t for t in committed if cluster.topics.allows(t)]
    partitions = sum(1 for tp in answer.committed_offsets if cluster.topics.allows(tp.topic))
    line = (f"  group {group}: {len(reported)} topic(s), {partitions} partition(s) with commits"
            f"{': ' + listed(reported) if reported else ''}")
    left_out = len(committed) - len(reported)
    if left_out:
        line += f" ({left_out} other committed topic(s) not selected)"
    return line


def mirror_line(mirror: MirrorSettings, timeout_s: float) -> tuple[str, bool]:
    """A MirrorMaker 2 flow: its offsets topic read once, what it tracks (and whether it
    could be read)."""
    follower = OffsetsTopicFollower(mirror, timeout_s)
    try:
        answer = follower.group_offsets()
    finally:
        follower.close()
    return mirror_answer_line(mirror, follower.where(), follower.positions, answer)


def mirror_answer_line(mirror: MirrorSettings, where: str, positions: MirrorPositions,
                       answer: GroupOffsets | SourceError) -> tuple[str, bool]:
    """Pure: check-config's line of a mirror once its offsets topic was read."""
    head = (f"  mirror {mirror.label}: connector {mirror.connector}, source alias "
            f"{mirror.source_alias}")
    if isinstance(answer, SourceError):
        return f"{head}: cannot read its positions: {answer}", False
    topics = sorted({tp.topic for tp in answer.committed_offsets})
    return (f"{head}, {where}: {len(answer.committed_offsets)} source partition(s)"
            f" of {len(topics)} topic(s): {listed(topics)} (replicated as "
            f"{mirror.replicated_topic(topics[0])}, ... under {mirror.describe_policy()};"
            f" {positions.records} records read, {positions.describe_skipped()})"), True


def describe_cluster(cluster: ClusterConfig, timeout_s: float) -> tuple[list[str], bool]:
    lines = selection_lines(cluster)
    source = KafkaSource(cluster.name, cluster.kafka.client_settings, timeout_s)
    try:
        discovered: list[str] = []
        if cluster.groups.needs_discovery:
            found = source.list_groups()
            if isinstance(found, SourceError):
                return [*lines, f"  UNREACHABLE: {found}"], False
            discovered = found
        groups = cluster.groups.select(discovered)
        lines += matched_groups_line(cluster, groups)
        from lag_exporter.commit_follower import describe_offsets_source

        if cluster.has_consumer_groups:
            line, readable = describe_offsets_source(cluster.name, cluster.kafka.client_settings,
                                                     timeout_s, cluster.offsets_source)
            lines.append(line)
            if not readable:  # offsets_source = "topic" and the topic cannot be read
                return lines, False
        else:
            lines.append("  committed offsets: none to read (only MirrorMaker 2 flows)")
        mirrors = {m.label: m for m in cluster.mirrors}
        offsets = source.committed_offsets([g for g in groups if g not in mirrors])
        for mirror in cluster.mirrors:
            line, readable = mirror_line(mirror, timeout_s)
            lines.append(line)
            if not readable:
                return lines, False
        for group in (g for g in groups if g not in mirrors):
            answer = offsets[group]
            if isinstance(answer, SourceError):
                lines.append(f"  group {group}: cannot read offsets: {answer}")
                if all(isinstance(a, SourceError) for a in offsets.values()):
                    return lines, False
                continue
            lines.append(group_line(cluster, group, answer))
        return lines, True
    finally:
        source.close()


def describe_plan(config: ExporterConfig) -> tuple[list[str], bool]:
    """Human-readable plan, and whether every cluster answered. Secrets are never shown."""
    lines = [f"interval {config.interval_s:g} s, Kafka timeout {config.timeout_s:g} s, "
             f"group discovery every {config.discovery_interval_s:g} s"]
    lines += describe_sinks(config)
    if config.http_port is not None:
        lines.append(f"http: /metrics, /healthz, /api/lag and the page / on "
                     f"{config.http_host}:{config.http_port}")
    reachable = True
    for cluster in config.clusters:
        cluster_lines, ok = describe_cluster(cluster, config.timeout_s)
        lines += cluster_lines
        reachable = reachable and ok
    return lines, reachable


def describe_sinks(config: ExporterConfig) -> list[str]:
    """One "sink:" line per configured sink (stdout when none), with its own spool."""
    lines = []
    indexes = [(name, settings, spool) for name, settings, spool in (
        ("Elasticsearch", config.elasticsearch, config.spool_dir),
        ("OpenSearch", config.opensearch,
         config.spool_dir / "opensearch" if config.spool_dir else None)) if settings is not None]
    for name, settings, spool in indexes:
        auth = ("API key" if settings.api_key else f"basic auth as {settings.username}"
                if settings.username else "no auth")
        lines.append(f"sink: {name} {', '.join(settings.urls)} index {settings.index} ({auth}, "
                     f"{settings.document_shape} documents), spool {spool} "
                     f"(at most {config.spool_max_bytes / MIB:g} MiB)")
    cloudwatch = config.cloudwatch
    if cloudwatch is not None:
        interval = cloudwatch.partition_metrics_interval_s
        every = ("with every sample" if interval is None else "never" if interval == 0
                 else f"every {interval:g} s")
        lines.append(f"sink: CloudWatch namespace {cloudwatch.namespace}, region "
                     f"{cloudwatch.region or 'from the AWS chain'}"
                     + (f", endpoint {cloudwatch.endpoint_url}" if cloudwatch.endpoint_url
                        else "")
                     + f", per-partition OffsetLag {every}, spool "
                     f"{config.spool_dir / 'cloudwatch' if config.spool_dir else None}")
    if not lines:
        lines.append("sink: stdout (JSON lines)")
    return lines
