"""Watch: initial state, resumption from a resourceVersion, filtered watches, BOOKMARKs, 410."""

from __future__ import annotations

import time
from typing import Any

from e2e.cluster.client import KubeHTTP
from tests.cluster.conftest import widget


def _brief(event: dict[str, Any]) -> tuple[str, str]:
    return event["type"], event["object"]["metadata"].get("name", "")


def test_watch_lists_existing_objects_then_streams_changes(http: KubeHTTP, widgets: str) -> None:
    """Without resourceVersion, a watch starts with synthetic ADDED events for what exists,
    then streams ADDED/MODIFIED/DELETED as they happen, with growing resourceVersions."""
    http.post(widgets, widget("w1"))
    stream = http.watch(widgets)
    assert _brief(next(stream)) == ("ADDED", "w1")
    http.post(widgets, widget("w2"))
    added = next(stream)
    assert _brief(added) == ("ADDED", "w2")
    http.patch(f"{widgets}/w1", {"spec": {"size": 2}})
    modified = next(stream)
    assert _brief(modified) == ("MODIFIED", "w1")
    assert modified["object"]["spec"] == {"size": 2}
    http.delete(f"{widgets}/w2")
    deleted = next(stream)
    assert _brief(deleted) == ("DELETED", "w2")
    versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in (added, modified, deleted)]
    assert versions == sorted(versions)
    assert len(set(versions)) == 3
    stream.close()


def test_watch_resumes_after_a_resource_version(http: KubeHTTP, widgets: str) -> None:
    """A watch from resourceVersion N delivers exactly the changes after N, in order."""
    since = http.post(widgets, widget("w1"))["metadata"]["resourceVersion"]
    http.patch(f"{widgets}/w1", {"spec": {"size": 2}})
    http.post(widgets, widget("w2"))
    http.delete(f"{widgets}/w1")
    http.post("/api/v1/namespaces/default/configmaps", {"metadata": {"name": "other"}})
    stream = http.watch(widgets, resourceVersion=since)
    events = [_brief(next(stream)) for _ in range(3)]
    assert events == [("MODIFIED", "w1"), ("ADDED", "w2"), ("DELETED", "w1")]
    http.post(widgets, widget("w3"))
    assert _brief(next(stream)) == ("ADDED", "w3")  # nothing else (the configmap) in between
    stream.close()


def test_filtered_watch_sees_objects_enter_and_leave(http: KubeHTTP, widgets: str) -> None:
    """With a label selector, an object that starts matching arrives as ADDED and one that
    stops matching leaves as DELETED, like the API server's watch cache filtering."""
    since = http.post(widgets, widget("w1"))["metadata"]["resourceVersion"]
    stream = http.watch(widgets, resourceVersion=since, labelSelector="app=x")
    http.post(widgets, widget("unrelated", {"app": "y"}))
    http.patch(f"{widgets}/w1", {"metadata": {"labels": {"app": "x"}}})
    assert _brief(next(stream)) == ("ADDED", "w1")
    http.patch(f"{widgets}/w1", {"spec": {"size": 3}})
    assert _brief(next(stream)) == ("MODIFIED", "w1")
    http.patch(f"{widgets}/w1", {"metadata": {"labels": {"app": None}}})
    left = next(stream)
    assert _brief(left) == ("DELETED", "w1")
    assert "labels" not in left["object"]["metadata"]  # the object as it is now
    stream.close()
    by_name = http.watch(widgets, resourceVersion=since, fieldSelector="metadata.name=unrelated")
    assert _brief(next(by_name)) == ("ADDED", "unrelated")
    by_name.close()


def test_bookmarks_only_when_allowed(http: KubeHTTP, kube_api: Any, widgets: str) -> None:
    """With allowWatchBookmarks=true the server sends BOOKMARKs carrying the current
    resourceVersion (only metadata); without it, none."""
    kube_api.bookmark_interval = 0.05
    http.post(widgets, widget("w1"))
    stream = http.watch(widgets, allowWatchBookmarks="true")
    assert _brief(next(stream)) == ("ADDED", "w1")
    http.post("/api/v1/namespaces/default/configmaps", {"metadata": {"name": "c"}})
    latest = str(kube_api.resource_version)  # a configmap's: widgets' watchers see no event
    for bookmark in stream:
        assert bookmark["type"] == "BOOKMARK"
        assert bookmark["object"]["kind"] == "Widget"
        assert set(bookmark["object"]["metadata"]) == {"resourceVersion"}
        if bookmark["object"]["metadata"]["resourceVersion"] == latest:
            break
    stream.close()
    without = list(http.watch(widgets, timeoutSeconds="1"))
    assert [e["type"] for e in without] == ["ADDED"]


