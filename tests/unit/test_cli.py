"""The command line without Kafka: options, validation before any I/O, global options."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from click.testing import CliRunner, Result

from lag_exporter.cli import _Cli, cli
from lag_exporter.errors import ConfigError
from lag_exporter.logs import JsonFormatter


@pytest.fixture(autouse=True)
def keep_logging() -> Iterator[None]:
    """The command points the root logger at the runner's stderr: undo that after each test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level
    _Cli.debug = False


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


SNAPSHOT = ("snapshot", "--bootstrap-server", "127.0.0.1:1", "--group", "g")


@pytest.mark.parametrize(("args", "message"), [
    (("--timeout", "0"), "--timeout must be at least 0.01 and at most 300 seconds, got 0"),
    (("--timeout", "-1"), "--timeout must be at least 0.01 and at most 300 seconds, got -1"),
    (("--timeout", "301"), "--timeout must be at least 0.01 and at most 300 seconds, got 301"),
    (("--timeout", "nan"), "--timeout must be at least 0.01 and at most 300 seconds, got nan"),
    (("--group", ""), "--group must not be empty"),
    (("--topic", ""), "--topic must not be empty"),
])
def test_bad_snapshot_values_are_one_line_and_exit_2(args: tuple[str, ...], message: str) -> None:
    done = run(*SNAPSHOT, *args)
    assert done.exit_code == 2, done.output
    assert done.stderr == f"lag-exporter: error: {message}\n"


@pytest.mark.parametrize(("args", "message"), [
    (("--timeout", "0"), "--timeout must be at least 0.01"),
    (("--interval", "3601"), "--interval must be greater than 0 and at most 3600 seconds"),
    (("--summary-interval", "0"), "--summary-interval must be greater than 0 seconds, got 0"),
    (("--spool-max-mb", "0"), "--spool-max-mb must be greater than 0 and at most"),
    (("--memory-max-mb", "-5"), "--memory-max-mb must be greater than 0 and at most"),
])
def test_bad_watch_values_are_one_line_and_exit_2(args: tuple[str, ...], message: str) -> None:
    # The bad index name is checked after these values: without their checks, watch stops
    # there instead of running forever.
    done = run("watch", "--bootstrap-server", "127.0.0.1:1", "--group", "g", *args,
               "--es-url", "http://127.0.0.1:1", "--es-index", "Bad_Index")
    assert done.exit_code == 2, done.output
    assert done.stderr.startswith(f"lag-exporter: error: {message}")
    assert done.stderr.count("\n") == 1


def test_debug_after_the_subcommand_shows_the_traceback() -> None:
    """Without --debug the error is one line; with it, after the subcommand, the exception
    propagates (the traceback); `--debug` there was 'No such option' before."""
    assert run(*SNAPSHOT, "--timeout", "0").exit_code == 2
    done = run(*SNAPSHOT, "--timeout", "0", "--debug")
    assert isinstance(done.exception, ConfigError), done.output


@pytest.mark.parametrize("command", ["snapshot", "watch", "check-config"])
def test_log_options_after_the_subcommand_apply(command: str) -> None:
    run("--log-level", "error", command, "--bootstrap-server", "127.0.0.1:1", "--group", "g",
        "--timeout", "0", "--log-level", "debug", "--log-format", "json")
    root = logging.getLogger()
    assert root.level == logging.DEBUG  # after the subcommand wins
    assert isinstance(root.handlers[0].formatter, JsonFormatter)


def test_log_options_before_the_subcommand_still_apply() -> None:
    run("--log-level", "warning", *SNAPSHOT, "--timeout", "0")
    assert logging.getLogger().level == logging.WARNING


def test_the_environment_does_not_override_a_flag_before_the_subcommand(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LAG_EXPORTER_LOG_LEVEL", "debug")
    run("--log-level", "error", *SNAPSHOT, "--timeout", "0")
    assert logging.getLogger().level == logging.ERROR


@pytest.mark.parametrize("command", [(), *((name,) for name in cli.commands)])
def test_every_help_ends_with_an_example(command: tuple[str, ...]) -> None:
    done = run(*command, "--help")
    assert done.exit_code == 0, done.output
    lines = done.output.rstrip("\n").splitlines()
    heading = max(i for i, line in enumerate(lines) if line.strip() in ("Example:", "Examples:"))
    examples = [line.strip() for line in lines[heading + 1:]]
    assert examples and examples[0].startswith(f"lag-exporter {' '.join(command)}".rstrip())
    assert all(line.startswith(("lag-exporter ", "--")) for line in examples), examples


def test_the_main_help_says_how_to_get_shell_completion() -> None:
    assert 'eval "$(_LAG_EXPORTER_COMPLETE=bash_source lag-exporter)"' in run("--help").output


@pytest.mark.parametrize(("args", "message"), [
    (("--from", "ftp://host:1"), "--from must be the http://HOST:PORT of a running "
                                 "`lag-exporter watch --http-port PORT`, got 'ftp://host:1'"),
    (("--from", "http://host:99999"), "--from must be the http://HOST:PORT of a running"),
    (("--from", "localhost:9280"), "--from must be the http://HOST:PORT of a running"),
    (("--from", "http://host:1", "--group", "g", "--bootstrap-server", "h:1"),
     "--from reads a running watch and connects to no Kafka: --bootstrap-server, --group "
     "cannot be combined with it"),
    (("--from", "http://host:1", "--config", "x.toml"), "--from reads a running watch and "
                                                         "connects to no Kafka: --config cannot"),
    (("--from", "http://host:1", "--interval", "0"), "--interval must be greater than 0"),
    (("--from", "http://host:1", "--timeout", "0"), "--timeout must be at least 0.01"),
    (("--bootstrap-server", "127.0.0.1:1"), "give --group (repeatable) or --config"),
    (("--bootstrap-server", "127.0.0.1:1", "--group", "g", "--interval", "-1"),
     "--interval must be greater than 0"),
    # CliRunner's stdout is no terminal, as in `lag-exporter top ... | less`.
    (("--bootstrap-server", "127.0.0.1:1", "--group", "g"), "top draws in a terminal and "
                                                            "stdout is not one"),
    (("--from", "http://127.0.0.1:1/api/lag"), "top draws in a terminal and stdout is not one"),
])
def test_bad_top_input_is_one_line_and_exit_2(args: tuple[str, ...], message: str) -> None:
    done = run("top", *args)
    assert done.exit_code == 2, done.output
    assert done.stderr.startswith(f"lag-exporter: error: {message}")
    assert done.stderr.count("\n") == 1


def test_watch_and_top_share_their_sampling_options() -> None:
    """top samples with watch's flags (one list of options, not a copy that drifts)."""
    watch_options = {p.name for p in cli.commands["watch"].params}
    top_options = {p.name for p in cli.commands["top"].params}
    only_watch = {"summary_s", "spool_dir", "spool_max_mb", "memory_max_mb", "http_port",
                  "http_host", "ha_group", "ha_session_timeout_s"}
    assert top_options == (watch_options - only_watch) | {"from_url"}


def test_top_from_a_watch_ignores_the_watchs_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """LAG_EXPORTER_* variables set for a watch on this host are not flags given to top."""
    monkeypatch.setenv("LAG_EXPORTER_BOOTSTRAP_SERVER", "127.0.0.1:1")
    monkeypatch.setenv("LAG_EXPORTER_GROUP", "g")
    done = run("top", "--from", "http://127.0.0.1:1")
    # Past the check of flags, to the next one (CliRunner's stdout is no terminal).
    assert done.stderr.startswith("lag-exporter: error: top draws in a terminal"), done.stderr
