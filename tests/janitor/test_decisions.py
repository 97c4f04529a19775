"""The janitor's pure decisions: dead-letter keys and slots, dead and removable consumers,
claim targets, round-robin, the CronJob."""

from __future__ import annotations

import copy
from typing import Any

from e2e.cluster.apiserver import SAFE_CHARS
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from streamherd.decisions.recovery import (
    ConsumerMemo,
    Pods,
    consumer_memo,
    dead_letter_target,
    default_dead_letter_key,
    needs_look,
    next_offset,
    plan_consumers,
)
from streamherd.keys import hash_slot, hash_tag
from streamherd.kube.manifests import (
    CRON_JOB_NAME_MAX,
    cron_job_name,
    cron_job_patch,
    desired_cron_job,
    janitor_command,
    owned_by,
)
from streamherd.observations import ConsumerState

keys = st.text(min_size=1, max_size=40)
safe = st.text(alphabet=SAFE_CHARS, min_size=5, max_size=5)
HOUR_MS = 3_600_000


# ------------------------------------------------------------------ dead-letter keys


def test_hash_tag_follows_the_cluster_spec() -> None:
    assert hash_tag("{orders}:dlq") == "orders"
    assert hash_tag("a{b}c{d}") == "b", "the first pair only"
    assert hash_tag("{}orders") is None, "an empty tag hashes the whole key"
    assert hash_tag("x{y") is None and hash_tag("x}y{") is None
    assert hash_tag("{{x}}") == "{x"


@given(keys)
def test_hash_tag_is_what_redis_hashes(key: str) -> None:
    tag = hash_tag(key)
    hashed = key if tag is None else tag
    assert key_slot(key.encode()) == key_slot(hashed.encode())


@given(st.one_of(keys, st.text(alphabet="{}ab:", max_size=12)))
def test_the_pure_slot_is_redis_pys(key: str) -> None:
    """keys.hash_slot (no Redis client in the pure layers) agrees with redis-py's key_slot,
    which the cluster tests check against a real cluster."""
    assert hash_slot(key) == key_slot(key.encode())


def test_default_dead_letter_keys() -> None:
    assert default_dead_letter_key("orders", cluster=False) == "orders:dlq"
    assert default_dead_letter_key("orders", cluster=True) == "{orders}:dlq"
    assert default_dead_letter_key("{tenant-1}.orders", cluster=True) == "{tenant-1}.orders:dlq"
    assert default_dead_letter_key("a}b", cluster=True) is None


@given(keys)
def test_the_default_dead_letter_key_shares_the_streams_slot_or_there_is_none(key: str) -> None:
    target = dead_letter_target(key, None, cluster=True)
    if target.key is not None:
        assert key_slot(target.key.encode()) == key_slot(key.encode())
        assert target.problem is None
    else:
        # Only a key without a hash tag that contains "}" has no same-slot default.
        assert hash_tag(key) is None and "}" in key
        assert target.problem is not None and "deadLetter.stream" in target.problem
    assert dead_letter_target(key, None, cluster=False).key == key + ":dlq"


@given(keys, keys)
def test_a_configured_dead_letter_key_is_refused_only_across_slots(
    stream: str, configured: str
) -> None:
    target = dead_letter_target(stream, configured, cluster=True)
    same = key_slot(stream.encode()) == key_slot(configured.encode())
    assert (target.key == configured) is same
    assert (target.problem is None) is same
    assert dead_letter_target(stream, configured, cluster=False).key == configured


def test_the_refusal_says_which_slots_and_what_to_do() -> None:
    problem = dead_letter_target("orders", "orders-dlq", cluster=True).problem
    assert problem is not None
    assert f"slot {key_slot(b'orders-dlq')}" in problem and f"slot {key_slot(b'orders')}" in problem
    assert "'{orders}:dlq'" in problem and "stay pending" in problem


# ------------------------------------------------------------------ consumers


