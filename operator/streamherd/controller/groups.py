"""The ConsumerGroup loop: keep the group on its stream(s), measure it with every poll of its
endpoint, and report. Autoscaling and recovery plug in here (their own issues)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import kopf

from streamherd.api import CONSUMER_GROUP, SpecError, SpecParser, is_managed, is_paused, parse
from streamherd.api.consumergroup import ConsumerGroupSpec, RecoveryStrategy
from streamherd.api.redisstream import DeletionPolicy, RedisMode, RedisStreamSpec
from streamherd.api.status import ConditionStatus, ConditionType, Reason
from streamherd.controller.apifailures import api_problem
from streamherd.controller.autoscaler import SCALE_FIELDS, Autoscaler
from streamherd.controller.context import Context, StreamBinding, claim_target, group_id
from streamherd.controller.health import HealthWatch
from streamherd.controller.polling import DEFAULT_INTERVAL, Poller, PollResult, scan_pattern
from streamherd.controller.reporting import StatusWriter, report
from streamherd.controller.streams import RETRY_SECONDS
from streamherd.controller.waiting import Stopped, next_result, sleep, stop_watched
from streamherd.decisions import recovery as recovery_decisions
from streamherd.decisions.conditions import Verdict, transition
from streamherd.decisions.ownership import KEY, PATTERN, owner_elsewhere
from streamherd.decisions.recovery import RecoveryFindings, dead_letter_target
from streamherd.decisions.retention import group_verdict
from streamherd.decisions.streams import problem_verdict
from streamherd.decisions.totals import GroupTotals, group_totals
from streamherd.gateway import EnsuredGroup, GatewayError, GroupOutcome, RedisGateway
from streamherd.gateway.ownership import claim_group, release_group
from streamherd.keys import owners_key
from streamherd.kube import KubeError
from streamherd.kube import requests as rq
from streamherd.observations import EndpointProblem, GroupClaim, Observation, StreamStatus

logger = logging.getLogger(__name__)

STARTING_RETRY_SECONDS = 0.2
STREAM_RETRY_SECONDS = 1.0  # waiting on our own RedisStream loop: an in-memory check

GROUP_FIELDS = (
    "stream",
    "group",
    "streams",
    "pending",
    "pendingExactness",
    "lag",
    "lagExactness",
    "lagDisplay",
    "backlog",
    "consumers",
    "oldestPendingAgeSeconds",
    "lagSeconds",
    "lagSecondsExactness",
)


def start_position(start_id: str, *, pattern: bool, created: str | None) -> str:
    """Where the group starts on a stream it is created on. For a key pattern (one stream
    per call), "$" means "everything since this ConsumerGroup exists": a stream found later
    starts at the resource's creation time as an entry id, not at its own end, or the first
    events of every call written before discovery would be skipped. Rounded down to the
    second: clock skew then errs towards delivering, never towards skipping."""
    if not pattern or start_id != "$" or not created:
        return start_id
    stamp = datetime.fromisoformat(created.replace("Z", "+00:00"))
    return f"{int(stamp.timestamp()) * 1000}-0"


def dead_lettering(
    spec: ConsumerGroupSpec,
    stream: RedisStreamSpec,
    keys: Sequence[str],
    findings: RecoveryFindings | None = None,
) -> Verdict:
    """Whether poison entries can be dead-lettered (the janitor refuses a key in another
    Redis Cluster hash slot, or one that is not a stream, and says so here: the group loop
    owns the conditions)."""
    return recovery_decisions.dead_lettering(
        keys,
        single_key=stream.key,
        configured=spec.recovery.dead_letter.stream,
        cluster=stream.redis.mode is RedisMode.CLUSTER,
        findings=findings,
    )


def dead_letter_keys(
    spec: ConsumerGroupSpec, stream: RedisStreamSpec, keys: Sequence[str]
) -> frozenset[str]:
    """Where the group's poison entries go, over all its streams (for their length)."""
    cluster = stream.redis.mode is RedisMode.CLUSTER
    configured = spec.recovery.dead_letter.stream
    targets = (dead_letter_target(key, configured, cluster=cluster).key for key in keys)
    return frozenset(t for t in targets if t is not None)


