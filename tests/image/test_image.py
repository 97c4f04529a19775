"""The container image, built by `make image` (Dockerfile, buildah) and run here with
`buildah run`: a non-root numeric USER, the package's version and Lua scripts inside, no build
tools, and `streamherd run` inside it reconciling a ConsumerGroup against the local cluster and
a real Redis on the host network."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e import image
from e2e.cluster.processes import OperatorProcess, wait_until
from e2e.cluster.redis import RedisServer
from tests.harness import Harness
from tests.test_packaging import normalised, pinned_versions

from streamherd import __version__


@pytest.fixture(scope="module")
def container() -> Iterator[str]:
    if not image.image_exists(image.IMAGE):
        pytest.fail(f"no image {image.IMAGE}: run `make image` first (make test does)")
    name = image.new_container()
    yield name
    image.remove_container(name)


def inside(container: str, *command: str) -> str:
    result = subprocess.run(
        image.run_argv(container, command), capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_runs_as_a_numeric_non_root_user(container: str) -> None:
    assert inside(container, "id", "-u") == "65532"
    assert inside(container, "id", "-g") == "65532"


def test_carries_the_package_its_scripts_and_no_build_tools(container: str) -> None:
    assert inside(container, "streamherd", "version") == __version__
    listed = inside(
        container,
        "python3",
        "-c",
        "import importlib.resources as r;"
        "print(' '.join(sorted(p.name for p in r.files('streamherd.gateway')"
        ".joinpath('scripts').iterdir())))",
    )
    assert set(listed.split()) >= {"observe.lua", "ensure_group.lua", "recover.lua"}
    tools = inside(container, "sh", "-c", "for t in pip gcc cc git; do command -v $t || true; done")
    assert tools == "", f"build tools in the final image: {tools}"
    assert inside(container, "sh", "-c", "echo $PYTHONDONTWRITEBYTECODE") == "1"


def test_installs_the_versions_constraints_txt_pins(container: str) -> None:
    """The image is built from the lock, as the suite's own environment is: a release of
    redis-py or kopf after the last `make lock` cannot reach an image unseen."""
    listed = inside(
        container,
        "python3",
        "-c",
        "import importlib.metadata as m;"
        "print(' '.join(f\"{d.metadata['Name']}=={d.version}\" for d in m.distributions()))",
    )
    inside_image = dict(item.split("==") for item in listed.split())
    pins = pinned_versions()
    differing = {
        name: (version, pins.get(normalised(name)))
        for name, version in inside_image.items()
        if normalised(name) not in {"pip", "streamherd"} and pins.get(normalised(name)) != version
    }
    assert not differing, f"in the image (left) against constraints.txt (right): {differing}"
    assert {"kopf", "redis"} <= {normalised(n) for n in inside_image}


def test_the_root_file_system_is_not_writable_but_tmp_is(container: str) -> None:
    """The chart runs it with readOnlyRootFilesystem and an emptyDir on /tmp: the user may
    write nowhere but /tmp even before the kubelet makes the root read-only."""
    writable = inside(
        container,
        "sh",
        "-c",
        "for d in / /opt/streamherd /opt/streamherd/lib /etc /usr; do"
        " [ -w $d ] && echo $d; done; true",
    )
    assert writable == ""
    assert inside(container, "sh", "-c", "touch /tmp/probe && echo ok") == "ok"


@pytest.fixture
def run_in_image(
    container: str,
    kubeconfig: Path,
    tmp_path: Path,
    run_as_operator: Callable[..., OperatorProcess],
) -> Callable[..., OperatorProcess]:
    """Like run_as_operator, but the command runs inside the image, its kubeconfig mounted
    (a copy the image's user may read: the test's own is private to root)."""
    readable = tmp_path / "image-kubeconfig"
    shutil.copyfile(kubeconfig, readable)
    readable.chmod(0o644)

    def run(cmd: list[str], env: dict[str, str] | None = None, **options: Any) -> OperatorProcess:
        argv = image.run_argv(
            container,
            cmd,
            env={"KUBECONFIG": "/kube/config", **(env or {})},
            mounts={str(readable): "/kube/config"},
        )
        return run_as_operator(argv, **options)

    return run


def test_the_operator_in_the_image_reconciles_a_group(
    cluster_objects: Any,
    redis_server_factory: Callable[..., RedisServer],
    run_in_image: Callable[..., OperatorProcess],
) -> None:
    h = Harness(
        api=cluster_objects, redis_server=redis_server_factory("7.0"), start_operator=run_in_image
    )
    h.r.xadd("orders", {"n": "1"})
    h.stream("orders")
    h.group("fulfilment", startId="0")
    h.start()
    h.wait_ready("ConsumerGroup", "fulfilment", timeout=60)
    assert "fulfilment" in h.groups_in_redis("orders")
    h.wait_status("ConsumerGroup", "fulfilment", lambda s: s.get("lag") == 1, timeout=30)
    # What the kubelet does: SIGTERM to the container's process (not to buildah around it).
    assert h.operator is not None
    (pid,) = descendants_running(h.operator.pid, "streamherd run")
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not h.operator.running, 20, message=lambda: h.logs()[-3000:])
    assert h.operator.returncode == 0, h.logs()[-3000:]


def descendants_running(root: int, text: str) -> list[int]:
    """Processes below ``root`` whose command line contains ``text``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            cmdline = (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if text.encode() in cmdline and b"buildah" not in cmdline:
            found.append(pid)
    return found
