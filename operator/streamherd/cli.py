"""The `streamherd` command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from streamherd import __version__
from streamherd.api.kinds import KINDS, crd_yaml


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """streamherd: Redis Streams consumer groups, run for you on Kubernetes."""


@main.command()
def version() -> None:
    """Print the version."""
    click.echo(__version__)


@main.command()
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write one file per CRD here instead of printing them.",
)
def crds(output_dir: Path | None) -> None:
    """Print (or write) the CustomResourceDefinitions, generated from the API models."""
    if output_dir is None:
        click.echo("---\n".join(crd_yaml(kind) for kind in KINDS), nl=False)
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    for kind in KINDS:
        (output_dir / f"{kind.crd_name}.yaml").write_text(crd_yaml(kind))


@main.command()
@click.option(
    "-n",
    "--namespace",
    "namespaces",
    multiple=True,
    envvar="STREAMHERD_NAMESPACES",
    help="Watch only this namespace (repeat for more; globs allowed). Default: all namespaces.",
)
@click.option(
    "--metrics-port",
    type=int,
    default=8080,
    show_default=True,
    envvar="STREAMHERD_METRICS_PORT",
    help="Serve Prometheus metrics on this port (/metrics); 0 turns it off.",
)
@click.option(
    "--health-port",
    type=int,
    default=8081,
    show_default=True,
    envvar="STREAMHERD_HEALTH_PORT",
    help="Serve the liveness probe on this port (/healthz); 0 turns it off.",
)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default="INFO",
    show_default=True,
    envvar="STREAMHERD_LOG_LEVEL",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    envvar="STREAMHERD_LOG_FORMAT",
)
@click.option(
    "--peering",
    default=None,
    envvar="STREAMHERD_PEERING",
    help="Run several replicas with kopf peering under this name (one active at a time). "
    "Default: standalone, for the single replica the chart installs.",
)
def run(
    namespaces: tuple[str, ...],
    metrics_port: int,
    health_port: int,
    log_level: str,
    log_format: str,
    peering: str | None,
) -> None:
    """Run the operator (credentials: in-cluster service account, or $KUBECONFIG)."""
    import asyncio
    import logging

    import kopf

    from streamherd import main as operator

    namespaces = tuple(n for item in namespaces for n in item.split(",") if n)
    level = log_level.upper()
    kopf.configure(
        debug=level == "DEBUG",
        verbose=level in ("DEBUG", "INFO"),
        quiet=level in ("WARNING", "ERROR"),
        log_format=kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.FULL,
    )
    logging.getLogger().setLevel(level)
    settings = kopf.OperatorSettings()
    operator.configure(settings, peering=peering)
    operator.Runtime.metrics_port = metrics_port or None
    identity: Any = operator_identity()  # kopf's Identity type (a NewType of str) is private
    asyncio.run(
        kopf.operator(
            registry=operator.registry,
            settings=settings,
            clusterwide=not namespaces,
            namespaces=namespaces,
            standalone=peering is None,
            peering_name=peering,
            identity=identity,
            liveness_endpoint=f"http://0.0.0.0:{health_port}/healthz" if health_port else None,
        )
    )


def operator_identity() -> str:
    """Who this operator process is (kopf's peering identity): the pod's name when the
    Deployment passes it in (POD_NAME), else host/pid. kopf's own guess asks the password
    database for the user's name, which fails under a uid it does not list: the image's
    numeric USER, or the random uids OpenShift assigns."""
    import os
    import socket

    return os.environ.get("POD_NAME") or f"{socket.gethostname()}/{os.getpid()}"


@main.command()
@click.option("-n", "--namespace", required=True, help="Namespace of the ConsumerGroup.")
@click.option("-g", "--group", "name", required=True, help="Name of the ConsumerGroup resource.")
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default="WARNING",
    show_default=True,
    envvar="STREAMHERD_LOG_LEVEL",
)
def janitor(namespace: str, name: str, log_level: str) -> None:
    """Run one janitor pass for a ConsumerGroup (what its CronJob runs in mode CronJob):
    recover stranded work, dead-letter poison messages, remove dead consumers, and write
    the status counters. Credentials: in-cluster service account, or $KUBECONFIG."""
    import asyncio
    import logging

    from streamherd.controller.janitor import run_command
    from streamherd.kube import KubeClient

    logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")

    async def once() -> tuple[int, str]:
        kube = KubeClient.from_environment()
        try:
            return await run_command(kube, namespace, name)
        finally:
            await kube.close()

    try:
        code, line = asyncio.run(once())
    except Exception as exc:  # the API unreachable, no credentials: one clear line
        code, line = 1, f"janitor of ConsumerGroup {namespace}/{name} failed: {exc}"
    click.echo(line, err=code != 0)
    raise SystemExit(code)
