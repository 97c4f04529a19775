"""A pattern's stream is never created by the operator: one deleted between discovery and
group creation (its call ended, retention deleted it) stays deleted."""

from __future__ import annotations

import asyncio

import redis.asyncio as aredis
from e2e.cluster.redis import RedisServer

from streamherd.api.consumergroup import ConsumerGroupSpec
from streamherd.api.redisstream import RedisStreamSpec
from streamherd.controller.context import Context, StreamBinding
from streamherd.controller.groups import GroupLoop
from streamherd.controller.polling import Poller, Source
from streamherd.decisions.totals import group_totals
from streamherd.gateway import Endpoint, RedisGateway
from streamherd.kube import KubeClient
from streamherd.metrics import Metrics


async def test_a_pattern_key_deleted_before_its_group_is_created_stays_deleted(
    redis_server: RedisServer,
) -> None:
    r = aredis.Redis.from_url(redis_server.url, decode_responses=True)
    source = Source(pattern="conv:*")
    poller = Poller(RedisGateway(Endpoint(url=redis_server.url)), Metrics(), registry=False)
    ctx = Context.create(KubeClient())  # never asked: no credentials are loaded
    try:
        await r.xadd("conv:1", {"turn": 0})
        await r.xadd("conv:2", {"turn": 0})
        poller.subscribe("calls", source)
        result = await poller.poll_once()  # both found, neither has the group yet
        await r.delete("conv:1")  # the call is over and its stream deleted, meanwhile
        stream = RedisStreamSpec.model_validate(
            {"redis": {"url": redis_server.url}, "keyPattern": "conv:*"}
        )
        binding = StreamBinding(
            "default", "calls", source=source, poller=poller, spec=stream, create_if_missing=True
        )
        body = {
            "metadata": {"namespace": "default", "name": "brain", "uid": "u"},
            "spec": {"streamRef": {"name": "calls"}},
        }
        loop = GroupLoop(ctx, body)
        loop.wake = asyncio.Event()
        loop.announced_pattern = True  # no Event to post (no API server here)
        spec = ConsumerGroupSpec.model_validate(body["spec"])
        totals = group_totals(result.observation, result.keys_of(source), "brain")
        assert set(totals.missing_group_on) == {"conv:1", "conv:2"}
        verdict = await loop.ensure(spec, "brain", binding, result, totals)
        assert verdict.status == "True", verdict
        assert await r.exists("conv:1") == 0, "no MKSTREAM for a pattern's key"
        assert "brain" in {g["name"] for g in await r.xinfo_groups("conv:2")}
        assert not poller.knows("conv:1") and poller.knows("conv:2")
    finally:
        await poller.stop()
        await poller.gateway.close()
        await ctx.close()
        await r.aclose()
