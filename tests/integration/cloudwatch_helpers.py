"""CloudWatch for the tests: moto's standalone server (the stack's `cloudwatch` component), the
environment an exporter needs to reach it, and the metrics read back with GetMetricData."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from stack.stackctl import Stack

REGION = "us-east-1"
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION}
"""moto takes any credentials; the exporter finds these in the standard chain (environment)."""
EXPORTER_ENV = {**AWS_ENV, "AWS_CONFIG_FILE": "/dev/null",
                "AWS_SHARED_CREDENTIALS_FILE": "/dev/null", "AWS_EC2_METADATA_DISABLED": "true"}


class CloudWatchServer:
    """The stack's `cloudwatch` component (moto's standalone server); a test may stop it."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.endpoint = stack.cloudwatch_endpoint

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=2):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        self.stack.stop("cloudwatch")

    def start(self) -> None:
        self.stack.start("cloudwatch")

    def client(self) -> Any:
        return boto3.client("cloudwatch", endpoint_url=self.endpoint, region_name=REGION,
                            aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture(name="cloudwatch")
def cloudwatch_fixture(stack: Stack) -> Iterator[CloudWatchServer]:
    """The moto server, running again after the test even if the test stopped it."""
    server = CloudWatchServer(stack)
    if not server.answers():
        server.start()
    yield server
    if not server.answers():
        server.start()


def series(client: Any, namespace: str, name: str, dimensions: Mapping[str, str],
           stat: str = "Maximum", minutes: int = 10) -> dict[float, float]:
    """One metric's data points of the last minutes, per second: Unix second -> value."""
    now = datetime.now(UTC)
    answer = client.get_metric_data(
        MetricDataQueries=[{"Id": "m", "MetricStat": {
            "Metric": {"Namespace": namespace, "MetricName": name,
                       "Dimensions": [{"Name": k, "Value": v} for k, v in dimensions.items()]},
            "Period": 1, "Stat": stat}}],
        StartTime=now - timedelta(minutes=minutes), EndTime=now + timedelta(minutes=1))
    result = answer["MetricDataResults"][0]
    return {stamp.timestamp(): value
            for stamp, value in zip(result["Timestamps"], result["Values"], strict=True)}


def cloudwatch_config(path: Path, *, bootstrap: str, group: str, namespace: str,
                      endpoint: str, es_url: str | None = None, index: str | None = None,
                      extra: str = "") -> Path:
    """A config file with one cluster `dc1`, [cloudwatch] and, with es_url, [elasticsearch]."""
    elasticsearch = (f'[elasticsearch]\nurls = ["{es_url}"]\nindex = "{index}"\n\n'
                     if es_url else "")
    path.write_text(
        f'interval = 1\ntimeout = 3\nspool_dir = "spool"\n\n{elasticsearch}'
        f'[cloudwatch]\nnamespace = "{namespace}"\nregion = "{REGION}"\n'
        f'endpoint_url = "{endpoint}"\ndimensions = {{ Environment = "test" }}\n{extra}\n'
        f'[[cluster]]\nname = "dc1"\nbootstrap_servers = "{bootstrap}"\n'
        f'groups = ["{group}"]\n')
    return path
