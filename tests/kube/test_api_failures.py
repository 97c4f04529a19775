"""The API server failing fast for a while, on the emulator: 500s, then 409s, on every status
write of a ConsumerGroup; then its connections refused (kube-apiserver restarting: its port
closed, every open connection cut). A 500 is retried with backoff and given up after
--api-retry-for, a 409 is not retried, a refused connection is retried as a 500: none in a
tight loop, and the operator does not crash. Once the API server serves again, the status
says what Redis says (by values) and a group created during the refusal is picked up (kopf's
watches came back). Requests that hang instead (etcd stopped, the real control plane):
test_api_outage."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from e2e.cluster.forwarder import Forwarder
from e2e.cluster.kubeconfig import write_kubeconfig
from e2e.cluster.local import LocalCluster
from e2e.cluster.processes import wait_until
from tests.harness import Harness
from tests.kube.test_client import Storm

WINDOW = 4.0
"""Seconds each failure lasts."""
MAX_ATTEMPTS_PER_SECOND = 5
"""Requests per second for one object whose writes fail: its loop writes once a poll (2 s)
and each write is retried for --api-retry-for 2 s with backoff from 0.25 s (about five
attempts; measured about 2.5 a second); a tight loop would be hundreds."""


def redis_lag(h: Harness, group: str = "workers") -> int:
    return int(h.groups_in_redis("orders")[group]["lag"])


def test_500s_409s_and_refused_connections_are_backed_off_and_no_status_is_lost(
    harness: Harness, kube_api: Any, local_cluster: LocalCluster, tmp_path: Path
) -> None:
    h = harness
    host, port = local_cluster.url.removeprefix("http://").rsplit(":", 1)
    forwarder = Forwarder(host, int(port)).start()
    h.operator_env["KUBECONFIG"] = str(
        write_kubeconfig(tmp_path / "kubeconfig", forwarder.url, h.namespace)
    )
    h.stream("orders")
    h.group("workers")
    try:
        h.start("--api-retry-for", "2")
        h.wait_status("ConsumerGroup", "workers", lambda s: s.get("lag") == 0, timeout=30)
        path = (
            f"/apis/streamherd.io/v1alpha1/namespaces/{h.namespace}/consumergroups/workers/status"
        )
        for code, reason in ((500, "InternalError"), (409, "Conflict")):
            storm = Storm(path)
            kube_api[storm] << code << {"kind": "Status", "code": code, "reason": reason}
            before = len(kube_api[path])
            for i in range(5):
                h.r.xadd("orders", {"n": i})
            # Sleeping is right here: what is measured is what does *not* happen during
            # the failure (the request rate of a tight loop).
            time.sleep(WINDOW)
            attempts = len(kube_api[path]) - before
            storm.stop()
            # A 500 is retried (several attempts for one write); a 409 is not: one at least.
            assert attempts >= (2 if code == 500 else 1), f"{code}: only {attempts} tried"
            assert attempts <= MAX_ATTEMPTS_PER_SECOND * WINDOW, f"{code}: {attempts} writes"
            assert h.operator is not None and h.operator.running
            lag = redis_lag(h)
            h.wait_status(
                "ConsumerGroup",
                "workers",
                lambda s, lag=lag: s.get("lag") == lag and s.get("backlog") == lag,
                timeout=20,
            )
            print(f"{code} for {WINDOW:.0f} s: {attempts} status writes tried")

        sent_before = h.metric("streamherd_api_requests_total")
        forwarder.refuse()
        for i in range(5):
            h.r.xadd("orders", {"n": i})
        h.group("late")  # created while the operator cannot reach the API server
        time.sleep(WINDOW)  # as above: the rate of what does not happen
        sent = h.metric("streamherd_api_requests_total") - sent_before
        forwarder.start()
        # Two objects write: the RedisStream and the group (the late one is not known yet).
        assert sent <= 2 * MAX_ATTEMPTS_PER_SECOND * WINDOW, f"refused: {sent} requests"
        lag = redis_lag(h)
        h.wait_status(
            "ConsumerGroup",
            "workers",
            lambda s: s.get("lag") == lag and s.get("backlog") == lag,
            timeout=30,
        )
        wait_until(
            lambda: h.groups_in_redis("orders").get("late") is not None,
            30,
            message=lambda: (
                f"the group created during the refusal was not made\n{h.logs()[-3000:]}"
            ),
        )
        h.wait_ready("ConsumerGroup", "late", "True", timeout=30)
        assert h.operator is not None and h.operator.running
        print(f"refused for {WINDOW:.0f} s: {sent:.0f} requests of the operator's loops")
    finally:
        forwarder.stop()
