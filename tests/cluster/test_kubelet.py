"""The simulated kubelet: Deployments become real processes, and Pods follow them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from e2e.cluster.processes import VENV_BIN, wait_until
from e2e.cluster.redis import RedisServer

REPO = Path(__file__).resolve().parents[2]
SLEEPER = [
    "python",
    "-c",
    "import os, time; print('up', os.environ['POD_NAME'], flush=True); time.sleep(300)",
]


def deployment(
    name: str, command: list[str], replicas: int = 1, **container: Any
) -> dict[str, Any]:
    grace = container.pop("grace", None)
    spec: dict[str, Any] = {
        "containers": [
            {"name": "main", "image": "streamherd/test:dev", "command": command, **container}
        ]
    }
    if grace is not None:
        spec["terminationGracePeriodSeconds"] = grace
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": spec},
        },
    }


def pods(api: Any, app: str, *, live_only: bool = True) -> list[dict[str, Any]]:
    items = api.list("pods", "default", label_selector=f"app={app}")
    return [p for p in items if not (live_only and p["metadata"].get("deletionTimestamp"))]


def ready(api: Any, name: str) -> int:
    status = (api.get("deployments.apps", "default", name) or {}).get("status") or {}
    return int(status.get("readyReplicas", 0))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too (the kubelet reaps its children, but be strict).
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:  # reaped meanwhile
        return False


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def test_scale_0_to_3_to_1(kube_api: Any, kubelet: Any) -> None:
    """Replicas become processes: 0 -> 3 starts three, named like ReplicaSet pods and Ready;
    3 -> 1 stops two (processes and Pods gone); readyReplicas follows."""
    kube_api.create(deployment("web", SLEEPER, replicas=0))
    rs = wait_until(lambda: kube_api.list("replicasets.apps", "default"))
    assert len(rs) == 1
    rs_name = rs[0]["metadata"]["name"]
    template_hash = rs[0]["metadata"]["labels"]["pod-template-hash"]
    assert rs_name == f"web-{template_hash}"
    assert re.fullmatch(r"[bcdfghjklmnpqrstvwxz2456789]{10}", template_hash)
    assert pods(kube_api, "web") == []
    assert kubelet.processes() == {}

    kube_api.patch(
        "deployments.apps", "default", "web", {"spec": {"replicas": 3}}, subresource="scale"
    )
    wait_until(lambda: ready(kube_api, "web") == 3, message="3 ready replicas")
    running = pods(kube_api, "web")
    assert len(running) == 3
    processes = kubelet.processes()
    for pod in running:
        meta = pod["metadata"]
        assert re.fullmatch(
            rf"web-{template_hash}-[bcdfghjklmnpqrstvwxz2456789]{{5}}", meta["name"]
        )
        assert meta["labels"] == {"app": "web", "pod-template-hash": template_hash}
        assert meta["ownerReferences"][0]["name"] == rs_name
        assert pod["status"]["phase"] == "Running"
        assert pod["spec"]["nodeName"] == "streamherd-node"
        pid = processes[meta["name"]]
        assert alive(pid)
        assert "time.sleep(300)" in cmdline(pid)
    wait_until(
        lambda: all(
            f"up {p['metadata']['name']}" in kubelet.logs(p["metadata"]["name"]) for p in running
        ),
        message="every pod logged its POD_NAME",
    )
    status = kube_api.get("deployments.apps", "default", "web")["status"]
    assert status["replicas"] == status["availableReplicas"] == status["updatedReplicas"] == 3
    assert status["observedGeneration"] == 2

    kube_api.patch("deployments.apps", "default", "web", {"spec": {"replicas": 1}})
    wait_until(lambda: len(pods(kube_api, "web", live_only=False)) == 1, message="1 pod left")
    wait_until(lambda: ready(kube_api, "web") == 1)
    survivors = {p["metadata"]["name"] for p in pods(kube_api, "web")}
    assert set(kubelet.processes()) == survivors
    for name, pid in processes.items():
        assert alive(pid) == (name in survivors)


def test_scale_in_honours_pod_deletion_cost_then_age(kube_api: Any, kubelet: Any) -> None:
    """Scale-in removes the lowest controller.kubernetes.io/pod-deletion-cost first; among
    equal costs, the newest pod goes first."""
    kube_api.create(deployment("w", SLEEPER, replicas=2))
    wait_until(lambda: ready(kube_api, "w") == 2)
    older = {p["metadata"]["name"] for p in pods(kube_api, "w")}
    kube_api.patch("deployments.apps", "default", "w", {"spec": {"replicas": 3}})
    wait_until(lambda: ready(kube_api, "w") == 3)
    (_newest,) = {p["metadata"]["name"] for p in pods(kube_api, "w")} - older
    kube_api.patch("deployments.apps", "default", "w", {"spec": {"replicas": 2}})
    wait_until(
        lambda: {p["metadata"]["name"] for p in pods(kube_api, "w")} == older,
        message="the newest pod is removed first",
    )

    cheap, dear = sorted(older)
    kube_api.patch(
        "pods",
        "default",
        cheap,
        {"metadata": {"annotations": {"controller.kubernetes.io/pod-deletion-cost": "-5"}}},
    )
    kube_api.patch(
        "pods",
        "default",
        dear,
        {"metadata": {"annotations": {"controller.kubernetes.io/pod-deletion-cost": "100"}}},
    )
    kube_api.patch("deployments.apps", "default", "w", {"spec": {"replicas": 1}})
    wait_until(
        lambda: [p["metadata"]["name"] for p in pods(kube_api, "w", live_only=False)] == [dear],
        message="only the dear pod survives",
    )
    assert list(kubelet.processes()) == [dear]


def test_a_killed_process_is_restarted_in_place(kube_api: Any, kubelet: Any) -> None:
    """kubelet.kill(pod) SIGKILLs the process; the kubelet restarts it in the same pod
    (restartCount+1, lastState.terminated exit 137), which becomes Ready again."""
    kube_api.create(deployment("k", SLEEPER))
    wait_until(lambda: ready(kube_api, "k") == 1)
    (pod,) = pods(kube_api, "k")
    name = pod["metadata"]["name"]
    wait_until(lambda: "up" in kubelet.logs(name))
    old_pid = kubelet.kill(name)
    wait_until(lambda: not alive(old_pid))

    def restarted() -> dict[str, Any] | None:
        current = kube_api.get("pods", "default", name)
        status = current["status"]["containerStatuses"][0]
        return current if status["restartCount"] == 1 and status["ready"] else None

    current = wait_until(restarted, message="restarted and ready")
    status = current["status"]["containerStatuses"][0]
    assert status["lastState"]["terminated"]["exitCode"] == 137
    assert status["lastState"]["terminated"]["reason"] == "Error"
    assert current["metadata"]["uid"] == pod["metadata"]["uid"]
    new_pid = kubelet.pid(name)
    assert new_pid != old_pid
    assert alive(new_pid)
    wait_until(lambda: "up" in kubelet.logs(name))
    assert "up" in kubelet.logs(name, previous=True)
    assert [p["metadata"]["name"] for p in pods(kube_api, "k")] == [name]


def test_a_crashing_process_backs_off(kube_api: Any, kubelet: Any) -> None:
    """A container that keeps exiting is restarted with growing back-off (CrashLoopBackOff),
    is not Ready, and the Deployment counts no ready replica."""
    kube_api.create(deployment("crash", ["python", "-c", "print('boom'); raise SystemExit(3)"]))
    name = wait_until(lambda: pods(kube_api, "crash"))[0]["metadata"]["name"]

    def looping() -> dict[str, Any] | None:
        status = (kube_api.get("pods", "default", name).get("status") or {}).get(
            "containerStatuses"
        ) or [{}]
        waiting = status[0].get("state", {}).get("waiting", {})
        return (
            status[0]
            if status[0].get("restartCount", 0) >= 2 and waiting.get("reason") == "CrashLoopBackOff"
            else None
        )

    status = wait_until(looping, message="CrashLoopBackOff after two restarts")
    assert status["ready"] is False
    assert status["lastState"]["terminated"]["exitCode"] == 3
    assert ready(kube_api, "crash") == 0
    assert "boom" in kubelet.logs(name)


def test_container_environment(kube_api: Any, kubelet: Any) -> None:
    """Env comes from the container spec: literals ($(VAR) expanded), the downward API,
    Secret keys (data and stringData), ConfigMap keys, envFrom; plus POD_NAME. `python` is the
    venv's, the working directory is the repository root."""
    kube_api.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "creds", "namespace": "default"},
            "data": {"password": "czNjcjN0"},
            "stringData": {"user": "alice"},
        }
    )
    kube_api.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "cfg", "namespace": "default"},
            "data": {"level": "debug", "FROM_ENVFROM": "x"},
        }
    )
    script = (
        "import json, os, sys; print(json.dumps({'env': dict(os.environ), "
        "'exe': sys.executable, 'cwd': os.getcwd()}), flush=True); "
        "import time; time.sleep(300)"
    )
    kube_api.create(
        deployment(
            "env",
            ["python", "-c", script],
            env=[
                {"name": "LITERAL", "value": "plain"},
                {"name": "EXPANDED", "value": "$(LITERAL)-and-$$(LITERAL)"},
                {"name": "MY_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "MY_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "MY_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
                {"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "MY_NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                {
                    "name": "MY_APP",
                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}},
                },
                {
                    "name": "PASSWORD",
                    "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}},
                },
                {"name": "USER", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "user"}}},
                {
                    "name": "LEVEL",
                    "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "level"}},
                },
                {
                    "name": "OPTIONAL",
                    "valueFrom": {"secretKeyRef": {"name": "nope", "key": "x", "optional": True}},
                },
            ],
            envFrom=[{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}],
        )
    )
    (pod,) = wait_until(lambda: pods(kube_api, "env"))
    name = pod["metadata"]["name"]
    line = wait_until(lambda: kubelet.logs(name).strip())
    seen = json.loads(line)
    env = seen["env"]
    assert env["POD_NAME"] == env["MY_NAME"] == name
    assert env["LITERAL"] == "plain"
    assert env["EXPANDED"] == "plain-and-$(LITERAL)"
    assert env["MY_NS"] == "default"
    assert env["MY_UID"] == pod["metadata"]["uid"]
    assert env["MY_IP"] == "127.0.0.1"
    assert env["MY_NODE"] == "streamherd-node"
    assert env["MY_APP"] == "env"
    assert (env["PASSWORD"], env["USER"], env["LEVEL"]) == ("s3cr3t", "alice", "debug")
    assert env["CFG_level"] == "debug"
    assert "OPTIONAL" not in env
    assert env["PATH"].split(os.pathsep)[0] == VENV_BIN
    assert Path(seen["exe"]).parent == Path(VENV_BIN)
    assert Path(seen["cwd"]) == REPO
    assert "PYTEST_CURRENT_TEST" not in env  # not the test's environment


