"""The `lag-exporter` command: a thin click shell over lag_exporter.app. No logic lives here.

Exit codes: 0 success, 1 runtime failure (Kafka or Elasticsearch), 2 usage or configuration
error, 130 interrupted. Errors are one line on stderr; --debug adds the traceback.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import click
from click.core import ParameterSource

from lag_exporter import __version__, app
from lag_exporter.config import (
    ALLOWED_LAG,
    DEFAULT_MEMORY_MAX_MB,
    DEFAULT_SPOOL_MAX_MB,
    ES_API_KEY_ENV,
    ES_PASSWORD_ENV,
    HA_SESSION_TIMEOUT,
    MEGABYTES,
    STATUS_WINDOW,
    STOP_AFTER,
    SUMMARY_INTERVAL,
    Bounds,
    ClusterConfig,
    ExporterConfig,
    check_ha_group,
    check_interval,
    check_names,
    check_number,
    check_timeout,
    check_topic_names,
    elasticsearch_settings,
    kafka_settings,
    load_config,
    megabytes_to_bytes,
    status_rules,
    with_default_spool_dir,
)
from lag_exporter.documents import sample_documents
from lag_exporter.errors import ConfigError, LagExporterError
from lag_exporter.logs import configure_logging
from lag_exporter.mm2 import (
    DEFAULT_CONNECTOR,
    DEFAULT_SEPARATOR,
    DEFAULT_SOURCE_ALIAS,
    DEFAULT_TARGET_ALIAS,
    REPLICATION_POLICIES,
    MirrorSettings,
    default_label,
    default_offsets_topic,
)
from lag_exporter.plan import describe_plan
from lag_exporter.report import format_table, format_tsv
from lag_exporter.selection import GroupSelection, TopicSelection
from lag_exporter.service import Signals

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger(__name__)
ENV = "LAG_EXPORTER_"


class _Cli(click.Group):
    """Turns every error into one line and an exit code (click's own usage errors included)."""

    debug = False

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            code = super().main(*args, **kwargs)
        except click.exceptions.Abort:
            sys.exit(130)
        except click.ClickException as error:
            click.echo(f"lag-exporter: error: {error.format_message()}", err=True)
            sys.exit(2 if isinstance(error, click.UsageError) else error.exit_code)
        except LagExporterError as error:
            if _Cli.debug:
                raise
            click.echo(f"lag-exporter: error: {error}", err=True)
            sys.exit(error.exit_code)
        except KeyboardInterrupt:
            sys.exit(130)
        except Exception as error:
            if _Cli.debug:
                raise
            click.echo(f"lag-exporter: unexpected error: {type(error).__name__}: {error} "
                       "(run with --debug for the traceback)", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def option(name: str, *decls: str, **settings: Any) -> Callable[[F], F]:
    """A click option whose environment variable is LAG_EXPORTER_<NAME>."""
    env = ENV + name.lstrip("-").replace("-", "_").upper()
    return click.option(name, *decls, envvar=env, show_envvar=False, **settings)


LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")


def global_options(command: Callable[..., None]) -> Callable[..., None]:
    """--log-level, --log-format and --debug after the subcommand too, as users type them
    (`lag-exporter snapshot --debug ...`); there they win over the same option before it."""

    @functools.wraps(command)
    def run(*args: Any, log_level: str | None, log_format: str | None, debug: bool,
            **kwargs: Any) -> None:
        if debug:
            _Cli.debug = True
        if log_level or log_format:
            before = click.get_current_context().find_root().params
            configure_logging(log_level or before["log_level"],
                              log_format or before["log_format"])
        command(*args, **kwargs)

    # No environment variables here: LAG_EXPORTER_LOG_LEVEL is read once, by the group.
    options = [
        click.option("--log-level", type=click.Choice(LOG_LEVELS, case_sensitive=False),
                     help="Log level [default: info] (also before the subcommand)."),
        click.option("--log-format", type=click.Choice(LOG_FORMATS),
                     help="Log lines as text or JSON [default: text]."),
        click.option("--debug", is_flag=True, help="Show tracebacks on errors."),
    ]
    decorated: Callable[..., None] = run
    for decorate in reversed(options):
        decorated = decorate(decorated)
    return decorated


def source_options(command: F) -> F:
    options = [
        option("--config", metavar="PATH", help="TOML config file: clusters, groups, "
               "Elasticsearch, interval (see examples/). Flags below override it."),
        option("--bootstrap-server", metavar="HOST:PORT",
               help="Kafka brokers to connect to (comma-separated)."),
        option("--command-config", metavar="PATH",
               help="Java client properties file, as given to kafka-consumer-groups or "
                    "MirrorMaker's consumer.properties (SASL, SSL, ...)."),
        option("--cluster-name", help="Name of the cluster in the documents and metrics "
               "[default: the bootstrap servers as given, e.g. kafka1:9092,kafka2:9092]."),
        option("--group", "groups", multiple=True, help="Consumer group to sample (repeatable)."),
        option("--topic", "topics", multiple=True,
               help="Only these topics; also reports their partitions with no commit."),
        option("--offsets-source", type=click.Choice(["auto", "topic", "admin"]), default=None,
               help="How watch and top read committed offsets: auto [default] follows "
                    "__consumer_offsets when it can be read (Describe and Read on it), else "
                    "asks OffsetFetch per group; topic insists on the topic; admin always asks. "
                    "snapshot always asks."),
        option("--timeout", "timeout_s", type=float,
               help="Seconds to wait for Kafka and Elasticsearch before giving up, 0.01 to 300 "
                    "[default: 10]."),
        option("--es-url", "es_urls", multiple=True, metavar="URL",
               help="Elasticsearch node URL (repeatable, or space/comma-separated)."),
        option("--es-index", help="Index for the documents [default: consumer_lag]."),
        option("--es-username", help=f"Basic-auth user; the password comes from "
               f"${ES_PASSWORD_ENV}. An API key comes from ${ES_API_KEY_ENV}."),
        option("--es-ca-file", metavar="PATH", help="CA certificate (PEM) for https URLs."),
        option("--mm2-target-bootstrap-server", metavar="HOST:PORT",
               help="MirrorMaker 2: the target cluster, where its offsets topic is; the mirror "
                    "is reported as a group of the --bootstrap-server cluster (its source)."),
        option("--mm2-target-command-config", metavar="PATH",
               help="MirrorMaker 2: Java client properties of the target cluster."),
        option("--mm2-source-alias", metavar="ALIAS",
               help=f"MirrorMaker 2: the source cluster's alias "
                    f"[default: {DEFAULT_SOURCE_ALIAS}]."),
        option("--mm2-target-alias", metavar="ALIAS",
               help=f"MirrorMaker 2: the target cluster's alias, for the label "
                    f"[default: {DEFAULT_TARGET_ALIAS}]."),
        option("--mm2-offsets-topic", metavar="TOPIC",
               help="MirrorMaker 2: its Connect offsets topic [default: "
                    "mm2-offsets.<source alias>.internal; a Connect cluster's "
                    "offset.storage.topic otherwise]."),
        option("--mm2-connector", metavar="NAME",
               help=f"MirrorMaker 2: the source connector's name [default: {DEFAULT_CONNECTOR}]."),
        option("--mm2-label", metavar="NAME",
               help="MirrorMaker 2: the group name in documents and metrics "
                    "[default: mm2:<source alias>-><target alias>]."),
        option("--mm2-topic-pattern", "mm2_topic_patterns", multiple=True, metavar="REGEX",
               help="MirrorMaker 2: only source topics matching (whole name; repeatable)."),
        option("--mm2-exclude-topic", "mm2_exclude_topics", multiple=True, metavar="REGEX",
               help="MirrorMaker 2: not the source topics matching (whole name; repeatable)."),
        option("--mm2-replication-policy", type=click.Choice(list(REPLICATION_POLICIES)),
               default=None,
               help="MirrorMaker 2: its replication.policy.class, for the replicated topics' "
                    "names shown: default (DefaultReplicationPolicy: <source alias>.<topic>) or "
                    "identity (IdentityReplicationPolicy: the same name) [default: default]."),
        option("--mm2-replication-policy-separator", metavar="TEXT",
               help="MirrorMaker 2: its replication.policy.separator [default: .]."),
    ]
    for decorate in reversed(options):
        command = decorate(command)
    return command


def interval_option(command: F) -> F:
    return option("--interval", "interval_s", type=float,
                  help="Seconds between samples, at most 3600 [default: 1].")(command)


def ha_options(command: F) -> F:
    command = option("--ha-session-timeout", "ha_session_timeout_s", type=float,
                     metavar="SECONDS",
                     help="--ha-group: how long a dead instance keeps its share before the "
                          "others take it over [default: 10; the broker's minimum is 6].")(command)
    return option("--ha-group", metavar="NAME",
                  help="Share the work with every watch started with the same NAME, through "
                       "Kafka's consumer-group protocol (group NAME): each reports the consumer "
                       "groups of the __consumer_offsets partitions it is assigned.")(command)


def status_options(command: F) -> F:
    options = [
        option("--status-window", type=float, metavar="SECONDS",
               help="Window of the status verdict: how long REWIND shows, how far back WARN "
                    "looks [default: 600]."),
        option("--allowed-lag", type=float, metavar="RECORDS",
               help="A lag this small is OK [default: 1: transactional topics keep a lag of 1]."),
        option("--stop-after", type=float, metavar="SECONDS",
               help="Least time without progress before STOP/STALL [default: 300]."),
    ]
    for decorate in reversed(options):
        command = decorate(command)
    return command


def example(*lines: str) -> str:
    """A command's epilog: its examples, kept as written (click rewraps other paragraphs)."""
    heading = "Examples:" if len(lines) > 1 else "Example:"
    return f"\b\n{heading}\n" + "\n".join(f"  {line}" for line in lines)


MM2_FLAGS = ("mm2_target_bootstrap_server", "mm2_target_command_config", "mm2_source_alias",
             "mm2_target_alias", "mm2_offsets_topic", "mm2_connector", "mm2_label",
             "mm2_topic_patterns", "mm2_exclude_topics", "mm2_replication_policy",
             "mm2_replication_policy_separator")
CLUSTER_FLAGS = ("bootstrap_server", "command_config", "cluster_name", "groups", "topics",
                 "offsets_source", *MM2_FLAGS)


REPEATABLE = ("groups", "topics", "mm2_topic_patterns", "mm2_exclude_topics")


def _flag(name: str) -> str:
    """The flag of a click parameter: repeatable ones are plural (`groups` is --group)."""
    return f"--{(name[:-1] if name in REPEATABLE else name).replace('_', '-')}"


def _patterns(flag: str, texts: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    compiled = []
    for text in texts:
        try:
            compiled.append(re.compile(text))
        except (re.error, OverflowError, RecursionError) as error:
            raise ConfigError(f"{flag}: invalid regex {text!r}: {error}") from None
    return tuple(compiled)


def mirror_from_flags(params: dict[str, Any]) -> MirrorSettings | None:
    """The one MirrorMaker 2 flow the --mm2-* flags describe, if any."""
    if not params.get("mm2_target_bootstrap_server") and not params.get(
            "mm2_target_command_config"):
        given = [_flag(name) for name in MM2_FLAGS if params.get(name)]
        if given:
            raise ConfigError(f"{', '.join(given)} needs --mm2-target-bootstrap-server "
                              "(the cluster where MirrorMaker 2's offsets topic is)")
        return None
    for name in ("mm2_source_alias", "mm2_target_alias", "mm2_offsets_topic", "mm2_connector",
                 "mm2_label", "mm2_replication_policy_separator"):
        if params.get(name) == "":
            raise ConfigError(f"{_flag(name)} must not be empty")
    try:
        target = kafka_settings(params.get("mm2_target_bootstrap_server"),
                                params.get("mm2_target_command_config"), cluster="target")
    except ConfigError as error:
        if params.get("mm2_target_bootstrap_server") or "no Kafka cluster given" not in str(
                error):
            raise
        raise ConfigError("no MirrorMaker 2 target cluster given: pass "
                          "--mm2-target-bootstrap-server (or set bootstrap.servers in the "
                          "--mm2-target-command-config file)") from None
    for warning in target.warnings:
        log.warning("--mm2-target-command-config: %s", warning)
    source_alias = params.get("mm2_source_alias") or DEFAULT_SOURCE_ALIAS
    target_alias = params.get("mm2_target_alias") or DEFAULT_TARGET_ALIAS
    separator = params.get("mm2_replication_policy_separator") or DEFAULT_SEPARATOR
    if not re.fullmatch(r"[a-zA-Z0-9._-]+", separator):
        raise ConfigError(f"--mm2-replication-policy-separator must be characters allowed in a "
                          f"topic name (letters, digits, '.', '_', '-'), got {separator!r}")
    return MirrorSettings(
        label=params.get("mm2_label") or default_label(source_alias, target_alias),
        target_settings=target.client_settings,
        offsets_topic=params.get("mm2_offsets_topic") or default_offsets_topic(source_alias),
        source_alias=source_alias, target_alias=target_alias,
        connector=params.get("mm2_connector") or DEFAULT_CONNECTOR,
        replication_policy=params.get("mm2_replication_policy") or "default",
        replication_separator=separator,
        topics=TopicSelection(
            patterns=_patterns("--mm2-topic-pattern", tuple(params.get("mm2_topic_patterns")
                                                            or ())),
            exclude=_patterns("--mm2-exclude-topic", tuple(params.get("mm2_exclude_topics")
                                                           or ()))))


def resolve_config(params: dict[str, Any]) -> ExporterConfig:
    """The config file (if any) with the flags on top; or a one-cluster config from flags."""
    if params["config"]:
        given = [_flag(name) for name in CLUSTER_FLAGS if params.get(name)]
        if given:
            raise ConfigError(f"{', '.join(given)} cannot be combined with --config: describe "
                              "the clusters in the config file")
        config = load_config(params["config"])
    else:
        mirror = mirror_from_flags(params)
        if not params["groups"] and mirror is None:
            raise ConfigError("give --group (repeatable) or --config")
        groups = check_names("--group", tuple(params["groups"]))
        mirrors = () if mirror is None else (mirror,)
        if mirror is not None and mirror.label in groups:
            raise ConfigError(f"--mm2-label {mirror.label!r} is also a --group: give the mirror "
                              "another label")
        topics = check_topic_names("--topic", tuple(params["topics"]))
        # Unnamed, a cluster is called by its bootstrap servers: two exporters of different
        # clusters writing one index stay apart (a fixed "default" made them indistinguishable).
        kafka = kafka_settings(params["bootstrap_server"], params["command_config"],
                               params["cluster_name"])
        cluster = ClusterConfig(kafka.cluster, kafka,
                                GroupSelection(names=groups + tuple(m.label for m in mirrors)),
                                TopicSelection(names=topics), mirrors,
                                params.get("offsets_source") or "auto")
        config = ExporterConfig(clusters=(cluster,))
    return apply_flags(config, params)


def _checked(flag: str, value: float | None, bounds: Bounds) -> float | None:
    return None if value is None else check_number(flag, value, bounds)


def apply_flags(config: ExporterConfig, params: dict[str, Any]) -> ExporterConfig:
    overrides: dict[str, Any] = {}
    if params.get("interval_s") is not None:
        overrides["interval_s"] = check_interval(params["interval_s"])
    if params.get("timeout_s") is not None:
        overrides["timeout_s"] = check_timeout(params["timeout_s"])
    if params.get("spool_max_mb") is not None:
        overrides["spool_max_bytes"] = megabytes_to_bytes(
            check_number("--spool-max-mb", params["spool_max_mb"], MEGABYTES))
    if params.get("memory_max_mb") is not None:
        overrides["memory_max_bytes"] = megabytes_to_bytes(
            check_number("--memory-max-mb", params["memory_max_mb"], MEGABYTES))
    if any(params.get(name) is not None for name in ("status_window", "allowed_lag",
                                                      "stop_after")):
        overrides["status_rules"] = status_rules(
            _checked("--status-window", params.get("status_window"), STATUS_WINDOW),
            _checked("--allowed-lag", params.get("allowed_lag"), ALLOWED_LAG),
            _checked("--stop-after", params.get("stop_after"), STOP_AFTER),
            config.status_rules)
    if params.get("spool_dir"):
        overrides["spool_dir"] = Path(params["spool_dir"])
    if params.get("http_port") is not None:
        overrides["http_port"] = params["http_port"]
    if params.get("http_host"):
        overrides["http_host"] = params["http_host"]
    if params.get("ha_group") is not None:
        if problem := check_ha_group("--ha-group", params["ha_group"]):
            raise ConfigError(problem)
        overrides["ha_group"] = params["ha_group"]
    if params.get("ha_session_timeout_s") is not None:
        overrides["ha_session_timeout_s"] = check_number(
            "--ha-session-timeout", params["ha_session_timeout_s"], HA_SESSION_TIMEOUT)
    if params["es_urls"]:
        index = params["es_index"] or "consumer_lag"
        overrides["elasticsearch"] = elasticsearch_settings(
            params["es_urls"], index, params["es_username"], params["es_ca_file"],
            params.get("timeout_s") or config.timeout_s)
    elif config.elasticsearch is not None and params["es_index"]:
        overrides["elasticsearch"] = replace(config.elasticsearch, index=params["es_index"])
    return with_default_spool_dir(replace(config, **overrides))


COMPLETION = "_LAG_EXPORTER_COMPLETE"


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]},
             epilog="\b\nShell completion (bash; zsh_source and fish_source for the others):\n"
                    f'  eval "$({COMPLETION}=bash_source lag-exporter)"\n\n'
                    + example("lag-exporter snapshot --bootstrap-server localhost:9092 "
                              "--group my-group"))