def test_too_old_resource_version_is_410_gone(http: KubeHTTP, kube_api: Any, widgets: str) -> None:
    """After the history is compacted, a watch from an older resourceVersion gets an ERROR
    event with a 410 Expired Status and the stream ends; re-listing gives a usable version."""
    old = http.post(widgets, widget("w1"))["metadata"]["resourceVersion"]
    http.patch(f"{widgets}/w1", {"spec": {"size": 2}})
    kube_api.compact()
    events = list(http.watch(widgets, resourceVersion=old))
    assert len(events) == 1
    assert events[0]["type"] == "ERROR"
    status = events[0]["object"]
    assert (status["kind"], status["code"], status["reason"]) == ("Status", 410, "Expired")
    assert status["message"].startswith(f"too old resource version: {old}")
    fresh = http.get(widgets)["metadata"]["resourceVersion"]
    stream = http.watch(widgets, resourceVersion=fresh)
    http.patch(f"{widgets}/w1", {"spec": {"size": 3}})
    assert _brief(next(stream)) == ("MODIFIED", "w1")
    stream.close()


def test_a_watch_falling_behind_the_history_window_gets_410(
    http: KubeHTTP, kube_api: Any, widgets: str
) -> None:
    """The history is finite (etcd keeps ~5 minutes); a resume point that fell out of it is
    410 Gone even without an explicit compaction."""
    kube_api.history_limit = 3
    old = http.post(widgets, widget("w1"))["metadata"]["resourceVersion"]
    for size in range(5):
        http.patch(f"{widgets}/w1", {"spec": {"size": size}})
    events = list(http.watch(widgets, resourceVersion=old))
    assert [(e["type"], e["object"]["code"]) for e in events] == [("ERROR", 410)]


def test_an_open_watch_that_falls_behind_is_ended_with_410(
    http: KubeHTTP, kube_api: Any, local_cluster: Any, widgets: str
) -> None:
    """A watcher too slow for the history window (here: more writes in one go than the window
    holds) is ended with a 410 ERROR instead of silently missing changes."""
    http.post(widgets, widget("w1"))
    stream = http.watch(widgets)
    assert _brief(next(stream)) == ("ADDED", "w1")
    kube_api.history_limit = 2

    async def burst() -> None:  # no await in between: the watcher cannot keep up
        for size in range(5):
            kube_api.patch("widgets", "default", "w1", {"spec": {"size": size}})

    local_cluster.run(burst())
    event = next(stream)
    assert (event["type"], event["object"]["code"]) == ("ERROR", 410)
    assert list(stream) == []


def test_timeout_seconds_ends_the_stream(http: KubeHTTP, widgets: str) -> None:
    """timeoutSeconds closes the stream server-side (clients then resume from their last rv)."""
    started = time.monotonic()
    assert list(http.watch(widgets, timeoutSeconds="1", timeout=5)) == []
    assert 0.9 <= time.monotonic() - started < 3


def test_send_initial_events_ends_with_a_marked_bookmark(http: KubeHTTP, widgets: str) -> None:
    """sendInitialEvents=true (watch-list): ADDED for the current state, then a BOOKMARK
    annotated k8s.io/initial-events-end=true."""
    http.post(widgets, widget("w1"))
    http.post(widgets, widget("w2"))
    stream = http.watch(
        widgets,
        sendInitialEvents="true",
        allowWatchBookmarks="true",
        resourceVersionMatch="NotOlderThan",
    )
    events = [next(stream) for _ in range(3)]
    assert [_brief(e) for e in events[:2]] == [("ADDED", "w1"), ("ADDED", "w2")]
    assert events[2]["type"] == "BOOKMARK"
    assert events[2]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    stream.close()
