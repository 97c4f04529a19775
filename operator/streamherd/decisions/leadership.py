"""Leader election by a coordination.k8s.io/v1 Lease, decided as client-go's leaderelection
decides it (pure: the controller reads and writes the Lease).

Expiry is judged on the candidate's own monotonic clock, from when it last *saw the record
change*, never from the renewTime written in it: the holders' wall clocks may disagree, their
clock rates do not (much). So a holder that renews at t is considered expired by the others no
sooner than t + leaseDurationSeconds of their time, and a holder that stops its loops by
t + stop_after (< lease duration) is never active together with its successor."""

from __future__ import annotations

from dataclasses import dataclass

JITTER_FACTOR = 1.2  # client-go's: retries are spread over [retry, retry * 1.2]


@dataclass(frozen=True)
class ElectionTiming:
    """client-go's three durations (seconds). Its defaults (kube-controller-manager's) are
    15/10/2; ours are shorter so that a takeover after a crash stays within 15 s:
    lease_duration + at most 2 retry periods + the operator's start-up (see README)."""

    lease_duration: float = 10.0
    """How long a candidate waits, after it last saw the Lease change, before taking it."""
    renew_deadline: float = 6.0
    """How long the leader keeps trying to renew before it stops its loops."""
    retry_period: float = 2.0
    """How often the leader renews and a candidate tries to acquire."""

    def __post_init__(self) -> None:
        if not self.lease_duration > self.renew_deadline:
            raise ValueError("the lease duration must be longer than the renew deadline")
        if not self.renew_deadline > JITTER_FACTOR * self.retry_period:
            raise ValueError(
                f"the renew deadline must be longer than {JITTER_FACTOR} x the retry period"
            )
        if self.retry_period <= 0:
            raise ValueError("the retry period must be positive")

    @property
    def stop_after(self) -> float:
        """By when, after its last successful renewal began, a leader that could not renew
        must have stopped every loop: halfway between the renew deadline and the lease's
        expiry, so the margin covers clock-rate drift and the time a write takes to land. The
        process exits hard there if its loops have not stopped yet."""
        return self.renew_deadline + (self.lease_duration - self.renew_deadline) / 2


@dataclass(frozen=True)
class LeaseRecord:
    """The part of a Lease's spec the election reads."""

    holder: str
    duration_seconds: float
    renew_time: str
    transitions: int


def may_acquire(record: LeaseRecord, me: str, observed_at: float, now: float) -> bool:
    """Whether ``me`` may write itself into the Lease: it is ours already, nobody holds it
    (released), or its holder has not renewed it for a whole lease duration as we saw it."""
    if not record.holder or record.holder == me:
        return True
    return now >= observed_at + record.duration_seconds
