"""Restart on a big spool: the outbox's open time, peak RSS and drain rate (issue 10, item 12).

    .venv/bin/python benchmarks/spool_restart.py [--gigabytes 2.2] [--dir DIR] [--drain 2000]

1. Builds a spool of at least --gigabytes GB on disk (spool.sqlite3) in --dir (default
   /tmp/lag-exporter-spool-bench, deleted at the end unless --keep): batches shaped like scale
   c of BENCHMARKS.md, one per second of an Elasticsearch outage: 2,000 topic documents
   (100 groups x 20 topics) of 20 partitions each, as `topic_document` makes them, with distinct
   timestamps and ids per batch. Rows are encoded here and inserted directly (no fsync per row),
   which is what the outbox would have written second by second.
2. Evicts the spool from the page cache (posix_fadvise DONTNEED on its files only: nobody
   else's cache), so the restart reads it from disk.
3. In a FRESH process (as after an out-of-memory kill) opens the Outbox on it, timing the open
   and the process from start to ready, drains --drain batches (0: all) checking that they come
   in order (sequence, `@timestamp`, document count), and reports its peak RSS: VmHWM of
   /proc/self/status. Not ru_maxrss: Linux carries the pre-exec high-water mark over execve,
   and subprocess's vfork makes that the parent's (~120 MB of build tables here).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import time
import zlib
from datetime import UTC, datetime
from pathlib import Path

from lag_exporter.documents import format_timestamp, topic_document
from lag_exporter.model import PartitionLag
from lag_exporter.outbox import SPOOL_FILE, Outbox

GROUPS, TOPICS_PER_GROUP, PARTITIONS = 100, 20, 20
CLUSTER = "dc1"
LAG_TABLES = 16
"""Distinct sets of lag values, used in turn: random lags compress like real ones."""


def timestamp(created_at: float) -> str:
    return format_timestamp(datetime.fromtimestamp(created_at, UTC))


def names() -> list[tuple[str, str]]:
    return [(f"bench-group-{g:03d}", f"bench.topic-{g:03d}-{t:02d}")
            for g in range(GROUPS) for t in range(TOPICS_PER_GROUP)]


def lag_sources(rng: random.Random) -> list[list[str]]:
    """For each lag table, each document's JSON after its timestamp, as json.dumps writes it."""
    tables = []
    for _ in range(LAG_TABLES):
        tails = []
        for group, topic in names():
            lags = [PartitionLag(topic, p, 0, 0, rng.randint(0, 5_000_000))
                    for p in range(PARTITIONS)]
            source = topic_document("", CLUSTER, group, topic, lags).source
            del source["@timestamp"]
            tails.append(json.dumps(source, separators=(",", ":"))[1:])
        tables.append(tails)
    return tables


def body(created_at: float, tails: list[str]) -> bytes:
    """encode() of the batch's documents, built from pre-rendered parts (10x faster)."""
    stamp = timestamp(created_at)
    parts = []
    for (group, topic), tail in zip(names(), tails, strict=True):
        doc_id = hashlib.sha256("\x1f".join((CLUSTER, group, topic, stamp)).encode()).hexdigest()
        parts.append(f'["{doc_id[:40]}",{{"@timestamp":"{stamp}",{tail}]')
    return zlib.compress(("[" + ",".join(parts) + "]").encode(), 1)


def build(spool_dir: Path, gigabytes: float) -> tuple[int, float, int, int]:
    """Returns (batches, seconds, bytes on disk, bytes of JSON in a batch)."""
    started = time.monotonic()
    Outbox(spool_dir).close()  # the schema and pragmas, as the exporter makes them
    tables = lag_sources(random.Random(10))
    first = time.time() - 3 * 86_400 / 4  # well within a day: nothing ages out while draining
    check = topic_document(timestamp(first), CLUSTER, names()[0][0], names()[0][1],
                           [PartitionLag(names()[0][1], 0, 0, 0, 0)])
    json_size = len(zlib.decompress(body(first, tables[0])))
    assert json.loads(zlib.decompress(body(first, tables[0])))[0][0] == check.doc_id
    db = sqlite3.connect(spool_dir / SPOOL_FILE)
    db.execute("PRAGMA synchronous = OFF")
    target, total, sequence = gigabytes * 1e9, 0, 0
    while (spool_dir / SPOOL_FILE).stat().st_size < target:
        rows = []
        for _ in range(200):
            created_at = first + sequence
            encoded = body(created_at, tables[sequence % LAG_TABLES])
            rows.append((sequence, created_at, len(encoded), encoded))
            total += len(encoded)
            sequence += 1
        db.executemany("INSERT INTO spool VALUES (?, ?, ?, ?)", rows)
        db.commit()
        print(f"\r  {sequence} batches, {total / 1e9:.2f} GB", end="", file=sys.stderr,
              flush=True)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    print(file=sys.stderr)
    return (sequence, time.monotonic() - started, (spool_dir / SPOOL_FILE).stat().st_size,
            json_size)


def evict_from_page_cache(spool_dir: Path) -> None:
    for path in spool_dir.glob(SPOOL_FILE + "*"):
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)  # only clean pages can be dropped
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(descriptor)