@option("--log-level", default="info", show_default=True,
        type=click.Choice(LOG_LEVELS, case_sensitive=False))
@option("--log-format", default="text", show_default=True, type=click.Choice(LOG_FORMATS))
@option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.version_option(__version__, prog_name="lag-exporter")
def cli(log_level: str, log_format: str, debug: bool) -> None:
    """Kafka consumer-group lag, per topic and partition, into Elasticsearch.

    Data path: Kafka -> committed offsets and high watermarks -> lag -> documents -> sink.
    Every option can also be set as LAG_EXPORTER_<OPTION> (e.g. LAG_EXPORTER_BOOTSTRAP_SERVER).
    --log-level, --log-format and --debug may also follow the subcommand.
    """
    _Cli.debug = debug
    configure_logging(log_level, log_format)


@cli.command(epilog=example(
    "lag-exporter snapshot --bootstrap-server localhost:9092 --group my-group --format tsv"))
@source_options
@option("--format", "output_format", type=click.Choice(["table", "tsv", "json"]),
        default="table", show_default=True,
        help="table: aligned columns; tsv: the same, tab-separated (cut -f 6 is LAG); "
             "json: the documents.")
@global_options
def snapshot(output_format: str, **params: Any) -> None:
    """Take one sample, print it, and write it to Elasticsearch if one is configured."""
    config = resolve_config(params)
    sample = app.take_snapshot(config)
    for group_lag in sample.groups:
        if group_lag.error:
            click.echo(f"lag-exporter: group {group_lag.group}: {group_lag.error}", err=True)
    for warning in sample.warnings:  # e.g. a commit past the high watermark, as watch logs it
        click.echo(f"lag-exporter: warning: {warning}", err=True)
    if output_format == "json":
        for document in sample_documents(sample, with_nulls=True):
            click.echo(json.dumps(document.source))
    else:
        click.echo(format_tsv(sample) if output_format == "tsv" else format_table(sample))
    if config.elasticsearch is not None:
        report = app.write_once(config.elasticsearch, sample)
        click.echo(f"wrote {report.stored} document(s) to {config.elasticsearch.index}",
                   err=True)


