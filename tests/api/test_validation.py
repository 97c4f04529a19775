"""Good resources are accepted and bad ones rejected with the message a user would see, both
by the API server (CRD schema + CEL, emulated faithfully) and by the operator (pydantic)."""

import copy
import secrets
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e.cluster.client import KubeHTTP, Reply
from e2e.cluster.crd_validation import Invalid, admit
from hypothesis import given
from hypothesis import strategies as st

from streamherd.api import KINDS, SpecError, parse
from streamherd.keys import literal_prefix

EXAMPLES = Path(__file__).parents[2] / "manifests" / "examples"
BY_KIND = {k.kind: k for k in KINDS}


def example_documents() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for index, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if doc:
                out.append((f"{path.name}#{index}:{doc['metadata']['name']}", doc))
    return out


def api_server_admit(obj: dict[str, Any], old: dict[str, Any] | None = None) -> dict[str, Any]:
    crd = BY_KIND[obj["kind"]].crd()
    return admit(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"], obj, old)


def test_every_kind_has_an_example() -> None:
    assert {doc["kind"] for _, doc in example_documents()} == set(BY_KIND)


def test_the_conversation_example_has_three_groups_on_one_stream_family() -> None:
    docs = yaml.safe_load_all((EXAMPLES / "conversations.yaml").read_text())
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    (stream,) = by_kind["RedisStream"]
    assert stream["spec"]["keyPattern"] == "conv:*"
    groups = by_kind["ConsumerGroup"]
    assert sorted(g["metadata"]["name"] for g in groups) == ["brain", "compliance", "crm"]
    assert {g["spec"]["streamRef"]["name"] for g in groups} == {stream["metadata"]["name"]}


@pytest.mark.parametrize(
    ("name", "doc"), example_documents(), ids=[n for n, _ in example_documents()]
)
def test_example_is_accepted_by_the_api_server_and_the_operator(
    name: str, doc: dict[str, Any]
) -> None:
    stored = api_server_admit(doc)
    assert lost_fields(doc["spec"], stored["spec"]) == [], f"{name}: pruned, so not in the schema"
    kind = BY_KIND[doc["kind"]]
    assert parse(kind.spec, stored["spec"]).to_json() == stored["spec"], (
        "API server and model defaults differ"
    )


def lost_fields(written: Any, stored: Any, path: str = "spec") -> list[str]:
    """Fields the user wrote that did not survive (pruned or changed) on the way in."""
    if isinstance(written, dict):
        if not isinstance(stored, dict):
            return [path]
        return [
            lost
            for key, value in written.items()
            for lost in (
                [f"{path}.{key}"]
                if key not in stored
                else lost_fields(value, stored[key], f"{path}.{key}")
            )
        ]
    return [] if written == stored else [path]


def resource(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "streamherd.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": "x"},
        "spec": spec,
    }


STREAM = {"redis": {"url": "redis://redis:6379"}, "key": "orders"}
SENTINEL = {"masterName": "mymaster", "addresses": ["redis-sentinel.data:26379"]}
SENTINEL_STREAM = {"redis": {"mode": "Sentinel", "sentinel": SENTINEL}, "key": "orders"}
GROUP = {"streamRef": {"name": "orders"}}

