"""Every config-file problem is one exact line naming the file and the key, and every valid
setting is taken as written: the texts and values a user reads and relies on."""

from pathlib import Path

import pytest

from lag_exporter.config import (
    CLUSTER_KEYS,
    ES_KEYS,
    STATUS_KEYS,
    TOP_KEYS,
    ElasticsearchSettings,
    check_es_url,
    check_index_name,
    load_config,
    status_rules,
)
from lag_exporter.errors import ConfigError
from lag_exporter.status import StatusRules

CLUSTER = '[[cluster]]\nname = "a"\nbootstrap_servers = "k:1"\ngroups = ["g"]\n'
NAMED = '[[cluster]]\nname = "a"\n'
BAD_PROTOCOL = ("security.protocol: unknown protocol 'NOPE'; use one of PLAINTEXT, "
                "SASL_PLAINTEXT, SASL_SSL, SSL")


def known(keys: set[str]) -> str:
    return f"unknown key (known: {', '.join(sorted(keys))})"


def problems(tmp_path: Path, text: str) -> list[str]:
    """The problems of a config file, each without the file name that starts it."""
    (tmp_path / "bad.properties").write_text("security.protocol=NOPE\n")
    (tmp_path / "latin1").write_bytes(b"caf\xe9\n")
    path = tmp_path / "lag-exporter.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    lines = str(caught.value).split(f"; {path}: ")
    assert lines[0].startswith(f"{path}: ")
    return [lines[0].removeprefix(f"{path}: "), *lines[1:]]


@pytest.mark.parametrize(("text", "expected"), [
    ("interval = 1\n", ["cluster: describe at least one [[cluster]]"]),
    ("cluster = []\n", ["cluster: describe at least one [[cluster]]"]),
    ('[cluster]\nname = "a"\n', ["cluster: write [[cluster]] (an array of tables), not [cluster]"]),
    ('cluster = ["dc1"]\n',
     ["cluster[0]: must be a table: write one [[cluster]] section per cluster, got 'dc1'"]),
    ('[[cluster]]\nbootstrap_servers = "k:1"\ngroups = ["g"]\nbad = 1\n',
     [f"cluster[0].bad: {known(CLUSTER_KEYS)}",
      "cluster[0].name: every [[cluster]] needs a name, a non-empty string (it goes into "
      "documents)"]),
    (NAMED + 'groups = ["g"]\n',
     ["cluster[a].bootstrap_servers: missing (or set it in command_config)"]),
    (CLUSTER + 'offsets_source = "fast"\n',
     ["cluster[a].offsets_source: must be auto, topic or admin, got 'fast'"]),
    (NAMED + 'bootstrap_servers = ""\ngroups = ["g"]\n',
     ["cluster[a].bootstrap_servers: must be a non-empty string, got ''"]),
    (NAMED + 'command_config = "bad.properties"\ngroups = ["g"]\n',
     ["cluster[a].command_config: {dir}/bad.properties: " + BAD_PROTOCOL,
      "cluster[a].bootstrap_servers: missing (or set it in command_config)"]),
    (CLUSTER + 'client = {"security.protocol" = "NOPE"}\n',
     ["cluster[a].client: {dir}/lag-exporter.toml cluster[a].client: " + BAD_PROTOCOL]),
    (CLUSTER + 'client = {"security.protocol" = "NOPE", x = [1]}\n',  # no half translation
     ["cluster[a].client.x: must be a string, number or boolean, got an array"]),
    (CLUSTER + "client = true\n",
     ["cluster[a].client: must be a table of Java client properties, got a boolean"]),
    (CLUSTER + "client = 5\n",
     ["cluster[a].client: must be a table of Java client properties, got an integer"]),
    (CLUSTER + "client = 1.5\n",
     ["cluster[a].client: must be a table of Java client properties, got a float"]),
    (CLUSTER + "client = {x = {y = 1}}\n",
     ["cluster[a].client.x: must be a string, number or boolean, got a table"]),
    (NAMED + 'bootstrap_servers = "k:1"\n',
     ["cluster[a].groups: give groups and/or group_patterns (or a mirror)"]),
    ('spool_dir = "a\\u0000b"\n' + CLUSTER, ["spool_dir: a path cannot contain a NUL character"]),
    ('[elasticsearch]\nurls = ["http://es:9200"]\nbad = 1\n' + CLUSTER,
     [f"elasticsearch.bad: {known(ES_KEYS)}"]),
    ("[elasticsearch]\nurls = 5\n" + CLUSTER,
     ["elasticsearch.urls: must be a list of strings, got 5"]),
    ("[elasticsearch]\nurls = []\n" + CLUSTER,
     ["elasticsearch.urls: give at least one URL, or leave out [elasticsearch]"]),
    ('[elasticsearch]\nindex = "x"\n' + CLUSTER,
     ["elasticsearch.urls: give at least one URL, or leave out [elasticsearch]"]),
    ('[elasticsearch]\nurls = ["es:9200"]\n' + CLUSTER,
     ["elasticsearch.urls: malformed Elasticsearch URL 'es:9200': expected http(s)://host[:port], "
      "e.g. http://127.0.0.1:9200"]),
    ('[elasticsearch]\nurls = ["http://es:9200"]\nindex = "Lag"\n' + CLUSTER,
     ["elasticsearch.index: invalid Elasticsearch index name 'Lag': it must be lowercase"]),
    ('[elasticsearch]\nurls = ["http://es:9200"]\nca_file = "nope.pem"\n' + CLUSTER,
     ["elasticsearch.ca_file: no such file: {dir}/nope.pem"]),
    ('[elasticsearch]\nurls = ["http://es:9200"]\npassword = 5\n' + CLUSTER,
     ["elasticsearch.password: must be a non-empty string"]),  # a secret's value is not shown
    ('[elasticsearch]\nurls = ["http://es:9200"]\npassword_file = "nope"\n' + CLUSTER,
     ["elasticsearch.password_file: no such file: {dir}/nope"]),
    ('[elasticsearch]\nurls = ["http://es:9200"]\napi_key_file = "latin1"\n' + CLUSTER,
     ["elasticsearch.api_key_file: cannot read {dir}/latin1: not UTF-8 text"]),
    ("elasticsearch = 5\n" + CLUSTER, ["elasticsearch: must be a table ([elasticsearch]), got 5"]),
    ("status = 5\n" + CLUSTER, ["status: must be a table ([status]), got 5"]),
    ("[status]\nbad = 1\n" + CLUSTER, [f"status.bad: {known(STATUS_KEYS)}"]),
    ("[status]\nwindow = 0\n" + CLUSTER,
     ["status.window: must be greater than 0 and at most 604800 seconds, got 0"]),
    ("[status]\nallowed_lag = 1.5\n" + CLUSTER,
     ["status.allowed_lag: must be a whole number, got 1.5"]),
    ("[status]\nallowed_lag = -1\n" + CLUSTER,
     ["status.allowed_lag: must be at least 0 and at most 4.61169e+18 records, got -1"]),
    ('[status]\nstop_after = "x"\n' + CLUSTER,
     ["status.stop_after: must be a number of seconds, got 'x'"]),
    ("http_port = 65536\n" + CLUSTER, ["http_port: must be a port number, got 65536"]),
    ("http_port = -1\n" + CLUSTER, ["http_port: must be a port number, got -1"]),
    (f'interval = "{"x" * 38}"\n' + CLUSTER,  # 40 characters shown as they are ...
     [f"interval: must be a number of seconds, got '{'x' * 38}'"]),
    (f'interval = "{"x" * 39}"\n' + CLUSTER,  # ... 41 by their type
     ["interval: must be a number of seconds, got a string"]),
    ('"a\\\\b" = 1\n' + CLUSTER, [f"a\\b: {known(TOP_KEYS)}"]),  # one backslash, as written
])
def test_each_problem_is_one_exact_line(tmp_path: Path, text: str, expected: list[str]) -> None:
    assert problems(tmp_path, text) == [line.format(dir=tmp_path) for line in expected]


