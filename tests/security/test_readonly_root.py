"""The janitor's CronJob (readOnlyRootFilesystem: true) with mutual TLS: `streamherd janitor`
runs in a mount namespace where every file system is read-only (root, /tmp, /dev/shm:
nothing is writable, no TMPDIR helps), and does its pass. The client key is kept in memory
(memfd), never written anywhere."""

from __future__ import annotations

import base64
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from e2e.cluster.processes import OperatorProcess, wait_until
from e2e.cluster.redis import RedisServer
from tests.security.conftest import PKI

# Remount every file system read-only in a private mount namespace (not /proc, /sys), then
# run the command: what readOnlyRootFilesystem gives a container, and a little more.
READ_ONLY = """
for m in $(awk '{print $2}' /proc/self/mounts | sort -u); do
  case "$m" in /proc|/proc/*|/sys|/sys/*) continue;; esac
  mount -o remount,bind,ro "$m" 2>/dev/null || true
done
if touch /tmp/.probe 2>/dev/null || touch "$HOME/.probe" 2>/dev/null; then
  echo "a file system is still writable" >&2; exit 97
fi
exec "$@"
"""


def read_only(*command: str) -> list[str]:
    unshare = shutil.which("unshare")
    assert unshare, "unshare (util-linux) is needed"
    return [unshare, "--mount", "--propagation", "private", "sh", "-c", READ_ONLY, "sh", *command]


def b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


def test_the_janitor_command_with_mutual_tls_on_a_read_only_root(
    cluster_objects: Any,
    kubeconfig: Path,
    run_as_operator: Callable[..., OperatorProcess],
    redis_server_factory: Callable[..., RedisServer],
    pki: PKI,
) -> None:
    server = redis_server_factory("7.0", tls=pki.mutual)
    r = redis.Redis(
        port=server.port,
        ssl=True,
        ssl_ca_data=pki.ca_pem.decode(),
        ssl_certfile=str(pki.mutual.cert),
        ssl_keyfile=str(pki.mutual.key),
        decode_responses=True,
    )
    r.xgroup_create("orders", "billing", "0", mkstream=True)
    for i in range(5):
        r.xadd("orders", {"n": str(i)})
    r.xreadgroup("billing", "gone-worker", {"orders": ">"}, count=5)

    def create(kind: str, name: str, **body: Any) -> None:
        api = "v1" if kind == "Secret" else "streamherd.io/v1alpha1"
        cluster_objects.create(
            {
                "apiVersion": api,
                "kind": kind,
                "metadata": {"name": name, "namespace": "default"},
                **body,
            }
        )

    create("Secret", "redis-ca", data={"ca.crt": b64(pki.ca_pem)})
    create(
        "Secret",
        "redis-client",
        data={"tls.crt": b64(pki.client_cert), "tls.key": b64(pki.client_key)},
    )
    create(
        "RedisStream",
        "orders",
        spec={
            "key": "orders",
            "redis": {
                "url": server.url,
                "tls": {
                    "caSecretRef": {"name": "redis-ca", "key": "ca.crt"},
                    "clientCertificateSecretRef": {"name": "redis-client"},
                },
            },
        },
    )
    create(
        "ConsumerGroup",
        "billing",
        spec={"streamRef": {"name": "orders"}, "recovery": {"mode": "CronJob", "minIdle": "1s"}},
    )
    wait_until(
        lambda: all(
            row["time_since_delivered"] >= 1000
            for row in r.xpending_range("orders", "billing", "-", "+", 10)
        ),
        10,
    )
    job = run_as_operator(
        read_only("streamherd", "janitor", "--namespace", "default", "--group", "billing"),
        env={"PYTHONDONTWRITEBYTECODE": "1", "TMPDIR": "/nonexistent"},
    )
    wait_until(lambda: not job.running, 60, message=lambda: job.logs())
    assert job.returncode == 0, job.logs()
    assert "recovered 5 (re-queued 5, claimed 0)" in job.logs(), job.logs()
    assert not r.xpending("orders", "billing")["pending"]
    r.close()


def test_nothing_is_writable_in_the_read_only_namespace(tmp_path: Path) -> None:
    """The test above would prove nothing if the namespace left a writable place."""
    done = subprocess.run(
        read_only(
            "python3",
            "-c",
            "import tempfile\ntry:\n    tempfile.mkdtemp()\nexcept OSError as e:\n    print('refused', e)",
        ),
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "refused" in done.stdout and "No usable temporary directory" in done.stdout