# (id, kind, spec, what the API server says, what the operator says)
BAD = [
    (
        "key-and-pattern",
        "RedisStream",
        {**STREAM, "keyPattern": "conv:*"},
        "spec: Invalid value: set exactly one of key or keyPattern",
        "spec: set exactly one of key or keyPattern",
    ),
    (
        "neither-key-nor-pattern",
        "RedisStream",
        {"redis": STREAM["redis"]},
        "set exactly one of key or keyPattern",
        "set exactly one of key or keyPattern",
    ),
    (
        "url-and-url-secret",
        "RedisStream",
        {**STREAM, "redis": {"url": "redis://r:6379", "urlSecretRef": {"name": "s", "key": "url"}}},
        "spec.redis: Invalid value: set exactly one of url or urlSecretRef",
        "spec.redis: set exactly one of url or urlSecretRef",
    ),
    (
        "password-in-url",
        "RedisStream",
        {**STREAM, "redis": {"url": "redis://user:hunter2@r:6379"}},
        "url must not contain a password: use passwordSecretRef, or urlSecretRef",
        "url must not contain a password",
    ),
    (
        "http-url",
        "RedisStream",
        {**STREAM, "redis": {"url": "http://r:6379"}},
        'spec.redis.url: Invalid value: "http://r:6379": spec.redis.url in body should match',
        "spec.redis.url: String should match pattern",
    ),
    (
        "unknown-mode",
        "RedisStream",
        {**STREAM, "redis": {"url": "redis://r", "mode": "Replicated"}},
        'spec.redis.mode: Unsupported value: "Replicated": supported values: "Standalone", '
        '"Cluster", "Sentinel"',
        "spec.redis.mode: Input should be 'Standalone', 'Cluster' or 'Sentinel'",
    ),
    (
        "sentinel-mode-without-sentinels",
        "RedisStream",
        {**STREAM, "redis": {"mode": "Sentinel"}},
        "spec.redis: Invalid value: set sentinel exactly when mode is Sentinel",
        "spec.redis: set sentinel exactly when mode is Sentinel",
    ),
    (
        "sentinels-without-sentinel-mode",
        "RedisStream",
        {**STREAM, "redis": {"url": "redis://r", "sentinel": SENTINEL}},
        "spec.redis: Invalid value: set sentinel exactly when mode is Sentinel",
        "spec.redis: set sentinel exactly when mode is Sentinel",
    ),
    (
        "sentinel-and-url",
        "RedisStream",
        {**STREAM, "redis": {"url": "redis://r", "mode": "Sentinel", "sentinel": SENTINEL}},
        "set exactly one of url or urlSecretRef (with mode Sentinel neither",
        "set exactly one of url or urlSecretRef (with mode Sentinel neither",
    ),
    (
        "sentinel-and-url-secret",
        "RedisStream",
        {
            **STREAM,
            "redis": {
                "urlSecretRef": {"name": "s", "key": "url"},
                "mode": "Sentinel",
                "sentinel": SENTINEL,
            },
        },
        "with mode Sentinel neither: the sentinels say where the primary is",
        "with mode Sentinel neither: the sentinels say where the primary is",
    ),
    (
        "sentinel-address-without-port",
        "RedisStream",
        {
            **STREAM,
            "redis": {"mode": "Sentinel", "sentinel": {**SENTINEL, "addresses": ["s-0.sentinel"]}},
        },
        'spec.redis.sentinel.addresses[0]: Invalid value: "s-0.sentinel"',
        "spec.redis.sentinel.addresses.0: String should match pattern",
    ),
    (
        "sentinel-without-addresses",
        "RedisStream",
        {**STREAM, "redis": {"mode": "Sentinel", "sentinel": {**SENTINEL, "addresses": []}}},
        "spec.redis.sentinel.addresses: Invalid value: 0: spec.redis.sentinel.addresses in body "
        "should have at least 1 items",
        "spec.redis.sentinel.addresses: List should have at least 1 item",
    ),
    (
        "sentinel-without-master-name",
        "RedisStream",
        {**STREAM, "redis": {"mode": "Sentinel", "sentinel": {"addresses": ["s:26379"]}}},
        "spec.redis.sentinel.masterName: Required value",
        "spec.redis.sentinel.masterName: Field required",
    ),
    (
        "pattern-star-alone",
        "RedisStream",
        {"redis": STREAM["redis"], "keyPattern": "*"},
        "keyPattern must start with a literal prefix, such as conv:*",
        "keyPattern must start with a literal prefix, such as conv:*",
    ),
    (
        "pattern-without-prefix",
        "RedisStream",
        {"redis": STREAM["redis"], "keyPattern": "*:dlq"},
        "keyPattern must start with a literal prefix",
        "keyPattern must start with a literal prefix",
    ),
    (
        "pattern-starting-with-a-class",
        "RedisStream",
        {"redis": STREAM["redis"], "keyPattern": "[a-z]*"},
        "keyPattern must start with a literal prefix",
        "keyPattern must start with a literal prefix",
    ),
    (
        "pattern-starting-with-any-char",
        "RedisStream",
        {"redis": STREAM["redis"], "keyPattern": "?onv:*"},
        "keyPattern must start with a literal prefix",
        "keyPattern must start with a literal prefix",
    ),
    (
        "min-above-max",
        "ConsumerGroup",
        {**GROUP, "autoscaling": {"minReplicas": 5, "maxReplicas": 2}},
        "spec.autoscaling: Invalid value: minReplicas must not exceed maxReplicas",
        "spec.autoscaling: minReplicas must not exceed maxReplicas",
    ),
    (
        "negative-duration",
        "ConsumerGroup",
        {**GROUP, "autoscaling": {"pollInterval": "-5s"}},
        "spec.autoscaling.pollInterval in body should match",
        "spec.autoscaling.pollInterval: '-5s' is not a duration",
    ),
    (
        "too-fast-poll",
        "ConsumerGroup",
        {**GROUP, "autoscaling": {"pollInterval": "10ms"}},
        'spec.autoscaling.pollInterval: Invalid value: "10ms": must be at least 100ms',
        "spec.autoscaling.pollInterval: must be at least 100ms",
    ),
    (
        "unknown-metric",
        "ConsumerGroup",
        {**GROUP, "autoscaling": {"metric": "Cpu"}},
        'spec.autoscaling.metric: Unsupported value: "Cpu": supported values: "Backlog", "Pending", "Lag"',
        "spec.autoscaling.metric: Input should be 'Backlog', 'Pending' or 'Lag'",
    ),
    (
        "malformed-start-id",
        "ConsumerGroup",
        {**GROUP, "startId": "1-2-3"},
        "spec.startId in body should match",
        "spec.startId: String should match pattern",
    ),
    (
        "word-start-id",
        "ConsumerGroup",
        {**GROUP, "startId": "latest"},
        "spec.startId in body should match",
        "spec.startId: String should match pattern",
    ),
    (
        "deployment-and-template",
        "ConsumerGroup",
        {
            **GROUP,
            "consumers": {
                "deploymentRef": {"name": "d"},
                "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}},
            },
        },
        "spec.consumers: Invalid value: set exactly one of deploymentRef or template",
        "spec.consumers: set exactly one of deploymentRef or template",
    ),
    (
        "template-without-containers",
        "ConsumerGroup",
        {**GROUP, "consumers": {"template": {"spec": {}}}},
        "spec.consumers.template.spec.containers: Required value",
        None,
    ),
    (
        "zero-max-deliveries",
        "ConsumerGroup",
        {**GROUP, "recovery": {"maxDeliveries": 0}},
        "spec.recovery.maxDeliveries in body should be greater than or equal to 1",
        "spec.recovery.maxDeliveries: Input should be greater than or equal to 1",
    ),
    (
        "bad-schedule",
        "ConsumerGroup",
        {**GROUP, "recovery": {"mode": "CronJob", "schedule": "hourly"}},
        "spec.recovery.schedule in body should match",
        "spec.recovery.schedule: String should match pattern",
    ),
    (
        "bad-secret-name",
        "RedisStream",
        {
            **STREAM,
            "redis": {"url": "redis://r", "passwordSecretRef": {"name": "Bad_Name", "key": "p"}},
        },
        "spec.redis.passwordSecretRef.name in body should match",
        "spec.redis.passwordSecretRef.name: String should match pattern",
    ),
    (
        "empty-retention",
        "RetentionPolicy",
        {"approximate": True},
        "set at least one of maxLength, maxAge, hardMaxLength or deleteIdleStreamsAfter",
        "set at least one of maxLength, maxAge, hardMaxLength or deleteIdleStreamsAfter",
    ),
    (
        "hard-cap-below-max",
        "RetentionPolicy",
        {"maxLength": 1000, "hardMaxLength": 10},
        "hardMaxLength must be at least maxLength",
        "hardMaxLength must be at least maxLength",
    ),
    (
        "negative-max-length",
        "RetentionPolicy",
        {"maxLength": -1},
        "spec.maxLength in body should be greater than or equal to 0",
        "spec.maxLength: Input should be greater than or equal to 0",
    ),
]


