"""`streamherd dlq` on real redis-server 7.0 and 8.2, with records the real janitor script
wrote: list, show, replay (by strategy, idempotent, concurrent, dry run, every edge the
script checks), purge; then the command line itself, with --url and through a RedisStream
resource and its password Secret (the operator's own resolution)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
from typing import Any

import pytest
import redis.asyncio as aredis
from tests.harness import Harness
from tests.janitor.helpers import settings

from streamherd.api.consumergroup import RecoveryStrategy
from streamherd.controller import deadletters as dlc
from streamherd.decisions.deadletter import REPLAY_CONSUMER, Selection
from streamherd.gateway import Endpoint, RedisGateway
from streamherd.gateway import deadletter as redis_dl
from streamherd.gateway.recovery import recover

# The operator end to end: on the emulator and on the real control plane.
pytestmark = pytest.mark.control_plane

KEY, DLQ = "orders", "orders:dlq"


async def poison(r: aredis.Redis, gateway: RedisGateway, group: str, n: int) -> list[str]:
    """``n`` entries that ``group`` received twice (its consumer re-read its history) and the
    janitor's own script dead-lettered (maxDeliveries 1). Returns their ids."""
    groups = {g["name"] for g in await r.xinfo_groups(KEY)} if await r.exists(KEY) else set()
    if group not in groups:  # from here on: only these entries are the group's
        await r.xgroup_create(KEY, group, "$", mkstream=True)
    ids = [await r.xadd(KEY, {"msg": f"{group}-{i}", "body": "x"}) for i in range(n)]
    await r.xreadgroup(group, "c1", {KEY: ">"})
    await r.xreadgroup(group, "c1", {KEY: "0"})  # a second delivery of everything it holds
    batch = await recover(
        gateway, KEY, group, settings(max_deliveries=1), dead_letter=DLQ, min_idle_ms=0
    )
    assert batch.dead_lettered >= n
    return ids


def target(gateway: RedisGateway, **options: Any) -> dlc.Target:
    return dlc.Target(
        gateway=gateway,
        name="test",
        key=options.get("key", KEY),
        pattern=options.get("pattern"),
        cluster=options.get("cluster", False),
        dead_letters=set(options.get("dead_letters", ())),
        strategies=options.get("strategies", {}),
        default=options.get("default", RecoveryStrategy.REQUEUE),
    )


async def copies(r: aredis.Redis, origin: str) -> list[tuple[str, dict[str, str]]]:
    return [(i, f) for i, f in await r.xrange(KEY) if f.get("streamherd-origin-id") == origin]


async def test_list_counts_per_stream_and_group(gateway: RedisGateway, r: aredis.Redis) -> None:
    await poison(r, gateway, "brain", 3)
    await poison(r, gateway, "crm", 2)
    out = json.loads(await dlc.list_command(target(gateway), as_json=True))
    assert out["deadLetters"] == {DLQ: 5}
    rows = {(c["stream"], c["group"]): c for c in out["counts"]}
    assert rows[(KEY, "brain")]["records"] == 3 and rows[(KEY, "crm")]["records"] == 2
    assert rows[(KEY, "brain")]["consumers"] == ["c1"]
    text = await dlc.list_command(target(gateway), as_json=False)
    assert "orders:dlq: 5" in text and "brain" in text


