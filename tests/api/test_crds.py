"""The checked-in CRDs are what the models generate, and Kubernetes would accept them."""

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from e2e.cluster.crd_validation import structural_violations

from streamherd.api import KINDS, Kind
from streamherd.api.kinds import crd_yaml
from streamherd.cli import main

CRDS = Path(__file__).parents[2] / "crds"


def schema_of(crd: dict[str, Any]) -> dict[str, Any]:
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_checked_in_crd_is_fresh(kind: Kind) -> None:
    path = CRDS / f"{kind.crd_name}.yaml"
    assert path.exists(), f"{path} is missing: run `make crds`"
    assert path.read_text() == crd_yaml(kind), f"{path} is stale: run `make crds` and commit it"


def test_no_stray_files_in_crds() -> None:
    assert sorted(p.name for p in CRDS.iterdir()) == sorted(f"{k.crd_name}.yaml" for k in KINDS)


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_schema_is_structural_and_cel_is_bounded(kind: Kind) -> None:
    assert structural_violations(schema_of(kind.crd())) == []


def test_checker_catches_what_kubernetes_rejects() -> None:
    bad = {
        "type": "object",
        "properties": {
            "metadata": {"type": "object", "properties": {"labels": {"type": "object"}}},
            "spec": {
                "type": "object",
                "x-kubernetes-validations": [{"rule": "self.a == 1", "message": "m"}],
                "properties": {
                    "untyped": {"description": "no type"},
                    "ref": {"$ref": "#/definitions/x"},
                    "union": {"type": "string", "anyOf": [{"maxLength": 1}]},
                    "closed": {"type": "object", "additionalProperties": False},
                    "unbounded": {"type": "string"},
                    "list": {"type": "array", "items": {"type": "string", "maxLength": 3}},
                    "bad_default": {"type": "integer", "minimum": 1, "default": 0},
                },
            },
        },
    }
    problems = "\n".join(structural_violations(bad))
    for expected in [
        "metadata: only metadata.name/generateName",
        "untyped: type is required",
        "ref: keyword '$ref'",
        "union: keyword 'anyOf'",
        "closed: additionalProperties: false",
        "unbounded: string under a CEL rule needs maxLength",
        "list: array under a CEL rule needs maxItems",
        "bad_default: default is invalid",
    ]:
        assert expected in problems


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_printer_columns_point_at_real_fields(kind: Kind) -> None:
    schema = schema_of(kind.crd())
    columns = kind.crd()["spec"]["versions"][0]["additionalPrinterColumns"]
    for column in columns:
        # ".status.conditions[?(@.type=="Ready")].status": a filter steps into the array's items
        path = re.sub(r"\[\?\(.*?\)\]", ".[]", column["jsonPath"]).strip(".").split(".")
        if path[0] == "metadata":
            continue
        node = schema
        for part in path:
            if part == "[]":
                assert node.get("type") == "array", column
                node = node["items"]
                continue
            assert part in node.get("properties", {}), (
                f"{column['name']}: no field {column['jsonPath']}"
            )
            node = node["properties"][part]
        expected = {"integer": "integer", "string": "string", "date": "string", "number": "number"}
        assert node.get("type") == expected[column["type"]], column


def test_kinds_have_the_names_users_type() -> None:
    names = {k.kind: k.crd()["spec"]["names"] for k in KINDS}
    assert names["RedisStream"]["shortNames"] == ["xstream"]
    assert names["ConsumerGroup"]["shortNames"] == ["xgroup"]
    assert names["RetentionPolicy"]["shortNames"] == ["xretention"]
    assert all(n["categories"] == ["streamherd"] for n in names.values())
    assert all(k.crd()["spec"]["versions"][0]["subresources"] == {"status": {}} for k in KINDS)


def test_cli_prints_the_three_crds() -> None:
    result = CliRunner().invoke(main, ["crds"])
    assert result.exit_code == 0, result.output
    documents = [d for d in yaml.safe_load_all(result.output) if d]
    assert [d["spec"]["names"]["kind"] for d in documents] == [
        "RedisStream",
        "ConsumerGroup",
        "RetentionPolicy",
    ]


def test_cli_writes_what_is_checked_in(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["crds", "--output-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for kind in KINDS:
        assert (tmp_path / f"{kind.crd_name}.yaml").read_text() == (
            CRDS / f"{kind.crd_name}.yaml"
        ).read_text()


def test_cli_version() -> None:
    from streamherd import __version__

    assert CliRunner().invoke(main, ["version"]).output.strip() == __version__
