"""deploy/: the Kubernetes manifests agree with the settings the worker reads (no cluster runs
here, so this is as far as they can be checked, like tests/test_compose.py), and every metric the
Grafana dashboard queries is one a running worker's /metrics exposes."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import yaml
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from streamapp.broker import HOST, EmbeddedBroker
from streamapp.settings import ENV_PREFIX, Settings
from tests.conftest import StartWorker, demo_rows, send, wait_until

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
DASHBOARD = ROOT / "deploy" / "grafana" / "streamapp.json"
SECRET_VALUE = "from-a-secret"  # what a secretKeyRef resolves to, for validation
# STREAMAPP_SASL_MECHANISM -> the `sasl` of KEDA's Kafka scaler
KEDA_SASL = {"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256",
             "SCRAM-SHA-512": "scram_sha512"}

Manifest = dict[str, Any]


def manifests() -> dict[tuple[str, str], Manifest]:
    """(kind, name) -> manifest, of every file the kustomization lists."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    found: dict[tuple[str, str], Manifest] = {}
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            found[(doc["kind"], doc["metadata"]["name"])] = doc
    return found


def the(kind: str) -> Manifest:
    [doc] = [doc for (k, _), doc in manifests().items() if k == kind]
    return doc


def container() -> Manifest:
    [worker] = the("StatefulSet")["spec"]["template"]["spec"]["containers"]
    return dict(worker)


def worker_env() -> dict[str, str]:
    """The environment a worker pod gets: its ConfigMaps, then its own `env` entries."""
    worker = container()
    env: dict[str, str] = {}
    for source in worker["envFrom"]:
        config = manifests()[("ConfigMap", source["configMapRef"]["name"])]
        env.update({k: str(v) for k, v in config["data"].items()})
    for entry in worker["env"]:
        env[entry["name"]] = str(entry.get("value", SECRET_VALUE))
    return env


def secret_mounts() -> list[str]:
    pod = the("StatefulSet")["spec"]["template"]["spec"]
    secrets = {v["name"] for v in pod["volumes"] if "secret" in v}
    return [m["mountPath"] for m in container()["volumeMounts"] if m["name"] in secrets]


def settings(tmp_path: Path) -> Settings:
    """The pod's settings as the worker reads them. The worker checks that the files a secret
    volume provides exist: they are made under `tmp_path`, and their variables point there."""
    env = worker_env()
    for name, value in env.items():
        path = Path(value)
        if any(path.is_relative_to(mount) for mount in secret_mounts()):
            local = tmp_path / path.relative_to("/")
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_text(SECRET_VALUE)
            env[name] = str(local)
    return Settings.from_env(env)


def mount_of(path: Path) -> Manifest:
    """The container's volume mount that holds `path`."""
    [mount] = [m for m in container()["volumeMounts"] if path.is_relative_to(m["mountPath"])]
    return dict(mount)


def volume(name: str) -> Manifest:
    pod = the("StatefulSet")["spec"]["template"]["spec"]
    [found] = [v for v in pod["volumes"] if v["name"] == name]
    return dict(found)


def test_worker_environment_is_valid_streamapp_settings(tmp_path: Path) -> None:
    env = worker_env()
    assert all(name.startswith(ENV_PREFIX) for name in env)
    known = {ENV_PREFIX + field.upper() for field in Settings.model_fields}
    assert set(env) <= known, set(env) - known
    read = settings(tmp_path)  # raises on unknown names or bad values
    assert read.web_bind == "0.0.0.0"  # reachable by the probes and Prometheus
    assert read.device == "cuda"
    assert read.intake == "batch" and not read.fanout  # the GPU path, as docker-compose.yml


def test_probes_and_ports_match_the_web_view(tmp_path: Path) -> None:
    read = settings(tmp_path)
    worker = container()
    [port] = worker["ports"]
    assert port["containerPort"] == read.web_port
    for name, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"),
                       ("readinessProbe", "/readyz")):
        probe = worker[name]["httpGet"]
        assert probe["path"] == path and probe["port"] in (port["name"], read.web_port)
        # /readyz may wait PROBE_TIMEOUT_S for a broker: the probe must wait longer
        assert worker[name]["timeoutSeconds"] > 2
    annotations = the("StatefulSet")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(read.web_port)
    assert annotations["prometheus.io/path"] == "/metrics"
    [service_port] = the("Service")["spec"]["ports"]
    assert service_port["targetPort"] in (port["name"], read.web_port)


