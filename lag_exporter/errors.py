"""The exceptions lag-exporter raises on purpose. Only cli.py turns them into exit codes."""


class LagExporterError(Exception):
    """A failure with a one-line message meant for the operator."""

    exit_code = 1


class ConfigError(LagExporterError):
    """Bad usage or configuration: nothing was sampled or written."""

    exit_code = 2


class SourceError(LagExporterError):
    """Kafka could not answer (unreachable, refused credentials, unknown group)."""


class SinkError(LagExporterError):
    """Elasticsearch could not take the documents."""


class SinkUnavailable(SinkError):
    """Elasticsearch did not answer at all: worth retrying later."""
