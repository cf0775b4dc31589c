"""deploy/k8s, rendered as kustomize would and validated offline against the Kubernetes API
schemas (kubernetes-validate ships them), then checked for what running oms there needs."""

from __future__ import annotations

import copy
import re
from typing import Any

import kubernetes_validate
import pytest

from oms_platform.settings import SERVICES, Settings
from tests.deploy.files import (
    K8S,
    by_kind,
    k8s_resources,
    kustomization,
    pod_spec,
    unknown_settings,
)

# The oldest Kubernetes still supported upstream when this was written, and the newest the
# pinned kubernetes-validate knows.
VERSIONS = ["1.31.0", kubernetes_validate.latest_version()]


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_is_valid_for_kubernetes(version: str) -> None:
    resources = k8s_resources()
    assert len(resources) > 20
    for file, resource in resources:
        try:
            # strict: an unknown field (a typo) is an error too.
            kubernetes_validate.validate(resource, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{file}: {resource['kind']}/{resource['metadata']['name']}: {error}")


def test_validation_catches_a_misspelt_field() -> None:
    deployment = copy.deepcopy(by_kind("Deployment")["capture"])
    pod_spec(deployment)["containers"][0]["readinesProbe"] = {"grpc": {"port": 15051}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[-1], strict=True)


def test_kustomization_lists_every_manifest_in_the_folder() -> None:
    listed = set(kustomization()["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


def test_each_service_is_probed_on_its_grpc_health_and_reachable_by_its_peers() -> None:
    config = by_kind("ConfigMap")["oms-config"]["data"]
    services = by_kind("Service")
    for name in SERVICES:
        port = Settings().port_of(name)
        (container,) = pod_spec(by_kind("Deployment")[name])["containers"]
        assert container["args"] == ["serve", name]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"] == {"port": port}, (name, probe)
        assert {"name": "grpc", "containerPort": port} in container["ports"]
        assert config[f"OMS_{name.upper()}_ADDRESS"] == f"{name}:{port}"
        assert services[name]["spec"]["ports"][0]["port"] == port


def test_services_scale_on_cpu_and_keep_one_replica_through_disruptions() -> None:
    deployments = by_kind("Deployment")
    autoscalers = by_kind("HorizontalPodAutoscaler")
    budgets = by_kind("PodDisruptionBudget")
    for name in SERVICES:
        hpa = autoscalers[name]
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": name,
        }
        assert hpa["spec"]["minReplicas"] >= 2
        # The autoscaler owns the replica count.
        assert "replicas" not in deployments[name]["spec"]
    for name in [*SERVICES, "worker"]:
        labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        selector = budgets[name]["spec"]["selector"]["matchLabels"]
        assert selector.items() <= labels.items(), name
        assert budgets[name]["spec"]["minAvailable"] == 1
    assert deployments["worker"]["spec"]["replicas"] >= 2
    assert "worker" not in autoscalers


def test_service_selectors_pick_their_own_pods() -> None:
    deployments = by_kind("Deployment")
    for name, service in by_kind("Service").items():
        labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items(), name
        named = {
            p["name"]
            for p in deployments[name]["spec"]["template"]["spec"]["containers"][0]["ports"]
        }
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in named, (name, port)


def workloads() -> dict[str, dict[str, Any]]:
    return {**by_kind("Deployment"), **by_kind("Job")}


def test_every_pod_runs_unprivileged_with_limits() -> None:
    for name, workload in workloads().items():
        pod = pod_spec(workload)
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] == 10001, name
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            assert {"cpu", "memory"} <= container["resources"]["requests"].keys(), name
            assert {"cpu", "memory"} <= container["resources"]["limits"].keys(), name
            assert container["image"] == "oms:local", name


def test_migrations_run_as_a_job() -> None:
    job = by_kind("Job")["migrate"]
    assert pod_spec(job)["containers"][0]["args"] == ["migrate"]
    assert pod_spec(job)["restartPolicy"] in {"OnFailure", "Never"}


def test_every_oms_variable_is_a_setting() -> None:
    names = set(by_kind("ConfigMap")["oms-config"]["data"])
    for workload in workloads().values():
        for container in pod_spec(workload)["containers"]:
            names |= {e["name"] for e in container.get("env", [])}
    assert "OMS_DATABASE_URL" in names and "OMS_TEMPORAL_API_KEY" in names
    assert unknown_settings(names) == set()


def test_secrets_referenced_are_the_ones_the_config_documents() -> None:
    header = (K8S / "config.yaml").read_text()
    documented = set(re.findall(r"^#\s+(oms-[a-z-]+)\s", header, flags=re.MULTILINE))
    referenced: set[str] = set()
    for workload in workloads().values():
        pod = pod_spec(workload)
        referenced |= {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
        for container in pod["containers"]:
            for entry in container.get("env", []):
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    referenced.add(ref["name"])
    assert referenced == documented


def test_everything_lands_in_the_oms_namespace() -> None:
    for file, resource in k8s_resources():
        if resource["kind"] != "Namespace":
            assert resource["metadata"]["namespace"] == "oms", file
        assert resource["metadata"]["labels"]["app.kubernetes.io/part-of"] == "oms", file


def test_pods_are_given_time_to_drain_before_they_are_killed() -> None:
    config = by_kind("ConfigMap")["oms-config"]["data"]
    not_serving = float(config["OMS_SHUTDOWN_NOT_SERVING_SECONDS"])
    grace = float(config["OMS_SHUTDOWN_GRACE_SECONDS"])
    deployments = by_kind("Deployment")
    for name in SERVICES:
        pod = pod_spec(deployments[name])
        period = pod["containers"][0]["readinessProbe"]["periodSeconds"]
        # Long enough NOT_SERVING for readiness to notice, and time to drain after it.
        assert not_serving >= period, name
        assert pod["terminationGracePeriodSeconds"] > not_serving + grace, name
    assert pod_spec(deployments["worker"])["terminationGracePeriodSeconds"] > grace
