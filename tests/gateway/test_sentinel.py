"""The gateway on a Sentinel-managed primary: connected through the sentinels (with their own
password and the data nodes'), moved to the new primary by a failover, typed errors when no
sentinel answers; and what Redis itself replicates of a group."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from e2e.cluster.redis import RedisSentinelSet, RedisServer, TLSFiles

from streamherd.api.redisstream import RedisEndpoint
from streamherd.gateway import GatewayError, RedisGateway, resolve_endpoint
from streamherd.gateway.endpoint import Endpoint, SentinelMaterial, parse_address
from streamherd.observations import EndpointProblem

DATA_PASSWORD = "data-nodes-pw"
SENTINEL_PASSWORD = "sentinels-pw"


@pytest.fixture(scope="module")
def guarded() -> Iterator[RedisSentinelSet]:
    """Passwords on both: the data nodes' (requirepass) and the sentinels' own."""
    started = RedisSentinelSet(
        data_extra=[("requirepass", DATA_PASSWORD)],
        sentinel_extra=[
            ("requirepass", SENTINEL_PASSWORD),
            ("sentinel sentinel-pass", SENTINEL_PASSWORD),
        ],
    ).start()
    yield started
    started.cleanup()


def endpoint(s: RedisSentinelSet, *, sentinel_password: str | None = SENTINEL_PASSWORD) -> Endpoint:
    spec = RedisEndpoint.model_validate(
        {
            "mode": "Sentinel",
            "sentinel": {
                "masterName": s.master,
                "addresses": s.addresses,
                "passwordSecretRef": {"name": "sentinel", "key": "password"},
            },
            "passwordSecretRef": {"name": "redis", "key": "password"},
        }
    )
    values = {("redis", "password"): DATA_PASSWORD.encode()}
    values[("sentinel", "password")] = (sentinel_password or "").encode()
    return resolve_endpoint(spec, lambda name, key: values[(name, key)])


def plain(server: RedisServer | None) -> redis.Redis:
    assert server is not None
    return redis.Redis(port=server.port, password=DATA_PASSWORD, decode_responses=True)


def test_the_endpoint_names_sentinels_master_and_database_and_no_credential() -> None:
    material = SentinelMaterial(
        master="mymaster", addresses=(parse_address("s-0:26379"), parse_address("[::1]:26380"))
    )
    ep = Endpoint(url=material.url(False), password="pw", sentinel=material)
    assert ep.display == "redis+sentinel://s-0:26379,[::1]:26380/mymaster/0"
    assert "pw" not in repr(ep)
    other = Endpoint(
        url=material.url(False),
        password="pw",
        sentinel=SentinelMaterial(master="other", addresses=material.addresses),
    )
    assert ep.identity != other.identity


async def test_a_failover_moves_reads_writes_and_scripts_to_the_new_primary(
    guarded: RedisSentinelSet,
) -> None:
    gateway = RedisGateway(endpoint(guarded))
    try:
        await gateway.ensure_group("orders", "g", "0", create_stream=True)
        old = plain(guarded.primary)
        ids = [old.xadd("orders", {"n": str(i)}) for i in range(5)]
        assert (await gateway.observe(["orders"])).group("orders", "g").reported_lag == 5  # type: ignore[union-attr]
        # A wake-up read blocked on the old primary while it is demoted: XREAD is allowed on
        # a replica, so it stays blocked there and is served by the replicated entry, unless
        # the sentinels' reconfiguration (CLIENT KILL TYPE normal) comes first: then it fails
        # typed, as a lost connection, and the waker's next read goes to the new primary.
        waiting = asyncio.ensure_future(gateway.wait_for_entries({"orders": ids[-1]}, 20_000))
        await asyncio.sleep(0.2)
        guarded.failover()
        new = plain(guarded.primary)
        fresh = new.xadd("orders", {"n": "after"})
        outcome = (await asyncio.gather(asyncio.wait_for(waiting, 15), return_exceptions=True))[0]
        if isinstance(outcome, GatewayError):
            assert outcome.problem is EndpointProblem.UNREACHABLE, outcome.message
        else:
            assert outcome == {"orders": fresh}
        await asyncio.sleep(1.1)  # the gateway re-asks the sentinels at most once a second
        # Writes land on the new primary (a script: loaded there by the NOSCRIPT path).
        await gateway.ensure_group("orders", "h", "0", create_stream=True)
        assert {g["name"] for g in new.xinfo_groups("orders")} == {"g", "h"}
        # The next wake-up read goes to the new primary.
        waiter = asyncio.ensure_future(gateway.wait_for_entries({"orders": fresh}, 10_000))
        await asyncio.sleep(0.2)
        assert new.client_list(_type="normal") and any(
            "XREAD" in c.get("cmd", "").upper() for c in new.client_list(_type="normal")
        ), "the blocked read is on the new primary"
        fresher = new.xadd("orders", {"n": "later"})
        assert await asyncio.wait_for(waiter, 10) == {"orders": fresher}
        observed = await gateway.observe(["orders"])
        assert observed.problem is None and observed.streams["orders"].length == 7
    finally:
        await gateway.close()


async def test_a_wrong_sentinel_password_is_authentication_failed(
    guarded: RedisSentinelSet,
) -> None:
    gateway = RedisGateway(endpoint(guarded, sentinel_password="wrong"), connect_timeout=1.0)
    try:
        started = time.monotonic()
        with pytest.raises(GatewayError) as caught:
            await gateway.ping()
        assert time.monotonic() - started < 5
        assert caught.value.problem in (EndpointProblem.AUTH_FAILED, EndpointProblem.UNREACHABLE)
        assert "wrong" not in caught.value.message and SENTINEL_PASSWORD not in caught.value.message
    finally:
        await gateway.close()


async def test_no_sentinel_answering_is_unreachable_and_quick() -> None:
    from e2e.cluster.redis import free_port

    material = SentinelMaterial(master="m", addresses=(("127.0.0.1", free_port()),))
    gateway = RedisGateway(
        Endpoint(url=material.url(False), sentinel=material), connect_timeout=1.0
    )
    try:
        started = time.monotonic()
        with pytest.raises(GatewayError) as caught:
            await gateway.ping()
        assert time.monotonic() - started < 5
        assert caught.value.problem is EndpointProblem.UNREACHABLE
        assert "redis+sentinel://127.0.0.1" in caught.value.message
    finally:
        await gateway.close()


@pytest.mark.parametrize("version", ["7.0", "8.2"])
def test_what_a_replica_keeps_of_a_group(version: str) -> None:
    """Verified behaviour: Redis 7.0 does not replicate a group's entries-read through the
    command stream (the replica keeps the value the group was created with, here 0; a full
    sync carries it), 8.2 does. After a failover on 7.0 the new primary's lag is then
    computed from a stale entries-read (too high while the group is behind; 0 at the tail,
    which the operator reads as Redis says), until the group reads again there. The
    last-delivered id and the pending entries are replicated on both: the group is never
    reset."""
    primary = RedisServer(version=version, extra=[("repl-diskless-sync-delay", "0")]).start()
    replica = RedisServer(
        version=version, extra=[("replicaof", f"127.0.0.1 {primary.port}")]
    ).start()
    try:
        a, b = (
            redis.Redis(port=primary.port, decode_responses=True),
            redis.Redis(port=replica.port, decode_responses=True),
        )
        deadline = time.monotonic() + 10
        while a.execute_command("WAIT", 1, 100) != 1 and time.monotonic() < deadline:
            pass  # until the replica's initial sync is done
        a.xgroup_create("orders", "g", "0", mkstream=True, entries_read=0)
        for i in range(30):
            a.xadd("orders", {"n": str(i)})
        a.xreadgroup("g", "c", {"orders": ">"}, count=20)
        assert a.execute_command("WAIT", 1, 5000) == 1
        on_primary, on_replica = a.xinfo_groups("orders")[0], b.xinfo_groups("orders")[0]
        assert on_replica["last-delivered-id"] == on_primary["last-delivered-id"]
        assert on_replica["pending"] == on_primary["pending"] == 20
        assert on_primary["entries-read"] == 20
        assert on_replica["entries-read"] == (0 if version == "7.0" else 20)
    finally:
        primary.cleanup()
        replica.cleanup()


def test_a_sentinel_url_is_read_back_as_written() -> None:
    from streamherd.gateway.endpoint import sentinel_from_url

    url = "rediss+sentinel://s-0:26379,[::1]:26380/mymaster/3"
    material = sentinel_from_url(url, password="pw")
    assert material is not None and material.url(True) == url
    assert material.addresses == (("s-0", 26379), ("::1", 26380)) and material.database == 3
    assert sentinel_from_url("redis://r:6379/0") is None
    with pytest.raises(ValueError, match="name hosts, the primary and a database"):
        sentinel_from_url("redis+sentinel://s-0:26379")


@pytest.fixture(scope="module")
def tls_pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    import trustme

    ca, other = trustme.CA(), trustme.CA()
    folder = tmp_path_factory.mktemp("sentinel-pki")
    server = ca.issue_cert("127.0.0.1")
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    server.cert_chain_pems[0].write_to_path(str(folder / "server.pem"))
    server.private_key_pem.write_to_path(str(folder / "server.key"))
    client = ca.issue_cert("streamherd-client")
    return {
        "files": TLSFiles(folder / "ca.pem", folder / "server.pem", folder / "server.key", True),
        "ca": ca.cert_pem.bytes(),
        "other_ca": other.cert_pem.bytes(),
        "client_cert": client.cert_chain_pems[0].bytes(),
        "client_key": client.private_key_pem.bytes(),
    }


async def test_sentinels_and_data_nodes_over_mutual_tls(tls_pki: dict[str, Any]) -> None:
    """tls applies to the sentinels and the data nodes alike: both verified (name checked:
    the certificates are for 127.0.0.1, where the sentinels announce the primary), the client
    certificate presented to both; a failover is followed over TLS too."""
    guarded = RedisSentinelSet(tls=tls_pki["files"]).start()
    try:
        spec = RedisEndpoint.model_validate(
            {
                "mode": "Sentinel",
                "sentinel": {"masterName": guarded.master, "addresses": guarded.addresses},
                "tls": {
                    "caSecretRef": {"name": "ca", "key": "ca.crt"},
                    "clientCertificateSecretRef": {"name": "client"},
                },
            }
        )
        values = {
            ("ca", "ca.crt"): tls_pki["ca"],
            ("client", "tls.crt"): tls_pki["client_cert"],
            ("client", "tls.key"): tls_pki["client_key"],
        }
        endpoint = resolve_endpoint(spec, lambda name, key: values[(name, key)])
        assert endpoint.display.startswith("rediss+sentinel://127.0.0.1:")
        gateway = RedisGateway(endpoint)
        try:
            await gateway.ensure_group("orders", "g", "0", create_stream=True)
            guarded.failover()
            await asyncio.sleep(1.1)  # the gateway re-asks the sentinels at most once a second
            await gateway.ensure_group("orders", "h", "0", create_stream=True)
            assert guarded.primary is not None
            groups = guarded.primary.cli("xinfo", "groups", "orders")
            assert "g" in groups.split() and "h" in groups.split()
        finally:
            await gateway.close()
        values[("ca", "ca.crt")] = tls_pki["other_ca"]
        untrusted = resolve_endpoint(spec, lambda name, key: values[(name, key)])
        gateway = RedisGateway(untrusted, connect_timeout=1.0)
        try:
            with pytest.raises(GatewayError) as caught:
                await gateway.ping()
            assert caught.value.problem in (EndpointProblem.TLS_FAILED, EndpointProblem.UNREACHABLE)
        finally:
            await gateway.close()
    finally:
        guarded.cleanup()


async def test_the_sentinels_own_acl_user_needs_only_what_the_readme_says() -> None:
    """The sentinels' ACL user (README "Redis permissions", line sentinels) is enough to find
    the primary and to follow a failover; nothing is denied on any sentinel."""
    from tests.security.acl import documented_rules

    rules = " ".join(documented_rules()["sentinels"])
    watched = RedisSentinelSet(
        sentinel_extra=[
            ("user", f"watcher on >{SENTINEL_PASSWORD} resetkeys resetchannels -@all {rules}")
        ]
    ).start()
    try:
        material = SentinelMaterial(
            master=watched.master,
            addresses=tuple(parse_address(a) for a in watched.addresses),
            username="watcher",
            password=SENTINEL_PASSWORD,
        )
        gateway = RedisGateway(Endpoint(url=material.url(False), sentinel=material))
        try:
            await gateway.ensure_group("orders", "g", "0", create_stream=True)
            watched.failover()
            await asyncio.sleep(1.1)  # the gateway re-asks the sentinels at most once a second
            await gateway.ensure_group("orders", "h", "0", create_stream=True)
            assert watched.primary is not None
            assert "h" in watched.primary.cli("xinfo", "groups", "orders").split()
        finally:
            await gateway.close()
        for sentinel in watched.sentinels:
            assert "watcher" not in sentinel.cli("acl", "log"), sentinel.cli("acl", "log")
    finally:
        watched.cleanup()