@cli.command(epilog=example(
    "lag-exporter watch --bootstrap-server localhost:9092 --group my-group \\",
    "    --es-url http://localhost:9200 --http-port 9280"))
@source_options
@interval_option
@option("--summary-interval", "summary_s", default=10.0, show_default=True, type=float,
        help="Seconds between one-line lag summaries.")
@option("--spool-dir", metavar="PATH", help="Where undelivered samples wait on disk "
        "[default: $XDG_STATE_HOME/lag-exporter/spool/<index>].")
@option("--spool-max-mb", type=float, metavar="MIB", help="Disk bound of the spool; past it "
        f"the oldest samples are dropped [default: {DEFAULT_SPOOL_MAX_MB}].")
@option("--memory-max-mb", type=float, metavar="MIB", help="Memory bound of the queue: all of "
        "it without a spool, the samples not yet on disk with one "
        f"[default: {DEFAULT_MEMORY_MAX_MB}].")
@option("--http-port", type=click.IntRange(0, 65535),
        help="Serve /metrics (Prometheus) and /healthz on this port.")
@option("--http-host", help="Address for --http-port [default: 0.0.0.0].")
@ha_options
@status_options
@global_options
def watch(summary_s: float, **params: Any) -> None:
    """Sample every --interval seconds until SIGINT/SIGTERM; write to Elasticsearch, or print
    JSON lines when none is configured. SIGHUP reads --config, or the --command-config
    files, again."""
    # First of all: a signal during start-up (spool restore, first Elasticsearch contact) must
    # not kill the process; it is handed to the watch once that exists.
    with Signals() as signals:
        check_number("--summary-interval", summary_s, SUMMARY_INTERVAL)
        config = resolve_config(params)
        # SIGHUP resolves the configuration again from the same flags and files: the config
        # file if any, else the --command-config files (rotated keystores, truststores).
        service = app.make_service(config, summary_s, lambda: resolve_config(params))
        signals.attach(service.watch)
        service.run()


