"""Plain records passed along the data path. No client-library type crosses this line."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple


class TopicPartition(NamedTuple):
    """A NamedTuple, not a dataclass: at 10,000 partitions per sample its C-level hashing,
    ordering and pickling (to the Kafka client process) show in the profile."""

    topic: str
    partition: int


@dataclass(frozen=True)
class GroupOffsets:
    """What Kafka says about one consumer group at one moment."""

    group: str
    committed_offsets: dict[TopicPartition, int]
    """Partitions with a commit; offsets < 0 ("no commit") are left out."""
    assigned_partitions: frozenset[TopicPartition] = frozenset()
    """Partitions assigned to an active member, committed or not."""
    state: str = "UNKNOWN"


class PartitionLag(NamedTuple):
    """A NamedTuple for the same reason as TopicPartition: ~15,000 are built per sample at
    scale, and a frozen dataclass's __init__ costs several times more."""

    topic: str
    partition: int
    committed_offset: int | None
    """None: the group has never committed on this partition."""
    high_watermark: int | None
    """None: the end offset could not be read (see the group's errors)."""
    lag: int | None
    """high_watermark - committed_offset, clamped at 0; None when either side is unknown."""
    seconds: float | None = None
    """How long ago the record at the committed offset was written (seconds.py); 0 when caught
    up, None when unknown."""
    status: str | None = None
    """The partition's verdict over the exporter's recent samples (status.py); None in a
    one-shot snapshot, which has no history to judge."""


@dataclass(frozen=True)
class GroupLag:
    cluster: str
    group: str
    partitions: tuple[PartitionLag, ...]
    """Sorted by topic, then partition."""
    error: str | None = None
    """Why the group could not be sampled this time (then `partitions` is empty)."""
    state: str = "UNKNOWN"
    taken_at: datetime | None = None
    """Set when this group's data is from an earlier tick than the Sample carrying it (a slow
    cluster's sample, handed on late): its documents get this time."""
    seconds_age: float = 0.0
    """How many seconds before this sample the partitions' `seconds` were computed. A group
    whose offsets did not move is passed on with the lags of an earlier tick as they were
    (rebuilding 22,000 lags every tick only to age their seconds cost ~12 ms at scale), so a
    partition's seconds now are `p.seconds + seconds_age`, but 0 (caught up: nothing unread)
    and None (unknown) stay as they are; `current_partitions()` gives them all."""

    def current_partitions(self) -> tuple[PartitionLag, ...]:
        """The partitions with their seconds as of this sample."""
        return aged_partitions(self.partitions, self.seconds_age)


def aged_partitions(partitions: tuple[PartitionLag, ...], age: float
                    ) -> tuple[PartitionLag, ...]:
    """`partitions` with their seconds `age` seconds later: a record is as old as the time since
    it was written, while 0 (caught up) and None (unknown) stay."""
    if not age:
        return partitions
    return tuple(p._replace(seconds=p.seconds + age) if p.seconds else p for p in partitions)


@dataclass(frozen=True)
class Sample:
    """Everything one tick learnt, immutable once taken."""

    taken_at: datetime
    """UTC wall-clock time at which the tick started."""
    groups: tuple[GroupLag, ...]
    duration_s: float = 0.0
    warnings: tuple[str, ...] = field(default=())
    pending_clusters: tuple[str, ...] = field(default=())
    """Clusters whose sample was still running at the tick's deadline: they have no groups in
    this sample (their sample comes late), so this tick says nothing about them."""