def test_a_plan_with_pods() -> None:
    pods = Pods(
        "web",
        ours=frozenset({"web-h-aaaaa", "web-h-bbbbb"}),
        live=frozenset({"web-h-aaaaa"}),  # bbbbb is terminating: may still ack
        gone=frozenset({"web-h-zzzzz", "web-h-yyyyy"}),
    )
    plan = plan_consumers(
        [
            ConsumerState("web-h-aaaaa", 3, 10),  # its pod runs
            ConsumerState("web-h-bbbbb", 2, 10),  # terminating: may still ack
            ConsumerState("web-h-zzzzz", 4, 10),  # its pod is gone
            ConsumerState("web-h-yyyyy", 0, 10),  # gone, nothing pending
            ConsumerState("web-h-xxxxx", 5, 10),  # named like ours, never seen as ours
            ConsumerState("batch-job", 1, 10),  # not ours, pending
            ConsumerState("old-job", 0, HOUR_MS),  # not ours, idle an hour, nothing pending
            ConsumerState("new-job", 0, 10),  # not ours, just read
        ],
        pods,
        min_idle_ms=60_000,
        remove_idle_after_ms=HOUR_MS,
    )
    assert plan.dead == ("web-h-zzzzz",)
    assert plan.targets == ("web-h-aaaaa",)
    assert set(plan.removals) == {
        ("web-h-zzzzz", 0),  # once its entries are recovered
        ("web-h-yyyyy", 0),
        ("old-job", HOUR_MS),
    }, "asked of the script only where it may succeed: pods gone, idle enough and empty"


def test_a_plan_without_a_deployment_declares_nobody_dead() -> None:
    plan = plan_consumers(
        [
            ConsumerState("b", 0, 5),
            ConsumerState("a", 2, 10),
            ConsumerState("old", 1, 90_000),
            ConsumerState("gone-quiet", 0, HOUR_MS + 1),
        ],
        None,
        min_idle_ms=60_000,
        remove_idle_after_ms=HOUR_MS,
    )
    assert plan.dead == ()
    assert plan.targets == ("a", "b"), "those that read within min idle, in a stable order"
    assert plan.removals == (("gone-quiet", HOUR_MS),), "idle an hour with nothing pending"


names = st.sampled_from(
    ["web-h-aaaaa", "web-h-bbbbb", "web-h-ccccc", "web-g-ddddd", "other", "web-x"]
)


@given(
    st.lists(
        st.builds(ConsumerState, names, st.integers(0, 5), st.integers(0, 2 * HOUR_MS)),
        unique_by=lambda c: c.name,
    ),
    st.sets(names),
    st.sets(names),
    st.sets(names),
)
def test_only_consumers_whose_pod_was_ours_and_is_gone_are_dead(
    consumers: list[ConsumerState], existing: set[str], terminating: set[str], gone: set[str]
) -> None:
    ours = existing | terminating
    pods = Pods("web", frozenset(ours), frozenset(existing - terminating), frozenset(gone - ours))
    plan = plan_consumers(consumers, pods, min_idle_ms=1000, remove_idle_after_ms=HOUR_MS)
    removed = {name for name, _ in plan.removals}
    assert not (set(plan.dead) | removed) & pods.ours, "a pod of ours is never dead nor removed"
    assert set(plan.targets) == pods.live and list(plan.targets) == sorted(plan.targets)
    for c in consumers:
        assert (c.name in plan.dead) is (c.name in pods.gone and c.pending > 0)
        if c.name in pods.gone:
            assert (c.name, 0) in plan.removals
        elif c.name not in ours:
            idle_enough = c.pending == 0 and c.idle_ms >= HOUR_MS
            assert ((c.name, HOUR_MS) in plan.removals) is idle_enough


@given(st.integers(0, 100), st.integers(0, 1000), st.integers(0, 7))
def test_round_robin_continues_where_it_stopped(offset: int, claimed: int, targets: int) -> None:
    after = next_offset(offset, claimed, targets)
    if targets == 0:
        assert after == 0
    else:
        assert 0 <= after < targets
        assert after == (offset + claimed) % targets
        # Two steps land where one step over both would.
        assert next_offset(next_offset(offset, claimed, targets), 5, targets) == next_offset(
            offset, claimed + 5, targets
        )


# ------------------------------------------------------------------ the CronJob

OWNER = {
    "apiVersion": "streamherd.io/v1alpha1",
    "kind": "ConsumerGroup",
    "metadata": {"name": "fulfilment", "namespace": "shop", "uid": "u-1"},
}


def cron_job(**overrides: Any) -> dict[str, Any]:
    options = {
        "schedule": "*/1 * * * *",
        "image": "ghcr.io/streamherd/streamherd:0.1.0",
        "service_account": "streamherd-janitor",
        "active_deadline_seconds": 122,
    }
    options.update(overrides)
    return desired_cron_job(OWNER, **options)


