"""`lag-exporter top`: a live terminal view of lag, worst first, drawn with rich.

Three parts, kept apart:
- where rows come from: a Fleet sampled here (`FleetRows`), or a running watch's `/api/lag`
  (`WatchRows`, no Kafka connection at all);
- what the screen shows: `TopState` (selection, detail, the last rows) and `render()`, pure;
- the terminal: keys read in cbreak mode by a thread (`KeyReader`), rich's Live on the
  alternate screen, refreshed on every new frame and every key.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import select
import signal
import sys
import termios
import threading
import time
import tty
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from types import FrameType, TracebackType
from typing import Any, Protocol

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from lag_exporter.fleet import Fleet
from lag_exporter.view import (
    LagHistory,
    RowKey,
    TopicRow,
    rows_from_payload,
    sample_rows,
    sparkline,
)

SPARK_WIDTH = 12
SPARK_WINDOW_S = 60.0
"""The sparkline: the last minute in 12 characters, 5 s each (the worst total lag of those 5 s)."""
NO_COMMIT = "no commit yet"
NO_VALUE = "-"

Points = list[tuple[float, int | None]]
"""(seconds since the epoch, total lag) of one row, oldest first."""


@dataclass(frozen=True)
class Frame:
    """What one refresh learnt: the rows (worst first) with their recent history, or a problem
    (then `rows` is None and the rows on screen stay, marked by the problem line)."""

    rows: list[TopicRow] | None
    history: dict[RowKey, Points] = field(default_factory=dict)
    taken_at: float | None = None
    problem: str | None = None


class RowSource(Protocol):
    def fetch(self) -> Frame: ...

    def close(self) -> None: ...


# ---------------------------------------------------------------- where rows come from


class FleetRows:
    """Samples Kafka here, like watch (same Fleet, same estimates of seconds and status)."""

    def __init__(self, fleet: Fleet, interval_s: float) -> None:
        self.fleet = fleet
        self.interval_s = interval_s
        self.history = LagHistory(window_s=SPARK_WINDOW_S, max_points=600)

    def fetch(self) -> Frame:
        sample = self.fleet.sample(wait_s=self.interval_s * 0.9)
        rows = sample_rows(sample)
        taken_at = sample.taken_at.timestamp()
        self.history.record(taken_at, rows)
        problem = sample.warnings[0] if sample.warnings else None
        if sample.pending_clusters:
            problem = f"still sampling {', '.join(sample.pending_clusters)} (slower than " \
                      f"the interval)"
        return Frame(rows, {row.key: self.history.series(row.key) for row in rows}, taken_at,
                     problem)

    def close(self) -> None:
        self.fleet.close()


ROWS_FROM_WATCH = 500


class WatchRows:
    """Reads GET <url>/api/lag of a running `lag-exporter watch --http-port`."""

    def __init__(self, base_url: str, timeout_s: float) -> None:
        self.url = base_url.rstrip("/") + "/api/lag"
        self.timeout_s = timeout_s

    def fetch(self) -> Frame:
        try:
            # The worst rows only: a screen shows tens, and the whole estate's body is ~12 MB
            # at 10,000 partitions (the watch keeps it sorted worst first).
            with urllib.request.urlopen(f"{self.url}?rows={ROWS_FROM_WATCH}",
                                        timeout=self.timeout_s) as answer:
                payload = json.loads(answer.read())
        except urllib.error.HTTPError as error:
            hint = " (a watch older than top, or not lag-exporter?)" if error.code == 404 else ""
            return Frame(None, problem=f"{self.url}: HTTP {error.code} {error.reason}{hint}")
        except urllib.error.URLError as error:
            reason = getattr(error.reason, "strerror", None) or str(error.reason)
            return Frame(None, problem=f"cannot reach {self.url}: {reason}")
        except (OSError, ValueError) as error:  # timeouts, resets, bad JSON
            return Frame(None, problem=f"{self.url}: {error}")
        try:
            rows = rows_from_payload(payload)
            history = {row.key: [(float(t), lag) for t, lag in item["history"]]
                       for (row, _), item in zip(rows, payload["rows"], strict=True)}
            taken_at = payload["taken_at"]
            taken_at = None if taken_at is None else float(taken_at)
        except (ValueError, TypeError, KeyError) as error:
            return Frame(None, problem=f"{self.url}: {error}")
        return Frame([row for row, _ in rows], history, taken_at)

    def close(self) -> None:
        pass


# ---------------------------------------------------------------- what the screen shows


@dataclass
class TopState:
    """The view between two frames: the last rows, the selected row (by key, so that it stays
    selected when the order changes) and whether its partitions are shown."""

    source: str
    """Where the rows come from, for the title: the clusters, or the watch's URL."""
    interval_s: float
    rows: list[TopicRow] = field(default_factory=list)
    history: dict[RowKey, Points] = field(default_factory=dict)
    taken_at: float | None = None
    problem: str | None = None
    frames: int = 0
    selected: RowKey | None = None
    detail: bool = False
    keys_work: bool = True
    """False when stdin is not a terminal: only Ctrl-C quits."""

    def update(self, frame: Frame) -> None:
        self.problem = frame.problem
        if frame.rows is None:
            return
        self.frames += 1
        self.rows, self.history, self.taken_at = frame.rows, frame.history, frame.taken_at
        if self.selected not in {row.key for row in self.rows}:
            self.selected = self.rows[0].key if self.rows else None
            self.detail = self.detail and self.selected is not None

    def selected_index(self) -> int:
        for index, row in enumerate(self.rows):
            if row.key == self.selected:
                return index
        return 0

    def press(self, key: str) -> bool:
        """Apply one key; True when it quits."""
        if key == "q":
            return True
        if not self.rows:
            return False
        index = self.selected_index()
        if key == "up":
            self.selected = self.rows[max(0, index - 1)].key
        elif key == "down":
            self.selected = self.rows[min(len(self.rows) - 1, index + 1)].key
        elif key == "enter":
            self.detail = not self.detail
        return False


