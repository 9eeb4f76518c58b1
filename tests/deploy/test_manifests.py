"""deploy/: every manifest is valid YAML (yamllint), every Kubernetes object validates against the
Kubernetes schemas, and the manifests agree with the image and the service (ports, probes, user, metric
names, setting names)."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from yamllint import linter
from yamllint.config import YamlLintConfig

from latentcast.service.config import Settings
from latentcast.service.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
YAML_FILES = sorted([*DEPLOY.rglob("*.yaml"), ROOT / ".yamllint.yaml"])
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@functools.cache
def _objects() -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in _docs(path):
            if doc["apiVersion"].startswith(("kustomize.", "ray.io/")):  # not Kubernetes' own kinds
                continue
            out[(doc["kind"], doc["metadata"]["name"])] = doc
    return out


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_yamllint(path: Path) -> None:
    conf = YamlLintConfig(file=str(ROOT / ".yamllint.yaml"))
    problems = [f"{p.line}:{p.column} {p.message}" for p in linter.run(path.read_text(), conf, str(path))]
    assert problems == []


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("key", sorted(_objects()), ids=lambda k: f"{k[0]}/{k[1]}")
def test_kubernetes_schema(key: tuple[str, str], version: str) -> None:
    kubernetes_validate.validate(_objects()[key], version, strict=True)  # raises on any violation


def test_kustomization_lists_the_serving_manifests() -> None:
    (kust,) = _docs(K8S / "kustomization.yaml")
    listed = set(kust["resources"])
    assert all((K8S / name).is_file() for name in listed)
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    # applied on their own: the training Job, the batch RayJob, and the adapter's rules (in the
    # monitoring namespace)
    assert on_disk - listed == {"training-job.yaml", "batch-rayjob.yaml", "prometheus-adapter-rules.yaml"}


def test_the_batch_rayjob_runs_the_cli_on_gpu_workers_as_the_image_user() -> None:
    """KubeRay's RayJob (a CRD kubernetes-validate does not know): its pod templates validate as
    Kubernetes PodTemplates, its entrypoint is a `latentcast forecast --engine ray` the CLI accepts,
    and its workers ask for a GPU each and mount the volume the training Job writes."""
    import shlex

    import typer.main

    from latentcast.cli import app

    (job,) = _docs(K8S / "batch-rayjob.yaml")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True and spec["backoffLimit"] == 0
    cluster = spec["rayClusterSpec"]
    templates = [cluster["headGroupSpec"]["template"], *(g["template"] for g in cluster["workerGroupSpecs"])]
    for version in K8S_VERSIONS:
        for i, template in enumerate(templates):
            obj = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": f"t{i}"}, "template": template}
            kubernetes_validate.validate(obj, version, strict=True)
    for template in templates:
        assert template["spec"]["securityContext"]["runAsUser"] == _image_user()
        assert any(
            v["persistentVolumeClaim"]["claimName"] == "latentcast-runs"
            for v in template["spec"]["volumes"]
            if "persistentVolumeClaim" in v
        )
    (worker,) = cluster["workerGroupSpecs"]
    assert worker["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    words = shlex.split(spec["entrypoint"])
    assert words[:4] == ["latentcast", "forecast", "--engine", "ray"]
    command = typer.main.get_command(app).commands["forecast"]  # type: ignore[attr-defined]
    ctx = command.make_context("forecast", words[2:])  # raises on an option the CLI does not have
    assert ctx.params["address"] == "auto" and ctx.params["gpus_per_worker"] == 1.0


def _image_user() -> int:
    (user,) = re.findall(r"^USER (\d+)", DOCKERFILE, re.M)
    return int(user)


def test_deployment_runs_the_image_as_its_non_root_user_on_one_gpu_with_probes() -> None:
    dep = _objects()[("Deployment", "latentcast")]
    pod = dep["spec"]["template"]["spec"]
    (ctr,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == _image_user() != 0
    assert ctr["securityContext"]["allowPrivilegeEscalation"] is False
    assert ctr["resources"]["limits"]["nvidia.com/gpu"] == 1 and ctr["resources"]["requests"]["nvidia.com/gpu"] == 1
    port = ctr["ports"][0]
    assert port["containerPort"] == 8000 and "EXPOSE 8000" in DOCKERFILE
    probes = {k: ctr[k]["httpGet"] for k in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert probes["startupProbe"]["path"] == "/readyz" and probes["readinessProbe"]["path"] == "/readyz"
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert all(p["port"] == port["name"] for p in probes.values())
    start = ctr["startupProbe"]
    assert start["periodSeconds"] * start["failureThreshold"] >= 180  # covers load + warm-up (Dockerfile)
    refs = {next(iter(r.values()))["name"] for r in ctr["envFrom"]}
    assert refs == {"latentcast-settings", "latentcast-api-key"}
    svc = _objects()[("Service", "latentcast")]
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    pdb = _objects()[("PodDisruptionBudget", "latentcast")]
    assert pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]


def test_settings_in_the_configmap_and_secret_are_real_settings() -> None:
    fields = {f"LATENTCAST_{name.upper()}" for name in Settings.model_fields}
    config = _objects()[("ConfigMap", "latentcast-settings")]["data"]
    secret = _objects()[("Secret", "latentcast-api-key")]["stringData"]
    assert set(config) <= fields and set(secret) == {"LATENTCAST_API_KEY"}
    overrides = {k.removeprefix("LATENTCAST_").lower(): v for k, v in {**config, **secret}.items()}
    overrides.pop("device")  # cuda: not available here
    Settings(**overrides)  # every value parses and passes the start-up checks


def test_autoscaler_metric_is_one_the_service_exports_and_the_adapter_serves() -> None:
    hpa = _objects()[("HorizontalPodAutoscaler", "latentcast")]
    (metric,) = hpa["spec"]["metrics"]
    name = metric["pods"]["metric"]["name"]
    exported = {m.name for m in Metrics().registry.collect()}
    assert name in exported
    adapter = _objects()[("ConfigMap", "prometheus-adapter-latentcast")]
    rules = yaml.safe_load(adapter["data"]["config.yaml"])["rules"]
    assert any(r["name"]["as"] == name and name in r["seriesQuery"] for r in rules)
    assert hpa["spec"]["scaleTargetRef"]["name"] == "latentcast"


def test_training_job_runs_torchrun_with_rank_zero_reachable() -> None:
    job = _objects()[("Job", "latentcast-train")]
    spec = job["spec"]
    (ctr,) = spec["template"]["spec"]["containers"]
    cmd = ctr["command"]
    assert cmd[0] == "torchrun" and spec["completionMode"] == "Indexed"
    nnodes = int(next(a for a in cmd if a.startswith("--nnodes=")).split("=")[1])
    assert nnodes == spec["completions"] == spec["parallelism"]
    assert "--node_rank=$(JOB_COMPLETION_INDEX)" in cmd
    svc = _objects()[("Service", "latentcast-train")]
    assert f"--master_addr=latentcast-train-0.{svc['metadata']['name']}" in cmd
    assert spec["template"]["spec"]["subdomain"] == svc["metadata"]["name"]
    assert cmd[cmd.index("-m") + 1 : cmd.index("-m") + 3] == ["latentcast", "train"]


def test_compose_reserves_a_gpu_and_checks_readiness() -> None:
    (compose,) = _docs(DEPLOY / "compose.yaml")
    svc = compose["services"]["latentcast"]
    (device,) = svc["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"] and device["count"] == 1
    assert "/readyz" in " ".join(svc["healthcheck"]["test"])
    assert svc["ports"][0].endswith(":8000") and svc["volumes"][0].endswith(":/models:ro")
    assert set(svc["environment"]) <= {f"LATENTCAST_{n.upper()}" for n in Settings.model_fields}


def test_dockerfile_shape() -> None:
    assert re.search(r"^FROM \$\{BASE_IMAGE\} AS build$", DOCKERFILE, re.M)
    assert re.search(r"^FROM \$\{BASE_IMAGE\} AS runtime$", DOCKERFILE, re.M)
    assert re.search(r"^ARG TORCH_VARIANT=cuda$", DOCKERFILE, re.M)
    assert _image_user() != 0
    assert re.search(r"^HEALTHCHECK .*--start-period=\d+s", DOCKERFILE, re.M) and "/readyz" in DOCKERFILE
    (cmd,) = re.findall(r"^CMD (.*)$", DOCKERFILE, re.M)
    assert cmd.startswith("[")  # exec form: the server is PID 1 and gets SIGTERM
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignored[0].startswith("#") and "*" in ignored  # everything out, then only what the build copies
