"""The Kafka client process (isolation.py starts it): `python -m lag_exporter.kafka_child SOCKET_FD
LIFELINE_FD`.

It imports only what KafkaSource needs (confluent_kafka, not the CLI, Elasticsearch or rich): a
second Python interpreter costs its imports in memory. The cluster's client settings, which may hold
passwords, arrive as the first message on the socket, never on argv or in the environment. The
child exits when the parent closes the lifeline pipe, which the kernel does when the parent dies,
even by SIGKILL (PR_SET_PDEATHSIG would not do: it fires when the parent *thread* that started the
child ends, and any sampler thread may start one).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from lag_exporter.errors import SourceError
from lag_exporter.model import GroupOffsets, TopicPartition


class AskedBefore:
    """The partition lists of high_watermarks calls sent whole, by length, so that a list asked
    again travels as its length alone: every sample asks the same lists (the groups' partitions,
    the offsets topic's), and sending 10,000 partitions cost ~10 ms of CPU in the parent and more
    in the child. Both ends keep one: they see the same lists sent whole, in the same order."""

    LIMIT = 8  # lists kept; more distinct lengths start over

    def __init__(self) -> None:
        self._by_length: dict[int, list[Any]] = {}

    def shorten(self, partitions: list[Any]) -> tuple[int, list[Any] | None]:
        """The parent's end: (length, None) for a list sent before, else (length, the list)."""
        if self._by_length.get(len(partitions)) == partitions:
            return len(partitions), None
        self._remember(partitions)
        return len(partitions), partitions

    def expand(self, length: int, partitions: list[Any] | None) -> list[Any]:
        """The child's end: the list the parent meant."""
        if partitions is None:
            return self._by_length[length]
        self._remember(partitions)
        return partitions

    def _remember(self, partitions: list[Any]) -> None:
        if len(partitions) not in self._by_length and len(self._by_length) >= self.LIMIT:
            self._by_length.clear()
        self._by_length[len(partitions)] = partitions


# Over the pipe, partitions travel as plain tuples: (un)pickling a NamedTuple runs Python code
# per item, and there are ~25,000 per sample at scale. High watermarks come back as a list of
# values in the order asked for, so the parent reuses its own TopicPartition keys.
def request_to_wire(method: str, keys: list[Any]) -> list[Any]:
    if method == "high_watermarks":
        return [tuple(tp) for tp in keys]
    if method in ("record_times", "start_record_times"):  # keys: (partition, offset) pairs
        return [(tp.topic, tp.partition, offset) for tp, offset in keys]
    return keys


def answer_to_wire(method: str, keys: list[Any], answer: Any) -> Any:
    if method == "high_watermarks":
        missing = SourceError("Kafka's answer left this partition out")
        return [answer.get(tp, missing) for tp in keys]
    if method == "committed_offsets":
        return {group: offsets if isinstance(offsets, SourceError) else
                {tuple(tp): offset for tp, offset in offsets.committed_offsets.items()}
                for group, offsets in answer.items()}
    return answer


def answer_from_wire(method: str, keys: list[Any], answer: Any) -> Any:
    if method == "high_watermarks":
        return dict(zip(keys, answer, strict=True))
    if method == "committed_offsets":
        return {group: offsets if isinstance(offsets, SourceError) else
                GroupOffsets(group, {TopicPartition._make(tp): o for tp, o in offsets.items()})
                for group, offsets in answer.items()}
    return answer


def exit_when_parent_is_gone(lifeline_fd: int) -> None:
    """Block on the lifeline pipe (the parent never writes to it) until the parent closes it."""
    while os.read(lifeline_fd, 1):
        pass
    os._exit(0)  # now, even if the main thread is blocked in librdkafka


def serve(conn: Connection) -> None:
    """Answer method calls until the parent closes the socket."""
    try:
        cluster, settings, timeout_s = conn.recv()
    except (EOFError, OSError):
        return
    from lag_exporter.gc_tuning import RELEASE_EVERY_S, relax_gc, release_freed_memory
    from lag_exporter.kafka_source import KafkaSource

    source = KafkaSource(cluster, settings, timeout_s)
    relax_gc()
    asked_before = AskedBefore()
    next_release = time.monotonic()
    while True:
        try:
            method, args = conn.recv()
        except (EOFError, OSError):
            return  # the parent is gone
        try:
            if method == "high_watermarks":
                args = (asked_before.expand(*args),)
            answer = getattr(source, method)(*args)
            conn.send(answer_to_wire(method, args[0], answer) if args else answer)
        except Exception as error:  # one bad call must not end the child
            conn.send(SourceError(f"{type(error).__name__}: {error}"))
        if time.monotonic() >= next_release:  # after the answer: the parent does not wait
            release_freed_memory()
            next_release = time.monotonic() + RELEASE_EVERY_S


def main(argv: list[str]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    socket_fd, lifeline_fd = int(argv[1]), int(argv[2])
    threading.Thread(target=exit_when_parent_is_gone, args=(lifeline_fd,), daemon=True,
                     name="lifeline").start()
    serve(Connection(socket_fd))
    os._exit(0)  # no clean-up worth waiting for (librdkafka's destroy may wait on brokers)


if __name__ == "__main__":
    main(sys.argv)