def test_one_pod_per_worker_with_its_own_state_a_gpu_and_the_model(tmp_path: Path) -> None:
    statefulset = the("StatefulSet")
    assert statefulset["spec"]["serviceName"] == the("Service")["metadata"]["name"]
    read = settings(tmp_path)
    state = mount_of(read.datadir)
    claims = [c["metadata"]["name"] for c in statefulset["spec"]["volumeClaimTemplates"]]
    assert state["name"] in claims  # a volume per pod, never shared
    resources = container()["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1
    assert read.model is not None
    models = mount_of(read.model)
    assert models["readOnly"]
    claim = volume(models["name"])["persistentVolumeClaim"]["claimName"]
    assert ("PersistentVolumeClaim", claim) in manifests()


def test_sasl_and_tls_come_from_the_secret(tmp_path: Path) -> None:
    read = settings(tmp_path)
    assert read.security_protocol == "SASL_SSL"
    assert read.sasl_password is None  # never in the manifests
    username = [e for e in container()["env"] if e["name"] == "STREAMAPP_SASL_USERNAME"]
    secret_name = username[0]["valueFrom"]["secretKeyRef"]["name"]
    env = worker_env()
    for name in ("STREAMAPP_SASL_PASSWORD_FILE", "STREAMAPP_SSL_CAFILE"):
        path = Path(env[name])
        mount = mount_of(path)
        secret = volume(mount["name"])["secret"]
        assert secret["secretName"] == secret_name and mount["readOnly"]
        relative = str(path.relative_to(mount["mountPath"]))
        assert relative in {item["path"] for item in secret["items"]}


def test_keda_scales_the_workers_on_the_lag_of_the_group_that_works(tmp_path: Path) -> None:
    read = settings(tmp_path)
    scaled = the("ScaledObject")["spec"]
    target = scaled["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("StatefulSet",
                                                the("StatefulSet")["metadata"]["name"])
    assert scaled["minReplicaCount"] == 1
    assert scaled["maxReplicaCount"] == read.partitions
    [trigger] = scaled["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    group = f"{read.app_id}-intake" if read.intake == "batch" else read.app_id
    topic = read.comments_topic if not read.fanout else f"{read.app_id}-inference"
    assert (meta["consumerGroup"], meta["topic"]) == (group, topic)
    assert meta["bootstrapServers"].split(",") == [
        url.split("://", 1)[-1] for url in read.broker_urls]
    assert meta["offsetResetPolicy"] == "earliest"  # as the workers' consumers
    assert meta["sasl"] == KEDA_SASL[read.sasl_mechanism]
    assert meta["tls"] == ("enable" if read.security_protocol.endswith("SSL") else "disable")
    auth = the("TriggerAuthentication")
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    keys = {(ref["parameter"], ref["name"], ref["key"]) for ref in auth["spec"]["secretTargetRef"]}
    secret = volume(mount_of(Path(worker_env()["STREAMAPP_SSL_CAFILE"]))["name"])["secret"]
    items = {item["key"] for item in secret["items"]}
    assert {"username", "password", "ca"} == {parameter for parameter, _, _ in keys}
    assert all(name == secret["secretName"] for _, name, _ in keys)
    assert {key for p, _, key in keys if p != "username"} <= items
    [username] = [e["valueFrom"]["secretKeyRef"] for e in container()["env"]
                  if e["name"] == "STREAMAPP_SASL_USERNAME"]
    assert ("username", username["name"], username["key"]) in keys  # the pod's user


def dashboard_metrics() -> set[str]:
    board = json.loads(DASHBOARD.read_text())
    queries = [target["expr"] for panel in board["panels"] for target in panel["targets"]]
    queries += [variable["definition"] for variable in board["templating"]["list"]
                if "definition" in variable]
    names = {name for query in queries for name in re.findall(r"\b(?:streamapp|faust)_\w+", query)}
    assert names
    return names


def test_every_metric_the_dashboard_queries_is_exposed(broker: EmbeddedBroker,
                                                      start_worker: StartWorker,
                                                      tmp_path: Path) -> None:
    read = settings(tmp_path)
    worker = start_worker(intake=read.intake, fanout=str(read.fanout).lower(),
                          ready_topic=read.comments_topic)
    rows = demo_rows(40, seed=3)
    send(broker, [orjson.dumps(row) for row in rows] + [b"{not json"])  # one dead letter

    def processed() -> bool:
        agents = worker.stats()["agents"]
        return bool(agents["predicted"] >= len(rows) and agents["dead_letters"] >= 1)

    wait_until(processed, 60, "the comments to be processed")
    base = f"http://{HOST}:{worker.web_port}"
    for path in ("/healthz", "/readyz"):  # the probes the manifests name answer
        with urllib.request.urlopen(base + path, timeout=10) as response:
            assert response.status == 200
    samples: list[Sample] = []

    def lag_scraped() -> bool:
        """Scrape; the lag gauge covers the intake's partitions (a lag read can time out on a
        loaded machine: the gauge is then empty for that scrape, and the next one tries again)"""
        with urllib.request.urlopen(base + "/metrics", timeout=10) as response:
            samples[:] = [sample for family in
                          text_string_to_metric_families(response.read().decode())
                          for sample in family.samples]
        return f"{read.comments_topic}:0" in lagging()

    def lagging() -> set[str]:
        return {f"{s.labels['topic']}:{s.labels['partition']}" for s in samples
                if s.name == "streamapp_consumer_lag"}

    wait_until(lag_scraped, 30, "/metrics to show the consumer lag")
    assert lagging() <= set(worker.stats()["assigned_partitions"])
    missing = dashboard_metrics() - {sample.name for sample in samples}
    assert not missing, f"queried by the dashboard, not exposed: {sorted(missing)}"
