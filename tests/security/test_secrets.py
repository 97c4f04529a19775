"""Secrets never reach logs, Events, status or metrics. The main scenarios run at DEBUG with
distinctive secret values: a password Secret, a URL Secret carrying credentials, a wrong
password, a mutual-TLS client key; the operator with consumers, the janitor in both modes,
`streamherd dlq`. Then every operator and command output, every object the API server holds
(Events, statuses, Deployments, CronJobs: all but the Secrets themselves) and /metrics are
searched for them."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from e2e.cluster.processes import OperatorProcess, wait_until
from e2e.cluster.redis import RedisServer
from tests.harness import Harness
from tests.security.conftest import PKI

PASSWORD = "pw-secret-8c1f-do-not-leak"
URL_PASSWORD = "url-secret-77ab-do-not-leak"
WRONG_PASSWORD = "wrong-secret-41d9-do-not-leak"


def b64(value: bytes | str) -> str:
    return base64.b64encode(value.encode() if isinstance(value, str) else value).decode()


def key_fragments(pem: bytes) -> list[str]:
    """Lines of the private key's body: any one of them in an output is a leak."""
    return [line for line in pem.decode().splitlines() if line and not line.startswith("-----")]


def test_no_secret_value_reaches_logs_events_status_metrics_or_command_output(
    harness: Harness,
    kubelet: Any,
    run_as_operator: Callable[..., OperatorProcess],
    redis_server_factory: Callable[..., RedisServer],
    pki: PKI,
    tmp_path: Path,
) -> None:
    h = harness
    h.redis_server = server = redis_server_factory(
        "7.0",
        tls=pki.mutual,
        extra=[
            ("user", f"operator on >{PASSWORD} ~* &* +@all"),
            ("user", f"byurl on >{URL_PASSWORD} ~* &* +@all"),
        ],
    )
    secrets = {
        "redis-password": {"password": b64(PASSWORD)},
        "redis-wrong": {"password": b64(WRONG_PASSWORD)},
        "redis-url": {"url": b64(f"rediss://byurl:{URL_PASSWORD}@127.0.0.1:{server.port}/0")},
        "redis-ca": {"ca.crt": b64(pki.ca_pem)},
        "redis-client": {"tls.crt": b64(pki.client_cert), "tls.key": b64(pki.client_key)},
    }
    for name, data in secrets.items():
        h.create("Secret", name, None, data=data)
    tls = {
        "caSecretRef": {"name": "redis-ca", "key": "ca.crt"},
        "clientCertificateSecretRef": {"name": "redis-client"},
    }
    h.stream(
        "orders",
        redis={
            "url": server.url,
            "username": "operator",
            "passwordSecretRef": {"name": "redis-password", "key": "password"},
            "tls": tls,
        },
    )
    h.stream(
        "by-url",
        key="payments",
        redis={"urlSecretRef": {"name": "redis-url", "key": "url"}, "tls": tls},
    )
    h.stream(
        "wrong",
        key="refunds",
        redis={
            "url": server.url,
            "username": "operator",
            "passwordSecretRef": {"name": "redis-wrong", "key": "password"},
            "tls": tls,
        },
    )
    template = {
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "image": "x",
                    "command": ["python", "-c", "import time; time.sleep(600)"],
                }
            ]
        }
    }
    h.group(
        "fulfilment",
        startId="0",
        consumers={"template": template},
        recovery={"minIdle": "1s", "interval": "1s", "maxDeliveries": 1},
    )
    h.group(
        "billing",
        stream="by-url",
        startId="0",
        recovery={"mode": "CronJob", "minIdle": "1s", "maxDeliveries": 1},
    )
    h.start(env={"STREAMHERD_IMAGE": "streamherd:test"})
    h.wait_ready("ConsumerGroup", "fulfilment")
    h.wait_ready("ConsumerGroup", "billing")
    h.wait_ready("RedisStream", "wrong", "False", "AuthenticationFailed")

    import redis

    # The test's own client (mutual TLS too).
    r = redis.Redis(
        host="127.0.0.1",
        port=server.port,
        username="operator",
        password=PASSWORD,
        ssl=True,
        ssl_ca_data=pki.ca_pem.decode(),
        ssl_certfile=str(pki.mutual.cert),
        ssl_keyfile=str(pki.mutual.key),
        decode_responses=True,
    )
    for key, group in (("orders", "fulfilment"), ("payments", "billing")):
        for i in range(3):
            r.xadd(key, {"n": str(i)})
        r.xreadgroup(group, "gone-pod", {key: ">"}, count=3)
    h.wait_status("ConsumerGroup", "fulfilment", lambda s: (s.get("deadLettered") or 0) >= 3, 30)
    wait_until(
        lambda: all(
            row["time_since_delivered"] >= 1000
            for row in r.xpending_range("payments", "billing", "-", "+", 10)
        ),
        10,
    )
    job = run_as_operator(
        [
            "streamherd",
            "janitor",
            "--namespace",
            "default",
            "--group",
            "billing",
        ]
    )
    wait_until(lambda: not job.running, 60, message=lambda: job.logs())
    assert job.returncode == 0 and "dead-lettered 3" in job.logs(), job.logs()

    outputs = [h.logs(), job.logs()]
    client_cert, client_key = tmp_path / "client.crt", tmp_path / "client.key"
    client_cert.write_bytes(pki.client_cert)
    client_key.write_bytes(pki.client_key)
    for args in (["list"], ["show"], ["replay", "--group", "fulfilment", "--dry-run"]):
        through_kube = subprocess.run(
            [sys.executable, "-m", "streamherd", "dlq", *args, "-n", "default", "-s", "orders"],
            capture_output=True,
            text=True,
            timeout=60,
            env=job.env,
        )
        assert through_kube.returncode == 0, through_kube.stderr
        outputs += [through_kube.stdout, through_kube.stderr]
    wrong = subprocess.run(
        [sys.executable, "-m", "streamherd", "dlq", "list", "-n", "default", "-s", "wrong"],
        capture_output=True,
        text=True,
        timeout=60,
        env=job.env,
    )
    assert wrong.returncode == 1 and "authentication" in wrong.stderr.lower(), wrong.stderr
    outputs += [wrong.stdout, wrong.stderr]
    by_url = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamherd",
            "dlq",
            "list",
            "--url",
            server.url,
            "--username",
            "operator",
            "--key",
            "orders",
            "--ca-cert",
            str(pki.mutual.ca),
            "--client-cert",
            str(client_cert),
            "--client-key",
            str(client_key),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**job.env, "STREAMHERD_REDIS_PASSWORD": WRONG_PASSWORD},
    )
    assert by_url.returncode == 1 and "authentication" in by_url.stderr.lower(), by_url.stderr
    outputs += [by_url.stdout, by_url.stderr]
    outputs.append(h.metrics())
    kinds = [
        "events",
        "redisstreams.streamherd.io",
        "consumergroups.streamherd.io",
        "deployments.apps",
        "replicasets.apps",
        "pods",
        "cronjobs.batch",
    ]
    objects = [obj for kind in kinds for obj in h.api.list(kind, "default")]
    assert any(o.get("kind") == "Event" or "involvedObject" in o for o in objects)
    outputs.append(json.dumps(objects))

    haystack = "\n".join(outputs)
    assert "DEBUG" in h.logs(), "the operator ran at DEBUG"
    needles = {
        "the password": PASSWORD,
        "the URL's password": URL_PASSWORD,
        "the wrong password": WRONG_PASSWORD,
        **{
            f"a line of the client key ({i})": line
            for i, line in enumerate(key_fragments(pki.client_key))
        },
    }
    for what, needle in needles.items():
        for encoded in (needle, b64(needle)):
            assert encoded not in haystack, f"{what} leaked"
