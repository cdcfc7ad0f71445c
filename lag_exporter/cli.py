"""The `lag-exporter` command: a thin click shell over lag_exporter.app. No logic lives here.

Exit codes: 0 success, 1 runtime failure (Kafka or Elasticsearch), 2 usage or configuration
error, 130 interrupted. Errors are one line on stderr; --debug adds the traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from lag_exporter import __version__, app
from lag_exporter.config import (
    ES_API_KEY_ENV,
    ES_PASSWORD_ENV,
    check_interval,
    default_spool_dir,
    elasticsearch_settings,
    kafka_settings,
)
from lag_exporter.documents import sample_documents
from lag_exporter.errors import LagExporterError
from lag_exporter.logs import configure_logging
from lag_exporter.report import format_table
from lag_exporter.service import stop_on_signals

F = TypeVar("F", bound=Callable[..., Any])
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


def kafka_options(command: F) -> F:
    options = [
        click.option("--bootstrap-server", envvar=f"{ENV}BOOTSTRAP_SERVER", metavar="HOST:PORT",
                     help="Kafka brokers to connect to (comma-separated)."),
        click.option("--command-config", envvar=f"{ENV}COMMAND_CONFIG", metavar="PATH",
                     help="Java client properties file, as given to kafka-consumer-groups or "
                          "MirrorMaker's consumer.properties (SASL, SSL, ...)."),
        click.option("--cluster-name", envvar=f"{ENV}CLUSTER_NAME", default="default",
                     show_default=True, help="Name of the cluster in the documents."),
        click.option("--group", "groups", envvar=f"{ENV}GROUP", multiple=True, required=True,
                     help="Consumer group to sample (repeatable)."),
        click.option("--topic", "topics", envvar=f"{ENV}TOPIC", multiple=True,
                     help="Only these topics; also reports their partitions with no commit."),
        click.option("--timeout", "timeout_s", envvar=f"{ENV}TIMEOUT", default=10.0,
                     show_default=True, type=float,
                     help="Seconds to wait for Kafka and Elasticsearch before giving up."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def elasticsearch_options(command: F) -> F:
    options = [
        click.option("--es-url", "es_urls", envvar=f"{ENV}ES_URL", multiple=True,
                     metavar="URL",
                     help="Elasticsearch node URL (repeatable, or space/comma-separated)."),
        click.option("--es-index", envvar=f"{ENV}ES_INDEX", default="consumer_lag",
                     show_default=True, help="Index for the documents."),
        click.option("--es-username", envvar=f"{ENV}ES_USERNAME",
                     help=f"Basic-auth user; the password comes from ${ES_PASSWORD_ENV}. "
                          f"An API key comes from ${ES_API_KEY_ENV}."),
        click.option("--es-ca-file", envvar=f"{ENV}ES_CA_FILE", metavar="PATH",
                     help="CA certificate (PEM) for https Elasticsearch URLs."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--log-level", envvar=f"{ENV}LOG_LEVEL", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False))
@click.option("--log-format", envvar=f"{ENV}LOG_FORMAT", default="text", show_default=True,
              type=click.Choice(["text", "json"]))
@click.option("--debug", is_flag=True, envvar=f"{ENV}DEBUG",
              help="Show tracebacks on errors.")
@click.version_option(__version__, prog_name="lag-exporter")
def cli(log_level: str, log_format: str, debug: bool) -> None:
    """Kafka consumer-group lag, per topic and partition, into Elasticsearch.

    Data path: Kafka -> committed offsets and high watermarks -> lag -> documents -> sink.
    """
    _Cli.debug = debug
    configure_logging(log_level, log_format)


@cli.command()
@kafka_options
@elasticsearch_options
@click.option("--format", "output_format", type=click.Choice(["table", "json"]), default="table",
              show_default=True, envvar=f"{ENV}FORMAT")
def snapshot(
    bootstrap_server: str | None, command_config: str | None, cluster_name: str,
    groups: tuple[str, ...], topics: tuple[str, ...], timeout_s: float,
    es_urls: tuple[str, ...], es_index: str, es_username: str | None, es_ca_file: str | None,
    output_format: str,
) -> None:
    """Take one sample, print it, and write it to Elasticsearch if --es-url is given."""
    kafka = kafka_settings(bootstrap_server, command_config, cluster_name)
    elasticsearch = elasticsearch_settings(es_urls, es_index, es_username, es_ca_file, timeout_s)
    sample = app.take_snapshot(kafka, groups, topics, timeout_s)
    for group_lag in sample.groups:
        if group_lag.error:
            click.echo(f"lag-exporter: group {group_lag.group}: {group_lag.error}", err=True)
    if output_format == "json":
        for document in sample_documents(sample, with_nulls=True):
            click.echo(json.dumps(document.source))
    else:
        click.echo(format_table(sample))
    if elasticsearch is not None:
        report = app.write_once(elasticsearch, sample)
        click.echo(f"wrote {report.stored} document(s) to {elasticsearch.index}", err=True)


@cli.command()
@kafka_options
@elasticsearch_options
@click.option("--interval", "interval_s", envvar=f"{ENV}INTERVAL", default=1.0,
              show_default=True, type=float, help="Seconds between samples.")
@click.option("--summary-interval", "summary_s", envvar=f"{ENV}SUMMARY_INTERVAL", default=10.0,
              show_default=True, type=float, help="Seconds between one-line lag summaries.")
@click.option("--spool-dir", envvar=f"{ENV}SPOOL_DIR", metavar="PATH",
              help="Where undelivered samples wait on disk "
                   "[default: $XDG_STATE_HOME/lag-exporter/spool/<index>].")
def watch(
    bootstrap_server: str | None, command_config: str | None, cluster_name: str,
    groups: tuple[str, ...], topics: tuple[str, ...], timeout_s: float,
    es_urls: tuple[str, ...], es_index: str, es_username: str | None, es_ca_file: str | None,
    interval_s: float, summary_s: float, spool_dir: str | None,
) -> None:
    """Sample every --interval seconds until SIGINT/SIGTERM; write to Elasticsearch, or print
    JSON lines when no --es-url is given."""
    check_interval(interval_s)
    kafka = kafka_settings(bootstrap_server, command_config, cluster_name)
    elasticsearch = elasticsearch_settings(es_urls, es_index, es_username, es_ca_file,
                                           min(timeout_s, max(interval_s, 1.0) * 5))
    spool = Path(spool_dir) if spool_dir else (
        default_spool_dir(es_index) if elasticsearch else None)
    watcher = app.make_watch(kafka, groups, topics, elasticsearch, interval_s,
                             min(timeout_s, max(interval_s * 5, 2.0)), spool, summary_s)
    with stop_on_signals(watcher):
        watcher.run()


def main() -> None:
    cli(prog_name="lag-exporter")
