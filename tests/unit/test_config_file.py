from pathlib import Path

import pytest

from lag_exporter.config import load_config
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
group_patterns = ["^mirror-"]
exclude_groups = ["-test$"]
topic_patterns = ["^oasis\\\\."]
exclude_topics = ["^__"]

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
    assert f"{path}: interval: must be a number greater than 0, got 0" in message
    assert f"{path}: cluster[dc1].group_patterns[0]: invalid regex '(unclosed'" in message
    assert f"{path}: cluster[1].name: every [[cluster]] needs a name" in message


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
