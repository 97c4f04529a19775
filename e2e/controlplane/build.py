"""Build the pinned Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager)
from source through the Go module proxy, into a cache outside the work tree.

    python3 -m e2e.controlplane.build          # builds if missing, prints the directory
    python3 -m e2e.controlplane.build --force  # rebuilds

The recipe is ``e2e/controlplane/go.mod``: a wrapper module that requires ``k8s.io/kubernetes``
(whose own go.mod replaces its staging modules with paths its module zip lacks, so it cannot be
``go install``-ed) and replaces each ``k8s.io/*`` staging module with its published ``v0.x``
twin; etcd's server module is required beside it. Binaries land in
``~/.cache/streamherd/control-plane/<kubernetes version>/`` (``$STREAMHERD_CONTROL_PLANE_CACHE``
overrides the parent directory) with a ``BUILT`` stamp naming the go.mod's hash: a changed
recipe rebuilds. Stdlib only, so ``make control-plane`` needs no virtualenv.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
GO_MOD = HERE / "go.mod"
BINARIES = {  # binary name -> Go package
    "etcd": "go.etcd.io/etcd/server/v3",
    "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
    "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
}
STAMP = "BUILT"


def _required_version(module: str) -> str:
    match = re.search(rf"^\s*{re.escape(module)}\s+(v\S+)", GO_MOD.read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"{GO_MOD} does not require {module}")
    return match.group(1)


def kubernetes_version() -> str:
    """The pinned Kubernetes release (from go.mod), e.g. ``v1.37.2``."""
    return _required_version("k8s.io/kubernetes")


def etcd_version() -> str:
    return _required_version("go.etcd.io/etcd/server/v3")


def ldflags(package: str) -> str:
    """Stripped; Kubernetes binaries also told their version (``/version``, and what
    ``kubectl version`` shows), as the release build's ``hack/lib/version.sh`` does."""
    flags = ["-s", "-w"]
    if package.startswith("k8s.io/"):
        version = kubernetes_version()
        major, minor = version.lstrip("v").split(".")[:2]
        for name, value in (
            ("gitVersion", version),
            ("gitMajor", major),
            ("gitMinor", minor),
            ("gitTreeState", "clean"),
        ):
            flags.append(f"-X k8s.io/component-base/version.{name}={value}")
    return " ".join(flags)


def recipe_hash() -> str:
    digest = hashlib.sha256(GO_MOD.read_bytes() + (HERE / "go.sum").read_bytes())
    for package in BINARIES.values():
        digest.update(ldflags(package).encode())
    return digest.hexdigest()[:16]


def cache_dir() -> Path:
    root = os.environ.get("STREAMHERD_CONTROL_PLANE_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "streamherd" / "control-plane"
    return base / kubernetes_version()


def built() -> Path | None:
    """The directory of up-to-date binaries, or None if they must be built."""
    directory = cache_dir()
    stamp = directory / STAMP
    if not stamp.exists() or stamp.read_text().split()[:1] != [recipe_hash()]:
        return None
    if not all((directory / name).is_file() for name in BINARIES):
        return None
    return directory


def go_binary() -> str:
    found = shutil.which("go") or (
        "/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None
    )
    if found is None:
        raise RuntimeError("no Go toolchain: install Go >= 1.26 (or put it on PATH)")
    return found


def build(force: bool = False) -> Path:
    """Build into the cache unless up to date; returns the binaries' directory."""
    if not force and (done := built()) is not None:
        return done
    directory = cache_dir()
    staging = directory.with_name(directory.name + ".building")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    env = {
        **os.environ,
        "CGO_ENABLED": "0",
        # Two compile jobs on a 2-core machine shared with others; go.sum must be complete;
        # no VCS stamp (the wrapper module's git state says nothing about the binaries).
        "GOFLAGS": f"{os.environ.get('GOFLAGS', '')} -p=2 -mod=readonly -buildvcs=false".strip(),
        "GOTOOLCHAIN": "local",
    }
    started = time.monotonic()
    print(
        f"building Kubernetes {kubernetes_version()} control plane and etcd {etcd_version()} "
        f"into {directory} (a fresh build takes several minutes)",
        file=sys.stderr,
        flush=True,
    )
    for name, package in BINARIES.items():
        subprocess.run(
            [
                *(["nice", "-n", "10"] if shutil.which("nice") else []),
                go_binary(),
                "build",
                "-trimpath",
                f"-ldflags={ldflags(package)}",
                "-o",
                str(staging / name),
                package,
            ],
            cwd=HERE,
            env=env,
            check=True,
        )
    elapsed = time.monotonic() - started
    (staging / STAMP).write_text(f"{recipe_hash()} built in {elapsed:.0f}s\n")
    shutil.rmtree(directory, ignore_errors=True)
    staging.rename(directory)
    print(f"built in {elapsed:.0f}s: {directory}", file=sys.stderr)
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    args = parser.parse_args()
    try:
        print(build(force=args.force))
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        sys.exit(f"control-plane build failed: {exc}")


if __name__ == "__main__":
    main()
