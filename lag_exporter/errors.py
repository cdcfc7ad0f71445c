"""The exceptions lag-exporter raises on purpose. Only cli.py turns them into exit codes."""


class LagExporterError(Exception):
    """A failure with a one-line message meant for the operator."""

    exit_code = 1


class ConfigError(LagExporterError):
    """Bad usage or configuration: nothing was sampled or written."""

    exit_code = 2


class StorePasswordError(ConfigError):
    """A keystore or truststore password that does not open its file: refused credentials,
    exit 1 like a password the broker refuses (the issue's contract for TLS failures); on a
    reload it is still a configuration error, so the running configuration is kept."""

    exit_code = 1


class SourceError(LagExporterError):
    """Kafka could not answer (unreachable, refused credentials, unknown group)."""


class SinkError(LagExporterError):
    """Elasticsearch could not take the documents."""


class SinkUnavailable(SinkError):
    """Elasticsearch did not answer at all: worth retrying later."""
