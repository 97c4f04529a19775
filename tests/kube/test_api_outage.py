"""The API server unable to serve for a while (its etcd stopped, on the real control plane):
requests time out and are retried with backoff, not in a tight loop; no status is lost and
the scale it could not make happens once the API server is back."""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import UTC, datetime, timedelta

import pytest
from e2e.cluster.processes import wait_until
from e2e.controlplane.controlplane import ControlPlane
from tests.harness import Harness


def replicas(h: Harness, name: str = "workers") -> int:
    return int((h.get("Deployment", name) or {}).get("spec", {}).get("replicas", -1))


def drained(h: Harness) -> bool:
    group = h.groups_in_redis("orders")["workers"]
    return bool(group["lag"] == 0 and group["pending"] == 0)


def watched_reasons(
    plane: ControlPlane, namespace: str, name: str, since: str, seconds: int = 3
) -> list[tuple[str | None, int | None]]:
    """(ScalingActive's reason, status.replicas) of every version of the ConsumerGroup
    written after resourceVersion ``since``, in order (a watch from there: the API server
    replays them)."""
    reply = plane.client(timeout=seconds + 10).get(
        f"/apis/streamherd.io/v1alpha1/namespaces/{namespace}/consumergroups",
        watch="1",
        resourceVersion=since,
        timeoutSeconds=str(seconds),
        fieldSelector=f"metadata.name={name}",
    )
    text = reply.body if isinstance(reply.body, str) else json.dumps(reply.body)
    out = []
    for line in text.splitlines():
        event = json.loads(line) if line.strip() else None
        if not event or event.get("type") not in ("ADDED", "MODIFIED"):
            continue
        status = event["object"].get("status") or {}
        reason = next(
            (c.get("reason") for c in status.get("conditions", []) if c["type"] == "ScalingActive"),
            None,
        )
        out.append((reason, status.get("replicas")))
    return out


@pytest.mark.e2e_variants  # about 40 s: a 10 s outage, then its end
@pytest.mark.parametrize("kube_tier", ["control-plane"], indirect=True)
@pytest.mark.timeout(240)
def test_an_api_server_whose_etcd_stops_is_backed_off_and_nothing_is_lost(
    harness: Harness, control_plane: ControlPlane
) -> None:
    """etcd SIGSTOPped for 10 s while a burst asks for a scale-up: every request to the API
    server hangs (reads and writes), so each times out (--api-timeout 1) and is retried
    with backoff (--api-retry-for 2) then given up, and the loops go on at their pace: the
    operator's own request count over the outage stays a few a second. When etcd returns,
    the scale happens, ScalingActive ends at Scaling (after ApiUnavailable, when a write
    of that was under way as etcd returned), and the status says what Redis and the Deployment say (by values)."""
    h, plane = harness, control_plane
    h.consumer_deployment("workers", 1, "workers")
    h.stream("orders")
    h.group(
        "workers",
        consumers={"deploymentRef": {"name": "workers"}},
        autoscaling={
            "minReplicas": 1,
            "maxReplicas": 3,
            "targetPerReplica": 100,
            "pollInterval": "500ms",
        },
    )
    h.start("--api-retry-for", "2", "--api-timeout", "1")
    h.wait_status("ConsumerGroup", "workers", lambda s: s.get("desiredReplicas") == 1)
    before = h.get("ConsumerGroup", "workers")
    assert before is not None
    since = before["metadata"]["resourceVersion"]
    sent_before = h.metric("streamherd_api_requests_total")
    etcd = plane.processes["etcd"]
    outage = 10.0
    os.kill(etcd.pid, signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        pipe = h.r.pipeline(transaction=False)
        for i in range(1000):
            pipe.xadd("orders", {"n": i})
        pipe.execute()
        wait_until(
            lambda: "not written" in h.logs() or "failed" in h.logs(),
            outage,
            message=lambda: f"no failed request seen\n{h.logs()[-2000:]}",
        )
        # Sleeping is right here: an outage lasts; what is measured is what does *not*
        # happen during it (a request rate of a tight loop).
        time.sleep(max(0.0, outage - (time.monotonic() - stopped)))
        sent = h.metric("streamherd_api_requests_total") - sent_before
        elapsed = time.monotonic() - stopped
    finally:
        os.kill(etcd.pid, signal.SIGCONT)
    resumed = datetime.now(UTC).replace(microsecond=0)
    assert sent <= 5 * elapsed, f"{sent} requests in a {elapsed:.1f} s outage"
    # Nothing is stored without etcd: the scale is made after it returns (a PATCH that timed
    # out on our side may still be committed then: the API server kept it waiting).

    wait_until(lambda: replicas(h) == 3, 30, message="not scaled after etcd returned")
    # The status says what Redis says, by values (once the consumers drained the burst).
    wait_until(
        lambda: drained(h), 60, message=lambda: f"not drained: {h.groups_in_redis('orders')}"
    )
    group = h.groups_in_redis("orders")["workers"]
    status = h.wait_status(
        "ConsumerGroup",
        "workers",
        lambda s: (
            s.get("replicas") == replicas(h) == 3
            and s.get("desiredReplicas") == 3
            and s.get("lag") == group["lag"]
            and s.get("pending") == group["pending"]
            and s.get("backlog") == group["lag"] + group["pending"]
        ),
        timeout=30,
    )
    scaled_at = datetime.fromisoformat(status["lastScaleTime"].replace("Z", "+00:00"))
    assert scaled_at >= resumed - timedelta(seconds=1), (status["lastScaleTime"], resumed)
    assert h.condition("ConsumerGroup", "workers", "ScalingActive")["reason"] == "Scaling"
    # Said: each request given up after --api-retry-for, and the scale's failure decided
    # as ApiUnavailable. With etcd gone no condition can be stored: one reaches the object
    # when a status write of it is under way as etcd returns (the watch from before the
    # outage replays every version), and Scaling comes after it.
    logs = h.logs()
    assert f"scaling {h.namespace}/workers failed" in logs, logs[-3000:]
    assert "gave up after" in logs, logs[-3000:]
    history = watched_reasons(plane, h.namespace, "workers", since)
    reasons = [reason for reason, _ in history]
    assert reasons and reasons[-1] == "Scaling", history
    if "ApiUnavailable" in reasons:
        assert reasons.index("ApiUnavailable") < len(reasons) - 1, history
    print(f"etcd outage: {sent:.0f} operator requests in {elapsed:.1f} s; statuses {history}")
