"""The consumer SDK's TLS, as the operator configures it (PEM text in the env): mutual TLS
with the key in memory, the server's name checked unless STREAMHERD_REDIS_TLS_INSECURE, and
a Sentinel-managed primary over TLS."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import redis.exceptions as rx
import trustme
from e2e.cluster.redis import RedisSentinelSet, RedisServer, TLSFiles
from tests.security.conftest import PKI

from streamherd.connecting import parse_address, sentinel_url
from streamherd.consumer import Settings


def settings(url: str, pki: PKI, **extra: object) -> Settings:
    env = {
        "STREAMHERD_REDIS_URL": url,
        "STREAMHERD_REDIS_CA_CERT": pki.ca_pem.decode(),
        "STREAMHERD_REDIS_CLIENT_CERT": pki.client_cert.decode(),
        "STREAMHERD_REDIS_CLIENT_KEY": pki.client_key.decode(),
        "STREAMHERD_STREAM": "orders",
        "STREAMHERD_GROUP": "g",
        "STREAMHERD_CONSUMER": "pod-1",
        **{k: str(v) for k, v in extra.items()},
    }
    return Settings.from_env(env)


async def test_mutual_tls_from_pem_text(
    redis_server_factory: Callable[..., RedisServer], pki: PKI
) -> None:
    server = redis_server_factory("7.0", tls=pki.mutual)
    client = settings(server.url, pki).connect()
    try:
        assert await client.ping()
        assert client.streamherd_client_keys.in_memory  # type: ignore[attr-defined]
    finally:
        await client.aclose()


async def test_a_certificate_for_another_name_is_refused_unless_insecure(
    redis_server_factory: Callable[..., RedisServer], pki: PKI, tmp_path: Path
) -> None:
    ca = trustme.CA()
    elsewhere = ca.issue_cert("redis.elsewhere.example")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    elsewhere.cert_chain_pems[0].write_to_path(str(tmp_path / "s.pem"))
    elsewhere.private_key_pem.write_to_path(str(tmp_path / "s.key"))
    server = redis_server_factory(
        "7.0", tls=TLSFiles(tmp_path / "ca.pem", tmp_path / "s.pem", tmp_path / "s.key")
    )
    env = {"STREAMHERD_REDIS_CA_CERT": ca.cert_pem.bytes().decode()}
    refused = Settings.from_env(
        {
            "STREAMHERD_REDIS_URL": server.url,
            "STREAMHERD_STREAM": "s",
            "STREAMHERD_GROUP": "g",
            **env,
        }
    ).connect()
    try:
        with pytest.raises(rx.ConnectionError, match=r"(?i)hostname|mismatch"):
            await refused.ping()
    finally:
        await refused.aclose()
    insecure = Settings.from_env(
        {
            "STREAMHERD_REDIS_URL": server.url,
            "STREAMHERD_STREAM": "s",
            "STREAMHERD_GROUP": "g",
            "STREAMHERD_REDIS_TLS_INSECURE": "true",
            **env,
        }
    ).connect()
    try:
        assert await insecure.ping()
    finally:
        await insecure.aclose()


async def test_a_sentinel_managed_primary_over_mutual_tls(pki: PKI) -> None:
    guarded = RedisSentinelSet(tls=pki.mutual).start()
    try:
        url = sentinel_url(
            [parse_address(a) for a in guarded.addresses], guarded.master, 0, tls=True
        )
        client = settings(url, pki, STREAMHERD_REDIS_MODE="Sentinel").connect()
        try:
            await client.set("k", "v")
            assert guarded.primary is not None
            assert guarded.primary.cli("get", "k").strip() == "v"
        finally:
            await client.aclose()
    finally:
        guarded.cleanup()
