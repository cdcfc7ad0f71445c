import contextlib
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lag_exporter import outbox as outbox_module
from lag_exporter.documents import Document
from lag_exporter.errors import ConfigError
from lag_exporter.outbox import SPOOL_FILE, Batch, Outbox, decode, encode, read_spool


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def docs(n: int, padding: int = 0) -> list[Document]:
    return [Document(f"id-{n}", {"topic": "t", "p0": n, "pad": "x" * padding})]


def numbers(batch: Batch | None) -> int:
    assert batch is not None
    return int(batch.documents[0].source["p0"])


def drain(outbox: Outbox) -> list[int]:
    seen = []
    while (batch := outbox.oldest(wait_s=0)) is not None:
        seen.append(numbers(batch))
        outbox.delivered(batch)
    return seen


def settle(outbox: Outbox) -> None:
    """Waits until the spooler has written (with a spool) or encoded (without) every batch."""

    def idle() -> bool:
        if outbox._db is not None:
            return not outbox._memory
        return all(entry.body is not None for entry in list(outbox._memory)[1:])

    with outbox._state:
        assert outbox._state.wait_for(idle, timeout=30)


def spooled(tmp_path: Path) -> list[int]:
    return [int(batch.documents[0].source["p0"]) for batch in read_spool(tmp_path)]


