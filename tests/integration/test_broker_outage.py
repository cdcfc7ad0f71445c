"""The Kafka client process survives a broker coming back, and answers again at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from helpers import commit, create_topic, produce, wait_until_kafka_serves

from lag_exporter.errors import SourceError
from lag_exporter.isolation import IsolatedKafkaSource
from stack.stackctl import Stack

pytestmark = pytest.mark.integration


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.05)


class Poller:
    """Asks committed_offsets every 0.1 s in a thread (10x a 1 s watch, to hit short windows),
    recording when answers succeeded and when the client process had to be restarted."""

    def __init__(self, source: IsolatedKafkaSource, group: str) -> None:
        self.source, self.group = source, group
        self.answered: list[float] = []
        self.crashed: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        restarts = 0
        while not self._stop.wait(0.1):
            answer = self.source.committed_offsets([self.group])[self.group]
            if self.source.restarts != restarts:
                restarts = self.source.restarts
                self.crashed.append(time.time())
            if not isinstance(answer, SourceError):
                self.answered.append(time.time())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def test_a_broker_coming_back_does_not_crash_the_client_and_is_read_at_once(
    stack: Stack, unique_name: str, restart_source: None
) -> None:
    topic, group = f"outage.{unique_name}", f"outage-{unique_name}"
    create_topic(stack.source_bootstrap, topic, 2)
    produce(stack.source_bootstrap, topic, {0: 3, 1: 3})
    commit(stack.source_bootstrap, group, {(topic, 0): 1, (topic, 1): 2})
    source = IsolatedKafkaSource("c", {"bootstrap.servers": stack.source_bootstrap}, 5.0)
    poller = Poller(source, group)
    try:
        wait_until(lambda: bool(poller.answered), 10, "an answer before the outage")
        stack.stop("kafka-source")
        time.sleep(5)
        starting_at = time.time()
        stack.start("kafka-source")
        serving_at = wait_until_kafka_serves(stack.source_bootstrap)
        wait_until(lambda: any(t > starting_at for t in poller.answered), 10,
                   "an answer after the outage")
    finally:
        poller.stop()
        source.close()
    # librdkafka #5040: an OffsetFetch answered NOT_COORDINATOR (the coordinator not loaded yet)
    # crashed the client process with SIGSEGV in 5 of 6 restarts. While the broker shuts down it
    # may still do so, and while it starts librdkafka's own assertion on a request whose
    # connection dropped (`eonce->refcnt > 0`, #4605) can abort it, rarely (seen once in CI,
    # 7.7 s into a start): both contained, a new client process at once (see README). Once the
    # broker serves, never; and the answers come back within 2 ticks whatever happened before.
    starting = [t for t in poller.crashed if starting_at <= t < serving_at]
    assert [t for t in poller.crashed if t >= serving_at] == [], (serving_at, poller.crashed)
    assert len(starting) <= 1, (starting_at, serving_at, starting)
    first = min(t for t in poller.answered if t > starting_at)
    print(f"first answer {first - serving_at:+.2f} s after Kafka served again; "
          f"{len(poller.crashed) - len(starting)} crash(es) while it shut down, "
          f"{len(starting)} while it started")
    assert first - serving_at < 2, (first - serving_at)  # within 2 ticks of a 1 s watch
