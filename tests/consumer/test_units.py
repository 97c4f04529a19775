"""The SDK's pure parts: settings from the contract's environment, entries as a handler
sees them, and the bookkeeping of followed streams."""

from __future__ import annotations

import pytest

from streamherd.api.redisstream import RedisStreamSpec
from streamherd.consumer import Settings, SettingsError
from streamherd.consumer import settings as module
from streamherd.consumer.entries import entry, foreign
from streamherd.consumer.following import FIRST_BACKOFF, MAX_BACKOFF, StreamSet
from streamherd.consumer.settings import client_name
from streamherd.consumer.waking import notification_channels
from streamherd.kube.manifests import consumer_env

ENV = {
    "STREAMHERD_REDIS_URL": "redis://:s3cret@redis.data:6380/2",
    "STREAMHERD_STREAM_PATTERN": "conv:*",
    "STREAMHERD_GROUP": "brain",
    "STREAMHERD_CONSUMER": "brain-5d8f7c6b9a-x2x4z",
    "STREAMHERD_REDIS_PASSWORD": "hunter2",
}


def test_settings_from_the_contract_environment() -> None:
    s = Settings.from_env(ENV)
    assert (s.pattern, s.stream, s.group, s.consumer) == (
        "conv:*",
        None,
        "brain",
        "brain-5d8f7c6b9a-x2x4z",
    )
    assert s.endpoint == "redis://redis.data:6380/2"
    assert "s3cret" not in repr(s) and "hunter2" not in repr(s), "credentials never in repr"
    one = Settings.from_env(ENV, stream="orders")
    assert (one.stream, one.pattern) == ("orders", None), "an override replaces the pattern"


def test_settings_name_what_is_missing() -> None:
    with pytest.raises(SettingsError, match="STREAMHERD_REDIS_URL"):
        Settings.from_env({k: v for k, v in ENV.items() if k != "STREAMHERD_REDIS_URL"})
    with pytest.raises(SettingsError, match="STREAMHERD_GROUP"):
        Settings.from_env({k: v for k, v in ENV.items() if k != "STREAMHERD_GROUP"})
    with pytest.raises(SettingsError, match="exactly one"):
        Settings.from_env({**ENV, "STREAMHERD_STREAM": "orders"})
    fallback = Settings.from_env(
        {k: v for k, v in ENV.items() if k != "STREAMHERD_CONSUMER"} | {"POD_NAME": "pod-1"}
    )
    assert fallback.consumer == "pod-1"


def test_settings_read_what_the_operator_injects() -> None:
    """The names the operator puts in consumer pods (decisions/workload.py) are the ones the
    SDK reads: one list, checked against the other."""
    tls = {
        "caSecretRef": {"name": "ca", "key": "ca.crt"},
        "clientCertificateSecretRef": {"name": "client"},
    }
    specs = [
        {
            "url": "rediss://redis:6380/0",
            "username": "u",
            "passwordSecretRef": {"name": "s", "key": "p"},
            "tls": tls,
        },
        {"url": "rediss://redis:6380/0", "tls": {"insecureSkipVerify": True}},
        {
            "mode": "Sentinel",
            "sentinel": {
                "masterName": "m",
                "addresses": ["s:26379"],
                "username": "su",
                "passwordSecretRef": {"name": "s", "key": "sp"},
            },
        },
    ]
    injected = {
        e["name"]
        for redis in specs
        for e in consumer_env(
            RedisStreamSpec.model_validate({"redis": redis, "keyPattern": "conv:*"}), "brain"
        )
    }
    read = {
        getattr(module, n) for n in dir(module) if n.endswith("_ENV") and n not in {"STREAM_ENV"}
    }
    assert injected == read


def test_an_entry_as_the_handler_sees_it() -> None:
    raw = {
        "msg": "hi",
        "streamherd-origin-id": "5-0",
        "streamherd-deliveries": "3",
        "streamherd-group": "g",
    }
    e = entry("conv:1", "9-0", raw, 1, "g")
    assert e.fields == {"msg": "hi"}, "streamherd-* fields stripped"
    assert (e.origin_id, e.deliveries, e.redelivered) == ("5-0", 4, True), "carried + this one"
    plain = entry("conv:1", "9-1", {"msg": "x"}, 2, "g")
    assert (plain.origin_id, plain.deliveries) == ("9-1", 2)
    untagged = entry(
        "conv:1", "9-2", {"streamherd-origin-id": "1-0", "streamherd-deliveries": "2"}, 1, "g"
    )
    assert untagged.deliveries == 3, "a copy without a group tag is work for every group"


def test_a_copy_for_another_group_is_foreign() -> None:
    copy = {
        "msg": "hi",
        "streamherd-origin-id": "5-0",
        "streamherd-deliveries": "3",
        "streamherd-group": "crm",
    }
    assert foreign(copy, "brain") and not foreign(copy, "crm")
    assert not foreign({"msg": "hi", "streamherd-group": "crm"}, "brain"), "not a copy"
    assert not foreign({"streamherd-origin-id": "5-0", "streamherd-deliveries": "1"}, "brain")


def test_a_pattern_follows_matching_streams_but_not_auxiliary_keys() -> None:
    s = StreamSet(pattern="conv:*")
    added = s.offer(
        ["conv:1", "conv:1:dlq", "streamherd:streams", "other:1", "conv:2", "conv:1"], 0
    )
    assert added == 2 and s.waiting == ["conv:1", "conv:2"]
    assert s.due(0) == ["conv:1", "conv:2"] and s.followed == []
    s.follow("conv:1", 0)
    assert s.followed == ["conv:1"] and s.active(0) == ["conv:1"]
    assert s.offer(["conv:1"], 1) == 0, "known keys are not offered again"