def test_a_config_file_that_is_not_utf8_says_so(tmp_path: Path) -> None:
    path = tmp_path / "lag-exporter.toml"
    path.write_bytes(b'interval = "caf\xe9"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}: not UTF-8 text: invalid continuation byte"


def test_the_defaults_of_a_minimal_file(tmp_path: Path) -> None:
    path = tmp_path / "lag-exporter.toml"
    path.write_text(CLUSTER)
    config = load_config(path)
    assert (config.interval_s, config.timeout_s, config.discovery_interval_s) == (1.0, 10.0, 30.0)
    assert config.elasticsearch is None and config.spool_dir is None
    assert (config.http_host, config.http_port) == ("0.0.0.0", None)
    assert config.status_rules == StatusRules()


def test_every_setting_is_taken_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LAG_EXPORTER_ES_PASSWORD", raising=False)
    monkeypatch.delenv("LAG_EXPORTER_ES_API_KEY", raising=False)
    (tmp_path / "key").write_text("key-from-file\n")
    (tmp_path / "ca.pem").write_text("a certificate\n")
    (tmp_path / "dc1.properties").write_text("bootstrap.servers=old:9092\nmetrics.a=1\n")
    path = tmp_path / "lag-exporter.toml"
    path.write_text(
        'interval = 2.5\ntimeout = 7\ndiscovery_interval = 45\nhttp_host = "127.0.0.1"\n'
        "http_port = 0\n"
        '[elasticsearch]\nurls = ["http://es:9200"]\nusername = "writer"\npassword = "pw"\n'
        'api_key_file = "key"\nca_file = "ca.pem"\n'
        "[status]\nwindow = 120\nallowed_lag = 5\nstop_after = 900\n"
        '[[cluster]]\nname = "dc1"\ncommand_config = "dc1.properties"\n'
        'bootstrap_servers = "new:9092"\ngroups = "g"\n'
        '[cluster.client]\n"metrics.b" = 2\n"client.id" = false\n')
    config = load_config(path)
    assert (config.interval_s, config.timeout_s, config.discovery_interval_s) == (2.5, 7.0, 45.0)
    assert (config.http_host, config.http_port) == ("127.0.0.1", 0)
    assert config.elasticsearch == ElasticsearchSettings(
        urls=("http://es:9200",), index="consumer_lag", username="writer", password="pw",
        api_key="key-from-file", ca_file=str(tmp_path / "ca.pem"), timeout_s=7.0)
    assert config.status_rules == StatusRules(window_s=120.0, allowed_lag=5, stop_after_s=900.0)
    (cluster,) = config.clusters
    assert cluster.groups.names == ("g",)  # one name needs no list
    assert cluster.kafka.client_settings["bootstrap.servers"] == "new:9092"
    assert cluster.kafka.client_settings["client.id"] == "false"  # as Java writes it
    assert cluster.kafka.warnings == (
        f"{tmp_path / 'dc1.properties'}: metrics.a: ignored, Java-only metrics setting",
        f"{path} cluster[dc1].client: metrics.b: ignored, Java-only metrics setting")
    monkeypatch.setenv("LAG_EXPORTER_ES_API_KEY", "key-from-env")
    config = load_config(path)
    assert config.elasticsearch is not None
    assert config.elasticsearch.api_key == "key-from-env"  # the environment wins
    path.write_text("http_port = 65535\n" + CLUSTER)
    assert load_config(path).http_port == 65535


def test_status_rules_from_flags_change_only_what_is_given() -> None:
    assert status_rules(60, None, None) == StatusRules(window_s=60.0)
    assert status_rules(None, 3, None) == StatusRules(allowed_lag=3)
    assert status_rules(None, None, 30) == StatusRules(stop_after_s=30.0)
    with pytest.raises(ConfigError) as caught:
        status_rules(None, 1.5, None)
    assert str(caught.value) == "allowed lag must be a whole number of records, got 1.5"


@pytest.mark.parametrize(("name", "problem"), [
    ("", "it is empty"),
    ("Lag", "it must be lowercase"),
    ("a#b", "it must not contain any of ' \"#*,/:<>?\\\\|'"),
    ("+lag", "it must not start with '-', '_' or '+', nor be '.' or '..'"),
    (".", "it must not start with '-', '_' or '+', nor be '.' or '..'"),
    ("x" * 256, "it is longer than 255 bytes"),
])
def test_an_invalid_index_name_says_why(name: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_index_name(name)
    assert str(caught.value) == f"invalid Elasticsearch index name {name!r}: {problem}"


def test_the_longest_index_name_and_names_with_dots_inside_are_valid() -> None:
    assert check_index_name("x" * 255) == "x" * 255
    assert check_index_name(".lag") == ".lag" and check_index_name("lag-x_1") == "lag-x_1"


def test_es_url_messages() -> None:
    with pytest.raises(ConfigError) as caught:
        check_es_url("http://elastic:secret@es:9200")
    assert str(caught.value) == ("Elasticsearch URL must not carry credentials: use --es-username "
                                 "and $LAG_EXPORTER_ES_PASSWORD (or $LAG_EXPORTER_ES_API_KEY)")
    with pytest.raises(ConfigError) as caught:
        check_es_url("es:9200")
    assert str(caught.value) == ("malformed Elasticsearch URL 'es:9200': expected "
                                 "http(s)://host[:port], e.g. http://127.0.0.1:9200")


def test_a_cluster_of_patterns_only_with_exclusions(tmp_path: Path) -> None:
    path = tmp_path / "lag-exporter.toml"
    path.write_text('[elasticsearch]\nurls = ["http://es:9200"]\nindex = "lag_dc1"\n'
                    '[[cluster]]\nname = "dc1"\nbootstrap_servers = "k:1"\n'
                    'group_patterns = ["mirror-.*"]\nexclude_groups = [".*-test"]\n'
                    'topic_patterns = [".*"]\nexclude_topics = ["__.*"]\n')
    config = load_config(path)
    assert config.elasticsearch is not None
    assert config.elasticsearch.index == "lag_dc1" and config.elasticsearch.ca_file is None
    (cluster,) = config.clusters
    assert cluster.kafka.cluster == "dc1"  # the name in the documents
    assert cluster.groups.select(["mirror-a", "mirror-a-test", "other"]) == ["mirror-a"]
    assert cluster.topics.allows("orders") and not cluster.topics.allows("__consumer_offsets")


def test_offsets_source_is_auto_unless_given(tmp_path: Path) -> None:
    path = tmp_path / "lag-exporter.toml"
    path.write_text(CLUSTER + '[[cluster]]\nname = "b"\nbootstrap_servers = "k:2"\n'
                    'groups = ["g"]\noffsets_source = "admin"\n')
    assert [c.offsets_source for c in load_config(path).clusters] == ["auto", "admin"]
