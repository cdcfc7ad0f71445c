"""Runs the Kafka client in a child process, so that a librdkafka abort costs one sample.

librdkafka 2.16 can abort() the whole process on the error path of coordinator admin requests
(ListConsumerGroupOffsets, DescribeConsumerGroups) when a broker connection drops mid-request:
`rd_kafka_enq_once_del_source_return: Assertion 'eonce->refcnt > 0' failed` (librdkafka
#4605, #3663; fix proposed in #5397). We saw it here by stopping the source broker under a 1 s
watch. Python cannot catch an abort, so KafkaSource runs in a child process: when the child dies
the affected sample reports the cluster as failing and the next one starts a fresh child.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import signal
import weakref
from collections.abc import Mapping, Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from lag_exporter.errors import SourceError
from lag_exporter.gc_tuning import relax_gc
from lag_exporter.model import GroupOffsets, TopicPartition

log = logging.getLogger(__name__)

_SPAWN = multiprocessing.get_context("spawn")  # no fork: the parent runs threads


# Over the pipe, partitions travel as plain tuples: (un)pickling a NamedTuple runs Python code
# per item, and there are ~25,000 per sample at scale. High watermarks come back as a list of
# values in the order asked for, so the parent reuses its own TopicPartition keys.
def _request_to_wire(method: str, keys: list[Any]) -> list[Any]:
    if method == "high_watermarks":
        return [tuple(tp) for tp in keys]
    if method == "record_times":  # keys: (partition, offset) pairs
        return [(tp.topic, tp.partition, offset) for tp, offset in keys]
    return keys


def _to_wire(method: str, keys: list[Any], answer: Any) -> Any:
    if method == "high_watermarks":
        missing = SourceError("Kafka's answer left this partition out")
        return [answer.get(tp, missing) for tp in keys]
    if method == "record_times":
        missing = SourceError("Kafka's answer left this partition out")
        return [answer.get(TopicPartition(topic, partition), missing)
                for topic, partition, _ in keys]
    if method == "committed_offsets":
        return {group: offsets if isinstance(offsets, SourceError) else
                {tuple(tp): offset for tp, offset in offsets.committed_offsets.items()}
                for group, offsets in answer.items()}
    return answer


def _from_wire(method: str, keys: list[Any], answer: Any) -> Any:
    if method in ("high_watermarks", "record_times"):
        return dict(zip(keys, answer, strict=True))
    if method == "committed_offsets":
        return {group: offsets if isinstance(offsets, SourceError) else
                GroupOffsets(group, {TopicPartition._make(tp): o for tp, o in offsets.items()})
                for group, offsets in answer.items()}
    return answer


def _serve(conn: Connection, cluster: str, settings: dict[str, str], timeout_s: float) -> None:
    """The child: answer method calls until the parent closes the pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from lag_exporter.kafka_source import KafkaSource

    source = KafkaSource(cluster, settings, timeout_s)
    relax_gc()
    while True:
        try:
            method, args = conn.recv()
        except (EOFError, OSError):
            return  # the parent is gone
        try:
            answer = getattr(source, method)(*args)
            conn.send(_to_wire(method, args[0], answer) if args else answer)
        except Exception as error:  # one bad call must not end the child
            conn.send(SourceError(f"{type(error).__name__}: {error}"))


_OPEN_SOURCES: weakref.WeakSet[IsolatedKafkaSource] = weakref.WeakSet()


@atexit.register  # after multiprocessing's own exit handler is registered, so it runs first
def _close_open_sources() -> None:
    """The child ignores SIGTERM, so multiprocessing's exit handler, which terminates daemon
    children and then joins them, would wait forever for a child whose source was not closed
    (seen: a log line failing with BrokenPipeError during shutdown skipped the fleet's close and
    the process never exited). Kill them here."""
    for source in list(_OPEN_SOURCES):
        source.close()