def test_a_missing_secret_holds_the_container(kube_api: Any, kubelet: Any) -> None:
    """A secretKeyRef to a missing Secret keeps the container waiting in
    CreateContainerConfigError; it starts once the Secret exists."""
    kube_api.create(
        deployment(
            "wait",
            SLEEPER,
            env=[
                {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "later", "key": "token"}}}
            ],
        )
    )
    name = wait_until(lambda: pods(kube_api, "wait"))[0]["metadata"]["name"]

    def waiting_reason() -> str | None:
        statuses = (kube_api.get("pods", "default", name).get("status") or {}).get(
            "containerStatuses"
        ) or [{}]
        return statuses[0].get("state", {}).get("waiting", {}).get("reason")

    wait_until(lambda: waiting_reason() == "CreateContainerConfigError")
    assert kubelet.processes() == {}
    kube_api.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "later", "namespace": "default"},
            "stringData": {"token": "t"},
        }
    )
    wait_until(lambda: ready(kube_api, "wait") == 1)


def test_a_deleted_pod_terminates_gracefully_and_is_replaced(kube_api: Any, kubelet: Any) -> None:
    """Deleting a Pod through the API: it turns Terminating, its process gets SIGTERM (and
    SIGKILL after terminationGracePeriodSeconds if it ignores it), then the Pod is gone and the
    ReplicaSet has created a replacement with a new name."""
    polite = [
        "python",
        "-c",
        "import signal, sys, time; print('up', flush=True); "
        "signal.signal(signal.SIGTERM, lambda *_: (print('bye', flush=True), sys.exit(0)));"
        " time.sleep(300)",
    ]
    kube_api.create(deployment("polite", polite))
    wait_until(lambda: ready(kube_api, "polite") == 1)
    (pod,) = pods(kube_api, "polite")
    name = pod["metadata"]["name"]
    wait_until(lambda: "up" in kubelet.logs(name))
    pid = kubelet.pid(name)
    deleting = kube_api.delete("pods", "default", name)
    assert deleting["metadata"]["deletionTimestamp"]
    assert deleting["metadata"]["deletionGracePeriodSeconds"] == 30
    wait_until(lambda: kube_api.get("pods", "default", name) is None)
    assert not alive(pid)
    assert "bye" in kubelet.logs(name)
    replacement = wait_until(lambda: pods(kube_api, "polite"))
    assert replacement[0]["metadata"]["name"] != name

    stubborn = [
        "python",
        "-c",
        "import signal, time; signal.signal(signal.SIGTERM, "
        "signal.SIG_IGN); print('up', flush=True); time.sleep(300)",
    ]
    kube_api.create(deployment("stubborn", stubborn, grace=1))
    wait_until(lambda: ready(kube_api, "stubborn") == 1)
    (pod,) = pods(kube_api, "stubborn")
    name = pod["metadata"]["name"]
    wait_until(lambda: "up" in kubelet.logs(name))
    pid = kubelet.pid(name)
    started = time.monotonic()
    kube_api.delete("pods", "default", name)
    time.sleep(0.5)
    assert alive(pid)  # SIGTERM is ignored; the grace period is not over yet
    wait_until(lambda: not alive(pid), timeout=5)
    assert time.monotonic() - started >= 0.9
    wait_until(lambda: kube_api.get("pods", "default", name) is None)


