"""``python -m e2e.cluster up --kubeconfig PATH [--crds crds/]``: a local cluster until SIGINT/SIGTERM.

Starts the API emulator and the simulated kubelet, writes a kubeconfig for them, prints where
things are, and runs until interrupted; then stops every pod process it started.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from e2e.cluster.local import DEFAULT_CRDS, LocalCluster


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.cluster", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="run the API emulator and the kubelet")
    up.add_argument("--kubeconfig", required=True, type=Path, help="where to write a kubeconfig")
    up.add_argument(
        "--crds",
        action="append",
        type=Path,
        help=f"CRD file or folder to install (repeatable; default: {DEFAULT_CRDS})",
    )
    up.add_argument("--port", type=int, default=0, help="API port (default: any free one)")
    up.add_argument("--namespace", default="default", help="the kubeconfig's namespace")
    up.add_argument("--no-kubelet", action="store_true", help="only the API, no pods run")
    up.add_argument("--log-dir", type=Path, help="where pod logs go (default: a temp dir)")
    args = parser.parse_args(argv)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    cluster = LocalCluster(
        crds=args.crds or [DEFAULT_CRDS], port=args.port, record_requests=False, keep_history=False
    ).start()
    try:
        if args.namespace != "default":
            cluster.api.apply(
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": args.namespace}}
            )
        kubelet = None
        if not args.no_kubelet:
            kubelet = cluster.start_kubelet(log_dir=args.log_dir)
        cluster.write_kubeconfig(args.kubeconfig, args.namespace)
        print(f"API emulator: {cluster.url}", flush=True)
        print(f"kubeconfig:   {args.kubeconfig}", flush=True)
        if kubelet is not None:
            print(f"pod logs:     {kubelet.log_dir}", flush=True)
        print("ready (Ctrl-C to stop)", flush=True)
        stop.wait()
    finally:
        cluster.stop()
        if cluster.kubelet is not None:
            cluster.kubelet.cleanup()  # removes the log dir only if it made it
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
