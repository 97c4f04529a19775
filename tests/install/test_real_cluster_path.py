"""The real-cluster path of e2e/kind/run.sh: with $STREAMHERD_E2E_KUBECONFIG the same scenarios
run once each against that cluster (no emulator, no built control plane), through the same
fixtures. A kind cluster cannot run here; a control plane of the test's own, given to a pytest
subprocess as "the cluster" by its admin kubeconfig, stands in for one."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e.cluster import fixtures
from e2e.cluster.fixtures import REAL_CLUSTER_ENV, TIERS_ENV
from e2e.controlplane.controlplane import ControlPlane

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = [
    "tests/reconcile/test_reconcile.py::test_spec_change_is_acted_on_and_observed_generation_follows",
    "tests/scaling/test_autoscaling.py::test_burst_scales_up_drains_and_returns_to_zero",
]


def pytest_run(
    args: list[str], kubeconfig: Path, basetemp: Path
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, REAL_CLUSTER_ENV: str(kubeconfig)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--basetemp={basetemp}", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


class Metafunc:
    """What pytest_generate_tests reads of a test marked ``control_plane``, and what it asks."""

    fixturenames = ("kube_tier", "harness")

    def __init__(self) -> None:
        self.definition = self
        self.parametrized: list[tuple[str, list[str]]] = []

    def get_closest_marker(self, name: str) -> object | None:
        return object() if name == "control_plane" else None

    def parametrize(self, name: str, values: list[str], indirect: bool) -> None:
        self.parametrized.append((name, values))


def test_with_a_real_cluster_each_operator_test_runs_once_without_tiers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The selection: with the variable, a test marked ``control_plane`` is not split into
    [emulator]/[control-plane] runs (its fixtures then use that cluster); without it, it is."""
    monkeypatch.delenv(TIERS_ENV, raising=False)
    monkeypatch.delenv(REAL_CLUSTER_ENV, raising=False)
    assert fixtures.real_cluster_kubeconfig() is None
    both = Metafunc()
    fixtures.pytest_generate_tests(both)  # type: ignore[arg-type]
    assert both.parametrized == [("kube_tier", [fixtures.EMULATOR, fixtures.CONTROL_PLANE])]

    monkeypatch.setenv(REAL_CLUSTER_ENV, str(tmp_path / "kind.kubeconfig"))
    assert fixtures.real_cluster_kubeconfig() == tmp_path / "kind.kubeconfig"
    once = Metafunc()
    fixtures.pytest_generate_tests(once)  # type: ignore[arg-type]
    assert once.parametrized == []


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Path]:
    """A control plane with its node: "a real cluster", known to the subprocess only by its
    admin kubeconfig."""
    plane = ControlPlane(base_dir=tmp_path / "plane").start()
    node = None
    try:
        node = plane.start_node_agent(stop_grace=0.5)
        yield plane.write_kubeconfig(tmp_path / "cluster.kubeconfig", "admin", "default")
    finally:
        if node is not None:
            node.stop()
            node.cleanup()
        plane.cleanup()


@pytest.mark.e2e_variants  # ~40 s: make e2e; the selection test above is in the suite
def test_the_scenarios_run_against_the_cluster_in_the_variable(
    cluster: Path, tmp_path: Path
) -> None:
    run = pytest_run(["-q", *SCENARIOS], cluster, tmp_path / "bt")
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    assert f"{len(SCENARIOS)} passed" in run.stdout, run.stdout[-3000:]
