"""The claims on a group name, recorded in Redis (claim_group.lua, release_group.lua), on
Redis 7.0, 8.2 and Valkey 9.1; and what they decide (decisions.ownership)."""

from __future__ import annotations

import redis.asyncio as aredis
from e2e.cluster.redis import RedisServer

from streamherd.decisions.ownership import owner_elsewhere
from streamherd.gateway import Endpoint, RedisGateway
from streamherd.gateway.ownership import claim_group, release_group
from streamherd.keys import is_auxiliary, owners_key


async def test_claims_keep_their_place_and_go_with_their_release(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    def claim(uid: str, kind: str, text: str):  # type: ignore[no-untyped-def]
        return claim_group(gateway, "g", uid=uid, namespace="ns", name=uid, kind=kind, text=text)

    one, _ = await claim("uid-1", "key", "conv:1")
    two, claims = await claim("uid-2", "pattern", "conv:*")
    assert (one.seq, two.seq) == (1, 2)
    assert owner_elsewhere(two, claims) == one  # a pattern behind a key it matches
    assert owner_elsewhere(one, claims) is None
    again, claims = await claim("uid-1", "key", "conv:1")  # re-read: same place in line
    assert again.seq == 1 and len(claims) == 2
    moved, claims = await claim("uid-1", "key", "conv:2")  # another stream: to the back
    assert moved.seq == 3
    assert owner_elsewhere(moved, claims) == two  # conv:2 is in conv:*, claimed before it
    assert await release_group(gateway, "g", "uid-2") is True
    assert await release_group(gateway, "g", "uid-2") is False
    assert await r.exists(owners_key("g")) == 1
    assert await release_group(gateway, "g", "uid-1") is True
    assert await r.exists(owners_key("g")) == 0  # nothing left: the hash goes too
    assert is_auxiliary(owners_key("g"))


async def test_one_server_by_two_host_names_sees_one_record(
    server: RedisServer, gateway: RedisGateway
) -> None:
    other = RedisGateway(Endpoint(url=server.url.replace("127.0.0.1", "localhost")))
    try:
        first, _ = await claim_group(
            gateway, "g", uid="a", namespace="ns", name="a", kind="key", text="orders"
        )
        second, claims = await claim_group(
            other, "g", uid="b", namespace="ns", name="b", kind="key", text="orders"
        )
        assert owner_elsewhere(second, claims) == first
    finally:
        await other.close()
