"""Label and field selectors on list (and, in test_api_watch, on watch); list pagination."""

from __future__ import annotations

import pytest
from e2e.cluster import selectors
from e2e.cluster.client import KubeHTTP
from tests.cluster.conftest import widget


@pytest.fixture
def labelled(http: KubeHTTP, widgets: str) -> str:
    for name, labels in [
        ("a", {"app": "x", "tier": "web"}),
        ("b", {"app": "x", "tier": "db"}),
        ("c", {"app": "y"}),
        ("d", {}),
    ]:
        assert http.post(widgets, widget(name, labels)).status == 201
    return widgets


def _names(http: KubeHTTP, path: str, **params: str) -> list[str]:
    reply = http.get(path, **params)
    assert reply.status == 200, reply.body
    return [item["metadata"]["name"] for item in reply["items"]]


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("app=x", ["a", "b"]),
        ("app==x,tier=db", ["b"]),
        ("app!=x", ["c", "d"]),  # != also matches objects without the label
        ("tier in (web,db)", ["a", "b"]),
        ("tier notin (web)", ["b", "c", "d"]),
        ("tier", ["a", "b"]),
        ("!tier", ["c", "d"]),
        ("app=x,!tier", []),
    ],
)
def test_label_selectors_filter_lists(
    http: KubeHTTP, labelled: str, selector: str, expected: list[str]
) -> None:
    """labelSelector follows the Kubernetes grammar: equality, set-based, existence."""
    assert _names(http, labelled, labelSelector=selector) == expected


def test_an_invalid_label_selector_is_a_400(http: KubeHTTP, labelled: str) -> None:
    reply = http.get(labelled, labelSelector="app in (x")
    assert reply.status == 400
    assert reply.reason == "BadRequest"


def test_field_selectors_filter_lists(http: KubeHTTP, labelled: str) -> None:
    """fieldSelector supports metadata.name/namespace for every resource, kind-specific fields
    for built-ins; anything else is a 400 "field label not supported"."""
    assert _names(http, labelled, fieldSelector="metadata.name=b") == ["b"]
    assert _names(http, labelled, fieldSelector="metadata.name!=b") == ["a", "c", "d"]
    all_widgets = "/apis/test.streamherd.io/v1/widgets"
    assert _names(http, all_widgets, fieldSelector="metadata.namespace=default") == [
        "a",
        "b",
        "c",
        "d",
    ]
    assert _names(http, all_widgets, fieldSelector="metadata.namespace=other") == []
    unsupported = http.get(labelled, fieldSelector="spec.size=1")
    assert unsupported.status == 400
    assert unsupported["message"] == "field label not supported: spec.size"
    http.post("/api/v1/namespaces/default/secrets", {"metadata": {"name": "s"}, "type": "x/y"})
    assert _names(http, "/api/v1/namespaces/default/secrets", fieldSelector="type=x/y") == ["s"]


def test_lists_are_sorted_and_paginated(http: KubeHTTP, labelled: str) -> None:
    """limit/continue pages through a list; the list's resourceVersion is the current one."""
    first = http.get(labelled, limit="3")
    assert [i["metadata"]["name"] for i in first["items"]] == ["a", "b", "c"]
    assert first["metadata"]["remainingItemCount"] == 1
    second = http.get(labelled, limit="3", **{"continue": first["metadata"]["continue"]})
    assert [i["metadata"]["name"] for i in second["items"]] == ["d"]
    assert "continue" not in second["metadata"]
    assert first["kind"] == "WidgetList"
    assert first["apiVersion"] == "test.streamherd.io/v1"
    newest = max(int(i["metadata"]["resourceVersion"]) for i in first["items"] + second["items"])
    assert int(first["metadata"]["resourceVersion"]) >= newest


def test_selector_parsing_round_trips() -> None:
    parsed = selectors.parse_label_selector("a=1, b != 2 ,c in (x, y),!d,e,f notin (z),g>3")
    assert str(parsed) == "a=1,b!=2,c in (x,y),!d,e,f notin (z),g>3"
    assert parsed.matches({"a": "1", "c": "y", "e": "", "g": "4"})
    assert not parsed.matches({"a": "1", "c": "y", "e": "", "g": "3"})
    obj = selectors.from_label_selector_object(
        {
            "matchLabels": {"app": "x"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["a", "b"]},
                {"key": "gone", "operator": "DoesNotExist"},
            ],
        }
    )
    assert str(obj) == "app=x,tier in (a,b),!gone"
    fields = selectors.parse_field_selector(r"metadata.name=a\,b,status.phase!=Running")
    assert [(r.path, r.op, r.value) for r in fields.requirements] == [
        ("metadata.name", "=", "a,b"),
        ("status.phase", "!=", "Running"),
    ]
    with pytest.raises(selectors.SelectorError):
        selectors.parse_label_selector("a in ()")
    with pytest.raises(selectors.SelectorError):
        selectors.parse_label_selector("Bad Key=1")
