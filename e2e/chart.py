"""The Helm chart (helm/streamherd) through the helm-python-sdk wheel (Helm's Go SDK, no helm
binary): render it, keep its copied files in step, and write manifests/install.yaml.

    python -m e2e.chart sync        # `make chart`: files/ copies, then manifests/install.yaml

The chart cannot read files outside its directory, so it carries copies of crds/ and of
dashboards/ (the one source of each); tests/install fails when a copy or install.yaml is stale.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
CHART = REPO_ROOT / "helm" / "streamherd"
INSTALL_MANIFEST = REPO_ROOT / "manifests" / "install.yaml"
# What install.yaml installs: the release name and namespace `helm install streamherd` with
# `-n streamherd` would use.
RELEASE = NAMESPACE = "streamherd"
# The chart's copies: source in the repository -> copy in the chart.
COPIES: dict[Path, Path] = {
    **{p: CHART / "files" / "crds" / p.name for p in sorted((REPO_ROOT / "crds").glob("*.yaml"))},
    REPO_ROOT / "dashboards" / "streamherd.json": CHART / "files" / "streamherd.json",
    REPO_ROOT / "dashboards" / "alerts.yaml": CHART / "files" / "alerts.yaml",
}
HEADER = (
    "# streamherd's install manifest: the Helm chart helm/streamherd rendered with its default\n"
    "# values (release {release}, namespace {namespace}) by `make chart`. Do not edit.\n"
    "#   kubectl apply --server-side -f manifests/install.yaml\n"
)


@cache
def chart() -> Any:
    import helm_python

    return helm_python.Chart.load(CHART)


def render_files(
    values: Mapping[str, Any] | None = None, *, name: str = RELEASE, namespace: str = NAMESPACE
) -> dict[str, str]:
    """Template path -> rendered text (NOTES.txt included), as `helm template` renders them."""
    return dict(chart().render(dict(values or {}), name=name, namespace=namespace))


def render(
    values: Mapping[str, Any] | None = None, *, name: str = RELEASE, namespace: str = NAMESPACE
) -> list[dict[str, Any]]:
    """The objects the chart renders with ``values``, in Helm's install order of kinds."""
    objects = [
        obj
        for path, text in sorted(render_files(values, name=name, namespace=namespace).items())
        if path.endswith((".yaml", ".yml"))
        for obj in yaml.safe_load_all(text)
        if obj
    ]
    return sorted(objects, key=lambda o: INSTALL_ORDER.get(o["kind"], len(INSTALL_ORDER)))


# helm's InstallOrder (pkg/release/util/kind_sorter.go), the kinds this chart renders.
INSTALL_ORDER = {
    kind: i
    for i, kind in enumerate(
        [
            "Namespace",
            "NetworkPolicy",
            "PodDisruptionBudget",
            "ServiceAccount",
            "ConfigMap",
            "CustomResourceDefinition",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "Service",
            "Deployment",
        ]
    )
}


def install_manifest() -> str:
    """manifests/install.yaml as it must be: the Namespace (restricted Pod Security enforced),
    then the chart's objects with default values."""
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": NAMESPACE,
            "labels": {"pod-security.kubernetes.io/enforce": "restricted"},
        },
    }
    documents = [namespace, *render()]
    body = "".join("---\n" + yaml.safe_dump(doc, sort_keys=False, width=100) for doc in documents)
    return HEADER.format(release=RELEASE, namespace=NAMESPACE) + body


def stale_copies() -> list[Path]:
    return [copy for source, copy in COPIES.items() if not _same(source, copy)]


def _same(a: Path, b: Path) -> bool:
    return b.exists() and a.read_bytes() == b.read_bytes()


def sync() -> None:
    crds = CHART / "files" / "crds"
    crds.mkdir(parents=True, exist_ok=True)
    for old in set(crds.glob("*.yaml")) - set(COPIES.values()):
        old.unlink()  # a CRD removed from crds/
    for source, copy in COPIES.items():
        if not _same(source, copy):
            shutil.copyfile(source, copy)
    chart.cache_clear()
    INSTALL_MANIFEST.write_text(install_manifest())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.chart")
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("sync", help="refresh the chart's copies and manifests/install.yaml")
    sub.add_parser("manifest", help="print manifests/install.yaml as it should be")
    args = parser.parse_args(argv)
    if args.what == "sync":
        sync()
        print(INSTALL_MANIFEST.relative_to(REPO_ROOT))
    else:
        sys.stdout.write(install_manifest())
    return 0


if __name__ == "__main__":
    sys.exit(main())
