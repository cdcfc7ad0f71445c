"""Local service stack for lag-exporter's integration tests and benchmarks.

Runs real Apache Kafka, MirrorMaker 1 and 2 and Elasticsearch as plain JVM processes on
127.0.0.1 (no Docker), everything fetched from Maven Central by `mvn` and cached under the
repository's git-ignored `.cache/`; runtime state lives in the git-ignored `.stack/`.

Components (ports):
  kafka-source        Kafka 4.1 KRaft, PLAINTEXT 19092, controller 19093,
                      SASL_PLAINTEXT 19094 (SCRAM-SHA-512, user upserted at each start),
                      SSL 19095 (server auth), MTLS 19096 (SSL, ssl.client.auth=required),
                      SASL_SSL 19097 (SCRAM-SHA-512), OTHERHOST 19098 (SSL with a certificate
                      for another host name, for hostname-verification tests)
  kafka-target        Kafka 4.1 KRaft, PLAINTEXT 29092, controller 29093
  elasticsearch       Elasticsearch 8.19 (integ-test-zip), security off, HTTP 19200, transport 19300
  elasticsearch-auth  same with security on, basic auth over HTTPS 19201, transport 19301
  elasticsearch9      Elasticsearch 9.2 (integ-test-zip) on the Temurin 25 JDK (9.x needs Java 21+:
                      $LAGEXP_JAVA21_HOME, default /usr/lib/jvm/temurin-25-jdk-amd64), security
                      off, HTTP 19202, transport 19302
  opensearch          OpenSearch 2.19 (integ-test-zip: no security plugin), HTTP 19203,
                      transport 19303
  elasticsearch9-auth Elasticsearch 9.2 as elasticsearch9 with security on, as elasticsearch-auth
                      (the same user, basic auth over HTTPS 19204), transport 19304
  cloudwatch          moto's standalone server (.venv/bin/moto_server) on HTTP 19230, a local
                      CloudWatch-compatible endpoint (any dummy credentials; data in memory only,
                      so a stop/start empties it)
  mm1                 MirrorMaker 1 (kafka.tools.MirrorMaker from Kafka 3.9), source -> target,
                      group `oasis-group`, topics `oasis\\..*`. It commits offsets every 1 s
                      (--offset.commit.interval.ms 1000; the real default is 60 s) so that
                      one-second lag samples see movement.
  mm2                 MirrorMaker 2 dedicated mode (connect-mirror 4.1), source->target, topics
                      `mm2\\..*`, replicated as `source.<topic>` (default replication policy).

Lifecycle: `up`/`down` are idempotent and take component names (none = all). `up` starts only
the named components (it does not start their dependencies: a fault test that stopped the source
broker and restarts MirrorMaker gets exactly that). `down` only stops processes: data survives
any stop/start. `down --wipe` also deletes the data of the named components (all: the whole
`.stack/`). Logs: `.stack/logs/<component>.log`. After `up`, `.stack/addresses.json` lists
addresses and credentials.

TLS: `up` makes a test certificate authority and its certificates under `.stack/tls/` when they
are missing or expire within a day (stack/tls.py, with `cryptography`; a few tens of ms): the
broker's and Elasticsearch's server certificate (127.0.0.1, localhost), a certificate for another
host, a client certificate (PKCS12 and PEM), an expired client certificate and a CA that signed
nothing. They survive restarts (components started separately must share one CA); `down --wipe`
deletes them.

Elasticsearch and OpenSearch refuse to run as root: started by root, their nodes run as the
system user `lagexp-es` (created when missing) and the directories above the repository get o+x
so that user can reach its files; started by any other user, they run as that user.

Errors: every failure is one line on stderr (`stack: ...`, exit 1), naming the log to read
(with CI set, the log's last lines are printed before it).

Tool passthroughs (`kafka-topics`, `kafka-consumer-groups`, `kafka-producer-perf-test`,
`kafka-console-producer`, `kafka-console-consumer`) run the Kafka 4.1 CLI classes with a quiet
log4j2 config; from Python use `run_tool(name, args)`.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import hashlib
import json
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from stack import tls

REPO = Path(__file__).resolve().parent.parent
STACK_SRC = REPO / "stack"
CACHE = REPO / ".cache"
STATE = REPO / ".stack"
LOGS = STATE / "logs"
RUN = STATE / "run"
ADDRESSES = STATE / "addresses.json"
TLS = STATE / "tls"

DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
ES_VERSION = "8.19.21"
ES9_VERSION = "9.2.8"  # the newest 9.x integ-test-zip Maven Central serves (9.2.9, 9.3+: none)
OPENSEARCH_VERSION = "2.19.6"  # the newest 2.19 that runs on Java 17
JAVA21_HOME_DEFAULT = "/usr/lib/jvm/temurin-25-jdk-amd64"
ES_USER = "lagexp-es"
ES_HEAP = "-Xms512m -Xmx512m"
MOTO_PORT = 19230

SASL_MECHANISM = "SCRAM-SHA-512"
SASL_USERNAME = "lagexp"
SASL_PASSWORD = "lagexp-test-secret-1"
ES_AUTH_USERNAME = "lagexp"
ES_AUTH_PASSWORD = "lagexp-test-secret-2"

MM1_GROUP = "oasis-group"
MM1_INCLUDE = r"oasis\..*"
MM2_TOPICS = r"mm2\..*"
MM2_OFFSETS_TOPIC = "mm2-offsets.source.internal"

KAFKA_HEAP = ["-Xms256m", "-Xmx512m"]
MARKER_ENV = "LAGEXP_STACK_COMPONENT"

TOOLS: dict[str, str] = {
    "kafka-topics": "org.apache.kafka.tools.TopicCommand",
    "kafka-consumer-groups": "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
    "kafka-producer-perf-test": "org.apache.kafka.tools.ProducerPerformance",
    "kafka-console-producer": "org.apache.kafka.tools.ConsoleProducer",
    "kafka-console-consumer": "org.apache.kafka.tools.consumer.ConsoleConsumer",
}


class StackError(RuntimeError):
    """A component could not be installed, started or stopped (a one-line message)."""


@dataclass(frozen=True)
class Kafka:
    name: str
    port: int
    controller_port: int
    sasl_port: int | None = None
    ssl_port: int | None = None
    """SSL (server auth); the next three ports: MTLS, SASL_SSL, OTHERHOST (see the docstring)."""

    def tls_ports(self) -> dict[str, int]:
        if self.ssl_port is None:
            return {}
        return {"SSL": self.ssl_port, "MTLS": self.ssl_port + 1, "SASL_SSL": self.ssl_port + 2,
                "OTHERHOST": self.ssl_port + 3}


@dataclass(frozen=True)
class Distribution:
    """An integ-test-zip from Maven Central: Elasticsearch or OpenSearch, and the Java it needs."""

    product: str
    """"elasticsearch" or "opensearch": also the artifact id, the launcher and the zip's folder."""
    group: str
    version: str
    needs_java21: bool = False

    @property
    def artifact(self) -> str:
        return f"{self.group}:{self.product}:{self.version}:zip"

    @property
    def folder(self) -> str:
        return f"{self.product}-{self.version}"

    @property
    def env_prefix(self) -> str:
        """Prefix of the launcher's environment variables (ES_JAVA_HOME, OPENSEARCH_JAVA_HOME)."""
        return "ES" if self.product == "elasticsearch" else "OPENSEARCH"


