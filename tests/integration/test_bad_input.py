"""Every bad input gets one line naming the problem, exit 2 (usage/config) or 1 (runtime), and
no traceback. Each row here is a row of the README's table."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from elasticsearch import Elasticsearch
from helpers import commit, create_topic, one_line_error, produce, run_exporter

from stack.stackctl import Stack

pytestmark = pytest.mark.integration

SASL_SECRET = "sasl-secret-4711"
ES_SECRET = "es-secret-0815"


@dataclass(frozen=True)
class Case:
    name: str
    args: Callable[[Stack, Path, str], list[str]]
    exit_code: int
    message: str
    env: dict[str, str] | None = None


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def kafka(stack: Stack) -> list[str]:
    return ["--bootstrap-server", stack.source_bootstrap]


def jaas(module: str) -> str:
    return f'{module} required username="u" password="{SASL_SECRET}";'


CASES = [
    Case("group that does not exist",
         lambda s, d, u: ["snapshot", *kafka(s), "--group", f"nope-{u}"], 1, "does not exist"),
    Case("unreachable bootstrap server",
         lambda s, d, u: ["snapshot", "--bootstrap-server", "127.0.0.1:1", "--group", "g",
                          "--timeout", "2"], 1, "no answer from Kafka at 127.0.0.1:1 within 2 s"),
    Case("wrong SASL password",
         lambda s, d, u: ["snapshot", "--bootstrap-server", s.source_sasl_bootstrap, "--group",
                          "g", "--timeout", "5", "--command-config", write(
                              d / "c.properties", "security.protocol=SASL_PLAINTEXT\n"
                              "sasl.mechanism=SCRAM-SHA-512\nsasl.jaas.config=" + jaas(
                                  "org.apache.kafka.common.security.scram.ScramLoginModule"))],
         1, "refused the credentials"),
    Case("malformed properties file",
         lambda s, d, u: ["snapshot", *kafka(s), "--group", "g", "--command-config",
                          write(d / "c.properties", "client.id=\\u12G4\n")], 2, "c.properties"),
    Case("unsupported login module",
         lambda s, d, u: ["snapshot", *kafka(s), "--group", "g", "--command-config", write(
             d / "c.properties", "security.protocol=SASL_SSL\nsasl.mechanism=GSSAPI\n"
             "sasl.jaas.config=" + jaas("com.sun.security.auth.module.Krb5LoginModule"))],
         2, "Krb5LoginModule"),
    Case("JKS truststore",
         lambda s, d, u: ["snapshot", *kafka(s), "--group", "g", "--command-config", write(
             d / "c.properties", "security.protocol=SSL\nssl.truststore.location="
             f"{write(d / 'trust.jks', 'x')}\nssl.truststore.type=JKS\n")], 2, "keytool"),
    Case("unknown config key",
         lambda s, d, u: ["watch", "--config", write(d / "c.toml", 'intervall = 1\n'
                          '[[cluster]]\nname = "a"\nbootstrap_servers = "x:1"\ngroups = ["g"]\n')],
         2, "intervall: unknown key"),
    Case("invalid regex",
         lambda s, d, u: ["watch", "--config", write(d / "c.toml", '[[cluster]]\nname = "a"\n'
                          'bootstrap_servers = "x:1"\ngroup_patterns = ["mirror-(["]\n')],
         2, "invalid regex 'mirror-(['"),
    Case("malformed Elasticsearch URL",
         lambda s, d, u: ["watch", *kafka(s), "--group", "g", "--es-url", "es-node1:9200"],
         2, "malformed Elasticsearch URL"),
    Case("refused Elasticsearch credentials",
         lambda s, d, u: ["watch", *kafka(s), "--group", "g", "--es-url", s.es_auth_url,
                          "--es-ca-file", s.es_auth_ca_file, "--es-username",
                          s.es_auth_username, "--spool-dir", str(d / "spool")],
         1, "Elasticsearch refused the credentials", {"LAG_EXPORTER_ES_PASSWORD": ES_SECRET}),
    Case("existing index with an incompatible mapping",
         lambda s, d, u: ["watch", *kafka(s), "--group", "g", "--es-url", s.es_url, "--es-index",
                          f"broken-{u}", "--spool-dir", str(d / "spool")],
         1, "incompatible mapping: '@timestamp' is keyword"),
    Case("invalid index name",
         lambda s, d, u: ["watch", *kafka(s), "--group", "g", "--es-url", s.es_url,
                          "--es-index", "Consumer_Lag"], 2, "must be lowercase"),
    Case("interval <= 0",
         lambda s, d, u: ["watch", *kafka(s), "--group", "g", "--interval", "0"],
         2, "--interval must be greater than 0"),
    Case("unwritable spool directory",
         lambda s, d, u: ["watch", *kafka(s), "--group", "g", "--es-url", s.es_url,
                          "--spool-dir", str(Path(write(d / "file", "")) / "spool")],
         2, "is not writable"),
    Case("unknown option",
         lambda s, d, u: ["watch", "--intervall", "1"], 2, "No such option"),
    Case("timeout 0",
         lambda s, d, u: ["snapshot", *kafka(s), "--group", "g", "--timeout", "0"],
         2, "--timeout must be at least 0.01 and at most 300 seconds, got 0"),
    Case("timeout above librdkafka's 300 s",
         lambda s, d, u: ["snapshot", *kafka(s), "--group", "g", "--timeout", "301"],
         2, "--timeout must be at least 0.01 and at most 300 seconds, got 301"),
    Case("watch with timeout 0",
         lambda s, d, u: ["watch", *kafka(s), "--group", "g", "--timeout", "0"],
         2, "--timeout must be at least 0.01"),
    Case("timeout 0 in the config file",
         lambda s, d, u: ["snapshot", "--config", write(d / "c.toml", 'timeout = 0\n'
                          '[[cluster]]\nname = "a"\nbootstrap_servers = "x:1"\ngroups = ["g"]\n')],
         2, "timeout: must be at least 0.01 and at most 300 seconds, got 0"),
    Case("empty group name",
         lambda s, d, u: ["snapshot", *kafka(s), "--group", ""], 2, "--group must not be empty"),
    Case("empty group name in the config file",
         lambda s, d, u: ["snapshot", "--config", write(d / "c.toml", '[[cluster]]\nname = "a"\n'
                          'bootstrap_servers = "x:1"\ngroups = [""]\n')],
         2, "cluster[a].groups: must not contain an empty string"),
    Case("topic name Kafka refuses",
         lambda s, d, u: ["snapshot", *kafka(s), "--group", "g", "--topic", "orders[eu]"],
         2, "--topic 'orders[eu]' is not a Kafka topic name: ASCII letters, digits, '.', '_' "
            "and '-' only"),
    Case("topic name Kafka refuses in the config file",
         lambda s, d, u: ["snapshot", "--config", write(d / "c.toml", '[[cluster]]\nname = "a"\n'
                          'bootstrap_servers = "x:1"\ngroups = ["g"]\ntopics = ["x", ".."]\n')],
         2, "cluster[a].topics[1]: '..' cannot be '.' or '..'"),
    Case("summary interval 0",
         lambda s, d, u: ["watch", *kafka(s), "--group", "g", "--summary-interval", "0"],
         2, "--summary-interval must be greater than 0 seconds, got 0"),
    Case("[cluster] written as a list of names",
         lambda s, d, u: ["check-config", "--config", write(d / "c.toml", 'cluster = ["dc1"]\n')],
         2, "c.toml: cluster[0]: must be a table: write one [[cluster]] section per cluster"),
    Case("wrongly typed config values",
         lambda s, d, u: ["watch", "--config", write(d / "c.toml", 'http_port = true\n'
                          '[elasticsearch]\nurls = ["http://127.0.0.1:1"]\nca_file = 5\n'
                          '[[cluster]]\nname = "a"\nbootstrap_servers = "x:1"\ngroups = ["g"]\n')],
         2, "ca_file: must be a non-empty string, got 5"),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input(stack: Stack, case: Case, tmp_path: Path, unique_name: str) -> None:
    if case.name.startswith("existing index"):
        Elasticsearch(stack.es_url).indices.create(
            index=f"broken-{unique_name}", mappings={"properties": {"@timestamp": {
                "type": "keyword"}}})
    done = run_exporter(*case.args(stack, tmp_path, unique_name), env=case.env, timeout=30)
    assert done.returncode == case.exit_code, done.stderr
    line = one_line_error(done)
    assert line.startswith("lag-exporter: error: "), line
    assert case.message in line, line
    assert SASL_SECRET not in done.stdout + done.stderr
    assert ES_SECRET not in done.stdout + done.stderr


@pytest.mark.parametrize("name", [".", "..", "x" * 250, "orders[eu]", "orders eu", "örders",
                                  "...", "x" * 249, "orders.v1_eu-2"])
def test_topic_names_refused_are_those_kafka_refuses(stack: Stack, name: str) -> None:
    """The real broker's verdict on each name (CreateTopics, validate only: nothing created)
    is the CLI's: refused with exit 2, or taken (then the group is looked up: exit 1)."""
    admin = AdminClient({"bootstrap.servers": stack.source_bootstrap})
    try:
        admin.create_topics([NewTopic(name, 1, 1)], validate_only=True)[name].result(30)
        kafka_takes = True
    except KafkaException as error:
        assert error.args[0].code() == KafkaError.TOPIC_EXCEPTION, error
        kafka_takes = False
    done = run_exporter("snapshot", "--bootstrap-server", stack.source_bootstrap,
                        "--group", f"no-group-{uuid.uuid4().hex[:8]}", "--topic", name)
    assert done.returncode == (1 if kafka_takes else 2), done.stderr
    assert ("is not a Kafka topic name" in done.stderr or "cannot be" in done.stderr
            or "characters long" in done.stderr) != kafka_takes, done.stderr