KEYS = {b"\x1b[A": "up", b"\x1bOA": "up", b"k": "up", b"\x1b[B": "down", b"\x1bOB": "down",
        b"j": "down", b"\r": "enter", b"\n": "enter", b"q": "q", b"Q": "q"}


def parse_keys(data: bytes) -> list[str]:
    """Bytes read from a terminal -> the keys top knows; anything else is skipped (an unknown
    escape sequence whole, so that its tail is not read as letters)."""
    keys = []
    position = 0
    while position < len(data):
        for sequence, key in KEYS.items():
            if data.startswith(sequence, position):
                keys.append(key)
                position += len(sequence)
                break
        else:
            if data[position:position + 1] == b"\x1b":
                # ESC [ or ESC O, then parameters, then one final byte in @..~
                end = position + 2
                while end < len(data) and not 0x40 <= data[end] <= 0x7E:
                    end += 1
                position = end + 1
            else:
                position += 1
    return keys


def format_count(value: int | None, width: int) -> str:
    if value is None:
        return NO_VALUE
    text = f"{value:,}"
    if len(text) <= width:
        return text
    for unit, scale in (("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if value >= scale:
            return f"{value / scale:.1f}{unit}"
    return text


def format_seconds(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return NO_VALUE
    seconds = math.floor(value + 0.5)  # half up, as people round (round() halves to even)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def minute_values(points: Points, end: float, width: int = SPARK_WIDTH,
                  window_s: float = SPARK_WINDOW_S) -> list[int | None]:
    """The `window_s` before `end` in `width` slots, each the worst total lag seen in it; None
    for a gap (no point, or only unknown lags).

    An empty slot between two with points takes the value before it: a watch's history has one
    point per 5 s, so a slot can miss its point by a few milliseconds without any gap."""
    step = window_s / width
    values: list[int | None] = [None] * width
    seen = [False] * width
    for moment, lag in points:
        age = end - moment
        if age < 0 or age >= window_s:
            continue
        slot = width - 1 - int(age // step)
        seen[slot] = True
        current = values[slot]
        if lag is not None:
            values[slot] = lag if current is None else max(current, lag)
    for slot in range(1, width - 1):
        if not seen[slot] and seen[slot - 1] and seen[slot + 1]:
            values[slot] = values[slot - 1]
    return values


STATUS_STYLE = {"OK": "green", "WARN": "yellow", "ERR": "bold red"}
SELECTED_STYLE = "bold on grey30"


def _topic_cell(row: TopicRow) -> Text:
    if row.error is not None:
        return Text(f"error: {row.error}", style="red")
    if not row.topic:
        return Text(NO_COMMIT, style="italic dim")
    return Text(row.topic)


def _lag_cell(row: TopicRow) -> str:
    if row.lag_total is None and row.partitions_unknown:
        return "?"  # some end offsets unknown: a partial sum would understate
    return format_count(row.lag_total, 9)


def _title(state: TopState, width: int) -> Text:
    title = Text("lag-exporter top", style="bold")
    title.append(f"  {state.source}")
    if state.taken_at is not None:
        moment = datetime.fromtimestamp(state.taken_at).strftime("%H:%M:%S")
        title.append(f"  {moment}", style="cyan")
    title.append(f"  every {state.interval_s:g} s", style="dim")
    title.truncate(width, overflow="ellipsis")
    return title


def _rows_table(state: TopState, shown: list[TopicRow], clusters: bool) -> Table:
    table = Table(box=None, show_edge=False, padding=(0, 1, 0, 0), header_style="bold",
                  expand=True)
    table.add_column("", width=1, no_wrap=True)
    if clusters:
        table.add_column("CLUSTER", ratio=1, min_width=6, no_wrap=True, overflow="ellipsis")
    table.add_column("GROUP", ratio=1, min_width=8, no_wrap=True, overflow="ellipsis")
    table.add_column("TOPIC", ratio=1, min_width=8, no_wrap=True, overflow="ellipsis")
    table.add_column("LAG", justify="right", width=9, no_wrap=True)
    table.add_column("MAX", justify="right", width=8, no_wrap=True)
    table.add_column("BEHIND", justify="right", width=6, no_wrap=True)
    table.add_column("STATUS", width=6, no_wrap=True)
    table.add_column("LAST MINUTE", width=SPARK_WIDTH, no_wrap=True)
    end = state.taken_at or 0.0
    for row in shown:
        selected = row.key == state.selected
        # The row itself is the latest sample: the history may end a little before it.
        points = [*state.history.get(row.key, []), (end, row.lag_total)]
        spark = sparkline(minute_values(points, end), SPARK_WIDTH)
        status = Text(row.status or NO_VALUE, style=STATUS_STYLE.get(row.status or "", ""))
        cells: list[str | Text] = [">" if selected else ""]
        if clusters:
            cells.append(row.cluster)
        cells += [row.group, _topic_cell(row), _lag_cell(row),
                  format_count(row.lag_max, 8), format_seconds(row.seconds_max), status,
                  Text(spark, style="cyan")]
        # A background, not reverse video: reversed sparkline blocks would read as bars.
        table.add_row(*cells, style=SELECTED_STYLE if selected else None)
    return table


def _detail(row: TopicRow, limit: int) -> list[RenderableType]:
    """The selected row's partitions (at most `limit` lines), or why it has none."""
    where = f"{row.group} / {row.topic or '-'} on {row.cluster}"
    if row.error is not None:
        return [Text(f"{where}: cannot be sampled: {row.error}", style="red")]
    if not row.partitions:
        return [Text(f"{where}: no commit yet: the group has not committed an offset on any "
                     "partition (a new consumer, or a mirror before its first commit); its "
                     "lag shows once it does.", style="italic")]
    title = Text(f"partitions of {where}", style="bold", no_wrap=True, overflow="ellipsis")
    table = Table(box=None, show_edge=False, padding=(0, 2, 0, 0),
                  header_style="bold")
    for name in ("PARTITION", "COMMITTED", "END", "LAG", "BEHIND"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("STATUS", no_wrap=True)
    shown = row.partitions if len(row.partitions) <= limit else row.partitions[:max(1, limit - 1)]
    for p in shown:
        table.add_row(str(p.partition),
                      NO_COMMIT if p.committed_offset is None else f"{p.committed_offset:,}",
                      "?" if p.high_watermark is None else f"{p.high_watermark:,}",
                      format_count(p.lag, 12), format_seconds(p.seconds),
                      Text(p.status or NO_VALUE, style=STATUS_STYLE.get(p.status or "", "")))
    parts: list[RenderableType] = [title, table]
    if len(shown) < len(row.partitions):
        parts.append(Text(f"... {len(row.partitions) - len(shown)} more partitions "
                          "(a taller terminal shows them)", style="dim"))
    return parts


def render(state: TopState, width: int, height: int) -> RenderableType:
    """The whole screen for a terminal of width x height."""
    parts: list[RenderableType] = [_title(state, width)]
    if state.problem:
        problem = Text(f"! {state.problem}", style="bold red")
        problem.truncate(width, overflow="ellipsis")
        parts.append(problem)
    footer = Text("up/down or j/k select, Enter partitions, q quit" if state.keys_work
                  else "Ctrl-C quits", style="dim")
    if not state.rows:
        parts.append(Text("waiting for the first sample..." if state.frames == 0 else
                          "no consumer group to show yet (none selected has been found)",
                          style="italic"))
        return Group(*parts, footer)
    # Lines: title, problem, table header, footer; then the rows and the detail share the rest.
    room = max(1, height - len(parts) - 2)
    selected_row = state.rows[state.selected_index()]
    detail_lines = 2 + len(selected_row.partitions) if state.detail else 0
    list_room = max(min(3, room), room - detail_lines)
    count = min(len(state.rows), list_room)
    index = state.selected_index()
    first = 0 if index < count else index - count + 1
    shown = state.rows[first:first + count]
    clusters = len({row.cluster for row in state.rows}) > 1
    parts.append(_rows_table(state, shown, clusters))
    if len(shown) < len(state.rows):
        footer = Text(f"rows {first + 1}-{first + len(shown)} of {len(state.rows)}; ",
                      style="dim") + footer
    if state.detail:
        parts += _detail(selected_row, max(1, room - count - 2))
    return Group(*parts, footer)


# ---------------------------------------------------------------- the terminal


class KeyReader:
    """Keys from a terminal in cbreak mode (no echo, no line buffering; Ctrl-C still sends
    SIGINT), read by a thread and handed to `deliver`. The terminal's mode is restored on exit."""

    def __init__(self, fd: int, deliver: Callable[[str], None]) -> None:
        self.fd = fd
        self.deliver = deliver
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="top-keys", daemon=True)
        self._saved: list[Any] | None = None

    def __enter__(self) -> KeyReader:
        self._saved = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd)
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(1.0)
        if self._saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)

    def _read(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.fd], [], [], 0.2)
            if not ready:
                continue
            data = os.read(self.fd, 64)
            if not data:  # end of input: nothing more to read
                return
            for key in parse_keys(data):
                self.deliver(key)


