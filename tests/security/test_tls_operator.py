"""insecureSkipVerify only when asked, and never silently: a Warning condition and Event."""

from __future__ import annotations

import base64
from collections.abc import Callable

from e2e.cluster.redis import RedisServer
from tests.harness import Harness
from tests.security.conftest import PKI


def tls_verified(h: Harness, name: str) -> dict[str, str] | None:
    for condition in h.status("RedisStream", name).get("conditions") or []:
        if condition["type"] == "TLSVerified":
            return condition  # type: ignore[no-any-return]
    return None


def test_insecure_skip_verify_is_a_warning_until_verification_is_back(
    harness: Harness, redis_server_factory: Callable[..., RedisServer], pki: PKI
) -> None:
    h = harness
    h.redis_server = redis_server_factory("7.0", tls=pki.server)
    h.create("Secret", "redis-ca", None, data={"ca.crt": base64.b64encode(pki.ca_pem).decode()})
    h.stream("orders", redis={"url": h.redis_server.url, "tls": {"insecureSkipVerify": True}})
    h.start()
    h.wait_ready("RedisStream", "orders")
    h.wait_status("RedisStream", "orders", lambda s: tls_verified(h, "orders") is not None)
    condition = tls_verified(h, "orders")
    assert condition is not None
    assert (condition["status"], condition["reason"]) == ("False", "InsecureSkipVerify")
    assert "caSecretRef" in condition["message"]
    h.wait_event("orders", "InsecureSkipVerify", "Warning")
    warnings = [e for e in h.events("orders") if e[1] == "InsecureSkipVerify"]
    assert len(warnings) == 1 and warnings[0][0] == "Warning"

    # Verification back on, with the CA: the condition goes, and no second Warning came.
    h.patch(
        "RedisStream",
        "orders",
        {
            "spec": {
                "redis": {
                    "tls": {
                        "insecureSkipVerify": None,
                        "caSecretRef": {"name": "redis-ca", "key": "ca.crt"},
                    }
                }
            }
        },
    )
    h.wait_status("RedisStream", "orders", lambda s: tls_verified(h, "orders") is None)
    h.wait_ready("RedisStream", "orders")
    h.wait_event("orders", "InsecureSkipVerify")
    assert len([e for e in h.events("orders") if e[1] == "InsecureSkipVerify"]) == 1


def test_without_the_ca_the_server_is_not_trusted(
    harness: Harness, redis_server_factory: Callable[..., RedisServer], pki: PKI
) -> None:
    h = harness
    h.redis_server = redis_server_factory("7.0", tls=pki.server)
    h.stream("orders", redis={"url": h.redis_server.url})  # rediss://, system CAs only
    h.start()
    ready = h.wait_ready("RedisStream", "orders", "False", "TLSFailed")
    assert "certificate" in ready["message"].lower()
    assert tls_verified(h, "orders") is None