def eventually(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def size_of(n: int, padding: int = 0) -> int:
    return len(encode(docs(n, padding)))


# -- in memory ----------------------------------------------------------------------------

def test_batches_come_out_in_order() -> None:
    outbox = Outbox()
    for n in range(5):
        outbox.put(docs(n))
    assert drain(outbox) == [0, 1, 2, 3, 4]
    outbox.close()


def test_undelivered_batch_stays_first() -> None:
    clock = FakeClock(5000.0)
    outbox = Outbox(clock=clock)
    outbox.put(docs(1))
    clock.now += 1
    outbox.put(docs(2))
    settle(outbox)  # the second is encoded in the background: decoded again on its turn
    first = outbox.oldest(wait_s=0)
    again = outbox.oldest(wait_s=0)
    assert first is again
    assert first is not None
    outbox.delivered(first)
    second = outbox.oldest(wait_s=0)
    assert second is outbox.oldest(wait_s=0)  # decoded once while it is being sent
    assert second is not None and numbers(second) == 2 and second.created_at == 5001.0
    outbox.close()


def test_oldest_returns_at_once_or_when_a_batch_arrives() -> None:
    outbox = Outbox()
    threading.Timer(0.05, outbox.put, args=(docs(1),)).start()
    assert numbers(outbox.oldest(wait_s=30)) == 1  # waited for it
    started = time.monotonic()
    assert numbers(outbox.oldest(wait_s=30)) == 1  # there: no wait
    assert time.monotonic() - started < 10
    outbox.close()


def test_memory_bound_drops_the_oldest_and_counts() -> None:
    one = outbox_module.estimated_size(docs(0))
    outbox = Outbox(memory_max_bytes=2 * one)
    for n in range(5):
        outbox.put(docs(n))
        assert outbox.queued_bytes <= 2 * one
    assert outbox.dropped >= 3  # sizes shrink once encoded: then 2 or more fit
    assert drain(outbox)[-2:] == [3, 4]
    outbox.close()


def test_memory_bound_counts_encoded_bytes_once_encoded() -> None:
    outbox = Outbox()
    outbox.put(docs(0, padding=10_000))
    outbox.put(docs(1, padding=10_000))
    settle(outbox)
    # the first stays decoded (it is next); the second is kept compressed
    assert outbox.queued_bytes == (outbox_module.estimated_size(docs(0, padding=10_000))
                                   + size_of(1, padding=10_000))
    assert size_of(1, padding=10_000) < 200
    outbox.close()


def test_a_batch_bigger_than_the_memory_bound_is_kept_alone() -> None:
    outbox = Outbox(memory_max_bytes=10)
    outbox.put(docs(1))
    outbox.put(docs(2))
    assert len(outbox) == 1
    assert drain(outbox) == [2]
    outbox.close()


def test_batches_older_than_max_age_are_dropped() -> None:
    clock = FakeClock()
    outbox = Outbox(max_age_s=60, clock=clock)
    outbox.put(docs(1))
    clock.now += 30
    outbox.put(docs(2))
    clock.now += 31  # the first is 61 s old, the second 31 s
    assert numbers(outbox.oldest(wait_s=0)) == 2
    assert outbox.dropped == 1
    outbox.close()


def test_oldest_created_at_and_queued_bytes() -> None:
    clock = FakeClock(5000.0)
    outbox = Outbox(clock=clock)
    assert outbox.oldest_created_at() is None
    assert outbox.queued_bytes == 0
    outbox.put(docs(1))
    clock.now += 1
    outbox.put(docs(2))
    assert outbox.oldest_created_at() == 5000.0
    oldest = outbox.oldest(wait_s=0)
    assert oldest is not None and oldest.created_at == 5000.0
    assert outbox.queued_bytes > 0
    drain(outbox)
    assert outbox.oldest_created_at() is None
    assert outbox.queued_bytes == 0
    outbox.close()


def test_dropping_is_logged_when_it_starts_and_when_it_stops(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    outbox = Outbox(memory_max_bytes=1, clock=clock)  # room for one batch: every put drops one
    with caplog.at_level(logging.WARNING, logger="lag_exporter.outbox"):
        for n in range(100):
            outbox.put(docs(n))
            clock.now += 1
        assert outbox.dropped == 99
        assert [r.getMessage() for r in caplog.records] == [
            "outbox: dropping the oldest samples (more than 0.0 MiB in memory)"]
        drain(outbox)
        clock.now += outbox_module.DROPPING_QUIET_S - 2
        outbox.put(docs(100))  # 59 s without a drop: still the same episode
        drain(outbox)
        clock.now += 1
        outbox.put(docs(101))  # a minute without a drop
        outbox.put(docs(102))
    messages = [r.getMessage() for r in caplog.records]
    assert messages[1:] == [
        "outbox: stopped dropping samples; 99 oldest dropped in 98 s (99 in all)",
        "outbox: dropping the oldest samples (more than 0.0 MiB in memory)"]


def test_put_does_not_wait_for_a_slow_delivery(tmp_path: Path) -> None:
    """The delivery thread holds a batch (and the disk) while the sink is slow: put() must
    neither wait for it nor for the disk."""
    outbox = Outbox(tmp_path)
    outbox.put(docs(0))
    batch = outbox.oldest(wait_s=0)
    assert batch is not None
    sink_answered = threading.Event()
    holding_the_disk = threading.Event()

    def slow_delivery() -> None:
        with outbox._db_lock:  # e.g. a long fsync while removing a batch
            holding_the_disk.set()
            sink_answered.wait()
        outbox.delivered(batch)

    delivery = threading.Thread(target=slow_delivery)
    delivery.start()
    holding_the_disk.wait()
    for n in range(1, 50):
        outbox.put(docs(n))  # would hang here if put() took the disk lock
    assert len(outbox) == 50
    sink_answered.set()
    delivery.join()
    assert drain(outbox) == list(range(1, 50))
    outbox.close()


def test_a_batch_reported_delivered_twice_or_after_it_was_dropped_is_harmless() -> None:
    clock = FakeClock()
    outbox = Outbox(max_age_s=60, clock=clock)
    outbox.put(docs(1))
    first = outbox.oldest(wait_s=0)
    assert first is not None
    outbox.delivered(first)
    outbox.delivered(first)  # e.g. the sink's retry reported it again
    outbox.put(docs(2))
    second = outbox.oldest(wait_s=0)
    assert second is not None
    clock.now += 61
    assert outbox.oldest(wait_s=0) is None  # dropped (too old) while it was being sent
    outbox.delivered(second)
    assert len(outbox) == 0 and outbox.dropped == 1
    outbox.put(docs(3))
    assert drain(outbox) == [3]
    outbox.close()


def test_wait_until_empty() -> None:
    outbox = Outbox()
    assert outbox.wait_until_empty(timeout_s=0)
    outbox.put(docs(1))
    assert not outbox.wait_until_empty(timeout_s=0)

    def deliver() -> None:
        batch = outbox.oldest(wait_s=5)
        assert batch is not None
        outbox.delivered(batch)

    delivery = threading.Timer(0.05, deliver)  # after the wait below has begun
    delivery.start()
    assert outbox.wait_until_empty(timeout_s=0.9)  # less than a second is waited too
    delivery.join()
    outbox.put(docs(2))
    assert not outbox.wait_until_empty(timeout_s=0.05)  # nobody delivers: gives up in time
    outbox.close()


def test_close_can_be_called_twice_and_nothing_is_handed_out_after_it(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    for n in range(3):
        outbox.put(docs(n))
    settle(outbox)
    first = outbox.oldest(wait_s=0)
    assert first is not None
    outbox.delivered(first)
    outbox.close()
    outbox.close()
    assert outbox.oldest(wait_s=0) is None  # the rest is on disk, for the next start
    assert spooled(tmp_path) == [1, 2]


def test_encoding_round_trips() -> None:
    documents = [Document("a", {"@timestamp": "2026-01-01T00:00:00.000Z", "p0": 1, "p1": None}),
                 Document("b", {"topic": "t\u00e9", "lag_total": 2**40})]
    assert decode(encode(documents)) == documents


@pytest.mark.parametrize(("body", "reason"), [
    (b"", "Error -5 while decompressing data: incomplete or truncated stream"),
    (b"garbage", "Error -3 while decompressing data: incorrect header check"),
    (zlib.compress(b"{}"), "not a list of documents"),
    (zlib.compress(b"[[1, {}]]"), "not an [id, source] pair"),
    (zlib.compress(b'[["a", 1]]'), "not an [id, source] pair")])
def test_decode_rejects_what_encode_did_not_make(body: bytes, reason: str) -> None:
    with pytest.raises(ValueError) as caught:
        decode(body)
    assert str(caught.value) == reason


def test_the_spool_format_is_compact_json_at_zlib_level_1() -> None:
    """As documented: fast to write (level 1) and readable by any zlib and JSON tool."""
    documents = [Document("a", {"p0": 1, "topic": "t"})]
    compact = b'[["a",{"p0":1,"topic":"t"}]]'
    assert encode(documents) == zlib.compress(compact, 1)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=3000), min_size=1, max_size=40),
       st.integers(min_value=1, max_value=20_000))
def test_memory_bound_holds_and_order_is_kept(paddings: list[int], bound: int) -> None:
    outbox = Outbox(memory_max_bytes=bound)
    for n, padding in enumerate(paddings):
        outbox.put(docs(n, padding))
        newest = max(outbox_module.estimated_size(docs(n, padding)), size_of(n, padding))
        assert outbox.queued_bytes <= max(bound, newest)
    seen = drain(outbox)
    assert seen == sorted(seen)
    assert seen[-1] == len(paddings) - 1  # the newest is never dropped
    assert len(seen) + outbox.dropped == len(paddings)
    outbox.close()


# -- with a spool directory ---------------------------------------------------------------

