"""Is every documented rule needed? Runs tests/security/test_acl.py once per rule of the given
features, with that rule removed from a copy of the README: each run should fail. Not part of
the suite (minutes); run by hand after changing the ACL block:

    .venv/bin/python tests/security/minimal_acl.py connect,polling "operator and 7.0"
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

README = Path(__file__).parents[2] / "README.md"


def main(features: list[str], select: str) -> int:
    text = README.read_text()
    block = re.search(r"```acl\n(.*?)```", text, re.S)
    assert block is not None
    unneeded = []
    lines = block.group(1).strip().splitlines()
    chosen = [line for line in lines if line.partition(":")[0].strip() in features]
    # A rule may be listed by several features: it is removed from all of them at once.
    for rule in dict.fromkeys(r for line in chosen for r in line.partition(":")[2].split()):
        trimmed = text
        for line in chosen:
            name, _, rules = line.partition(":")
            kept = " ".join(r for r in rules.split() if r != rule)
            trimmed = trimmed.replace(line, f"{name}: {kept}", 1)
        with tempfile.NamedTemporaryFile("w", suffix=".md", delete=False) as copy:
            copy.write(trimmed)
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "tests/security/test_acl.py",
                "-q",
                "-x",
                "--tb=no",
                "-p",
                "no:cacheprovider",
                "-k",
                select,
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "STREAMHERD_ACL_README": copy.name},
        )
        os.unlink(copy.name)
        outcome = done.stdout.strip().splitlines()[-1]
        print(f"without {rule}: {outcome}", flush=True)
        if "failed" not in outcome:
            unneeded.append(rule)
    print("not needed by the tests:", unneeded or "none")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1].split(","), sys.argv[2]))
