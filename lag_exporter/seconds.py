"""Lag in seconds: how long ago the oldest unconsumed record was written. Pure: every time is
passed in by the caller, never read here.

The oldest unconsumed record is the one at the committed offset c. Per partition we keep a
bounded history of (high watermark, time) points, one each time the sampler sees the watermark
move, plus the last time it was seen unchanged. Record c was appended after the last moment the
watermark was <= c (it did not exist yet) and no later than the first moment it was > c (it
existed). Those two points are the tightest bounds the samples give, so the write time is
interpolated linearly on offset between them: with a steady producer that is exact, and it is
never outside the interval the samples prove. The answer is now - write time, so on a topic
that has gone quiet it keeps growing with `now`, as it should.

Beyond the history (a consumer further behind than the exporter has been watching, or in a
stretch thinned by decimation) the Kafka side reads the CreateTime of the first record at or
after c from the broker (`needs_record_time` says for which partitions) and hands it over with
`remember_record_time` or the `record_time` argument. That fact is exact for c (a compacted or
truncated offset gets the next record's time) and bounds the offsets around it. Without
history or fact the answer is None, never NaN, infinity or a negative number.

Clocks: `at`/`now` may be any clock in seconds (monotonic is fine) as long as it is one clock;
record timestamps are Kafka CreateTimes (epoch seconds), so a caller that passes them must use
the wall clock (time.time()).

Memory: at most `max_points` points per partition in two compact arrays (8 + 8 bytes a point).
Points a straight line predicts within `tolerance_s` are merged as they arrive (a steady topic
keeps a handful of points for hours); when the arrays are full, every other point of the older
half is dropped, so recent points keep full resolution and old ones thin out.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_right
from collections.abc import Callable, Hashable, Mapping
from typing import Generic, TypeVar

Key = TypeVar("Key", bound=Hashable)

MAX_POINTS = 120
"""Points kept per partition: 10,000 partitions with full histories take 27.2 MB, 28.7 MB with a
remembered record time each (tracemalloc; tests/unit/test_seconds.py checks the bound)."""
TOLERANCE_S = 0.5
"""A point is merged into the line through its neighbours when that line predicts its time
within this many seconds; the merge adds at most this much error."""


class _History:
    """One partition: points in order of time, offsets and times both non-decreasing. The last
    two points are also kept as attributes: record() runs per partition per tick, and reading
    them from the arrays would build new int and float objects every time."""

    __slots__ = (
        "anchor_offset", "anchor_time", "fact", "fine_from", "hint", "last_offset",
        "last_seen", "last_time", "offsets", "slope_high", "slope_low", "times",
    )

    def __init__(self, high_watermark: int, at: float) -> None:
        self.offsets = array("q", (high_watermark,))
        self.times = array("d", (at,))
        self.last_offset = self.anchor_offset = high_watermark
        """The last point, and the one before it (the anchor of the last segment)."""
        self.last_time = self.anchor_time = at
        self.last_seen = at
        """The latest time the last point's watermark was seen unchanged."""
        # The slopes (seconds per offset) of the lines from the anchor that pass within the
        # tolerance of the last point and of every point merged into it: the swinging-door
        # test, O(1) per point. Empty (low > high): the last point cannot be merged away.
        self.slope_low = math.inf
        self.slope_high = -math.inf
        self.hint = 0
        """seconds_behind's last bracket index: checked before use, so always safe."""
        self.fine_from = high_watermark
        """Offsets from here on are at full resolution (never thinned by a decimation)."""
        self.fact: tuple[int, int, float] | None = None
        """(requested, offset, CreateTime): the first record at or after `requested` is at
        `offset` and was written then. The latest one read from the broker."""