def test_spooled_batches_survive_a_restart_in_order(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    first = Outbox(tmp_path)
    for n in range(5):
        first.put(docs(n))
    delivered = first.oldest(wait_s=0)
    assert delivered is not None
    first.delivered(delivered)
    first.close()
    with caplog.at_level(logging.INFO, logger="lag_exporter.outbox"):
        second = Outbox(tmp_path)
    assert messages_of(caplog) == [f"restored 4 undelivered sample(s) (0.0 MiB) from {tmp_path}"]
    assert len(second) == 4
    second.put(docs(5))
    settle(second)
    assert [b.sequence for b in read_spool(tmp_path)] == [1, 2, 3, 4, 5]  # continued
    assert drain(second) == [1, 2, 3, 4, 5]
    second.close()
    assert read_spool(tmp_path) == []


def test_the_spool_is_one_file_and_keeps_ids_and_times(tmp_path: Path) -> None:
    clock = FakeClock(1234.5)
    outbox = Outbox(tmp_path, clock=clock)
    for n in range(20):
        outbox.put(docs(n))
    outbox.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", SPOOL_FILE]
    batches = read_spool(tmp_path)
    assert [b.documents[0].doc_id for b in batches] == [f"id-{n}" for n in range(20)]
    assert [b.sequence for b in batches] == list(range(20))
    assert {b.created_at for b in batches} == {1234.5}


def test_the_spool_is_in_wal_mode_with_full_sync(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    assert outbox._db is not None
    assert outbox._db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert outbox._db.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
    outbox.close()


def test_only_the_oldest_batch_is_held_in_memory(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    for n in range(50):
        outbox.put(docs(n, padding=1000))
    settle(outbox)
    assert outbox._memory_bytes == 0  # every batch is on disk
    outbox.close()
    restarted = Outbox(tmp_path)
    assert numbers(restarted.oldest(wait_s=0)) == 0
    assert restarted._memory_bytes == 0
    assert len(restarted) == 50
    restarted.close()


def test_disk_bound_drops_the_oldest(tmp_path: Path) -> None:
    one = size_of(0, padding=3000)
    outbox = Outbox(tmp_path, max_bytes=int(3.5 * one))
    for n in range(10):
        outbox.put(docs(n, padding=3000))
        settle(outbox)
        assert outbox._disk_bytes <= 3.5 * one
    assert outbox.dropped == 7
    outbox.close()
    assert spooled(tmp_path) == [7, 8, 9]


def test_a_smaller_disk_bound_at_restart_drops_the_oldest(tmp_path: Path) -> None:
    first = Outbox(tmp_path)
    for n in range(10):
        first.put(docs(n))
    first.close()
    second = Outbox(tmp_path, max_bytes=2 * size_of(0))
    assert second.dropped == 8
    assert drain(second) == [8, 9]
    second.close()


def test_old_batches_on_disk_are_dropped(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    first = Outbox(tmp_path, clock=clock)
    first.put(docs(1))
    clock.now += 100
    first.put(docs(2))
    first.close()
    clock.now += 1000
    second = Outbox(tmp_path, max_age_s=1050, clock=clock)
    assert second.oldest_created_at() == clock.now - 1100
    with caplog.at_level(logging.WARNING, logger="lag_exporter.outbox"):
        assert numbers(second.oldest(wait_s=0)) == 2
    assert messages_of(caplog) == ["outbox: dropping the oldest samples (older than 1050 s)"]
    assert second.dropped == 1
    assert second.oldest_created_at() == clock.now - 1000
    assert second.queued_bytes == size_of(2)
    second.close()


def test_a_failing_disk_keeps_batches_in_memory_and_logs_twice(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox_module, "RETRY_FIRST_S", 0.001)
    monkeypatch.setattr(outbox_module, "RETRY_MAX_S", 0.001)
    outbox = Outbox(tmp_path)
    outbox.put(docs(0))
    settle(outbox)
    assert outbox._db is not None
    healthy = outbox._db
    broken = sqlite3.connect(":memory:", check_same_thread=False)  # has no spool table
    failed = threading.Event()

    class OnError(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.ERROR:
                failed.set()

    on_error = OnError()
    logging.getLogger("lag_exporter.outbox").addHandler(on_error)
    with caplog.at_level(logging.WARNING, logger="lag_exporter.outbox"):
        with outbox._db_lock:
            outbox._db = broken
        for n in range(1, 5):
            outbox.put(docs(n))
        assert failed.wait(timeout=30)
        with outbox._db_lock:
            assert len(outbox) == 5
            assert len(outbox._memory) == 4
            outbox._db = healthy
        settle(outbox)
    logging.getLogger("lag_exporter.outbox").removeHandler(on_error)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert messages[0].startswith(f"cannot write the spool {tmp_path}: no such table: spool")
    assert messages[1] == f"spool {tmp_path} written again"
    assert drain(outbox) == [0, 1, 2, 3, 4]
    outbox.close()


def test_second_process_on_the_same_spool_is_refused(tmp_path: Path) -> None:
    holder = Outbox(tmp_path)
    with pytest.raises(ConfigError, match="in use by another lag-exporter"):
        Outbox(tmp_path)
    holder.close()


def test_unwritable_spool_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # even root cannot make a directory below a file
    with pytest.raises(ConfigError, match="not writable"):
        Outbox(blocker / "spool")


# -- quarantine and the previous format ---------------------------------------------------

def quarantined(tmp_path: Path) -> list[str]:
    return sorted(p.name.split("-", 1)[1] for p in (tmp_path / "quarantine").iterdir())


def test_an_unreadable_database_is_quarantined_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / SPOOL_FILE).write_bytes(b"not a database at all" * 100)
    with caplog.at_level(logging.WARNING, logger="lag_exporter.outbox"):
        outbox = Outbox(tmp_path)
        outbox.put(docs(1))
        outbox.close()
        again = Outbox(tmp_path)
        assert drain(again) == [1]
        again.close()
    assert quarantined(tmp_path) == [SPOOL_FILE]
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1
    assert "is unreadable (file is not a database)" in messages[0]


def test_a_corrupt_batch_is_dropped_and_the_next_delivered(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    for n in range(3):
        outbox.put(docs(n))
    outbox.close()
    with sqlite3.connect(tmp_path / SPOOL_FILE) as db:
        db.execute("UPDATE spool SET body = x'00ff' WHERE sequence = 1")
    restarted = Outbox(tmp_path)
    assert drain(restarted) == [0, 2]
    assert restarted.dropped == 1
    restarted.close()


def write_previous_format(tmp_path: Path, sequence: int, n: int, created_at: float) -> None:
    content = {"created_at": created_at,
               "documents": [{"id": d.doc_id, "source": d.source} for d in docs(n)]}
    (tmp_path / f"{sequence:020d}.json").write_text(json.dumps(content))


@pytest.mark.parametrize("chunk_bytes", [1, 1 << 20])
def test_the_previous_format_is_imported_in_order_and_bad_files_quarantined(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
        chunk_bytes: int) -> None:
    monkeypatch.setattr(outbox_module, "IMPORT_CHUNK_BYTES", chunk_bytes)
    for sequence in (3, 10, 12):
        write_previous_format(tmp_path, sequence, sequence, 100.0 + sequence)
    (tmp_path / f"{11:020d}.json").write_text("{not json")
    (tmp_path / f"{14:020d}.json").write_text('{"created_at": 1}')  # no documents
    (tmp_path / f"{13:020d}.tmp").write_text("{half wri")
    with caplog.at_level(logging.INFO, logger="lag_exporter.outbox"):
        outbox = Outbox(tmp_path, clock=FakeClock(200.0))
        assert len(outbox) == 3 and outbox.oldest_created_at() == 103.0
        assert [b.sequence for b in read_spool(tmp_path)] == [0, 1, 2]
        assert outbox.queued_bytes == sum(size_of(n) for n in (3, 10, 12))
        batches = []
        while (batch := outbox.oldest(wait_s=0)) is not None:
            batches.append(batch)
            outbox.delivered(batch)
        outbox.close()
        Outbox(tmp_path).close()  # nothing to say the second time
    assert [numbers(b) for b in batches] == [3, 10, 12]
    assert [b.created_at for b in batches] == [103.0, 110.0, 112.0]
    assert [b.documents[0].doc_id for b in batches] == ["id-3", "id-10", "id-12"]
    assert list(tmp_path.glob("*.json")) == [] and list(tmp_path.glob("*.tmp")) == []
    assert quarantined(tmp_path) == [f"{11:020d}.json", f"{13:020d}.tmp", f"{14:020d}.json"]
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "importing 5 sample file(s) of the previous spool format",
        f"spool {tmp_path}: imported 3 sample(s) of the previous format; moved "
        f"3 unreadable or temporary file(s) to {tmp_path / 'quarantine'}",
        f"restored 3 undelivered sample(s) (0.0 MiB) from {tmp_path}"]


def test_imported_batches_come_before_new_ones(tmp_path: Path) -> None:
    write_previous_format(tmp_path, 7, 1, 100.0)
    outbox = Outbox(tmp_path, clock=FakeClock(200.0))
    outbox.put(docs(2))
    assert drain(outbox) == [1, 2]
    outbox.close()


CRASHING_CHILD = """
import os, signal, sys
from pathlib import Path
from lag_exporter.documents import Document
from lag_exporter.outbox import Outbox
outbox = Outbox(Path(sys.argv[1]))
for n in range(5):
    outbox.put([Document(f"id-{n}", {"p0": n})])
with outbox._state:
    outbox._state.wait_for(lambda: not outbox._memory, timeout=30)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_written_batches_survive_a_kill(tmp_path: Path) -> None:
    child = subprocess.run([sys.executable, "-c", CRASHING_CHILD, str(tmp_path)],
                           capture_output=True, text=True, timeout=60)
    assert child.returncode == -signal.SIGKILL, child.stderr
    restarted = Outbox(tmp_path)  # the kernel released the lock
    assert drain(restarted) == [0, 1, 2, 3, 4]
    restarted.close()


def test_a_batch_that_cannot_be_encoded_is_dropped_and_the_next_spooled_at_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox_module, "RETRY_FIRST_S", 600.0)  # not a disk failure: no pause
    outbox = Outbox(tmp_path)
    with caplog.at_level(logging.WARNING, logger="lag_exporter.outbox"):
        outbox.put(docs(1))
        outbox.put([Document("bad", {"p0": {1, 2}})])  # a set: not JSON
        outbox.put([Document("worse", {"p0": {3}})])
        outbox.put(docs(3))
        settle(outbox)
    assert outbox.dropped == 2
    assert messages_of(caplog) == [
        f"dropping sample {n}: cannot encode it: Type is not JSON serializable: set"
        for n in (1, 2)]
    outbox.close()
    assert spooled(tmp_path) == [1, 3]


def test_the_file_shrinks_once_a_backlog_is_delivered(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outbox_module, "FILE_KEPT_BYTES", 1_000_000)
    outbox = Outbox(tmp_path)
    for n in range(40):
        outbox.put(docs(n, padding=200_000))  # ~200 kB of JSON, little once compressed
        outbox.put([Document(f"r-{n}", {"p0": n, "noise": os.urandom(100_000).hex()})])
    settle(outbox)
    full = (tmp_path / SPOOL_FILE).stat().st_size + (tmp_path / f"{SPOOL_FILE}-wal").stat().st_size
    assert full > 4_000_000
    outbox.put(docs(-1))  # not written yet when the file is replaced: written to the new one
    drain(outbox)
    assert (tmp_path / SPOOL_FILE).stat().st_size < 100_000
    eventually(lambda: not (tmp_path / outbox_module.DISCARDED_FILE).exists())  # in background
    outbox.put(docs(100))
    outbox.close()
    assert spooled(tmp_path) == [100]
    (tmp_path / outbox_module.DISCARDED_FILE).write_text("")  # the process stopped before ...
    Outbox(tmp_path).close()  # ... it was removed: the next start removes it
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", SPOOL_FILE]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=20_000), min_size=1, max_size=25),
       st.integers(min_value=1, max_value=30_000))
def test_disk_bound_holds_and_order_is_kept(paddings: list[int], bound: int) -> None:
    with tempfile.TemporaryDirectory() as spool_dir:
        outbox = Outbox(Path(spool_dir), max_bytes=bound)
        for n, padding in enumerate(paddings):
            outbox.put([Document(f"id-{n}", {"p0": n, "pad": os.urandom(padding // 2).hex()})])
            settle(outbox)
            assert outbox.queued_bytes == outbox._disk_bytes
            newest = read_spool(Path(spool_dir))[-1]
            assert outbox._disk_bytes <= max(bound, len(encode(newest.documents)))
        outbox.close()
        restarted = Outbox(Path(spool_dir), max_bytes=bound)
        seen = drain(restarted)
        restarted.close()
    assert seen == sorted(seen)
    assert seen[-1] == len(paddings) - 1  # the newest is never dropped
    assert len(seen) + outbox.dropped == len(paddings)


def test_a_failed_removal_is_not_sent_again_and_is_deleted_with_the_next(
        tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    for n in range(3):
        outbox.put(docs(n))
    settle(outbox)
    first = outbox.oldest(wait_s=0)
    assert first is not None
    assert outbox._db is not None
    healthy = outbox._db
    with outbox._db_lock:
        outbox._db = sqlite3.connect(":memory:", check_same_thread=False)  # DELETE fails
    outbox.delivered(first)
    with outbox._db_lock:
        outbox._db = healthy
    assert len(outbox) == 2
    assert numbers(outbox.oldest(wait_s=0)) == 1  # not 0 again, though it is still on disk
    assert spooled(tmp_path) == [0, 1, 2]
    assert drain(outbox) == [1, 2]
    outbox.close()
    assert spooled(tmp_path) == []


# -- a spool that cannot be read, opened or moved -----------------------------------------

def corrupt_the_table(spool_dir: Path) -> sqlite3.Connection:
    """Damages the spool file as a bad disk would (its table points to a page that does not
    exist). The connection stays open, as an inspecting `sqlite3` shell would keep it: so the
    -wal and -shm files stay too."""
    other = sqlite3.connect(spool_dir / SPOOL_FILE)
    other.execute("PRAGMA writable_schema = ON")
    (version,) = other.execute("PRAGMA schema_version").fetchone()
    other.execute("UPDATE sqlite_master SET rootpage = 9999 WHERE name = 'spool'")
    other.execute(f"PRAGMA schema_version = {version + 1}")
    other.commit()
    return other


def messages_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "lag_exporter.outbox"]


def test_a_spool_damaged_while_running_is_moved_aside_whole_and_an_empty_one_started(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    outbox = Outbox(tmp_path)
    for n in range(3):
        outbox.put(docs(n))
    settle(outbox)
    inspector = corrupt_the_table(tmp_path)
    with caplog.at_level(logging.INFO, logger="lag_exporter.outbox"):
        first = outbox.oldest(wait_s=0)
        assert numbers(first) == 0
        assert first is not None
        outbox.delivered(first)  # removing it reads the damaged file
    assert messages_of(caplog) == [
        f"spool database {tmp_path / SPOOL_FILE} is unreadable (malformed database schema "
        f"(spool) - invalid rootpage): moved to {tmp_path / 'quarantine'}; starting an empty "
        "spool"]
    assert quarantined(tmp_path) == [SPOOL_FILE, f"{SPOOL_FILE}-shm", f"{SPOOL_FILE}-wal"]
    assert outbox.dropped == 2  # the two not delivered were in the damaged file
    assert len(outbox) == 0 and outbox.queued_bytes == 0 and outbox.oldest_created_at() is None
    assert outbox.oldest(wait_s=0) is None
    outbox.put(docs(3))
    settle(outbox)
    assert spooled(tmp_path) == [3]  # in the new file
    outbox.put(docs(4))
    assert drain(outbox) == [3, 4]
    outbox.put(docs(5))
    outbox.close()
    inspector.close()
    restarted = Outbox(tmp_path)
    assert drain(restarted) == [5]
    restarted.close()


def test_a_spool_that_cannot_be_created_again_after_damage_keeps_samples_in_memory(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    outbox = Outbox(tmp_path)
    for n in range(2):
        outbox.put(docs(n))
    settle(outbox)
    inspector = corrupt_the_table(tmp_path)
    # A directory where SQLite puts a rollback journal: a new database cannot be created.
    (tmp_path / f"{SPOOL_FILE}-journal").mkdir()
    with caplog.at_level(logging.INFO, logger="lag_exporter.outbox"):
        first = outbox.oldest(wait_s=0)
        assert first is not None
        outbox.delivered(first)
        for n in range(2, 5):
            outbox.put(docs(n))
        assert drain(outbox) == [2, 3, 4]
    messages = messages_of(caplog)
    assert len(messages) == 2, messages
    assert messages[0].startswith(f"spool database {tmp_path / SPOOL_FILE} is unreadable (")
    assert messages[1] == (f"cannot create the spool {tmp_path / SPOOL_FILE}: unable to open "
                           "database file; samples wait in memory (at most 64.0 MiB)")
    assert outbox.dropped == 1
    outbox.close()
    inspector.close()


def test_an_unreadable_spool_that_cannot_be_moved_aside_keeps_samples_in_memory(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    garbage = b"not a database at all" * 100
    (tmp_path / SPOOL_FILE).write_bytes(garbage)
    (tmp_path / "quarantine").write_text("a file where the directory should be")
    with caplog.at_level(logging.INFO, logger="lag_exporter.outbox"):
        outbox = Outbox(tmp_path, memory_max_bytes=8 << 20)
        for n in range(3):
            outbox.put(docs(n))
        settle(outbox)
        assert drain(outbox) == [0, 1, 2]
        outbox.close()
    assert messages_of(caplog) == [
        f"spool database {tmp_path / SPOOL_FILE} is unreadable (file is not a database) and "
        "cannot be moved away (File exists); samples wait in memory (at most 8.0 MiB)"]
    assert (tmp_path / SPOOL_FILE).read_bytes() == garbage  # left as it was
    (tmp_path / "quarantine").unlink()
    again = Outbox(tmp_path)
    assert len(again) == 0
    again.close()
    assert quarantined(tmp_path) == [SPOOL_FILE]


@pytest.mark.parametrize("version", [0, 2])
def test_a_database_of_another_format_is_moved_aside(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, version: int) -> None:
    with contextlib.closing(sqlite3.connect(tmp_path / SPOOL_FILE)) as other:
        other.execute("CREATE TABLE spool (sequence INTEGER PRIMARY KEY, other TEXT)")
        other.execute("INSERT INTO spool VALUES (1, 'not ours')")
        other.execute(f"PRAGMA user_version = {version}")
        other.commit()
    with caplog.at_level(logging.INFO, logger="lag_exporter.outbox"):
        outbox = Outbox(tmp_path)
    assert messages_of(caplog) == [
        f"spool database {tmp_path / SPOOL_FILE} is unreadable (unknown spool format "
        f"{version}): moved to {tmp_path / 'quarantine'}; starting an empty spool"]
    assert len(outbox) == 0
    outbox.put(docs(1))
    outbox.close()
    assert spooled(tmp_path) == [1]
    assert quarantined(tmp_path) == [SPOOL_FILE]


def test_an_empty_spool_file_is_used_and_marked_with_the_format(tmp_path: Path) -> None:
    (tmp_path / SPOOL_FILE).write_bytes(b"")  # e.g. created, then the process was killed
    outbox = Outbox(tmp_path)
    outbox.put(docs(1))
    outbox.close()
    assert not (tmp_path / "quarantine").exists()
    assert spooled(tmp_path) == [1]
    with contextlib.closing(sqlite3.connect(tmp_path / SPOOL_FILE)) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (1,)


def test_a_spool_that_cannot_be_opened_is_a_config_error_and_frees_the_directory(
        tmp_path: Path) -> None:
    (tmp_path / SPOOL_FILE).mkdir()
    with pytest.raises(ConfigError) as caught:
        Outbox(tmp_path)
    assert str(caught.value) == (f"spool {tmp_path / SPOOL_FILE} cannot be opened: unable to "
                                 "open database file")
    (tmp_path / SPOOL_FILE).rmdir()
    outbox = Outbox(tmp_path)  # the failed attempt let go of the directory's lock
    outbox.close()


def test_spool_directory_errors_say_what_to_do(tmp_path: Path) -> None:
    holder = Outbox(tmp_path)
    with pytest.raises(ConfigError) as caught:
        Outbox(tmp_path)
    assert str(caught.value) == (f"spool directory {tmp_path} is in use by another "
                                 "lag-exporter; give each process its own --spool-dir")
    holder.close()
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ConfigError) as caught:
        Outbox(blocker / "spool")
    assert str(caught.value) == (f"spool directory {blocker / 'spool'} is not writable: "
                                 "Not a directory")


def test_quarantined_files_are_stamped_in_utc_and_never_overwritten(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Etc/GMT-5")  # local time 5 h ahead: the stamp must not be it
    time.tzset()
    try:
        now = time.time()
        stamps = [time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now + d)) for d in (0, 1, 2)]
        quarantine = tmp_path / "quarantine"
        quarantine.mkdir()
        for stamp in stamps:  # earlier quarantines in the seconds this test runs in
            (quarantine / f"{stamp}-{SPOOL_FILE}").write_text("earlier")
            (quarantine / f"{stamp}-1-{SPOOL_FILE}").write_text("earlier")
        (tmp_path / SPOOL_FILE).write_bytes(b"not a database at all" * 100)
        Outbox(tmp_path).close()
    finally:
        monkeypatch.undo()
        time.tzset()
    new = [p.name for p in quarantine.iterdir() if p.read_bytes() != b"earlier"]
    assert new in ([f"{stamp}-2-{SPOOL_FILE}"] for stamp in stamps)


# -- a failing disk, the bounds on disk, the file given back --------------------------------

class CountingConnection(sqlite3.Connection):
    """A real SQLite connection that counts the batches it was asked to write."""

    inserts = 0

    def execute(self, sql: str, *parameters: Any) -> sqlite3.Cursor:
        if sql.startswith("INSERT"):
            CountingConnection.inserts += 1
        return super().execute(sql, *parameters)


def test_the_first_disk_failure_is_logged_at_once_and_retried_only_later(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox_module, "RETRY_FIRST_S", 600.0)
    monkeypatch.setattr(CountingConnection, "inserts", 0)
    outbox = Outbox(tmp_path, memory_max_bytes=2 << 20)
    broken = sqlite3.connect(":memory:", check_same_thread=False,
                             factory=CountingConnection)  # has no spool table
    with outbox._db_lock:
        healthy, outbox._db = outbox._db, broken
    with caplog.at_level(logging.INFO, logger="lag_exporter.outbox"):
        outbox.put(docs(0))
        eventually(lambda: bool(messages_of(caplog)))
        with pytest.raises(AssertionError):  # no second attempt before RETRY_FIRST_S
            eventually(lambda: CountingConnection.inserts > 1, timeout_s=1.0)
        assert drain(outbox) == [0]  # from memory
    assert messages_of(caplog) == [f"cannot write the spool {tmp_path}: no such table: spool; "
                                   "samples wait in memory (at most 2.0 MiB)"]
    assert CountingConnection.inserts == 1
    with outbox._db_lock:
        outbox._db = healthy
    outbox.close()
    broken.close()


def test_the_disk_bound_is_exact_and_logged(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sizes = [size_of(n) for n in range(5)]
    assert len(set(sizes)) == 1
    one = sizes[0]
    with caplog.at_level(logging.WARNING, logger="lag_exporter.outbox"):
        outbox = Outbox(tmp_path, max_bytes=3 * one)  # exactly three fit
        for n in range(3):
            outbox.put(docs(n))
        settle(outbox)
        assert outbox.dropped == 0 and outbox.queued_bytes == 3 * one
        outbox.close()
        smaller = Outbox(tmp_path, max_bytes=3 * one - 1)  # one byte short: one goes
        assert smaller.dropped == 1 and smaller.queued_bytes == 2 * one
        smaller.close()
    assert spooled(tmp_path) == [1, 2]
    assert messages_of(caplog) == ["outbox: dropping the oldest samples (the spool holds 0.0 MiB)"]


def test_a_disk_bound_smaller_than_one_batch_keeps_the_newest(tmp_path: Path) -> None:
    first = Outbox(tmp_path)
    for n in range(10):
        first.put(docs(n))
    first.close()
    second = Outbox(tmp_path, max_bytes=1)
    assert second.dropped == 9
    assert drain(second) == [9]
    second.close()


def test_batches_removed_from_the_file_by_someone_else_are_not_waited_for(
        tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    for n in range(3):
        outbox.put(docs(n))
    settle(outbox)
    outbox.close()
    outbox = Outbox(tmp_path)
    with contextlib.closing(sqlite3.connect(tmp_path / SPOOL_FILE)) as other:
        other.execute("DELETE FROM spool")
        other.commit()
    assert outbox.oldest(wait_s=0) is None  # the disk is trusted over the counts
    assert len(outbox) == 0 and outbox.queued_bytes == 0
    outbox.put(docs(3))
    assert drain(outbox) == [3]
    outbox.close()


def test_unreadable_batches_on_disk_are_each_dropped_and_logged(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    outbox = Outbox(tmp_path)
    for n in range(4):
        outbox.put(docs(n))
    outbox.close()
    with contextlib.closing(sqlite3.connect(tmp_path / SPOOL_FILE)) as db:
        db.execute("UPDATE spool SET body = x'00ff' WHERE sequence IN (1, 2)")
        db.commit()
    restarted = Outbox(tmp_path)
    with caplog.at_level(logging.WARNING, logger="lag_exporter.outbox"):
        first = restarted.oldest(wait_s=0)
        assert first is restarted.oldest(wait_s=0)  # read from disk once while it is sent
        assert first is not None
        restarted.delivered(first)
        assert numbers(restarted.oldest(wait_s=0)) == 3
    assert restarted.dropped == 2
    assert messages_of(caplog) == [
        f"dropping unreadable sample {n} from the spool: Error -3 while decompressing data: "
        "incorrect header check" for n in (1, 2)]
    restarted.close()


def test_the_file_is_given_back_only_above_its_bound(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outbox = Outbox(tmp_path)
    for n in range(20):
        outbox.put([Document(f"r-{n}", {"p0": n, "noise": os.urandom(10_000).hex()})])
    settle(outbox)
    with contextlib.closing(sqlite3.connect(tmp_path / SPOOL_FILE)) as other:
        (file_bytes,) = other.execute(
            "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()"
        ).fetchone()
    inode = (tmp_path / SPOOL_FILE).stat().st_ino
    monkeypatch.setattr(outbox_module, "FILE_KEPT_BYTES", file_bytes)  # exactly at the bound
    assert len(drain(outbox)) == 20
    assert (tmp_path / SPOOL_FILE).stat().st_ino == inode  # kept
    for n in range(20):
        outbox.put([Document(f"r-{n}", {"p0": n, "noise": os.urandom(10_000).hex()})])
    settle(outbox)
    monkeypatch.setattr(outbox_module, "FILE_KEPT_BYTES", file_bytes - 1)
    assert len(drain(outbox)) == 20
    assert (tmp_path / SPOOL_FILE).stat().st_ino != inode  # a new, empty file
    outbox.close()


def test_a_file_that_cannot_be_given_back_leaves_samples_in_memory(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox_module, "FILE_KEPT_BYTES", 0)
    outbox = Outbox(tmp_path)
    outbox.put(docs(0))
    settle(outbox)
    (tmp_path / outbox_module.DISCARDED_FILE / "in-the-way").mkdir(parents=True)
    with caplog.at_level(logging.WARNING, logger="lag_exporter.outbox"):
        assert drain(outbox) == [0]
        outbox.put(docs(1))
        outbox.put(docs(2))
        assert drain(outbox) == [1, 2]
    messages = messages_of(caplog)
    assert len(messages) == 1, messages
    assert messages[0].startswith(f"cannot write the spool {tmp_path}: [Errno 21] Is a directory")
    outbox.close()


def test_previous_format_files_are_imported_within_the_disk_bound(tmp_path: Path) -> None:
    for sequence in (3, 10, 12):
        write_previous_format(tmp_path, sequence, sequence, 100.0 + sequence)
    outbox = Outbox(tmp_path, max_bytes=1, clock=FakeClock(200.0))
    assert outbox.dropped == 2
    assert drain(outbox) == [12]
    outbox.close()


def test_previous_format_values_are_taken_as_the_old_version_wrote_them(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    content = {"created_at": 150, "documents": [{"id": 7, "source": [["p0", 1]]}]}
    (tmp_path / f"{1:020d}.json").write_text(json.dumps(content))
    (tmp_path / f"{2:020d}.tmp").write_text("{half")
    with caplog.at_level(logging.INFO, logger="lag_exporter.outbox"):
        outbox = Outbox(tmp_path, clock=FakeClock(200.0))
        batch = outbox.oldest(wait_s=0)
        outbox.close()
    assert batch is not None
    assert batch.documents == [Document("7", {"p0": 1})]
    assert batch.created_at == 150.0 and isinstance(batch.created_at, float)
    assert messages_of(caplog) == [
        "importing 1 sample file(s) of the previous spool format",
        f"spool {tmp_path}: imported 1 sample(s) of the previous format; moved 1 unreadable or "
        f"temporary file(s) to {tmp_path / 'quarantine'}",
        f"restored 1 undelivered sample(s) (0.0 MiB) from {tmp_path}"]
    caplog.clear()
    (tmp_path / f"{3:020d}.tmp").write_text("{half")  # only a leftover: nothing to import
    with caplog.at_level(logging.INFO, logger="lag_exporter.outbox"):
        Outbox(tmp_path).close()
    assert messages_of(caplog) == [
        f"spool {tmp_path}: imported 0 sample(s) of the previous format; moved 1 unreadable or "
        f"temporary file(s) to {tmp_path / 'quarantine'}",
        f"restored 1 undelivered sample(s) (0.0 MiB) from {tmp_path}"]


def test_a_spool_directory_is_created_with_its_parents(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "state" / "spool")
    outbox.put(docs(1))
    outbox.close()
    assert spooled(tmp_path / "state" / "spool") == [1]


def test_a_failed_import_leaves_the_files_not_imported_in_place(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The import commits in chunks of IMPORT_CHUNK_BYTES: what a failure interrupts stays."""
    sizes = {size_of(n) for n in (1, 2, 3)}
    assert len(sizes) == 1
    monkeypatch.setattr(outbox_module, "IMPORT_CHUNK_BYTES", sizes.pop())  # two per chunk
    for n in (1, 2, 3):
        write_previous_format(tmp_path, n, n, 100.0 + n)
    write_previous_format(tmp_path, 4, 4, float("nan"))  # a time SQLite refuses
    with caplog.at_level(logging.ERROR, logger="lag_exporter.outbox"):
        Outbox(tmp_path, clock=FakeClock(200.0)).close()
    assert messages_of(caplog) == [
        f"could not import the previous spool format from {tmp_path}: NOT NULL constraint "
        "failed: spool.created_at (left there)"]
    assert sorted(p.name for p in tmp_path.glob("*.json")) == [f"{n:020d}.json" for n in (3, 4)]


def test_a_batch_dropped_from_memory_before_it_was_written_is_never_sent(
        tmp_path: Path) -> None:
    one = outbox_module.estimated_size(docs(0))
    outbox = Outbox(tmp_path, memory_max_bytes=2 * one)
    with outbox._db_lock:  # the disk is slow: nothing is written meanwhile
        for n in range(5):
            outbox.put(docs(n))  # the memory bound drops 0, 1 and 2
    settle(outbox)
    assert outbox.dropped == 3
    assert drain(outbox) == [3, 4]
    outbox.close()


def test_a_batch_on_disk_dropped_while_it_was_sent_is_reported_delivered_harmlessly(
        tmp_path: Path) -> None:
    clock = FakeClock()
    outbox = Outbox(tmp_path, max_age_s=60, clock=clock)
    outbox.put(docs(1))
    clock.now += 30
    outbox.put(docs(2))
    settle(outbox)
    first = outbox.oldest(wait_s=0)
    assert first is not None
    clock.now += 31  # the sink was slow: the first is now too old
    assert numbers(outbox.oldest(wait_s=0)) == 2
    outbox.delivered(first)
    assert len(outbox) == 1 and outbox.queued_bytes == size_of(2)
    assert drain(outbox) == [2]
    outbox.close()
    assert spooled(tmp_path) == []


def test_leftovers_that_cannot_be_quarantined_are_left_and_the_outbox_starts(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Found by mutation testing: quarantine/ being a file raised FileExistsError at start."""
    (tmp_path / "quarantine").write_text("not a directory")
    (tmp_path / f"{2:020d}.tmp").write_text("{half")
    with caplog.at_level(logging.ERROR, logger="lag_exporter.outbox"):
        outbox = Outbox(tmp_path)
    outbox.put(docs(1))
    outbox.close()
    assert spooled(tmp_path) == [1]
    assert (tmp_path / f"{2:020d}.tmp").exists()
    assert [m for m in messages_of(caplog) if "quarantine" in m] == [
        f"could not move 1 unreadable or temporary file(s) of {tmp_path} to quarantine/: "
        f"[Errno 17] File exists: '{tmp_path / 'quarantine'}' (left there)"]