@cli.command("check-config", epilog=example("lag-exporter check-config --config lag-exporter.toml"))
@source_options
@ha_options
@global_options
def check_config(**params: Any) -> None:
    """Print the resolved plan (clusters, the groups that match now, topic and partition
    counts) without writing anything; exit 1 if a cluster cannot be reached."""
    config = resolve_config(params)
    lines, reachable = describe_plan(config)
    if config.ha_group is not None:
        lines += app.describe_ha(config)
    for line in lines:
        click.echo(line)
    if not reachable:
        raise click.exceptions.Exit(1)


def watch_url(text: str) -> str:
    """--from: the base URL of a running watch's HTTP endpoint (a trailing /api/lag is fine)."""
    problem = f"--from must be the http://HOST:PORT of a running `lag-exporter watch " \
              f"--http-port PORT`, got {text!r}"
    parts = urlsplit(text)
    try:
        parts.port  # noqa: B018 (raises ValueError on a port that is not one)
    except ValueError:
        raise ConfigError(problem) from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
        raise ConfigError(problem)
    path = parts.path.rstrip("/").removesuffix("/api/lag")
    return f"{parts.scheme}://{parts.netloc}{path}"


@cli.command(epilog=example(
    "lag-exporter top --bootstrap-server localhost:9092 --group my-group",
    "lag-exporter top --from http://localhost:9280     # a running watch --http-port 9280"))
