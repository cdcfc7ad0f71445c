"""The only module that talks to Kafka (confluent-kafka's AdminClient).

Every call is batched: one OffsetFetch per group (all groups in flight at once), one DescribeGroups
for all groups, and one ListOffsets per partition leader and chunk of 250 partitions. Failures are
returned per group / per partition as SourceError values, never raised, so that one bad group
cannot wipe out the others' samples.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from functools import partial
from typing import Any, TypeVar

from confluent_kafka import (
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

log = logging.getLogger(__name__)
T = TypeVar("T")

# librdkafka repeats every connection failure; the sampler reports state changes instead.
_librdkafka_log = logging.getLogger("lag_exporter.librdkafka")

GROUP_NOT_FOUND_STATES = {"DEAD"}
# librdkafka's ListOffsets cost grows faster than linearly with the partitions per call (at
# 10,000 partitions: one call ~0.6 s CPU, 1,000 per call ~0.12 s, 250 per call ~0.06 s).
LIST_OFFSETS_CHUNK = 250
PROBE_TIMEOUT_S = 1.0
_LATEST = OffsetSpec.latest()._value  # type: ignore[no-untyped-call]  # the wire's -1

# After these, a long-lived AdminClient may stay broken although the cluster is back: seen here
# after a broker restart, ListOffsets kept failing with FENCED_LEADER_EPOCH (stale cached leader
# epochs) and OffsetFetch kept timing out, while a new client worked at once. So the client is
# replaced before the next sample.
STALE_CLIENT_ERRORS = {
    KafkaError._TIMED_OUT, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN,
    KafkaError.FENCED_LEADER_EPOCH, KafkaError.UNKNOWN_LEADER_EPOCH,
    KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError.LEADER_NOT_AVAILABLE,
}


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


def _group_offsets(group: str, answer: Any) -> GroupOffsets:
    """Offsets < 0 mean "no commit" (kafka-consumer-groups shows `-`): left out."""
    return GroupOffsets(group, {TopicPartition(tp.topic, tp.partition): tp.offset
                                for tp in answer.topic_partitions
                                if tp.error is None and tp.offset >= 0})


class KafkaSource:
    def __init__(self, cluster: str, client_settings: Mapping[str, str], timeout_s: float) -> None:
        self.cluster = cluster
        self.bootstrap = client_settings.get("bootstrap.servers", "?")
        self.timeout_s = timeout_s
        self._last_client_error: str | None = None
        self._lock = threading.Lock()
        settings: dict[str, Any] = dict(client_settings)
        settings.setdefault("client.id", "lag-exporter")
        settings.setdefault("socket.timeout.ms", int(timeout_s * 1000))
        # librdkafka backs off up to 10 s between reconnects; a 1 s monitor must resume sooner.
        settings.setdefault("reconnect.backoff.max.ms", 1000)
        settings["logger"] = _DebugOnlyLogger()
        settings["error_cb"] = self._remember_client_error
        self._settings = settings
        self._admin = AdminClient(settings)
        self._stale = False

    # -- the three requests a sample needs -------------------------------------------------

    def committed_offsets(self, groups: Iterable[str]) -> dict[str, GroupOffsets | SourceError]:
        """The committed offsets of each group: one OffsetFetch per group, all in flight at once."""
        if self._stale:  # this is the first request of a sample: start it with a sound client
            log.debug("cluster %s: replacing the Kafka client after errors", self.cluster)
            self._admin = AdminClient(self._settings)
            self._stale = False
            # While the cluster is failing, a brief cheap question first: a sample must not sit
            # out a whole timeout when the cluster came back meanwhile, or recovery would show
            # only after up to timeout_s (seen: 3-4 s late with 1 s ticks).
            probe = self._answer(
                self._admin.describe_cluster(request_timeout=min(PROBE_TIMEOUT_S, self.timeout_s)),
                lambda cluster: cluster)
            if isinstance(probe, SourceError):
                return {group: probe for group in groups}
        self._admin.poll(0)  # serve queued client callbacks (errors, statistics) once per sample
        futures = {
            group: self._admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(group)], request_timeout=self.timeout_s
            )[group]
            for group in groups
        }
        return {group: self._answer(future, partial(_group_offsets, group))
                for group, future in futures.items()}

    def group_members(
        self, groups: Iterable[str]
    ) -> dict[str, tuple[str, frozenset[TopicPartition]] | SourceError]:
        """(state, partitions assigned to active members) of each group, in one batch."""
        group_list = list(groups)
        if not group_list:
            return {}
        futures = self._admin.describe_consumer_groups(group_list, request_timeout=self.timeout_s)
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
        return {topic: self._answer(future, lambda d: sorted(p.id for p in d.partitions))
                for topic, future in futures.items()}

    def high_watermarks(
        self, partitions: Iterable[tuple[str, int]]
    ) -> dict[TopicPartition, int | SourceError]:
        """Log-end offsets (READ_UNCOMMITTED, as kafka-consumer-groups uses), batched: librdkafka
        sends one ListOffsets request per partition leader and chunk, all chunks in flight."""
        unique = list(set(partitions))
        chunks = [unique[start:start + LIST_OFFSETS_CHUNK]
                  for start in range(0, len(unique), LIST_OFFSETS_CHUNK)]
        answers = [(chunk, self._list_end_offsets(chunk)) for chunk in chunks]
        high_watermarks: dict[TopicPartition, int | SourceError] = {}
        for chunk, future in answers:
            try:
                end_offsets = self._result(future)
            except SourceError as error:
                high_watermarks.update((TopicPartition._make(tp), error) for tp in chunk)
                continue
            for kafka_tp, info in end_offsets.items():
                high_watermarks[TopicPartition(kafka_tp.topic, kafka_tp.partition)] = (
                    self._source_error(KafkaException(info)) if isinstance(info, KafkaError)
                    else int(info.offset))
        return high_watermarks

    def _list_end_offsets(self, partitions: list[tuple[str, int]]) -> Future[Any]:
        """AdminClient.list_offsets minus its one Python future per partition, which cost more
        than the request itself at 10,000 partitions (~0.1 s CPU per sample). The future's result
        maps each partition to its ListOffsetsResultInfo or KafkaError, as in the public method,
        which is a thin wrapper around this C call (confluent-kafka is pinned to 2.16.x)."""
        request = [KafkaTopicPartition(topic, partition, _LATEST)
                   for topic, partition in partitions]
        answer: Future[Any] = Future()
        _AdminClientImpl.list_offsets(
            self._admin, request, answer, request_timeout=self.timeout_s,
            isolation_level_value=IsolationLevel.READ_UNCOMMITTED.value)
        return answer

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

    def _answer(self, future: Future[Any], convert: Callable[[Any], T]) -> T | SourceError:
        """convert(the future's result), or the error as a value: one failure per key."""
        try:
            return convert(self._result(future))
        except SourceError as error:
            return error

    def _result(self, future: Future[Any]) -> Any:
        try:
            return future.result(timeout=self.timeout_s + 1)
        except (KafkaException, TimeoutError) as error:
            raise self._source_error(error) from error

    def _source_error(self, error: KafkaException | TimeoutError) -> SourceError:
        """The operator's explanation; marks the client stale after errors that leave it so."""
        code = error.args[0].code() if isinstance(error, KafkaException) and error.args \
            and isinstance(error.args[0], KafkaError) else KafkaError._TIMED_OUT
        self._stale = self._stale or code in STALE_CLIENT_ERRORS
        return SourceError(self._explain(error))

    def _explain(self, error: BaseException) -> str:
        reason = describe_kafka_error(error)
        self._admin.poll(0)  # serve queued error callbacks: they say *why* a request timed out
        with self._lock:
            last = self._last_client_error
        if last and "_AUTHENTICATION" in last:
            reason = f"Kafka at {self.bootstrap} refused the credentials: {last}"
        elif "_TIMED_OUT" in reason or isinstance(error, TimeoutError):
            reason = f"no answer from Kafka at {self.bootstrap} within {self.timeout_s:g} s"
            if last:
                reason += f": {last}"
        return reason

    def _remember_client_error(self, error: KafkaError) -> None:
        with self._lock:
            if error.code() == KafkaError._ALL_BROKERS_DOWN and self._last_client_error:
                return  # "n/n brokers are down" says less than the connection error before it
            self._last_client_error = f"{error.str()} ({error.name()})"

    def last_client_error(self) -> str | None:
        with self._lock:
            return self._last_client_error

    def clear_client_error(self) -> None:
        with self._lock:
            self._last_client_error = None

    def close(self) -> None:
        """AdminClient has no close(); dropping the reference lets librdkafka shut down."""
        del self._admin
