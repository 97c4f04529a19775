"""The bodies of the Kubernetes objects and patches the operator sends, built as data (no I/O),
next to the requests that carry them (``requests``): the consumer Deployment, how the
operator reads back what it wrote, and the janitor's CronJob (mode CronJob)."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from streamherd.api import API_GROUP, API_VERSION
from streamherd.api.consumergroup import ConsumerGroupSpec
from streamherd.api.redisstream import RedisStreamSpec
from streamherd.connecting import parse_address, sentinel_url

GROUP_LABEL = f"{API_GROUP}/consumergroup"
TEMPLATE_HASH = f"{API_GROUP}/template-hash"
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
MANAGED_BY = "app.kubernetes.io/managed-by"


def consumer_env(stream: RedisStreamSpec, group: str) -> list[dict[str, Any]]:
    """What a consumer needs to know, as container env: where Redis is (credentials only by
    Secret reference), which stream and group, and its own name (the pod's, via the downward
    API, so the janitor can tell live consumers from dead ones).

    ``STREAMHERD_REDIS_MODE`` is ``spec.redis.mode``, how to reach it: a Cluster consumer reads
    per hash slot (the SDK's ``topology``). Standalone and Cluster take
    ``STREAMHERD_REDIS_URL`` as it is; with Sentinel the URL is
    ``redis+sentinel://s1:26379,s2:26379/<master>/<db>`` (``rediss+sentinel`` with TLS), a
    scheme a plain client refuses rather than connecting somewhere wrong, and the sentinels'
    own credentials come as ``STREAMHERD_REDIS_SENTINEL_USERNAME`` /
    ``STREAMHERD_REDIS_SENTINEL_PASSWORD``."""
    redis = stream.redis
    env: list[dict[str, Any]] = [{"name": "STREAMHERD_REDIS_MODE", "value": str(redis.mode)}]
    if redis.sentinel is not None:
        sentinel = redis.sentinel
        url = sentinel_url(
            [parse_address(a) for a in sentinel.addresses],
            sentinel.master_name,
            sentinel.database,
            tls=redis.tls is not None and redis.tls.enabled,
        )
        env.append({"name": "STREAMHERD_REDIS_URL", "value": url})
        if sentinel.username:
            env.append({"name": "STREAMHERD_REDIS_SENTINEL_USERNAME", "value": sentinel.username})
        if sentinel.password_secret_ref is not None:
            ref = sentinel.password_secret_ref
            env.append(_from_secret("STREAMHERD_REDIS_SENTINEL_PASSWORD", ref.name, ref.key))
    elif redis.url_secret_ref is not None:
        env.append(
            _from_secret(
                "STREAMHERD_REDIS_URL", redis.url_secret_ref.name, redis.url_secret_ref.key
            )
        )
    else:
        url = str(redis.url)
        if redis.tls is not None and redis.tls.enabled and url.startswith("redis://"):
            url = "rediss://" + url.removeprefix("redis://")  # as the operator connects
        env.append({"name": "STREAMHERD_REDIS_URL", "value": url})
    if redis.tls is not None and redis.tls.enabled:
        env.append({"name": "STREAMHERD_REDIS_TLS", "value": "true"})
    if redis.username:
        env.append({"name": "STREAMHERD_REDIS_USERNAME", "value": redis.username})
    if redis.password_secret_ref is not None:
        ref = redis.password_secret_ref
        env.append(_from_secret("STREAMHERD_REDIS_PASSWORD", ref.name, ref.key))
    if redis.tls is not None and redis.tls.ca_secret_ref is not None:
        ref = redis.tls.ca_secret_ref
        env.append(_from_secret("STREAMHERD_REDIS_CA_CERT", ref.name, ref.key))
    if redis.tls is not None and redis.tls.client_certificate_secret_ref is not None:
        name = redis.tls.client_certificate_secret_ref.name
        env.append(_from_secret("STREAMHERD_REDIS_CLIENT_CERT", name, "tls.crt"))
        env.append(_from_secret("STREAMHERD_REDIS_CLIENT_KEY", name, "tls.key"))
    if redis.tls is not None and redis.tls.insecure_skip_verify:
        env.append({"name": "STREAMHERD_REDIS_TLS_INSECURE", "value": "true"})
    if stream.key is not None:
        env.append({"name": "STREAMHERD_STREAM", "value": stream.key})
    else:
        env.append({"name": "STREAMHERD_STREAM_PATTERN", "value": stream.key_pattern})
    env.append({"name": "STREAMHERD_GROUP", "value": group})
    env.append(
        {"name": "STREAMHERD_CONSUMER", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    )
    return env


def _from_secret(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def consumer_deployment(
    *,
    owner: Mapping[str, Any],
    name: str,
    spec: ConsumerGroupSpec,
    stream: RedisStreamSpec,
    group: str,
    replicas: int,
) -> dict[str, Any]:
    """The Deployment streamherd owns for a ConsumerGroup with ``consumers.template``."""
    assert spec.consumers is not None and spec.consumers.template is not None
    meta = owner["metadata"]
    template = copy.deepcopy(dict(spec.consumers.template))
    labels = {**((template.get("metadata") or {}).get("labels") or {}), GROUP_LABEL: meta["name"]}
    template.setdefault("metadata", {})["labels"] = labels
    env = consumer_env(stream, group)
    ours = {e["name"] for e in env}
    for container in template["spec"]["containers"]:
        container["env"] = [
            e for e in container.get("env") or [] if e.get("name") not in ours
        ] + env
    template_hash = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:16]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": {GROUP_LABEL: meta["name"], MANAGED_BY: "streamherd"},
            "annotations": {TEMPLATE_HASH: template_hash},
            "ownerReferences": [
                {
                    "apiVersion": f"{API_GROUP}/{API_VERSION}",
                    "kind": "ConsumerGroup",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {GROUP_LABEL: meta["name"]}},
            "template": template,
        },
    }


def deployment_state(body: Mapping[str, Any]) -> dict[str, Any]:
    """What the operator keeps of a Deployment from its watch: replicas asked and ready, the
    template hash of one streamherd owns, and its generation (drift of an owned one)."""
    spec, status = body.get("spec") or {}, body.get("status") or {}
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    return {
        "replicas": int(spec.get("replicas", 1)),
        "ready": int(status.get("readyReplicas") or 0),
        "template_hash": annotations.get(TEMPLATE_HASH),
        "generation": int((body.get("metadata") or {}).get("generation") or 0),
    }


def deletion_cost_patch(cost: int) -> dict[str, Any]:
    """The merge patch setting a pod's deletion cost (the ReplicaSet removes the cheapest first)."""
    return {"metadata": {"annotations": {DELETION_COST: str(cost)}}}


# ------------------------------------------------------------------ the janitor's CronJob

CRON_JOB_SUFFIX = "-janitor"
CRON_JOB_NAME_MAX = 52  # the Job controller appends an 11-character suffix to Job names


def cron_job_name(group_resource: str) -> str:
    name = group_resource + CRON_JOB_SUFFIX
    if len(name) <= CRON_JOB_NAME_MAX:
        return name
    digest = hashlib.sha256(group_resource.encode()).hexdigest()[:8]
    keep = CRON_JOB_NAME_MAX - len(CRON_JOB_SUFFIX) - len(digest) - 1
    return f"{group_resource[:keep].rstrip('-.')}-{digest}{CRON_JOB_SUFFIX}"


def janitor_command(namespace: str, name: str) -> list[str]:
    return ["streamherd", "janitor", "--namespace", namespace, "--group", name]


def desired_cron_job(
    owner: Mapping[str, Any],
    *,
    schedule: str,
    image: str,
    service_account: str,
    active_deadline_seconds: int,
) -> dict[str, Any]:
    """The CronJob running ``streamherd janitor`` for the ConsumerGroup ``owner`` (its body):
    owned by it (deleted with it), never two runs at once."""
    meta = owner["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    labels = {MANAGED_BY: "streamherd", GROUP_LABEL: name}
    container = {
        "name": "janitor",
        "image": image,
        "command": janitor_command(namespace, name),
        "env": [{"name": "PYTHONDONTWRITEBYTECODE", "value": "1"}],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        # The only writable place under the read-only root: TMPDIR. The client key for mutual
        # TLS is held in memory (memfd, connecting.ClientKeyFiles); only a kernel without
        # memfd has it written to a private directory here.
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {
            "name": cron_job_name(name),
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": [
                {
                    "apiVersion": owner["apiVersion"],
                    "kind": owner["kind"],
                    "name": name,
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "schedule": schedule,
            "concurrencyPolicy": "Forbid",
            "successfulJobsHistoryLimit": 1,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "backoffLimit": 0,  # the next scheduled run is the retry
                    "activeDeadlineSeconds": active_deadline_seconds,
                    "template": {
                        "metadata": {"labels": dict(labels)},
                        "spec": {
                            "serviceAccountName": service_account,
                            "restartPolicy": "Never",
                            "securityContext": {
                                "runAsNonRoot": True,
                                "seccompProfile": {"type": "RuntimeDefault"},
                            },
                            "containers": [container],
                            "volumes": [
                                {
                                    "name": "tmp",
                                    "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"},
                                }
                            ],
                        },
                    },
                },
            },
        },
    }


