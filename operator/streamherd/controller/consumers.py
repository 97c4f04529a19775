"""Where a ConsumerGroup's consumers run: its Deployment, and that Deployment's live pods."""

from __future__ import annotations

from typing import Any

from streamherd.api.consumergroup import ConsumerGroupSpec
from streamherd.kube import KubeClient
from streamherd.kube import requests as rq

OWNED_SUFFIX = "-consumers"


def deployment_name(name: str, spec: ConsumerGroupSpec) -> str | None:
    """The consumer Deployment of ConsumerGroup ``name``: the referenced one, or the one
    streamherd owns (``<name>-consumers``) for a template; None without consumers."""
    if spec.consumers is None:
        return None
    if spec.consumers.deployment_ref is not None:
        return spec.consumers.deployment_ref.name
    return f"{name}{OWNED_SUFFIX}"


def selector(deployment: dict[str, Any]) -> str | None:
    """A Deployment's pod selector as a label-selector string (matchLabels only)."""
    labels = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or None


async def live_pods(
    kube: KubeClient, namespace: str, deployment: str
) -> dict[str, dict[str, Any]] | None:
    """The Deployment's pods that are not terminating, by name; None when the Deployment
    does not exist (then nobody can say which consumers are alive)."""
    body = await kube.get(rq.DEPLOYMENTS, namespace, deployment)
    if body is None:
        return None
    labels = selector(body)
    if labels is None:
        return None
    pods = await kube.list(rq.PODS, namespace, labels)
    return {
        p["metadata"]["name"]: p
        for p in pods
        if not p["metadata"].get("deletionTimestamp")
        and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
    }
