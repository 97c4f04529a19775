"""Leader election: one active operator among its replicas, by a coordination.k8s.io/v1 Lease
(client-go's leaderelection with a LeaseLock, in Python).

Why a Lease and not kopf's peering: peering is not a lock. A kopf operator starts processing
as soon as it sees no peer of higher priority, and a lower-priority one pauses only when it
sees the newcomer, so a rolling update briefly runs two active operators; equal priorities
(every replica of one Deployment) freeze them all; a crashed peer blocks the others until its
record's lifetime (60 s) ends; and it needs kopf's own CRDs installed. A Lease is a
compare-and-swap on its resourceVersion: at most one holder at a time, every Kubernetes has it
(no CRD), and its holder and times show in `kubectl get lease`.

How it is used (``run_elected``): a replica that is not the leader runs *nothing* of the
operator: kopf is not started, so no watch, no daemon, no Redis connection, no write; it
answers /healthz (so its Deployment's probes and a rolling update see it alive) and tries to
acquire the Lease every retry period. Once leader, it starts kopf and renews the Lease every
retry period. If it cannot renew for ``renew_deadline``, it stops kopf (every loop); if its
loops are not all stopped by ``timing.stop_after`` (before the others may take the Lease), a
watchdog thread ends the process. A leader that stepped down exits with code 1 (as
controller-runtime does: a restart is the clean state; its pod restarts it as a candidate).
On SIGTERM it stops kopf first, *then* releases the Lease (holder cleared), so its successor
starts at once and never while its loops still run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from streamherd.decisions.leadership import (
    JITTER_FACTOR,
    ElectionTiming,
    LeaseRecord,
    may_acquire,
)
from streamherd.kube import Conflict, KubeClient, KubeError
from streamherd.kube import requests as rq

logger = logging.getLogger(__name__)

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
STEPPED_DOWN_EXIT_CODE = 1


def candidate_identity() -> str:
    """Who holds the Lease: the pod's name (POD_NAME, from the Deployment) or the host, and a
    random part, as client-go's ``hostname_uuid``: a restarted container in the same pod is a
    new candidate, never mistaken for the holder it replaced."""
    import socket

    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:12]}"


def lease_namespace(explicit: str | None) -> str:
    """Where the Lease lives: the flag, else the pod's namespace (POD_NAMESPACE from the
    chart, or the service account's namespace file), else "default"."""
    if explicit:
        return explicit
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
    except OSError:
        return "default"


def _record(lease: dict[str, Any]) -> LeaseRecord:
    spec = lease.get("spec") or {}
    return LeaseRecord(
        holder=spec.get("holderIdentity") or "",
        duration_seconds=float(spec.get("leaseDurationSeconds") or 0),
        renew_time=str(spec.get("renewTime") or ""),
        transitions=int(spec.get("leaseTransitions") or 0),
    )


