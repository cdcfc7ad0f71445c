"""Runs the Kafka client in a child process, so that a librdkafka abort costs one sample.

librdkafka 2.16 can abort() the whole process on the error path of coordinator admin requests
(ListConsumerGroupOffsets, DescribeConsumerGroups) when a broker connection drops mid-request:
`rd_kafka_enq_once_del_source_return: Assertion 'eonce->refcnt > 0' failed` (librdkafka
#4605, #3663; fix proposed in #5397). We saw it here by stopping the source broker under a 1 s
watch. Python cannot catch an abort, so KafkaSource runs in a child process: when the child dies
the affected sample reports the cluster as failing and the next one starts a fresh child.
The child is a plain `python -m lag_exporter.kafka_child` (see there what it imports, how it gets
its settings and why it dies with this process).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import site
import socket
import subprocess
import sys
import weakref
from collections.abc import Mapping, Sequence
from multiprocessing.connection import Connection
from typing import Any

import lag_exporter
from lag_exporter.errors import SourceError
from lag_exporter.kafka_child import AskedBefore, answer_from_wire, request_to_wire
from lag_exporter.model import GroupOffsets, TopicPartition

log = logging.getLogger(__name__)


def _child_environment() -> dict[str, str]:
    """The parent's environment, plus the directory lag_exporter comes from when that is not a
    site directory (a source tree or PYTHONPATH), so that the child runs the same code."""
    environment = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(lag_exporter.__file__)))
    site_directories = [*site.getsitepackages(), site.getusersitepackages()]
    if root not in site_directories:
        environment["PYTHONPATH"] = os.pathsep.join(
            [root, *filter(None, [environment.get("PYTHONPATH")])])
    return environment


class ChildProcess:
    """One Kafka client process (kafka_child.py): a plain interpreter started with the socket it
    answers on and a lifeline pipe. Not multiprocessing: its spawn re-imports the parent's main
    script (the whole CLI under the installed `lag-exporter` script) and starts a third
    interpreter, its resource tracker (13 MB)."""

    def __init__(self, cluster: str, settings: dict[str, str], timeout_s: float) -> None:
        parent_end, child_end = socket.socketpair()
        lifeline_read, self._lifeline = os.pipe()  # the child exits when this end closes
        try:
            child_fds = (child_end.fileno(), lifeline_read)
            self._popen = subprocess.Popen(
                [sys.executable, "-m", "lag_exporter.kafka_child", *map(str, child_fds)],
                pass_fds=child_fds, stdin=subprocess.DEVNULL, env=_child_environment())
            self.conn = Connection(parent_end.detach())
            # Secrets travel on the socket, never on argv or in the environment. Sent while this
            # process still holds the child's end, so this never fails even if the child died.
            self.conn.send((cluster, settings, timeout_s))
        except BaseException:
            parent_end.close()
            os.close(self._lifeline)
            raise
        finally:
            child_end.close()
            os.close(lifeline_read)
        self.pid = self._popen.pid
        self._closed = False
        self.asked_before = AskedBefore()

    @property
    def exitcode(self) -> int | None:
        """None while running; negative: the signal that ended it (as multiprocessing says)."""
        return self._popen.poll()

    def is_alive(self) -> bool:
        return self._popen.poll() is None

    def join(self, timeout: float) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._popen.wait(timeout)

    def kill(self) -> None:
        if self.is_alive():
            self._popen.kill()  # a caller blocked on the socket sees EOF at once

    def close(self) -> None:
        """Kill the child (it holds no state worth a clean exit), reap it, close our ends."""
        if self._closed:  # twice would close a file descriptor number reused since
            return
        self._closed = True
        self.kill()
        self.join(timeout=2)
        self.conn.close()
        os.close(self._lifeline)


_OPEN_SOURCES: weakref.WeakSet[IsolatedKafkaSource] = weakref.WeakSet()


@atexit.register
def _close_open_sources() -> None:
    """Kill the children at exit, even mid-request (the lifeline would end them too, but only
    once this process is gone; seen: a log line failing with BrokenPipeError during shutdown
    skipped the fleet's close)."""
    for source in list(_OPEN_SOURCES):
        source.close()


class IsolatedKafkaSource:
    """Same interface as KafkaSource; every call goes to the child process."""

    def __init__(self, cluster: str, client_settings: Mapping[str, str], timeout_s: float) -> None:
        self.cluster = cluster
        self.timeout_s = timeout_s
        self._settings = dict(client_settings)
        self._process: ChildProcess | None = None
        self._reading = False  # the child reads record times for an earlier call
        self._read_before = False
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
        """Read in the background by the child (KafkaSource.start_record_times): a sample does
        not wait for a read (each connects a consumer of its own, for one Fetch per leader; one
        of 10,000 partitions takes ~2 s). So the answers returned are those of a read that an
        earlier call started and that has finished since, each once; requests made while a read
        is running are dropped (the estimates ask again at their next turn). But the first read
        is waited for: at start-up every consumer behind is beyond the history, and the warm-up
        sample's read gives the first documents their seconds."""
        answers = self._collect_record_times() if self._reading else {}
        if requests and not self._reading:
            method = "start_record_times" if self._read_before else "record_times"
            self._read_before = True
            try:
                answer = self._call(method, request_to_wire(method, list(requests.items())))
                if method == "record_times":  # the first read, waited for
                    found: dict[TopicPartition, tuple[int, int, float] | SourceError] = answer
                    return {} if isinstance(found, SourceError) else found
                self._reading = answer is True
            except SourceError:
                pass
        return answers

    def _collect_record_times(self) -> dict[TopicPartition, tuple[int, int, float] | SourceError]:
        try:
            answer = self._call("collect_record_times")
        except SourceError:  # the child died, and the read with it
            answer = None
            self._reading = False
        if answer is None:
            return {}
        self._reading = False
        if isinstance(answer, SourceError):
            return {}
        found: dict[TopicPartition, tuple[int, int, float] | SourceError] = answer
        return found

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
            self._process.close()
        self._process = None

    # -- plumbing --------------------------------------------------------------------------

    def _per_key(self, method: str, keys: list[Any]) -> dict[Any, Any]:
        """Call method(keys) in the child; if the child fails, every key gets the error."""
        if not keys:
            return {}
        try:
            answer = self._call(method, keys if method == "high_watermarks"
                                else request_to_wire(method, keys))
        except SourceError as error:
            return {key: error for key in keys}
        if isinstance(answer, SourceError):
            return {key: answer for key in keys}
        result: dict[Any, Any] = answer_from_wire(method, keys, answer)
        return result

    def _call(self, method: str, *args: Any) -> Any:
        conn = self._child()
        if method == "high_watermarks":
            assert self._process is not None
            length, whole = self._process.asked_before.shorten(args[0])
            args = (length, None if whole is None else request_to_wire(method, whole))
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
        if self._process is None:
            self._process = ChildProcess(self.cluster, self._settings, self.timeout_s)
        return self._process.conn

    def _restart(self, why: str) -> None:
        log.warning("Kafka client process of cluster %s %s; starting a new one", self.cluster, why)
        self.restarts += 1
        self._reading = False  # gone with the child
        self._stop_child()
        self._child()  # now: the next sample must not wait for Python and librdkafka to start
