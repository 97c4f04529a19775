"""No module of the package uses another module's ``_private`` names: a name another module
needs is public. Attribute access (``gateway._pipeline``) is ruff's SLF001 in ``make lint``;
ruff does not look at private names imported within the package, so this test does."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "operator" / "streamherd"


def private_imports(source: str) -> list[str]:
    """``module:name`` for every ``from module import _name`` (dunders are public)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"{'.' * node.level}{node.module or ''}:{alias.name}")
    return found


def test_the_check_finds_a_private_import() -> None:
    assert private_imports("from streamherd.gateway.client import _per_node, RedisGateway") == [
        "streamherd.gateway.client:_per_node"
    ]
    assert private_imports("from . import _x\nfrom streamherd import __version__") == [".:_x"]


@pytest.mark.parametrize(
    "path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE))
)
def test_no_module_imports_a_private_name(path: Path) -> None:
    assert private_imports(path.read_text()) == []