def stream_lengths(observation: Observation, keys: Sequence[str]) -> dict[str, int | None]:
    """Each stream's length at the poll: 0 where it does not exist yet (XLEN says so too, and
    a group created with its stream would otherwise have nothing to grow from)."""
    out: dict[str, int | None] = {}
    for key in keys:
        state = observation.streams.get(key)
        if state is None or state.status is StreamStatus.MISSING:
            out[key] = 0
        elif state.status is StreamStatus.OK:
            out[key] = state.length
    return out


class GroupLoop:
    """The state one ConsumerGroup's loop keeps between polls."""

    def __init__(
        self,
        ctx: Context,
        body: Mapping[str, Any],
        parse_spec: SpecParser[ConsumerGroupSpec] | None = None,
    ) -> None:
        self.ctx = ctx
        self.body = body
        meta = body["metadata"]
        self.namespace, self.name, self.me = meta["namespace"], meta["name"], group_id(body)
        self.writer = StatusWriter(
            ctx.kube,
            rq.CONSUMER_GROUPS,
            body,
            numbers_every=ctx.status_interval,
            immediate=SCALE_FIELDS,
            budget=ctx.status_budget,
        )
        self.poller: Poller | None = None
        self.seq = 0
        self.announced_pattern = False
        self.autoscaler = Autoscaler(ctx, body, self.writer, self.me)
        self.health = HealthWatch(ctx, body, self.writer)
        self.created = meta.get("creationTimestamp")
        self.parse_spec = parse_spec or SpecParser(ConsumerGroupSpec)
        self.ensured_at: dict[str, float] = {}
        """When we last created the group on a key: a poll taken before that still shows it
        missing, and must not make us "adopt" what we just created."""
        self.uid = str(meta.get("uid") or self.me)
        self.claimed: tuple[RedisGateway, str, str, str] | None = None
        """(gateway, group, kind, text) of the claim last recorded in Redis."""
        self.claim_seen: tuple[GroupClaim, list[GroupClaim]] | None = None
        """Ours and every claim on the group, as last read (decisions.ownership)."""
        self.claim_read_at = 0.0
        """Monotonic time of the last read of the claims."""
        self.keys_seen: frozenset[str] = frozenset()
        """A key pattern's streams at the last poll (two patterns overlap on streams)."""
        self.owner_announced: str | None = None
        """The uid of the owner we last posted GroupOwnedElsewhere about (one Event each)."""
        self.measured_at: float | None = None
        """When the observation the last step used was taken (monotonic); None when the
        last step used none (paused, waiting for its stream): the next delay starts anew."""

    async def run(self, stopped: Stopped) -> None:
        wake = self.wake = self.ctx.wakeup(self.me)
        self.stopped = stopped
        try:
            async with stop_watched(stopped, wake):
                while not stopped:
                    wake.clear()
                    try:
                        delay = await self.step()
                    except KubeError as exc:  # a refused request: a condition, not a crash loop
                        generation = self.body["metadata"].get("generation")
                        delay = await self.fail(api_problem(exc), generation)
                    await sleep(stopped, wake, delay)
        finally:
            self.unsubscribe()
            self.autoscaler.close()
            self.ctx.claims.release(self.me)

    def unsubscribe(self) -> None:
        if self.poller is not None:
            self.poller.unsubscribe(self.me)
            self.poller = None

    async def step(self) -> float:
        """One pass; returns how long to wait before the next (0: the next poll paces it)."""
        previous, self.measured_at = self.measured_at, None
        meta = self.body["metadata"]
        generation = meta.get("generation")
        if is_paused(meta):
            return await self.pause(generation)
        try:
            spec = self.parse_spec(self.body.get("spec"))
        except SpecError as exc:
            return await self.fail(Verdict.not_ready(Reason.INVALID_SPEC, str(exc)), generation)
        group = spec.group_name or self.name
        binding = self.ctx.streams.get((self.namespace, spec.stream_ref.name))
        if binding is None or binding.in_use() is None:
            return await self.wait_for_stream(spec.stream_ref.name, binding, generation)
        conflict = await self.claim(binding, group)
        if conflict is not None:
            return await self.fail(conflict, generation)
        result = await self.next_poll(spec, binding)
        if result is None:
            self.measured_at = previous  # still waiting: the delay runs on from the last one
            return 0
        self.note_delay(previous, result)
        assert binding.source is not None
        if binding.source.key is None:
            keys = frozenset(result.keys_of(binding.source))
            if keys != self.keys_seen:  # new streams of the pattern: may meet another claim
                self.keys_seen = keys
                conflict = await self.claim(binding, group)
                if conflict is not None:
                    return await self.fail(conflict, generation)
        await self.reconcile(spec, group, binding, result, generation)
        return 0

    def note_delay(self, previous: float | None, result: PollResult) -> None:
        """The poll-delay metric: how old the last measurement had got when this one reached
        the loop (a slow poller and a loop behind its poller both show), in pollIntervals."""
        assert self.poller is not None
        if previous is not None:
            age = time.monotonic() - previous
            self.ctx.metrics.poll_delay.observe(age / self.poller.interval_of(self.me))
        self.measured_at = result.observation.taken_at

    async def claim(
        self, binding: StreamBinding, group: str, *, again: bool = False
    ) -> Verdict | None:
        """Claim the group in Redis, beside it (gateway/ownership): None when this resource
        manages it, else the verdict naming the one that does. Read from Redis (one script
        call) at the first step, when the group, stream or Redis changed, at every retry
        while waiting (to take over soon after the owner's release), and ``again`` before
        the group is (re)created: a Redis that lost the group (restarted empty, flushed)
        lost its record too. An owner's steady state costs nothing: a quiet neighbour."""
        assert binding.source is not None and binding.poller is not None
        gateway, source = binding.poller.gateway, binding.source
        kind, text = (KEY, source.key) if source.key is not None else (PATTERN, source.text)
        wanted = (gateway, group, kind, text)
        if (
            self.claim_seen is None
            or self.claimed is None
            or self.claimed[0] is not gateway
            or self.claimed[1:] != wanted[1:]
            or self.owner_announced is not None  # waiting: re-read at every retry
            or again
        ):
            await self.release_claim(keep=wanted)
            try:
                self.claim_seen = await claim_group(
                    gateway,
                    group,
                    uid=self.uid,
                    namespace=self.namespace,
                    name=self.name,
                    kind=kind,
                    text=text,
                )
            except GatewayError as exc:
                self.ctx.claims.release(self.me)
                return problem_verdict(exc.problem, exc.message)
            self.claimed, self.claim_read_at = wanted, time.monotonic()
        mine, claims = self.claim_seen
        owner = owner_elsewhere(mine, claims, self.keys_seen)
        if owner is not None and await self.left_behind(owner):
            # Its ConsumerGroup is gone without releasing it (deleted while no operator ran,
            # its finalizer removed, its cluster rebuilt): give it up for it, read again.
            logger.info(
                "claim of %s (uid %s) on group %r is stale: released", owner.who, owner.uid, group
            )
            try:
                await release_group(gateway, group, owner.uid)
            except GatewayError as exc:
                return problem_verdict(exc.problem, exc.message)
            self.claim_seen = None
            return await self.claim(binding, group)
        if owner is None:
            self.ctx.claims.hold(claim_target(binding, group), self.me)
            self.owner_announced = None
            return None
        self.ctx.claims.release(self.me)
        self.unsubscribe()
        message = (
            f"group {group!r} on {source.text!r} is managed by {owner.who} (ConsumerGroup uid "
            f"{owner.uid}, on {owner.text!r}), recorded first in Redis ({owners_key(group)!r}); "
            "this one takes over when that one is deleted"
        )
        if self.owner_announced != owner.uid:
            self.owner_announced = owner.uid
            await self.writer.event("Warning", str(Reason.GROUP_OWNED_ELSEWHERE), message)
        return Verdict.not_ready(Reason.GROUP_OWNED_ELSEWHERE, message)

    async def left_behind(self, owner: GroupClaim) -> bool:
        """Whether a claim's ConsumerGroup no longer exists (not found, or that name now has
        another uid). One GET, only while waiting behind it; a claim we cannot check (no
        access to its namespace) is taken as alive."""
        try:
            body = await self.ctx.kube.get(rq.CONSUMER_GROUPS, owner.namespace, owner.name)
        except KubeError:
            return False
        return body is None or (body.get("metadata") or {}).get("uid") != owner.uid

    async def release_claim(self, keep: tuple[RedisGateway, str, str, str] | None = None) -> None:
        """Give up the claim recorded for another group name or Redis than ``keep`` (the
        resource now names another one); best effort: Redis may be gone."""
        if self.claimed is None:
            return
        gateway, group = self.claimed[0], self.claimed[1]
        if keep is not None and keep[0] is gateway and keep[1] == group:
            return
        self.claimed = self.claim_seen = None
        try:
            await release_group(gateway, group, self.uid)
        except GatewayError as exc:
            logger.warning("claim on group %r not released: %s", group, exc)

    async def pause(self, generation: int | None) -> float:
        """Paused: no polls, no scaling, said in the conditions."""
        self.unsubscribe()
        self.autoscaler.unwatch()
        self.health.unknown()
        paused = Verdict(
            ConditionType.PAUSED, ConditionStatus.TRUE, Reason.PAUSED, "no actions are taken"
        )
        not_ready = Verdict.not_ready(
            Reason.PAUSED, "paused by the streamherd.io/paused annotation"
        )
        await self.report([not_ready, paused], generation, None)
        return RETRY_SECONDS

    async def wait_for_stream(
        self, name: str, binding: StreamBinding | None, generation: int | None
    ) -> float:
        """The RedisStream is not usable (yet): quietly while its loop is still connecting,
        otherwise not Ready, saying why."""
        if await self.stream_starting(name, binding):
            return STARTING_RETRY_SECONDS
        verdict = self.stream_not_ready(name, binding)
        return await self.fail(verdict, generation, retry=STREAM_RETRY_SECONDS)

    async def next_poll(self, spec: ConsumerGroupSpec, binding: StreamBinding) -> PollResult | None:
        """Subscribe to the stream's poller at the group's interval and wait for its next
        result (None when the wait was cut short)."""
        assert binding.poller is not None and binding.source is not None
        if self.poller is not binding.poller:
            self.unsubscribe()
            self.poller, self.seq = binding.poller, 0
        interval = spec.autoscaling.poll_interval.seconds if spec.autoscaling else DEFAULT_INTERVAL
        self.poller.subscribe(self.me, binding.source, interval)
        result = await next_result(
            self.poller,
            self.seq,
            self.poller.interval_of(self.me) + 15,
            self.stopped,
            self.wake,
            self.me,
        )
        if result is not None:
            self.seq = result.seq
        return result

    async def reconcile(
        self,
        spec: ConsumerGroupSpec,
        group: str,
        binding: StreamBinding,
        result: PollResult,
        generation: int | None,
    ) -> None:
        """One poll's work: the group where it is missing, scaling, and the status."""
        assert binding.source is not None
        keys = result.keys_of(binding.source)
        totals = group_totals(result.observation, keys, group)
        verdict = await self.ensure(spec, group, binding, result, totals)
        if verdict.reason == Reason.GROUP_OWNED_ELSEWHERE:  # found so before (re)creating it
            await self.fail(verdict, generation)
            return
        fields = self.fields(binding, group, totals)
        verdicts = [verdict]
        taken_at = result.observation.taken_at
        if spec.consumers is not None:
            lengths = stream_lengths(result.observation, keys)
            scaling = await self.autoscaler.step(
                spec, group, binding, keys, totals, taken_at, lengths
            )
            fields.update(scaling.fields)
            if scaling.ready is not None and verdict.status is ConditionStatus.TRUE:
                verdicts = [scaling.ready]
            verdicts += scaling.conditions
        else:
            fields.update(dict.fromkeys(SCALE_FIELDS))
        denied = self.ctx.api_problems.get(self.me)
        if denied is not None and verdicts[0].status is ConditionStatus.TRUE:
            verdicts[0] = denied  # another loop's refused request (the janitor's CronJob)
        if spec.recovery.enabled:
            verdicts.append(self.isolation(spec, group, result, keys))
        dead_letters: frozenset[str] = frozenset()
        if spec.recovery.enabled and binding.spec is not None:
            verdicts.append(
                dead_lettering(spec, binding.spec, keys, self.ctx.recovery_findings.get(self.me))
            )
            dead_letters = dead_letter_keys(spec, binding.spec, keys)
        self.count_dead_letters(dead_letters, group, result)
        verdicts.append(await self.health.step(spec, group, totals, taken_at, fields))
        retention = self.retention(spec, group, binding)
        if retention is not None:
            verdicts.append(retention)
        self.ctx.metrics.set_group(self.namespace, self.name, group, totals)
        if verdicts[0].status is ConditionStatus.FALSE:
            reason = verdicts[0].reason
            self.ctx.metrics.reconcile_errors.labels(CONSUMER_GROUP.kind, reason).inc()
        before = dict(self.writer.current)
        await self.report(verdicts, generation, fields)
        blocked = transition(before, self.writer.current, ConditionType.RETENTION)
        if blocked is not None and blocked.get("reason") == Reason.RETENTION_BLOCKED:
            await self.writer.event("Warning", str(Reason.RETENTION_BLOCKED), blocked["message"])

    def count_dead_letters(self, keys: frozenset[str], group: str, result: PollResult) -> None:
        """The dead-letter streams' length, read by every 5th poll of the endpoint (one XLEN
        each in its pipeline); a poll that did not read them leaves the metric as it was."""
        assert self.poller is not None
        self.poller.measure_lengths(self.me, keys)
        measured = result.observation.lengths
        if not keys or any(k not in measured for k in keys):
            return
        lengths = [measured[k] for k in keys]
        known = [n for n in lengths if n is not None]
        self.ctx.metrics.dead_letter_entries.labels(self.namespace, self.name, group).set(
            sum(known) if len(known) == len(lengths) else math.nan
        )

    def retention(
        self, spec: ConsumerGroupSpec, group: str, binding: StreamBinding
    ) -> Verdict | None:
        """Whether this group holds back its stream's RetentionPolicy, as the policy's last
        complete pass found (the RetentionBoard; nothing until it has one)."""
        ref = binding.spec.retention_policy_ref if binding.spec is not None else None
        if ref is None or not self.ctx.retention.known(self.namespace, ref.name):
            return None
        block = self.ctx.retention.block(self.namespace, ref.name, spec.stream_ref.name, group)
        return group_verdict(block, ref.name)

    async def ensure(
        self,
        spec: ConsumerGroupSpec,
        group: str,
        binding: StreamBinding,
        result: PollResult,
        totals: GroupTotals,
    ) -> Verdict:
        """Create (or adopt) the group where it is missing; the verdict for this poll."""
        observation = result.observation
        if observation.problem is not None:
            return problem_verdict(observation.problem, observation.message)
        assert binding.source is not None and binding.poller is not None
        key = binding.source.key
        fresh = {k for k, at in self.ensured_at.items() if at > observation.taken_at}
        missing = [k for k in totals.missing_group_on if k not in fresh]
        if key is not None and key in totals.missing_streams and key not in fresh:
            if not binding.create_if_missing:
                return Verdict.not_ready(
                    Reason.STREAM_NOT_FOUND,
                    f"stream {key!r} does not exist and its RedisStream has createIfMissing: false",
                )
            missing.append(key)
        if missing:
            # Read again unless read since this poll was taken (the first step just did).
            again = self.claim_read_at < observation.taken_at
            conflict = await self.claim(binding, group, again=again)
            if conflict is not None:
                return conflict
            start = start_position(spec.start_id, pattern=key is None, created=self.created)
            try:
                # A pattern's key is never created by MKSTREAM: one deleted since discovery
                # (its call is over) stays deleted.
                outcomes = await binding.poller.gateway.ensure_groups(
                    missing,
                    group,
                    start,
                    create_stream=binding.create_if_missing and key is not None,
                )
            except GatewayError as exc:
                return problem_verdict(exc.problem, exc.message)
            done_at = time.monotonic()
            self.ensured_at = {
                k: at for k, at in self.ensured_at.items() if at > observation.taken_at
            }
            failures = []
            for name, outcome in zip(missing, outcomes, strict=True):
                if isinstance(outcome, GatewayError):
                    if key is None and outcome.problem is EndpointProblem.STREAM_MISSING:
                        binding.poller.forget(binding.source, name)  # gone: not an error
                    else:
                        failures.append(outcome)
            for outcome in outcomes:
                if isinstance(outcome, EnsuredGroup):
                    self.ensured_at[outcome.key] = done_at
                    await self.announce(outcome, spec, key is None)
            if failures:
                return problem_verdict(failures[0].problem, failures[0].message)
            self.wake.set()  # measure the new group(s) at the next poll
        elif key is not None and totals.streams == 1 and not self.writer.current.get("group"):
            # First sight of this resource's group, already in Redis: we adopt it as it is.
            # (The status then names the group, so a restarted operator does not say it again.)
            state = observation.group(key, group)
            await self.adopted(group, key, f"with {state.pending if state else '?'} pending", spec)
        where = binding.source.text
        # No live numbers in a condition (they would make a status write of every poll).
        return Verdict.ready(f"group {group!r} on {where!r}")

    def isolation(
        self, spec: ConsumerGroupSpec, group: str, result: PollResult, keys: Sequence[str]
    ) -> Verdict:
        """RecoveryIsolated, and its metric, from the groups this poll saw on our streams."""
        streams = result.observation.streams
        verdict = recovery_decisions.recovery_isolation(
            group,
            claim=spec.recovery.strategy is RecoveryStrategy.CLAIM,
            groups_on_streams=(streams[k].groups for k in keys if k in streams),
        )
        shared = verdict.status is ConditionStatus.FALSE
        self.ctx.metrics.janitor_shared_requeue.labels(self.namespace, self.name, group).set(
            1 if shared else 0
        )
        return verdict

    async def announce(self, ensured: EnsuredGroup, spec: ConsumerGroupSpec, pattern: bool) -> None:
        """An Event when the group is created or adopted on a single stream; for a key pattern
        (one stream per call), only the first time, not once per new stream."""
        if pattern:
            if self.announced_pattern:
                return
            self.announced_pattern = True
            await self.writer.event(
                "Normal",
                "GroupCreated",
                f"group {ensured.group!r} is being created on every stream that matches",
            )
            return
        if ensured.outcome is GroupOutcome.CREATED:
            await self.writer.event(
                "Normal",
                "GroupCreated",
                f"created group {ensured.group!r} on {ensured.key!r} at {spec.start_id}",
            )
        else:
            where = f"at last-delivered-id {ensured.last_delivered_id}"
            await self.adopted(ensured.group, ensured.key, where, spec)

    async def adopted(self, group: str, key: str, where: str, spec: ConsumerGroupSpec) -> None:
        """An existing group is taken over as it is; startId only ever applies to new ones."""
        note = (
            "" if spec.start_id == "$" else f"; startId {spec.start_id} only applies to new groups"
        )
        await self.writer.event(
            "Normal", "GroupAdopted", f"adopted existing group {group!r} on {key!r} {where}{note}"
        )

    async def stream_starting(self, name: str, binding: StreamBinding | None) -> bool:
        """The RedisStream exists but its loop has not connected yet (operator start-up)."""
        if binding is not None:
            return binding.problem is None
        return (
            await self.ctx.kube.get(rq.REDIS_STREAMS, self.namespace, name) is not None
            and self.ctx.young()
        )

    def stream_not_ready(self, name: str, binding: StreamBinding | None) -> Verdict:
        if binding is None:
            return Verdict.not_ready(
                Reason.STREAM_NOT_READY,
                f"RedisStream {name!r} not found in namespace {self.namespace!r}: waiting for it",
            )
        problem = binding.problem
        detail = f"{problem.reason}: {problem.message}" if problem else "not connected yet"
        return Verdict.not_ready(
            Reason.STREAM_NOT_READY, f"RedisStream {name!r} is not ready ({detail})"
        )

    def fields(self, binding: StreamBinding, group: str, totals: GroupTotals) -> dict[str, Any]:
        assert binding.source is not None
        lag, backlog = totals.lag, totals.backlog
        age = totals.oldest_pending_age_ms
        return {
            "stream": binding.source.text,
            "group": group,
            "streams": totals.streams if totals.known else None,
            "pending": totals.pending,
            "pendingExactness": str(totals.pending_reading.exactness),
            "lag": lag.value,
            "lagExactness": str(lag.exactness),
            "lagDisplay": lag.display(),
            "backlog": backlog.value,
            "consumers": totals.consumers,
            "oldestPendingAgeSeconds": round(age / 1000, 3) if age is not None else None,
            "lagSeconds": _seconds(totals.lag_age_ms.value),
            "lagSecondsExactness": str(totals.lag_age_ms.exactness),
        }

    async def fail(
        self, verdict: Verdict, generation: int | None, retry: float = RETRY_SECONDS
    ) -> float:
        self.ctx.metrics.reconcile_errors.labels(CONSUMER_GROUP.kind, verdict.reason).inc()
        self.health.unknown()
        unknown = dict.fromkeys(GROUP_FIELDS)
        unknown.update(
            lagExactness="Unknown",
            lagDisplay="unknown",
            pendingExactness="Unknown",
            lagSecondsExactness="Unknown",
        )
        await self.report([verdict], generation, unknown)
        return retry

    async def report(
        self, verdicts: list[Verdict], generation: int | None, fields: dict[str, Any] | None
    ) -> None:
        await report(self.writer, verdicts, generation, fields)


