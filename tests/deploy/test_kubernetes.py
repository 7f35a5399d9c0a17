"""The kustomize overlays render, every core object is valid against the Kubernetes schemas
(kubernetes-validate, offline, strict: an unknown field fails), and the objects keep the
promises docs/operations.md makes: probes, non-root, read-only root, drain time, egress rules."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from service.settings import Settings
from tests.support.deploy import OVERLAYS, REPO, load_yaml, run, tool

# The oldest and newest minor versions the manifests are checked against (autoscaling/v2 and
# policy/v1 need 1.23+; kubernetes-validate ships schemas up to its own version).
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
EXPECTED_KINDS = {
    "ServiceAccount", "ConfigMap", "Service", "Deployment", "Job", "PodDisruptionBudget",
    "HorizontalPodAutoscaler", "NetworkPolicy", "ServiceMonitor",
}  # fmt: skip
# kubernetes-validate knows the core API only; the ServiceMonitor (a Prometheus Operator CRD) is
# checked against a schema of our own, below.
CRDS = {"ServiceMonitor"}
PRIVATE_RANGES = {
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "100.64.0.0/10",
}
SERVICEMONITOR_SCHEMA = Path(__file__).with_name("servicemonitor.schema.json")

Doc = dict[str, Any]


def _one(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _validate(doc: Doc, version: str) -> None:
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} on {version}: {exc.message}")


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_is_valid_kubernetes(
    rendered: dict[str, list[Doc]], overlay: str, version: str
) -> None:
    docs = rendered[overlay]
    assert {d["kind"] for d in docs} == EXPECTED_KINDS
    for doc in docs:
        if doc["kind"] not in CRDS:
            _validate(doc, version)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_secret_template_is_valid_and_holds_placeholders_only(version: str) -> None:
    secret = load_yaml(REPO / "k8s" / "base" / "secret.template.yaml")
    _validate(secret, version)
    assert secret["metadata"]["name"] == "identity-webhooks-secrets"
    values = secret["stringData"]
    assert set(values) == {"WEBHOOKS_DATABASE_URL", "WEBHOOKS_ENCRYPTION_KEY"}
    assert all("REPLACE_ME" in value for value in values.values()), values
    assert "data" not in secret


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_servicemonitor_scrapes_the_service(
    rendered: dict[str, list[Doc]], overlay: str, tmp_path: Path
) -> None:
    docs = rendered[overlay]
    monitor = _one(docs, "ServiceMonitor")
    path = tmp_path / "servicemonitor.json"
    path.write_text(json.dumps(monitor))
    run(tool("check-jsonschema"), "--schemafile", str(SERVICEMONITOR_SCHEMA), str(path))
    service = _one(docs, "Service")
    wanted = monitor["spec"]["selector"]["matchLabels"]
    assert wanted.items() <= service["metadata"]["labels"].items()
    ports = {port["name"] for port in service["spec"]["ports"]}
    assert {endpoint["port"] for endpoint in monitor["spec"]["endpoints"]} <= ports


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deployment_keeps_its_promises(rendered: dict[str, list[Doc]], overlay: str) -> None:
    docs = rendered[overlay]
    deployment = _one(docs, "Deployment")
    pod = deployment["spec"]["template"]
    spec = pod["spec"]
    (container,) = spec["containers"]
    assert (
        deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    )
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["args"] == ["serve"]
    assert container["resources"]["requests"]["cpu"]
    assert container["resources"]["limits"]["memory"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    volumes = {v["name"]: v for v in spec["volumes"]}
    tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
    assert "emptyDir" in volumes[tmp["name"]]

    # The pod must outlive its drain: preStop pause + WEBHOOKS_SHUTDOWN_GRACE + time to commit.
    config = _one(docs, "ConfigMap")["data"]
    grace = Settings(
        _env_file=None, shutdown_grace=config["WEBHOOKS_SHUTDOWN_GRACE"]
    ).shutdown_grace
    pause = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert spec["terminationGracePeriodSeconds"] >= pause + grace + 10

    env_from = {ref: source[ref]["name"] for source in container["envFrom"] for ref in source}
    assert env_from["configMapRef"] == config_name(docs)
    assert env_from["secretRef"] == "identity-webhooks-secrets"

    hpa = _one(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2  # several consumers in one group
    assert "replicas" not in deployment["spec"]  # the HPA owns the count
    pdb = _one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()

    job = _one(docs, "Job")
    (migrate,) = job["spec"]["template"]["spec"]["containers"]
    assert migrate["args"] == ["migrate"]
    assert migrate["image"] == container["image"]


def config_name(docs: list[Doc]) -> str:
    return str(_one(docs, "ConfigMap")["metadata"]["name"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_egress_allows_kafka_postgres_dns_and_the_public_internet_only(
    rendered: dict[str, list[Doc]], overlay: str
) -> None:
    docs = rendered[overlay]
    policy = _one(docs, "NetworkPolicy")
    pod_labels = _one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}

    ports_allowed = set()
    blocks = []
    for rule in policy["spec"]["egress"]:
        peers = rule["to"]
        if any("ipBlock" in peer for peer in peers):
            assert "ports" not in rule  # customer endpoints may listen on any port
            blocks += [peer["ipBlock"] for peer in peers]
        else:
            assert all("podSelector" in peer for peer in peers)
            ports_allowed |= {(p["protocol"], p["port"]) for p in rule["ports"]}
    assert {("UDP", 53), ("TCP", 53), ("TCP", 9092), ("TCP", 5432)} <= ports_allowed

    v4 = next(b for b in blocks if b["cidr"] == "0.0.0.0/0")
    assert set(v4["except"]) >= PRIVATE_RANGES
    v6 = next(b for b in blocks if b["cidr"] == "::/0")
    assert ipaddress.ip_network("fc00::/7") in {ipaddress.ip_network(n) for n in v6["except"]}
    assert len(blocks) == 2
