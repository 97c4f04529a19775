"""kopf registrations: thin, as in crate-operator. Each handler hands its resource to a
controller loop; the loops hold the logic, the gateway and kube modules hold the I/O."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import kopf

from streamherd.api import API_GROUP, API_VERSION
from streamherd.controller import (
    board,
    consumers,
    groups,
    janitor,
    leadership,
    retention,
    streams,
    waiting,
)
from streamherd.controller.context import STATUS_INTERVAL, STATUS_WRITES_PER_SECOND, Context
from streamherd.controller.deployments import RELIST_SECONDS
from streamherd.decisions.leadership import ElectionTiming
from streamherd.kube import Credentials, KubeClient, Limits

FINALIZER = f"{API_GROUP}/finalizer"
KOPF_PREFIX = f"kopf.{API_GROUP}"
registry = kopf.OperatorRegistry()


class Runtime:
    """What `streamherd run` sets up before kopf starts: filled in by the handlers below."""

    ctx: Context | None = None
    credentials: Credentials = Credentials()
    limits: Limits = Limits()
    """The client-side request budget (`streamherd run --api-write-qps ...`)."""
    retry_for: float = 30.0
    """Seconds a request is retried on 429/5xx/timeouts (`--api-retry-for`)."""
    timeout: float = 30.0
    """Seconds one request may take (`--api-timeout`)."""
    """One source for kopf's watches and our own client (kube.auth): renewed together."""
    metrics_port: int | None = None
    poller_options: dict[str, Any] = {}
    stop_flag: asyncio.Event | None = None
    """The flag kopf was started with (leader election): set once kopf's cleanup is done, so
    kopf's own waiter on it ends and kopf returns at once (not after its 5 s wait for
    leftover tasks), and the Lease is released sooner."""
    status_interval: float = STATUS_INTERVAL
    status_writes_per_second: float = STATUS_WRITES_PER_SECOND
    deployment_relist_every: float = RELIST_SECONDS


GC_THRESHOLDS = (50_000, 20, 10)
"""The garbage collector's generation thresholds while the operator runs (CPython's are
(700, 10, 10)). A poll's results live for one poll interval (seconds), a status or a health
sample for minutes: at CPython's pace nearly all of them outlive two young collections and
reach the old generation, which then fills by a quarter every few seconds and is collected
whole, every object of every loop scanned each time. With 3,000 loops that was a third of
the operator's CPU (bench-load at half size: 14 s of full collections, 8 s of young ones,
in 67 s of CPU). A young generation of 50,000 allocations lets a poll's objects die young;
cycles are still freed, only later, which costs memory. bench-load, one run each in turn:
half size, CPython's 45.6 % of a core and 223 MiB, (10,000, 10, 10) 36.9 % and 244 MiB,
these 33.4 % and 255 MiB; full size, (10,000, 10, 10) 68.2 %, 388 MiB and 4,306 polls
later than 2 intervals, these 59.8 %, 397 MiB and 126."""


THAW_EVERY = 900.0
"""Seconds between thaws of what SurvivorFreezing froze (see there)."""


