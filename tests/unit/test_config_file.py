import copy
import json
import logging
import math
import os
import tomllib
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from hypothesis import given, settings
from hypothesis import strategies as st

from lag_exporter.cli import cli
from lag_exporter.config import (
    CLOUDWATCH_KEYS,
    CLUSTER_KEYS,
    ES_KEYS,
    STATUS_KEYS,
    TOP_KEYS,
    load_config,
)
from lag_exporter.errors import ConfigError

GOOD = """
interval = 2
discovery_interval = 15
spool_dir = "spool"
http_port = 9308

[elasticsearch]
urls = ["http://es1:9200", "http://es2:9200"]
index = "consumer_lag"
username = "writer"
password_file = "es-password"

[[cluster]]
name = "dc1"
command_config = "dc1.properties"
groups = ["oasis-group"]
group_patterns = ["mirror-.*"]
exclude_groups = [".*-test"]
topic_patterns = ["oasis\\\\..*"]
exclude_topics = ["__.*"]

[[cluster]]
name = "dc2"
bootstrap_servers = "kafka-dc2:9092"
groups = ["oasis-group"]
topics = ["orders"]

[cluster.client]
"security.protocol" = "SASL_PLAINTEXT"
"sasl.mechanism" = "PLAIN"
"sasl.jaas.config" = '''org.apache.kafka.common.security.plain.PlainLoginModule required \
  username="u" password="top-secret-9";'''
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "dc1.properties").write_text("bootstrap.servers=kafka-dc1:9092\n"
                                             "group.id=oasis-group\n")
    (tmp_path / "es-password").write_text("es-secret-5\n")
    path = tmp_path / "lag-exporter.toml"
    path.write_text(text)
    return path


def test_a_full_config_resolves(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    assert config.interval_s == 2.0 and config.discovery_interval_s == 15.0
    assert config.spool_dir == tmp_path / "spool"
    assert config.http_port == 9308
    assert config.elasticsearch is not None
    assert config.elasticsearch.urls == ("http://es1:9200", "http://es2:9200")
    assert config.elasticsearch.password == "es-secret-5"
    dc1, dc2 = config.clusters
    assert dc1.kafka.client_settings["bootstrap.servers"] == "kafka-dc1:9092"
    assert dc1.groups.select(["mirror-a", "mirror-a-test", "other"]) == ["oasis-group", "mirror-a"]
    assert dc1.topics.allows("oasis.events") and not dc1.topics.allows("other")
    assert dc2.kafka.client_settings["sasl.password"] == "top-secret-9"
    assert dc2.topics.names == ("orders",)


def test_every_problem_is_reported_at_once_with_file_and_key(tmp_path: Path) -> None:
    bad = """
intervall = 1
interval = 0

[[cluster]]
name = "dc1"
bootstrap_servers = "k:9092"
group_patterns = ["(unclosed"]