@pytest.mark.parametrize(
    ("kind", "spec", "server_says", "operator_says"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_bad_resource_is_rejected_with_a_clear_message(
    kind: str, spec: dict[str, Any], server_says: str, operator_says: str | None
) -> None:
    with pytest.raises(Invalid) as rejected:
        api_server_admit(resource(kind, spec))
    assert server_says in str(rejected.value)
    if operator_says is None:  # the pod template is left to the API server's Deployment checks
        return
    with pytest.raises(SpecError) as invalid:
        parse(BY_KIND[kind].spec, spec)
    assert operator_says in str(invalid.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"groupName": "other"}, "groupName is immutable"),
        ({"streamRef": {"name": "elsewhere"}}, "streamRef is immutable"),
    ],
)
def test_identity_of_a_group_cannot_change(change: dict[str, Any], message: str) -> None:
    old = api_server_admit(resource("ConsumerGroup", {**GROUP, "groupName": "g"}))
    new = copy.deepcopy(old)
    new["spec"].update(change)
    with pytest.raises(Invalid, match=message):
        api_server_admit(new, old)
    # other changes on update are fine, and the rules do not fire on create
    tweaked = copy.deepcopy(old)
    tweaked["spec"]["startId"] = "0"
    api_server_admit(tweaked, old)
    api_server_admit(new)


