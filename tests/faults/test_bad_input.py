"""Malformed and hostile specs that reach the operator anyway: an old CRD without a schema
(or a cluster that never installed the new one) lets anything through. Hypothesis writes
them straight to the emulator, one operator process serving every example: each resource
gets a Ready condition with a reason (Ready=False with a CamelCase reason and a message when
it cannot work), the operator never exits, the resources beside them keep being served, and
every one of them can still be deleted."""

from __future__ import annotations

import copy
import itertools
import re
from typing import Any

from e2e.cluster.apiserver import ApiError
from e2e.cluster.processes import wait_until
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from tests.harness import KINDS, Harness

MEGABYTE = "x" * (1 << 20)
HOSTILE_STRINGS = st.sampled_from(
    [
        "{orders}",
        "}{",
        "orders\nkey",
        "line\r\nbreak",
        "*",
        "**",
        "?",
        "[",
        "[a-",
        "\\",
        "",
        " ",
        "\x00",
        "{",
        "orders:dlq",
        "$",
        ">",
        "0-0",
        "-1",
        "99999999999999999999-0",
        "1s\n",
        "-5s",
        "redis://127.0.0.1:1/99",
        "redis://user:pw@[::1",
        "rediss://",
        "ünïcödé☃",
        MEGABYTE,
        "{" + MEGABYTE + "}",
    ]
) | st.text(max_size=40)
ANY_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | HOSTILE_STRINGS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(HOSTILE_STRINGS, inner, max_size=3),
    max_leaves=6,
)

STREAM_PATHS = (
    "key",
    "keyPattern",
    "redis",
    "redis.url",
    "redis.mode",
    "redis.tls",
    "redis.sentinel",
    "redis.passwordSecretRef",
    "createIfMissing",
    "deletionPolicy",
    "retentionPolicyRef",
    "unknownField",
)
GROUP_PATHS = (
    "streamRef",
    "streamRef.name",
    "groupName",
    "startId",
    "consumers",
    "consumers.deploymentRef",
    "autoscaling",
    "autoscaling.pollInterval",
    "autoscaling.maxReplicas",
    "autoscaling.targetPerReplica",
    "recovery",
    "recovery.minIdle",
    "recovery.maxDeliveries",
    "recovery.deadLetter",
    "recovery.deadLetter.stream",
    "health",
    "unknownField",
)
CAMEL_CASE = re.compile(r"^[A-Z][A-Za-z0-9]*$")


def with_value(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """``base`` with ``path`` (dotted) set to ``value``, making the parents it needs."""
    spec = copy.deepcopy(base)
    *parents, leaf = path.split(".")
    node = spec
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[leaf] = value
    return spec


def hostile_specs(stream_base: dict[str, Any], group_base: dict[str, Any]) -> Any:
    """(kind, spec): a working spec with one to three fields made hostile, or no object
    at all where the spec should be."""

    def mutated(kind: str, base: dict[str, Any], paths: tuple[str, ...]) -> Any:
        changes = st.lists(st.tuples(st.sampled_from(paths), ANY_VALUE), min_size=1, max_size=3)

        def apply(pairs: list[tuple[str, Any]]) -> tuple[str, Any]:
            spec = base
            for path, value in pairs:
                spec = with_value(spec, path, value)
            return kind, spec

        return changes.map(apply)

    not_an_object = st.tuples(
        st.sampled_from(["RedisStream", "ConsumerGroup"]),
        st.none() | st.integers() | HOSTILE_STRINGS | st.lists(st.integers(), max_size=2),
    )
    return (
        mutated("RedisStream", stream_base, STREAM_PATHS)
        | mutated("ConsumerGroup", group_base, GROUP_PATHS)
        | not_an_object
    )


def schemaless(h: Harness) -> None:
    """Our CRDs as an old one might be: no schema beyond "an object, keep everything"."""
    for kind in ("RedisStream", "ConsumerGroup"):
        crd = h.api.get("customresourcedefinitions.apiextensions.k8s.io", None, KINDS[kind])
        versions = crd["spec"]["versions"]
        for version in versions:
            version["schema"] = {
                "openAPIV3Schema": {
                    "type": "object",
                    "x-kubernetes-preserve-unknown-fields": True,
                }
            }
            version.pop("selectableFields", None)
        h.api.patch(
            "customresourcedefinitions.apiextensions.k8s.io",
            None,
            KINDS[kind],
            {"spec": {"versions": versions}},
        )


def test_hostile_specs_each_get_a_reason_and_stall_nothing(harness: Harness) -> None:
    h = harness
    schemaless(h)
    h.stream("orders")
    h.group("good", startId="0")
    h.start()
    h.wait_ready("ConsumerGroup", "good")
    stream_base = {"redis": {"url": h.redis_server.url}, "key": "other"}
    group_base = {"streamRef": {"name": "orders"}, "groupName": "g"}
    names = (f"bad-{n}" for n in itertools.count())
    created: list[tuple[str, str]] = []

    @settings(
        max_examples=15,
        derandomize=True,  # the same examples on every run: CI is green every time or never
        deadline=None,
        database=None,
        phases=[Phase.generate],  # no shrinking: each example costs an operator round trip
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,  # one operator for every example, on purpose
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )
    @given(hostile_specs(stream_base, group_base))
    def each(example: tuple[str, Any]) -> None:
        kind, spec = example
        name = next(names)
        try:
            h.api.create(
                {
                    "apiVersion": "streamherd.io/v1alpha1",
                    "kind": kind,
                    "metadata": {"name": name, "namespace": h.namespace},
                    "spec": spec,
                }
            )
        except ApiError as exc:  # refused even without a schema: never reaches the operator
            refused = exc
        else:
            refused = None
        if refused is not None:
            assert 400 <= refused.code < 500, refused
            return
        created.append((kind, name))
        ready = wait_until(
            lambda: h.ready(kind, name),
            30,
            interval=0.05,
            message=lambda: f"{kind} {name} got no Ready condition\n{h.logs()[-3000:]}",
        )
        assert CAMEL_CASE.match(ready["reason"]), ready
        if ready["status"] != "True":
            assert ready["status"] == "False" and ready["message"], ready
            assert len(ready["message"]) <= 4096
        assert h.operator is not None and h.operator.running, h.logs()[-3000:]

    each()
    assert created, "hypothesis ran no example"
    # The resource beside them was served all along: it sees an entry added now.
    h.r.xadd("orders", {"msg": "after"})
    h.wait_status("ConsumerGroup", "good", lambda s: (s.get("lag") or 0) >= 1, timeout=30)
    assert h.ready("ConsumerGroup", "good")["status"] == "True"
    # And every hostile one can be deleted (its finalizer does not hang on its spec).
    for kind, name in created:
        h.delete(kind, name)
    for kind, name in created:
        h.wait_gone(kind, name, timeout=30)
    assert h.healthy()