class WatermarkHistory(Generic[Key]):
    """Per partition key (e.g. (cluster, topic, partition)), the watermark history and the
    seconds-behind estimate. Feed `record` once per sample per partition."""

    def __init__(self, max_points: int = MAX_POINTS, tolerance_s: float = TOLERANCE_S) -> None:
        if max_points < 4:
            raise ValueError("max_points must be at least 4")
        if not tolerance_s >= 0.0:
            raise ValueError("tolerance_s must be >= 0")
        self.max_points = max_points
        self.tolerance_s = tolerance_s
        self._histories: dict[Key, _History] = {}

    def __len__(self) -> int:
        return len(self._histories)

    def __contains__(self, key: object) -> bool:
        return key in self._histories

    def points(self, key: Key) -> list[tuple[int, float]]:
        """The stored points (for tests and debugging), oldest first."""
        history = self._histories.get(key)
        if history is None:
            return []
        return list(zip(history.offsets, history.times, strict=True))

    def record(self, key: Key, high_watermark: int, at: float) -> None:
        """The partition's high watermark was `high_watermark` at time `at`."""
        history = self._histories.get(key)
        if history is None:
            self._histories[key] = _History(high_watermark, at)
            return
        if not at >= history.last_seen:
            return  # out of order (or NaN): the history only moves forward in time
        last = history.last_offset
        if high_watermark == last:
            history.last_seen = at
            return
        if high_watermark < last:
            # Truncated log or re-created topic: the old points describe other records.
            self._histories[key] = _History(high_watermark, at)
            return
        if history.last_seen > history.last_time:
            # "Still `last` at last_seen" bounds the write time of record `last` from below.
            self._append(history, last, history.last_seen)
        self._append(history, high_watermark, at)
        history.last_seen = at

    def record_all(self, high_watermarks: Mapping[Key, int], at: float) -> None:
        """`record` of every (key, high watermark) read at time `at`. An unchanged watermark
        (most partitions, most ticks) is handled inline: this runs for every partition of
        every tick, and a method call per partition costs more than the update."""
        histories = self._histories
        record = self.record
        for key, high_watermark in high_watermarks.items():
            history = histories.get(key)
            if (history is not None and high_watermark == history.last_offset
                    and at >= history.last_seen):
                history.last_seen = at
            else:
                record(key, high_watermark, at)

    def _append(self, history: _History, offset: int, at: float) -> None:
        tolerance = self.tolerance_s
        anchor_offset, anchor_time = history.anchor_offset, history.anchor_time
        span = offset - anchor_offset
        if span > 0:
            slope = (at - anchor_time) / span
            if history.slope_low <= slope <= history.slope_high:
                # The line anchor -> new point passes within the tolerance of the last point
                # and of every point merged before it: the new point replaces the last one.
                history.offsets[-1] = history.last_offset = offset
                history.times[-1] = history.last_time = at
                low = (at - tolerance - anchor_time) / span
                high = (at + tolerance - anchor_time) / span
                if low > history.slope_low:
                    history.slope_low = low
                if high < history.slope_high:
                    history.slope_high = high
                return
        offsets, times = history.offsets, history.times
        offsets.append(offset)
        times.append(at)
        anchor_offset = history.anchor_offset = history.last_offset
        anchor_time = history.anchor_time = history.last_time
        history.last_offset, history.last_time = offset, at
        span = offset - anchor_offset
        if span > 0:
            history.slope_low = (at - tolerance - anchor_time) / span
            history.slope_high = (at + tolerance - anchor_time) / span
        else:
            history.slope_low, history.slope_high = math.inf, -math.inf
        if len(offsets) > self.max_points:
            # Drop every other point of the older half, keeping the first (the coverage) and
            # the last two (the open segment). Amortised O(1).
            half = len(offsets) // 2
            history.fine_from = offsets[half]
            del offsets[1:half:2]
            del times[1:half:2]

    def remember_record_time(
        self, key: Key, requested: int, offset: int, create_time: float
    ) -> None:
        """The first record at or after offset `requested` is at `offset` (> requested when
        compacted or truncated) and was written at `create_time`, as read from the broker.
        Kept (one per partition, the latest) until the history restarts."""
        history = self._histories.get(key)
        if history is not None and offset >= requested and math.isfinite(create_time):
            history.fact = (requested, offset, create_time)

    def needs_record_time(self, key: Key, committed: int | None) -> bool:
        """True when the history does not cover `committed` at full resolution (older than
        its first point, or in a thinned stretch) and no remembered record time is for it: the
        Kafka side should read the record time there (rate-limited: the estimate meanwhile is
        bounded by the history, or unknown before its start)."""
        if committed is None:
            return False
        history = self._histories.get(key)
        if history is None:
            return True
        fact = history.fact
        if fact is not None and fact[0] <= committed <= fact[1]:
            return False
        return committed < history.fine_from

    def covers(self, key: Key, offset: int | None) -> bool:
        """True when points at full resolution lie on both sides of record `offset`: its
        estimated write time is then bounded by two stored points, and records appended later
        do not change it (merging the last point moves it by at most the tolerance)."""
        history = self._histories.get(key)
        return (history is not None and offset is not None
                and history.fine_from <= offset < history.last_offset)

    def seconds_behind(
        self,
        key: Key,
        committed: int | None,
        high_watermark: int | None,
        now: float,
        record_time: tuple[int, float] | None = None,
    ) -> float | None:
        """Seconds since the record at offset `committed` was written: 0.0 when caught up,
        None when unknown (no commit, no watermark, or older than the history with no record
        time for it). Never NaN, infinite or negative.

        `record_time` is (offset, CreateTime) of the first record at or after `committed`, read
        from the broker; ignored if its offset is below `committed`. Without it, the fact given
        to `remember_record_time` is used where it applies.
        """
        if committed is None or high_watermark is None:
            return None
        if committed >= high_watermark:
            return 0.0
        history = self._histories.get(key)
        fact = None
        if record_time is not None and record_time[0] >= committed:
            fact = (committed, record_time[0], record_time[1])
        elif history is not None:
            fact = history.fact
        # The bracket of `committed` (as _bracket, inlined: this runs per partition per tick).
        if history is None:
            has_low, low_offset, low_time, high_offset, high_time = (
                False, 0, 0.0, high_watermark, now)
        elif committed >= history.last_offset:
            has_low, low_offset, low_time = True, history.last_offset, history.last_seen
            high_offset, high_time = high_watermark, max(now, low_time)
        else:
            # committed < last point: `above` (the first point > committed) is inside the
            # arrays. Try the last call's answer first: a consumer moves little in a tick.
            offsets, times = history.offsets, history.times
            above = history.hint
            if 0 < above < len(offsets):
                low_offset, high_offset = offsets[above - 1], offsets[above]
                if not low_offset <= committed < high_offset:
                    above = -1
            else:
                above = -1
            if above < 0:
                above = history.hint = bisect_right(offsets, committed)
                low_offset, high_offset = offsets[above - 1] if above else 0, offsets[above]
            has_low = above > 0
            low_time = times[above - 1] if has_low else 0.0
            high_time = times[above]
        if fact is not None and math.isfinite(fact[2]):
            start, offset, created = fact
            # The broker's time, kept within what the samples prove about record `offset`
            # (a producer's clock can be off; monotonicity in the offset depends on it).
            if offset == committed:
                fact_low, fact_low_time, fact_high_time = has_low, low_time, high_time
            else:
                fact_low, _, fact_low_time, _, fact_high_time = _bracket(
                    history, offset, high_watermark, now)
            if fact_low and created < fact_low_time:
                created = fact_low_time
            if created > fact_high_time:
                created = fact_high_time
            if start <= committed <= offset:
                return _age(now, created)
            if offset < committed and (not has_low or offset >= low_offset):
                has_low, low_offset, low_time = True, offset, created
            elif committed < start and (offset < high_offset or (
                    offset == high_offset and created < high_time)):
                # At the bracket's own upper offset too: the broker's time can be the tighter
                # bound (else a committed offset below the fact could get fewer seconds than
                # one inside it: hypothesis found it).
                high_offset, high_time = offset, created
        if not has_low:
            return None
        # Record c is the (c - low + 1)-th of the span: take the middle of its slot.
        fraction = (committed - low_offset + 0.5) / (high_offset - low_offset)
        return _age(now, low_time + fraction * (high_time - low_time))

    def forget(self, key: Key) -> None:
        self._histories.pop(key, None)

    def retain(self, keep: Callable[[Key], bool]) -> None:
        """Drop the partitions for which `keep(key)` is false (no longer reported)."""
        for key in [k for k in self._histories if not keep(k)]:
            del self._histories[key]


def _bracket(
    history: _History | None, offset: int, high_watermark: int, now: float
) -> tuple[bool, int, float, int, float]:
    """(has_low, low offset, low time, high offset, high time): the last point whose watermark
    is <= `offset` (none before the history) and the first one above it; past the last point
    the watermark was still the last one at last_seen, and the caller's is the bound now."""
    if history is None:
        return False, 0, 0.0, high_watermark, now
    offsets, times = history.offsets, history.times
    above = bisect_right(offsets, offset)
    if above == len(offsets):
        low_time = history.last_seen
        return True, offsets[above - 1], low_time, high_watermark, max(now, low_time)
    if above == 0:
        return False, 0, 0.0, offsets[0], times[0]
    return True, offsets[above - 1], times[above - 1], offsets[above], times[above]


def _age(now: float, written: float) -> float | None:
    seconds = now - written
    if not math.isfinite(seconds):
        return None
    return seconds if seconds > 0.0 else 0.0
