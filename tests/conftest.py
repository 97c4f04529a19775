"""Suite-wide rules. A test that cannot run because something is missing fails: CI must never
pass by skipping (the brief: fail loudly rather than skip)."""

from __future__ import annotations

import pytest

pytest_plugins = ["e2e.cluster.fixtures", "tests.harness"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped tests count as failures here: {report.longrepr}"
