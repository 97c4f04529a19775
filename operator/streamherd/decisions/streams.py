"""What a RedisStream's status says, from one poll."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from streamherd.api.redisstream import RedisEndpoint
from streamherd.api.status import ConditionStatus, ConditionType, Reason
from streamherd.decisions.conditions import Verdict
from streamherd.observations import EndpointProblem, Observation, StreamStatus

REASON_FOR_PROBLEM = {
    EndpointProblem.UNREACHABLE: Reason.REDIS_UNAVAILABLE,
    EndpointProblem.AUTH_FAILED: Reason.AUTHENTICATION_FAILED,
    EndpointProblem.PERMISSION_DENIED: Reason.PERMISSION_DENIED,
    EndpointProblem.TLS_FAILED: Reason.TLS_FAILED,
    EndpointProblem.WRONG_TYPE: Reason.WRONG_KEY_TYPE,
    EndpointProblem.STREAM_MISSING: Reason.STREAM_NOT_FOUND,
    EndpointProblem.GROUP_MISSING: Reason.GROUP_NOT_FOUND,
    EndpointProblem.CROSS_SLOT: Reason.CROSS_SLOT,
    EndpointProblem.UNEXPECTED: Reason.REDIS_ERROR,
}


def problem_verdict(problem: EndpointProblem, message: str | None) -> Verdict:
    return Verdict.not_ready(REASON_FOR_PROBLEM[problem], message or str(problem))


def tls_verdict(redis: RedisEndpoint) -> Verdict | None:
    """TLSVerified=False while insecureSkipVerify is set (a Warning Event on the way in);
    no condition otherwise."""
    if redis.tls is None or not redis.tls.insecure_skip_verify:
        return None
    return Verdict(
        ConditionType.TLS_VERIFIED,
        ConditionStatus.FALSE,
        Reason.INSECURE_SKIP_VERIFY,
        "spec.redis.tls.insecureSkipVerify is set: the server's certificate and name are not "
        "checked, so anyone on the network path can pose as Redis and read the credentials "
        "and the data; set tls.caSecretRef to the CA that issued the server's certificate "
        "instead",
    )


STREAM_FIELDS = ("length", "firstEntryId", "lastEntryId", "groups", "matchedKeys")
"""Observed from a poll; the loop adds managedGroups and discovery."""


def stream_status(
    observation: Observation,
    *,
    key: str | None,
    pattern: str | None,
    keys: Sequence[str],
    discovery_complete: bool,
    create_if_missing: bool,
) -> tuple[Verdict, dict[str, Any]]:
    """The Ready verdict and the observed fields (None = unknown/absent)."""
    unknown: dict[str, Any] = dict.fromkeys(STREAM_FIELDS)
    if observation.problem is not None:
        return problem_verdict(observation.problem, observation.message), unknown
    if key is not None:
        stream = observation.streams.get(key)
        if stream is None or stream.status is StreamStatus.ERROR:
            message = stream.error if stream is not None else "not observed"
            return Verdict.not_ready(Reason.REDIS_ERROR, f"stream {key!r}: {message}"), unknown
        if stream.status is StreamStatus.WRONG_TYPE:
            return Verdict.not_ready(
                Reason.WRONG_KEY_TYPE, f"key {key!r} holds another type: point spec.key at a stream"
            ), unknown
        if stream.status is StreamStatus.MISSING:
            if create_if_missing:
                fields = {**unknown, "length": 0, "groups": 0}
                return Verdict.ready(
                    f"stream {key!r} does not exist yet: its first ConsumerGroup creates it"
                ), fields
            return Verdict.not_ready(
                Reason.STREAM_NOT_FOUND,
                f"stream {key!r} does not exist and createIfMissing is false: create it, or set createIfMissing",
            ), unknown
        fields = {
            "length": stream.length,
            "firstEntryId": stream.first_entry_id,
            "lastEntryId": stream.last_entry_id,
            "groups": len(stream.groups),
            "matchedKeys": None,
        }
        # No live numbers here (a message changing every poll is a write every poll): the
        # length and groups are status fields.
        return Verdict.ready(f"stream {key!r} is polled"), fields
    present = [observation.streams[k] for k in keys if k in observation.streams]
    ok = [s for s in present if s.status is StreamStatus.OK]
    fields = {
        "length": sum(s.length or 0 for s in ok),
        "firstEntryId": None,
        "lastEntryId": None,
        "groups": max((len(s.groups) for s in ok), default=0),
        "matchedKeys": len(ok),
    }
    so_far = "" if discovery_complete else " (discovery in progress)"
    return Verdict.ready(f"the streams matching {pattern!r} are polled{so_far}"), fields