class SurvivorFreezing:
    """What survived a full collection is frozen (``gc.freeze``): later full collections
    scan only what came since. A full collection walks every tracked object and holds the
    event loop meanwhile: at half of bench-load's size (745,000 objects, most of them the
    resources' long-lived bodies, loops and histories) one took 826 ms, at full size more
    than a second, so polls came later than two intervals. Frozen objects are live ones, and
    the rare one that later becomes cyclic garbage (a deleted resource's loop) is freed at
    the next thaw: every ``THAW_EVERY`` seconds everything goes back to the old generation,
    the next full collection scans (and frees) it all, and what survives is frozen again.
    That bounds the memory such garbage can hold to what ``THAW_EVERY`` gathers, and the
    long pause to one per ``THAW_EVERY``. The thaw runs in its own daemon thread: the
    collector is the process's, not one kopf run's (leader election runs kopf again)."""

    def __init__(self, thaw_every: float = THAW_EVERY) -> None:
        self.thaw_every = thaw_every
        self.thaws = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def after_collection(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "stop" and info.get("generation") == 2:
            gc.freeze()

    def thaw(self) -> None:
        gc.unfreeze()
        self.thaws += 1

    def _thaw_periodically(self) -> None:
        while not self._stop.wait(self.thaw_every):
            self.thaw()

    def install(self) -> None:
        gc.callbacks.append(self.after_collection)
        self._thread = threading.Thread(target=self._thaw_periodically, name="gc thaw", daemon=True)
        self._thread.start()

    def uninstall(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self.after_collection)
        self.thaw()


def tune_garbage_collection() -> None:
    gc.set_threshold(*GC_THRESHOLDS)
    SurvivorFreezing().install()


class BoundedDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's last-handled-configuration annotation, left out for a spec too big for one:
    the API server caps all annotations of an object at 256 KiB, so writing a spec bigger
    than that (what a schema-less CRD lets through) fails every time, and kopf retries it
    forever - the object could not even be deleted. Such an object is then always "new" to
    kopf; nothing of ours needs its diff (the loops read the spec, and say it is invalid)."""

    MAX_BYTES = 128 * 1024

    def store(self, *, body: Any, patch: Any, essence: Any) -> None:
        if len(json.dumps(essence, separators=(",", ":"))) <= self.MAX_BYTES:
            super().store(body=body, patch=patch, essence=essence)


def quiet_toggle_sets() -> None:
    """kopf holds every resource's handlers until its indexes are filled: a ToggleSet with a
    toggle per object of an indexed kind, and one waiter per object of every kind. Each
    toggle made or dropped woke every waiter (notify_all) to find the set still off, so the
    start with 2,000 ConsumerGroups and 2,000 RedisStreams woke millions of them (quadratic:
    minutes of CPU before the first poll, py-spy in bench-load). Waiters only wait for the
    set's state to change: they are woken when it does. The state is the set's alone (its
    toggles, under its own condition), so nothing else can change it in between."""
    from kopf._cogs.aiokits import aiotoggles  # kopf's own primitive: no public name

    cls = aiotoggles.ToggleSet
    if getattr(cls, "streamherd_quiet", False):
        return

    async def make_toggle(
        self: Any, value: bool = False, *, name: str | None = None
    ) -> aiotoggles.Toggle:
        toggle = aiotoggles.Toggle(value, name=name, condition=self._condition)
        async with self._condition:
            was = self.is_on()
            self._toggles.add(toggle)
            if self.is_on() != was:
                self._condition.notify_all()
        return toggle

    async def drop_toggles(self: Any, toggles: Any) -> None:
        async with self._condition:
            was = self.is_on()
            self._toggles.difference_update(toggles)
            if self.is_on() != was:
                self._condition.notify_all()

    async def drop_toggle(self: Any, toggle: Any) -> None:
        await drop_toggles(self, (toggle,))

    cls.make_toggle = make_toggle  # type: ignore[method-assign]
    cls.drop_toggle = drop_toggle  # type: ignore[method-assign]
    cls.drop_toggles = drop_toggles  # type: ignore[method-assign]
    cls.streamherd_quiet = True  # type: ignore[attr-defined]


quiet_toggle_sets()


def configure(settings: kopf.OperatorSettings) -> None:
    """Our own names for everything kopf stores on our objects."""
    settings.persistence.finalizer = FINALIZER
    # kopf leaves annotations under its storage prefix out of the changes it reacts to: its
    # own prefix, then, or an edit of streamherd.io/paused would never reach a handler.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    settings.persistence.diffbase_storage = BoundedDiffBaseStorage(
        prefix=KOPF_PREFIX, key="last-handled-configuration"
    )
    settings.posting.enabled = False  # we post our own Events, on transitions only
    # Standalone: one active replica is ensured by our Lease (controller/leadership), not by
    # kopf's peering (why: see there).
    settings.peering.standalone = True
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    # A stopped daemon's loops hear it from the stop watch within STOP_CHECK_EVERY
    # (controller/waiting): kopf waits that long for them to end on their own. Its default
    # (10 zero-time cycles) cancels them at once and re-checks the deletion only 10 s later.
    settings.background.instant_exit_timeout = 4 * waiting.STOP_CHECK_EVERY


@kopf.on.login(registry=registry)
async def login(**_: Any) -> kopf.AiohttpSession:
    """kopf's watches use a session of ours (kube.auth): a 401 renews the credentials for
    both, and kopf's re-login reloads them and makes our client build a new session."""
    return await Runtime.credentials.kopf_login()


@kopf.on.startup(registry=registry)
async def startup(logger: Any, **kwargs: Any) -> None:
    if Runtime.ctx is None:
        Runtime.ctx = Context.create(
            KubeClient(
                Runtime.credentials,
                Runtime.limits,
                timeout=Runtime.timeout,
                retry_for=Runtime.retry_for,
            ),
            poller_options=Runtime.poller_options,
        )
        Runtime.ctx.status_interval = Runtime.status_interval
        Runtime.ctx.status_budget.per_second = Runtime.status_writes_per_second
        Runtime.ctx.status_budget.interval = Runtime.status_interval
        Runtime.ctx.deployments.relist_every = Runtime.deployment_relist_every
    # kopf's live indexes (below): filled from the watches before any resource handler runs.
    Runtime.ctx.stream_groups = kwargs["consumer_groups_by_stream"]
    Runtime.ctx.policies = kwargs["retention_policies"]
    if Runtime.metrics_port:
        Runtime.ctx.metrics.serve(Runtime.metrics_port)
        logger.info("metrics on :%d/metrics", Runtime.metrics_port)


@kopf.on.cleanup(registry=registry)
async def cleanup(**_: Any) -> None:
    if Runtime.ctx is not None:
        await Runtime.ctx.close()
        Runtime.ctx = None
    if Runtime.stop_flag is not None:
        Runtime.stop_flag.set()


async def run_elected(
    timing: ElectionTiming,
    *,
    namespace: str | None,
    name: str,
    operate: Callable[[asyncio.Event], Awaitable[None]],
    health_port: int | None,
) -> int:
    """kopf (``operate``) only while this process holds the Lease; its exit code."""
    # Its own client (and so its own request budget: renewals never wait behind status
    # writes), on kopf's credentials; retried no longer than a retry period.
    kube = KubeClient(Runtime.credentials, retry_for=timing.retry_period)
    elector = leadership.LeaderElector(
        kube, leadership.lease_namespace(namespace), name, leadership.candidate_identity(), timing
    )

    async def operate_remembering_the_flag(stop_flag: asyncio.Event) -> None:
        Runtime.stop_flag = stop_flag
        await operate(stop_flag)

    try:
        return await leadership.run_elected(
            elector, operate_remembering_the_flag, health_port=health_port
        )
    finally:
        await kube.close()


def ctx() -> Context:
    if Runtime.ctx is None:
        raise kopf.TemporaryError("the operator is still starting", delay=1)
    return Runtime.ctx


@kopf.on.probe(id="pollers", registry=registry)
async def probe_pollers(**_: Any) -> dict[str, Any]:
    context = Runtime.ctx
    if context is None:
        return {}
    return {
        poller.endpoint: "ok"
        if poller.latest and poller.latest.observation.problem is None
        else "failing"
        for poller in context.endpoints.pollers()
    }


# ------------------------------------------------------------------ Deployments (autoscaling)


# The Deployments groups reference are watched by the Deployment index itself, one watch per
# namespace in use (controller/deployments), not by a kopf watch of every Deployment.


# ------------------------------------------------------------------ RedisStream


@kopf.daemon(
    API_GROUP,
    API_VERSION,
    "redisstreams",
    registry=registry,
    cancellation_timeout=10,
    initial_delay=0,
)
async def redisstream_daemon(body: kopf.Body, stopped: kopf.DaemonStopped, **_: Any) -> None:
    await streams.run(ctx(), body, stopped)


@kopf.index(API_GROUP, API_VERSION, "consumergroups", registry=registry)
async def consumer_groups_by_stream(
    namespace: str | None, name: str, body: kopf.Body, **_: Any
) -> dict[Any, Any]:
    return board.index_group(str(namespace), name, body)


@kopf.index(API_GROUP, API_VERSION, "retentionpolicies", registry=registry)
async def retention_policies(namespace: str | None, name: str, **_: Any) -> dict[Any, Any]:
    return {(namespace, name): True}


@kopf.on.update(API_GROUP, API_VERSION, "redisstreams", registry=registry)
@kopf.on.update(API_GROUP, API_VERSION, "consumergroups", registry=registry)
@kopf.on.update(API_GROUP, API_VERSION, "retentionpolicies", registry=registry)
async def changed(body: kopf.Body, **_: Any) -> None:
    kind = body["kind"]
    ctx().wake(f"{kind}:{body.metadata.namespace}/{body.metadata.name}")


@kopf.on.delete(API_GROUP, API_VERSION, "redisstreams", registry=registry)
async def redisstream_deleted(body: kopf.Body, **_: Any) -> None:
    await streams.delete(ctx(), body)


# ------------------------------------------------------------------ ConsumerGroup


@kopf.daemon(
    API_GROUP,
    API_VERSION,
    "consumergroups",
    registry=registry,
    cancellation_timeout=10,
    initial_delay=0,
)
async def consumergroup_daemon(body: kopf.Body, stopped: kopf.DaemonStopped, **kwargs: Any) -> None:
    """The group's loop (status, autoscaling) and its janitor's (recovery of stranded work,
    dead-lettering, consumer clean-up; or, in mode CronJob, keeping the CronJob that does
    it), side by side in one daemon: each kopf daemon holds ~10 KiB of kopf's state (its
    stopper, kwargs, logger, progress; tracemalloc at 750 groups), a second one per group
    was ~20 MiB at 2,000 groups. An exception neither loop catches ends both, and kopf
    restarts the daemon. (kopf hands every handler the indexes below, by name.)"""
    index = consumers.PodIndex(
        kwargs["pods"], kwargs["pods_by_replicaset"], kwargs["replicasets_by_deployment"]
    )
    parse_spec = groups.spec_parser()
    async with asyncio.TaskGroup() as loops:
        loops.create_task(groups.run(ctx(), body, stopped, parse_spec), name="group loop")
        loops.create_task(janitor.run(ctx(), body, stopped, index, parse_spec), name="janitor loop")


@kopf.on.delete(API_GROUP, API_VERSION, "consumergroups", registry=registry)
async def consumergroup_deleted(body: kopf.Body, **_: Any) -> None:
    await groups.delete(ctx(), body)


# Pods by identity (owner chain Pod -> ReplicaSet -> Deployment), kept by watches: who is a
# pod of a group's Deployment, and who was and is gone. See controller/consumers.PodIndex.


@kopf.index("", "v1", "pods", registry=registry)
async def pods(body: kopf.Body, **_: Any) -> Any:
    return consumers.pod_by_name(body)


@kopf.index("", "v1", "pods", registry=registry)
async def pods_by_replicaset(body: kopf.Body, **_: Any) -> Any:
    return consumers.pod_by_replicaset(body)


@kopf.on.event("", "v1", "pods", registry=registry)
async def pod_seen(body: kopf.Body, **_: Any) -> None:
    """Remember which ReplicaSet each pod had, past its deletion (controller/consumers)."""
    if Runtime.ctx is not None:
        Runtime.ctx.pod_history.observe(body, time.monotonic())


@kopf.index("apps", "v1", "replicasets", registry=registry)
async def replicasets_by_deployment(body: kopf.Body, **_: Any) -> Any:
    return consumers.replicaset_by_deployment(body)


# ------------------------------------------------------------------ RetentionPolicy


@kopf.daemon(
    API_GROUP,
    API_VERSION,
    "retentionpolicies",
    registry=registry,
    cancellation_timeout=10,
    initial_delay=0,
)
async def retentionpolicy_daemon(body: kopf.Body, stopped: kopf.DaemonStopped, **_: Any) -> None:
    """Trims and deletes the streams of the RedisStreams that reference the policy."""
    await retention.run(ctx(), body, stopped)
