"""`lag-exporter top` without a terminal or Kafka: keys, selection, the screen at 80 columns,
the last-minute sparkline, and `--from` against a small local HTTP server serving /api/lag."""

from __future__ import annotations

import io
import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from rich.console import Console

from lag_exporter.model import GroupLag, PartitionLag, Sample
from lag_exporter.top import (
    Frame,
    Points,
    TopState,
    WatchRows,
    format_count,
    format_seconds,
    minute_values,
    parse_keys,
    render,
    run_top,
)
from lag_exporter.view import LagHistory, RowKey, TopicRow, sample_rows, view_payload

MOMENT = datetime(2026, 1, 1, tzinfo=UTC)


def lag(topic: str, partition: int, committed: int | None, end: int | None,
        seconds: float | None = None, status: str | None = None) -> PartitionLag:
    value = None if committed is None or end is None else max(0, end - committed)
    return PartitionLag(topic, partition, committed, end, value, seconds, status)


def rows_of(*groups: GroupLag) -> list[TopicRow]:
    return sample_rows(Sample(MOMENT, groups))


def screen(state: TopState, width: int = 80, height: int = 24) -> list[str]:
    console = Console(file=io.StringIO(), width=width, height=height, color_system=None)
    console.print(render(state, width, height))
    output = console.file.getvalue()  # type: ignore[attr-defined]
    return [line.rstrip() for line in output.splitlines()]


def state_with(rows: list[TopicRow], **settings: Any) -> TopState:
    state = TopState("127.0.0.1:9092", 1.0, **settings)
    state.update(Frame(rows, {}, MOMENT.timestamp()))
    return state


TWO_GROUPS = (GroupLag("c", "payments", (lag("orders", 0, 10, 40, 3.0, "OK"),
                                         lag("orders", 1, 5, 25, 12.5, "WARN"))),
              GroupLag("c", "billing", (lag("invoices", 0, 1, 4, 0.5, "OK"),)))


@pytest.mark.parametrize(("data", "keys"), [
    (b"j", ["down"]), (b"k", ["up"]), (b"\x1b[A\x1b[B", ["up", "down"]),
    (b"\x1bOA\x1bOB", ["up", "down"]), (b"\r", ["enter"]), (b"\n", ["enter"]),
    (b"q", ["q"]), (b"jjq", ["down", "down", "q"]),
    # Unknown sequences are skipped whole: F5 and Page Down are not read as "q" or "j".
    (b"\x1b[15~j", ["down"]), (b"\x1b[6~", []), (b"x\x1b", []),
])
def test_keys_from_terminal_bytes(data: bytes, keys: list[str]) -> None:
    assert parse_keys(data) == keys


def test_the_selection_follows_its_row_when_the_order_changes() -> None:
    state = state_with(rows_of(*TWO_GROUPS))
    assert [row.group for row in state.rows] == ["payments", "billing"]  # WARN first
    assert state.selected == ("c", "payments", "orders")
    state.press("down")
    state.press("down")  # stays on the last row
    assert state.selected == ("c", "billing", "invoices")
    reordered = rows_of(GroupLag("c", "billing", (lag("invoices", 0, 1, 4, 0.5, "WARN"),)),
                        GroupLag("c", "payments", (lag("orders", 0, 10, 40, 3.0, "OK"),)))
    state.update(Frame(reordered, {}, MOMENT.timestamp()))
    assert state.selected == ("c", "billing", "invoices")
    state.press("down")
    assert state.selected == ("c", "payments", "orders")
    state.press("up")
    state.press("up")
    assert state.selected == ("c", "billing", "invoices")
    assert not state.press("enter") and state.detail
    state.update(Frame(rows_of(TWO_GROUPS[0]), {}, MOMENT.timestamp()))  # its row is gone
    assert state.selected == ("c", "payments", "orders")
    assert state.press("q")


def test_a_problem_keeps_the_last_rows_on_screen_until_rows_come_again() -> None:
    state = state_with(rows_of(*TWO_GROUPS))
    state.update(Frame(None, problem="cannot reach http://h:1/api/lag: Connection refused"))
    lines = screen(state)
    assert lines[1] == "! cannot reach http://h:1/api/lag: Connection refused"
    assert any("payments" in line for line in lines)
    state.update(Frame(rows_of(*TWO_GROUPS), {}, MOMENT.timestamp()))
    assert not any(line.startswith("!") for line in screen(state))