[[cluster]]
bootstrap_servers = "k:9092"
groups = ["g"]
"""
    path = write(tmp_path, bad)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "\n" not in message
    assert f"{path}: intervall: unknown key" in message
    assert f"{path}: interval: must be greater than 0 and at most 3600 seconds, got 0" in message
    assert f"{path}: cluster[dc1].group_patterns[0]: invalid regex '(unclosed'" in message
    assert f"{path}: cluster[1].name: every [[cluster]] needs a name" in message


def test_topic_names_kafka_refuses_are_config_errors(tmp_path: Path) -> None:
    path = write(tmp_path, '[[cluster]]\nname = "a"\nbootstrap_servers = "k:1"\n'
                           'groups = ["g"]\ntopics = ["orders", "orders eu", ".."]\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == (
        f"{path}: cluster[a].topics[1]: 'orders eu' is not a Kafka topic name: ASCII letters, "
        f"digits, '.', '_' and '-' only; {path}: cluster[a].topics[2]: '..' cannot be '.' or "
        "'..'")


def test_unknown_key_inside_a_cluster_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, '[[cluster]]\nname = "a"\nbootstrap_servers = "k:1"\n'
                           'groups = ["g"]\ngruops = ["h"]\n')
    with pytest.raises(ConfigError, match=r"cluster\[a\]\.gruops: unknown key"):
        load_config(path)


def test_secrets_never_appear_in_errors(tmp_path: Path) -> None:
    text = GOOD.replace('groups = ["oasis-group"]\ntopics', 'groups = []\ntopics')
    path = write(tmp_path, text + '\n[[cluster]]\nname = "dc1"\nbootstrap_servers = "x:1"\n'
                                  'groups = ["g"]\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "top-secret-9" not in str(caught.value) and "es-secret-5" not in str(caught.value)
    assert "cluster[dc1].name: used twice" in str(caught.value)


def test_not_toml_is_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, "interval = = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.toml")


def test_environment_password_wins_over_the_file(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAG_EXPORTER_ES_PASSWORD", "from-env")
    config = load_config(write(tmp_path, GOOD))
    assert config.elasticsearch is not None and config.elasticsearch.password == "from-env"


def test_the_shipped_example_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "lag-exporter.toml"
    monkeypatch.setenv("LAG_EXPORTER_ES_PASSWORD", "x")
    config = load_config(example)
    assert [c.name for c in config.clusters] == ["dc1-orders", "dc1-payments", "dc2-events"]


@pytest.mark.parametrize(("text", "key"), [
    ('cluster = ["dc1"]\n', "cluster[0]: must be a table"),
    ('[cluster]\nname = "a"\n', "cluster: write [[cluster]]"),
    ('elasticsearch = "http://es:9200"\n', "elasticsearch: must be a table"),
    ('http_port = true\n', "http_port: must be a port number, got True"),
    ('[elasticsearch]\nurls = ["http://es:9200"]\nca_file = 5\n',
     "elasticsearch.ca_file: must be a non-empty string, got 5"),
    ('[elasticsearch]\nurls = ["http://es:9200"]\npassword = 5\n',
     "elasticsearch.password: must be a non-empty string"),
    ('[elasticsearch]\nurls = ["http://es:9200"]\nindex = []\n',
     "elasticsearch.index: must be a non-empty string, got an array"),
    ('[elasticsearch]\nurls = ["http://es:9200"]\nusername = 1979-05-27\n',
     "elasticsearch.username: must be a non-empty string, got a date/time"),
    ('spool_dir = 1\n', "spool_dir: must be a non-empty string, got 1"),
    ('http_host = ["a"]\n', "http_host: must be a non-empty string, got an array"),
    ('interval = "1"\n', "interval: must be a number of seconds, got '1'"),
    ('timeout = nan\n', "timeout: must be at least 0.01 and at most 300 seconds, got nan"),
    ('discovery_interval = inf\n', "discovery_interval: must be greater than 0 and at most"),
    ('spool_max_mb = 0\n', "spool_max_mb: must be greater than 0 and at most 1.04858e+06 MiB"),
    ('memory_max_mb = true\n', "memory_max_mb: must be a number of MiB, got True"),
])
def test_a_wrongly_typed_value_is_a_config_error_naming_the_key(
    tmp_path: Path, text: str, key: str
) -> None:
    """These were 'unexpected error' exits (and killed the service on SIGHUP)."""
    cluster = '[[cluster]]\nname = "a"\nbootstrap_servers = "k:1"\ngroups = ["g"]\n'
    path = write(tmp_path, text if text.startswith(("cluster", "[cluster]")) else
                 text + ("\n" if text.startswith("[") else "") + cluster)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert f"{path}: {key}" in str(caught.value)


@pytest.mark.parametrize(("text", "key"), [
    ('name = "a"\nbootstrap_servers = 9092\ngroups = ["g"]\n',
     "cluster[a].bootstrap_servers: must be a non-empty string, got 9092"),
    ('name = 7\nbootstrap_servers = "k:1"\ngroups = ["g"]\n', "cluster[0].name: every"),
    ('name = "a"\nbootstrap_servers = "k:1"\ngroups = [""]\n',
     "cluster[a].groups: must not contain an empty string"),
    ('name = "a"\nbootstrap_servers = "k:1"\ngroups = "g"\ntopics = [1]\n',
     "cluster[a].topics: must be a list of strings, got an array"),
    ('name = "a"\nbootstrap_servers = "k:1"\ngroups = ["g"]\ncommand_config = ["x"]\n',
     "cluster[a].command_config: must be a non-empty string, got an array"),
    ('name = "a"\nbootstrap_servers = "k:1"\ngroups = ["g"]\ncommand_config = "nope"\n',
     "cluster[a].command_config: no such file"),
    ('name = "a"\nbootstrap_servers = "k:1"\ngroups = ["g"]\nclient = "x"\n',
     "cluster[a].client: must be a table of Java client properties, got a string"),
    ('name = "a"\nbootstrap_servers = "k:1"\ngroups = ["g"]\n'
     'client = {"sasl.jaas.config" = ["secret-77"]}\n',
     "cluster[a].client.sasl.jaas.config: must be a string, number or boolean, got an array"),
    ('name = "a"\nbootstrap_servers = "k:1"\ngroups = ["g"]\n'
     'client = {"security.protocol" = "NOPE"}\n', "cluster[a].client: "),
])
def test_a_wrongly_typed_cluster_value_names_the_cluster_and_key(
    tmp_path: Path, text: str, key: str
) -> None:
    path = write(tmp_path, "[[cluster]]\n" + text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert f"{path}: {key}" in str(caught.value)
    assert "secret-77" not in str(caught.value)


def test_inline_client_properties_take_numbers_and_booleans_as_java_writes_them(
    tmp_path: Path
) -> None:
    path = write(tmp_path, '[[cluster]]\nname = "a"\nbootstrap_servers = "k:1"\ngroups = ["g"]\n'
                           '[cluster.client]\n"request.timeout.ms" = 5000\n'
                           '"client.id" = true\n')
    (cluster,) = load_config(path).clusters
    assert cluster.kafka.client_settings["socket.timeout.ms"] == "5000"
    assert cluster.kafka.client_settings["client.id"] == "true"


def test_outbox_bounds_come_in_mib(tmp_path: Path) -> None:
    path = write(tmp_path, 'spool_max_mb = 2048\nmemory_max_mb = 0.5\n[[cluster]]\nname = "a"\n'
                           'bootstrap_servers = "k:1"\ngroups = ["g"]\n')
    config = load_config(path)
    assert config.spool_max_bytes == 2048 * 1024 * 1024
    assert config.memory_max_bytes == 512 * 1024
    default = load_config(write(tmp_path, GOOD))
    assert (default.spool_max_bytes, default.memory_max_bytes) == (1024 << 20, 64 << 20)


def test_control_characters_from_the_file_stay_on_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, '"a\\nb" = 1\n[[cluster]]\nname = "x\\ny"\nbootstrap_servers = "k:1"\n'
                           'groups = ["g"]\nbad = 1\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "\n" not in message
    assert "a\\nb: unknown key" in message and "cluster[x\\ny].bad: unknown key" in message


# -- property: no value of any key gets past load_config as anything but a ConfigError ----------

VALID: dict[str, Any] = {
    "interval": 1, "timeout": 10, "discovery_interval": 30, "spool_dir": "spool",
    "spool_max_mb": 100, "memory_max_mb": 10, "http_host": "127.0.0.1", "http_port": 9308,
    "ha_group": "lag-exporters", "ha_session_timeout": 10,
    "elasticsearch": {
        "urls": ["http://es:9200"], "index": "consumer_lag", "username": "u", "password": "p",
        "password_file": "es-password", "api_key": "k", "api_key_file": "es-password",
        "ca_file": "ca.pem", "document_shape": "wide"},
    "opensearch": {
        "urls": ["http://os:9200"], "index": "consumer_lag", "username": "u", "password": "p",
        "password_file": "es-password", "ca_file": "ca.pem", "document_shape": "partition"},
    "cloudwatch": {
        "namespace": "KafkaLag", "region": "eu-west-1", "endpoint_url": "http://127.0.0.1:1",
        "dimensions": {"Environment": "prod"}, "partition_metrics_interval_s": 60},
    "cluster": [{
        "name": "dc1", "bootstrap_servers": "k:9092", "command_config": "dc1.properties",
        "client": {"client.id": "x"}, "groups": ["g"], "group_patterns": ["m-.*"],
        "exclude_groups": ["t"], "topics": ["o"], "topic_patterns": ["o.*"],
        "exclude_topics": ["__.*"], "mirror": [{"target_bootstrap_servers": "t:9092"}]}],
    "status": {"window": 600, "allowed_lag": 1, "stop_after": 300},
}
EVERY_KEY = ([("", key) for key in sorted(TOP_KEYS)]
             + [("elasticsearch", key) for key in sorted(ES_KEYS)]
             + [("opensearch", key) for key in sorted(ES_KEYS)]
             + [("cloudwatch", key) for key in sorted(CLOUDWATCH_KEYS)]
             + [("cluster", key) for key in sorted(CLUSTER_KEYS)]
             + [("status", key) for key in sorted(STATUS_KEYS)])
assert {key for table, key in EVERY_KEY if table == ""} == set(VALID)

ABSENT = object()
_scalars = st.one_of(
    st.text(max_size=12), st.sampled_from(["", ".", "/", "dc1.properties", "http://es:9200",
                                           "(", "a{99999999999}", "\0", "x\ny"]),
    st.integers(min_value=-(2**63), max_value=2**63 - 1), st.sampled_from([0, -1, 301, 65536]),
    st.floats(), st.booleans(), st.datetimes(), st.datetimes(timezones=st.just(UTC)),
    st.dates(), st.times())
toml_values = st.recursive(
    _scalars, lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)


def toml_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_value(value: object) -> str:
    """TOML for any value tomllib can return (inline tables and arrays, on one line)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else "inf" if value > 0 else "-inf"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{toml_string(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_document(document: dict[str, Any]) -> str:
    return "".join(f"{toml_string(key)} = {toml_value(value)}\n"
                   for key, value in document.items())


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("property")
    write(directory, "")
    (directory / "ca.pem").write_text("not checked here\n")
    return directory


def run_cli(*args: str) -> Result:
    """The real command in-process; the logging it sets up on the runner's stderr is undone."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        return CliRunner().invoke(cli, list(args))
    finally:
        root.handlers[:], root.level = handlers, level


# scripts/mutants runs this test for each of hundreds of mutants: it sets fewer examples, always
# the same ones (derandomized), so that a run takes minutes and gives the same verdicts.
PROPERTY_EXAMPLES = os.environ.get("LAG_EXPORTER_PROPERTY_EXAMPLES")


@settings(max_examples=int(PROPERTY_EXAMPLES or 400), derandomize=PROPERTY_EXAMPLES is not None,
          deadline=None, database=None)
@given(where=st.sampled_from(EVERY_KEY), value=st.one_of(st.just(ABSENT), toml_values))
def test_any_value_of_any_key_is_loaded_or_a_config_error_naming_file_and_key(
    config_dir: Path, where: tuple[str, str], value: object
) -> None:
    table_name, key = where
    document = copy.deepcopy(VALID)
    table = (document if not table_name else document["cluster"][0]
             if table_name == "cluster" else document[table_name])
    if value is ABSENT:
        table.pop(key, None)
    else:
        table[key] = value
    text = toml_document(document)
    assert toml_document(tomllib.loads(text)) == text  # the test's TOML is right (nan != nan)
    path = config_dir / "lag-exporter.toml"
    path.write_text(text)
    try:
        load_config(path)
    except ConfigError as error:
        message = str(error)
        label = {"": key, "elasticsearch": f"elasticsearch.{key}",
                 "opensearch": f"opensearch.{key}", "cloudwatch": f"cloudwatch.{key}",
                 "status": f"status.{key}"}.get(table_name, f"].{key}")
        if table_name == "cluster" and key == "name":
            label = "cluster["
        assert f"{path}: " in message and label in message, message
        assert len(message.splitlines()) == 1, message
        # and through the command: exit 2, that one line, no traceback
        done = run_cli("check-config", "--config", str(path))
        assert done.exit_code == 2, done.output
        assert done.stderr == f"lag-exporter: error: {message}\n"


def test_a_wrongly_typed_value_through_the_command_is_exit_2_and_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, 'cluster = ["dc1"]\nhttp_port = true\n')
    done = run_cli("snapshot", "--config", str(path))
    assert done.exit_code == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert f"{path}: cluster[0]: must be a table" in done.stderr
    assert f"{path}: http_port: must be a port number, got True" in done.stderr
