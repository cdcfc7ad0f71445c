"""A process that exits without closing its IsolatedKafkaSource still exits (no Kafka needed)."""

from __future__ import annotations

import subprocess
import sys
import time

# The child ignores SIGTERM and SIGINT: isolation.py's exit handler kills it, and the lifeline
# pipe would end it anyway. (With multiprocessing, whose exit handler joined daemon children after
# a SIGTERM, this script once never ended.)
SCRIPT = """
from lag_exporter.isolation import IsolatedKafkaSource
source = IsolatedKafkaSource("c", {"bootstrap.servers": "127.0.0.1:1"}, 1.0)
assert source._process is not None and source._process.is_alive()  # started at once
source.list_groups()  # answered by the child (an error: nothing listens there), now running
print("child started", flush=True)
"""


def test_exit_without_close_does_not_hang() -> None:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "child started\n"
    assert time.monotonic() - started < 20
