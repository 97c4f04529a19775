"""A simulated node for the API emulator: controllers, scheduler and kubelet in one.

- Deployment controller: one ReplicaSet per pod template (``<deploy>-<10-char hash>``), rolling
  (new pods first, old ones removed as new ones become ready) or Recreate; Deployment status.
- ReplicaSet controller: Pods ``<replicaset>-<5 chars>`` owned by their ReplicaSet; scale-in
  deletes unready pods first, then the lowest ``controller.kubernetes.io/pod-deletion-cost``,
  then the most restarted, then the newest (the real controller's ranking, minus node spread).
- Scheduler: binds every unbound pod to this one node.
- Kubelet: one real OS process per container (``command`` + ``args``; the image is ignored unless
  ``entrypoints`` maps it), env from the container spec (literal values, fieldRef, secretKeyRef,
  configMapKeyRef, envFrom) plus POD_NAME; Ready while the process runs; restarts exits in place
  with a short CrashLoopBackOff; graceful termination (SIGTERM, then SIGKILL after the grace
  period) when a pod is deleted; per-container log files (``kubelet.logs(pod)``, ``kubectl logs``).

It runs in the API emulator's loop and reads/writes the emulator's store directly, with the same
rules (resourceVersions, events, admission) as HTTP clients get.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import datetime
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e2e.cluster.apiserver import (
    SAFE_CHARS,
    ApiError,
    ApiServer,
    _threadsafe,
    now_iso,
    random_suffix,
)

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
REVISION = "deployment.kubernetes.io/revision"
POD_IP = "127.0.0.1"


def template_hash(template: Mapping[str, Any]) -> str:
    """A 10-character pod-template-hash (the real one is FNV-32a based; only the form matters)."""
    digest = hashlib.sha256(json.dumps(template, sort_keys=True, separators=(",", ":")).encode())
    number = int.from_bytes(digest.digest()[:8], "big")
    chars = []
    for _ in range(10):
        number, rest = divmod(number, len(SAFE_CHARS))
        chars.append(SAFE_CHARS[rest])
    return "".join(chars)


class ContainerConfigError(Exception):
    """The container cannot be started as specified (a missing Secret key, ...)."""


@dataclass
class ContainerRuntime:
    name: str
    spec: dict[str, Any]
    log_path: Path
    process: asyncio.subprocess.Process | None = None
    task: asyncio.Task[None] | None = None
    restart_count: int = 0
    started_at: str | None = None
    started_mono: float = 0.0
    waiting: tuple[str, str] | None = ("ContainerCreating", "")
    terminated: dict[str, Any] | None = None  # the current state, if it stays terminated
    last_terminated: dict[str, Any] | None = None
    backoff: float = 0.0


@dataclass
class PodRuntime:
    namespace: str
    name: str
    uid: str
    containers: list[ContainerRuntime] = field(default_factory=list)
    start_time: str = field(default_factory=now_iso)
    stopping: bool = False
    stopped: asyncio.Event = field(default_factory=asyncio.Event)
    grace: float = 30.0  # spec.terminationGracePeriodSeconds
    written_status: dict[str, Any] | None = None  # the last status this node wrote


class PodRunner:
    """The kubelet proper: runs the pods bound to ``node_name`` as real processes and reports
    their status. Subclasses say where pods come from and where their status goes: the emulator's
    store (:class:`Kubelet`) or a real API server (``e2e.cluster.node_agent.NodeAgent``)."""

    def __init__(
        self,
        *,
        node_name: str = "streamherd-node",
        log_dir: str | Path | None = None,
        cwd: str | Path = REPO_ROOT,
        extra_env: Mapping[str, str] | None = None,
        entrypoints: Mapping[str, Sequence[str]] | None = None,
        backoff_initial: float = 0.1,
        backoff_max: float = 2.0,
        backoff_reset: float = 10.0,
        stop_grace: float = 2.0,
    ) -> None:
        self.node_name = node_name
        self._own_log_dir = log_dir is None
        self.log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="kubelet-"))
        self.cwd = Path(cwd)
        self.extra_env = dict(extra_env or {})
        self.entrypoints = {k: list(v) for k, v in (entrypoints or {}).items()}
        self.backoff_initial, self.backoff_max = backoff_initial, backoff_max
        self.backoff_reset = backoff_reset
        self.stop_grace = stop_grace  # SIGTERM-to-SIGKILL time when the kubelet itself stops
        self.venv_bin = str(Path(sys.executable).parent)
        self.runtimes: dict[tuple[str, str], PodRuntime] = {}
        self.internal_errors: list[BaseException] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._poked = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ what a subclass provides

    def _current_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The pod as last seen (None: gone)."""
        raise NotImplementedError

    async def _lookup(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """A Secret or ConfigMap (``kind`` "secrets"/"configmaps"); None if it does not exist
        (any other failure raises ContainerConfigError, and the container start is retried)."""
        raise NotImplementedError

    async def _put_pod_status(self, pod: Mapping[str, Any], status: dict[str, Any]) -> None:
        raise NotImplementedError

    async def _delete_pod(self, pod: Mapping[str, Any]) -> None:
        """Delete the (terminated) pod with grace period 0, on the precondition of its uid."""
        raise NotImplementedError

    def _api_host_port(self) -> tuple[str, str]:
        """Where containers find the API server (KUBERNETES_SERVICE_HOST/PORT)."""
        raise NotImplementedError

    def cleanup(self) -> None:
        if self._own_log_dir:
            shutil.rmtree(self.log_dir, ignore_errors=True)

    def poke(self) -> None:
        self._poked.set()

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _stop_pods(self, grace: float) -> None:
        """Stop all processes (SIGTERM, SIGKILL after ``grace``); pods stay in the API."""
        await asyncio.gather(*(self._terminate(rt, grace) for rt in list(self.runtimes.values())))
        for task in list(self._tasks):
            task.cancel()

    # ------------------------------------------------------------------ public (any thread)

    @_threadsafe
    def kill(
        self,
        pod: str,
        namespace: str = "default",
        container: str | None = None,
        sig: int = signal.SIGKILL,
    ) -> int:
        """Send a signal (SIGKILL) to a pod's container process; returns its pid."""
        rt = self.runtimes.get((namespace, pod))
        if rt is None:
            raise LookupError(f"no pod {namespace}/{pod} runs on this node")
        for ctr in rt.containers:
            if (
                (container is None or ctr.name == container)
                and ctr.process is not None
                and ctr.process.returncode is None
            ):
                pid = ctr.process.pid
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, sig)
                return pid
        raise LookupError(f"pod {namespace}/{pod} has no running process")

    @_threadsafe
    def pid(self, pod: str, namespace: str = "default", container: str | None = None) -> int | None:
        rt = self.runtimes.get((namespace, pod))
        for ctr in rt.containers if rt else ():
            if (
                (container is None or ctr.name == container)
                and ctr.process is not None
                and ctr.process.returncode is None
            ):
                return ctr.process.pid
        return None

    @_threadsafe
    def processes(self, namespace: str | None = None) -> dict[str, int]:
        """Running processes by pod name (the first container of each pod)."""
        result = {}
        for (ns, name), rt in self.runtimes.items():
            if namespace is not None and ns != namespace:
                continue
            for ctr in rt.containers[:1]:
                if ctr.process is not None and ctr.process.returncode is None:
                    result[name] = ctr.process.pid
        return result

    def logs(
        self,
        pod: str,
        namespace: str = "default",
        container: str | None = None,
        previous: bool = False,
    ) -> str:
        return self._read_logs(namespace, pod, container, previous)

    def _log_path(self, namespace: str, pod: str, container: str) -> Path:
        return self.log_dir / f"{namespace}_{pod}_{container}.log"

    def _read_logs(self, namespace: str, pod: str, container: str | None, previous: bool) -> str:
        if container is None:
            candidates = sorted(self.log_dir.glob(f"{namespace}_{pod}_*.log"))
            if not candidates:
                return ""
            path = candidates[0]
        else:
            path = self._log_path(namespace, pod, container)
        if previous:
            path = path.with_suffix(".previous.log")
        return path.read_text(errors="replace") if path.exists() else ""

    # ------------------------------------------------------------------ pods

    async def _sync_pods(self, pods: Sequence[dict[str, Any]]) -> None:
        """Start, stop and report the pods bound to this node (``pods``: all that the API has)."""
        seen = set()
        for pod in pods:
            meta, spec = pod["metadata"], pod.get("spec") or {}
            if spec.get("nodeName") != self.node_name:
                continue
            key = (meta["namespace"], meta["name"])
            seen.add(key)
            rt = self.runtimes.get(key)
            if rt is not None and rt.uid != meta["uid"]:  # a new pod under an old name
                self._spawn(self._terminate(rt, 0), f"terminate {key}")
                rt = None
            if meta.get("deletionTimestamp"):
                if rt is None:
                    await self._finalize(pod)
                elif not rt.stopping:
                    grace = float(meta.get("deletionGracePeriodSeconds") or 0)
                    self._spawn(self._terminate_and_finalize(rt, grace), f"terminate {key}")
                continue
            if rt is None:
                if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                    continue
                rt = self._start_pod(pod)
            await self._write_pod_status(pod, rt)
        for key, rt in list(self.runtimes.items()):
            if key not in seen and not rt.stopping:  # force-deleted: stop what runs
                self._spawn(self._terminate(rt, rt.grace), f"terminate {key}")

    def _start_pod(self, pod: dict[str, Any]) -> PodRuntime:
        meta, spec = pod["metadata"], pod["spec"]
        rt = PodRuntime(
            namespace=meta["namespace"],
            name=meta["name"],
            uid=meta["uid"],
            grace=float(spec.get("terminationGracePeriodSeconds", 30)),
        )
        for cspec in spec.get("containers") or ():
            ctr = ContainerRuntime(
                name=cspec["name"],
                spec=cspec,
                log_path=self._log_path(rt.namespace, rt.name, cspec["name"]),
            )
            rt.containers.append(ctr)
        self.runtimes[(rt.namespace, rt.name)] = rt
        for ctr in rt.containers:
            ctr.task = self._spawn(
                self._run_container(rt, ctr, spec.get("restartPolicy", "Always")),
                f"container {rt.namespace}/{rt.name}/{ctr.name}",
            )
        return rt

    async def _run_container(self, rt: PodRuntime, ctr: ContainerRuntime, policy: str) -> None:
        first = True
        while not rt.stopping:
            pod = self._current_pod(rt.namespace, rt.name)
            if pod is None or pod["metadata"]["uid"] != rt.uid:
                return
            try:
                argv, env = await self._container_command(pod, ctr.spec)
            except ContainerConfigError as exc:
                ctr.waiting = ("CreateContainerConfigError", str(exc))
                self.poke()
                await self._sleep_unless_stopping(rt, 0.2)
                continue
            if not first:
                ctr.restart_count += 1
                if ctr.log_path.exists():
                    ctr.log_path.replace(ctr.log_path.with_suffix(".previous.log"))
            first = False
            ctr.log_path.parent.mkdir(parents=True, exist_ok=True)
            logfile = os.open(ctr.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                ctr.process = await asyncio.create_subprocess_exec(
                    *argv,
                    env=env,
                    cwd=str(ctr.spec.get("workingDir") or self.cwd),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=logfile,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                ctr.process = None
                ctr.waiting = ("RunContainerError", f"failed to start {argv[0]!r}: {exc}")
                ctr.last_terminated = {
                    "exitCode": 128,
                    "reason": "StartError",
                    "message": str(exc),
                    "startedAt": now_iso(),
                    "finishedAt": now_iso(),
                }
                if not await self._backoff(rt, ctr, 0.0):
                    return
                continue
            finally:
                os.close(logfile)
            ctr.started_at, ctr.started_mono = now_iso(), time.monotonic()
            ctr.waiting, ctr.terminated = None, None
            self.poke()
            code = await ctr.process.wait()
            exit_code = code if code >= 0 else 128 - code
            ctr.last_terminated = {
                "exitCode": exit_code,
                "reason": "Completed" if exit_code == 0 else "Error",
                "startedAt": ctr.started_at,
                "finishedAt": now_iso(),
                "containerID": f"process://{ctr.process.pid}",
            }
            if exit_code >= 128 and -code > 0:
                ctr.last_terminated["signal"] = -code
            ctr.process = None
            self.poke()
            if rt.stopping:
                return
            if policy == "Never" or (policy == "OnFailure" and exit_code == 0):
                ctr.terminated = dict(ctr.last_terminated)
                return
            if not await self._backoff(rt, ctr, time.monotonic() - ctr.started_mono):
                return

    async def _backoff(self, rt: PodRuntime, ctr: ContainerRuntime, ran_for: float) -> bool:
        """CrashLoopBackOff: wait before a restart; the delay doubles, capped, reset after a
        long enough run. False if the pod stops meanwhile."""
        if ran_for >= self.backoff_reset or ctr.backoff == 0:
            ctr.backoff = self.backoff_initial
        else:
            ctr.backoff = min(ctr.backoff * 2, self.backoff_max)
        ctr.waiting = (
            "CrashLoopBackOff",
            f"back-off {ctr.backoff:g}s restarting failed "
            f"container={ctr.name} pod={rt.name}_{rt.namespace}({rt.uid})",
        )
        self.poke()
        await self._sleep_unless_stopping(rt, ctr.backoff)
        return not rt.stopping

    async def _sleep_unless_stopping(self, rt: PodRuntime, delay: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(rt.stopped.wait(), delay)

    async def _container_command(
        self, pod: Mapping[str, Any], cspec: Mapping[str, Any]
    ) -> tuple[list[str], dict[str, str]]:
        env = await self._container_env(pod, cspec)
        command = list(cspec.get("command") or ())
        if not command:
            image = str(cspec.get("image") or "")
            for prefix, entrypoint in self.entrypoints.items():
                if image == prefix or image.split(":")[0].split("@")[0] == prefix:
                    command = list(entrypoint)
                    break
        argv = [_expand(part, env) for part in command + list(cspec.get("args") or ())]
        if not argv:
            raise ContainerConfigError(
                f"container {cspec.get('name')!r} has no command: the simulated kubelet does "
                f"not know the entrypoint of image {cspec.get('image')!r}"
            )
        return argv, env

    async def _container_env(
        self, pod: Mapping[str, Any], cspec: Mapping[str, Any]
    ) -> dict[str, str]:
        meta = pod["metadata"]
        host, port = self._api_host_port()
        env: dict[str, str] = {
            "PATH": os.pathsep.join([self.venv_bin, os.environ.get("PATH", "/usr/bin:/bin")]),
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8",
            "HOSTNAME": meta["name"],
            "KUBERNETES_SERVICE_HOST": host,
            "KUBERNETES_SERVICE_PORT": port,
            **self.extra_env,
            "POD_NAME": meta["name"],
        }
        namespace = meta["namespace"]
        for source in cspec.get("envFrom") or ():
            prefix = source.get("prefix", "")
            if "secretRef" in source:
                data = await self._data_of("secrets", namespace, source["secretRef"])
            elif "configMapRef" in source:
                data = await self._data_of("configmaps", namespace, source["configMapRef"])
            else:
                continue
            for key, value in data.items():
                env[prefix + key] = value
        for var in cspec.get("env") or ():
            name = var["name"]
            if "valueFrom" not in var:
                env[name] = _expand(str(var.get("value", "")), env)
                continue
            source = var["valueFrom"]
            if "fieldRef" in source:
                env[name] = self._field_ref(pod, source["fieldRef"]["fieldPath"])
            elif "secretKeyRef" in source or "configMapKeyRef" in source:
                kind, ref = (
                    ("secrets", source["secretKeyRef"])
                    if "secretKeyRef" in source
                    else ("configmaps", source["configMapKeyRef"])
                )
                found = await self._key_ref(kind, namespace, ref)
                if found is not None:
                    env[name] = found
            elif "resourceFieldRef" in source:
                resource = source["resourceFieldRef"].get("resource", "")
                kind, _, what = resource.partition(".")
                limits = (cspec.get("resources") or {}).get(kind) or {}
                env[name] = str(limits.get(what, "0" if what == "memory" else "1"))
            else:
                raise ContainerConfigError(f"unsupported valueFrom for {name}: {source}")
        return env

    def _field_ref(self, pod: Mapping[str, Any], path: str) -> str:
        meta = pod["metadata"]
        simple = {
            "metadata.name": meta["name"],
            "metadata.namespace": meta["namespace"],
            "metadata.uid": meta["uid"],
            "spec.nodeName": self.node_name,
            "spec.serviceAccountName": (pod.get("spec") or {}).get("serviceAccountName", "default"),
            "status.podIP": POD_IP,
            "status.podIPs": POD_IP,
            "status.hostIP": POD_IP,
            "status.hostIPs": POD_IP,
        }
        if path in simple:
            return str(simple[path])
        match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
        if match:
            return str((meta.get(match[1]) or {}).get(match[2], ""))
        raise ContainerConfigError(f"unsupported fieldRef fieldPath {path!r}")

    async def _data_of(self, kind: str, namespace: str, ref: Mapping[str, Any]) -> dict[str, str]:
        obj = await self._lookup(kind, namespace, ref.get("name", ""))
        if obj is None:
            if ref.get("optional"):
                return {}
            raise ContainerConfigError(f'{kind[:-1]} "{ref.get("name")}" not found')
        return _decoded(kind, obj)

    async def _key_ref(self, kind: str, namespace: str, ref: Mapping[str, Any]) -> str | None:
        obj = await self._lookup(kind, namespace, ref.get("name", ""))
        if obj is None:
            if ref.get("optional"):
                return None
            raise ContainerConfigError(f'{kind[:-1]} "{ref.get("name")}" not found')
        data = _decoded(kind, obj)
        if ref.get("key") not in data:
            if ref.get("optional"):
                return None
            raise ContainerConfigError(
                f"couldn't find key {ref.get('key')} in {kind[:-1].capitalize()} "
                f"{namespace}/{ref.get('name')}"
            )
        return data[ref["key"]]

    async def _terminate(self, rt: PodRuntime, grace: float) -> None:
        """Stop a pod's processes: SIGTERM, then SIGKILL after the grace period."""
        if rt.stopping:
            await rt.stopped.wait()
            return
        rt.stopping = True
        running = [
            c.process
            for c in rt.containers
            if c.process is not None and c.process.returncode is None
        ]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        if running:
            waiting = asyncio.gather(*(p.wait() for p in running))
            try:
                await asyncio.wait_for(asyncio.shield(waiting), max(grace, 0.0))
            except TimeoutError:
                for proc in running:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                await waiting
        # Kill what the container left behind in its process group, as a container's end would.
        for proc in running:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        rt.stopped.set()
        for ctr in rt.containers:
            if ctr.task is not None:
                ctr.task.cancel()
        if self.runtimes.get((rt.namespace, rt.name)) is rt:
            del self.runtimes[(rt.namespace, rt.name)]
        self.poke()

    async def _terminate_and_finalize(self, rt: PodRuntime, grace: float) -> None:
        await self._terminate(rt, grace)
        pod = self._current_pod(rt.namespace, rt.name)
        if pod is not None and pod["metadata"]["uid"] == rt.uid:
            await self._finalize(pod)

    async def _finalize(self, pod: Mapping[str, Any]) -> None:
        """The kubelet's last word on a terminated pod: delete it with grace period 0."""
        meta = pod["metadata"]
        if meta.get("deletionGracePeriodSeconds") == 0 and meta.get("finalizers"):
            return
        await self._delete_pod(pod)

    async def _write_pod_status(self, pod: Mapping[str, Any], rt: PodRuntime) -> None:
        old = pod.get("status") or {}
        statuses = []
        for ctr in rt.containers:
            running = ctr.process is not None and ctr.process.returncode is None
            if running:
                state: dict[str, Any] = {"running": {"startedAt": ctr.started_at}}
            elif ctr.terminated is not None:
                state = {"terminated": ctr.terminated}
            else:
                reason, message = ctr.waiting or ("ContainerCreating", "")
                state = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
            status: dict[str, Any] = {
                "name": ctr.name,
                "image": ctr.spec.get("image", ""),
                "imageID": "",
                "ready": running,
                "started": running,
                "restartCount": ctr.restart_count,
                "state": state,
                "lastState": {},
            }
            if running:
                status["containerID"] = f"process://{ctr.process.pid}"  # type: ignore[union-attr]
            if ctr.last_terminated is not None and ctr.terminated is None:
                status["lastState"] = {"terminated": ctr.last_terminated}
            statuses.append(status)
        all_running = bool(statuses) and all(s["ready"] for s in statuses)
        ever_started = all(c.started_at is not None for c in rt.containers)
        terminated = [c.terminated for c in rt.containers]
        if rt.containers and all(t is not None for t in terminated):
            phase = "Succeeded" if all(t and t["exitCode"] == 0 for t in terminated) else "Failed"
        elif ever_started:
            phase = "Running"
        else:
            phase = "Pending"
        old_conditions = {c.get("type"): c for c in old.get("conditions") or ()}

        def condition(kind: str, ok: bool) -> dict[str, Any]:
            value = "True" if ok else "False"
            previous = old_conditions.get(kind)
            since = (
                previous["lastTransitionTime"]
                if previous and previous.get("status") == value
                else now_iso()
            )
            return {
                "type": kind,
                "status": value,
                "lastProbeTime": None,
                "lastTransitionTime": since,
            }

        new_status = {
            "phase": phase,
            "conditions": [
                condition("PodScheduled", True),
                condition("Initialized", True),
                condition("ContainersReady", all_running),
                condition("Ready", all_running),
            ],
            "hostIP": POD_IP,
            "hostIPs": [{"ip": POD_IP}],
            "podIP": POD_IP,
            "podIPs": [{"ip": POD_IP}],
            "startTime": old.get("startTime", rt.start_time),
            "qosClass": old.get("qosClass", "BestEffort"),
            "containerStatuses": statuses,
        }
        # Compared with what this node wrote last, too: a real API server stores a normalised
        # status (empty fields dropped), which never equals ours and would loop.
        if new_status == old or new_status == rt.written_status:
            return
        await self._put_pod_status(pod, new_status)
        rt.written_status = new_status


class Kubelet(PodRunner):
    """The simulated node of the API emulator: a Deployment controller, a ReplicaSet controller,
    a scheduler and the kubelet (:class:`PodRunner`), in the emulator's loop, reading and writing
    its store directly with the same rules (resourceVersions, events, admission) as HTTP
    clients get."""

    def __init__(self, api: ApiServer, **options: Any) -> None:
        super().__init__(**options)
        self.api = api
        self._seq = 0
        self._creation_seq: dict[str, int] = {}  # pod uid -> creation order (sub-second ties)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._poked = asyncio.Event()
        self.api.graceful_pod_deletion = True
        self.api.pod_logs = self._read_logs
        nodes = self.api.resolve("nodes")
        if self.api._stored(nodes, None, self.node_name) is None:
            self.api._create(
                nodes,
                None,
                {
                    "metadata": {
                        "name": self.node_name,
                        "labels": {"kubernetes.io/hostname": self.node_name},
                    }
                },
            )
            self.api._update(
                nodes,
                None,
                self.node_name,
                lambda n: {
                    **n,
                    "status": {
                        "conditions": [
                            {
                                "type": "Ready",
                                "status": "True",
                                "reason": "KubeletReady",
                                "message": "the simulated kubelet is posting ready status",
                            }
                        ],
                        "addresses": [
                            {"type": "InternalIP", "address": POD_IP},
                            {"type": "Hostname", "address": self.node_name},
                        ],
                        "capacity": {"cpu": str(os.cpu_count() or 1), "pods": "110"},
                    },
                },
                subresource="status",
            )
        self._task = asyncio.create_task(self._main(), name="kubelet")

    async def stop(self, grace: float | None = None) -> None:
        """Stop all processes (SIGTERM, SIGKILL after ``grace``); pods stay in the API."""
        grace = self.stop_grace if grace is None else grace
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._stop_pods(grace)
        self.api.graceful_pod_deletion = False
        self.api.pod_logs = None

    async def _main(self) -> None:
        while True:
            changed = self.api.change_event()
            self._poked.clear()
            try:
                await self._reconcile()
            except Exception as exc:
                log.exception("kubelet reconciliation failed")
                self.internal_errors.append(exc)
            waiters = [
                asyncio.ensure_future(changed.wait()),
                asyncio.ensure_future(self._poked.wait()),
            ]
            try:
                await asyncio.wait(waiters, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()

    # ------------------------------------------------------------------ the store, for the kubelet

    def _current_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.api._stored(self.api.resolve("pods"), namespace, name)

    async def _lookup(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.api._stored(self.api.resolve(kind), namespace, name)

    async def _put_pod_status(self, pod: Mapping[str, Any], status: dict[str, Any]) -> None:
        def write(p: dict[str, Any]) -> dict[str, Any]:
            p["status"] = status
            return p

        meta = pod["metadata"]
        with contextlib.suppress(ApiError):
            self.api._update(
                self.api.resolve("pods"),
                meta["namespace"],
                meta["name"],
                write,
                subresource="status",
            )

    async def _delete_pod(self, pod: Mapping[str, Any]) -> None:
        meta = pod["metadata"]
        with contextlib.suppress(ApiError):
            self.api._delete(
                self.api.resolve("pods"),
                meta["namespace"],
                meta["name"],
                {"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}},
            )

    def _api_host_port(self) -> tuple[str, str]:
        api_url = self.api._url or "http://127.0.0.1:0"
        host, _, port = api_url.removeprefix("http://").partition(":")
        return host, port

    # ------------------------------------------------------------------ reconciliation

    async def _reconcile(self) -> None:
        api = self.api
        pods_t, rs_t, deploy_t = (
            api.resolve("pods"),
            api.resolve("replicasets.apps"),
            api.resolve("deployments.apps"),
        )
        self._schedule(pods_t)
        await self._sync_pods(list(api._items(pods_t)))
        for rs in list(api._items(rs_t)):
            self._sync_replicaset(rs_t, pods_t, rs)
        for deploy in list(api._items(deploy_t)):
            self._sync_deployment(deploy_t, rs_t, pods_t, deploy)

    def _schedule(self, pods_t: Any) -> None:
        for pod in list(self.api._items(pods_t)):
            meta = pod["metadata"]
            if not (pod.get("spec") or {}).get("nodeName") and not meta.get("deletionTimestamp"):

                def bind(p: dict[str, Any]) -> dict[str, Any]:
                    p["spec"]["nodeName"] = self.node_name
                    return p

                with contextlib.suppress(ApiError):
                    self.api._update(pods_t, meta["namespace"], meta["name"], bind)

    # --- ReplicaSet controller

    def _owned(
        self, items: Sequence[dict[str, Any]], owner: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        uid = owner["metadata"]["uid"]
        return [
            o
            for o in items
            if any(
                ref.get("uid") == uid and ref.get("controller")
                for ref in o["metadata"].get("ownerReferences") or ()
            )
        ]

    def _sync_replicaset(self, rs_t: Any, pods_t: Any, rs: dict[str, Any]) -> None:
        meta, spec = rs["metadata"], rs.get("spec") or {}
        if meta.get("deletionTimestamp"):
            return
        namespace = meta["namespace"]
        pods = self._owned(self.api._items(pods_t, namespace), rs)
        active = [
            p
            for p in pods
            if not p["metadata"].get("deletionTimestamp")
            and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        ]
        desired = int(spec.get("replicas", 1))
        if len(active) < desired:
            template = spec.get("template") or {}
            for _ in range(desired - len(active)):
                self._create_pod(pods_t, rs, template)
        elif len(active) > desired:
            for victim in sorted(active, key=self._deletion_rank)[: len(active) - desired]:
                with contextlib.suppress(ApiError):
                    self.api._delete(pods_t, namespace, victim["metadata"]["name"], {})
        active = [
            p
            for p in self._owned(self.api._items(pods_t, namespace), rs)
            if not p["metadata"].get("deletionTimestamp")
            and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        ]
        ready = sum(1 for p in active if _is_ready(p))
        status = {
            "replicas": len(active),
            "fullyLabeledReplicas": len(active),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "observedGeneration": meta.get("generation", 1),
        }
        if (rs.get("status") or {}) != status:

            def write(o: dict[str, Any]) -> dict[str, Any]:
                o["status"] = status
                return o

            with contextlib.suppress(ApiError):
                self.api._update(rs_t, namespace, meta["name"], write, subresource="status")

    def _create_pod(self, pods_t: Any, rs: Mapping[str, Any], template: Mapping[str, Any]) -> None:
        meta = rs["metadata"]
        tmeta = template.get("metadata") or {}
        pod: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{meta['name']}-{random_suffix(5)}",
                "namespace": meta["namespace"],
                "labels": dict(tmeta.get("labels") or {}),
                "annotations": dict(tmeta.get("annotations") or {}),
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "ReplicaSet",
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": copy.deepcopy(template.get("spec") or {}),
        }
        if not pod["metadata"]["annotations"]:
            del pod["metadata"]["annotations"]
        with contextlib.suppress(ApiError):
            created = self.api._create(pods_t, meta["namespace"], pod)
            self._seq += 1
            self._creation_seq[created["metadata"]["uid"]] = self._seq

    def _deletion_rank(self, pod: Mapping[str, Any]) -> tuple[Any, ...]:
        """Which pods a ReplicaSet deletes first on scale-in (ascending)."""
        meta = pod["metadata"]
        try:
            cost = int((meta.get("annotations") or {}).get(DELETION_COST, "0"))
        except ValueError:
            cost = 0
        restarts = sum(
            c.get("restartCount", 0)
            for c in (pod.get("status") or {}).get("containerStatuses") or ()
        )
        created = (meta.get("creationTimestamp") or "", self._creation_seq.get(meta["uid"], 0))
        return (
            bool((pod.get("spec") or {}).get("nodeName")),  # unscheduled first
            _is_ready(pod),  # not ready first
            cost,  # lower pod-deletion-cost first
            -restarts,  # more restarts first
            _negate(created),  # newer first
        )

    # --- Deployment controller

    def _sync_deployment(
        self, deploy_t: Any, rs_t: Any, pods_t: Any, deploy: dict[str, Any]
    ) -> None:
        meta, spec = deploy["metadata"], deploy.get("spec") or {}
        if meta.get("deletionTimestamp"):
            return
        namespace, name = meta["namespace"], meta["name"]
        template = spec.get("template") or {}
        tmpl_hash = template_hash(template)
        desired = int(spec.get("replicas", 1))
        owned = self._owned(self.api._items(rs_t, namespace), deploy)
        new_rs = next(
            (
                r
                for r in owned
                if (r["metadata"].get("labels") or {}).get("pod-template-hash") == tmpl_hash
            ),
            None,
        )
        old_rses = [r for r in owned if r is not new_rs]
        revisions = [
            int((r["metadata"].get("annotations") or {}).get(REVISION, "0")) for r in owned
        ]
        pods_by_rs = {
            r["metadata"]["uid"]: self._owned(self.api._items(pods_t, namespace), r) for r in owned
        }
        recreate = (spec.get("strategy") or {}).get("type") == "Recreate"
        old_pods_left = any(pods_by_rs.get(r["metadata"]["uid"]) for r in old_rses)
        if new_rs is None:
            rs_name = f"{name}-{tmpl_hash}"
            rs_template = copy.deepcopy(template)
            rs_template.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = (
                tmpl_hash
            )
            selector = copy.deepcopy(spec.get("selector") or {})
            selector.setdefault("matchLabels", {})["pod-template-hash"] = tmpl_hash
            rs_body: dict[str, Any] = {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "metadata": {
                    "name": rs_name,
                    "namespace": namespace,
                    "labels": dict(rs_template["metadata"]["labels"]),
                    "annotations": {
                        REVISION: str(max(revisions, default=0) + 1),
                        "deployment.kubernetes.io/desired-replicas": str(desired),
                    },
                    "ownerReferences": [
                        {
                            "apiVersion": "apps/v1",
                            "kind": "Deployment",
                            "name": name,
                            "uid": meta["uid"],
                            "controller": True,
                            "blockOwnerDeletion": True,
                        }
                    ],
                },
                "spec": {
                    "replicas": 0 if (recreate and old_pods_left) else desired,
                    "selector": selector,
                    "template": rs_template,
                },
            }
            try:
                new_rs = self.api._create(rs_t, namespace, rs_body)
            except ApiError as exc:
                log.warning("cannot create ReplicaSet %s: %s", rs_name, exc.message)
                return
            pods_by_rs[new_rs["metadata"]["uid"]] = []
        new_pods = [
            p
            for p in pods_by_rs.get(new_rs["metadata"]["uid"], [])
            if not p["metadata"].get("deletionTimestamp")
        ]
        new_ready = sum(1 for p in new_pods if _is_ready(p))
        # Desired replicas of each ReplicaSet under the strategy.
        targets = {new_rs["metadata"]["name"]: 0 if (recreate and old_pods_left) else desired}
        budget = 0 if recreate else max(0, desired - new_ready)
        for rs in sorted(
            old_rses, key=lambda r: r["metadata"].get("creationTimestamp", ""), reverse=True
        ):
            keep = min(int((rs.get("spec") or {}).get("replicas", 0)), budget)
            targets[rs["metadata"]["name"]] = keep
            budget -= keep
        for rs in [new_rs, *old_rses]:
            target = targets[rs["metadata"]["name"]]
            if int((rs.get("spec") or {}).get("replicas", 0)) != target:

                def scale(o: dict[str, Any], target: int = target) -> dict[str, Any]:
                    o["spec"]["replicas"] = target
                    return o

                with contextlib.suppress(ApiError):
                    self.api._update(rs_t, namespace, rs["metadata"]["name"], scale)
        revision = (new_rs["metadata"].get("annotations") or {}).get(REVISION, "1")
        if (meta.get("annotations") or {}).get(REVISION) != revision:

            def annotate(o: dict[str, Any]) -> dict[str, Any]:
                o["metadata"].setdefault("annotations", {})[REVISION] = revision
                return o

            with contextlib.suppress(ApiError):
                self.api._update(deploy_t, namespace, name, annotate)
        self._write_deployment_status(deploy_t, deploy, new_rs, owned, pods_by_rs, desired)

    def _write_deployment_status(
        self,
        deploy_t: Any,
        deploy: Mapping[str, Any],
        new_rs: Mapping[str, Any],
        owned: Sequence[Mapping[str, Any]],
        pods_by_rs: Mapping[str, Sequence[Mapping[str, Any]]],
        desired: int,
    ) -> None:
        meta = deploy["metadata"]
        active = [
            p
            for pods in pods_by_rs.values()
            for p in pods
            if not p["metadata"].get("deletionTimestamp")
        ]
        updated = [
            p
            for p in pods_by_rs.get(new_rs["metadata"]["uid"], [])
            if not p["metadata"].get("deletionTimestamp")
        ]
        ready = sum(1 for p in active if _is_ready(p))
        old = deploy.get("status") or {}
        max_unavailable = _max_unavailable(deploy.get("spec") or {}, desired)
        available_ok = ready >= desired - max_unavailable
        complete = len(updated) == desired and ready == desired and len(active) == desired
        old_conditions = {c.get("type"): c for c in old.get("conditions") or ()}

        def condition(kind: str, ok: bool, reason: str, message: str) -> dict[str, Any]:
            value = "True" if ok else "False"
            previous = old_conditions.get(kind)
            if previous and previous.get("status") == value and previous.get("reason") == reason:
                return dict(previous)
            return {
                "type": kind,
                "status": value,
                "reason": reason,
                "message": message,
                "lastUpdateTime": now_iso(),
                "lastTransitionTime": now_iso(),
            }

        status: dict[str, Any] = {
            "observedGeneration": meta.get("generation", 1),
            "replicas": len(active),
            "updatedReplicas": len(updated),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "unavailableReplicas": max(0, desired - ready),
            "conditions": [
                condition(
                    "Available",
                    available_ok,
                    "MinimumReplicasAvailable" if available_ok else "MinimumReplicasUnavailable",
                    "Deployment has minimum availability."
                    if available_ok
                    else "Deployment does not have minimum availability.",
                ),
                condition(
                    "Progressing",
                    True,
                    "NewReplicaSetAvailable" if complete else "ReplicaSetUpdated",
                    f'ReplicaSet "{new_rs["metadata"]["name"]}" '
                    + ("has successfully progressed." if complete else "is progressing."),
                ),
            ],
        }
        for key in (
            "readyReplicas",
            "availableReplicas",
            "unavailableReplicas",
            "replicas",
            "updatedReplicas",
        ):
            if not status[key]:
                del status[key]  # zero counts are omitted, as in the real API's JSON
        if old == status:
            return

        def write(o: dict[str, Any]) -> dict[str, Any]:
            o["status"] = status
            return o

        with contextlib.suppress(ApiError):
            self.api._update(deploy_t, meta["namespace"], meta["name"], write, subresource="status")


def _is_ready(pod: Mapping[str, Any]) -> bool:
    for cond in (pod.get("status") or {}).get("conditions") or ():
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def _negate(key: tuple[str, int]) -> tuple[Any, ...]:
    """Sort key that puts later (timestamp, seq) pairs first."""
    stamp = key[0]
    try:
        moment = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").timestamp()
    except ValueError:
        moment = 0.0
    return (-moment, -key[1])


def _max_unavailable(spec: Mapping[str, Any], desired: int) -> int:
    strategy = spec.get("strategy") or {}
    if strategy.get("type") == "Recreate":
        return desired
    value = (strategy.get("rollingUpdate") or {}).get("maxUnavailable", "25%")
    if isinstance(value, str) and value.endswith("%"):
        return int(desired * int(value[:-1]) / 100)
    return int(value)


def _decoded(kind: str, obj: Mapping[str, Any]) -> dict[str, str]:
    if kind == "secrets":
        data = {
            k: base64.b64decode(v).decode(errors="replace")
            for k, v in (obj.get("data") or {}).items()
        }
        data.update({k: str(v) for k, v in (obj.get("stringData") or {}).items()})
        return data
    return {k: str(v) for k, v in (obj.get("data") or {}).items()}


_VAR_RE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def _expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in command, args and env values ($$ escapes)."""

    def repl(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _VAR_RE.sub(repl, text)


__all__ = ["ContainerConfigError", "Kubelet", "PodRunner", "PodRuntime", "template_hash"]
