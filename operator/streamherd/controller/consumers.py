"""Where a ConsumerGroup's consumers run: its Deployment, and that Deployment's live pods."""

from __future__ import annotations

import logging
import time
from typing import Any

from streamherd.api.consumergroup import ConsumerGroupSpec
from streamherd.decisions.workload import scaler_conflict
from streamherd.kube import KubeClient, KubeError
from streamherd.kube import requests as rq

logger = logging.getLogger(__name__)

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


async def deployment_pods(
    kube: KubeClient, namespace: str, deployment: str
) -> list[dict[str, Any]] | None:
    """Every pod of the Deployment (terminating ones too); None when the Deployment does not
    exist or has no selector (then nobody can say which consumers are alive)."""
    body = await kube.get(rq.DEPLOYMENTS, namespace, deployment)
    labels = selector(body) if body is not None else None
    if labels is None:
        return None
    return await kube.list(rq.PODS, namespace, labels)


def running(pods: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The pods that run and are not terminating, by name."""
    return {
        p["metadata"]["name"]: p
        for p in pods
        if not p["metadata"].get("deletionTimestamp")
        and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
    }


class ScalerIndex:
    """Which Deployments another autoscaler (HPA, KEDA ScaledObject) already drives, per
    namespace, re-listed at most every ``ttl`` seconds."""

    def __init__(self, kube: KubeClient, ttl: float = 15.0) -> None:
        self._kube = kube
        self._ttl = ttl
        self._cache: dict[str, tuple[float, list[dict[str, Any]], list[dict[str, Any]]]] = {}

    async def conflict(self, namespace: str, deployment: str) -> str | None:
        hit = self._cache.get(namespace)
        if hit is None or time.monotonic() - hit[0] > self._ttl:
            try:
                hpas = await self._kube.list_if_served(rq.HPAS, namespace)
                scaled = await self._kube.list_if_served(rq.SCALED_OBJECTS, namespace)
            except KubeError as exc:
                logger.warning("cannot list other autoscalers in %s: %s", namespace, exc)
                hpas, scaled = [], []
            hit = self._cache[namespace] = (time.monotonic(), hpas, scaled)
        return scaler_conflict(deployment, hit[1], hit[2])
