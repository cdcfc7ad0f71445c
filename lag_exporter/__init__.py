"""lag-exporter: Kafka consumer-group lag, sampled every second, into Elasticsearch."""

__version__ = "0.1.0"
