"""The bounded queue between sampling and a sink, optionally spooled to disk.

Sampling only ever calls put(), which never blocks on the sink. A delivery thread sends the oldest
batch, and removes it only once the sink has it, so batches arrive in order and, with the sink's
deterministic ids, exactly once. With a spool directory every batch is also a file until it is
delivered, so a crash or restart during an outage loses at most the sample in flight.

Bounds: at most `max_batches` batches, none older than `max_age_s`. When a bound is hit the
OLDEST batches are dropped (recent lag matters most during an incident); every drop is logged
and counted.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from lag_exporter.documents import Document
from lag_exporter.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Batch:
    sequence: int
    created_at: float
    """Wall-clock seconds (time.time()), so that age survives a restart."""
    documents: list[Document]


class Outbox:
    def __init__(
        self, spool_dir: Path | None = None, max_batches: int = 86_400, max_age_s: float = 86_400.0
    ) -> None:
        self.max_batches = max_batches
        self.max_age_s = max_age_s
        self.dropped = 0
        self._batches: deque[Batch] = deque()
        self._condition = threading.Condition()
        self._next_sequence = 0
        self._spool_dir = spool_dir
        self._lock_file: IO[str] | None = None
        if spool_dir is not None:
            self._open_spool(spool_dir)

    # -- the sampling side -----------------------------------------------------------------

    def put(self, documents: list[Document]) -> None:
        with self._condition:
            batch = Batch(self._next_sequence, time.time(), documents)
            self._next_sequence += 1
            if self._spool_dir is not None:
                self._spool(batch)
            self._batches.append(batch)
            self._enforce_bounds()
            self._condition.notify_all()

    # -- the delivery side -----------------------------------------------------------------

    def oldest(self, wait_s: float) -> Batch | None:
        """The oldest undelivered batch, waiting up to wait_s for one."""
        with self._condition:
            if not self._batches:
                self._condition.wait(wait_s)
            self._enforce_bounds()
            return self._batches[0] if self._batches else None

    def delivered(self, batch: Batch) -> None:
        with self._condition:
            if self._batches and self._batches[0].sequence == batch.sequence:
                self._batches.popleft()
                self._unspool(batch)
            self._condition.notify_all()

    def wait_until_empty(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        with self._condition:
            while self._batches:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._condition.wait(left)
            return True

    @property
    def spool_dir(self) -> Path | None:
        return self._spool_dir

    def __len__(self) -> int:
        with self._condition:
            return len(self._batches)

    def close(self) -> None:
        """Undelivered batches stay in the spool directory for the next start."""
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    # -- bounds ----------------------------------------------------------------------------

    def _enforce_bounds(self) -> None:
        too_old = time.time() - self.max_age_s
        dropped_now = 0
        while self._batches and (
            len(self._batches) > self.max_batches or self._batches[0].created_at < too_old
        ):
            self._unspool(self._batches.popleft())
            dropped_now += 1
        if dropped_now:
            self.dropped += dropped_now
            log.warning("outbox full: dropped the %d oldest undelivered sample(s) (%d in all)",
                        dropped_now, self.dropped)

    # -- the spool -------------------------------------------------------------------------

    def _open_spool(self, spool_dir: Path) -> None:
        try:
            spool_dir.mkdir(parents=True, exist_ok=True)
            self._lock_file = open(spool_dir / ".lock", "w")  # noqa: SIM115 - held while running
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            self.close()
            raise ConfigError(f"spool directory {spool_dir} is in use by another lag-exporter; "
                              "give each process its own --spool-dir") from error
        except OSError as error:
            raise ConfigError(f"spool directory {spool_dir} is not writable: "
                              f"{error.strerror}") from error
        restored = 0
        for path in sorted(spool_dir.glob("*.json")):
            batch = self._read_spooled(path)
            if batch is not None:
                self._batches.append(batch)
                self._next_sequence = batch.sequence + 1
                restored += 1
        if restored:
            log.info("restored %d undelivered sample(s) from %s", restored, spool_dir)

    def _read_spooled(self, path: Path) -> Batch | None:
        try:
            content = json.loads(path.read_text())
            documents = [Document(d["id"], d["source"]) for d in content["documents"]]
            return Batch(int(path.stem), float(content["created_at"]), documents)
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.warning("ignoring unreadable spool file %s: %s", path, error)
            return None

    def _path(self, batch: Batch) -> Path:
        assert self._spool_dir is not None
        return self._spool_dir / f"{batch.sequence:020d}.json"

    def _spool(self, batch: Batch) -> None:
        content = {"created_at": batch.created_at,
                   "documents": [{"id": d.doc_id, "source": d.source} for d in batch.documents]}
        path = self._path(batch)
        partial = path.with_suffix(".tmp")
        try:
            partial.write_text(json.dumps(content, separators=(",", ":")))
            os.replace(partial, path)  # atomic: a crash leaves the old state or the new file
        except OSError as error:
            log.warning("could not spool sample to %s: %s (kept in memory)", path, error.strerror)

    def _unspool(self, batch: Batch) -> None:
        if self._spool_dir is not None:
            self._path(batch).unlink(missing_ok=True)
