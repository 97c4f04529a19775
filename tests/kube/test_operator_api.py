"""The operator (`streamherd run`) when the API server throttles or its token expires: a 429
storm on /scale is said in ScalingActive (ApiUnavailable, not Scaling) and scaling resumes
when it ends; a token that expires mid-run is renewed (exec plugin) and scaling and status
go on, kopf's watches included."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import kmock
import pytest
from e2e.cluster.processes import wait_until
from e2e.controlplane.controlplane import ControlPlane
from tests.harness import Harness
from tests.kube.test_client import APF_BODY, Storm, exec_kubeconfig

SCALING = {"minReplicas": 2, "maxReplicas": 2, "pollInterval": "500ms"}


def replicas(h: Harness, name: str = "workers") -> int:
    return int((h.get("Deployment", name) or {}).get("spec", {}).get("replicas", -1))


def test_a_429_storm_on_scale_is_said_and_scaling_resumes_after_it(
    harness: Harness, kube_api: Any
) -> None:
    h = harness
    h.consumer_deployment("workers", 1, "workers")
    h.stream("orders")
    scale = f"/apis/apps/v1/namespaces/{h.namespace}/deployments/workers/scale"
    # APF's answer, for longer than the operator retries one request (--api-retry-for 2).
    storm = Storm(scale)
    kube_api[storm] << 429 << kmock.headers({"Retry-After": "1"}) << kmock.text(APF_BODY)
    h.group("workers", consumers={"deploymentRef": {"name": "workers"}}, autoscaling=SCALING)
    h.start("--api-retry-for", "2")

    def scaling(reason: str) -> dict[str, Any] | None:
        condition = h.condition("ConsumerGroup", "workers", "ScalingActive")
        return condition if condition.get("reason") == reason else None

    unavailable = wait_until(
        lambda: scaling("ApiUnavailable"),
        30,
        message=lambda: f"never ApiUnavailable: {h.status('ConsumerGroup', 'workers')}",
    )
    assert unavailable["status"] == "False"
    assert "patch deployments/scale" in unavailable["message"]
    assert "stays at 1 replicas" in unavailable["message"]
    assert replicas(h) == 1
    assert len(kube_api[scale]) >= 2, "retried before giving up"

    storm.stop()
    wait_until(lambda: replicas(h) == 2, 30, message="scaling did not resume after the storm")
    wait_until(lambda: scaling("Scaling"), 20, message="ScalingActive stayed ApiUnavailable")


@pytest.mark.e2e_variants  # about a minute: the token must outlive start-up, then expire
@pytest.mark.parametrize("kube_tier", ["control-plane"], indirect=True)
@pytest.mark.timeout(240)
def test_a_token_expiring_mid_run_is_renewed_and_scaling_goes_on(
    harness: Harness, control_plane: ControlPlane, tmp_path: Path
) -> None:
    h, plane = harness, control_plane
    token_file = tmp_path / "token"
    first = plane.signed_service_account_token(h.namespace, "streamherd", valid_for=30)
    token_file.write_text(first)
    h.operator_env["KUBECONFIG"] = str(
        exec_kubeconfig(plane, tmp_path / "exec.kubeconfig", token_file, h.namespace)
    )
    h.consumer_deployment("workers", 0, "workers")
    h.stream("orders")
    h.group(
        "workers",
        startId="$",
        consumers={"deploymentRef": {"name": "workers"}},
        autoscaling={"minReplicas": 0, "maxReplicas": 2, "pollInterval": "500ms"},
    )
    h.start()
    h.wait_ready("ConsumerGroup", "workers", "True", timeout=30)
    token_file.write_text(plane.request_token(h.namespace, "streamherd", 600))  # rotated
    path = f"/api/v1/namespaces/{h.namespace}/pods"
    wait_until(
        lambda: plane.client(token=first).get(path).status == 401,
        60,
        interval=0.5,
        message="the first token never expired",
    )
    expired_at = time.monotonic()
    for i in range(300):
        h.r.xadd("orders", {"n": i})
    wait_until(
        lambda: replicas(h) == 2, 60, message=lambda: f"no scaling after expiry\n{h.logs()[-3000:]}"
    )
    h.wait_status("ConsumerGroup", "workers", lambda s: s.get("replicas") == 2, timeout=30)
    assert "credentials renewed after a 401" in h.logs()
    assert time.monotonic() - expired_at < 90