ES8 = Distribution("elasticsearch", "org.elasticsearch.distribution.integ-test-zip", ES_VERSION)
ES9 = Distribution("elasticsearch", "org.elasticsearch.distribution.integ-test-zip", ES9_VERSION,
                   needs_java21=True)
OPENSEARCH = Distribution("opensearch", "org.opensearch.distribution.integ-test-zip",
                          OPENSEARCH_VERSION)


@dataclass(frozen=True)
class Elastic:
    name: str
    http_port: int
    transport_port: int
    secure: bool
    dist: Distribution = ES8


KAFKAS = {
    "kafka-source": Kafka("kafka-source", 19092, 19093, 19094, 19095),
    "kafka-target": Kafka("kafka-target", 29092, 29093),
}
ELASTICS = {
    "elasticsearch": Elastic("elasticsearch", 19200, 19300, secure=False),
    "elasticsearch-auth": Elastic("elasticsearch-auth", 19201, 19301, secure=True),
    "elasticsearch9": Elastic("elasticsearch9", 19202, 19302, secure=False, dist=ES9),
    "opensearch": Elastic("opensearch", 19203, 19303, secure=False, dist=OPENSEARCH),
    "elasticsearch9-auth": Elastic("elasticsearch9-auth", 19204, 19304, secure=True, dist=ES9),
}
CLOUDWATCH = "cloudwatch"
MIRRORS = ("mm1", "mm2")
COMPONENTS: tuple[str, ...] = (*KAFKAS, *ELASTICS, CLOUDWATCH, *MIRRORS)


# ---------------------------------------------------------------- small helpers


def log(msg: str) -> None:
    print(f"[stack] {msg}", file=sys.stderr, flush=True)


def log_file(component: str) -> Path:
    return LOGS / f"{component}.log"


def data_dir(component: str) -> Path:
    return STATE / component


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def java_home() -> Path:
    """JAVA_HOME if set, else the JDK behind `java` on PATH (Java 17 on these machines)."""
    if os.environ.get("JAVA_HOME"):
        return Path(os.environ["JAVA_HOME"])
    java = shutil.which("java")
    if java is None:
        raise StackError("no `java` on PATH and JAVA_HOME unset")
    return Path(os.path.realpath(java)).parent.parent


def java() -> str:
    return str(java_home() / "bin" / "java")


def java21_home() -> Path:
    """A JDK of version 21 or newer, for Elasticsearch 9."""
    home = Path(os.environ.get("LAGEXP_JAVA21_HOME", JAVA21_HOME_DEFAULT))
    if not (home / "bin" / "java").exists():
        raise StackError(f"Elasticsearch 9 needs Java 21 or newer: no {home}/bin/java "
                         f"(set LAGEXP_JAVA21_HOME to such a JDK)")
    return home


def is_root() -> bool:
    return os.geteuid() == 0


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def tail(path: Path, lines: int = 20) -> str:
    if not path.exists():
        return f"(no log file {path})"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def fail(component: str, why: str) -> StackError:
    """One line naming the log; under CI the log's last lines go to stderr first, so that
    the CI output alone shows the cause."""
    path = log_file(component)
    if os.environ.get("CI"):
        log(f"{component}: last lines of {path}:\n{tail(path)}")
    return StackError(f"{component}: {why} (log: {path})")


# ---------------------------------------------------------------- downloads (cached)


def mvn(args: Sequence[str], pom: Path | None = None) -> None:
    cmd = ["mvn", "-B", "-q", f"-Dmaven.repo.local={CACHE / 'm2'}"]
    if pom is not None:
        cmd += ["-f", str(pom)]
    try:
        proc = subprocess.run([*cmd, *args], capture_output=True, text=True, cwd=REPO)
    except FileNotFoundError:
        raise StackError("`mvn` (Maven) is not installed: it fetches Kafka and Elasticsearch"
                         ) from None
    if proc.returncode != 0:
        path = write(log_file("mvn"), proc.stdout + proc.stderr)
        raise StackError(f"mvn {' '.join(args)} failed (output: {path})")


