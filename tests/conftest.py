"""Suite-wide rules. A test that cannot run because something is missing fails: CI must never
pass by skipping (the brief: fail loudly rather than skip).

Long variants stay out of ``make test`` (the suite's 15-minute budget on 2 cores) and run with
``make e2e`` (``pytest --e2e``): a test marked ``e2e_variants("valkey-9.1", ...)`` has each run
whose parameter id contains one of those strings moved there, the others stay in the suite. They
are deselected, not skipped, so the suite still fails on any skip.

The control-plane runs moved there ("control-plane" in the id) are those whose Kubernetes side
another real-tier test of the suite already covers (reconcile, scaling, the janitor's pods and
CronJob, Secrets, RBAC, retention on 7.0): what they add on the real tier is their Redis
side, which their emulator run in the suite checks the same way."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import settings

# No deadline for property tests: hypothesis's default (200 ms per example) is a time assert,
# and on a loaded 2-core machine a first call took 2.8 s (tests/api/test_validation.py failed
# once so). The suite asserts on outcomes, never on absolute time.
settings.register_profile("suite", deadline=None)
settings.load_profile("suite")

pytest_plugins = ["e2e.cluster.fixtures", "tests.harness"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--e2e",
        action="store_true",
        help="run only the long variants kept out of the suite (e2e_variants), as make e2e does",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "e2e_variants(*ids): the runs whose parameter id contains one of ids run under make e2e",
    )


def is_long_variant(item: pytest.Item) -> bool:
    """Marked ``e2e_variants`` without ids: every run of the test goes to make e2e."""
    marker = item.get_closest_marker("e2e_variants")
    if marker is None:
        return False
    if not marker.args:
        return True
    callspec = getattr(item, "callspec", None)
    return callspec is not None and any(variant in callspec.id for variant in marker.args)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    wanted = bool(config.getoption("--e2e"))
    deselected = [item for item in items if is_long_variant(item) != wanted]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if is_long_variant(item) == wanted]


@pytest.fixture(autouse=True)
def _claims_cleared_on_the_shared_redis_cluster(request: pytest.FixtureRequest) -> Iterator[None]:
    """The Redis Cluster of a test module is shared by its tests (and both tiers): the
    ownership records (keys.owners_key) a test's ConsumerGroups leave there would belong to
    ConsumerGroups of another cluster for the next test, which cannot see them to tell they
    are gone. Cleared after each test that used it."""
    yield
    if "redis_cluster" not in request.fixturenames:
        return
    from redis.cluster import RedisCluster

    from streamherd.keys import OWNERS_PREFIX

    client = RedisCluster.from_url(request.getfixturevalue("redis_cluster").url)
    try:
        for key in list(client.scan_iter(match=OWNERS_PREFIX + "*", target_nodes="primaries")):
            client.delete(key)
    finally:
        client.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped tests count as failures here: {report.longrepr}"
