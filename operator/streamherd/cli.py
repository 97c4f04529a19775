"""The `streamherd` command."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from streamherd import __version__
from streamherd.api.kinds import KINDS, crd_yaml
from streamherd.decisions.leadership import ElectionTiming
from streamherd.kube.budget import DEFAULT_WRITE_BURST, DEFAULT_WRITE_QPS

FC = TypeVar("FC", bound=Callable[..., Any])

WRITES_DRAIN_SECONDS = 30.0
"""How long a one-shot command waits for its queued status and Event writes before exiting."""


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


def _election_timing(field: str, help: str) -> Callable[[FC], FC]:
    """A leader-election duration flag (--lease-duration ...), its default ElectionTiming's."""
    return click.option(
        "--" + field.replace("_", "-"),
        type=float,
        default=getattr(ElectionTiming, field),
        show_default=True,
        envvar="STREAMHERD_" + field.upper(),
        help=help,
    )


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
    "--leader-election/--no-leader-election",
    default=False,
    show_default=True,
    envvar="STREAMHERD_LEADER_ELECTION",
    help="Run as one of several replicas: only the holder of a coordination.k8s.io Lease is "
    "active, the others stand by (the chart turns it on). Off: this process is the only one.",
)
@click.option(
    "--leader-election-namespace",
    default=None,
    envvar="STREAMHERD_LEADER_ELECTION_NAMESPACE",
    help="The Lease's namespace. Default: the pod's (POD_NAMESPACE, or its service account's).",
)
@click.option(
    "--leader-election-id",
    default="streamherd",
    show_default=True,
    envvar="STREAMHERD_LEADER_ELECTION_ID",
    help="The Lease's name: replicas with the same one elect one leader.",
)
@_election_timing(
    "lease_duration", "Seconds a standby waits, after it last saw the Lease renewed, to take it."
)
@_election_timing(
    "renew_deadline", "Seconds the leader tries to renew before it stops every loop (then exits)."
)
@_election_timing("retry_period", "Seconds between renewals, and between a standby's tries.")
@click.option(
    "--discovery",
    default="registry,notifications",
    show_default=True,
    envvar="STREAMHERD_DISCOVERY",
    help="How new streams of a keyPattern are found besides SCAN (always on, the slow "
    "reconcile): registry (what the SDK's publish writes), notifications (keyspace "
    "notifications, when the server enables them); comma-separated, or none.",
)
@click.option(
    "--api-write-qps",
    type=float,
    default=DEFAULT_WRITE_QPS,
    show_default=True,
    envvar="STREAMHERD_API_WRITE_QPS",
    help="Client-side limit of the operator's own Kubernetes writes (status, /scale, Events, "
    "Deployments) per second on average, like client-go's QPS.",
)
@click.option(
    "--api-write-burst",
    type=int,
    default=DEFAULT_WRITE_BURST,
    show_default=True,
    envvar="STREAMHERD_API_WRITE_BURST",
    help="Writes allowed at once above --api-write-qps (client-go's burst).",
)
@click.option(
    "--api-retry-for",
    type=float,
    default=30.0,
    show_default=True,
    envvar="STREAMHERD_API_RETRY_FOR",
    help="Seconds a request is retried on 429/5xx/timeouts (jittered backoff, Retry-After "
    "honoured) before the resource's condition says ApiUnavailable.",
)
@click.option(
    "--api-timeout",
    type=click.FloatRange(min=0.1),
    default=30.0,
    show_default=True,
    envvar="STREAMHERD_API_TIMEOUT",
    help="Seconds one API request may take before it counts as a timeout (retried within "
    "--api-retry-for). An API server whose etcd is gone answers nothing: this is how soon the "
    "operator notices.",
)
@click.option(
    "--status-interval",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    envvar="STREAMHERD_STATUS_INTERVAL",
    help="Seconds between writes of a resource's status numbers (lag, pending, length...): "
    "conditions, replicas and scale actions are written at once, never waiting on this.",
)
@click.option(
    "--status-writes-per-second",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    envvar="STREAMHERD_STATUS_WRITES_PER_SECOND",
    help="The budget of status writes of numbers alone, over all resources: with many "
    "resources each one's numbers are written less often than --status-interval (0: no "
    "budget). Conditions and scale actions never wait on it.",
)
@click.option(
    "--min-poll-interval",
    type=click.FloatRange(min=0.1),
    default=0.1,
    show_default=True,
    envvar="STREAMHERD_MIN_POLL_INTERVAL",
    help="Seconds: the floor under every ConsumerGroup's pollInterval (a faster one is polled "
    "at this pace). The default is the CRD's own minimum.",
)
@click.option(
    "--deployment-relist-interval",
    type=click.FloatRange(min=1),
    default=30.0,
    show_default=True,
    envvar="STREAMHERD_DEPLOYMENT_RELIST_INTERVAL",
    help="Seconds between LISTs of the Deployments ConsumerGroups use, per namespace: what "
    "the watch missed while broken (a deletion) is noticed within this time.",
)
def run(
    namespaces: tuple[str, ...],
    metrics_port: int,
    health_port: int,
    log_level: str,
    log_format: str,
    leader_election: bool,
    leader_election_namespace: str | None,
    leader_election_id: str,
    lease_duration: float,
    renew_deadline: float,
    retry_period: float,
    discovery: str,
    api_write_qps: float,
    api_write_burst: int,
    api_retry_for: float,
    api_timeout: float,
    status_interval: float,
    status_writes_per_second: float,
    min_poll_interval: float,
    deployment_relist_interval: float,
) -> None:
    """Run the operator (credentials: in-cluster service account, or $KUBECONFIG)."""
    import asyncio
    import logging

    import kopf

    from streamherd import main as operator
    from streamherd.kube import Limits

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
    operator.configure(settings)
    operator.Runtime.metrics_port = metrics_port or None
    operator.Runtime.limits = Limits(write_qps=api_write_qps, write_burst=api_write_burst)
    operator.Runtime.retry_for = api_retry_for
    operator.Runtime.timeout = api_timeout
    paths = {p.strip() for p in discovery.split(",") if p.strip() and p.strip() != "none"}
    unknown = paths - {"registry", "notifications"}
    if unknown:
        raise click.BadParameter(
            f"unknown discovery path(s) {sorted(unknown)}", param_hint="--discovery"
        )
    operator.Runtime.poller_options = {p: p in paths for p in ("registry", "notifications")}
    operator.Runtime.poller_options["min_interval"] = min_poll_interval
    operator.Runtime.status_interval = status_interval
    operator.Runtime.status_writes_per_second = status_writes_per_second
    operator.Runtime.deployment_relist_every = deployment_relist_interval
    identity: Any = operator_identity()  # kopf's Identity type (a NewType of str) is private
    operator.tune_garbage_collection()
    liveness = f"http://0.0.0.0:{health_port}/healthz" if health_port else None

    async def operate(stop_flag: asyncio.Event | None = None) -> None:
        await kopf.operator(
            registry=operator.registry,
            settings=settings,
            clusterwide=not namespaces,
            namespaces=namespaces,
            standalone=True,
            identity=identity,
            liveness_endpoint=liveness,
            stop_flag=stop_flag,
        )

    if not leader_election:
        asyncio.run(operate())
        return
    try:
        timing = ElectionTiming(lease_duration, renew_deadline, retry_period)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--lease-duration") from exc
    raise SystemExit(
        asyncio.run(
            operator.run_elected(
                timing,
                namespace=leader_election_namespace,
                name=leader_election_id,
                operate=operate,
                health_port=health_port or None,
            )
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
    the status counters. Credentials: in-cluster service account, or $KUBECONFIG. Exits 0;
    1 when nothing could be done; 2 when the pass ran but a permission was refused."""
    import asyncio
    import logging

    from streamherd.controller.janitor import run_command
    from streamherd.kube import KubeClient

    logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")

    async def once() -> tuple[int, str]:
        kube = KubeClient.from_environment()
        try:
            code, line = await run_command(kube, namespace, name)
            if not await kube.drain(WRITES_DRAIN_SECONDS):
                return (
                    1,
                    f"{line}; its status and Events were not all written within {WRITES_DRAIN_SECONDS:.0f} s",
                )
            return code, line
        finally:
            await kube.close()

    try:
        code, line = asyncio.run(once())
    except Exception as exc:  # the API unreachable, no credentials: one clear line
        code, line = 1, f"janitor of ConsumerGroup {namespace}/{name} failed: {exc}"
    click.echo(line, err=code != 0)
    raise SystemExit(code)


# ------------------------------------------------------------------ streamherd dlq


def _where_options(fn: Any) -> Any:
    options = [
        click.option("-n", "--namespace", help="Namespace of the RedisStream."),
        click.option(
            "-s",
            "--redisstream",
            help="The RedisStream: Redis and credentials as the operator resolves them.",
        ),
        click.option(
            "--url",
            envvar="STREAMHERD_REDIS_URL",
            help=(
                "Or a Redis URL (env STREAMHERD_REDIS_URL); redis+sentinel://s1:26379,s2:26379/"
                "MASTER/DB for Sentinel (its password from $STREAMHERD_REDIS_SENTINEL_PASSWORD)."
            ),
        ),
        click.option(
            "--username", envvar="STREAMHERD_REDIS_USERNAME", help="ACL user (with --url)."
        ),
        click.option(
            "--password-env",
            default="STREAMHERD_REDIS_PASSWORD",
            show_default=True,
            help="Environment variable holding the password (with --url; never on the command line).",
        ),
        click.option(
            "--ca-cert",
            type=click.Path(exists=True, dir_okay=False),
            help="CA bundle (PEM) for rediss://.",
        ),
        click.option(
            "--client-cert",
            type=click.Path(exists=True, dir_okay=False),
            help="Client certificate (PEM) for mutual TLS (with --client-key).",
        ),
        click.option(
            "--client-key",
            type=click.Path(exists=True, dir_okay=False),
            help="Its private key (PEM).",
        ),
        click.option("--cluster", is_flag=True, help="Redis Cluster (with --url)."),
        click.option("--key", help="The stream key (with --url)."),
        click.option(
            "--pattern", help="A key pattern (with --url): every stream's dead-letter stream."
        ),
        click.option(
            "--dead-letter",
            "dead_letters",
            multiple=True,
            help="A dead-letter stream key (repeat).",
        ),
        click.option(
            "--strategy",
            type=click.Choice(["Requeue", "Claim"]),
            default="Requeue",
            show_default=True,
            help="Recovery strategy of groups without a ConsumerGroup (all groups, with --url).",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _read(path: str | None) -> bytes | None:
    return Path(path).read_bytes() if path else None


def _selection_options(fn: Any) -> Any:
    options = [
        click.option("-g", "--group", "groups", multiple=True, help="Only this group (repeat)."),
        click.option(
            "--source", "sources", multiple=True, help="Only entries of this stream key (repeat)."
        ),
        click.option(
            "--id", "record_ids", multiple=True, help="Only this dead-letter record id (repeat)."
        ),
        click.option(
            "--origin",
            "origin_ids",
            multiple=True,
            help="Only the entry of this origin id (repeat).",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _dlq_run(options: dict[str, Any], command: Any) -> None:
    """Resolve where the dead letters are, run ``command(target)``, print, exit."""
    import asyncio
    import os

    from streamherd.api.consumergroup import RecoveryStrategy
    from streamherd.controller import deadletters

    ca_path = options.get("ca_cert")
    where = deadletters.Where(
        namespace=options.get("namespace") or "default",
        redisstream=options.get("redisstream"),
        url=options.get("url") if not options.get("redisstream") else None,
        username=options.get("username"),
        password=os.environ.get(options.get("password_env") or "") or None,
        sentinel_password=os.environ.get("STREAMHERD_REDIS_SENTINEL_PASSWORD") or None,
        ca_cert=Path(ca_path).read_bytes() if ca_path else None,
        client_cert=_read(options.get("client_cert")),
        client_key=_read(options.get("client_key")),
        cluster=bool(options.get("cluster")),
        key=options.get("key"),
        pattern=options.get("pattern"),
        dead_letters=tuple(options.get("dead_letters") or ()),
        strategy=RecoveryStrategy(options.get("strategy") or "Requeue"),
    )

    async def go() -> tuple[int, str]:
        kube = None
        if where.redisstream is not None:
            from streamherd.kube import KubeClient

            kube = KubeClient.from_environment()
        try:
            code, text = await deadletters.run(where, kube, command)
            if kube is not None and not await kube.drain(WRITES_DRAIN_SECONDS):
                return (
                    1,
                    f"{text}\n(its Events were not all written within {WRITES_DRAIN_SECONDS:.0f} s)",
                )
            return code, text
        finally:
            if kube is not None:
                await kube.close()

    try:
        code, text = asyncio.run(go())
    except Exception as exc:  # no credentials, the API unreachable, a missing resource
        code, text = 1, str(exc)
    click.echo(text, err=code != 0)
    raise SystemExit(code)


def _selection(options: dict[str, Any], everything: bool = False) -> Any:
    from streamherd.decisions.deadletter import Selection

    return Selection(
        groups=frozenset(options.get("groups") or ()),
        streams=frozenset(options.get("sources") or ()),
        record_ids=frozenset(options.get("record_ids") or ()),
        origin_ids=frozenset(options.get("origin_ids") or ()),
        everything=everything,
    )


@main.group()
def dlq() -> None:
    """Dead-letter streams: list, show, replay (after a fix), purge."""


@dlq.command("list")
@_where_options
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
def dlq_list(output: str, **options: Any) -> None:
    """Records per dead-letter stream, stream and group."""
    from streamherd.controller import deadletters

    _dlq_run(options, lambda t: deadletters.list_command(t, as_json=output == "json"))


@dlq.command("show")
@_where_options
@_selection_options
@click.option("--limit", type=int, default=20, show_default=True)
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
def dlq_show(limit: int, output: str, **options: Any) -> None:
    """Records: origin id, stream, group, last consumer, deliveries, fields."""
    from streamherd.controller import deadletters

    selection = _selection(options)
    _dlq_run(
        options,
        lambda t: deadletters.show_command(t, selection, limit=limit, as_json=output == "json"),
    )


@dlq.command("replay")
@_where_options
@_selection_options
@click.option("--all", "everything", is_flag=True, help="Every entry (with the filters given).")
@click.option("--dry-run", is_flag=True, help="Say what would be done; change nothing.")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
def dlq_replay(everything: bool, dry_run: bool, output: str, **options: Any) -> None:
    """Put entries back to the group they were poison for (after a fix), each once: by id
    into the group's pending entries (strategy Claim), or as a copy tagged for the group
    (Requeue). Replaying again does nothing: the records are deleted as each entry goes back."""
    from streamherd.controller import deadletters

    selection = _selection(options, everything)
    _dlq_run(
        options,
        lambda t: deadletters.replay_command(
            t, selection, dry_run=dry_run, as_json=output == "json"
        ),
    )


@dlq.command("purge")
@_where_options
@_selection_options
@click.option("--all", "everything", is_flag=True, help="Every record (with the filters given).")
@click.option("--yes", is_flag=True, help="Really delete (without it: say what would go).")
def dlq_purge(everything: bool, yes: bool, **options: Any) -> None:
    """Delete dead-letter records for good."""
    from streamherd.controller import deadletters

    selection = _selection(options, everything)
    _dlq_run(options, lambda t: deadletters.purge_command(t, selection, yes=yes))