def test_a_stream_without_its_group_is_checked_less_and_less_often() -> None:
    s = StreamSet(pattern="conv:*")
    s.offer(["conv:1"], 0)
    now, gaps = 0.0, []
    for _ in range(8):
        s.without_group("conv:1", now)
        nxt = s.next_check()
        assert nxt is not None and s.due(now) == []
        gaps.append(nxt - now)
        now = nxt
    assert gaps[0] == FIRST_BACKOFF and max(gaps) == MAX_BACKOFF
    assert gaps == sorted(gaps)
    s.follow("conv:1", now)
    assert s.next_check() is None


def test_streams_go_dormant_after_the_active_window_and_wake_when_they_speak() -> None:
    s = StreamSet(pattern="conv:*", active_window=10)
    for i in range(5):
        s.offer([f"conv:{i}"], 0)
        s.follow(f"conv:{i}", 0)
    s.touch(["conv:3"], 8)
    assert s.active(5) == [f"conv:{i}" for i in range(5)]
    assert s.active(12) == ["conv:3"], "the others had nothing for 10 s"
    assert s.dormant(12) == ["conv:0", "conv:1", "conv:2", "conv:4"]
    s.touch(["conv:1"], 12.1)
    assert s.active(12.1) == ["conv:3", "conv:1"]
    s.forget("conv:3")
    assert s.active(12.2) == ["conv:1"] and "conv:3" not in s.followed
    s.recheck("conv:1", 13)
    assert s.active(13) == [] and s.due(13) == ["conv:1"]


def test_one_named_stream_is_always_active() -> None:
    s = StreamSet(key="orders")
    assert s.offer(["orders", "other"], 0) == 1
    s.follow("orders", 0)
    assert s.active(1_000) == ["orders"] and s.dormant(1_000) == []


def test_the_mode_comes_from_the_environment_in_any_case_and_a_wrong_one_is_named() -> None:
    assert Settings.from_env(ENV).mode == "Standalone"
    cluster = Settings.from_env({**ENV, "STREAMHERD_REDIS_MODE": "cluster"})
    assert cluster.mode == "Cluster" and cluster.cluster
    with pytest.raises(SettingsError, match="STREAMHERD_REDIS_MODE='Sentinal'"):
        Settings.from_env({**ENV, "STREAMHERD_REDIS_MODE": "Sentinal"})


def test_the_operator_injects_the_mode_of_the_redisstream() -> None:
    spec = RedisStreamSpec.model_validate(
        {"redis": {"url": "redis://redis:6379", "mode": "Cluster"}, "keyPattern": "conv:*"}
    )
    env = {e["name"]: e.get("value") for e in consumer_env(spec, "brain")}
    assert Settings.from_env({**env, "STREAMHERD_CONSUMER": "pod-1"}).cluster


def test_connections_are_named_after_the_consumer() -> None:
    assert client_name("brain-5d8f7c6b9a-x2x4z") == "brain-5d8f7c6b9a-x2x4z"
    assert client_name("a b\nc") == "a-b-c", "CLIENT SETNAME takes no spaces"


def test_what_keyspace_notifications_a_cluster_consumer_can_use() -> None:
    """Every primary must publish stream events: K (keyspace channel, filtered by Redis) is
    preferred to E (key events of every stream); without t or A there is nothing to hear."""
    assert notification_channels(["Kt", "AKE"], "conv:*") == ("pattern", "__keyspace@0__:conv:*")
    assert notification_channels(["Et", "AE"], "conv:*") == (
        "channels",
        ["__keyevent@0__:xadd", "__keyevent@0__:xgroup-create"],
    )
    assert notification_channels(["Kt", ""], "conv:*") is None, "one primary silent"
    assert notification_channels(["Kn"], "conv:*") is None, "new keys only: no entries"
    assert notification_channels([], "conv:*") is None, "CONFIG unreadable: unknown"


def test_keyspace_events_make_streams_active_checked_or_learned() -> None:
    s = StreamSet(pattern="conv:*", active_window=10)
    s.offer(["conv:1", "conv:2"], 0)
    s.follow("conv:1", 0)
    s.without_group("conv:2", 0)
    assert s.active(20) == []
    s.heard(["conv:1", "conv:2", "conv:3", "other:1"], 20)
    assert s.active(20) == ["conv:1"], "an entry: read in the next round"
    assert s.due(20) == ["conv:2", "conv:3"], "a group created: checked now; a new stream: learned"


def test_waiting_keys_come_due_earliest_first_and_stay_waiting_until_checked() -> None:
    """The schedule is a heap with stale entries left behind by each reschedule: what is due
    must still be exactly the waiting keys whose check time has come, earliest first."""
    s = StreamSet(pattern="conv:*")
    s.offer([f"conv:{i}" for i in range(6)], 0)
    for i in range(6):
        s.without_group(f"conv:{i}", float(i))  # next checks at i + FIRST_BACKOFF
    s.heard(["conv:4"], 1)  # a group appeared: checked now, its old slot is stale
    s.forget("conv:0")
    assert s.due(1) == ["conv:4"]
    assert s.due(1) == ["conv:4"], "not checked yet: still due"
    s.follow("conv:4", 1)
    assert s.next_check() == 1 + FIRST_BACKOFF
    later = 5 + FIRST_BACKOFF
    assert s.due(later) == ["conv:1", "conv:2", "conv:3", "conv:5"]
    assert s.due(later, limit=2) == ["conv:1", "conv:2"]
    s.absent("conv:1", later)
    assert s.due(later) == ["conv:2", "conv:3", "conv:5"]
    assert sorted(s.waiting) == ["conv:1", "conv:2", "conv:3", "conv:5"]
