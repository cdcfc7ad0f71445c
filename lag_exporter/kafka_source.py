"""The only module that talks to Kafka (confluent-kafka's AdminClient, and a Consumer that only
reads record timestamps for the lag in seconds).

Every call is batched: one OffsetFetch per group (all groups in flight at once), one DescribeGroups
for all groups, and one ListOffsets per partition leader and chunk of 250 partitions. Failures are
returned per group / per partition as SourceError values, never raised, so that one bad group
cannot wipe out the others' samples.

Waits serve the client's error callbacks, so that a certain failure (refused credentials, a refused
connection) is reported at once instead of after the whole timeout.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from functools import partial
from typing import Any, TypeVar

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    ConsumerGroupTopicPartitions,
    IsolationLevel,
    KafkaError,
    KafkaException,
    TopicCollection,
)
from confluent_kafka import TopicPartition as KafkaTopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._listoffsets import OffsetSpec  # not re-exported for mypy
from confluent_kafka.cimpl import _AdminClientImpl

from lag_exporter.errors import SourceError
from lag_exporter.model import GroupOffsets, TopicPartition
from lag_exporter.tls_diagnosis import explain_tls_failure, is_certain_tls_failure

log = logging.getLogger(__name__)
T = TypeVar("T")

# librdkafka repeats every connection failure; the sampler reports state changes instead.
_librdkafka_log = logging.getLogger("lag_exporter.librdkafka")

GROUP_NOT_FOUND_STATES = {"DEAD"}
# librdkafka's ListOffsets cost grows faster than linearly with the partitions per call (at
# 10,000 partitions: one call ~0.6 s CPU, 1,000 per call ~0.12 s, 250 per call ~0.06 s).
LIST_OFFSETS_CHUNK = 250
PROBE_TIMEOUT_S = 1.0
# How often a wait serves the client's error callbacks, to notice a certain failure.
WAIT_SLICE_S = 0.05
# A topic whose partitions are unknown to the client's metadata cache (partitions added, leader
# moved) gets its metadata refreshed at most this often: a deleted topic that a group still has
# commits on must not cost a Metadata request per sample.
METADATA_REFRESH_S = 10.0
_LATEST = OffsetSpec.latest()._value  # type: ignore[no-untyped-call]  # the wire's -1

# After these, a long-lived AdminClient may stay broken although the cluster is back: seen here
# after a broker restart, ListOffsets kept failing with FENCED_LEADER_EPOCH (stale cached leader
# epochs) and OffsetFetch kept timing out, while a new client worked at once. So the client is
# replaced before the next sample.
STALE_CLIENT_ERRORS = {
    KafkaError._TIMED_OUT, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN,
    KafkaError._AUTHENTICATION, KafkaError.FENCED_LEADER_EPOCH, KafkaError.UNKNOWN_LEADER_EPOCH,
    KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_NOT_AVAILABLE,
}
# Routine during a reassignment or after partitions were added: the client's metadata cache is
# behind. Refreshing that topic's metadata is enough; a new client would start cold (coordinator
# cache, SASL handshakes).
STALE_METADATA_ERRORS = {
    KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError._UNKNOWN_PARTITION, KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC,
    KafkaError._NOENT,  # a whole ListOffsets request: "No leaders found"
}
# The group's coordinator is not serving it (yet). librdkafka 2.16 dereferences a NULL consumer
# group handle when an admin client's OffsetFetch is answered with NOT_COORDINATOR (SIGSEGV in
# rd_kafka_cgrp_op from rd_kafka_handle_OffsetFetch, librdkafka #5040): seen here in 1 of 2-3
# restarts of a single broker, whose coordinator answers NOT_COORDINATOR for ~0.1 s after its
# port opens. So after such errors, groups are described first (that path is safe) and only
# groups whose coordinator answers are asked for offsets.
COORDINATOR_ERRORS = {
    KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
}


def _ignore_client_error(error: KafkaError) -> None:
    pass


class _DebugOnlyLogger:
    """librdkafka log lines go to DEBUG: they are per-connection noise during an outage."""

    def log(self, level: int, msg: str, *args: Any) -> None:
        _librdkafka_log.debug(msg, *args)


def describe_kafka_error(error: BaseException) -> str:
    """One line for an operator: the librdkafka error text, without its internal prefixes."""
    if isinstance(error, KafkaException) and error.args and isinstance(error.args[0], KafkaError):
        kafka_error: KafkaError = error.args[0]
        return f"{kafka_error.str()} ({kafka_error.name()})"
    if isinstance(error, TimeoutError):
        return "timed out"
    return str(error) or type(error).__name__


def error_code(error: BaseException) -> int:
    """The librdkafka error code of an exception; a timeout is _TIMED_OUT."""
    if isinstance(error, KafkaException) and error.args and isinstance(error.args[0], KafkaError):
        code: int = error.args[0].code()
        return code
    return KafkaError._TIMED_OUT


def chunk_by_topic(partitions: Iterable[tuple[str, int]], size: int) -> list[list[tuple[str, int]]]:
    """ListOffsets requests of at most `size` partitions, a topic's partitions together: a failed
    request then blanks only the topics in it. Whole topics are packed in topic order; only a
    topic with more than `size` partitions is split, into chunks of its own."""
    by_topic: dict[str, list[tuple[str, int]]] = {}
    for tp in set(partitions):
        by_topic.setdefault(tp[0], []).append(tp)
    chunks: list[list[tuple[str, int]]] = []
    current: list[tuple[str, int]] = []
    for topic in sorted(by_topic):
        own = by_topic[topic]
        if len(current) + len(own) > size and current:
            chunks.append(current)
            current = []
        if len(own) > size:
            own.sort()
            chunks.extend(own[start:start + size] for start in range(0, len(own), size))
        else:
            current.extend(own)
    if current:
        chunks.append(current)
    return chunks


def _group_offsets(group: str, answer: Any) -> GroupOffsets:
    """Offsets < 0 mean "no commit" (kafka-consumer-groups shows `-`): left out."""
    return GroupOffsets(group, {TopicPartition(tp.topic, tp.partition): tp.offset
                                for tp in answer.topic_partitions
                                if tp.error is None and tp.offset >= 0})


_Chunk = tuple[list[tuple[str, int]], list[KafkaTopicPartition]]
"""Partitions asked in one ListOffsets call, and the call's request (offset: latest)."""


