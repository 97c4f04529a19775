"""`make demo`, shortened, as CI runs it (--plain): the whole story through the real command,
and its summary checked: every event produced was processed by every group (by id), the
poison events were dead-lettered and replayed with `streamherd dlq replay`, the ended calls'
streams were deleted by retention, and the plot was written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from e2e.cluster.processes import REPO_ROOT


@pytest.mark.timeout(400)
def test_the_demo_tells_its_story_and_nothing_is_lost(tmp_path: Path) -> None:
    summary_path, plot = tmp_path / "summary.json", tmp_path / "demo.png"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "e2e.demo",
            "--plain",
            "--seconds",
            "12",
            "--surge",
            "12",
            "--summary-json",
            str(summary_path),
            "--plot",
            str(plot),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=360,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-6000:]
    summary = json.loads(summary_path.read_text())
    for name, group in summary["groups"].items():
        assert group["ok"] and group["missing"] == 0 and group["unexpected"] == 0, (name, group)
        assert group["produced"] > 100, "calls spoke"
        assert summary["deadLettered"][name] == 6, f"{name}: every poison event, once"
        assert summary["replayed"][name] == 6, f"{name}: replayed after the fix"
    assert summary["streams"] >= 12 and summary["streamsLeft"] == 0
    assert summary["deletedStreams"] == summary["streams"], "every call deleted by retention"
    assert summary["killed"].startswith("conversation-brain-")
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 20_000
    assert f"plot: {plot}" in log
    for said in ("=== surge", "WokeUp", "DeadLettered", "streamherd dlq replay", "ScaledToZero"):
        assert said in log, said
