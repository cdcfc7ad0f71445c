"""The bounded queue between sampling and a sink, spooled to disk when given a directory.

Sampling only calls put(), which never waits on the sink or the disk: a background thread (the
spooler) encodes each batch (compact JSON, zlib level 1: 925 kB become 350 kB in ~30 ms for 2,000
documents of 20 partitions) and, with a spool directory, writes it to `spool.sqlite3` there.
The delivery thread takes the oldest batch with oldest() and removes it with delivered() once
the sink has it, so batches arrive in order and, with the sink's deterministic ids, once (a
batch sent again after a crash is stored once).

Memory holds only what is about to be sent (the oldest batch, decoded) and the batches not yet
on disk; the others are read from disk when their turn comes. A restart reads the spool's sizes,
not its batches: 0.2 s and 35 MB peak RSS for 2.2 GB (benchmarks/spool_restart.py). Once a big
backlog is delivered the file is replaced by an empty one, so the disk is given back.

Durability: SQLite in WAL mode with synchronous=FULL, one transaction per batch, so a batch is
fsynced once written, normally milliseconds after put(): a crash of the process (out-of-memory
kill) or of the machine loses at most the batches not yet written. Removing a delivered batch is
fsynced too; if that is lost the batch is sent again, which the sink's ids make harmless.

Bounds, in bytes of encoded batches: `max_bytes` on disk (default 1 GiB; the file is a few %
larger, SQLite's pages), `memory_max_bytes` in memory (default 64 MiB: the whole queue without a
spool directory, the batches not yet written with one, e.g. while the disk is full), and
`max_age_s` (a day). When a bound is hit the OLDEST batches are dropped (recent lag matters most
during an incident), counted in `dropped` and logged when dropping starts and when it stops. A
batch larger than a bound on its own is still kept.

A spool that cannot be read is moved to `quarantine/` and an empty one started; so are leftover
temporary files and unreadable batch files of the previous format (one JSON file per batch),
whose readable files are imported in order.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sqlite3
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

import orjson

from lag_exporter.documents import Document
from lag_exporter.errors import ConfigError

log = logging.getLogger(__name__)

SPOOL_FILE = "spool.sqlite3"
DISCARDED_FILE = "spool.sqlite3.discarded"
"""An emptied spool file being removed (left behind if the process stopped meanwhile)."""
QUARANTINE_DIR = "quarantine"
DEFAULT_MAX_BYTES = 1 << 30
DEFAULT_MEMORY_MAX_BYTES = 64 << 20
DEFAULT_MAX_AGE_S = 86_400.0
DROPPING_QUIET_S = 60.0
"""Dropping has stopped (and is logged so) once no batch was dropped for this long."""
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 30.0
"""The spooler retries a failing disk after RETRY_FIRST_S, doubling up to RETRY_MAX_S."""
IMPORT_CHUNK_BYTES = 16 << 20
"""Old-format batches imported per transaction (one fsync each)."""
FILE_KEPT_BYTES = 64 << 20
"""A spool file larger than this is started afresh once the spool is empty."""
FORMAT_VERSION = 1

# The SQL, apart from the logic that uses it.
SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    sequence INTEGER PRIMARY KEY,
    created_at REAL NOT NULL,
    size INTEGER NOT NULL,
    body BLOB NOT NULL
)"""
READ_VERSION = "PRAGMA user_version"
SET_UP = ("PRAGMA journal_mode = WAL", "PRAGMA synchronous = FULL",
          "PRAGMA journal_size_limit = 67108864", SCHEMA, f"PRAGMA user_version = {FORMAT_VERSION}")
"""A committed batch is on disk (WAL, synchronous=FULL); the WAL file is cut back to 64 MiB."""
COUNTS = "SELECT COUNT(*), COALESCE(SUM(size), 0), MAX(sequence) FROM spool"
FRONT = "SELECT sequence, created_at, size FROM spool WHERE sequence > ? ORDER BY sequence"
"""The batches not removed yet, oldest first (? = the sequence removed through)."""
FRONT_ROW = FRONT + " LIMIT 1"
FRONT_BATCH = ("SELECT sequence, created_at, size, body FROM spool WHERE sequence > ? "
               "ORDER BY sequence LIMIT 1")
