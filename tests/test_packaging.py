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


def pinned_versions() -> dict[str, str]:
    """constraints.txt (``make lock``): distribution name (normalised) -> pinned version."""
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[normalised(name)] = version.strip()
    return pins


def normalised(name: str) -> str:
    """A distribution's name as PEP 503 compares them (``Foo_bar`` is ``foo-bar``)."""
    return "-".join(name.replace("_", "-").replace(".", "-").lower().split("-"))


def test_the_test_environment_is_the_one_constraints_txt_pins() -> None:
    """What the suite runs with is what a fresh machine installs: every distribution here
    (but pip and streamherd itself) is pinned at the version installed. A dependency added to
    pyproject.toml without `make lock` fails here rather than floating in CI."""
    from importlib import metadata

    pins = pinned_versions()
    installed = {
        normalised(d.metadata["Name"]): d.version
        for d in metadata.distributions()
        if normalised(d.metadata["Name"]) not in {"pip", "streamherd"}
    }
    unpinned = sorted(set(installed) - set(pins))
    assert not unpinned, f"installed but not in constraints.txt (run make lock): {unpinned}"
    differing = {n: (v, pins[n]) for n, v in installed.items() if pins[n] != v}
    assert not differing, f"installed (left) differs from constraints.txt (right): {differing}"
