"""CloudWatch: the documents of one sample become metric data (cloudwatch_metrics.py), sent
with PutMetricData in batches within its limits.

boto3 is an optional extra, imported here only. Credentials come from the standard AWS chain.
botocore does not retry: the outbox keeps the sample and the delivery thread retries it with
backoff, in order, without blocking sampling. Throttling, 5xx answers and an endpoint that does
not answer are SinkUnavailable; a request CloudWatch refuses for good (400) has its data
counted as rejected, so that one bad datum never blocks the queue.
"""

from __future__ import annotations

import logging
from typing import Any

from lag_exporter.cloudwatch_metrics import batch_key, batches, metric_data
from lag_exporter.config import CLOUDWATCH_INSTALL, CloudWatchSettings
from lag_exporter.documents import Document
from lag_exporter.errors import ConfigError, SinkError, SinkUnavailable
from lag_exporter.sinks import DeliveryReport

log = logging.getLogger(__name__)

THROTTLED = {"Throttling", "ThrottlingException", "RequestLimitExceeded",
             "TooManyRequestsException", "RequestThrottled", "SlowDown"}
REFUSED_CREDENTIALS = {"AccessDenied", "AccessDeniedException", "UnrecognizedClientException",
                       "InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken",
                       "ExpiredTokenException", "InvalidAccessKeyId", "MissingAuthenticationToken"}


class CloudWatchSink:
    name = "cloudwatch"

    def __init__(self, settings: CloudWatchSettings) -> None:
        try:
            import boto3
            from botocore.config import Config
            from botocore.exceptions import BotoCoreError, NoRegionError
        except ImportError as error:
            raise ConfigError(f"[cloudwatch] needs boto3, which is not installed: "
                              f"{CLOUDWATCH_INSTALL}") from error
        self.settings = settings
        session = boto3.session.Session()
        try:
            self._client: Any = session.client(
                "cloudwatch", region_name=settings.region, endpoint_url=settings.endpoint_url,
                config=Config(connect_timeout=settings.timeout_s, read_timeout=settings.timeout_s,
                              retries={"total_max_attempts": 1, "mode": "standard"}))
        except NoRegionError as error:
            raise ConfigError("[cloudwatch] has no AWS region: set region there, or "
                              "AWS_REGION in the environment") from error
        except BotoCoreError as error:
            raise ConfigError(f"[cloudwatch]: {error}") from error
        self._session = session
        self._done: dict[str, list[str]] = {}
        """Batches of the sample being retried that CloudWatch already answered: the lines of
        what it refused (empty: all taken), so that a retry sends neither again."""

    def check_credentials(self) -> None:
        """Fail at start when the standard chain has no credentials at all (nothing is sent:
        whether they are accepted shows at the first write)."""
        if self._session.get_credentials() is None:
            raise SinkError("CloudWatch: no AWS credentials found in the standard chain "
                            "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE, "
                            "~/.aws/credentials, an instance or task role)")

    def write(self, documents: list[Document]) -> DeliveryReport:
        data, rejected = metric_data(documents, self.settings.dimensions)
        stored = 0
        for batch in batches(data):
            key = batch_key(batch)
            if key not in self._done:
                self._done[key] = self._put(batch)
            refused = self._done[key]
            rejected += refused
            stored += 0 if refused else len(batch)
        self._done.clear()  # the whole sample is in: the next one starts afresh
        return DeliveryReport(stored=stored, rejected=tuple(rejected))

    def _put(self, batch: list[dict[str, Any]]) -> list[str]:
        """One PutMetricData; a line if CloudWatch refused it for good (none: all taken)."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        try:
            self._client.put_metric_data(Namespace=self.settings.namespace, MetricData=batch)
        except ClientError as error:  # one line per refused request, not per datum
            return [f"{self._classify(error)} ({len(batch)} metric data left out)"]
        except NoCredentialsError as error:
            raise SinkError("CloudWatch: no AWS credentials found in the standard chain"
                            ) from error
        except BotoCoreError as error:  # connection refused or reset, timeouts
            raise SinkUnavailable(f"CloudWatch unreachable: {type(error).__name__}: "
                                  f"{error}") from error
        return []

    def _classify(self, error: Any) -> str:
        """Raise for what waiting may cure; return the line for data refused for good."""
        details = error.response.get("Error", {})
        code = str(details.get("Code", ""))
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        line = f"CloudWatch PutMetricData: {status} {code}: {details.get('Message', '')}"
        if code in THROTTLED or status == 429 or status >= 500:
            raise SinkUnavailable(line) from error
        if code in REFUSED_CREDENTIALS or status in (401, 403):
            raise SinkError(line) from error
        return line

    def close(self) -> None:
        self._client.close()
