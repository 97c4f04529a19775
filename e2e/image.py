"""Build and run streamherd's container image on a machine without a container engine or a
registry: Debian's mmdebstrap makes the base, buildah builds the real Dockerfile, and
`buildah run --isolation chroot` runs a command in it as the image's USER, on the host network.

    python -m e2e.image build      # what `make image` runs
    python -m e2e.image run -- streamherd version

In a CI with Docker, `docker build .` builds the same Dockerfile from a public slim Python
base; nothing here is needed there.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from streamherd import __version__

REPO_ROOT = Path(__file__).resolve().parents[1]
IMAGE = os.environ.get("STREAMHERD_IMAGE_TAG", "localhost/streamherd:dev")
BASE = "localhost/streamherd-base:bookworm"
PACKAGES = ("buildah", "podman", "mmdebstrap")
# A machine behind a TLS-intercepting proxy trusts its CA through these files; the build's
# `pip install` must trust it too. Mounted read-only for the build only (never in the image).
HOST_TRUST = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pip.conf")


def _run(argv: Sequence[str], **options: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), check=True, text=True, **options)  # type: ignore[call-overload, no-any-return]


def ensure_tools() -> None:
    missing = [p for p in PACKAGES if shutil.which(p) is None]
    if not missing:
        return
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        _run([*sudo, "apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL)
        _run(
            [*sudo, "apt-get", "install", "-y", "-q", *missing], env=env, stdout=subprocess.DEVNULL
        )
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        raise SystemExit(
            f"FATAL: could not install {' '.join(missing)} with apt-get: {exc}"
        ) from exc


def image_exists(name: str) -> bool:
    return subprocess.run(["podman", "image", "exists", name], check=False).returncode == 0


def build_base() -> None:
    """Debian bookworm with python3 and venv, from Debian's mirror (no registry involved)."""
    if image_exists(BASE):
        return
    with tempfile.TemporaryDirectory(prefix="streamherd-base-") as tmp:
        tar = Path(tmp) / "base.tar"
        _run(
            [
                "mmdebstrap",
                "--variant=minbase",
                "--include=python3,python3-venv,ca-certificates",
                "bookworm",
                str(tar),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _run(["podman", "import", str(tar), BASE], stdout=subprocess.DEVNULL)


def build_image(tag: str = IMAGE) -> None:
    volumes = [
        arg for path in HOST_TRUST if Path(path).exists() for arg in ("-v", f"{path}:{path}:ro")
    ]
    _run(
        [
            "buildah",
            "bud",
            "--isolation",
            "chroot",
            "--layers",  # unchanged steps come from the cache: a rebuild takes seconds
            *volumes,
            "--build-arg",
            f"BASE={BASE}",
            "--build-arg",
            f"VERSION={__version__}",
            "-t",
            tag,
            str(REPO_ROOT),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def run_argv(
    container: str,
    command: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    mounts: dict[str, str] | None = None,
) -> list[str]:
    """The command line that runs ``command`` inside a working container of the image, as its
    USER, on the host network; ``mounts`` maps host paths to read-only container paths."""
    argv = ["buildah", "run", "--isolation", "chroot", "--network", "host"]
    for name, value in (env or {}).items():
        argv += ["--env", f"{name}={value}"]
    for host, inside in (mounts or {}).items():
        argv += ["-v", f"{host}:{inside}:ro"]
    return [*argv, container, "--", *command]


def new_container(image: str = IMAGE) -> str:
    """A working container of the image (remove it with :func:`remove_container`)."""
    return _run(["buildah", "from", image], capture_output=True).stdout.strip()


def remove_container(container: str) -> None:
    subprocess.run(["buildah", "rm", container], check=False, capture_output=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.image")
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("build", help="install the tools, build the base and the image")
    run = sub.add_parser("run", help="run a command in the image")
    run.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    ensure_tools()
    if args.what == "build":
        build_base()
        build_image()
        print(IMAGE)
        return 0
    container = new_container()
    try:
        command = [c for c in args.command if c != "--"] or ["streamherd", "version"]
        return subprocess.run(run_argv(container, command), check=False).returncode
    finally:
        remove_container(container)


if __name__ == "__main__":
    sys.exit(main())