def libs(flavour: str) -> Path:
    """Runtime jars of stack/<flavour>/pom.xml, resolved once per pom content."""
    pom = STACK_SRC / flavour / "pom.xml"
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:12]
    out = CACHE / "lib" / f"{flavour}-{digest}"
    if not (out / ".complete").exists():
        log(f"resolving {pom.relative_to(REPO)} with mvn")
        shutil.rmtree(out, ignore_errors=True)
        mvn([f"{DEPENDENCY_PLUGIN}:copy-dependencies", "-DincludeScope=runtime",
             f"-DoutputDirectory={out}"], pom=pom)
        (out / ".complete").touch()
    return out


def es_home(d: Distribution = ES8) -> Path:
    """Unpacked integ-test-zip (shared read-only by the nodes of that distribution)."""
    home = CACHE / d.folder
    if (home / ".complete").exists():
        return home
    dist = CACHE / "dist"
    archive = dist / f"{d.folder}.zip"
    if not archive.exists():
        log(f"fetching {d.artifact} with mvn")
        mvn([f"{DEPENDENCY_PLUGIN}:copy", f"-Dartifact={d.artifact}", f"-DoutputDirectory={dist}"])
    shutil.rmtree(home, ignore_errors=True)
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(CACHE)
    # zipfile drops the exec bits the launch scripts need.
    for script in (home / "bin").iterdir():
        script.chmod(0o755)
    (home / ".complete").touch()
    return home


def classpath(flavour: str) -> str:
    return str(libs(flavour) / "*")


# ---------------------------------------------------------------- processes


def pid_file(component: str) -> Path:
    return RUN / f"{component}.pid"


def marker_of(pid: int) -> str | None:
    """The component a process was started for (from its environment), if any."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    prefix = f"{MARKER_ENV}=".encode()
    for item in environ:
        if item.startswith(prefix):
            return item[len(prefix):].decode()
    return None


def component_pids(component: str) -> list[int]:
    """All live processes (the launcher and its children) started for this component."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and marker_of(int(entry.name)) == f"{component}@{STATE}":
            pids.append(int(entry.name))
    return sorted(pids)


def running(component: str) -> bool:
    try:
        pid = int(pid_file(component).read_text())
    except (OSError, ValueError):
        return False
    # While a process execs (a launch script exec-ing java), its /proc environ reads empty for
    # an instant: a live process without the marker is looked at again before it counts as gone.
    for _ in range(10):
        if marker_of(pid) == f"{component}@{STATE}":
            return True
        if not Path(f"/proc/{pid}").exists():
            return False
        time.sleep(0.01)
    return False


# A throw-away Python parent starts the daemon and exits, so the daemon is re-parented to init:
# callers (pytest) keep no Popen objects (no ResourceWarning) and no zombies.
_LAUNCHER = """
import json, subprocess, sys
a = json.loads(sys.argv[1])
with open(a["log"], "ab") as out:
    p = subprocess.Popen(a["cmd"], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                         cwd=a["cwd"], start_new_session=True, user=a["user"], group=a["user"])
print(p.pid)
"""


def spawn(component: str, cmd: Sequence[str], env: dict[str, str] | None = None,
          user: str | None = None, cwd: Path | None = None) -> int:
    """Start a daemon in its own session, output appended to its log, pid recorded."""
    LOGS.mkdir(parents=True, exist_ok=True)
    RUN.mkdir(parents=True, exist_ok=True)
    with log_file(component).open("ab") as out:
        out.write(f"\n===== {time.strftime('%F %T')} starting {component}\n".encode())
    spec = {"cmd": list(cmd), "log": str(log_file(component)), "cwd": str(cwd or STATE),
            "user": user}
    full_env = {**os.environ, **(env or {}), MARKER_ENV: f"{component}@{STATE}"}
    launched = subprocess.run([sys.executable, "-c", _LAUNCHER, json.dumps(spec)], env=full_env,
                              capture_output=True, text=True, check=True)
    pid = int(launched.stdout)
    pid_file(component).write_text(str(pid))
    return pid


def run_logged(name: str, cmd: Sequence[str]) -> subprocess.Popen[bytes]:
    """Start a one-off helper (the caller waits for it), output to .stack/logs/<name>.log."""
    LOGS.mkdir(parents=True, exist_ok=True)
    with log_file(name).open("ab") as out:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, cwd=STATE)


_lock_depth = 0