@source_options
@interval_option
@status_options
@option("--from", "from_url", metavar="URL",
        help="Attach to a running `lag-exporter watch --http-port PORT` at http://HOST:PORT: "
             "read its /api/lag every --interval instead of sampling (no Kafka connection).")
@global_options
def top(from_url: str | None, **params: Any) -> None:
    """A live view of lag in the terminal, worst first, refreshed every --interval: total and
    maximum lag, seconds behind and status per group and topic, the last minute as a
    sparkline, the partitions of the selected row. Keys: up/down or j/k, Enter, q."""
    from rich.console import Console  # 0.1 s: only for this command

    from lag_exporter.top import FleetRows, RowSource, TopState, WatchRows, run_top

    source: RowSource
    if from_url is not None:
        # Typed flags only: LAG_EXPORTER_* variables set for a watch do not stop a look at it.
        context = click.get_current_context()
        given = sorted(_flag(name) for name, value in params.items()
                       if value not in (None, (), False)
                       and name not in ("interval_s", "timeout_s")
                       and context.get_parameter_source(name) is ParameterSource.COMMANDLINE)
        if given:
            raise ConfigError(f"--from reads a running watch and connects to no Kafka: "
                              f"{', '.join(given)} cannot be combined with it")
        base_url = watch_url(from_url)
        interval_s = check_interval(params["interval_s"] if params["interval_s"] is not None
                                    else 1.0)
        timeout_s = 5.0 if params["timeout_s"] is None else check_timeout(params["timeout_s"])
        source, label = WatchRows(base_url, timeout_s), f"from {base_url}"
    else:
        config = resolve_config(params)
        interval_s = config.interval_s
        label = ", ".join(cluster.name for cluster in config.clusters)
    if not sys.stdout.isatty():
        raise ConfigError("top draws in a terminal and stdout is not one: use `lag-exporter "
                          "snapshot` or `watch` for output to a file or a pipe")
    if from_url is None:
        # In this process, not isolated as in watch: a child's log lines would tear the view.
        fleet = app.make_fleet(config, app.source_factory(app.kafka_timeout(config),
                                                          isolated=False, follow_commits=True))
        source = FleetRows(fleet, interval_s)
    run_top(source, TopState(label, interval_s), Console(), read_keys=sys.stdin.isatty())


def main() -> None:
    cli(prog_name="lag-exporter")
