"""How a read over several stream keys reaches Redis: one server, or a Redis Cluster.

What Redis Cluster allows (tested on 7.0 and 8.2 in ``tests/consumer/test_cluster.py``):

- every key of one command must hash to one slot, even keys of two slots held by the same
  node: ``XREADGROUP``/``XREAD`` over them is refused with ``CROSSSLOT``, and so are ``MULTI``
  and a script naming them. Keys with one hash tag (``conv:{tenant-7}:42``) share a slot;
  call streams named ``conv:<id>`` are spread over all of them;
- so a read over many streams is one ``XREADGROUP`` per slot, sent as one pipeline: redis-py
  sends a cluster pipeline as one batch per node, the nodes concurrently (a round trip per
  node, one connection each). ``COUNT`` stays per stream, so the bound on a read (``batch``
  streams, ``batch // streams`` each) is unchanged;
- a blocking read waits on one slot only: a consumer cannot block on thousands of call
  streams with a bounded number of connections. How it waits instead: ``waking``;
- redis-py finds the keys of ``XREAD``/``XREADGROUP`` (their keys are "movable") by asking a
  node ``COMMAND GETKEYS`` first, one extra round trip per read: these reads name their node
  themselves (the node serving the slot; a ``MOVED`` reply is still followed).

Sentinel, or any mode with one primary, is a ``redis.asyncio.Redis`` here: like standalone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from redis import exceptions as rx
from redis.asyncio.cluster import RedisCluster

from streamherd.consumer.settings import AnyRedis
from streamherd.keys import hash_slot

TRANSIENT = (rx.ClusterError, rx.AskError, rx.TryAgainError, rx.RedisClusterException)
"""A cluster changing under a command (down, slots moving, a failover): raised, and waited
out by the consumer's loop; never taken as a stream lacking its group."""

StreamItems = list[tuple[str, list[tuple[str, dict[str, str]]]]]
"""An ``XREAD``/``XREADGROUP`` reply: per stream, its entries (id, fields)."""


def is_cluster(redis: AnyRedis) -> TypeGuard[RedisCluster]:
    return isinstance(redis, RedisCluster)


def by_slot(keys: Iterable[str]) -> dict[int, list[str]]:
    """Keys grouped by hash slot, in their first-seen order."""
    groups: dict[int, list[str]] = {}
    for key in keys:
        groups.setdefault(hash_slot(key), []).append(key)
    return groups


@dataclass
class StreamsReply:
    """What a read over several streams returned, and the commands Redis refused (on a
    cluster, one slot's command can fail while the others delivered entries)."""

    items: StreamItems = field(default_factory=list)
    failed: list[tuple[list[str], rx.ResponseError]] = field(default_factory=list)
    """The keys of each refused command, and Redis's error (NOGROUP, WRONGTYPE, ...)."""


async def read_streams(
    redis: AnyRedis,
    head: Sequence[str],
    ids: Mapping[str, str],
    *,
    count: int,
    block: int | None = None,
) -> StreamsReply:
    """``XREADGROUP GROUP g c`` (or ``XREAD``: ``head``) over ``ids`` (key -> id). On a
    cluster: one command per hash slot, pipelined; ``block`` only where the keys share one
    slot (a blocking read cannot wait on several). Connection trouble raises."""
    reply = StreamsReply()
    if not ids:
        return reply
    options: list[Any] = ["COUNT", count]
    if block is not None:
        options += ["BLOCK", block]
    if not is_cluster(redis):
        return await _one(redis, [*head, *options], list(ids), ids, {}, reply)
    await redis.initialize()  # the slot map (again, after a failure said it changed)
    slots = by_slot(ids)
    if len(slots) == 1:
        (keys,) = slots.values()
        route = {"target_nodes": redis.get_node_from_key(keys[0])}
        return await _one(redis, [*head, *options], keys, ids, route, reply)
    if block is not None:
        raise ValueError("on Redis Cluster a blocking read waits on the keys of one hash slot")
    pipe = redis.pipeline()
    for keys in slots.values():
        pipe.execute_command(
            *head,
            *options,
            "STREAMS",
            *keys,
            *(ids[k] for k in keys),
            target_nodes=redis.get_node_from_key(keys[0]),
        )
    for keys, answer in zip(slots.values(), await pipe.execute(raise_on_error=False), strict=True):
        if isinstance(answer, rx.ResponseError) and not isinstance(answer, TRANSIENT):
            reply.failed.append((keys, answer))
        elif isinstance(answer, BaseException):
            raise answer
        else:
            reply.items.extend(answer or [])
    return reply


async def _one(
    redis: AnyRedis,
    command: list[Any],
    keys: list[str],
    ids: Mapping[str, str],
    route: Mapping[str, Any],
    reply: StreamsReply,
) -> StreamsReply:
    try:
        answer: Any = await redis.execute_command(
            *command, "STREAMS", *keys, *(ids[k] for k in keys), **route
        )
    except rx.ResponseError as exc:
        if isinstance(exc, TRANSIENT):
            raise
        reply.failed.append((keys, exc))
    else:
        reply.items.extend(answer or [])
    return reply
