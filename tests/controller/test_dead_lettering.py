from redis.crc import key_slot

from streamherd.api.consumergroup import ConsumerGroupSpec
from streamherd.api.redisstream import RedisStreamSpec
from streamherd.controller.groups import dead_lettering
from streamherd.decisions.recovery import RecoveryFindings


def spec(dlq: str | None = None) -> ConsumerGroupSpec:
    recovery = {"deadLetter": {"stream": dlq}} if dlq else {}
    return ConsumerGroupSpec.model_validate({"streamRef": {"name": "s"}, "recovery": recovery})


def stream(
    mode: str = "Cluster", key: str | None = "orders", pattern: str | None = None
) -> RedisStreamSpec:
    body = {
        "redis": {"url": "redis://r:6379", "mode": mode},
        **({"key": key} if key else {"keyPattern": pattern}),
    }
    return RedisStreamSpec.model_validate(body)


def test_default_dead_letter_key_shares_the_slot() -> None:
    verdict = dead_lettering(spec(), stream(), ["orders"])
    assert (verdict.status, verdict.reason) == ("True", "Reconciled")
    assert "'{orders}:dlq'" in verdict.message and key_slot(b"{orders}:dlq") == key_slot(b"orders")


def test_a_configured_key_in_another_slot_is_refused_with_a_clear_condition() -> None:
    assert key_slot(b"failed-orders") != key_slot(b"orders")
    verdict = dead_lettering(spec("failed-orders"), stream(), ["orders"])
    assert (verdict.type, verdict.status, verdict.reason) == ("DeadLettering", "False", "CrossSlot")
    assert "hash slot" in verdict.message and "'{orders}:dlq'" in verdict.message


def test_standalone_takes_any_key_and_patterns_use_each_streams_own() -> None:
    assert dead_lettering(spec("failed-orders"), stream("Standalone"), ["orders"]).status == "True"
    verdict = dead_lettering(spec(), stream(key=None, pattern="conv:*"), ["conv:1", "conv:2"])
    assert verdict.status == "True" and "each stream's own" in verdict.message


def test_a_dead_letter_key_of_another_type_found_by_the_janitor_is_a_condition() -> None:
    findings = RecoveryFindings({"orders:dlq": "string"}, held=3)
    verdict = dead_lettering(spec(), stream("Standalone"), ["orders"], findings)
    assert (verdict.status, verdict.reason) == ("False", "WrongKeyType")
    assert "'orders:dlq' is a string" in verdict.message and "3 held" in verdict.message
    assert dead_lettering(spec(), stream("Standalone"), ["orders"], RecoveryFindings()).status == (
        "True"
    )
