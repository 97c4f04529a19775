"""Judging the Kubernetes objects autoscaling acts on: pure, no I/O, no manifests (those are
built in ``kube.manifests``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def scaler_conflict(
    deployment: str, hpas: Iterable[Mapping[str, Any]], scaled_objects: Iterable[Mapping[str, Any]]
) -> str | None:
    """Another autoscaler already driving the Deployment (we refuse to fight it): its name."""
    for hpa in hpas:
        ref = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
        if ref.get("kind") == "Deployment" and ref.get("name") == deployment:
            return f"HorizontalPodAutoscaler {hpa['metadata']['name']!r}"
    for scaled in scaled_objects:
        ref = (scaled.get("spec") or {}).get("scaleTargetRef") or {}
        if ref.get("kind", "Deployment") == "Deployment" and ref.get("name") == deployment:
            return f"KEDA ScaledObject {scaled['metadata']['name']!r}"
    return None


def deletion_costs(pods: Iterable[str], pending_by_consumer: Mapping[str, int]) -> dict[str, int]:
    """pod-deletion-cost per pod: its consumer's pending entries, so the ReplicaSet removes
    the pods holding the least unfinished work first on scale-in."""
    return {pod: int(pending_by_consumer.get(pod, 0)) for pod in pods}
