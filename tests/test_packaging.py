"""The installable package carries everything the operator needs at run time (a
non-editable install is what the operator's image and the janitor's CronJob run)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "operator" / "streamherd"


def clean_copy(target: Path) -> Path:
    """The source tree as a fresh checkout has it: no egg-info or build leftovers, which
    would let setuptools pick up files the packaging config forgets."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    for name in listed:
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def test_the_wheel_contains_every_lua_script_and_the_type_marker(tmp_path: Path) -> None:
    source = clean_copy(tmp_path / "src")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("streamherd-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    scripts = {f"streamherd/{p.relative_to(PACKAGE)}" for p in PACKAGE.rglob("*.lua")}
    assert scripts, "there are Lua scripts to ship"
    assert scripts <= names, f"missing from the wheel: {sorted(scripts - names)}"
    assert "streamherd/py.typed" in names
    assert not any(name.startswith(("tests/", "e2e/")) for name in names), "test code stays out"
