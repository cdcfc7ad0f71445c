"""Fixtures for tests against the real local stack (scripts/stack, stack/stackctl.py).

The `stack` fixture starts whatever is not running and fails (never skips) when it cannot.
It leaves the stack running at the end of the session: scripts and CI tear it down.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from helpers import wait_until_kafka_serves  # noqa: E402

from stack import stackctl  # noqa: E402


@pytest.fixture(scope="session")
def stack() -> stackctl.Stack:
    """Handle with addresses, credentials, run_tool(name, *args), stop(c) and start(c)."""
    try:
        return stackctl.ensure_up()
    except (stackctl.StackError, OSError, subprocess.SubprocessError) as err:
        pytest.fail(f"could not start the local stack (scripts/stack up): {err}", pytrace=False)


@pytest.fixture
def unique_name() -> str:
    """A fresh lowercase name, valid in topic, group and index names."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def restart_elasticsearch(stack: stackctl.Stack) -> Iterator[None]:
    """For tests that stop Elasticsearch: it runs again afterwards, even if the test failed."""
    yield
    stack.start("elasticsearch")


@pytest.fixture
def restart_source(stack: stackctl.Stack) -> Iterator[None]:
    """For tests that stop the source broker: it runs and serves again afterwards."""
    yield
    stack.start("kafka-source")
    wait_until_kafka_serves(stack.source_bootstrap)
