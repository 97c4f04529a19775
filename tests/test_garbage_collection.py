"""The operator's garbage-collector tuning (streamherd.main.SurvivorFreezing)."""

from __future__ import annotations

import gc
import time
import weakref

from streamherd.main import SurvivorFreezing


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector can free it


def test_survivors_of_a_full_collection_are_frozen_and_a_thaw_frees_garbage_among_them() -> None:
    freezing = SurvivorFreezing(thaw_every=3600)
    freezing.install()
    try:
        node = Node()
        alive = weakref.ref(node)
        gc.collect()
        assert gc.get_freeze_count() > 0, "what survived the full collection is frozen"
        del node
        gc.collect()
        assert alive() is not None, "frozen: a full collection no longer scans it"
        freezing.thaw()
        assert gc.get_freeze_count() == 0
        gc.collect()
        assert alive() is None, "thawed: the next full collection frees the cycle"
        assert gc.get_freeze_count() > 0, "and freezes its survivors again"
    finally:
        freezing.uninstall()
    assert gc.get_freeze_count() == 0
    node = Node()
    alive = weakref.ref(node)
    del node
    gc.collect()
    assert alive() is None, "uninstalled: nothing is frozen any more"


def test_the_frozen_objects_are_thawed_every_thaw_every_seconds() -> None:
    freezing = SurvivorFreezing(thaw_every=0.05)
    freezing.install()
    try:
        deadline = time.monotonic() + 10
        while freezing.thaws < 2:
            assert time.monotonic() < deadline, "no periodic thaw within 10 s"
            time.sleep(0.01)
    finally:
        freezing.uninstall()
    thaws = freezing.thaws
    time.sleep(0.2)
    assert freezing.thaws == thaws, "uninstalled: the thread stopped"
