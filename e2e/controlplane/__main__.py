"""``python -m e2e.controlplane up --kubeconfig PATH [--crds crds/]``: a real control plane
(etcd, kube-apiserver, kube-controller-manager, built by ``make control-plane``) with the node
agent, until SIGINT/SIGTERM.

Writes an admin kubeconfig, installs the CRDs, prints where things are and how long start-up
took, and runs until interrupted; then stops every process it started and removes its temp dir.
``python -m e2e.controlplane build`` builds (or finds) the binaries.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import threading
from pathlib import Path

from e2e.controlplane import build


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.controlplane", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("build", help="build the binaries into the cache (if missing)")
    up = commands.add_parser("up", help="run the control plane and the node agent")
    up.add_argument("--kubeconfig", required=True, type=Path, help="where to write a kubeconfig")
    up.add_argument(
        "--crds", action="append", type=Path, help="CRD file or folder (default: crds/)"
    )
    up.add_argument("--no-node", action="store_true", help="no node agent: no pod runs")
    up.add_argument("--log-dir", type=Path, help="where pod logs go (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.command == "build":
        print(build.build())
        return 0

    from e2e.cluster.local import DEFAULT_CRDS
    from e2e.cluster.objects import apply_crds
    from e2e.controlplane.controlplane import ControlPlane

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    plane = ControlPlane().start()
    node = None
    try:
        for crds in args.crds or [DEFAULT_CRDS]:
            apply_crds(plane.kubeconfig(), crds)
        if not args.no_node:
            node = plane.start_node_agent(log_dir=args.log_dir)
        args.kubeconfig.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(plane.kubeconfig(), args.kubeconfig)
        args.kubeconfig.chmod(0o600)
        print(f"Kubernetes {build.kubernetes_version()} at {plane.url}", flush=True)
        print(f"started in:   {plane.started_in:.1f}s", flush=True)
        print(f"kubeconfig:   {args.kubeconfig}", flush=True)
        print(f"logs:         {plane.base_dir}/*.log", flush=True)
        if node is not None:
            print(f"pod logs:     {node.log_dir}", flush=True)
        print("ready (Ctrl-C to stop)", flush=True)
        stop.wait()
    finally:
        if node is not None:
            node.stop()
            node.cleanup()
        plane.cleanup()
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
