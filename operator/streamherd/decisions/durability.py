"""What a crash of the Redis behind a RedisStream can lose, from its persistence and
replication settings: the condition ``Durable`` and the status field ``durability``. Pure.

True only with the append-only file fsynced on every write (``appendfsync always``) and at
least one replica online. Otherwise False with the worst risk as the reason (the message
lists every risk, in words), or Unknown when what decides it could not be read (INFO denied,
or CONFIG GET denied with nothing else known to be wrong): unknown is never taken for safe.
On Redis Cluster the weakest primary decides, and the message names it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from streamherd.api.status import ConditionStatus, ConditionType, Reason
from streamherd.decisions.conditions import Verdict
from streamherd.observations import ServerDurability

RISKS = (
    Reason.PERSISTENCE_FAILING,
    Reason.NO_PERSISTENCE,
    Reason.NO_APPEND_ONLY_FILE,
    Reason.SNAPSHOTS_ONLY,
    Reason.FSYNC_NEVER,
    Reason.FSYNC_EVERY_SECOND,
    Reason.NO_REPLICA,
)
"""The reasons for Durable=False, worst first: the reason shown is the worst that applies."""

DURABILITY_FIELD = "durability"


@dataclass(frozen=True)
class Assessment:
    status: ConditionStatus
    reason: Reason
    message: str
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> Verdict:
        return Verdict(ConditionType.DURABLE, self.status, self.reason, self.message)

    @property
    def durable(self) -> bool | None:
        """For the metric: 1, 0, or NaN when unknown."""
        if self.status is ConditionStatus.UNKNOWN:
            return None
        return self.status is ConditionStatus.TRUE


def assess(servers: Sequence[ServerDurability]) -> Assessment:
    """The endpoint's durability: its weakest server's."""
    if not servers:
        return Assessment(
            ConditionStatus.UNKNOWN, Reason.UNKNOWN, "no Redis server answered: not known"
        )
    assessed = [_server(s) for s in servers]
    worst = max(range(len(assessed)), key=lambda i: _rank(assessed[i]))
    chosen = assessed[worst]
    if len(servers) > 1:
        chosen = Assessment(
            chosen.status,
            chosen.reason,
            f"weakest of {len(servers)} primaries, {servers[worst].node}: {chosen.message}",
            {**chosen.fields, "servers": len(servers)},
        )
    return chosen


def _rank(a: Assessment) -> tuple[int, int]:
    if a.status is ConditionStatus.FALSE:
        return (2, len(RISKS) - RISKS.index(a.reason))
    if a.status is ConditionStatus.UNKNOWN:
        return (1, 0)
    return (0, 0)


def _server(s: ServerDurability) -> Assessment:
    if s.info_error is not None:
        return Assessment(
            ConditionStatus.UNKNOWN,
            Reason.UNKNOWN,
            f"INFO cannot be read ({s.info_error}): what a crash can lose is not known",
        )
    fields = {
        "appendOnly": s.aof_enabled,
        "appendFsync": s.appendfsync,
        "snapshots": s.save,
        "connectedReplicas": s.connected_replicas,
        "minReplicasToWrite": s.min_replicas_to_write,
        "role": s.role,
    }
    risks: list[tuple[Reason, str]] = []
    unknown: list[str] = []
    notes: list[str] = []
    denied = f"CONFIG GET denied: {s.config_error}" if s.config_error else "not read"
    if s.aof_enabled:
        if s.aof_write_ok is False:
            risks.append(
                (
                    Reason.PERSISTENCE_FAILING,
                    "the last AOF write failed (disk full or failing?): Redis refuses writes "
                    "until it succeeds",
                )
            )
        if s.appendfsync == "everysec":
            risks.append(
                (
                    Reason.FSYNC_EVERY_SECOND,
                    "AOF with appendfsync everysec: a power loss or kernel crash loses up to "
                    "about 1 s of acknowledged writes (a crash of Redis alone loses none)",
                )
            )
        elif s.appendfsync == "no":
            risks.append(
                (
                    Reason.FSYNC_NEVER,
                    "AOF with appendfsync no: the OS decides when writes reach the disk (about "
                    "every 30 s on Linux): a power loss or kernel crash loses that much",
                )
            )
        elif s.appendfsync == "always":
            notes.append("AOF with appendfsync always: every acknowledged write is on disk")
        else:
            unknown.append(f"AOF is on, its fsync policy is not known ({denied})")
    elif s.aof_enabled is None:
        unknown.append("whether AOF is on is not known")
    elif s.save is None:
        risks.append(
            (
                Reason.NO_APPEND_ONLY_FILE,
                f"AOF is off and the RDB snapshot rules are not known ({denied}): a crash loses "
                "every write since the last snapshot, or everything if snapshots are off",
            )
        )
    elif not s.save.strip():
        risks.append(
            (
                Reason.NO_PERSISTENCE,
                "AOF and RDB snapshots are both off: a restart loses every stream, group and "
                "pending entry",
            )
        )
    else:
        risks.append(
            (
                Reason.SNAPSHOTS_ONLY,
                f"AOF is off, RDB snapshots only (save {s.save!r}): a crash loses every write "
                f"since the last snapshot, up to {_longest_rule(s.save)} s of them",
            )
        )
        if s.snapshot_ok is False:
            risks.append((Reason.PERSISTENCE_FAILING, "the last RDB snapshot failed"))
    if s.connected_replicas is None:
        unknown.append("connected replicas are not known")
    elif s.connected_replicas == 0:
        risks.append(
            (
                Reason.NO_REPLICA,
                "no replica is online: losing this server or its disk loses everything it "
                "holds, and nothing takes over",
            )
        )
    else:
        notes.append(
            f"{s.connected_replicas} replica(s) online; replication is asynchronous: a "
            "failover loses what they had not received yet"
        )
        if s.min_replicas_to_write is None:
            notes.append(f"min-replicas-to-write is not known ({denied})")
        elif s.min_replicas_to_write == 0:
            notes.append("min-replicas-to-write is 0: writes go on with no replica online")
        else:
            notes.append(
                f"min-replicas-to-write {s.min_replicas_to_write}: Redis refuses writes when "
                f"fewer replicas are within {s.min_replicas_max_lag} s"
            )
    risks.sort(key=lambda r: RISKS.index(r[0]))
    message = "; ".join([text for _, text in risks] + unknown + notes)
    if risks:
        return Assessment(ConditionStatus.FALSE, risks[0][0], message, fields)
    if unknown:
        return Assessment(ConditionStatus.UNKNOWN, Reason.UNKNOWN, message, fields)
    return Assessment(ConditionStatus.TRUE, Reason.FSYNC_ALWAYS_WITH_REPLICA, message, fields)


def _longest_rule(save: str) -> str:
    """The longest interval of "save <seconds> <changes> ...": the most a snapshot may lag."""
    words = save.split()
    seconds = [int(w) for w in words[::2] if w.isdigit()]
    return str(max(seconds)) if seconds else "?"
