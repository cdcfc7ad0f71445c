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

Beyond the history (a consumer further behind than the exporter has been watching) the caller
passes the CreateTime of the first record at or after c, read from the broker (see
`needs_record_time`, `remember_record_time`); a compacted or truncated offset therefore gets
the next record's time. Without it the answer is None, never NaN, infinity or a negative number.

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
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

Key = TypeVar("Key", bound=Hashable)

MAX_POINTS = 120
"""Points kept per partition: 10,000 partitions with full histories take ~25 MB (see
tests/unit/test_seconds.py::test_memory_of_10000_full_histories)."""
TOLERANCE_S = 0.5
"""A point is merged into the line through its neighbours when that line predicts its time
within this many seconds; the merge adds at most this much error."""


class _History:
    """One partition: points in order of time, offsets and times both non-decreasing."""

    __slots__ = ("last_seen", "offsets", "slope_high", "slope_low", "times")

    def __init__(self, high_watermark: int, at: float) -> None:
        self.offsets = array("q", (high_watermark,))
        self.times = array("d", (at,))
        self.last_seen = at
        """The latest time the last point's watermark was seen unchanged."""
        # Slopes (seconds per offset) from points[-2] that keep every point merged into the
        # last segment within the tolerance: the swinging-door test, O(1) per point.
        self.slope_low = -math.inf
        self.slope_high = math.inf


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
        last = history.offsets[-1]
        if high_watermark == last:
            history.last_seen = at
            return
        if high_watermark < last:
            # Truncated log or re-created topic: the old points describe other records.
            self._histories[key] = _History(high_watermark, at)
            return
        if history.last_seen > history.times[-1]:
            # "Still `last` at last_seen" bounds the write time of record `last` from below.
            self._append(history, last, history.last_seen)
        self._append(history, high_watermark, at)
        history.last_seen = at

    def _append(self, history: _History, offset: int, at: float) -> None:
        offsets, times = history.offsets, history.times
        if len(offsets) >= 2:
            anchor_offset = offsets[-2]
            last_offset = offsets[-1]
            if last_offset > anchor_offset:
                anchor_time = times[-2]
                last_time = times[-1]
                span = last_offset - anchor_offset
                tolerance = self.tolerance_s
                low = (last_time - tolerance - anchor_time) / span
                if low < history.slope_low:
                    low = history.slope_low
                high = (last_time + tolerance - anchor_time) / span
                if high > history.slope_high:
                    high = history.slope_high
                slope = (at - anchor_time) / (offset - anchor_offset)
                if low <= slope <= high:
                    # The line anchor -> new point passes within the tolerance of the last
                    # point and of every point merged before it: replace the last point.
                    offsets[-1] = offset
                    times[-1] = at
                    history.slope_low = low
                    history.slope_high = high
                    return
        offsets.append(offset)
        times.append(at)
        history.slope_low = -math.inf
        history.slope_high = math.inf
        if len(offsets) > self.max_points:
            # Drop every other point of the older half, keeping the first (the coverage) and
            # the last two (the open segment's slopes stay valid). Amortised O(1).
            half = len(offsets) // 2
            del offsets[1:half:2]
            del times[1:half:2]

    def remember_record_time(self, key: Key, offset: int, create_time: float) -> None:
        """The record at `offset` was written at `create_time` (read from the broker): extends
        the history backwards, so offsets between it and the history's start are interpolated
        from then on instead of needing another read. Ignored unless it is older than the
        history's first point."""
        history = self._histories.get(key)
        if history is None or not offset < history.offsets[0] or not math.isfinite(create_time):
            return
        # Producers' clocks may be ahead of ours: the record existed at the first point's time.
        history.offsets.insert(0, offset)
        history.times.insert(0, min(create_time, history.times[0]))

    def needs_record_time(self, key: Key, committed: int | None) -> bool:
        """True when the history does not reach back to `committed`, so `seconds_behind` needs
        the record time of `committed` to answer (the Kafka side reads it from the broker)."""
        if committed is None:
            return False
        history = self._histories.get(key)
        return history is None or committed < history.offsets[0]

    def seconds_behind(
        self,
        key: Key,
        committed: int | None,
        high_watermark: int | None,
        now: float,
        record_time: tuple[int, float] | None = None,
    ) -> float | None:
        """Seconds since the record at offset `committed` was written: 0.0 when caught up,
        None when unknown (no commit, no watermark, or older than the history and no valid
        `record_time`). Never NaN, infinite or negative.

        `record_time` is (offset, CreateTime) of the first record at or after `committed`; it
        is used only when the history does not cover `committed`, and only if its offset is
        >= committed and below the history's first point (else it belongs to another commit).
        """
        if committed is None or high_watermark is None:
            return None
        if committed >= high_watermark:
            return 0.0
        history = self._histories.get(key)
        written: float | None = None
        if history is not None:
            offsets, times = history.offsets, history.times
            above = bisect_right(offsets, committed)  # first point whose watermark > committed
            if above == 0:
                if record_time is not None and committed <= record_time[0] < offsets[0]:
                    written = min(record_time[1], times[0])
            else:
                below = above - 1  # last point whose watermark <= committed
                if above < len(offsets):
                    low_offset, low_time = offsets[below], times[below]
                    high_offset, high_time = offsets[above], times[above]
                else:
                    # Past the last point: it was still that at last_seen; the caller's
                    # watermark, above committed, is the upper bound now.
                    low_offset, low_time = offsets[below], history.last_seen
                    high_offset, high_time = high_watermark, max(now, low_time)
                # Record c is the (c - low + 1)-th of the span: take the middle of its slot.
                fraction = (committed - low_offset + 0.5) / (high_offset - low_offset)
                written = low_time + fraction * (high_time - low_time)
        elif record_time is not None and committed <= record_time[0] < high_watermark:
            written = record_time[1]
        if written is None:
            return None
        seconds = now - written
        if not math.isfinite(seconds):
            return None
        return seconds if seconds > 0.0 else 0.0

    def forget(self, key: Key) -> None:
        self._histories.pop(key, None)

    def retain(self, keep: Callable[[Key], bool]) -> None:
        """Drop the partitions for which `keep(key)` is false (no longer reported)."""
        for key in [k for k in self._histories if not keep(k)]:
            del self._histories[key]