@contextlib.contextmanager
def stack_lock() -> Iterator[None]:
    """One start or stop at a time across processes: two `up`s racing (two test sessions, a
    test restarting a component while another session starts the stack) once left the pid file
    of a JVM that lost the port race, and every later `up` refused the port. Re-entrant within
    a process (up and stop nest)."""
    global _lock_depth
    if _lock_depth:
        _lock_depth += 1
        try:
            yield
        finally:
            _lock_depth -= 1
        return
    STATE.mkdir(parents=True, exist_ok=True)
    with open(STATE / "stack.lock", "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        _lock_depth = 1
        try:
            yield
        finally:
            _lock_depth = 0
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def stop(component: str, timeout: float = 60.0) -> None:
    """Stop a component (SIGTERM to its process group, SIGKILL after `timeout`)."""
    with stack_lock():
        _stop(component, timeout)


def _stop(component: str, timeout: float) -> None:
    pids = component_pids(component)
    if not pids:
        pid_file(component).unlink(missing_ok=True)
        return
    log(f"stopping {component}")
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(os.getpgid(pid), signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while component_pids(component) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in component_pids(component):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    while component_pids(component):
        time.sleep(0.1)
    pid_file(component).unlink(missing_ok=True)


def wait_until(component: str, ready: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not running(component):
            raise fail(component, "process exited during start-up")
        if ready():
            return
        time.sleep(0.5)
    error = fail(component, f"not ready after {timeout:.0f} s")
    stop(component)  # else the next `up` would take the half-started process as ready
    raise error


def log_contains(component: str, offset: int, needle: str) -> Callable[[], bool]:
    def check() -> bool:
        with log_file(component).open("rb") as f:
            f.seek(offset)
            return needle.encode() in f.read()
    return check


def log_size(component: str) -> int:
    path = log_file(component)
    return path.stat().st_size if path.exists() else 0


# ---------------------------------------------------------------- logging configs


# Loggers that dump every config value at INFO on each client start: kept at WARN.
CONFIG_DUMPERS = (
    "org.apache.kafka.common.config.AbstractConfig",
    "org.apache.kafka.common.utils.AppInfoParser",
    "org.apache.kafka.clients.consumer.ConsumerConfig",
    "org.apache.kafka.clients.producer.ProducerConfig",
    "org.apache.kafka.clients.admin.AdminClientConfig",
    "kafka.server.KafkaConfig",
    "org.apache.kafka.connect.runtime.isolation",
)


def log4j2_config(name: str, level: str, quiet_level: str) -> Path:
    """Properties-format log4j2 config (avoids needing the YAML parser)."""
    return write(STATE / "conf" / f"log4j2-{name}.properties", f"""\
status = error
appender.out.type = Console
appender.out.name = OUT
appender.out.target = {"SYSTEM_ERR" if name == "tools" else "SYSTEM_OUT"}
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c{{1}})%n
rootLogger.level = {level}
rootLogger.appenderRef.out.ref = OUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
""" + "".join(f"logger.q{i}.name = {name}\nlogger.q{i}.level = {quiet_level}\n"
              for i, name in enumerate(CONFIG_DUMPERS)))


def reload4j_config() -> Path:
    """Kafka 3.9 (MirrorMaker 1) logs through reload4j."""
    return write(STATE / "conf" / "log4j-mm1.properties", """\
log4j.rootLogger=INFO, out
log4j.appender.out=org.apache.log4j.ConsoleAppender
log4j.appender.out.layout=org.apache.log4j.PatternLayout
log4j.appender.out.layout.ConversionPattern=[%d] %p %m (%c{1})%n
""" + "".join(f"log4j.logger.{name}=WARN\n" for name in CONFIG_DUMPERS))


def kafka_java(flavour: str, heap: Sequence[str], main: str, *args: str) -> list[str]:
    if flavour == "kafka39":
        logging = f"-Dlog4j.configuration=file:{reload4j_config()}"
    else:
        logging = f"-Dlog4j2.configurationFile={log4j2_config('service', 'INFO', 'WARN')}"
    return [java(), *heap, "-XX:+UseG1GC", "-Djava.awt.headless=true", logging,
            "-cp", classpath(flavour), main, *args]


# ---------------------------------------------------------------- Kafka brokers


def jaas(username: str, password: str) -> str:
    return (f'org.apache.kafka.common.security.scram.ScramLoginModule required '
            f'username="{username}" password="{password}";')


def server_properties(k: Kafka) -> str:
    listeners = [f"PLAINTEXT://127.0.0.1:{k.port}"]
    protocols = ["CONTROLLER:PLAINTEXT", "PLAINTEXT:PLAINTEXT"]
    sasl = ""
    if k.sasl_port is not None:
        listeners.append(f"SASL_PLAINTEXT://127.0.0.1:{k.sasl_port}")
        protocols.append("SASL_PLAINTEXT:SASL_PLAINTEXT")
        sasl = (f"sasl.enabled.mechanisms={SASL_MECHANISM}\n"
                f"listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config="
                f"org.apache.kafka.common.security.scram.ScramLoginModule required;\n")
    for name, port in k.tls_ports().items():
        listeners.append(f"{name}://127.0.0.1:{port}")
        protocols.append(f"{name}:{'SASL_SSL' if name == 'SASL_SSL' else 'SSL'}")
    if k.tls_ports():
        sasl += tls_server_properties()
    return f"""\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{k.controller_port}
listeners={",".join(listeners)},CONTROLLER://127.0.0.1:{k.controller_port}
advertised.listeners={",".join(listeners)}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map={",".join(protocols)}
{sasl}log.dirs={data_dir(k.name) / "data"}
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
"""


def tls_server_properties() -> str:
    """The broker's keystore and truststore, and what differs per TLS listener."""
    return f"""\
ssl.keystore.type=PKCS12
ssl.keystore.location={TLS / "server.p12"}
ssl.keystore.password={tls.STORE_PASSWORD}
ssl.truststore.type=PEM
ssl.truststore.location={TLS / "ca.pem"}
listener.name.mtls.ssl.client.auth=required
listener.name.otherhost.ssl.keystore.type=PKCS12
listener.name.otherhost.ssl.keystore.location={TLS / "other-host.p12"}
listener.name.otherhost.ssl.keystore.password={tls.STORE_PASSWORD}
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=\
org.apache.kafka.common.security.scram.ScramLoginModule required;
"""


def ensure_tls() -> None:
    """The test CA and certificates (stack/tls.py), made once; kept while valid."""
    if not tls.up_to_date(TLS):
        started = time.monotonic()
        tls.make_all(TLS)
        log(f"made the test CA and certificates in {TLS} in {time.monotonic() - started:.2f} s")


def new_cluster_id() -> str:
    """Same format as Kafka's Uuid.randomUuid().toString(): 22 url-safe base64 chars."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):
            return text


def format_kafka(k: Kafka) -> subprocess.Popen[bytes] | None:
    """Write the config and format the log dir once (data survives restarts)."""
    home = data_dir(k.name)
    props = write(home / "server.properties", server_properties(k))
    if (home / "data" / "meta.properties").exists():
        return None
    args = ["format", "-t", new_cluster_id(), "-c", str(props), "-g"]
    if k.sasl_port is not None:
        args += ["--add-scram", f"{SASL_MECHANISM}=[name={SASL_USERNAME},password={SASL_PASSWORD}]"]
    log(f"formatting {k.name} storage")
    cmd = kafka_java("kafka4", ["-Xmx256m"], "kafka.tools.StorageTool", *args)
    return run_logged(f"{k.name}-format", cmd)


def start_kafka(k: Kafka) -> Callable[[], None]:
    offset = log_size(k.name)
    spawn(k.name, kafka_java("kafka4", KAFKA_HEAP, "kafka.Kafka",
                             str(data_dir(k.name) / "server.properties")))
    started = log_contains(k.name, offset, "Kafka Server started")

    def ready() -> None:
        wait_until(k.name, lambda: started() and port_open(k.port), 120)
        if k.sasl_port is not None:
            ensure_scram_user(k)

    return ready


def ensure_scram_user(k: Kafka) -> None:
    """(Re)create the SCRAM user the SASL listener's tests log in with. The one added at
    format time was seen missing after a series of broker restarts here (every SASL login
    refused), so it is upserted at every start: idempotent, one short JVM."""
    command = kafka_java("kafka4", ["-Xmx256m"], "kafka.admin.ConfigCommand",
                         "--bootstrap-server", f"127.0.0.1:{k.port}", "--alter",
                         "--entity-type", "users", "--entity-name", SASL_USERNAME,
                         "--add-config",
                         f"{SASL_MECHANISM}=[iterations=4096,password={SASL_PASSWORD}]")
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise fail(k.name, f"cannot create the SCRAM user {SASL_USERNAME}: "
                           f"{done.stderr.strip()[-500:]}")


# ---------------------------------------------------------------- MirrorMaker


def sasl_client_properties() -> Path:
    return write(STATE / "conf" / "source-sasl.properties", f"""\
security.protocol=SASL_PLAINTEXT
sasl.mechanism={SASL_MECHANISM}
sasl.jaas.config={jaas(SASL_USERNAME, SASL_PASSWORD)}
""")


def start_mm1() -> Callable[[], None]:
    conf = data_dir("mm1")
    consumer = write(conf / "consumer.properties", f"""\
bootstrap.servers=127.0.0.1:{KAFKAS["kafka-source"].port}
group.id={MM1_GROUP}
auto.offset.reset=earliest
# pick up new oasis.* topics within seconds (default 5 min)
metadata.max.age.ms=1000
""")
    producer = write(conf / "producer.properties", f"""\
bootstrap.servers=127.0.0.1:{KAFKAS["kafka-target"].port}
linger.ms=5
""")
    offset = log_size("mm1")
    spawn("mm1", kafka_java("kafka39", ["-Xms128m", "-Xmx256m"], "kafka.tools.MirrorMaker",
                            "--consumer.config", str(consumer), "--producer.config", str(producer),
                            "--include", MM1_INCLUDE, "--offset.commit.interval.ms", "1000"))
    subscribed = log_contains("mm1", offset, "Subscribed to pattern")
    return lambda: wait_until("mm1", subscribed, 90)


def mm2_properties() -> str:
    # Backslashes must be doubled: java.util.Properties eats single ones.
    topics = MM2_TOPICS.replace("\\", "\\\\")
    return f"""\
clusters=source,target
source.bootstrap.servers=127.0.0.1:{KAFKAS["kafka-source"].port}
target.bootstrap.servers=127.0.0.1:{KAFKAS["kafka-target"].port}
source->target.enabled=true
source->target.topics={topics}
target->source.enabled=false
target->source.emit.heartbeats.enabled=false
replication.factor=1
checkpoints.topic.replication.factor=1
heartbeats.topic.replication.factor=1
offset-syncs.topic.replication.factor=1
offset.storage.replication.factor=1
status.storage.replication.factor=1
config.storage.replication.factor=1
# short intervals so tests see new topics and committed offsets within seconds
refresh.topics.interval.seconds=2
refresh.groups.interval.seconds=5
offset.flush.interval.ms=1000
# the worker of the source->target flow takes its settings from the target cluster's prefix
# (MirrorMakerConfig.workerConfig); the top-level key alone left the flush at its 60 s default
target.offset.flush.interval.ms=1000
sync.topic.configs.interval.seconds=10
# the Connect worker skips its class-path plugin scan (MirrorMaker still logs one warning)
plugin.discovery=service_load
"""


def start_mm2() -> Callable[[], None]:
    props = write(data_dir("mm2") / "mm2.properties", mm2_properties())
    offset = log_size("mm2")
    spawn("mm2", kafka_java("kafka4", ["-Xms128m", "-Xmx384m"],
                            "org.apache.kafka.connect.mirror.MirrorMaker", str(props)))
    started = log_contains("mm2", offset, "Kafka MirrorMaker started")
    return lambda: wait_until("mm2", started, 120)


# ---------------------------------------------------------------- Elasticsearch


def ensure_es_user() -> None:
    try:
        pwd.getpwnam(ES_USER)
    except KeyError:
        log(f"creating system user {ES_USER}")
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home",
                        "--shell", "/usr/sbin/nologin", ES_USER], check=True,
                       capture_output=True)


def node_user() -> str | None:
    """Who runs the Elasticsearch/OpenSearch nodes: ES_USER under root (they refuse root),
    else the current user (None: no change of user)."""
    return ES_USER if is_root() else None


def make_traversable(path: Path) -> None:
    """Give o+x to every ancestor so the ES user can reach its files (e.g. repo under /root)."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)


def es_config(e: Elastic) -> str:
    node = data_dir(e.name)
    common = f"""\
cluster.name: lagexp-{e.name}
node.name: {e.name}
discovery.type: single-node
network.host: 127.0.0.1
http.port: {e.http_port}
transport.port: {e.transport_port}
path.data: {node / "data"}
path.logs: {node / "logs"}
cluster.routing.allocation.disk.threshold_enabled: false
action.destructive_requires_name: false
"""
    if e.dist.product == "opensearch":  # the integ-test-zip has no security plugin
        return common
    security = "true" if e.secure else "false"
    return common + f"""\
xpack.security.enabled: {security}
xpack.security.http.ssl.enabled: {security}{es_tls_config() if e.secure else ""}
xpack.security.transport.ssl.enabled: false
xpack.security.enrollment.enabled: false
"""


def es_tls_config() -> str:
    # Elasticsearch reads only files inside its config directory: prepare_es copies them there.
    return """
xpack.security.http.ssl.certificate: tls/server.pem
xpack.security.http.ssl.key: tls/server-key.pem
xpack.security.http.ssl.certificate_authorities: [tls/ca.pem]"""


# jvm.options lines that write GC logs or heap dumps into the working directory
UNWANTED_JVM_OPTIONS = ("-Xlog:gc", "-Xloggc", "HeapDump", "GCLog", "PrintGC",
                        "PrintTenuring")


def prepare_es(e: Elastic) -> None:
    """Per-node config dir (copied from the distribution once), data and logs; under root
    owned by ES_USER."""
    home = es_home(e.dist)
    node = data_dir(e.name)
    conf = node / "config"
    if not conf.exists():
        shutil.copytree(home / "config", conf)
        options = [line for line in (conf / "jvm.options").read_text().splitlines()
                   if not any(word in line for word in UNWANTED_JVM_OPTIONS)]
        (conf / "jvm.options").write_text("\n".join(options) + "\n")
    write(conf / f"{e.dist.product}.yml", es_config(e))
    if e.secure:
        (conf / "tls").mkdir(exist_ok=True)
        for name in ("server.pem", "server-key.pem", "ca.pem"):
            shutil.copyfile(TLS / name, conf / "tls" / name)
    if e.secure and ES_AUTH_USERNAME not in (conf / "users").read_text():
        subprocess.run([str(home / "bin" / "elasticsearch-users"), "useradd", ES_AUTH_USERNAME,
                        "-p", ES_AUTH_PASSWORD, "-r", "superuser"],
                       env=es_env(e), check=True, capture_output=True)
    for sub in ("data", "logs", "tmp"):
        (node / sub).mkdir(parents=True, exist_ok=True)
    if is_root():
        ensure_es_user()
        make_traversable(REPO)
        subprocess.run(["chown", "-R", f"{ES_USER}:{ES_USER}", str(node)], check=True,
                       capture_output=True)


def es_env(e: Elastic) -> dict[str, str]:
    node = data_dir(e.name)
    prefix = e.dist.env_prefix
    jdk = java21_home() if e.dist.needs_java21 else java_home()
    return {**os.environ, f"{prefix}_JAVA_HOME": str(jdk),
            f"{prefix}_PATH_CONF": str(node / "config"), f"{prefix}_JAVA_OPTS": ES_HEAP,
            f"{prefix}_TMPDIR": str(node / "tmp"), "HOME": str(node)}


def es_url(e: Elastic) -> str:
    return f"{'https' if e.secure else 'http'}://127.0.0.1:{e.http_port}"


def http_status(url: str, context: ssl.SSLContext | None = None,
                headers: dict[str, str] | None = None) -> int:
    """HTTP status of GET url (0 when nothing answers)."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=2, context=context) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return 0


def es_request(e: Elastic, path: str, auth: tuple[str, str] | None = None) -> int:
    """HTTP status of GET path (0 when the node does not answer)."""
    context = ssl.create_default_context(cafile=str(TLS / "ca.pem")) if e.secure else None
    headers = {}
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    return http_status(f"{es_url(e)}{path}", context, headers)


def start_es(e: Elastic) -> Callable[[], None]:
    prepare_es(e)
    spawn(e.name, [str(es_home(e.dist) / "bin" / e.dist.product)], env=es_env(e),
          user=node_user(), cwd=data_dir(e.name))
    auth = (ES_AUTH_USERNAME, ES_AUTH_PASSWORD) if e.secure else None
    health = "/_cluster/health?wait_for_status=yellow&timeout=1s"
    return lambda: wait_until(e.name, lambda: es_request(e, health, auth) == 200, 180)


# ---------------------------------------------------------------- CloudWatch (moto)


def cloudwatch_endpoint() -> str:
    return f"http://127.0.0.1:{MOTO_PORT}"


def start_cloudwatch() -> Callable[[], None]:
    server = REPO / ".venv" / "bin" / "moto_server"
    if not server.exists():
        raise StackError(f"cloudwatch: no {server} (scripts/bootstrap installs it)")
    spawn(CLOUDWATCH, [str(server), "-H", "127.0.0.1", "-p", str(MOTO_PORT)])
    # any HTTP answer means the server is up (its dashboard path answers 200)
    return lambda: wait_until(
        CLOUDWATCH, lambda: http_status(f"{cloudwatch_endpoint()}/moto-api/") > 0, 60)


# ---------------------------------------------------------------- orchestration


def check_port_free(component: str) -> None:
    ports = {**{k: (v.port, *v.tls_ports().values()) for k, v in KAFKAS.items()},
             **{k: (v.http_port,) for k, v in ELASTICS.items()}, CLOUDWATCH: (MOTO_PORT,)}
    for port in ports.get(component, ()):
        if port_open(port):
            raise StackError(f"{component}: port {port} is taken by a process not started here")


def starter(component: str) -> Callable[[], Callable[[], None]]:
    if component in KAFKAS:
        return lambda: start_kafka(KAFKAS[component])
    if component in ELASTICS:
        return lambda: start_es(ELASTICS[component])
    if component == CLOUDWATCH:
        return start_cloudwatch
    return {"mm1": start_mm1, "mm2": start_mm2}[component]


def select(components: Sequence[str]) -> list[str]:
    unknown = [c for c in components if c not in COMPONENTS]
    if unknown:
        raise StackError(f"unknown component(s) {unknown}; known: {', '.join(COMPONENTS)}")
    return [c for c in COMPONENTS if not components or c in components]


def up(components: Sequence[str] = ()) -> dict[str, dict[str, str]]:
    """Start the named components (all if none) unless running; wait until ready."""
    with stack_lock():  # a second `up` waits, then finds them running
        return _up(components)


def _up(components: Sequence[str]) -> dict[str, dict[str, str]]:
    todo = [c for c in select(components) if not running(c)]
    for c in todo:
        check_port_free(c)
    if any(c == "kafka-source" or (c in ELASTICS and ELASTICS[c].secure) for c in todo):
        ensure_tls()
    # Resolve downloads first so the JVMs below start together.
    if any(c in KAFKAS or c == "mm2" for c in todo):
        libs("kafka4")
    if "mm1" in todo:
        libs("kafka39")
    formats = [f for c in todo if c in KAFKAS and (f := format_kafka(KAFKAS[c])) is not None]
    for proc in formats:
        if proc.wait() != 0:
            raise StackError(f"kafka storage format failed, see {LOGS}/kafka-*-format.log")
    waits: dict[str, Callable[[], None]] = {}
    for c in todo:  # brokers and Elasticsearch in parallel, then MirrorMakers
        if c not in MIRRORS:
            log(f"starting {c}")
            waits[c] = starter(c)()
    for c in todo:
        if c in KAFKAS:
            waits.pop(c)()
            log(f"{c} ready")
    for c in todo:
        if c in MIRRORS:
            log(f"starting {c}")
            waits[c] = starter(c)()
    for c, wait in waits.items():
        wait()
        log(f"{c} ready")
    return write_addresses()


def down(components: Sequence[str] = (), wipe: bool = False) -> None:
    """Stop the named components (all if none); with wipe also delete their data."""
    chosen = select(components)
    for c in reversed(chosen):  # MirrorMakers before the brokers they use
        stop(c)
    if wipe and not components:
        shutil.rmtree(STATE, ignore_errors=True)
    elif wipe:
        for c in chosen:
            shutil.rmtree(data_dir(c), ignore_errors=True)


def addresses() -> dict[str, dict[str, str]]:
    src, tgt = KAFKAS["kafka-source"], KAFKAS["kafka-target"]
    es, es_auth = ELASTICS["elasticsearch"], ELASTICS["elasticsearch-auth"]
    es9_auth = ELASTICS["elasticsearch9-auth"]
    return {
        "source": {"bootstrap": f"127.0.0.1:{src.port}",
                   "sasl_bootstrap": f"127.0.0.1:{src.sasl_port}",
                   "sasl_mechanism": SASL_MECHANISM, "sasl_username": SASL_USERNAME,
                   "sasl_password": SASL_PASSWORD,
                   "sasl_properties": str(sasl_client_properties())},
        "source_tls": {
            **{f"{name.lower()}_bootstrap": f"127.0.0.1:{port}"
               for name, port in src.tls_ports().items()},
            "dir": str(TLS), "store_password": tls.STORE_PASSWORD,
            "other_host": tls.OTHER_HOST},
        "target": {"bootstrap": f"127.0.0.1:{tgt.port}"},
        "elasticsearch": {"url": es_url(es)},
        "elasticsearch_auth": {"url": es_url(es_auth), "ca_file": str(TLS / "ca.pem"),
                               "username": ES_AUTH_USERNAME, "password": ES_AUTH_PASSWORD},
        "elasticsearch9": {"url": es_url(ELASTICS["elasticsearch9"]), "version": ES9_VERSION},
        "elasticsearch9_auth": {"url": es_url(es9_auth), "ca_file": str(TLS / "ca.pem"),
                                "username": ES_AUTH_USERNAME, "password": ES_AUTH_PASSWORD,
                                "version": ES9_VERSION},
        "opensearch": {"url": es_url(ELASTICS["opensearch"]), "version": OPENSEARCH_VERSION},
        "cloudwatch": {"endpoint": cloudwatch_endpoint()},
        "mm1": {"group": MM1_GROUP, "include": MM1_INCLUDE},
        "mm2": {"offsets_topic": MM2_OFFSETS_TOPIC, "topics": MM2_TOPICS},
    }


def write_addresses() -> dict[str, dict[str, str]]:
    data = addresses()
    write(ADDRESSES, json.dumps(data, indent=2) + "\n")
    return data


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in kB."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


def status() -> dict[str, dict[str, object]]:
    """Per component: running flag and, per live process, its memory."""
    result: dict[str, dict[str, object]] = {}
    for c in COMPONENTS:
        procs = {pid: memory_kb(pid) for pid in component_pids(c)}
        result[c] = {"running": running(c), "processes": procs, "log": str(log_file(c))}
    return result


# ---------------------------------------------------------------- Kafka CLI tools


def tool_command(name: str, args: Sequence[str]) -> list[str]:
    if name not in TOOLS:
        raise StackError(f"unknown tool {name}; known: {', '.join(TOOLS)}")
    logging = f"-Dlog4j2.configurationFile={log4j2_config('tools', 'WARN', 'WARN')}"
    # Client tools are short-lived: C1-only JIT and serial GC start fastest on 2 cores.
    return [java(), "-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", logging,
            "-cp", classpath("kafka4"), TOOLS[name], *args]


def run_tool(name: str, args: Sequence[str], input: str | None = None,
             timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run a Kafka CLI tool; output captured as text, never raises on a non-zero exit."""
    return subprocess.run(tool_command(name, args), input=input, capture_output=True, text=True,
                          timeout=timeout, stdin=None if input is not None else subprocess.DEVNULL)


# ---------------------------------------------------------------- handle for tests and benchmarks


@dataclass(frozen=True)
class StackTls:
    """kafka-source's TLS listeners and the files of stack/tls.py (see its docstring)."""

    ssl_bootstrap: str
    mtls_bootstrap: str
    sasl_ssl_bootstrap: str
    otherhost_bootstrap: str
    dir: Path
    store_password: str
    other_host: str

    def path(self, name: str) -> str:
        """A file of stack/tls.py by name, e.g. "ca.pem", "client.p12"."""
        return str(self.dir / name)


@dataclass(frozen=True)
class Stack:
    """Addresses and credentials of the running stack, plus control of its components."""

    source_bootstrap: str
    source_sasl_bootstrap: str
    sasl_mechanism: str
    sasl_username: str
    sasl_password: str
    sasl_properties: str
    target_bootstrap: str
    es_url: str
    es_auth_url: str
    es_auth_ca_file: str
    es_auth_username: str
    es_auth_password: str
    es9_url: str
    es9_auth_url: str
    """Elasticsearch 9 with security on: es_auth_ca_file, es_auth_username, es_auth_password."""
    opensearch_url: str
    cloudwatch_endpoint: str
    """moto's standalone server: boto3 with endpoint_url=this and any dummy credentials."""
    mm1_group: str
    mm2_offsets_topic: str
    tls: StackTls

    def run_tool(self, name: str, *args: str, input: str | None = None,
                 timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run a Kafka CLI tool (e.g. "kafka-consumer-groups"); never raises on exit codes."""
        return run_tool(name, args, input=input, timeout=timeout)

    def stop(self, component: str) -> None:
        """Stop one component (e.g. "elasticsearch", "kafka-source"); its data is kept."""
        stop(component)

    def start(self, component: str) -> None:
        """Start one component again and wait until it is ready."""
        up([component])


def ensure_up() -> Stack:
    """Start whatever is not running (all components) and return the handle."""
    data = up()
    src, es_auth, tls_data = data["source"], data["elasticsearch_auth"], data["source_tls"]
    return Stack(
        source_bootstrap=src["bootstrap"], source_sasl_bootstrap=src["sasl_bootstrap"],
        sasl_mechanism=src["sasl_mechanism"], sasl_username=src["sasl_username"],
        sasl_password=src["sasl_password"], sasl_properties=src["sasl_properties"],
        target_bootstrap=data["target"]["bootstrap"], es_url=data["elasticsearch"]["url"],
        es_auth_url=es_auth["url"], es_auth_ca_file=es_auth["ca_file"],
        es_auth_username=es_auth["username"],
        es_auth_password=es_auth["password"], es9_url=data["elasticsearch9"]["url"],
        es9_auth_url=data["elasticsearch9_auth"]["url"],
        opensearch_url=data["opensearch"]["url"],
        cloudwatch_endpoint=data["cloudwatch"]["endpoint"], mm1_group=data["mm1"]["group"],
        mm2_offsets_topic=data["mm2"]["offsets_topic"],
        tls=StackTls(ssl_bootstrap=tls_data["ssl_bootstrap"],
                     mtls_bootstrap=tls_data["mtls_bootstrap"],
                     sasl_ssl_bootstrap=tls_data["sasl_ssl_bootstrap"],
                     otherhost_bootstrap=tls_data["otherhost_bootstrap"],
                     dir=Path(tls_data["dir"]), store_password=tls_data["store_password"],
                     other_host=tls_data["other_host"]),
    )


# ---------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; any failure is one line on stderr and exit 1, never a traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return run_command(argv)
    except (StackError, OSError, subprocess.SubprocessError) as err:
        print(f"stack: {one_line(err)}", file=sys.stderr)
        return 1


def one_line(err: BaseException) -> str:
    """The error as one line; a failed command adds its own last line of stderr."""
    text = str(err)
    if isinstance(err, subprocess.CalledProcessError) and err.stderr:
        output = err.stderr if isinstance(err.stderr, str) else err.stderr.decode(errors="replace")
        lines = output.strip().splitlines()
        if lines:
            text += f": {lines[-1]}"
    return " ".join(text.split())


def run_command(argv: list[str]) -> int:
    if argv and argv[0] in TOOLS:
        cmd = tool_command(argv[0], argv[1:])
        os.execv(cmd[0], cmd)
    parser = argparse.ArgumentParser(prog="scripts/stack", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("up", "down"):
        p = sub.add_parser(name)
        p.add_argument("components", nargs="*", metavar="COMPONENT", help=", ".join(COMPONENTS))
    sub.choices["down"].add_argument("--wipe", action="store_true", help="also delete data")
    sub.add_parser("status")
    sub.add_parser("addresses")
    for tool in TOOLS:
        sub.add_parser(tool, help="Kafka CLI passthrough")
    ns = parser.parse_args(argv)
    if ns.command == "up":
        up(ns.components)
        print(ADDRESSES)
    elif ns.command == "down":
        down(ns.components, ns.wipe)
    elif ns.command == "status":
        report = status()
        print(json.dumps(report, indent=2))
        return 0 if all(s["running"] for s in report.values()) else 3
    elif ns.command == "addresses":
        print(json.dumps(addresses(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
