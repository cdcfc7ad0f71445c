"""Issue 10 against the real stack: new partitions are reported by `watch`, signals during
start-up do not kill it, and /healthz tells the truth while the broker is gone."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
from helpers import ExporterProcess, commit, create_topic, produce, wait_until_kafka_serves

from stack.stackctl import Stack

pytestmark = pytest.mark.integration


def wait_for(predicate: object, timeout: float, every: float = 0.25) -> float:
    """Poll until predicate() is true; the seconds it took (fails the test on timeout)."""
    assert callable(predicate)
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout} s")


class StdoutReader:
    """Collects the JSON lines `watch` prints (no --es-url) while it runs."""

    def __init__(self, exporter: ExporterProcess) -> None:
        self.documents: list[dict[str, object]] = []
        self._lock = threading.Lock()
        self._stream = exporter.process.stdout
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._stream is not None
        for line in self._stream:
            with self._lock:
                self.documents.append(json.loads(line))

    def latest(self, topic: str) -> dict[str, object] | None:
        with self._lock:
            matching = [d for d in self.documents if d["topic"] == topic]
        return matching[-1] if matching else None


def test_partitions_added_to_a_topic_appear_without_naming_it(
    stack: Stack, unique_name: str
) -> None:
    topic, group = f"grow.{unique_name}", f"grow-{unique_name}"
    create_topic(stack.source_bootstrap, topic, 2)
    produce(stack.source_bootstrap, topic, {0: 5, 1: 5})
    commit(stack.source_bootstrap, group, {(topic, 0): 1, (topic, 1): 1})
    exporter = ExporterProcess("--bootstrap-server", stack.source_bootstrap, "--group", group,
                               "--interval", "1")
    reader = StdoutReader(exporter)
    try:
        wait_for(lambda: reader.latest(topic) is not None, 20)
        stack.run_tool("kafka-topics", "--bootstrap-server", stack.source_bootstrap,
                       "--alter", "--topic", topic, "--partitions", "4")
        produce(stack.source_bootstrap, topic, {2: 7, 3: 9})
        commit(stack.source_bootstrap, group, {(topic, 0): 1, (topic, 1): 1, (topic, 2): 2,
                                               (topic, 3): 3})
        # Was never (7 minutes watched); now within a discovery period (30 s) at most.
        wait_for(lambda: (reader.latest(topic) or {}).get("p3") == 6, 40)
        document = reader.latest(topic)
        assert document is not None
        assert (document["p0"], document["p1"], document["p2"], document["p3"]) == (4, 4, 5, 6)
        assert document["lag_total"] == 19 and "partitions_unknown" not in document
    finally:
        code, _ = exporter.stop(signal.SIGTERM)
    assert code == 0, exporter.stderr


class SilentServer(NamedTuple):
    url: str
    contacted: threading.Event


@pytest.fixture
def silent_elasticsearch() -> Iterator[SilentServer]:
    """A port that accepts connections and never answers: the first Elasticsearch contact
    hangs for the whole timeout, as with a node under heavy load."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop, contacted = threading.Event(), threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
                contacted.set()
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield SilentServer(f"http://127.0.0.1:{server.getsockname()[1]}", contacted)
    stop.set()
    thread.join()
    for connection in held:
        connection.close()
    server.close()


def test_sighup_and_sigterm_during_start_up_do_not_kill_watch(
    stack: Stack, unique_name: str, silent_elasticsearch: SilentServer, tmp_path: Path
) -> None:
    """Before: SIGHUP while the first Elasticsearch contact was pending ended the process
    (killed by SIGHUP, which systemd counts as a clean exit)."""
    group = f"early-{unique_name}"
    exporter = ExporterProcess("--bootstrap-server", stack.source_bootstrap, "--group", group,
                               "--es-url", silent_elasticsearch.url, "--timeout", "8",
                               "--spool-dir", str(tmp_path / "spool"))
    assert silent_elasticsearch.contacted.wait(20)  # the 8-s first contact has begun
    exporter.process.send_signal(signal.SIGHUP)
    with pytest.raises(subprocess.TimeoutExpired):  # still running a second later
        exporter.process.wait(timeout=1)
    code, _ = exporter.stop(signal.SIGTERM, timeout=20)
    assert code == 0, exporter.stderr
    assert "received SIGHUP" in exporter.stderr and "received SIGTERM" in exporter.stderr


def healthz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_healthz_fails_while_the_broker_is_down_and_recovers(
    stack: Stack, unique_name: str, restart_source: None
) -> None:
    """Before: 200 ok for the whole outage, because a tick whose cluster sample was still in
    flight counted as a healthy sample."""
    topic, group = f"health.{unique_name}", f"health-{unique_name}"
    create_topic(stack.source_bootstrap, topic, 1)
    produce(stack.source_bootstrap, topic, {0: 3})
    commit(stack.source_bootstrap, group, {(topic, 0): 1})
    port = free_port()
    exporter = ExporterProcess("--bootstrap-server", stack.source_bootstrap, "--group", group,
                               "--http-port", str(port))
    try:
        wait_for(lambda: healthz(port) == 200, 20)
        stack.stop("kafka-source")
        took = wait_for(lambda: healthz(port) == 503, 15)
        assert took <= 6  # the limit is 3 intervals, plus one sample's timeout at most
        time.sleep(3)
        assert healthz(port) == 503  # and stays so while the broker is away
        stack.start("kafka-source")
        wait_until_kafka_serves(stack.source_bootstrap)
        wait_for(lambda: healthz(port) == 200, 20)
    finally:
        code, _ = exporter.stop(signal.SIGTERM)
    assert code == 0, exporter.stderr
