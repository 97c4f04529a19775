"""The ACL rules of README "Redis permissions", read from the README itself (so the
documentation and the tests cannot drift), and a redis-server user built from them."""

from __future__ import annotations

import os
import re
from pathlib import Path

README = Path(os.environ.get("STREAMHERD_ACL_README") or Path(__file__).parents[2] / "README.md")
"""The README (another copy only to check that each rule is needed: tests/security/minimal_acl.py)."""


def documented_rules() -> dict[str, list[str]]:
    """feature -> its rules, from the README's ```acl block."""
    (block,) = re.findall(r"```acl\n(.*?)```", README.read_text(), re.S)
    rules: dict[str, list[str]] = {}
    for line in block.strip().splitlines():
        feature, _, commands = line.partition(":")
        rules[feature.strip()] = commands.split()
    return rules


def user_directive(name: str, password: str, features: list[str], keys: list[str]) -> str:
    """A redis-server ``user`` directive: nothing but the features' rules and ``keys`` (plus,
    with groups, the ownership records: README "Ownership")."""
    rules = documented_rules()
    if "groups" in features:
        keys = [*keys, "streamherd:owners:*"]
    commands = list(dict.fromkeys(rule for feature in features for rule in rules[feature]))
    patterns = [key if key.startswith(("~", "%")) else f"~{key}" for key in keys]
    return " ".join(
        [name, "on", f">{password}", "resetkeys", "resetchannels", "-@all", *commands, *patterns]
    )
