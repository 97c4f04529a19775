"""The operator (`streamherd run`) when the API server throttles or its token expires: a 429
storm on /scale is said in ScalingActive (ApiUnavailable, not Scaling) and scaling resumes
when it ends, injected on the emulator and, in make e2e, by the real kube-apiserver's API
Priority and Fairness configured tight (backed off: counted by the server's own rejections and
the operator's own requests); a token that expires mid-run is renewed (exec plugin) and
scaling and status go on, kopf's watches included."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import kmock
import pytest
from e2e.cluster.processes import wait_until
from e2e.controlplane.controlplane import ControlPlane
from tests.harness import Harness
from tests.kube.test_client import APF_BODY, Storm, exec_kubeconfig

SCALING = {"minReplicas": 2, "maxReplicas": 2, "pollInterval": "500ms"}


def replicas(h: Harness, name: str = "workers") -> int:
    return int((h.get("Deployment", name) or {}).get("spec", {}).get("replicas", -1))


def scaling(h: Harness, reason: str) -> dict[str, Any] | None:
    """The group's ScalingActive condition when its reason is ``reason``."""
    condition = h.condition("ConsumerGroup", "workers", "ScalingActive")
    return condition if condition.get("reason") == reason else None


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

    unavailable = wait_until(
        lambda: scaling(h, "ApiUnavailable"),
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
    wait_until(lambda: scaling(h, "Scaling"), 20, message="ScalingActive stayed ApiUnavailable")


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


FLOWCONTROL = "/apis/flowcontrol.apiserver.k8s.io/v1"


def apf_jail(plane: ControlPlane, name: str, namespace: str, account: str) -> None:
    """API Priority and Fairness configured tight for the operator's ServiceAccount: its
    requests to ``deployments/scale`` in ``namespace`` go to a priority level of nominal
    concurrency 0 that neither borrows nor queues (the "jail" the v1 API documents). The
    real kube-apiserver still dispatches one request when none of the level executes, so
    ``seat_held`` keeps one executing: then it answers every other with 429 and Retry-After.
    The operator's other requests (status, Events, kopf's watches) keep their usual level,
    so it can say what happens."""
    level = {
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
        "kind": "PriorityLevelConfiguration",
        "metadata": {"name": name},
        "spec": {
            "type": "Limited",
            "limited": {
                "nominalConcurrencyShares": 0,
                "lendablePercent": 0,
                "borrowingLimitPercent": 0,
                "limitResponse": {"type": "Reject"},
            },
        },
    }
    schema = {
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
        "kind": "FlowSchema",
        "metadata": {"name": name},
        "spec": {
            "priorityLevelConfiguration": {"name": name},
            "matchingPrecedence": 50,  # before every suggested schema but exempt/probes
            "distinguisherMethod": {"type": "ByUser"},
            "rules": [
                {
                    "subjects": [
                        {
                            "kind": "ServiceAccount",
                            "serviceAccount": {"namespace": namespace, "name": account},
                        }
                    ],
                    "resourceRules": [
                        {
                            "verbs": ["*"],
                            "apiGroups": ["apps"],
                            "resources": ["deployments/scale"],
                            "namespaces": [namespace],
                        }
                    ],
                }
            ],
        },
    }
    for kind, body in (("prioritylevelconfigurations", level), ("flowschemas", schema)):
        reply = plane.request("POST", f"{FLOWCONTROL}/{kind}", body)
        assert reply.status == 201, (kind, reply.status, reply.body)


@contextlib.contextmanager
def seat_held(plane: ControlPlane, path: str, token: str) -> Iterator[None]:
    """A PATCH of ``path`` whose body never comes: APF dispatches it on its headers (the
    handler reads the body later), so it holds its priority level's one seat until closed.
    The API server's request timeout (60 s) bounds how long: keep the block shorter."""
    url = urlparse(plane.url)
    assert url.hostname is not None and url.port is not None
    raw = socket.create_connection((url.hostname, url.port), timeout=10)
    conn = plane.ssl_context(None).wrap_socket(raw, server_hostname=url.hostname)
    try:
        conn.sendall(
            f"PATCH {path} HTTP/1.1\r\nHost: {url.netloc}\r\n"
            f"Authorization: Bearer {token}\r\n"
            "Content-Type: application/merge-patch+json\r\nContent-Length: 1000\r\n\r\n".encode()
        )
        yield
    finally:
        conn.close()  # the server's read fails: the seat is free again


def apf_rejected(plane: ControlPlane, flow_schema: str) -> float:
    """Requests API Priority and Fairness rejected in ``flow_schema``, from the API
    server's own /metrics (``apiserver_flowcontrol_rejected_requests_total``)."""
    reply = plane.request("GET", "/metrics")
    assert reply.status == 200, reply.status
    text = reply.body if isinstance(reply.body, str) else reply.body.decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("apiserver_flowcontrol_rejected_requests_total{")
        and f'flow_schema="{flow_schema}"' in line
    )