class _LastProblemHandler(logging.Handler):
    """While the view is on screen, log lines would tear it: the last warning becomes the
    view's problem line instead."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.last: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.last = record.getMessage()


@contextmanager
def _logs_into_view() -> Iterator[_LastProblemHandler]:
    root = logging.getLogger()
    handler = _LastProblemHandler()
    saved = root.handlers[:]
    root.handlers[:] = [handler]
    try:
        yield handler
    finally:
        root.handlers[:] = saved


@contextmanager
def _quit_on_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP (a closed SSH session) end the view like Ctrl-C: terminal restored."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():  # only there (tests)
        yield
        return
    saved = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _fetch_every(source: RowSource, interval_s: float, deliver: Callable[[Frame], None],
                 stop: threading.Event) -> None:
    """The sampling thread: one frame per interval, on a fixed schedule, never bursting."""
    next_at = time.monotonic()
    while not stop.is_set():
        try:
            frame = source.fetch()
        except Exception as error:  # the view stays up and says what broke
            frame = Frame(None, problem=f"unexpected error: {type(error).__name__}: {error}")
        deliver(frame)
        next_at = max(next_at + interval_s, time.monotonic())
        stop.wait(next_at - time.monotonic())


def run_top(source: RowSource, state: TopState, console: Console, read_keys: bool,
            events: queue.Queue[Frame | str] | None = None) -> None:
    """Show the view until q (or Ctrl-C, SIGTERM, SIGHUP); read_keys: stdin is a terminal.
    `events` lets a test feed keys."""
    state.keys_work = read_keys or events is not None
    events = events if events is not None else queue.Queue()
    stop = threading.Event()
    fetcher = threading.Thread(target=_fetch_every, name="top-fetch", daemon=True,
                               args=(source, state.interval_s, events.put, stop))

    def screen() -> RenderableType:
        return render(state, console.size.width, console.size.height)

    try:
        with _logs_into_view() as logs, _quit_on_signals(), \
                (KeyReader(sys.stdin.fileno(), events.put) if read_keys else _nothing()), \
                Live(get_renderable=screen, console=console, screen=console.is_terminal,
                     auto_refresh=False, redirect_stderr=False) as live:
            fetcher.start()
            while True:
                try:
                    event = events.get(timeout=0.5)
                except queue.Empty:  # redraw anyway: the terminal may have been resized
                    live.refresh()
                    continue
                if isinstance(event, Frame):
                    state.update(event)
                    state.problem = state.problem or logs.last
                    logs.last = None
                elif state.press(event):
                    break
                live.refresh()
    except KeyboardInterrupt:
        pass  # Ctrl-C is how many people leave a view: a clean exit, terminal restored
    finally:
        stop.set()
        fetcher.join(2.0)
        source.close()


@contextmanager
def _nothing() -> Iterator[None]:
    yield
