"""The RedisStream loop: resolve the endpoint, keep it polled, publish the binding that
ConsumerGroups use, and report what Redis holds."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from streamherd.api import REDIS_STREAM, SpecError, SpecParser, is_managed, is_paused, parse
from streamherd.api.redisstream import DeletionPolicy, RedisStreamSpec
from streamherd.api.status import ConditionStatus, ConditionType, Reason
from streamherd.controller.apifailures import api_problem
from streamherd.controller.board import managed_group_names, stream_verdict
from streamherd.controller.context import Context, StreamBinding
from streamherd.controller.polling import DEFAULT_INTERVAL, Source, scan_pattern
from streamherd.controller.reporting import StatusWriter, report
from streamherd.controller.waiting import Stopped, next_result, sleep, stop_watched
from streamherd.decisions.conditions import Verdict, condition
from streamherd.decisions.durability import DURABILITY_FIELD
from streamherd.decisions.streams import STREAM_FIELDS, stream_status, tls_verdict
from streamherd.gateway import GatewayError, SecretMissing
from streamherd.gateway.retention import unlink_managed
from streamherd.kube import KubeError
from streamherd.kube import requests as rq

logger = logging.getLogger(__name__)


RETRY_SECONDS = 2.0
DELETE_CHUNK = 500
"""Keys per pipeline of deletions."""


def who(body: Mapping[str, Any]) -> str:
    return f"{REDIS_STREAM.kind}:{body['metadata']['namespace']}/{body['metadata']['name']}"


def secret_problem(exc: SecretMissing) -> Verdict:
    return Verdict.not_ready(Reason.SECRET_NOT_FOUND, f"{exc}: create it, or fix spec.redis")


async def run(ctx: Context, body: Mapping[str, Any], stopped: Stopped) -> None:
    """Runs while the RedisStream exists (a kopf daemon)."""
    meta = body["metadata"]
    namespace, name, me = meta["namespace"], meta["name"], who(body)
    writer = StatusWriter(
        ctx.kube,
        rq.REDIS_STREAMS,
        body,
        numbers_every=ctx.status_interval,
        budget=ctx.status_budget,
        heartbeat="lastPolled",
    )
    binding = ctx.streams[(namespace, name)] = StreamBinding(namespace, name)
    wake = ctx.wakeup(me)
    seq = 0
    parse_spec = SpecParser(RedisStreamSpec)
    try:
        async with stop_watched(stopped, wake):
            while not stopped:
                wake.clear()
                generation = body["metadata"].get("generation")
                fields: dict[str, Any] = dict.fromkeys((*STREAM_FIELDS, DURABILITY_FIELD))
                if is_paused(body["metadata"]):
                    await ctx.endpoints.release(me)  # paused: not even polled
                    binding.poller = None
                    binding.problem = Verdict.not_ready(
                        Reason.PAUSED, "paused by the streamherd.io/paused annotation"
                    )
                    verdicts = [
                        binding.problem,
                        Verdict(
                            ConditionType.PAUSED,
                            ConditionStatus.TRUE,
                            Reason.PAUSED,
                            "no actions are taken",
                        ),
                    ]
                    await report(writer, verdicts, generation, fields=None)
                    await sleep(stopped, wake, RETRY_SECONDS)
                    continue
                try:
                    spec = parse_spec(body.get("spec"))
                    endpoint = await ctx.secrets.resolve(namespace, spec.redis)
                except SpecError as exc:
                    binding.problem = Verdict.not_ready(Reason.INVALID_SPEC, str(exc))
                except SecretMissing as exc:
                    binding.problem = secret_problem(exc)
                except KubeError as exc:  # a Secret we may not read: said, not a crash loop
                    binding.problem = api_problem(exc, consequence=", so it cannot connect")
                else:
                    source = Source(key=spec.key, pattern=spec.key_pattern)
                    poller = await ctx.endpoints.acquire(me, endpoint)
                    poller.subscribe(me, source, DEFAULT_INTERVAL)
                    if binding.poller is not poller:
                        seq = 0
                    binding.source, binding.poller, binding.problem = source, poller, None
                    binding.create_if_missing = spec.create_if_missing
                    binding.spec = spec
                    result = await next_result(
                        poller, seq, poller.interval_of(me) + 15, stopped, wake, me
                    )
                    if result is None:
                        continue
                    seq = result.seq
                    verdict, fields = stream_status(
                        result.observation,
                        key=spec.key,
                        pattern=spec.key_pattern,
                        keys=result.keys_of(source),
                        discovery_complete=result.discovery_complete.get(source, False),
                        create_if_missing=spec.create_if_missing,
                    )
                    if fields.get("length") is not None:
                        ctx.metrics.stream_length.labels(namespace, name).set(fields["length"])
                    if verdict.status is ConditionStatus.FALSE:
                        ctx.metrics.reconcile_errors.labels(REDIS_STREAM.kind, verdict.reason).inc()
                    reachable = result.observation.problem is None
                    durable = await ctx.durability.of(poller.gateway, reachable=reachable)
                    fields[DURABILITY_FIELD] = durable.fields or None
                    fields["managedGroups"] = managed_group_names(
                        ctx.stream_groups,
                        namespace,
                        name,
                        writer.current.get("managedGroups") or (),
                    )[:256]
                    fields["discovery"] = poller.discoverer.describe() if spec.key is None else None
                    verdicts = [verdict, durable.verdict]
                    policy = spec.retention_policy_ref.name if spec.retention_policy_ref else None
                    retention = stream_verdict(ctx.policies, namespace, policy)
                    if retention is not None:
                        verdicts.append(retention)
                    insecure = tls_verdict(spec.redis)
                    if insecure is not None:
                        verdicts.append(insecure)
                        if condition(writer.current, ConditionType.TLS_VERIFIED) is None:
                            await writer.event("Warning", insecure.reason, insecure.message)
                    await report(writer, verdicts, generation, fields)
                    continue  # the next poll result paces the loop
                ctx.metrics.reconcile_errors.labels(REDIS_STREAM.kind, binding.problem.reason).inc()
                await ctx.endpoints.release(me)
                binding.poller = None
                await report(writer, [binding.problem], generation, fields)
                await sleep(stopped, wake, RETRY_SECONDS)
    finally:
        ctx.streams.pop((namespace, name), None)
        await ctx.endpoints.release(me)


async def delete(ctx: Context, body: Mapping[str, Any]) -> None:
    """On deletion (the finalizer): apply deletionPolicy. "Already gone" is success."""
    meta = body["metadata"]
    if not is_managed(meta) or is_paused(meta):
        return
    try:
        spec = parse(RedisStreamSpec, body.get("spec"))
    except SpecError:
        return  # nothing was ever created from an invalid spec
    if spec.deletion_policy is not DeletionPolicy.DELETE:
        return
    me = who(body) + ":delete"
    try:
        endpoint = await ctx.secrets.resolve(meta["namespace"], spec.redis)
        poller = await ctx.endpoints.acquire(me, endpoint)
        gateway = poller.gateway
        if spec.key is not None:
            await gateway.delete_stream(spec.key)  # the key the resource names: it is ours
        else:
            await delete_managed_keys(ctx, body, spec, gateway)
    except (SecretMissing, GatewayError, KubeError) as exc:
        raise kopf.TemporaryError(
            f"cannot delete the stream in Redis yet ({exc}); to delete the resource without touching "
            "Redis, annotate it streamherd.io/managed=false",
            delay=10,
        ) from exc
    finally:
        await ctx.endpoints.release(me)


async def delete_managed_keys(
    ctx: Context, body: Mapping[str, Any], spec: RedisStreamSpec, gateway: Any
) -> None:
    """Delete (UNLINK) the pattern's keys that carry one of our groups, checked atomically per
    key: never dead-letter or other auxiliary keys, never a matching stream we never touched."""
    meta = body["metadata"]
    recorded = (body.get("status") or {}).get("managedGroups") or ()
    groups = managed_group_names(ctx.stream_groups, meta["namespace"], meta["name"], recorded)
    if not groups:
        logger.warning(
            "RedisStream %s/%s: no ConsumerGroup ever managed a group on %r: no key is ours to delete",
            meta["namespace"],
            meta["name"],
            spec.key_pattern,
        )
        return
    keys = await scan_pattern(gateway, str(spec.key_pattern))  # auxiliary streams left out
    spared = 0
    for start in range(0, len(keys), DELETE_CHUNK):
        outcome = await unlink_managed(gateway, keys[start : start + DELETE_CHUNK], groups)
        spared += sum(1 for result in outcome.values() if result == "unmanaged")
    logger.info(
        "RedisStream %s/%s deleted: %d stream(s) of %r unlinked, %d without our groups spared",
        meta["namespace"],
        meta["name"],
        len(keys) - spared,
        spec.key_pattern,
        spared,
    )
