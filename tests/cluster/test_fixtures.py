"""The fixtures and the standalone `python -m e2e.cluster up`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from e2e.cluster.processes import VENV_BIN, OperatorProcess, wait_until
from e2e.cluster.redis import RedisServer

REPO = Path(__file__).resolve().parents[2]


def test_run_as_operator_gets_the_kubeconfig(run_as_operator: Any, kubeconfig: Path) -> None:
    """run_as_operator starts any command with KUBECONFIG pointing at the cluster."""
    kubectl = run_as_operator(["kubectl", "get", "namespaces", "-o", "name"])
    wait_until(lambda: not kubectl.running)
    assert kubectl.returncode == 0, kubectl.logs()
    assert "namespace/default" in kubectl.logs()
    script = (
        "import os, signal, sys, time; print(os.environ['KUBECONFIG'], os.environ['EXTRA'],"
        " flush=True); signal.signal(signal.SIGTERM, lambda *_: sys.exit(7)); time.sleep(60)"
    )
    proc: OperatorProcess = run_as_operator([sys.executable, "-c", script], env={"EXTRA": "x"})
    proc.wait_for_log(rf"{kubeconfig} x")
    assert proc.stop() == 7


def test_redis_server_factory_versions(redis_server_factory: Any) -> None:
    """Both Redis versions run for real (never fakeredis)."""
    for version in ("7.0", "8.2"):
        server: RedisServer = redis_server_factory(version)
        assert f"redis_version:{version}." in server.cli("INFO", "server")


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return [pid for pid in found if pid != os.getpid()]


def test_standalone_cluster_runs_until_terminated(tmp_path: Path) -> None:
    """`python -m e2e.cluster up --kubeconfig PATH` serves the API and runs pods until SIGTERM,
    then stops the processes it started."""
    kubeconfig = tmp_path / "kubeconfig"
    proc = OperatorProcess(
        [
            sys.executable,
            "-m",
            "e2e.cluster",
            "up",
            "--kubeconfig",
            str(kubeconfig),
            "--crds",
            str(REPO / "crds"),
        ],
        kubeconfig=kubeconfig,
        log_path=tmp_path / "cluster.log",
    ).start()
    try:
        proc.wait_for_log(r"ready \(Ctrl-C to stop\)", timeout=20)
        marker = f"marker-{uuid.uuid4().hex}"
        manifest = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "demo"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "demo"}},
                "template": {
                    "metadata": {"labels": {"app": "demo"}},
                    "spec": {
                        "containers": [
                            {
                                "name": "c",
                                "image": "i",
                                "command": [
                                    "python",
                                    "-c",
                                    f"import time; time.sleep(300)  # {marker}",
                                ],
                            }
                        ]
                    },
                },
            },
        }
        kubectl = [f"{VENV_BIN}/kubectl", "--kubeconfig", str(kubeconfig)]
        applied = subprocess.run(
            [*kubectl, "apply", "-f", "-"],
            input=json.dumps(manifest),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert applied.returncode == 0, applied.stderr

        def deployment_ready() -> bool:
            out = subprocess.run(
                [*kubectl, "get", "deployment", "demo", "-o", "json"],
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout
            return bool(out) and json.loads(out).get("status", {}).get("readyReplicas") == 1

        wait_until(deployment_ready, timeout=15)
        assert len(_processes_with(marker)) == 1
        proc.signal(signal.SIGTERM)
        wait_until(lambda: not proc.running, timeout=15)
        assert proc.returncode == 0, proc.logs()
        assert "stopped" in proc.logs()
        assert _processes_with(marker) == []
    finally:
        proc.stop()