@pytest.mark.parametrize(
    ("spec", "change", "message"),
    [
        (STREAM, {"key": "elsewhere"}, "key is immutable"),
        (STREAM, {"key": None, "keyPattern": "orders:*"}, "key is immutable"),
        (
            {"redis": STREAM["redis"], "keyPattern": "conv:*"},
            {"keyPattern": "call:*"},
            "keyPattern is immutable",
        ),
        (STREAM, {"redis": {"url": "redis://other:6379"}}, "redis.url is immutable"),
        (
            STREAM,
            {"redis": {"urlSecretRef": {"name": "r", "key": "url"}}},
            "redis.url is immutable",
        ),
        (
            {**STREAM, "redis": {"urlSecretRef": {"name": "r", "key": "url"}}},
            {"redis": {"urlSecretRef": {"name": "other", "key": "url"}}},
            "redis.urlSecretRef is immutable",
        ),
        (
            STREAM,
            {"redis": {"url": "redis://redis:6379", "mode": "Cluster"}},
            "redis.mode is immutable",
        ),
        (
            SENTINEL_STREAM,
            {"redis": {"mode": "Sentinel", "sentinel": {**SENTINEL, "masterName": "other"}}},
            "redis.sentinel.masterName and database are immutable",
        ),
        (
            SENTINEL_STREAM,
            {"redis": {"mode": "Sentinel", "sentinel": {**SENTINEL, "database": 2}}},
            "redis.sentinel.masterName and database are immutable",
        ),
    ],
)
def test_identity_of_a_stream_cannot_change(
    spec: dict[str, Any], change: dict[str, Any], message: str
) -> None:
    """The groups live on these keys of this endpoint: moving the resource would orphan them
    (and make deletionPolicy Delete act on keys it never managed)."""
    old = api_server_admit(resource("RedisStream", spec))
    new = copy.deepcopy(old)
    for field, value in change.items():
        if value is None:
            new["spec"].pop(field)
        else:
            new["spec"][field] = value
    with pytest.raises(Invalid, match=message):
        api_server_admit(new, old)
    api_server_admit(new)  # a new resource may say anything valid


def test_the_sentinels_of_a_stream_may_change() -> None:
    old = api_server_admit(resource("RedisStream", SENTINEL_STREAM))
    new = copy.deepcopy(old)
    new["spec"]["redis"]["sentinel"]["addresses"] = ["s-0.new:26379", "s-1.new:26379"]
    new["spec"]["redis"]["sentinel"]["passwordSecretRef"] = {"name": "s", "key": "p"}
    api_server_admit(new, old)


def test_credentials_and_tls_of_a_stream_may_change() -> None:
    old = api_server_admit(resource("RedisStream", STREAM))
    new = copy.deepcopy(old)
    new["spec"]["redis"].update(
        username="app", passwordSecretRef={"name": "p", "key": "password"}, tls={"enabled": True}
    )
    new["spec"]["retentionPolicyRef"] = {"name": "short"}
    new["spec"]["deletionPolicy"] = "Delete"
    api_server_admit(new, old)


@pytest.mark.parametrize(
    "pattern", ["conv:*", "c*", "\\*literal*", "{conv}:*", "conv:[0-9]*", "a?", "x", "\\"]
)
def test_a_pattern_with_a_literal_prefix_is_accepted_by_both(pattern: str) -> None:
    spec = {"redis": STREAM["redis"], "keyPattern": pattern}
    assert literal_prefix(pattern) != ""
    api_server_admit(resource("RedisStream", spec))
    parse(BY_KIND["RedisStream"].spec, spec)


def test_unknown_fields_are_pruned_by_the_server_and_named_by_the_operator() -> None:
    stored = api_server_admit(resource("RedisStream", {**STREAM, "maxLen": 5}))
    assert "maxLen" not in stored["spec"]
    with pytest.raises(SpecError, match=r"spec\.maxLen: unknown field"):
        parse(BY_KIND["RedisStream"].spec, {**STREAM, "maxLen": 5})