async def test_show_gives_origin_group_consumer_and_deliveries(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    ids = await poison(r, gateway, "brain", 2)
    shown = json.loads(await dlc.show_command(target(gateway), Selection(), limit=10, as_json=True))
    assert [s["origin_id"] for s in shown] == ids
    assert {(s["group"], s["consumer"], s["deliveries"], s["stream"]) for s in shown} == {
        ("brain", "c1", 2, KEY)
    }
    assert shown[0]["fields"] == {"msg": "brain-0", "body": "x"}
    one = await dlc.show_command(
        target(gateway), Selection(origin_ids=frozenset({ids[1]})), limit=10, as_json=False
    )
    assert ids[1] in one and ids[0] not in one


async def test_replay_requeue_copies_once_tagged_for_its_group(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    (origin,) = await poison(r, gateway, "brain", 1)
    await r.xgroup_create(KEY, "crm", "$")  # another group on the stream, already past it
    selection = Selection(groups=frozenset({"brain"}))
    code, text = await dlc.replay_command(target(gateway), selection, dry_run=False, as_json=False)
    assert code == 0, text
    assert "also read by crm" in text and "copied as" in text
    ((copy_id, fields),) = await copies(r, origin)
    assert fields == {
        "streamherd-origin-id": origin,
        "streamherd-deliveries": "0",
        "streamherd-group": "brain",
        "msg": "brain-0",
        "body": "x",
    }
    assert await r.xlen(DLQ) == 0, "the record goes with the replay"
    # The group reads it as new work.
    got = await r.xreadgroup("brain", "c2", {KEY: ">"})
    assert [i for i, _ in got[0][1]] == [copy_id]
    # Again: nothing (the record is the token), by the command and by the script itself.
    code, text = await dlc.replay_command(target(gateway), selection, dry_run=False, as_json=False)
    assert "nothing matches" in text
    again = await redis_dl.replay(gateway, DLQ, KEY, "brain", origin, ["1-0"], claim_to=None)
    assert again.outcome == "gone"
    assert len(await copies(r, origin)) == 1


async def test_concurrent_replays_give_the_group_one_copy(
    server: Any, gateway: RedisGateway, r: aredis.Redis
) -> None:
    origins = await poison(r, gateway, "brain", 20)
    records = await redis_dl.read_all(gateway, DLQ)
    others = [RedisGateway(Endpoint(url=server.url)) for _ in range(3)]
    try:
        results = await asyncio.gather(
            *(
                redis_dl.replay(g, DLQ, KEY, "brain", rec.origin_id or "", [rec.id], claim_to=None)
                for rec in records
                for g in (gateway, *others)
            )
        )
    finally:
        for g in others:
            await g.close()
    assert sorted(x.outcome for x in results).count("copied") == 20
    for origin in origins:
        assert len(await copies(r, origin)) == 1, origin


async def test_replay_claim_puts_the_entry_back_into_its_group_only(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    (origin,) = await poison(r, gateway, "brain", 1)
    await r.xgroup_create(KEY, "crm", "0")
    await r.xreadgroup("crm", "x", {KEY: ">"})  # crm read it long ago
    await r.xack(KEY, "crm", origin)
    await r.xadd(KEY, {"msg": "later"})
    await r.xreadgroup("brain", "recent", {KEY: ">"})  # a consumer active just now
    before = {g["name"]: g for g in await r.xinfo_groups(KEY)}
    length = await r.xlen(KEY)
    t = target(gateway, strategies={"brain": RecoveryStrategy.CLAIM})
    code, text = await dlc.replay_command(
        t, Selection(origin_ids=frozenset({origin})), dry_run=False, as_json=False
    )
    assert code == 0, text
    assert "claimed back into the group's pending entries" in text
    assert await r.xlen(KEY) == length, "nothing appended: no other group sees anything"
    after = {g["name"]: g for g in await r.xinfo_groups(KEY)}
    assert after["crm"] == before["crm"]
    pending = await r.xpending_range(KEY, "brain", "-", "+", 10)
    assert (origin, "recent") in [(p["message_id"], p["consumer"]) for p in pending]


async def test_replay_claim_without_consumers_or_original(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    first, second = await poison(r, gateway, "brain", 2)
    await r.xgroup_delconsumer(KEY, "brain", "c1")
    await r.xdel(KEY, second)  # trimmed meanwhile: a copy instead
    t = target(gateway, strategies={"brain": RecoveryStrategy.CLAIM})
    code, text = await dlc.replay_command(
        t, Selection(everything=True), dry_run=False, as_json=False
    )
    assert code == 0, text
    pending = await r.xpending_range(KEY, "brain", "-", "+", 10)
    assert [(p["message_id"], p["consumer"]) for p in pending] == [(first, REPLAY_CONSUMER)]
    assert len(await copies(r, second)) == 1


async def test_replay_keeps_what_cannot_go_back(gateway: RedisGateway, r: aredis.Redis) -> None:
    (origin,) = await poison(r, gateway, "brain", 1)
    await r.xgroup_setid(KEY, "brain", "0")  # moved back before the entry: it reads it anyway
    unread = await redis_dl.replay(
        gateway, DLQ, KEY, "brain", origin, [(await r.xrange(DLQ))[0][0]], claim_to=None
    )
    assert unread.outcome == "unread" and unread.deleted == 1
    assert await copies(r, origin) == []

    (origin,) = await poison(r, gateway, "crm", 1)
    record_id = (await r.xrange(DLQ))[0][0]
    await r.xgroup_destroy(KEY, "crm")
    gone = await redis_dl.replay(gateway, DLQ, KEY, "crm", origin, [record_id], claim_to=None)
    assert gone.outcome == "nogroup" and await r.xlen(DLQ) == 1, "kept for later"
    mismatch = await redis_dl.replay(gateway, DLQ, KEY, "brain", origin, [record_id], claim_to=None)
    assert mismatch.outcome == "mismatch" and await r.xlen(DLQ) == 1


async def test_dry_run_changes_nothing(gateway: RedisGateway, r: aredis.Redis) -> None:
    await poison(r, gateway, "brain", 3)
    length, dlq = await r.xlen(KEY), await r.xrange(DLQ)
    code, text = await dlc.replay_command(
        target(gateway), Selection(everything=True), dry_run=True, as_json=False
    )
    assert code == 0 and text.count("would copy") == 3
    assert await r.xlen(KEY) == length and await r.xrange(DLQ) == dlq


async def test_replay_and_purge_need_a_selection(gateway: RedisGateway, r: aredis.Redis) -> None:
    await poison(r, gateway, "brain", 2)
    code, text = await dlc.replay_command(
        target(gateway), Selection(), dry_run=False, as_json=False
    )
    assert code == 1 and "--all" in text
    code, text = await dlc.purge_command(target(gateway), Selection(), yes=True)
    assert code == 1 and await r.xlen(DLQ) == 2


async def test_purge_only_with_yes(gateway: RedisGateway, r: aredis.Redis) -> None:
    await poison(r, gateway, "brain", 2)
    await poison(r, gateway, "crm", 3)
    code, text = await dlc.purge_command(
        target(gateway), Selection(groups=frozenset({"crm"})), yes=False
    )
    assert code == 1 and "would delete 3" in text and await r.xlen(DLQ) == 5
    code, text = await dlc.purge_command(
        target(gateway), Selection(groups=frozenset({"crm"})), yes=True
    )
    assert code == 0 and "deleted 3" in text
    assert {f["streamherd-group"] for _, f in await r.xrange(DLQ)} == {"brain"}


async def test_a_pattern_finds_dead_letters_of_streams_already_gone(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    for call in ("conv:1", "conv:2"):
        await r.xadd(
            f"{call}:dlq",
            {
                "streamherd-origin-id": "1-0",
                "streamherd-stream": call,
                "streamherd-group": "brain",
                "streamherd-consumer": "p",
                "streamherd-deliveries": "6",
                "text": "hi",
            },
        )
    await r.set("conv:3:dlq", "not a stream")
    found = await dlc.dead_letter_keys(target(gateway, key=None, pattern="conv:*"))
    assert found == {"conv:1:dlq": 1, "conv:2:dlq": 1}


# 8.2 in the suite; 7.0's and Valkey's runs under make e2e (the dlq's gateway tests run on
# them in the suite)
@pytest.mark.e2e_variants("redis-7.0", "valkey-9.1")
async def test_the_command_line_with_a_url(
    server: Any, gateway: RedisGateway, r: aredis.Redis
) -> None:
    (origin,) = await poison(r, gateway, "brain", 1)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "streamherd", "dlq", *args, "--url", server.url, "--key", KEY],
            capture_output=True,
            text=True,
            timeout=60,
        )

    listed = cli("list")
    assert listed.returncode == 0 and "orders:dlq: 1" in listed.stdout, listed.stderr
    shown = cli("show", "-o", "json")
    assert json.loads(shown.stdout)[0]["origin_id"] == origin
    dry = cli("replay", "--all", "--dry-run")
    assert dry.returncode == 0 and "would copy" in dry.stdout
    assert await r.xlen(DLQ) == 1
    done = cli("replay", "--group", "brain")
    assert done.returncode == 0 and "copied as" in done.stdout, done.stderr
    assert len(await copies(r, origin)) == 1 and await r.xlen(DLQ) == 0
    refused = cli("purge", "--all")
    assert refused.returncode == 1 and "add --yes" in refused.stderr


@pytest.mark.e2e_variants("control-plane")
def test_the_command_line_through_a_redisstream_and_its_secret(
    harness: Harness, redis_server_factory: Any, kubeconfig: Any
) -> None:
    h = harness
    h.redis_server = redis_server_factory("7.0", extra=[("requirepass", "s3cr3t-pw")])
    h.create("Secret", "redis-auth", data={"password": base64.b64encode(b"s3cr3t-pw").decode()})
    h.stream(
        "orders",
        redis={
            "url": h.redis_server.url,
            "passwordSecretRef": {"name": "redis-auth", "key": "password"},
        },
    )
    h.group("brain", recovery={"strategy": "Claim"})
    import redis

    client = redis.Redis(port=h.redis_server.port, password="s3cr3t-pw", decode_responses=True)
    origin = client.xadd(KEY, {"msg": "m"})
    client.xgroup_create(KEY, "brain", "0")
    client.xreadgroup("brain", "pod-1", {KEY: ">"})
    client.xack(KEY, "brain", origin)
    client.xadd(
        DLQ,
        {
            "streamherd-origin-id": origin,
            "streamherd-stream": KEY,
            "streamherd-group": "brain",
            "streamherd-consumer": "pod-1",
            "streamherd-deliveries": "5",
            "msg": "m",
        },
    )
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    base = [sys.executable, "-m", "streamherd", "dlq"]
    listed = subprocess.run(
        [*base, "list", "-n", h.namespace, "-s", "orders"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    assert "orders:dlq: 1" in listed.stdout
    replayed = subprocess.run(
        [*base, "replay", "-n", h.namespace, "-s", "orders", "--all"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert replayed.returncode == 0, replayed.stderr
    # The ConsumerGroup says Claim: back into the group's PEL by id, to its consumer.
    assert "claimed back" in replayed.stdout
    pending = client.xpending_range(KEY, "brain", "-", "+", 10)
    assert [(p["message_id"], p["consumer"]) for p in pending] == [(origin, "pod-1")]
    missing = subprocess.run(
        [*base, "list", "-n", h.namespace, "-s", "nope"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert missing.returncode == 1 and f"RedisStream {h.namespace}/nope not found" in missing.stderr
    client.close()


async def test_replay_on_a_redis_cluster(cluster_gateway: Any, cluster_client: Any) -> None:
    r, key, dlq = cluster_client, "conv:1", "{conv:1}:dlq"  # the default dead-letter key there
    await r.xgroup_create(key, "brain", "$", mkstream=True)
    origin = await r.xadd(key, {"msg": "m"})
    await r.xreadgroup("brain", "c1", {key: ">"})
    await r.xreadgroup("brain", "c1", {key: "0"})
    batch = await recover(
        cluster_gateway, key, "brain", settings(max_deliveries=1), dead_letter=dlq, min_idle_ms=0
    )
    assert batch.dead_lettered == 1
    t = target(cluster_gateway, key=None, pattern="conv:*", cluster=True)
    assert await dlc.dead_letter_keys(t) == {dlq: 1}
    code, text = await dlc.replay_command(
        t, Selection(everything=True), dry_run=False, as_json=False
    )
    assert code == 0 and "copied as" in text, text
    assert [f["streamherd-origin-id"] for _, f in await r.xrange(key, "(" + origin)] == [origin]
    assert await r.xlen(dlq) == 0


def dead_letter_metric(h: Harness, name: str) -> float | None:
    for line in h.metrics().splitlines():
        if line.startswith("streamherd_group_dead_letter_entries{") and (
            f'consumergroup="{name}"' in line
        ):
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.mark.e2e_variants("control-plane")
def test_poison_is_dead_lettered_counted_and_replayed_after_a_fix(
    harness: Harness, kubelet: Any, kubeconfig: Any
) -> None:
    from e2e import consumer
    from e2e.cluster.processes import wait_until

    h = harness
    h.consumer_deployment("workers", 1, "workers", WORK_MS="1")
    h.stream("orders")
    h.group(
        "workers",
        startId="0",
        consumers={"deploymentRef": {"name": "workers"}},
        autoscaling={"enabled": False, "pollInterval": "500ms"},
        recovery={"minIdle": "1s", "interval": "1s", "maxDeliveries": 1},
    )
    for i in range(3):
        h.r.xadd(KEY, {"msg": f"p{i}", "poison": "1"})
    for i in range(5):
        h.r.xadd(KEY, {"msg": f"m{i}"})
    h.start()
    h.wait_status("ConsumerGroup", "workers", lambda s: s.get("deadLettered") == 3, timeout=60)
    wait_until(lambda: dead_letter_metric(h, "workers") == 3, 30, message="no dead-letter count")
    assert h.r.smembers("processed:workers") == {f"m{i}" for i in range(5)}

    old_pods = {p["metadata"]["name"] for p in h.api.list("pods", h.namespace)}
    # The fix: consumers that no longer fail on those entries (a new pod template).
    fixed = consumer.deployment(
        "workers",
        redis_url=h.pod_redis_url,
        group="workers",
        stream=KEY,
        replicas=1,
        image=h.consumer_image,
        env={"WORK_MS": "1", "POISON_FIELD": "never-set"},
    )
    h.api.patch(
        "deployments.apps",
        h.namespace,
        "workers",
        {"spec": {"template": fixed["spec"]["template"]}},
    )  # type: ignore[index]

    def rolled_out() -> bool:  # the failing consumer gone: it would fail the copies again
        pods = h.api.list("pods", h.namespace)
        return bool(pods) and all(
            p["metadata"]["name"] not in old_pods
            and (p.get("status") or {}).get("phase") == "Running"
            for p in pods
        )

    wait_until(rolled_out, 60, message="the fixed consumers never replaced the old one")
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    command = [
        sys.executable,
        "-m",
        "streamherd",
        "dlq",
        "replay",
        "-n",
        h.namespace,
        "-s",
        "orders",
        "--all",
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("copied as") == 3
    everything = {f"m{i}" for i in range(5)} | {f"p{i}" for i in range(3)}
    wait_until(
        lambda: h.r.smembers("processed:workers") == everything,
        60,
        message=lambda: f"processed {h.r.smembers('processed:workers')}",
    )
    wait_until(lambda: dead_letter_metric(h, "workers") == 0, 30, message="count not back to 0")
    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert again.returncode == 0 and "nothing matches" in again.stdout
    copies = [f for _, f in h.r.xrange(KEY) if "streamherd-group" in f]
    assert sorted(f["msg"] for f in copies) == ["p0", "p1", "p2"], "one copy each, ever"
