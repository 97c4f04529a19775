"""Leader election (controller/leadership.py): several `streamherd run --leader-election`
processes, one Lease, exactly one active, judged by what each process sends to Redis (MONITOR,
attributed to processes by their sockets) and whether it holds a connection at all. A rolling
update (a new replica started, the old one stopped gracefully) never has two active; killing
the leader with SIGKILL hands over within the lease duration, measured (``takeover_s``); a
leader whose Lease was taken from under it stops every loop and exits."""

from __future__ import annotations

import json
import signal
import time
from typing import Any

import pytest
from e2e.cluster.processes import OperatorProcess, wait_until
from e2e.cluster.redis import free_port
from tests.harness import Harness
from tests.leadership.writers import RedisWriters

LEASE = "streamherd-test"
# Short timings keep the suite fast; the defaults (10/6/2 s) run in make e2e and
# make bench-takeover, which print the takeover they measured.
FAST = ("--lease-duration", "3", "--renew-deadline", "2", "--retry-period", "0.5")
TIMINGS = {"fast": (FAST, 3.0), "defaults": ((), 10.0)}


def start_replica(h: Harness, name: str, *extra: str) -> tuple[OperatorProcess, int]:
    """One replica, with its own health port; (its process, that port)."""
    health = free_port()
    proc = h.start_operator(
        [
            "streamherd",
            "run",
            "--metrics-port",
            "0",
            "--health-port",
            str(health),
            "--log-level",
            "DEBUG",
            *(["--namespace", h.namespace] if h.watch_namespace else []),
            "--leader-election",
            "--leader-election-namespace",
            h.namespace,
            "--leader-election-id",
            LEASE,
            *extra,
        ],
        env={**h.operator_env, "POD_NAME": name},
    )
    return proc, health


def healthy(port: int) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def lease(h: Harness) -> dict[str, Any]:
    return h.api.get("leases.coordination.k8s.io", h.namespace, LEASE) or {}


def holder(h: Harness) -> str:
    return str((lease(h).get("spec") or {}).get("holderIdentity") or "")


def active(writers: RedisWriters, name: str, since: float) -> bool:
    return bool(writers.first_after(name, since))


@pytest.mark.control_plane
@pytest.mark.e2e_variants("emulator", "defaults")  # the suite: fast timings, real API server
@pytest.mark.parametrize("timing", list(TIMINGS))
def test_one_active_a_rolling_update_never_two_and_takeover_after_a_crash(
    harness: Harness, timing: str
) -> None:
    h = harness
    flags, lease_duration = TIMINGS[timing]
    h.stream()
    h.group("workers")
    writers = RedisWriters(h.redis_server.host, h.redis_server.port).start()
    try:
        a, _ = start_replica(h, "replica-a", *flags)
        writers.pids["a"] = a.pid
        a.wait_for_log(r"replica-a_\w+ is the leader of lease", timeout=30)
        h.wait_ready("ConsumerGroup", "workers", timeout=30)
        b, b_health = start_replica(h, "replica-b", *flags)
        writers.pids["b"] = b.pid
        b.wait_for_log(r"stands by", timeout=30)
        wait_until(lambda: healthy(b_health), 20, message="the standby's /healthz never answered")
        # Exactly one active: A keeps polling while B, standing by, sends Redis nothing.
        # (A wait to show that something does *not* happen: B's silence over A's polls.)
        since = time.time()
        wait_until(lambda: len([t for t in writers.by("a") if t > since]) >= 3, 20)
        assert writers.by("b") == [], "the standby sent Redis commands"
        assert holder(h).startswith("replica-a_")

        # A rolling update: the new replica (B) stands by; the old one (A) gets SIGTERM,
        # stops its loops, releases the Lease; B takes over at its next try.
        stopped_at = time.time()
        assert a.stop(timeout=30) == 0, a.logs()[-3000:]
        b.wait_for_log(r"replica-b_\w+ is the leader of lease", timeout=30)
        wait_until(lambda: active(writers, "b", stopped_at), 30, message=lambda: b.logs()[-3000:])
        handover_s = writers.first_after("b", stopped_at) - stopped_at  # type: ignore[operator]
        last_a, first_b = max(writers.by("a")), min(writers.by("b"))
        assert last_a < first_b, f"A's last command {last_a} after B's first {first_b}"
        assert "released lease" in a.logs()
        h.wait_ready("ConsumerGroup", "workers", timeout=30)

        # A crash: C stands by, B (the leader) is killed; C takes the Lease once it expires.
        c, _ = start_replica(h, "replica-c", *flags)
        writers.pids["c"] = c.pid
        c.wait_for_log(r"stands by", timeout=30)
        assert writers.by("c") == []
        killed_at = time.time()
        b.signal(signal.SIGKILL)
        wait_until(lambda: not b.running, 10)
        c.wait_for_log(r"replica-c_\w+ is the leader of lease", timeout=40)
        wait_until(lambda: active(writers, "c", killed_at), 30, message=lambda: c.logs()[-3000:])
        takeover_s = writers.first_after("c", killed_at) - killed_at  # type: ignore[operator]
        assert max(writers.by("b")) < min(writers.by("c"))
        assert writers.overlaps == [], (
            f"two processes connected to Redis at once: {writers.overlaps}"
        )
        assert (lease(h)["spec"]["leaseTransitions"]) == 2  # A -> B (released) -> C
        # The lease duration bounds the takeover from below (less a retry period: the last
        # renewal may precede the kill); the goal, 15 s, is for the defaults.
        assert takeover_s >= lease_duration - 2.5, takeover_s
        print(
            json.dumps(
                {
                    "timing": timing,
                    "handover_s": round(handover_s, 2),
                    "takeover_s": round(takeover_s, 2),
                }
            )
        )

        # The Lease taken from under the leader (as after a partition that outlasted it): C
        # notices at its next renewal, stops every loop and exits 1, sending Redis nothing
        # more well before even a fast lease could have expired for it.
        h.api.patch(
            "leases.coordination.k8s.io",
            h.namespace,
            LEASE,
            {"spec": {"holderIdentity": "someone-else"}},
        )
        taken_at = time.time()
        c.wait_for_log(r"lost lease", timeout=20)
        wait_until(lambda: not c.running, 20, message=lambda: c.logs()[-3000:])
        assert c.returncode == 1
        assert max(writers.by("c")) - taken_at < lease_duration, (max(writers.by("c")), taken_at)
    finally:
        writers.stop()