def peak_rss_mb() -> float:
    """This process's own peak resident set (VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def child(spool_dir: Path, drain: int, spawned_at: float, max_bytes: int) -> None:
    """The fresh process: open, drain, check the order, report as one JSON line."""
    opening = time.monotonic()
    outbox = Outbox(spool_dir, max_bytes=max_bytes)
    opened = time.monotonic() - opening
    ready_s = time.time() - spawned_at  # interpreter start, imports and open
    queued, queued_bytes = len(outbox), outbox.queued_bytes
    rss_open = peak_rss_mb()
    to_drain = queued if drain == 0 else min(drain, queued)
    expected_sequence, draining = None, time.monotonic()
    first_batch_s, slowest_delivered_s, last_delivered_s = None, 0.0, 0.0
    for _ in range(to_drain):
        batch = outbox.oldest(wait_s=0)
        if first_batch_s is None:
            first_batch_s = time.monotonic() - opening
        assert batch is not None
        assert expected_sequence is None or batch.sequence == expected_sequence, batch.sequence
        assert len(batch.documents) == GROUPS * TOPICS_PER_GROUP
        assert batch.documents[0].source["@timestamp"] == timestamp(batch.created_at)
        assert batch.documents[-1].source["@timestamp"] == timestamp(batch.created_at)
        expected_sequence = batch.sequence + 1
        delivering = time.monotonic()
        outbox.delivered(batch)
        last_delivered_s = time.monotonic() - delivering
        slowest_delivered_s = max(slowest_delivered_s, last_delivered_s)
    drained_s = time.monotonic() - draining
    left = len(outbox)
    closing = time.monotonic()
    outbox.close()
    close_s = time.monotonic() - closing
    print(json.dumps({
        "open_s": opened, "ready_s": ready_s, "first_batch_s": first_batch_s, "queued": queued,
        "dropped": outbox.dropped,
        "queued_bytes": queued_bytes, "drained": to_drain, "drain_s": drained_s, "left": left,
        "slowest_delivered_s": slowest_delivered_s, "last_delivered_s": last_delivered_s,
        "close_s": close_s,
        "rss_after_open_mb": rss_open, "peak_rss_mb": peak_rss_mb()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/lag-exporter-spool-bench"))
    parser.add_argument("--gigabytes", type=float, default=2.2)
    parser.add_argument("--drain", type=int, default=2000, help="batches to drain; 0: all")
    parser.add_argument("--keep", action="store_true", help="keep the spool afterwards")
    parser.add_argument("--max-bytes", type=int, default=1 << 40,
                        help="the restarted outbox's bound (default 1 TiB: keep everything; "
                        "smaller: measure dropping the excess at the open)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--spawned-at", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.dir, args.drain, args.spawned_at, args.max_bytes)
        return
    free = shutil.disk_usage(args.dir.parent).free
    if free < 2 * args.gigabytes * 1e9:
        sys.exit(f"spool_restart: {args.dir.parent} has {free / 1e9:.1f} GB free; "
                 f"{2 * args.gigabytes:.1f} GB needed")
    shutil.rmtree(args.dir, ignore_errors=True)
    try:
        print(f"building a {args.gigabytes} GB spool in {args.dir} ...", file=sys.stderr)
        batches, build_s, size, json_size = build(args.dir, args.gigabytes)
        print(f"built {batches} batches ({size / 1e9:.2f} GB on disk, "
              f"{size / batches / 1e3:.0f} kB per batch of {GROUPS * TOPICS_PER_GROUP} "
              f"documents, {json_size / 1e3:.0f} kB of JSON) in {build_s:.0f} s")
        evict_from_page_cache(args.dir)
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, __file__, "--child", "--dir", str(args.dir), "--drain",
             str(args.drain), "--spawned-at", str(time.time()), "--max-bytes", str(args.max_bytes)],
            capture_output=True, text=True, check=False)
        process_s = time.monotonic() - started
        if result.returncode != 0:
            sys.exit(f"spool_restart: the restarted process failed:\n{result.stderr}")
        numbers = json.loads(result.stdout)
        print(f"restart: Outbox open {numbers['open_s']:.2f} s, process ready "
              f"{numbers['ready_s']:.2f} s after spawn; first batch "
              f"{numbers['first_batch_s']:.2f} s after the open started; "
              f"{numbers['queued']} batches ({numbers['queued_bytes'] / 1e9:.2f} GB) queued, "
              f"{numbers['dropped']} dropped at the open")
        print(f"RSS: {numbers['rss_after_open_mb']:.0f} MB after the open, peak "
              f"{numbers['peak_rss_mb']:.0f} MB (VmHWM of the restarted process)")
        print(f"drain: {numbers['drained']} batches in order in {numbers['drain_s']:.1f} s "
              f"({numbers['drained'] / numbers['drain_s']:.0f} batches/s, "
              f"{numbers['drained'] * GROUPS * TOPICS_PER_GROUP / numbers['drain_s']:.0f} "
              f"documents/s); {numbers['left']} left; whole process {process_s:.1f} s")
        print(f"removing a delivered batch: slowest {numbers['slowest_delivered_s'] * 1000:.0f} ms,"
              f" the last one (the file given back) {numbers['last_delivered_s'] * 1000:.0f} ms; "
              f"close {numbers['close_s'] * 1000:.0f} ms")
        print("reproduce: .venv/bin/python benchmarks/spool_restart.py "
              f"--gigabytes {args.gigabytes} --drain {args.drain} --max-bytes {args.max_bytes}")
    finally:
        if not args.keep:
            shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