def test_every_cel_rule_has_a_python_twin_that_agrees() -> None:
    """Each model-level rule rejects in both worlds on the bad table above; here we check no
    rule lacks a Python check unless it is a transition rule (needs oldSelf)."""
    from streamherd.api.base import ApiModel

    def models(cls: type) -> list[type]:
        return [cls, *(m for sub in cls.__subclasses__() for m in models(sub))]

    for model in models(ApiModel):
        for rule in model.rules:
            assert rule.check is not None or "oldSelf" in rule.cel, (model, rule)


@given(st.text(alphabet="*?[]\\^-ab:{}", min_size=1, max_size=8))
def test_the_prefix_rule_rejects_exactly_the_patterns_without_a_literal_prefix(
    pattern: str,
) -> None:
    """Both twins of the rule agree with keys.literal_prefix, which agrees with Redis's glob."""
    spec = {"redis": STREAM["redis"], "keyPattern": pattern}
    has_prefix = literal_prefix(pattern) != ""
    try:
        api_server_admit(resource("RedisStream", spec))
        server_accepts = True
    except Invalid:
        server_accepts = False
    try:
        parse(BY_KIND["RedisStream"].spec, spec)
        operator_accepts = True
    except SpecError:
        operator_accepts = False
    assert server_accepts == operator_accepts == has_prefix


# ---------------------------------------------------------------- the real kube-apiserver agrees


def plural(kind: str) -> str:
    return f"/apis/streamherd.io/v1alpha1/namespaces/default/{BY_KIND[kind].plural}"


def both_servers(kube_api: Any, control_plane: Any) -> list[tuple[str, KubeHTTP]]:
    return [("emulator", KubeHTTP(kube_api.url)), ("kube-apiserver", control_plane.client())]


def rejection(reply: Reply) -> tuple[int, str | None, str | None, list[Any]]:
    causes = sorted(
        (c.get("field"), c.get("reason"), c.get("message"))
        for c in ((reply.body or {}).get("details") or {}).get("causes") or ()
    )
    return reply.status, reply.reason, reply.message, causes


@pytest.mark.parametrize(("kind", "spec"), [b[1:3] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_resource_is_rejected_by_kube_apiserver_as_by_the_emulator(
    kind: str, spec: dict[str, Any], kube_api: Any, control_plane: Any
) -> None:
    """Every bad resource of the table above, through both API servers' HTTP front doors:
    the same status, reason, message and causes (the real one is the reference)."""
    replies = {
        name: rejection(client.post(plural(kind), resource(kind, spec)))
        for name, client in both_servers(kube_api, control_plane)
    }
    assert replies["kube-apiserver"][0] == 422, replies["kube-apiserver"]
    assert replies["emulator"] == replies["kube-apiserver"]


@pytest.mark.parametrize(
    ("name", "doc"), example_documents(), ids=[n for n, _ in example_documents()]
)
def test_examples_are_stored_by_kube_apiserver_as_by_the_emulator(
    name: str, doc: dict[str, Any], kube_api: Any, control_plane: Any
) -> None:
    """Defaulting and pruning agree: the stored specs are equal."""
    doc = {**doc, "metadata": {"name": f"{doc['metadata']['name']}-{secrets.token_hex(3)}"}}
    stored = {}
    for server, client in both_servers(kube_api, control_plane):
        reply = client.post(plural(doc["kind"]), doc)
        assert reply.status == 201, (server, reply.body)
        stored[server] = reply.body["spec"]
        client.delete(f"{plural(doc['kind'])}/{doc['metadata']['name']}")
    assert stored["emulator"] == stored["kube-apiserver"]


def test_identity_changes_are_refused_by_kube_apiserver_as_by_the_emulator(
    kube_api: Any, control_plane: Any
) -> None:
    name = f"identity-{secrets.token_hex(3)}"
    replies = {}
    for server, client in both_servers(kube_api, control_plane):
        created = client.post(
            plural("ConsumerGroup"),
            {**resource("ConsumerGroup", {**GROUP, "groupName": "g"}), "metadata": {"name": name}},
        )
        assert created.status == 201, (server, created.body)
        path = f"{plural('ConsumerGroup')}/{name}"
        replies[server] = [
            rejection(client.patch(path, {"spec": change}))
            for change in ({"groupName": "other"}, {"streamRef": {"name": "elsewhere"}})
        ]
        client.delete(path)
    assert [r[0] for r in replies["kube-apiserver"]] == [422, 422]
    assert replies["emulator"] == replies["kube-apiserver"]
