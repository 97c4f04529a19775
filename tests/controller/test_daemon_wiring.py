"""The ConsumerGroup daemon (main.py) runs the group loop and the janitor loop side by side:
they read the same body, so they share one SpecParser (one parsed copy of the spec per group,
not one per loop)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from streamherd import main
from streamherd.api import SpecParser
from streamherd.api.consumergroup import ConsumerGroupSpec


def test_the_group_loop_and_the_janitor_loop_share_one_parsed_spec(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parsers: dict[str, Any] = {}

    async def group_loop(ctx: Any, body: Any, stopped: Any, parse_spec: Any = None) -> None:
        parsers["group"] = parse_spec

    async def janitor_loop(
        ctx: Any, body: Any, stopped: Any, pods: Any, parse_spec: Any = None
    ) -> None:
        parsers["janitor"] = parse_spec

    monkeypatch.setattr(main.groups, "run", group_loop)
    monkeypatch.setattr(main.janitor, "run", janitor_loop)
    monkeypatch.setattr(main.Runtime, "ctx", object())
    body = {"metadata": {"namespace": "default", "name": "brain"}, "spec": {}}
    daemon = main.consumergroup_daemon
    asyncio.run(
        daemon(
            body=body, stopped=None, pods={}, pods_by_replicaset={}, replicasets_by_deployment={}
        )  # type: ignore[arg-type]
    )
    assert isinstance(parsers["group"], SpecParser)
    assert parsers["group"] is parsers["janitor"]
    assert parsers["group"].model is ConsumerGroupSpec