def test_the_cron_job_runs_the_janitor_command_owned_by_the_group() -> None:
    job = cron_job()
    assert job["metadata"]["name"] == "fulfilment-janitor"
    assert job["metadata"]["namespace"] == "shop"
    assert job["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "streamherd.io/v1alpha1",
            "kind": "ConsumerGroup",
            "name": "fulfilment",
            "uid": "u-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert owned_by(job, OWNER) and not owned_by(job, {"metadata": {"uid": "u-2"}})
    spec = job["spec"]
    assert spec["schedule"] == "*/1 * * * *" and spec["concurrencyPolicy"] == "Forbid"
    pod_spec = spec["jobTemplate"]["spec"]["template"]["spec"]
    assert pod_spec["serviceAccountName"] == "streamherd-janitor"
    assert pod_spec["restartPolicy"] == "Never"
    (container,) = pod_spec["containers"]
    assert container["image"] == "ghcr.io/streamherd/streamherd:0.1.0"
    assert container["command"] == janitor_command("shop", "fulfilment")
    assert container["command"] == [
        "streamherd",
        "janitor",
        "--namespace",
        "shop",
        "--group",
        "fulfilment",
    ]


@given(st.from_regex(r"[a-z0-9]([-a-z0-9]{0,251}[a-z0-9])?", fullmatch=True))
def test_cron_job_names_fit_and_stay_distinct(name: str) -> None:
    job_name = cron_job_name(name)
    assert len(job_name) <= CRON_JOB_NAME_MAX and job_name.endswith("-janitor")
    assert job_name == cron_job_name(name)
    if len(name) + len("-janitor") <= CRON_JOB_NAME_MAX:
        assert job_name == name + "-janitor"
    else:
        assert cron_job_name(name + "x") != job_name, "long names differ by their hash"


def test_the_cron_job_is_patched_only_when_what_we_set_differs() -> None:
    desired = cron_job()
    defaulted = copy.deepcopy(desired)  # what the API server returns: our fields + defaults
    defaulted["metadata"]["labels"]["team"] = "shop"
    defaulted["spec"]["suspend"] = False
    defaulted["spec"]["jobTemplate"]["spec"]["template"]["spec"]["dnsPolicy"] = "ClusterFirst"
    assert cron_job_patch(defaulted, desired) is None

    moved = cron_job(schedule="*/5 * * * *", image="registry.local/streamherd:dev")
    patch = cron_job_patch(defaulted, moved)
    assert patch == {"spec": moved["spec"]}

    relabelled = copy.deepcopy(defaulted)
    del relabelled["metadata"]["labels"]["streamherd.io/consumergroup"]
    assert cron_job_patch(relabelled, desired) == {
        "metadata": {"labels": desired["metadata"]["labels"]}
    }

    extra_container = copy.deepcopy(defaulted)
    extra_container["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"].append(
        {"name": "sidecar", "image": "x"}
    )
    assert cron_job_patch(extra_container, desired) == {"spec": desired["spec"]}


# ------------------------------------------------------------------ what a pass looks at


def test_an_idle_stream_needs_a_look_only_when_something_changed() -> None:
    memo = ConsumerMemo(2, frozenset({"web-h-aaaaa", "job"}), due_at=100.0)
    assert needs_look(None, 3, frozenset(), 0) and not needs_look(None, 0, frozenset(), 0)
    assert not needs_look(memo, 2, frozenset(), 50), "nothing changed: it costs nothing"
    assert needs_look(memo, 3, frozenset(), 50), "one more consumer"
    assert needs_look(memo, 2, frozenset({"web-h-aaaaa"}), 50), "a consumer whose pod is gone"
    assert needs_look(memo, 2, frozenset(), 100), "one may have become idle enough to remove"
    assert memo.without(["job", "other"]) == ConsumerMemo(1, frozenset({"web-h-aaaaa"}), 100.0)


def test_the_next_look_is_due_when_the_first_removable_consumer_may_be_idle_enough() -> None:
    pods = Pods("web", frozenset({"web-h-aaaaa"}), frozenset({"web-h-aaaaa"}))
    consumers = [
        ConsumerState("web-h-aaaaa", 0, HOUR_MS * 5),  # ours: never removed for idling
        ConsumerState("job", 0, HOUR_MS - 600_000),  # removable in 10 minutes
        ConsumerState("busy", 3, 0),  # pending: its stream is looked at anyway
    ]
    memo = consumer_memo(consumers, pods, now=1000.0, remove_idle_after_ms=HOUR_MS)
    assert (memo.count, memo.due_at) == (3, 1600.0)
    only_ours = consumer_memo(consumers[:1], pods, now=0.0, remove_idle_after_ms=HOUR_MS)
    assert only_ours.due_at == 3600.0, "looked at again once per removeIdleConsumersAfter"
    soon = consumer_memo([consumers[1]], pods, now=0.0, remove_idle_after_ms=600_000)
    assert soon.due_at == 60.0, "never more often than once a minute"