def end_offset_requests(partitions: Iterable[tuple[str, int]]) -> list[_Chunk]:
    return [(chunk, [KafkaTopicPartition(topic, partition, _LATEST) for topic, partition in chunk])
            for chunk in chunk_by_topic(partitions, LIST_OFFSETS_CHUNK)]


class KafkaSource:
    def __init__(self, cluster: str, client_settings: Mapping[str, str], timeout_s: float) -> None:
        self.cluster = cluster
        self.bootstrap = client_settings.get("bootstrap.servers", "?")
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._last_client_error: str | None = None
        self._certain_failure = False  # the client said why requests cannot succeed
        self._connection_refused = False
        self._tls_explained: tuple[str, str] = ("", "")  # (client error, its explanation)
        settings: dict[str, Any] = dict(client_settings)
        settings.setdefault("client.id", "lag-exporter")
        settings.setdefault("socket.timeout.ms", int(timeout_s * 1000))
        # librdkafka backs off up to 10 s between reconnects; a 1 s monitor must resume sooner.
        settings.setdefault("reconnect.backoff.max.ms", 1000)
        # The admin client is a producer to librdkafka, which would ask the broker to create a
        # topic whose metadata it refreshes (a deleted one, say).
        settings["allow.auto.create.topics"] = False
        settings["logger"] = _DebugOnlyLogger()
        settings["error_cb"] = self._remember_client_error
        self._settings = settings
        self._admin = AdminClient(settings)
        self._stale = False
        self._check_coordinators = True  # see COORDINATOR_ERRORS
        self._retired: list[tuple[float, AdminClient]] = []
        self._metadata_refreshed: dict[str, float] = {}
        self._requests_by_length: dict[int, tuple[list[tuple[str, int]], list[_Chunk]]] = {}
        self._record_reader: Consumer | None = None
        self._background: ThreadPoolExecutor | None = None
        self._background_read: Future[dict[TopicPartition, tuple[int, int, float] | SourceError]
                                      ] | None = None

    # -- the three requests a sample needs -------------------------------------------------

    def committed_offsets(self, groups: Iterable[str]) -> dict[str, GroupOffsets | SourceError]:
        """The committed offsets of each group: one OffsetFetch per group, all in flight at once."""
        group_list = list(groups)
        if self._stale:  # this is the first request of a sample: start it with a sound client
            self._replace_client()
            # While the cluster is failing, a brief cheap question first: a sample must not sit
            # out a whole timeout when the cluster came back meanwhile, or recovery would show
            # only after up to timeout_s (seen: 3-4 s late with 1 s ticks).
            probe = self._answer(
                self._admin.describe_cluster(request_timeout=min(PROBE_TIMEOUT_S, self.timeout_s)),
                lambda cluster: cluster)
            if isinstance(probe, SourceError):
                return {group: probe for group in group_list}
        self._admin.poll(0)  # serve queued client callbacks (errors, statistics) once per sample
        answers: dict[str, GroupOffsets | SourceError] = {}
        if self._check_coordinators:  # until one round without coordinator or client errors
            answers.update(self._coordinators_not_serving(group_list))
            self._check_coordinators = bool(answers)
        futures = {
            group: self._admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(group)], request_timeout=self.timeout_s
            )[group]
            for group in group_list if group not in answers
        }
        self._wait(futures.values())
        answers.update((group, self._answer(future, partial(_group_offsets, group)))
                       for group, future in futures.items())
        return {group: answers[group] for group in group_list}

    def group_members(
        self, groups: Iterable[str]
    ) -> dict[str, tuple[str, frozenset[TopicPartition]] | SourceError]:
        """(state, partitions assigned to active members) of each group, in one batch."""
        group_list = list(groups)
        if not group_list:
            return {}
        futures = self._admin.describe_consumer_groups(group_list, request_timeout=self.timeout_s)
        self._wait(futures.values())
        return {group: self._answer(future, lambda d: (d.state.name, frozenset(
                    TopicPartition(tp.topic, tp.partition)
                    for member in d.members if member.assignment is not None
                    for tp in member.assignment.topic_partitions)))
                for group, future in futures.items()}

    def topic_partitions(self, topics: Iterable[str]) -> dict[str, list[int] | SourceError]:
        """Partition numbers of each topic (for topics named explicitly)."""
        topic_list = sorted(set(topics))
        if not topic_list:
            return {}
        futures = self._admin.describe_topics(
            TopicCollection(topic_list), request_timeout=self.timeout_s
        )
        self._wait(futures.values())
        return {topic: self._answer(future, lambda d: sorted(p.id for p in d.partitions))
                for topic, future in futures.items()}

    def high_watermarks(
        self, partitions: Iterable[tuple[str, int]]
    ) -> dict[TopicPartition, int | SourceError]:
        """Log-end offsets (READ_UNCOMMITTED, as kafka-consumer-groups uses), batched: librdkafka
        sends one ListOffsets request per partition leader and chunk, all chunks in flight.
        Partitions the client's metadata is behind on (partitions added, leader moved) are asked
        again once, after a refresh of their topics' metadata."""
        # Serve queued client callbacks (errors, statistics) here too: following the commits,
        # committed_offsets is not called, and events left unserved pile up in librdkafka.
        self._admin.poll(0)
        high_watermarks, behind = self._list_end_offsets(self._end_offset_requests(partitions))
        now = time.monotonic()
        topics = {topic for topic, _ in behind
                  if self._metadata_refreshed.get(topic, float("-inf")) <= now - METADATA_REFRESH_S}
        if topics:
            self._refresh_metadata(topics, now)
            retried, _ = self._list_end_offsets(end_offset_requests(
                tp for tp in behind if tp.topic in topics))
            # A partition still failing keeps its first error, which says more ("Unknown
            # partition") than the retry's ("No leaders found").
            high_watermarks.update((tp, hw) for tp, hw in retried.items() if isinstance(hw, int))
        return high_watermarks

    def list_groups(self) -> list[str] | SourceError:
        """Every consumer group id of the cluster (discovery of groups given by regex)."""
        try:
            answer = self._result(self._admin.list_consumer_groups(request_timeout=self.timeout_s))
        except SourceError as error:
            return error
        if answer.errors:
            # Some broker did not answer (e.g. still loading after a restart): a partial list
            # would make groups look deleted.
            return SourceError(f"incomplete group list: {describe_kafka_error(answer.errors[0])}")
        return sorted(listing.group_id for listing in answer.valid)

    # -- plumbing --------------------------------------------------------------------------

    def _end_offset_requests(self, partitions: Iterable[tuple[str, int]]) -> list[_Chunk]:
        """The ListOffsets chunks of these partitions; the same partitions as an earlier call
        (every sample asks the same lists, as a rule) reuse its chunks: building them was a
        third of the Kafka client's CPU per sample at 10,000 partitions."""
        partitions = list(partitions)
        earlier = self._requests_by_length.get(len(partitions))
        if earlier is not None and earlier[0] == partitions:
            return earlier[1]
        if len(self._requests_by_length) >= 8:  # distinct lengths: lists that changed
            self._requests_by_length.clear()
        requests = end_offset_requests(partitions)
        self._requests_by_length[len(partitions)] = (partitions, requests)
        return requests

    def _list_end_offsets(
        self, chunks: list[_Chunk]
    ) -> tuple[dict[TopicPartition, int | SourceError], list[TopicPartition]]:
        """(end offset or error of each partition, partitions that failed with an error of
        STALE_METADATA_ERRORS)."""
        answers = [(chunk, self._request_end_offsets(request)) for chunk, request in chunks]
        self._wait(future for _, future in answers)
        high_watermarks: dict[TopicPartition, int | SourceError] = {}
        behind: list[TopicPartition] = []
        for chunk, future in answers:
            try:
                end_offsets = self._result(future)
            except SourceError as error:
                high_watermarks.update((TopicPartition._make(tp), error) for tp in chunk)
                if self._failed_code(future) in STALE_METADATA_ERRORS:  # none had a leader
                    behind.extend(TopicPartition._make(tp) for tp in chunk)
                continue
            for kafka_tp, info in end_offsets.items():
                tp = TopicPartition(kafka_tp.topic, kafka_tp.partition)
                if isinstance(info, KafkaError):
                    high_watermarks[tp] = self._source_error(KafkaException(info))
                    if info.code() in STALE_METADATA_ERRORS:
                        behind.append(tp)
                else:
                    high_watermarks[tp] = int(info.offset)
        return high_watermarks, behind

    def _request_end_offsets(self, request: list[KafkaTopicPartition]) -> Future[Any]:
        """AdminClient.list_offsets minus its one Python future per partition, which cost more
        than the request itself at 10,000 partitions (~0.1 s CPU per sample). The future's result
        maps each partition to its ListOffsetsResultInfo or KafkaError, as in the public method,
        which is a thin wrapper around this C call (confluent-kafka is pinned to 2.16.x); the
        call copies the request into librdkafka's own list, so a request can be sent again."""
        answer: Future[Any] = Future()
        _AdminClientImpl.list_offsets(
            self._admin, request, answer, request_timeout=self.timeout_s,
            isolation_level_value=IsolationLevel.READ_UNCOMMITTED.value)
        return answer

    def _refresh_metadata(self, topics: set[str], now: float) -> None:
        """A Metadata request updates librdkafka's cache, which ListOffsets takes leaders and
        partition counts from (left alone, it is refreshed every metadata.max.age.ms, 15 min)."""
        self._metadata_refreshed = {topic: at for topic, at in self._metadata_refreshed.items()
                                    if at > now - METADATA_REFRESH_S}  # no growth with topics
        for topic in topics:
            self._metadata_refreshed[topic] = now
        log.debug("cluster %s: refreshing the metadata of %s", self.cluster, sorted(topics))
        timeout = min(PROBE_TIMEOUT_S, self.timeout_s)
        try:
            if len(topics) == 1:
                self._admin.list_topics(topic=next(iter(topics)), timeout=timeout)
            else:  # one request for all topics rather than one per topic
                self._admin.list_topics(timeout=timeout)
        except KafkaException as error:
            log.debug("cluster %s: metadata refresh failed: %s", self.cluster,
                      describe_kafka_error(error))

    def _coordinators_not_serving(self, groups: list[str]) -> dict[str, SourceError]:
        """The groups whose coordinator does not answer a DescribeGroups now, with the error;
        their offsets are not asked for (see COORDINATOR_ERRORS)."""
        if not groups:
            return {}
        futures = self._admin.describe_consumer_groups(
            groups, request_timeout=min(PROBE_TIMEOUT_S, self.timeout_s))
        self._wait(futures.values())
        not_serving: dict[str, SourceError] = {}
        for group, future in futures.items():
            answer = self._answer(future, lambda description: description)
            if isinstance(answer, SourceError) and (
                    self._failed_code(future) in COORDINATOR_ERRORS | STALE_CLIENT_ERRORS):
                not_serving[group] = answer
        return not_serving

    @staticmethod
    def _failed_code(future: Future[Any]) -> int | None:
        if not future.done():
            return KafkaError._TIMED_OUT
        exception = future.exception()
        return None if exception is None else error_code(exception)

    def _replace_client(self) -> None:
        """A new client; the old one is kept until its requests have timed out, so librdkafka
        never destroys a client with requests in flight."""
        log.debug("cluster %s: replacing the Kafka client after errors", self.cluster)
        now = time.monotonic()
        self._retired = [(until, admin) for until, admin in self._retired if until > now]
        self._retired.append((now + self.timeout_s + 1, self._admin))
        with self._lock:  # what the old client said is no longer news
            self._last_client_error = None
            self._certain_failure = self._connection_refused = False
        self._admin = AdminClient(self._settings)
        self._stale = False
        self._check_coordinators = True

    def _wait(self, futures: Iterable[Future[Any]]) -> None:
        """Wait until the futures are done, at most timeout_s + 1, serving the client's error
        callbacks meanwhile; stop as soon as the client reports a failure that is certain."""
        deadline = time.monotonic() + self.timeout_s + 1
        for future in futures:  # one at a time: a done future costs one check (500 groups)
            while not future.done():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                wait([future], timeout=min(WAIT_SLICE_S, remaining))
                if future.done():
                    break
                self._admin.poll(0)
                with self._lock:
                    if self._certain_failure:
                        return

    def _answer(self, future: Future[Any], convert: Callable[[Any], T]) -> T | SourceError:
        """convert(the future's result), or the error as a value: one failure per key."""
        try:
            return convert(self._result(future))
        except SourceError as error:
            return error

    def _result(self, future: Future[Any]) -> Any:
        if not future.done():
            self._wait([future])
        try:
            answer = future.result(timeout=0)
        except (KafkaException, TimeoutError) as error:
            raise self._source_error(error) from error
        with self._lock:  # a request succeeded: the errors remembered are over
            self._last_client_error = None
            self._certain_failure = self._connection_refused = False
        return answer

    def _source_error(self, error: KafkaException | TimeoutError) -> SourceError:
        """The operator's explanation; marks the client stale after errors that leave it so."""
        code = error_code(error)
        self._stale = self._stale or code in STALE_CLIENT_ERRORS
        if code in STALE_CLIENT_ERRORS | COORDINATOR_ERRORS:
            self._check_coordinators = True
        return SourceError(self._explain(error))

    def _explain(self, error: BaseException) -> str:
        reason = describe_kafka_error(error)
        self._admin.poll(0)  # serve queued error callbacks: they say *why* a request timed out
        with self._lock:
            last = self._last_client_error
        if last and "_AUTHENTICATION" in last:
            reason = f"Kafka at {self.bootstrap} refused the credentials: {last}"
        elif last and is_certain_tls_failure(last):
            reason = self._explain_tls(last)
        elif "_TIMED_OUT" in reason or isinstance(error, TimeoutError):
            reason = f"no answer from Kafka at {self.bootstrap} within {self.timeout_s:g} s"
            if last:
                reason += f": {last}"
        return reason

    def _explain_tls(self, client_error: str) -> str:
        """Which certificate was refused and why (tls_diagnosis.py), once per distinct error:
        it costs a TLS handshake of our own."""
        if self._tls_explained[0] != client_error:
            why = explain_tls_failure(self.bootstrap, self._settings, client_error)
            self._tls_explained = (client_error, why or f"Kafka at {self.bootstrap}: TLS "
                                                        f"failed: {client_error}")
        return self._tls_explained[1]

    def _remember_client_error(self, error: KafkaError) -> None:
        """error_cb, run by poll() in the thread waiting. Certain failures: refused credentials;
        all brokers down after a connection was refused or a name did not resolve."""
        code = error.code()
        with self._lock:
            if code == KafkaError._AUTHENTICATION or is_certain_tls_failure(error.str()):
                self._certain_failure = True
            elif code == KafkaError._RESOLVE or (
                    code == KafkaError._TRANSPORT and "Connection refused" in error.str()):
                self._connection_refused = True
            elif code == KafkaError._ALL_BROKERS_DOWN and self._connection_refused:
                self._certain_failure = True
            if code == KafkaError._ALL_BROKERS_DOWN and self._last_client_error:
                return  # "n/n brokers are down" says less than the connection error before it
            self._last_client_error = f"{error.str()} ({error.name()})"

    def last_client_error(self) -> str | None:
        with self._lock:
            return self._last_client_error

    def clear_client_error(self) -> None:
        with self._lock:
            self._last_client_error = None

    # -- record timestamps (lag in seconds beyond the exporter's own history) ----------------

    def record_times(
        self, requests: Mapping[TopicPartition, int] | Iterable[tuple[str, int, int]]
    ) -> dict[TopicPartition, tuple[int, int, float] | SourceError]:
        """partition -> offset: (offset asked, offset of the first record at or after it, its
        CreateTime in seconds). One assignment of every partition, the first record of each. A
        compacted or deleted offset gives the next record (auto.offset.reset=earliest); a
        transaction marker is skipped to the next record; READ_UNCOMMITTED like the end offsets.

        Each read has a record reader of its own, closed after it: every partition is assigned
        before its connections are up, so the first Fetch to each leader carries them all (one
        Fetch for 100 partitions, a few for 10,000). A reader kept connected fetched for the
        first partitions started while the rest were still being added (2-3 Fetches per leader
        for 100), and one closing its connections when idle reconnected twice a second for its
        group coordinator lookups (BENCHMARKS.md, eighth session)."""
        wanted = (dict(requests) if isinstance(requests, Mapping)
                  else {TopicPartition(t, p): o for t, p, o in requests})
        if not wanted:
            return {}
        reader = self._new_record_reader()
        found: dict[TopicPartition, tuple[int, int, float] | SourceError] = {}
        assignment = [KafkaTopicPartition(tp.topic, tp.partition, offset)
                      for tp, offset in wanted.items()]
        reader.assign(assignment)
        deadline = time.monotonic() + self.timeout_s
        try:
            while len(found) < len(wanted) and (left := deadline - time.monotonic()) > 0:
                for message in reader.consume(num_messages=len(wanted), timeout=min(left, 0.2)):
                    topic, partition, offset = (message.topic(), message.partition(),
                                                message.offset())
                    if message.error() is not None or topic is None or partition is None \
                            or offset is None:
                        continue
                    tp = TopicPartition(topic, partition)
                    if tp in found or tp not in wanted:
                        continue
                    kind, milliseconds = message.timestamp()
                    found[tp] = (SourceError("the record has no timestamp")
                                 if kind == TIMESTAMP_NOT_AVAILABLE
                                 else (wanted[tp], offset, milliseconds / 1000))
                    reader.pause([KafkaTopicPartition(tp.topic, tp.partition)])
        except KafkaException as error:
            failure = self._source_error(error)
            return {tp: found.get(tp, failure) for tp in wanted}
        finally:
            self._close_record_reader()
        missing = SourceError(f"no record read within {self.timeout_s:g} s")
        return {tp: found.get(tp, missing) for tp in wanted}

    def _close_record_reader(self) -> None:
        if self._record_reader is not None:
            self._record_reader.close()
            self._record_reader = None

    def start_record_times(self, requests: Iterable[tuple[str, int, int]]) -> bool:
        """Start reading (topic, partition, offset) record times in a thread of this process, as
        record_times does; False (nothing started) while the last read is still running."""
        if self._background_read is not None and not self._background_read.done():
            return False
        if self._background is None:
            self._background = ThreadPoolExecutor(1, thread_name_prefix="record-times")
        self._background_read = self._background.submit(self.record_times, list(requests))
        return True

    def collect_record_times(self) -> dict[TopicPartition, tuple[int, int, float] | SourceError
                                           ] | None:
        """The answers of the read started last, once, when it has finished; None before."""
        read = self._background_read
        if read is None or not read.done():
            return None
        self._background_read = None
        return read.result()

    def _new_record_reader(self) -> Consumer:
        # Statistics would be built (for every partition it has seen) and queued at each
        # interval, and this consumer is polled only when record times are read: the queue and
        # the CPU spent on it would grow for nothing.
        settings = {key: value for key, value in self._settings.items()
                    if key not in ("allow.auto.create.topics", "statistics.interval.ms",
                                   "stats_cb")}
        settings.update({
            "group.id": "lag-exporter-record-times",  # required; never joined or committed
            "enable.auto.commit": False, "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest", "isolation.level": "read_uncommitted",
            "enable.partition.eof": False, "fetch.wait.max.ms": 100,
            "max.partition.fetch.bytes": 65536, "queued.max.messages.kbytes": 1024,
            "queued.min.messages": 1,  # the one record wanted per partition, no prefetch
        })
        # A read that fails says so in its answers; its reader's connection errors are not the
        # admin client's.
        settings["error_cb"] = _ignore_client_error
        self._record_reader = Consumer(settings)
        return self._record_reader

    def close(self) -> None:
        """AdminClient has no close(); dropping the references lets librdkafka shut down."""
        self._retired.clear()
        if self._background is not None:
            self._background.shutdown(wait=True)  # a read ends within timeout_s
        self._close_record_reader()
        del self._admin