@pytest.mark.e2e_variants  # about 30 s: a storm longer than the retries, then its end
@pytest.mark.parametrize("kube_tier", ["control-plane"], indirect=True)
@pytest.mark.timeout(240)
def test_a_real_apf_429_storm_is_backed_off_said_and_outlived(
    harness: Harness, control_plane: ControlPlane
) -> None:
    h, plane = harness, control_plane
    name = f"streamherd-storm-{h.namespace}"
    h.consumer_deployment("workers", 1, "workers")
    h.stream("orders")
    apf_jail(plane, name, h.namespace, "streamherd")  # the harness's ServiceAccount
    scale = f"/apis/apps/v1/namespaces/{h.namespace}/deployments/workers/scale"
    h.group("workers", consumers={"deploymentRef": {"name": "workers"}}, autoscaling=SCALING)
    token = plane.request_token(h.namespace, "streamherd", 600)
    storm_started = time.monotonic()
    try:
        with seat_held(plane, scale, token):
            h.start("--api-retry-for", "3")

            unavailable = wait_until(
                lambda: scaling(h, "ApiUnavailable"),
                30,
                message=lambda: (
                    f"never ApiUnavailable: {h.condition('ConsumerGroup', 'workers', 'ScalingActive')}"
                    f" replicas {replicas(h)}, rejected {apf_rejected(plane, name)}\n"
                    f"{h.logs()[-3000:]}"
                ),
            )
            assert unavailable["status"] == "False"
            assert "patch deployments/scale" in unavailable["message"]
            assert "429" in unavailable["message"], unavailable["message"]
            assert replicas(h) == 1

            # Backed off, not a tight loop: the API server's own count of what it rejected over
            # a window. Sleeping is right here: it shows what does *not* happen (a request
            # rate above one per Retry-After, at a poll every 500 ms).
            # The operator's own count of what it sent agrees (each attempt, retries too).
            window = 10.0
            sent_metric = ("streamherd_api_requests_total", {"resource": "deployments/scale"})
            before = apf_rejected(plane, name)
            sent_before = h.metric(sent_metric[0], **sent_metric[1])
            time.sleep(window)
            rejected = apf_rejected(plane, name) - before
            sent = h.metric(sent_metric[0], **sent_metric[1]) - sent_before
            assert 2 <= rejected <= 3 * window, f"{rejected} rejected in {window} s"
            assert abs(sent - rejected) <= 2, f"sent {sent}, rejected {rejected}"
            assert scaling(h, "ApiUnavailable"), h.status("ConsumerGroup", "workers")
            assert replicas(h) == 1
            assert time.monotonic() - storm_started < 55, "the held seat may have timed out"
    finally:
        for kind in ("flowschemas", "prioritylevelconfigurations"):
            plane.request("DELETE", f"{FLOWCONTROL}/{kind}/{name}")

    wait_until(lambda: replicas(h) == 2, 60, message="scaling did not resume after the storm")
    wait_until(lambda: scaling(h, "Scaling"), 30, message="ScalingActive stayed ApiUnavailable")
    h.wait_status("ConsumerGroup", "workers", lambda s: s.get("replicas") == 2, timeout=30)
    print(f"APF storm: {rejected:.0f} requests rejected in {window:.0f} s, {sent:.0f} sent")