class IsolatedKafkaSource:
    """Same interface as KafkaSource; every call goes to the child process."""

    def __init__(self, cluster: str, client_settings: Mapping[str, str], timeout_s: float) -> None:
        self.cluster = cluster
        self.timeout_s = timeout_s
        self._settings = dict(client_settings)
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None
        self._closed = False
        self.restarts = 0
        _OPEN_SOURCES.add(self)
        self._child()  # now, not at the first call: a client replaced by a reload is warm by then

    def committed_offsets(self, groups: Sequence[str]) -> dict[str, GroupOffsets | SourceError]:
        return self._per_key("committed_offsets", list(groups))

    def group_members(
        self, groups: Sequence[str]
    ) -> dict[str, tuple[str, frozenset[TopicPartition]] | SourceError]:
        return self._per_key("group_members", list(groups))

    def topic_partitions(self, topics: Sequence[str]) -> dict[str, list[int] | SourceError]:
        return self._per_key("topic_partitions", list(topics))

    def high_watermarks(
        self, partitions: Sequence[TopicPartition]
    ) -> dict[TopicPartition, int | SourceError]:
        return self._per_key("high_watermarks", list(partitions))

    def record_times(
        self, requests: Mapping[TopicPartition, int]
    ) -> dict[TopicPartition, tuple[int, int, float] | SourceError]:
        pairs = list(requests.items())
        answers = self._per_key("record_times", pairs)
        return {tp: answers[(tp, offset)] for tp, offset in pairs}

    def list_groups(self) -> list[str] | SourceError:
        try:
            answer: list[str] | SourceError = self._call("list_groups")
        except SourceError as error:
            return error
        return answer

    def close(self) -> None:
        """Stop the child now, even mid-request (it holds no state worth a clean exit)."""
        self._closed = True
        self._stop_child()

    def _stop_child(self) -> None:
        if self._process is not None:
            if self._process.is_alive():
                self._process.kill()  # a caller blocked on the pipe sees EOF at once
            self._process.join(timeout=2)
        if self._conn is not None:
            self._conn.close()
        self._process = self._conn = None

    # -- plumbing --------------------------------------------------------------------------

    def _per_key(self, method: str, keys: list[Any]) -> dict[Any, Any]:
        """Call method(keys) in the child; if the child fails, every key gets the error."""
        if not keys:
            return {}
        try:
            answer = self._call(method, _request_to_wire(method, keys))
        except SourceError as error:
            return {key: error for key in keys}
        if isinstance(answer, SourceError):
            return {key: answer for key in keys}
        result: dict[Any, Any] = _from_wire(method, keys, answer)
        return result

    def _call(self, method: str, *args: Any) -> Any:
        conn = self._child()
        try:
            conn.send((method, args))
            # Each child call is bounded by timeout_s; allow for scheduling on a busy machine.
            if not conn.poll(self.timeout_s * 2 + 5):
                self._restart("did not answer in time")
                raise SourceError(f"Kafka client of cluster {self.cluster} hung; restarted it")
            return conn.recv()
        except (EOFError, OSError) as error:
            if self._closed:
                raise SourceError(f"Kafka client of cluster {self.cluster} is closed") from error
            if self._process is not None:
                self._process.join(timeout=1)  # reap it, to say how it ended
            exit_code = self._process.exitcode if self._process is not None else None
            self._restart(f"died (exit code {exit_code})")
            raise SourceError(f"Kafka client of cluster {self.cluster} crashed "
                              f"(exit code {exit_code}); restarted it") from error

    def _child(self) -> Connection:
        if self._closed:
            raise SourceError(f"Kafka client of cluster {self.cluster} is closed")
        if self._process is not None and not self._process.is_alive():
            self._restart(f"died (exit code {self._process.exitcode})")
        if self._conn is None or self._process is None:
            parent_end, child_end = _SPAWN.Pipe()
            process = _SPAWN.Process(target=_serve, name=f"kafka-{self.cluster}", daemon=True,
                                     args=(child_end, self.cluster, self._settings,
                                           self.timeout_s))
            process.start()
            child_end.close()
            self._process, self._conn = process, parent_end
        return self._conn

    def _restart(self, why: str) -> None:
        log.warning("Kafka client process of cluster %s %s; starting a new one", self.cluster, why)
        self.restarts += 1
        self._stop_child()
        self._child()  # now: the next sample must not wait for Python and librdkafka to start