def owned_by(obj: Mapping[str, Any], owner: Mapping[str, Any]) -> bool:
    uid = owner["metadata"].get("uid")
    return any(
        ref.get("uid") == uid for ref in (obj.get("metadata") or {}).get("ownerReferences") or []
    )


def cron_job_patch(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any] | None:
    """The merge patch bringing our CronJob back to ``desired`` (labels and spec, which we
    own entirely), or None when it matches. Fields the API server defaulted are not ours
    to compare: only the ones we set are."""
    patch: dict[str, Any] = {}
    labels = desired["metadata"]["labels"]
    if any(
        (current.get("metadata") or {}).get("labels", {}).get(k) != v for k, v in labels.items()
    ):
        patch["metadata"] = {"labels": labels}
    if not _contains(current.get("spec") or {}, desired["spec"]):
        patch["spec"] = desired["spec"]
    return patch or None


def _contains(current: Any, desired: Any) -> bool:
    """``current`` has every value ``desired`` sets (lists item by item, same length)."""
    if isinstance(desired, Mapping):
        return isinstance(current, Mapping) and all(
            _contains(current.get(k), v) for k, v in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(current, list)
            and len(current) == len(desired)
            and all(_contains(c, d) for c, d in zip(current, desired, strict=True))
        )
    return bool(current == desired)