class LeaderElector:
    """One candidate's side of the election. State (what it last saw of the Lease, and when)
    is this process's own: the Lease in the API server is the only shared state, and every
    write to it is a compare-and-swap on the resourceVersion just read."""

    def __init__(
        self,
        kube: KubeClient,
        namespace: str,
        name: str,
        identity: str,
        timing: ElectionTiming | None = None,
    ) -> None:
        self.kube, self.namespace, self.name, self.identity = kube, namespace, name, identity
        self.timing = timing or ElectionTiming()
        self.observed: LeaseRecord | None = None
        self.observed_at = 0.0
        self.renewed_at: float | None = None
        """Monotonic time at which our last successful write *began* (conservative: the
        server stamped it later, the others saw it later still). None: not the leader."""

    @property
    def leading(self) -> bool:
        return self.renewed_at is not None

    def _observe(self, lease: dict[str, Any], now: float) -> LeaseRecord:
        record = _record(lease)
        if record != self.observed:
            self.observed, self.observed_at = record, now
        return record

    async def try_acquire_or_renew(self) -> bool:
        """One attempt (client-go's tryAcquireOrRenew): True when we hold the Lease after it.
        Bounded in time (half the renew deadline), so a hung request cannot hide a lost
        Lease from ``keep``."""
        try:
            async with asyncio.timeout(self.timing.renew_deadline / 2):
                return await self._attempt()
        except TimeoutError:
            logger.warning("lease %s/%s: no answer in time", self.namespace, self.name)
            return False

    async def _attempt(self) -> bool:
        started = time.monotonic()
        wall = datetime.now(UTC)
        seconds = max(1, round(self.timing.lease_duration))
        try:
            lease = await self.kube.get(rq.LEASES, self.namespace, self.name)
            if lease is None:
                body = rq.lease(
                    self.namespace,
                    self.name,
                    holder=self.identity,
                    duration_seconds=seconds,
                    acquired=wall,
                    renewed=wall,
                    transitions=0,
                )
                created = await self.kube.create(rq.LEASES, self.namespace, body)
                self._took(created, started, "created")
                return True
            record = self._observe(lease, started)
            if not may_acquire(record, self.identity, self.observed_at, started):
                self.renewed_at = None
                return False
            ours = record.holder == self.identity
            spec = lease.get("spec") or {}
            body = rq.lease(
                self.namespace,
                self.name,
                holder=self.identity,
                duration_seconds=seconds,
                acquired=_parse_time(spec.get("acquireTime")) if ours else wall,
                renewed=wall,
                transitions=record.transitions if ours else record.transitions + 1,
                resource_version=lease["metadata"]["resourceVersion"],
            )
            replaced = await self.kube.send(rq.replace(rq.LEASES, self.namespace, self.name, body))
            self._took(replaced, started, "renewed" if ours else f"taken from {record.holder!r}")
            return True
        except Conflict:
            return False  # someone wrote in between (or created it first): read again
        except (KubeError, OSError) as exc:
            logger.warning("lease %s/%s: %s", self.namespace, self.name, exc)
            return False

    def _took(self, lease: dict[str, Any], started: float, how: str) -> None:
        if self.renewed_at is None:
            logger.info(
                "leader election: %s is the leader of lease %s/%s (%s)",
                self.identity,
                self.namespace,
                self.name,
                how,
            )
        self._observe(lease, started)
        self.renewed_at = started

    async def acquire(self, give_up: asyncio.Event) -> bool:
        """Try every retry period (jittered) until we lead; False if ``give_up`` is set first."""
        announced = False
        while not give_up.is_set():
            if await self.try_acquire_or_renew():
                return True
            if not announced and self.observed is not None:
                logger.info(
                    "leader election: %s is the leader; %s stands by",
                    self.observed.holder or "nobody",
                    self.identity,
                )
                announced = True
            delay = self.timing.retry_period * random.uniform(1, JITTER_FACTOR)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(give_up.wait(), delay)
        return False

    async def keep(self, lost: asyncio.Event) -> None:
        """Renew every retry period; set ``lost`` when the renew deadline passes without a
        successful renewal (or someone else holds the Lease)."""
        while True:
            await asyncio.sleep(self.timing.retry_period)
            if await self.try_acquire_or_renew():
                continue
            renewed_at = self.renewed_at
            if renewed_at is None or time.monotonic() - renewed_at >= self.timing.renew_deadline:
                holder = self.observed.holder if self.observed else "?"
                logger.error(
                    "leader election: %s lost lease %s/%s (holder now %r): stopping every loop",
                    self.identity,
                    self.namespace,
                    self.name,
                    holder,
                )
                self.renewed_at = None
                lost.set()
                return

    async def release(self) -> None:
        """Give the Lease up (holder cleared, duration 1 s): a standby takes it at its next
        try instead of waiting out the lease duration. Read fresh (a renewal cut short by
        the stop may have landed unseen), and only while it is still ours."""
        self.renewed_at = None
        for _ in range(3):
            try:
                lease = await self.kube.get(rq.LEASES, self.namespace, self.name)
                if lease is None or _record(lease).holder != self.identity:
                    return
                spec = lease.get("spec") or {}
                wall = datetime.now(UTC)
                body = rq.lease(
                    self.namespace,
                    self.name,
                    holder="",
                    duration_seconds=1,
                    acquired=_parse_time(spec.get("acquireTime")),
                    renewed=wall,
                    transitions=_record(lease).transitions,
                    resource_version=lease["metadata"]["resourceVersion"],
                )
                await self.kube.send(rq.replace(rq.LEASES, self.namespace, self.name, body))
            except Conflict:
                continue
            except (KubeError, OSError, TimeoutError) as exc:
                logger.warning("leader election: could not release the lease: %s", exc)
                return
            logger.info(
                "leader election: %s released lease %s/%s", self.identity, self.namespace, self.name
            )
            return


def _parse_time(value: Any) -> datetime:
    if not value:
        return datetime.now(UTC)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


class Watchdog:
    """A thread that ends the process when the leader has not renewed for
    ``timing.stop_after``: the last guarantee that it is not active once others may lead,
    even when its event loop is stuck or a loop ignores its stop."""

    def __init__(self, elector: LeaderElector) -> None:
        self._elector = elector
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="lease-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()

    def _watch(self) -> None:
        limit = self._elector.timing.stop_after
        last = self._elector.renewed_at or time.monotonic()
        while not self._done.wait(0.2):
            renewed = self._elector.renewed_at
            last = renewed if renewed is not None else last
            if time.monotonic() - last > limit:
                logger.critical("leader election: loops still running past the lease: exiting")
                os._exit(STEPPED_DOWN_EXIT_CODE)


async def serve_standby_health(port: int | None) -> asyncio.Server | None:
    """/healthz of a replica that is not the leader (kopf, which serves it once we lead, is
    not running): alive, so probes do not restart it and a rolling update can progress. Plain
    asyncio (one fixed answer to any request): the API client library stays in kube."""
    if not port:
        return None

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            body = b'{"leader": false}'
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
            )
            await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(answer, "0.0.0.0", port, reuse_address=True)


async def run_elected(
    elector: LeaderElector,
    operate: Callable[[asyncio.Event], Awaitable[None]],
    *,
    health_port: int | None,
) -> int:
    """Stand by until we lead, then ``operate(stop_flag)`` (kopf) while renewing; the exit
    code: 0 after SIGTERM (Lease released), 1 after stepping down."""
    loop = asyncio.get_running_loop()
    terminating = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, terminating.set)
    standby = await serve_standby_health(health_port)
    try:
        acquired = await elector.acquire(terminating)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)  # kopf installs its own once it runs
        if standby is not None:
            standby.close()
            await standby.wait_closed()
    if not acquired:
        return 0
    stop_flag, lost = asyncio.Event(), asyncio.Event()
    watchdog = Watchdog(elector)
    watchdog.start()
    keeper = asyncio.create_task(elector.keep(lost), name="lease keeper")
    lost_watch = asyncio.create_task(_relay(lost, stop_flag), name="lease lost")
    try:
        await operate(stop_flag)
    finally:  # kopf has returned: every loop has stopped
        watchdog.stop()
        keeper.cancel()
        lost_watch.cancel()
        await asyncio.gather(keeper, lost_watch, return_exceptions=True)
    if lost.is_set():
        return STEPPED_DOWN_EXIT_CODE
    await elector.release()
    return 0


async def _relay(source: asyncio.Event, target: asyncio.Event) -> None:
    await source.wait()
    target.set()