def test_the_screen_at_80_columns() -> None:
    long_group = "a-consumer-group-with-a-rather-long-name-0123456789"
    rows = rows_of(*TWO_GROUPS,
                   GroupLag("c", long_group, (lag("a.topic.with.a.long.name.too", 0, 0, 1234567),)),
                   GroupLag("c", "new-consumer", ()),
                   GroupLag("c", "broken", (), error="coordinator not available"))
    history: dict[RowKey, Points] = {
        ("c", "payments", "orders"): [(MOMENT.timestamp() - 50, 10), (MOMENT.timestamp(), 50)]}
    state = TopState("127.0.0.1:9092", 1.0)
    state.update(Frame(rows, history, MOMENT.timestamp()))
    lines = screen(state)
    assert max(len(line) for line in lines) <= 80
    assert lines[0].startswith("lag-exporter top  127.0.0.1:9092  ")
    header = lines[1].split()
    assert header == ["GROUP", "TOPIC", "LAG", "MAX", "BEHIND", "STATUS", "LAST", "MINUTE"]
    body = {line[2:].split()[0]: line[2:].split() for line in lines[2:7]}
    # Sorted worst first: the error, the WARN, then by seconds behind, then by lag.
    assert list(body) == ["broken", "payments", "billing", "a-consumer-gro…", "new-consumer"]
    assert lines[2].startswith("> broken")
    assert body["broken"][1:3] == ["error:", "coordin…"]
    assert body["payments"][1:6] == ["orders", "50", "30", "13s", "WARN"]
    assert lines[3].endswith("WARN    ▂" + " " * 9 + "█")  # 50 s ago (1/5 of now), and now
    assert lines[4].endswith("OK" + " " * 16 + "█")  # billing: only the row itself
    assert body["a-consumer-gro…"][1:4] == ["a.topic.with.a…", "1,234,567", "1.2M"]
    assert body["billing"][1:6] == ["invoices", "3", "3", "1s", "OK"]
    assert body["new-consumer"][1:7] == ["no", "commit", "yet", "-", "-", "-"]
    assert lines[-1] == "up/down or j/k select, Enter partitions, q quit"


def test_the_detail_shows_the_selected_rows_partitions() -> None:
    state = state_with(rows_of(*TWO_GROUPS, GroupLag("c", "new-consumer", ())))
    state.press("enter")
    lines = screen(state)
    start = lines.index("partitions of payments / orders on c")
    assert lines[start + 1].split() == ["PARTITION", "COMMITTED", "END", "LAG", "BEHIND",
                                        "STATUS"]
    assert [line.split() for line in lines[start + 2:start + 4]] == [
        ["0", "10", "40", "30", "3s", "OK"], ["1", "5", "25", "20", "13s", "WARN"]]
    state.press("down")
    state.press("down")
    assert any("new-consumer / - on c: no commit yet: the group has not committed" in line
               for line in screen(state, width=200))
    state.press("enter")
    assert not any("partitions of" in line for line in screen(state))


def test_many_rows_and_partitions_fit_the_terminal_and_the_selection_stays_visible() -> None:
    groups = [GroupLag("c", f"group-{n:02d}", tuple(lag("t", p, 0, 100 - n) for p in range(30)))
              for n in range(50)]
    state = state_with(rows_of(*groups))
    for _ in range(40):
        state.press("down")
    lines = screen(state, height=24)
    assert len(lines) <= 24
    assert any(line.startswith("> group-40") for line in lines)
    assert lines[-1].startswith("rows ")
    state.press("enter")
    lines = screen(state, height=24)
    assert len(lines) <= 24
    assert any(line.startswith("> group-40") for line in lines)
    assert "more partitions (a taller terminal shows them)" in "\n".join(lines)


def test_a_group_without_any_commit_is_a_row_that_says_so() -> None:
    rows = rows_of(GroupLag("c", "fresh", (lag("t", 0, None, 10), lag("t", 1, None, 5))),
                   GroupLag("c", "running", (lag("t", 0, 1, 2),)))
    assert [(row.group, row.topic, row.lag_total) for row in rows] == [
        ("running", "t", 1), ("fresh", "", None)]
    assert "no commit yet" in "\n".join(screen(state_with(rows)))


def test_minute_values_are_the_worst_lag_of_each_5_seconds() -> None:
    end = 1000.0
    points: list[tuple[float, int | None]] = [
        (end - 61, 999), (end - 59, 7), (end - 56, 9), (end - 30, None), (end - 4, 1),
        (end - 0.5, 3), (end + 1, 999)]
    assert minute_values(points, end) == [9] + [None] * 10 + [3]


def test_minute_values_of_a_history_thinned_to_one_point_per_5_seconds_have_no_gaps() -> None:
    end = 1000.0
    # Every 5 s, give or take 10 ms: some slots get two points, their neighbours none.
    points: list[tuple[float, int | None]] = [
        (end - (5 * n + (0.01 if n % 2 else -0.01) if n else 0), n) for n in range(12)]
    values = minute_values(points, end)
    assert values == [11, 11, 10, 10, 8, 8, 6, 6, 4, 4, 2, 0]
    # A real gap (a watch that was down for 20 s) stays one.
    gap = [(moment, lag) for moment, lag in points if not 20 < end - moment < 40]
    assert minute_values(gap, end)[5:8] == [None] * 3


