"""The files of deploy/, loaded as the tools that read them would: compose.yaml as YAML (merge
keys resolved), the Kubernetes manifests as kustomize renders them (the transformers
kustomization.yaml uses: namespace, labels, images)."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from oms_platform.settings import PREFIX, Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"


def setting_names() -> set[str]:
    """Every variable Settings.from_env reads."""
    return {PREFIX + f.name.upper() for f in fields(Settings)}


def unknown_settings(names: set[str]) -> set[str]:
    """The OMS_* names among `names` that no setting reads (config drift)."""
    known = setting_names()
    return {n for n in names if n.startswith(PREFIX) and n not in known}


def compose() -> dict[str, Any]:
    """deploy/compose.yaml."""
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def oms_services(project: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The compose services that run the oms image."""
    image = project["x-oms-image"]["image"]
    return {n: s for n, s in project["services"].items() if s.get("image") == image}


def kustomization() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return loaded


def k8s_resources() -> list[tuple[str, dict[str, Any]]]:
    """(file, resource) for every resource kustomization.yaml lists, rendered."""
    spec = kustomization()
    images = {i["name"]: i for i in spec.get("images", [])}
    labels: dict[str, str] = {}
    for group in spec.get("labels", []):
        labels.update(group["pairs"])
    out = []
    for name in spec["resources"]:
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            if not doc:
                continue
            meta = doc.setdefault("metadata", {})
            if doc["kind"] != "Namespace" and "namespace" in spec:
                meta["namespace"] = spec["namespace"]
            meta.setdefault("labels", {}).update(labels)
            for pod in _pod_specs(doc):
                for container in pod.get("containers", []) + pod.get("initContainers", []):
                    image = images.get(container["image"].split(":")[0])
                    if image:
                        container["image"] = f"{image['newName']}:{image['newTag']}"
            out.append((name, doc))
    return out


def _pod_specs(resource: dict[str, Any]) -> list[dict[str, Any]]:
    template = resource.get("spec", {}).get("template")
    return [template["spec"]] if template else []


def pod_spec(resource: dict[str, Any]) -> dict[str, Any]:
    """The pod spec of a Deployment or Job."""
    (spec,) = _pod_specs(resource)
    return spec


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    """Rendered resources of one kind, by name."""
    return {r["metadata"]["name"]: r for _, r in k8s_resources() if r["kind"] == kind}
