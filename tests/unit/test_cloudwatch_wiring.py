"""The wiring of several sinks (app.py) and the CloudWatch sink's decisions that need no server:
which answers are retried, what the sink is given of each sample, where each sink spools."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from lag_exporter.app import (
    CloudWatchDocuments,
    delivery_state,
    make_pipelines,
    oldest_undelivered,
)
from lag_exporter.config import CloudWatchSettings, ElasticsearchSettings, ExporterConfig
from lag_exporter.documents import Document
from lag_exporter.errors import SinkError, SinkUnavailable
from lag_exporter.fleet import Fleet
from lag_exporter.model import GroupLag, PartitionLag, Sample
from lag_exporter.outbox import Outbox
from lag_exporter.service import Pipeline, SampleDocuments, Watch
from lag_exporter.sinks.cloudwatch import CloudWatchSink
from lag_exporter.sinks.stdout import StdoutSink

START = datetime(2026, 3, 1, 12, 0, 0, 300000, tzinfo=UTC)
NOWHERE = "http://127.0.0.1:9"
"""Nothing listens there: connections are refused at once."""


@pytest.fixture
def aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials in the environment only (the standard chain's first step); no AWS files and
    no instance metadata lookups from the test machine."""
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
                        "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def client_error(code: str, status: int) -> ClientError:
    """botocore's own exception, as it raises it for an error answer."""
    response: Any = {"Error": {"Code": code, "Message": "said the server"},
                     "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, "PutMetricData")


@pytest.mark.parametrize(("code", "status"), [("Throttling", 400), ("ThrottlingException", 400),
                                              ("InternalServiceError", 500), ("", 503),
                                              ("TooManyRequestsException", 429)])
def test_throttling_and_server_errors_keep_the_sample_for_a_retry(
    aws_environment: None, code: str, status: int
) -> None:
    sink = CloudWatchSink(CloudWatchSettings(region="eu-west-1", endpoint_url=NOWHERE))
    with pytest.raises(SinkUnavailable, match=f"CloudWatch PutMetricData: {status} {code}"):
        sink._classify(client_error(code, status))


def test_refused_credentials_are_an_error_and_a_refused_datum_is_a_rejection(
    aws_environment: None,
) -> None:
    sink = CloudWatchSink(CloudWatchSettings(region="eu-west-1", endpoint_url=NOWHERE))
    with pytest.raises(SinkError) as caught:
        sink._classify(client_error("InvalidClientTokenId", 403))
    assert not isinstance(caught.value, SinkUnavailable)
    assert sink._classify(client_error("InvalidParameterValue", 400)) == (
        "CloudWatch PutMetricData: 400 InvalidParameterValue: said the server")


def test_an_endpoint_that_does_not_answer_is_unavailable(aws_environment: None) -> None:
    sink = CloudWatchSink(CloudWatchSettings(region="eu-west-1", endpoint_url=NOWHERE,
                                             timeout_s=2))
    document = Document("d", {"@timestamp": "2026-03-01T12:00:00.300Z", "cluster": "c",
                              "group": "g", "topic": "t", "p0": 3, "lag_total": 3, "lag_max": 3})
    with pytest.raises(SinkUnavailable, match="CloudWatch unreachable: EndpointConnectionError"):
        sink.write([document])
    sink.close()


def test_no_credentials_in_the_chain_is_an_error_at_start(
    aws_environment: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    sink = CloudWatchSink(CloudWatchSettings(region="eu-west-1"))
    with pytest.raises(SinkError, match="no AWS credentials found in the standard chain"):
        sink.check_credentials()


def test_no_region_anywhere_is_a_config_error(
    aws_environment: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    from lag_exporter.errors import ConfigError

    with pytest.raises(ConfigError, match="has no AWS region: set region there, or AWS_REGION"):
        CloudWatchSink(CloudWatchSettings())


def sample_at(seconds: float) -> Sample:
    lags = (PartitionLag("t", 0, 1, 5, 4), PartitionLag("t", 1, 1, 2, 1))
    return Sample(START + timedelta(seconds=seconds), (GroupLag("c", "g", lags),))


def test_cloudwatch_gets_partitions_once_per_interval_and_totals_every_sample() -> None:
    documents = CloudWatchDocuments(CloudWatchSettings(partition_metrics_interval_s=60))
    with_partitions = []
    for second in range(0, 180, 1):
        [document] = documents(SampleDocuments(sample_at(second)))
        assert document.source["lag_total"] == 5  # every sample
        if "p0" in document.source:
            with_partitions.append(second)
    # 12:00:00.3 is the first of its minute, then the first sample of each next minute
    assert with_partitions == [0, 60, 120]


@pytest.mark.parametrize(("interval", "expected"), [(None, 10), (0, 0)])
def test_partitions_every_sample_by_default_and_never_with_0(interval: float | None,
                                                             expected: int) -> None:
    documents = CloudWatchDocuments(CloudWatchSettings(partition_metrics_interval_s=interval))
    sent = sum("p0" in documents(SampleDocuments(sample_at(s)))[0].source for s in range(10))
    assert sent == expected


def test_each_sink_has_its_own_spool_and_elasticsearch_keeps_an_older_single_sink_spool(
    aws_environment: None, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    older = Outbox(spool)  # what a version with one sink left behind
    older.put([Document("left-over", {"lag_total": 1})])
    older.close()
    config = ExporterConfig((), spool_dir=spool,
                            elasticsearch=ElasticsearchSettings(urls=(NOWHERE,), timeout_s=1),
                            cloudwatch=CloudWatchSettings(region="eu-west-1",
                                                          endpoint_url=NOWHERE))
    pipelines = make_pipelines(config)  # Elasticsearch is down: a warning, no failure
    try:
        assert [p.name for p in pipelines] == ["elasticsearch", "cloudwatch"]
        assert [p.outbox.spool_dir for p in pipelines] == [spool, spool / "cloudwatch"]
        assert [len(p.outbox) for p in pipelines] == [1, 0]
        assert pipelines[0].outbox.oldest(wait_s=0) is not None
    finally:
        for pipeline in pipelines:
            pipeline.outbox.close()
            pipeline.delivery.sink.close()


def test_without_a_sink_documents_go_to_stdout_unspooled(tmp_path: Path) -> None:
    [pipeline] = make_pipelines(ExporterConfig((), spool_dir=tmp_path / "spool"))
    assert isinstance(pipeline.delivery.sink, StdoutSink) and pipeline.outbox.spool_dir is None
    pipeline.outbox.close()


def test_health_and_metrics_see_the_worst_sink() -> None:
    outboxes = [Outbox(), Outbox()]
    watch = Watch(Fleet([]), pipelines=[Pipeline(outbox, StdoutSink()) for outbox in outboxes])
    assert oldest_undelivered(watch) is None
    outboxes[1].put([Document("a", {})])
    outboxes[0].put([Document("b", {})])
    outboxes[1].put([Document("c", {})])
    oldest = oldest_undelivered(watch)
    assert oldest == outboxes[1].oldest_created_at()  # the older of the two queues
    assert oldest is not None and oldest <= (outboxes[0].oldest_created_at() or 0)
    watch.pipelines[0].delivery.failures = 2
    watch.pipelines[1].delivery.failures = 3
    watch.pipelines[1].delivery.rejected = 4
    state = delivery_state(watch)
    assert (state.queued, state.failures_total, state.rejected_total) == (3, 5, 4)
    assert state.oldest_age_s >= 0
    for outbox in outboxes:
        outbox.close()


def test_an_index_gets_the_documents_of_its_configured_shape() -> None:
    from lag_exporter.app import index_documents
    from lag_exporter.documents import sample_documents
    from lag_exporter.partition_documents import partition_documents

    sample = sample_at(0)
    wide = ElasticsearchSettings(urls=(NOWHERE,))
    narrow = ElasticsearchSettings(urls=(NOWHERE,), document_shape="partition")
    shared = SampleDocuments(sample)
    assert index_documents(wide)(shared) == sample_documents(sample)
    assert index_documents(narrow)(shared) == partition_documents(sample)
    assert len(index_documents(narrow)(shared)) == 2  # one per partition