def test_debug_shows_the_traceback(stack: Stack) -> None:
    done = run_exporter("--debug", "snapshot", "--bootstrap-server", "127.0.0.1:1",
                        "--group", "g", "--timeout", "1")
    assert done.returncode != 0
    assert "Traceback" in done.stderr


def test_secrets_never_reach_output_logs_or_help(
    stack: Stack, tmp_path: Path, unique_name: str
) -> None:
    """Runs real commands with known secrets and greps everything they print."""
    topic, group = f"secret.{unique_name}", f"secret-{unique_name}"
    create_topic(stack.source_bootstrap, topic, 1)
    produce(stack.source_bootstrap, topic, {0: 2})
    commit(stack.source_bootstrap, group, {(topic, 0): 1})
    secret_props = write(tmp_path / "sasl.properties", Path(stack.sasl_properties).read_text())
    config = write(tmp_path / "c.toml", f"""
[elasticsearch]
urls = ["{stack.es_auth_url}"]
index = "secret-{unique_name}"
username = "{stack.es_auth_username}"
password = "{stack.es_auth_password}"
ca_file = "{stack.es_auth_ca_file}"
[[cluster]]
name = "src"
bootstrap_servers = "{stack.source_sasl_bootstrap}"
command_config = "{secret_props}"
groups = ["{group}"]
""")
    env = {"LAG_EXPORTER_ES_PASSWORD": stack.es_auth_password}
    outputs: list[subprocess.CompletedProcess[str]] = [
        run_exporter("--log-level", "debug", "snapshot", "--config", config, env=env),
        run_exporter("--log-level", "debug", "check-config", "--config", config, env=env),
        run_exporter("watch", "--help", env=env),
        run_exporter("snapshot", "--help", env=env),
    ]
    assert outputs[0].returncode == 0, outputs[0].stderr
    assert outputs[1].returncode == 0, outputs[1].stderr
    printed = "".join(done.stdout + done.stderr for done in outputs)
    for secret in (stack.sasl_password, stack.es_auth_password):
        assert secret not in printed
    assert "basic auth as" in outputs[1].stdout  # the plan says how, never with what