def test_a_template_change_rolls_the_pods(kube_api: Any, kubelet: Any) -> None:
    """Changing the pod template makes a new ReplicaSet (new hash); new pods start, the old
    ones are removed once the new ones are ready; updatedReplicas reaches replicas."""
    kube_api.create(deployment("roll", SLEEPER, replicas=2))
    wait_until(lambda: ready(kube_api, "roll") == 2)
    before = {p["metadata"]["name"] for p in pods(kube_api, "roll")}
    old_hash = pods(kube_api, "roll")[0]["metadata"]["labels"]["pod-template-hash"]
    kube_api.patch(
        "deployments.apps",
        "default",
        "roll",
        {"spec": {"template": {"metadata": {"annotations": {"restartedAt": "now"}}}}},
    )

    def rolled() -> bool:
        current = pods(kube_api, "roll", live_only=False)
        return (
            len(current) == 2
            and all(p["metadata"]["labels"]["pod-template-hash"] != old_hash for p in current)
            and ready(kube_api, "roll") == 2
        )

    wait_until(rolled, message="pods of the new template only")
    after = {p["metadata"]["name"] for p in pods(kube_api, "roll")}
    assert not before & after
    status = kube_api.get("deployments.apps", "default", "roll")["status"]
    assert status["updatedReplicas"] == status["replicas"] == 2
    replicasets = {
        r["metadata"]["labels"]["pod-template-hash"]: r["spec"]["replicas"]
        for r in kube_api.list("replicasets.apps", "default")
    }
    assert replicasets[old_hash] == 0
    assert len(replicasets) == 2
    assert set(kubelet.processes()) == after