@pytest.mark.parametrize(("value", "text"), [(None, "-"), (0, "0"), (1234, "1,234"),
                                              (123456789, "123.5M"), (12 * 10**9, "12.0G")])
def test_counts_fit_their_column(value: int | None, text: str) -> None:
    assert format_count(value, 9) == text


@pytest.mark.parametrize(("value", "text"), [(None, "-"), (0.4, "0s"), (59.4, "59s"),
                                              (61, "1m01s"), (7322, "2h02m"),
                                              (90000, "1d01h"), (float("inf"), "-")])
def test_seconds_behind_are_short(value: float | None, text: str) -> None:
    assert format_seconds(value) == text


# ---------------------------------------------------------------- --from, over real HTTP


class FakeWatch:
    """A stand-in for `watch --http-port`: serves view_payload JSON at /api/lag; can go down
    and come back on the same port."""

    def __init__(self) -> None:
        self.payload: dict[str, Any] = {}
        self.paths: list[str] = []
        self.port = 0
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = json.dumps(owner.payload).encode()
                owner.paths.append(self.path)
                self.send_response(200 if self.path.startswith("/api/lag?") else 404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def fake_watch() -> Iterator[FakeWatch]:
    watch = FakeWatch()
    history = LagHistory()
    sample = Sample(MOMENT, TWO_GROUPS)
    history.record(MOMENT.timestamp() - 20, sample_rows(sample))
    history.record(MOMENT.timestamp(), sample_rows(sample))
    watch.payload = view_payload(sample, history)
    watch.start()
    yield watch
    watch.stop()


def wait_for(check: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_from_a_watch_shows_its_rows_says_when_it_is_down_and_comes_back(
    fake_watch: FakeWatch,
) -> None:
    state = TopState(f"from http://127.0.0.1:{fake_watch.port}", 0.05)
    console = Console(file=io.StringIO(), width=80, height=24, force_terminal=True)
    events: queue.Queue[Frame | str] = queue.Queue()
    source = WatchRows(f"http://127.0.0.1:{fake_watch.port}", 1.0)
    viewer = threading.Thread(target=run_top, args=(source, state, console, False, events))
    viewer.start()
    try:
        wait_for(lambda: state.frames > 0, "the first rows")
        assert [row.group for row in state.rows] == ["payments", "billing"]
        assert state.history[("c", "payments", "orders")] == [(MOMENT.timestamp() - 20, 50),
                                                             (MOMENT.timestamp(), 50)]
        assert state.taken_at == MOMENT.timestamp()
        assert fake_watch.paths[0] == "/api/lag?rows=500"  # the worst rows, not the estate
        fake_watch.stop()
        wait_for(lambda: (state.problem or "").startswith(
            f"cannot reach http://127.0.0.1:{fake_watch.port}/api/lag: Connection refused"),
            "the problem line")
        assert [row.group for row in state.rows] == ["payments", "billing"]  # still shown
        fake_watch.start()
        wait_for(lambda: state.problem is None, "the watch again")
        events.put("down")
        events.put("enter")
        wait_for(lambda: state.detail and state.selected == ("c", "billing", "invoices"),
                 "the keys")
    finally:
        events.put("q")
        viewer.join(5)
    assert not viewer.is_alive()
    assert "partitions of billing / invoices on c" in console.file.getvalue()  # type: ignore[attr-defined]


@pytest.mark.parametrize(("payload", "problem"), [
    ({"version": 99, "rows": []}, "not a lag-exporter /api/lag document (version 99)"),
    ({"version": 1, "taken_at": 1.0, "rows": [{"cluster": "c"}]}, "malformed /api/lag"),
])
def test_from_something_else_is_one_problem_line(fake_watch: FakeWatch, payload: dict[str, Any],
                                                 problem: str) -> None:
    fake_watch.payload = payload
    frame = WatchRows(f"http://127.0.0.1:{fake_watch.port}", 1.0).fetch()
    assert frame.rows is None
    assert frame.problem is not None and problem in frame.problem


def test_from_a_server_without_api_lag_says_so(fake_watch: FakeWatch) -> None:
    frame = WatchRows(f"http://127.0.0.1:{fake_watch.port}/elsewhere", 1.0).fetch()
    assert frame.problem == (f"http://127.0.0.1:{fake_watch.port}/elsewhere/api/lag: HTTP 404 "
                             "Not Found (a watch older than top, or not lag-exporter?)")
