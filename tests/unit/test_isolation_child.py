"""The Kafka client process is one lean interpreter that dies with the exporter (no Kafka needed).

An exporter-like parent (the CLI imported, as under `lag-exporter watch`) starts an
IsolatedKafkaSource against a port that accepts connections and never answers, sends it a
request, and is then SIGKILLed while the child is still inside that request.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]
PASSWORD = "s3cret-for-the-pipe-only"

PARENT = f"""
import os, sys, time
import lag_exporter.cli  # the exporter's process: click and the sinks' modules are loaded
from lag_exporter.isolation import IsolatedKafkaSource

if __name__ == "__main__":
    # Read by an interpreter only when it starts: this one has, so only its children report.
    os.environ["PYTHONPROFILEIMPORTTIME"] = "1"
    settings = {{"bootstrap.servers": "127.0.0.1:" + sys.argv[1],
                 "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
                 "sasl.username": "lag", "sasl.password": "{PASSWORD}"}}
    source = IsolatedKafkaSource("c", settings, 60.0)
    source._child().send(("list_groups", ()))  # waits the whole 60 s for a silent broker
    print(source._process.pid, flush=True)
    time.sleep(120)
"""


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.05)


def children_of(pid: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(child) for child in (task / "children").read_text().split()]
    return children


def has_exited(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"  # dead, not yet reaped by whoever adopted it


def test_the_child_is_lean_keeps_secrets_off_argv_and_dies_with_a_killed_parent(
    tmp_path: Path,
) -> None:
    silent = socket.socket()  # accepts connections, never answers: requests stay in flight
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    script = tmp_path / "exporter.py"  # a file, like the installed `lag-exporter` script
    script.write_text(PARENT)
    with subprocess.Popen(
        [sys.executable, str(script), str(silent.getsockname()[1])], cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPOSITORY)},
    ) as parent, silent:
        try:
            assert parent.stdout is not None and parent.stderr is not None
            child = int(parent.stdout.readline())
            silent.settimeout(30)
            connection, _ = silent.accept()  # the child has imported librdkafka, made a client
            # One child, a plain interpreter: no multiprocessing resource tracker beside it.
            assert children_of(parent.pid) == [child]
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            assert b"lag_exporter.kafka_child" in argv, argv
            assert PASSWORD.encode() not in Path(f"/proc/{child}/cmdline").read_bytes()
            assert PASSWORD.encode() not in Path(f"/proc/{child}/environ").read_bytes()

            os.kill(parent.pid, signal.SIGKILL)
            parent.wait(10)
            # Well before its request's 60 s timeout, and with no one left to close it.
            wait_until(lambda: has_exited(child), 5, "exit of the orphaned Kafka client process")
            connection.close()
            imported = {line.rsplit("|", 1)[1].strip() for line in parent.stderr
                        if line.startswith("import time:") and "|" in line}
        finally:
            parent.kill()
    assert "confluent_kafka.cimpl" in imported  # the child's imports were recorded
    assert "lag_exporter.kafka_source" in imported
    for heavy in ("click", "rich", "elasticsearch", "lag_exporter.cli"):
        assert heavy not in imported, heavy