def test_deleting_a_deployment_stops_everything(kube_api: Any, kubelet: Any) -> None:
    """The garbage collector deletes the ReplicaSet and then the Pods; processes stop."""
    kube_api.create(deployment("gone", SLEEPER, replicas=2))
    wait_until(lambda: ready(kube_api, "gone") == 2)
    pids = list(kubelet.processes().values())
    kube_api.delete("deployments.apps", "default", "gone")
    wait_until(lambda: not kube_api.list("replicasets.apps") and not kube_api.list("pods"))
    wait_until(lambda: not any(alive(pid) for pid in pids))
    assert kubelet.processes() == {}


def test_kubectl_reads_pod_logs_and_lists_pods(
    kube_api: Any, kubelet: Any, kubeconfig: Path
) -> None:
    """Pod logs are served by the API (pods/log), so `kubectl logs` works; `kubectl get pods`
    shows readiness, status and restarts."""
    kube_api.create(deployment("talk", SLEEPER))
    (pod,) = wait_until(lambda: pods(kube_api, "talk"))
    name = pod["metadata"]["name"]
    wait_until(lambda: "up" in kubelet.logs(name))
    out = subprocess.run(
        [f"{VENV_BIN}/kubectl", "--kubeconfig", str(kubeconfig), "logs", name],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"up {name}\n"
    listed = subprocess.run(
        [f"{VENV_BIN}/kubectl", "--kubeconfig", str(kubeconfig), "get", "pods"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    assert listed.splitlines()[1].split()[:4] == [name, "1/1", "Running", "0"]


def test_a_consumer_pod_reads_from_a_real_redis(
    kube_api: Any, kubelet: Any, redis_server: RedisServer
) -> None:
    """Two consumer pods started by the kubelet share a consumer group on a real
    redis-server: every entry is read (and acknowledged) exactly once."""
    kube_api.create(
        deployment(
            "consumer",
            ["python", "tests/cluster/consumer.py"],
            replicas=2,
            env=[
                {"name": "REDIS_URL", "value": redis_server.url},
                {"name": "STREAM", "value": "jobs"},
                {"name": "GROUP", "value": "workers"},
            ],
        )
    )
    wait_until(lambda: ready(kube_api, "consumer") == 2)
    names = [p["metadata"]["name"] for p in pods(kube_api, "consumer")]
    wait_until(lambda: all(f"{n} ready" in kubelet.logs(n) for n in names), timeout=15)
    import redis

    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    ids = [client.xadd("jobs", {"n": str(i)}) for i in range(20)]

    def consumed() -> list[str]:
        lines = [line for n in names for line in kubelet.logs(n).splitlines() if " got " in line]
        return lines if len(lines) >= len(ids) else []

    lines = wait_until(consumed, timeout=15)
    assert sorted(line.split()[2] for line in lines) == sorted(ids)
    wait_until(lambda: client.xpending("jobs", "workers")["pending"] == 0)
    consumers = {c["name"] for c in client.xinfo_consumers("jobs", "workers")}
    assert consumers == set(names)
    assert client.execute_command("INFO", "server")["redis_version"].startswith(
        redis_server.version
    )
    client.close()


@pytest.mark.parametrize("policy", ["Never", "OnFailure"])
def test_bare_pods_follow_their_restart_policy(kube_api: Any, kubelet: Any, policy: str) -> None:
    """Pods not owned by anything run too; restartPolicy Never/OnFailure end in
    Succeeded (exit 0) without restarts."""
    kube_api.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "once", "namespace": "default"},
            "spec": {
                "restartPolicy": policy,
                "containers": [
                    {"name": "c", "image": "i", "command": [sys.executable, "-c", "print('done')"]}
                ],
            },
        }
    )
    done = wait_until(
        lambda: (
            (kube_api.get("pods", "default", "once").get("status") or {}).get("phase")
            == "Succeeded"
            and kube_api.get("pods", "default", "once")
        )
    )
    status = done["status"]["containerStatuses"][0]
    assert status["restartCount"] == 0
    assert status["state"]["terminated"]["exitCode"] == 0
    assert kubelet.logs("once") == "done\n"
