"""Ownership of consumer groups, recorded in Redis beside them (``claim_group.lua``,
``release_group.lua``): one hash per group name (keys.owners_key), a field per claiming
ConsumerGroup. What the claims mean is decided in decisions.ownership."""

from __future__ import annotations

import json
from typing import Any

from streamherd.gateway.client import CLAIM_GROUP, RELEASE_GROUP, RedisGateway
from streamherd.keys import owners_key
from streamherd.observations import GroupClaim


async def claim_group(
    gateway: RedisGateway,
    group: str,
    *,
    uid: str,
    namespace: str,
    name: str,
    kind: str,
    text: str,
) -> tuple[GroupClaim, list[GroupClaim]]:
    """Record (or keep) this ConsumerGroup's claim on ``group``; (ours, every claim).
    Raises GatewayError when Redis cannot be reached."""
    command = CLAIM_GROUP.command([owners_key(group)], [uid, namespace, name, kind, text])
    (reply,) = await gateway.pipeline([command])
    if isinstance(reply, Exception):
        raise gateway.classify(reply)
    claims = _claims(reply)
    ours = next(c for c in claims if c.uid == uid)
    return ours, claims


async def release_group(gateway: RedisGateway, group: str, uid: str) -> bool:
    """Remove this ConsumerGroup's claim on ``group``; False when it had none."""
    (reply,) = await gateway.pipeline([RELEASE_GROUP.command([owners_key(group)], [uid])])
    if isinstance(reply, Exception):
        raise gateway.classify(reply)
    return bool(reply)


def _claims(flat: Any) -> list[GroupClaim]:
    items = (
        list(flat.items())
        if isinstance(flat, dict)
        else list(zip(flat[::2], flat[1::2], strict=True))
    )
    claims = []
    for field, value in items:
        if field == "#seq":
            continue
        data = json.loads(value)
        claims.append(
            GroupClaim(
                uid=str(field),
                namespace=str(data["namespace"]),
                name=str(data["name"]),
                kind=str(data["kind"]),
                text=str(data["text"]),
                seq=int(data["seq"]),
            )
        )
    return claims