INSERT = "INSERT INTO spool VALUES (?, ?, ?, ?)"
DELETE_THROUGH = "DELETE FROM spool WHERE sequence <= ?"
ANY_ROW = "SELECT EXISTS (SELECT 1 FROM spool)"
FILE_BYTES = "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()"
READ_ALL = "SELECT sequence, created_at, body FROM spool ORDER BY sequence"


@dataclass(frozen=True)
class Batch:
    sequence: int
    created_at: float
    """Wall-clock seconds (time.time()), so that age survives a restart."""
    documents: list[Document]


@dataclass
class _InMemory:
    """A batch not (yet) on disk: its documents until the spooler encodes it, then its body."""

    sequence: int
    created_at: float
    size: int
    """Of the body, or an estimate until encoded."""
    documents: list[Document] | None
    body: bytes | None = None
    gone: bool = False
    """Delivered or dropped: the spooler skips it."""


def encode(documents: list[Document]) -> bytes:
    """Compact JSON (orjson: a batch at 10,000 partitions is ~1 MB, which the standard
    library's json took ~20 ms of CPU to write), compressed."""
    pairs = [[document.doc_id, document.source] for document in documents]
    return zlib.compress(orjson.dumps(pairs), 1)


def decode(body: bytes) -> list[Document]:
    """Raises ValueError (zlib.error, JSON errors included) on anything but what encode() made."""
    try:
        pairs = orjson.loads(zlib.decompress(body))
    except zlib.error as error:
        raise ValueError(str(error)) from error
    if not isinstance(pairs, list):
        raise ValueError("not a list of documents")
    documents = []
    for pair in pairs:
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)
                and isinstance(pair[1], dict)):
            raise ValueError("not an [id, source] pair")
        documents.append(Document(pair[0], pair[1]))
    return documents


def estimated_size(documents: list[Document]) -> int:
    """Bytes of JSON, roughly (more than encode() makes): put() must not spend time encoding."""
    return sum(64 + 16 * len(document.source) for document in documents)


def read_spool(spool_dir: Path) -> list[Batch]:
    """Every batch in a spool directory, oldest first, without taking it over (for tests and
    inspection; it loads the whole spool into memory)."""
    path = spool_dir / SPOOL_FILE
    if not path.exists():
        return []
    uri = path.resolve().as_uri() + "?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as connection:
        rows = connection.execute(READ_ALL).fetchall()
    return [Batch(sequence, created_at, decode(body)) for sequence, created_at, body in rows]


def _is_corrupt(error: sqlite3.Error) -> bool:
    """A file that cannot be read: SQLITE_CORRUPT and SQLITE_NOTADB (and _connect's unknown
    format) are sqlite3.DatabaseError itself; I/O, lock and full-disk errors are subclasses
    (OperationalError), after which the same file is tried again."""
    return type(error) is sqlite3.DatabaseError


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"