def _seconds(ms: int | None) -> float | None:
    return round(ms / 1000, 3) if ms is not None else None


def spec_parser() -> SpecParser[ConsumerGroupSpec]:
    """One per ConsumerGroup, shared by its group loop and its janitor loop: they read the
    same body, so one parsed copy of the spec serves both (a spec parsed and kept twice was
    ~4 KiB a group)."""
    return SpecParser(ConsumerGroupSpec)


async def run(
    ctx: Context,
    body: Mapping[str, Any],
    stopped: Stopped,
    parse_spec: SpecParser[ConsumerGroupSpec] | None = None,
) -> None:
    await GroupLoop(ctx, body, parse_spec).run(stopped)


async def release(gateway: RedisGateway, group: str, uid: str) -> None:
    """Give up the resource's claim on its group (the next in line takes over). Best effort:
    with Redis unreachable the claim stays, and a ConsumerGroup waiting behind it says where
    it is recorded (an HDEL of the uid's field clears it)."""
    try:
        await release_group(gateway, group, uid)
    except GatewayError as exc:
        logger.warning("claim of %s on group %r not released: %s", uid, group, exc)


async def delete(ctx: Context, body: Mapping[str, Any]) -> None:
    """On deletion (the finalizer): with deletionPolicy Delete, destroy the group in Redis.
    "Already gone" is success; so is a RedisStream that no longer exists (nothing to reach)."""
    meta = body["metadata"]
    raw = body.get("spec")  # any shape: a resource with a broken spec must still go away
    named = raw.get("groupName") if isinstance(raw, Mapping) else None
    ctx.metrics.forget_group(meta["namespace"], meta["name"], str(named or meta["name"]))
    if not is_managed(meta) or is_paused(meta):
        return
    try:
        spec = parse(ConsumerGroupSpec, body.get("spec"))
    except SpecError:
        return
    group = spec.group_name or meta["name"]
    binding = ctx.streams.get((meta["namespace"], spec.stream_ref.name))
    if binding is not None and binding.poller is not None:
        await release(binding.poller.gateway, group, str(meta.get("uid") or ""))
    if spec.deletion_policy is not DeletionPolicy.DELETE:
        return
    if binding is None or binding.poller is None or binding.source is None:
        logger.warning(
            "group %s not destroyed: RedisStream %s is gone", group, spec.stream_ref.name
        )
        return
    gateway = binding.poller.gateway
    try:
        if binding.source.key is not None:
            await gateway.destroy_group(binding.source.key, group)
        else:
            for key in await scan_pattern(gateway, str(binding.source.pattern)):
                await gateway.destroy_group(key, group)
    except GatewayError as exc:
        raise kopf.TemporaryError(
            f"cannot destroy group {group!r} in Redis yet ({exc}); to delete the resource without "
            "touching Redis, annotate it streamherd.io/managed=false",
            delay=10,
        ) from exc
