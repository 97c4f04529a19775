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


def test_every_kopf_handler_runs_on_the_event_loop() -> None:
    """kopf runs a sync handler in its thread pool. Ours touch what belongs to the event loop
    (a loop's wake Signal resolves asyncio futures; the pod history is read by the loops):
    from a thread that is a race, and a future resolved there does not wake the event loop.
    So every handler is a coroutine function (kopf awaits those on the loop)."""
    import inspect

    source = inspect.getsource(main)
    decorated = set()
    lines = source.splitlines()
    for number, line in enumerate(lines):
        if line.lstrip().startswith("@kopf."):
            following = next(
                text for text in lines[number:] if text.startswith(("def ", "async def "))
            )
            decorated.add(following.split("def ", 1)[1].split("(", 1)[0])
    assert {"changed", "pod_seen", "pods", "consumergroup_daemon"} <= decorated
    sync = sorted(
        name for name in decorated if not inspect.iscoroutinefunction(getattr(main, name))
    )
    assert not sync, f"sync kopf handlers (run in kopf's threads): {sync}"