class Outbox:
    def __init__(
        self,
        spool_dir: Path | None = None,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        memory_max_bytes: int = DEFAULT_MEMORY_MAX_BYTES,
        max_age_s: float = DEFAULT_MAX_AGE_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_bytes = max_bytes
        self.memory_max_bytes = memory_max_bytes
        self.max_age_s = max_age_s
        self.dropped = 0
        self._clock = clock
        # Lock order: _db_lock, then _state. No I/O under _state: put() takes only _state.
        self._state = threading.Condition()
        self._db_lock = threading.Lock()
        self._memory: deque[_InMemory] = deque()
        self._memory_bytes = 0
        self._to_encode: deque[_InMemory] = deque()
        """Without a spool: batches behind the oldest, kept encoded to take less memory."""
        self._head: Batch | None = None
        """The oldest batch, decoded, while it is being delivered."""
        self._next_sequence = 0
        self._spool_dir = spool_dir
        self._lock_file: IO[str] | None = None
        self._db: sqlite3.Connection | None = None
        self._disk_count = 0
        self._disk_bytes = 0
        self._disk_front: tuple[int, float, int] | None = None
        """(sequence, created_at, size) of the oldest batch on disk."""
        self._removed_through = -1
        """Batches on disk up to this sequence are delivered or dropped, even if their DELETE
        failed (it is retried with the next one): everything removed from disk is a prefix."""
        self._disk_failing = False
        self._dropping_since: float | None = None
        self._dropped_in_episode = 0
        self._last_drop_at = 0.0
        self._closing = False
        self._stop = threading.Event()
        if spool_dir is not None:
            self._open_spool(spool_dir)
        self._spooler = threading.Thread(target=self._spool_loop, name="outbox-spooler",
                                         daemon=True)
        self._spooler.start()

    # -- the sampling side -----------------------------------------------------------------

    def put(self, documents: list[Document]) -> None:
        """Quick: no encoding, no I/O, never waits on delivery."""
        size = estimated_size(documents)
        with self._state:
            entry = _InMemory(self._next_sequence, self._clock(), size, documents)
            self._next_sequence += 1
            if self._count() == 0:
                self._head = Batch(entry.sequence, entry.created_at, documents)  # sent as is
            elif self._db is None:
                self._to_encode.append(entry)
            self._memory.append(entry)
            self._memory_bytes += size
            self._drop_oldest_in_memory()
            self._maybe_stopped_dropping()
            self._state.notify_all()

    # -- the delivery side -----------------------------------------------------------------

    def oldest(self, wait_s: float) -> Batch | None:
        """The oldest undelivered batch, waiting up to wait_s for one."""
        with self._state:
            if self._count() == 0:
                self._state.wait(wait_s)
            if self._count() == 0:
                return None
        with self._db_lock:
            self._drop_too_old()
            while True:
                with self._state:
                    head, entry = self._head, None
                    if self._disk_count == 0:
                        if not self._memory:
                            return None
                        entry = self._memory[0]
                        if head is not None and head.sequence == entry.sequence:
                            return head
                        documents, body = entry.documents, entry.body
                    elif (head is not None and self._disk_front is not None
                          and head.sequence == self._disk_front[0]):
                        return head
                if entry is None:
                    if self._db is None:
                        return None  # closed
                    loaded = self._load_disk_front()
                    if loaded is False:
                        continue
                    return loaded
                if documents is None:
                    assert body is not None  # encoded by this process: decodes
                    documents = decode(body)
                batch = Batch(entry.sequence, entry.created_at, documents)
                with self._state:
                    self._head = batch
                return batch

    def delivered(self, batch: Batch) -> None:
        with self._db_lock:
            with self._state:
                front = self._disk_front
                on_disk = front is not None and front[0] == batch.sequence
                if (not self._disk_count and self._memory
                        and self._memory[0].sequence == batch.sequence):
                    self._forget(self._memory.popleft())
                    self._state.notify_all()
                # else: dropped while it was being sent
                if self._head is batch:
                    self._head = None
            if on_disk and front is not None:
                self._remove_from_disk(batch.sequence, 1, front[2])

    def wait_until_empty(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        with self._state:
            while self._count():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._state.wait(left)
            return True

    def oldest_created_at(self) -> float | None:
        """Wall-clock time (time.time()) the oldest undelivered batch was queued; None if none."""
        with self._state:
            if self._disk_front is not None:  # None exactly when nothing is on disk
                return self._disk_front[1]
            return self._memory[0].created_at if self._memory else None

    @property
    def queued_bytes(self) -> int:
        """Encoded bytes queued, on disk and in memory (estimated until encoded)."""
        with self._state:
            return self._disk_bytes + self._memory_bytes

    @property
    def spool_dir(self) -> Path | None:
        return self._spool_dir

    def __len__(self) -> int:
        with self._state:
            return self._count()

    def close(self) -> None:
        """Writes what is not on disk yet (one attempt) and releases the spool directory;
        undelivered batches stay there for the next start."""
        with self._state:
            self._closing = True
            self._state.notify_all()
        self._stop.set()
        self._spooler.join(timeout=10.0)
        with self._db_lock:
            if self._db is not None:
                self._db.close()
                self._db = None
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    # -- in memory (under _state) ----------------------------------------------------------

    def _count(self) -> int:
        return self._disk_count + len(self._memory)

    def _forget(self, entry: _InMemory) -> None:
        entry.gone = True
        self._memory_bytes -= entry.size

    def _drop_oldest_in_memory(self) -> None:
        dropped = 0
        while self._memory_bytes > self.memory_max_bytes and len(self._memory) > 1:
            self._forget(self._memory.popleft())
            dropped += 1
        if dropped:
            self._record_drops(dropped, f"more than {_mib(self.memory_max_bytes)} in memory")

    def _record_drops(self, count: int, reason: str) -> None:
        self.dropped += count
        self._last_drop_at = self._clock()
        if self._dropping_since is None:
            self._dropping_since = self._last_drop_at
            self._dropped_in_episode = 0
            log.warning("outbox: dropping the oldest samples (%s)", reason)
        self._dropped_in_episode += count

    def _maybe_stopped_dropping(self) -> None:
        if (self._dropping_since is not None
                and self._clock() - self._last_drop_at >= DROPPING_QUIET_S):
            log.warning("outbox: stopped dropping samples; %d oldest dropped in %.0f s "
                        "(%d in all)", self._dropped_in_episode,
                        self._last_drop_at - self._dropping_since, self.dropped)
            self._dropping_since = None

    # -- the disk (under _db_lock) ---------------------------------------------------------

    def _drop_too_old(self) -> None:
        too_old = self._clock() - self.max_age_s
        with self._state:
            front = self._disk_front
        if front is not None and front[1] < too_old:
            self._drop_disk_front_while(lambda created_at, size: created_at < too_old,
                                        f"older than {self.max_age_s:.0f} s")
        with self._state:
            dropped = 0
            while (not self._disk_count and self._memory
                   and self._memory[0].created_at < too_old):
                self._forget(self._memory.popleft())
                dropped += 1
            if dropped:
                self._record_drops(dropped, f"older than {self.max_age_s:.0f} s")
                self._state.notify_all()

    def _drop_disk_front_while(self, drop: Callable[[float, int], bool], reason: str) -> None:
        """Drops batches from the front of the disk while drop(created_at, size) says so."""
        if self._db is None:
            return
        count, freed, last = 0, 0, None
        try:
            with contextlib.closing(self._db.execute(FRONT, (self._removed_through,))) as rows:
                for sequence, created_at, size in rows:
                    if not drop(created_at, size):
                        break
                    count, freed, last = count + 1, freed + size, sequence
        except sqlite3.Error as error:
            self._disk_failed(error)
            return
        if last is not None:
            with self._state:
                self._record_drops(count, reason)
            self._remove_from_disk(last, count, freed)

    def _remove_from_disk(self, through: int, count: int, size: int) -> None:
        """Delivered or dropped: the first `count` batches on disk, `size` bytes in all."""
        if self._db is None:
            return
        with self._state:
            self._removed_through = through
            self._disk_count -= count
            self._disk_bytes -= size
            if self._head is not None and self._head.sequence <= through:
                self._head = None  # the front is read again, after the watermark
            self._state.notify_all()
        try:
            self._db.execute(DELETE_THROUGH, (through,))
            self._db.commit()
            if self._disk_count == 0:
                self._give_back_free_pages()
        except (sqlite3.Error, OSError) as error:
            if self._db is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._db.rollback()
            self._disk_failed(error)  # the next removal deletes these too
        self._refresh_disk_front()

    def _give_back_free_pages(self) -> None:
        """After a backlog is delivered, the file would keep its peak size: start an empty one.
        Not VACUUM or incremental_vacuum (21 s for 2.2 GB), and the old file is removed in the
        background (unlinking 2 GB takes a second)."""
        assert self._db is not None
        assert self._spool_dir is not None
        if self._db.execute(FILE_BYTES).fetchone()[0] <= FILE_KEPT_BYTES:
            return
        if self._db.execute(ANY_ROW).fetchone() != (0,):
            return  # rows the counts missed: keep them
        self._db.close()  # checkpoints and removes -wal and -shm
        self._db = None
        discarded = self._spool_dir / DISCARDED_FILE
        os.replace(self._spool_dir / SPOOL_FILE, discarded)
        self._connect(self._spool_dir / SPOOL_FILE)
        threading.Thread(target=discarded.unlink, kwargs={"missing_ok": True},
                         name="outbox-discard", daemon=True).start()

    def _refresh_disk_front(self) -> None:
        if self._db is None:
            return
        row = None
        if self._disk_count:
            try:
                row = self._db.execute(FRONT_ROW, (self._removed_through,)).fetchone()
            except sqlite3.Error as error:
                self._disk_failed(error)
                return
        with self._state:
            self._disk_front = row

    def _load_disk_front(self) -> Batch | Literal[False] | None:
        """The oldest batch on disk, decoded; False if it was unreadable (and dropped)."""
        if self._db is None:
            return None
        try:
            row = self._db.execute(FRONT_BATCH, (self._removed_through,)).fetchone()
        except sqlite3.Error as error:
            self._disk_failed(error)
            return None
        with self._state:
            if row is None:  # the count was wrong: trust the disk
                self._disk_count, self._disk_bytes, self._disk_front = 0, 0, None
                return False
            sequence, created_at, size, body = row
            self._disk_front = (sequence, created_at, size)
        try:
            documents = decode(body)
        except ValueError as error:
            log.error("dropping unreadable sample %d from the spool: %s", sequence, error)
            with self._state:
                self.dropped += 1
            self._remove_from_disk(sequence, 1, size)
            return False
        batch = Batch(sequence, created_at, documents)
        with self._state:
            self._head = batch
        return batch

    def _disk_failed(self, error: sqlite3.Error | OSError) -> None:
        if isinstance(error, sqlite3.Error) and _is_corrupt(error):
            self._quarantine_database(str(error))
            return
        if not self._disk_failing:
            log.error("cannot write the spool %s: %s; samples wait in memory (at most %s)",
                      self._spool_dir, error, _mib(self.memory_max_bytes))
        self._disk_failing = True

    def _disk_recovered(self) -> None:
        if self._disk_failing:
            log.warning("spool %s written again", self._spool_dir)
            self._disk_failing = False

    # -- the spooler thread ----------------------------------------------------------------

    def _spool_loop(self) -> None:
        retry_s = RETRY_FIRST_S
        while True:
            with self._state:
                while (entry := self._next_to_spool()) is None:
                    if self._closing:
                        return
                    self._state.wait()
            try:
                written = self._spool(entry)
            except Exception:  # a bug: log it, keep spooling
                log.exception("outbox spooler: unexpected error")
                written = False
            if written:
                retry_s = RETRY_FIRST_S
                continue
            if self._stop.wait(retry_s):
                return  # closing: what is not written is lost, as with a crash
            retry_s = min(retry_s * 2, RETRY_MAX_S)

    def _spool(self, entry: _InMemory) -> bool:
        """Encodes the batch, and writes it with a spool; False if the disk failed."""
        if entry.body is None:
            assert entry.documents is not None
            try:
                body = encode(entry.documents)
            except (TypeError, ValueError) as error:  # not JSON: cannot be sent either
                log.error("dropping sample %d: cannot encode it: %s", entry.sequence, error)
                with self._state:
                    if not entry.gone:
                        self._memory.remove(entry)
                        self._forget(entry)
                        self.dropped += 1
                        self._state.notify_all()
                return True
            with self._state:
                if not entry.gone:
                    self._memory_bytes += len(body) - entry.size
                    entry.size, entry.body = len(body), body
                    entry.documents = None  # the oldest batch's stay in _head
                    self._drop_oldest_in_memory()  # in case it grew
                self._state.notify_all()
        return self._db is None or self._write(entry)

    def _next_to_spool(self) -> _InMemory | None:
        if self._db is not None:
            return self._memory[0] if self._memory else None
        while self._to_encode and not self._closing:
            entry = self._to_encode.popleft()
            if not entry.gone:
                return entry
        return None

    def _write(self, entry: _InMemory) -> bool:
        """Moves the oldest batch in memory to disk; False if the disk failed."""
        with self._db_lock:
            if self._db is None or entry.gone:
                return True
            assert entry.body is not None  # encoded before it was gone
            size = len(entry.body)
            try:
                self._make_room(size)
                self._db.execute(INSERT,
                                 (entry.sequence, entry.created_at, size, entry.body))
                self._db.commit()
            except sqlite3.Error as error:
                with contextlib.suppress(sqlite3.Error):
                    self._db.rollback()
                self._disk_failed(error)
                return self._db is None
            self._disk_recovered()
            with self._state:
                # Dropped from memory meanwhile (the memory bound): it is on disk now, keep it.
                if not entry.gone:
                    assert self._memory[0] is entry
                    self._forget(self._memory.popleft())
                self._disk_count += 1
                self._disk_bytes += size
                if self._disk_front is None:
                    self._disk_front = (entry.sequence, entry.created_at, size)
                self._state.notify_all()
            return True

    def _make_room(self, size: int) -> None:
        """Drops the oldest batches on disk so that `size` more bytes fit in max_bytes (size 0:
        at the open, where the newest batch is kept even if larger than the bound alone)."""
        excess = self._disk_bytes + size - self.max_bytes
        if excess <= 0:
            return
        droppable = self._disk_count - (1 if size == 0 else 0)
        freed, count = 0, 0

        def too_much(created_at: float, row_size: int) -> bool:
            nonlocal freed, count
            if freed >= excess or count == droppable:
                return False
            freed, count = freed + row_size, count + 1
            return True

        self._drop_disk_front_while(too_much, f"the spool holds {_mib(self.max_bytes)}")

    # -- opening the spool -----------------------------------------------------------------

    def _open_spool(self, spool_dir: Path) -> None:
        try:
            spool_dir.mkdir(parents=True, exist_ok=True)
            self._lock_file = open(spool_dir / ".lock", "w")  # noqa: SIM115 - held while running
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            assert self._lock_file is not None
            self._lock_file.close()
            raise ConfigError(f"spool directory {spool_dir} is in use by another lag-exporter; "
                              "give each process its own --spool-dir") from error
        except OSError as error:
            raise ConfigError(f"spool directory {spool_dir} is not writable: "
                              f"{error.strerror}") from error
        (spool_dir / DISCARDED_FILE).unlink(missing_ok=True)
        try:
            self._connect(spool_dir / SPOOL_FILE)
        except sqlite3.Error as error:
            if not _is_corrupt(error):
                self._lock_file.close()
                raise ConfigError(f"spool {spool_dir / SPOOL_FILE} cannot be opened: "
                                  f"{error}") from error
            self._quarantine_database(str(error))
        self._import_previous_format(spool_dir)
        with self._db_lock:
            if self._db is not None:
                self._make_room(0)
        if self._disk_count:
            log.info("restored %d undelivered sample(s) (%s) from %s", self._disk_count,
                     _mib(self._disk_bytes), spool_dir)

    def _connect(self, path: Path) -> None:
        """Opens (or creates) the spool database and reads its counts, not its batches."""
        fresh = not path.exists() or path.stat().st_size == 0
        db = sqlite3.connect(path, check_same_thread=False)  # BEGIN DEFERRED ... commit()
        try:
            version = db.execute(READ_VERSION).fetchone()[0]
            if not fresh and version != FORMAT_VERSION:
                raise sqlite3.DatabaseError(f"unknown spool format {version}")
            for statement in SET_UP:
                db.execute(statement)
            db.commit()
            count, total, last = db.execute(COUNTS).fetchone()
        except BaseException:
            db.close()
            raise
        with self._state:
            self._disk_count, self._disk_bytes = count, total
            self._next_sequence = max(self._next_sequence, 0 if last is None else last + 1)
        self._db = db
        self._refresh_disk_front()

    def _quarantine_database(self, reason: str) -> None:
        """The spool cannot be read: keep it for a post-mortem, start an empty one. Without a
        database (when that fails) the batches wait in memory until the process stops."""
        assert self._spool_dir is not None
        if self._db is not None:
            self._db.close()  # sqlite3_close_v2: never fails
        self._db = None
        try:
            self._quarantine([self._spool_dir / (SPOOL_FILE + suffix)
                              for suffix in ("", "-wal", "-shm")])
        except OSError as error:
            log.error("spool database %s is unreadable (%s) and cannot be moved away (%s); "
                      "samples wait in memory (at most %s)", self._spool_dir / SPOOL_FILE,
                      reason, error.strerror, _mib(self.memory_max_bytes))
            return
        with self._state:
            self.dropped += self._disk_count
            self._disk_count, self._disk_bytes, self._disk_front = 0, 0, None
        log.error("spool database %s is unreadable (%s): moved to %s; starting an empty spool",
                  self._spool_dir / SPOOL_FILE, reason, self._spool_dir / QUARANTINE_DIR)
        try:
            self._connect(self._spool_dir / SPOOL_FILE)
        except (sqlite3.Error, OSError) as error:
            log.error("cannot create the spool %s: %s; samples wait in memory (at most %s)",
                      self._spool_dir / SPOOL_FILE, error, _mib(self.memory_max_bytes))

    def _quarantine(self, paths: list[Path]) -> list[Path]:
        assert self._spool_dir is not None
        quarantine = self._spool_dir / QUARANTINE_DIR
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        moved = []
        for path in paths:
            if not path.exists():
                continue
            quarantine.mkdir(exist_ok=True)
            target = quarantine / f"{stamp}-{path.name}"
            n = 1
            while target.exists():
                target = quarantine / f"{stamp}-{n}-{path.name}"
                n += 1
            os.replace(path, target)
            moved.append(target)
        return moved

    def _import_previous_format(self, spool_dir: Path) -> None:
        """One JSON file per batch (`<sequence>.json`, written via `.tmp`): imported in order,
        then deleted; unreadable ones and temporary files go to quarantine/."""
        files = sorted(spool_dir.glob("*.json"))
        leftovers = sorted(spool_dir.glob("*.tmp"))
        if not files and not leftovers:
            return
        if files:
            log.info("importing %d sample file(s) of the previous spool format", len(files))
        unreadable = list(leftovers)
        imported = 0
        try:
            chunk: list[Path] = []
            rows: list[tuple[float, bytes]] = []
            chunk_bytes = 0
            for n, path in enumerate(files):
                row = self._read_previous_format(path)
                if row is None:
                    unreadable.append(path)
                else:
                    chunk.append(path)
                    rows.append(row)
                    chunk_bytes += len(row[1])
                if n == len(files) - 1 or chunk_bytes > IMPORT_CHUNK_BYTES:
                    if self._db is not None:
                        self._import_rows(rows)
                        imported += len(rows)
                        for imported_path in chunk:
                            imported_path.unlink()
                    chunk, rows, chunk_bytes = [], [], 0
        except (sqlite3.Error, OSError) as error:
            log.error("could not import the previous spool format from %s: %s (left there)",
                      spool_dir, error)
        try:
            moved = self._quarantine(unreadable)
        except OSError as error:  # e.g. quarantine/ is a file: start anyway, leave them there
            log.error("could not move %d unreadable or temporary file(s) of %s to %s/: %s "
                      "(left there)", len(unreadable), spool_dir, QUARANTINE_DIR, error)
            moved = []
        with contextlib.suppress(OSError):
            directory = os.open(spool_dir, os.O_RDONLY)
            try:
                os.fsync(directory)  # the moves and deletes
            finally:
                os.close(directory)
        log.warning("spool %s: imported %d sample(s) of the previous format; moved %d "
                    "unreadable or temporary file(s) to %s", spool_dir, imported, len(moved),
                    spool_dir / QUARANTINE_DIR)

    def _read_previous_format(self, path: Path) -> tuple[float, bytes] | None:
        try:
            content = json.loads(path.read_text())
            documents = [Document(str(d["id"]), dict(d["source"])) for d in content["documents"]]
            return float(content["created_at"]), encode(documents)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _import_rows(self, rows: list[tuple[float, bytes]]) -> None:
        assert self._db is not None
        with self._db_lock:
            for created_at, body in rows:
                self._make_room(len(body))
                self._db.execute(INSERT,
                                 (self._next_sequence, created_at, len(body), body))
                with self._state:
                    if self._disk_front is None:
                        self._disk_front = (self._next_sequence, created_at, len(body))
                    self._next_sequence += 1
                    self._disk_count += 1
                    self._disk_bytes += len(body)
            self._db.commit()

