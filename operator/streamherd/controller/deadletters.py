"""`streamherd dlq list|show|replay|purge`: the dead-letter streams of a RedisStream.

Where Redis is and who may read it come from the RedisStream resource through the kubeconfig,
resolved exactly as the operator resolves it (``SecretCache.resolve``: the same Secrets, TLS
and ACL user), or from a URL given on the command line. Which dead-letter streams: each
ConsumerGroup's ``deadLetter.stream`` on the RedisStream, and the default ``<key>:dlq``
(``{<key>}:dlq`` on a cluster) of its key, or of every key of its pattern (found by SCAN for
the dead-letter keys themselves, so those of streams already deleted are found too).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from streamherd.api import SpecError, parse
from streamherd.api.consumergroup import ConsumerGroupSpec, RecoveryStrategy
from streamherd.api.redisstream import RedisStreamSpec
from streamherd.controller.context import SecretCache
from streamherd.decisions import deadletter as dl
from streamherd.decisions.recovery import default_dead_letter_key
from streamherd.gateway import Endpoint, GatewayError, RedisGateway, SecretMissing
from streamherd.gateway import deadletter as redis_dl
from streamherd.gateway.endpoint import TLSMaterial, sentinel_from_url
from streamherd.keys import DEAD_LETTER_SUFFIX
from streamherd.kube import KubeClient
from streamherd.kube import requests as rq
from streamherd.observations import DeadLetterRecord


class DeadLetterError(Exception):
    """Something the command cannot go on without: said in one line, exit code 1."""


@dataclass
class Where:
    """What the command line names: a RedisStream resource, or a URL and keys."""

    namespace: str | None = None
    redisstream: str | None = None
    url: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_password: str | None = field(default=None, repr=False)
    ca_cert: bytes | None = None
    client_cert: bytes | None = field(default=None, repr=False)
    client_key: bytes | None = field(default=None, repr=False)
    cluster: bool = False
    key: str | None = None
    pattern: str | None = None
    dead_letters: tuple[str, ...] = ()
    strategy: RecoveryStrategy = RecoveryStrategy.REQUEUE
    """For groups without a ConsumerGroup (and every group with --url)."""


@dataclass
class Target:
    gateway: RedisGateway
    name: str
    """For messages: "RedisStream ns/name" or the endpoint."""
    key: str | None
    pattern: str | None
    cluster: bool
    dead_letters: set[str]
    """Dead-letter keys named explicitly (configured deadLetter.stream, --dead-letter)."""
    strategies: dict[str, RecoveryStrategy]
    default: RecoveryStrategy

    async def close(self) -> None:
        await self.gateway.close()


async def connect(where: Where, kube: KubeClient | None) -> Target:
    if where.redisstream is not None:
        if kube is None or where.namespace is None:
            raise DeadLetterError("a RedisStream needs a namespace and Kubernetes credentials")
        return await _from_resource(kube, where.namespace, where.redisstream, where.strategy)
    if where.url is None:
        raise DeadLetterError("name a RedisStream (-n NAMESPACE -s NAME) or a --url")
    if where.key is None and where.pattern is None and not where.dead_letters:
        raise DeadLetterError("with --url, name the stream: --key, --pattern or --dead-letter")
    tls = None
    if (
        where.ca_cert
        or where.client_cert
        or where.url.startswith(("rediss://", "rediss+sentinel://"))
    ):
        tls = TLSMaterial(
            ca_pem=where.ca_cert, client_cert_pem=where.client_cert, client_key_pem=where.client_key
        )
    try:
        sentinel = sentinel_from_url(where.url, password=where.sentinel_password)
    except ValueError as exc:
        raise DeadLetterError(str(exc)) from exc
    endpoint = Endpoint(
        url=where.url,
        username=where.username,
        password=where.password,
        tls=tls,
        cluster=where.cluster,
        sentinel=sentinel,
    )
    return Target(
        gateway=RedisGateway(endpoint),
        name=endpoint.display,
        key=where.key,
        pattern=where.pattern,
        cluster=where.cluster,
        dead_letters=set(where.dead_letters),
        strategies={},
        default=where.strategy,
    )


async def _from_resource(
    kube: KubeClient, namespace: str, name: str, default: RecoveryStrategy
) -> Target:
    where = f"RedisStream {namespace}/{name}"
    body = await kube.get(rq.REDIS_STREAMS, namespace, name)
    if body is None:
        raise DeadLetterError(f"{where} not found")
    try:
        spec = parse(RedisStreamSpec, body.get("spec"))
        endpoint = await SecretCache(kube).resolve(namespace, spec.redis)
    except (SpecError, SecretMissing) as exc:
        raise DeadLetterError(f"{where}: {exc}") from exc
    configured: set[str] = set()
    strategies: dict[str, RecoveryStrategy] = {}
    for group in await kube.list(rq.CONSUMER_GROUPS, namespace):
        try:
            group_spec = parse(ConsumerGroupSpec, group.get("spec"))
        except SpecError:
            continue
        if group_spec.stream_ref.name != name:
            continue
        group_name = group_spec.group_name or group["metadata"]["name"]
        strategies[group_name] = group_spec.recovery.strategy
        if group_spec.recovery.dead_letter.stream:
            configured.add(group_spec.recovery.dead_letter.stream)
    return Target(
        gateway=RedisGateway(endpoint),
        name=f"{where} ({endpoint.display})",
        key=spec.key,
        pattern=spec.key_pattern,
        cluster=endpoint.cluster,
        dead_letters=configured,
        strategies=strategies,
        default=default,
    )


async def dead_letter_keys(target: Target) -> dict[str, int | None]:
    """The target's dead-letter streams that hold records (and those named explicitly, even
    empty), with their lengths (None: the key is not a stream)."""
    candidates = set(target.dead_letters)
    if target.key is not None:
        default = default_dead_letter_key(target.key, cluster=target.cluster)
        if default is not None:
            candidates.add(default)
    if target.pattern is not None:
        globs = [target.pattern + DEAD_LETTER_SUFFIX]
        if target.cluster:
            globs.append("{" + target.pattern + "}" + DEAD_LETTER_SUFFIX)
        for glob in globs:
            candidates |= await target.gateway.scan_all(glob)
    ordered = sorted(candidates)
    found = await redis_dl.lengths(target.gateway, ordered) if ordered else {}
    return {k: n for k, n in found.items() if n != 0 or k in target.dead_letters}


async def records(target: Target, keys: Sequence[str]) -> list[DeadLetterRecord]:
    out: list[DeadLetterRecord] = []
    for key in keys:
        out += await redis_dl.read_all(target.gateway, key)
    return out


# ------------------------------------------------------------------ the commands


async def list_command(target: Target, *, as_json: bool) -> str:
    lengths = await dead_letter_keys(target)
    rows = dl.counts(await records(target, [k for k, n in lengths.items() if n]))
    if as_json:
        return json.dumps({"deadLetters": lengths, "counts": [asdict(r) for r in rows]}, indent=2)
    if not lengths:
        return f"no dead-letter records for {target.name}"
    lines = [f"dead-letter streams of {target.name}:"]
    lines += [f"  {k}: {'not a stream' if n is None else n}" for k, n in lengths.items()]
    lines.append(
        _table(
            ["DEAD-LETTER", "STREAM", "GROUP", "RECORDS", "OLDEST", "NEWEST", "LAST HELD BY"],
            [
                [
                    r.dead_letter,
                    r.stream,
                    r.group,
                    str(r.records),
                    r.oldest,
                    r.newest,
                    ",".join(r.consumers) or "-",
                ]
                for r in rows
            ],
        )
    )
    return "\n".join(lines)


async def show_command(
    target: Target, selection: dl.Selection, *, limit: int, as_json: bool
) -> str:
    lengths = await dead_letter_keys(target)
    found = [
        r
        for r in await records(target, [k for k, n in lengths.items() if n])
        if selection.matches_record(r)
    ]
    shown = found[:limit]
    if as_json:
        return json.dumps([asdict(r) for r in shown], indent=2)
    if not found:
        return f"no dead-letter records match, on {target.name}"
    rows = [
        [
            r.id,
            r.origin_id or "?",
            r.stream or "?",
            r.group or "?",
            r.consumer or "?",
            "?" if r.deliveries is None else str(r.deliveries),
            _fields(r.fields),
        ]
        for r in shown
    ]
    more = f"\n({len(found) - len(shown)} more: --limit)" if len(found) > len(shown) else ""
    return (
        _table(["RECORD", "ORIGIN", "STREAM", "GROUP", "CONSUMER", "DELIVERIES", "FIELDS"], rows)
        + more
    )


@dataclass(frozen=True)
class ReplayLine:
    step: dl.Step
    outcome: redis_dl.Replayed | None
    """None in a dry run."""


async def replay_command(
    target: Target, selection: dl.Selection, *, dry_run: bool, as_json: bool
) -> tuple[int, str]:
    if selection.empty:
        return 1, "name what to replay: --group, --source, --id, --origin, or --all"
    lengths = await dead_letter_keys(target)
    found, foreign = dl.entries(await records(target, [k for k, n in lengths.items() if n]))
    chosen = [e for e in found if selection.matches(e)]
    streams = sorted({e.stream for e in chosen})
    groups_on = {s: await redis_dl.groups(target.gateway, s) for s in streams}
    consumers: dict[tuple[str, str], list[str]] = {}
    for e in chosen:
        if target.strategies.get(e.group, target.default) is RecoveryStrategy.CLAIM:
            key = (e.stream, e.group)
            if key not in consumers:
                consumers[key] = [c for c, _ in await redis_dl.consumers(target.gateway, *key)]
    steps = dl.plan(
        chosen,
        strategies=target.strategies,
        default=target.default,
        consumers=consumers,
        groups_on=groups_on,
    )
    lines: list[ReplayLine] = []
    for step in steps:
        outcome = None
        if not dry_run:
            e = step.entry
            outcome = await redis_dl.replay(
                target.gateway,
                e.dead_letter,
                e.stream,
                e.group,
                e.origin_id,
                e.record_ids,
                claim_to=step.claim_to,
            )
        lines.append(ReplayLine(step, outcome))
    failed = sum(1 for line in lines if line.outcome and line.outcome.outcome in _KEPT)
    if as_json:
        return (1 if failed else 0), json.dumps(
            [
                {
                    "deadLetter": line.step.entry.dead_letter,
                    "stream": line.step.entry.stream,
                    "group": line.step.entry.group,
                    "originId": line.step.entry.origin_id,
                    "records": list(line.step.entry.record_ids),
                    "method": str(line.step.method),
                    "claimTo": line.step.claim_to,
                    "notes": list(line.step.notes),
                    "outcome": asdict(line.outcome) if line.outcome else None,
                }
                for line in lines
            ],
            indent=2,
        )
    text = [f"{'would replay' if dry_run else 'replaying'} {len(steps)} entries of {target.name}"]
    for line in lines:
        text.append(("  would " if dry_run else "  ") + line.step.describe())
        if line.outcome is not None:
            text.append(f"    -> {_outcome(line.outcome)}")
    if foreign and selection.everything:
        text.append(f"  {len(foreign)} records without streamherd's fields were left alone")
    if not steps:
        text.append("  nothing matches")
    return (1 if failed else 0), "\n".join(text)


_KEPT = ("nogroup", "mismatch", "parts")


def _outcome(r: redis_dl.Replayed) -> str:
    return {
        "claimed": f"claimed back into the group's pending entries as {r.id}",
        "copied": f"copied as {r.id}",
        "unread": f"the group has not read {r.id} yet: it will, nothing added",
        "gone": "already replayed (or purged): nothing done",
        "nogroup": "the stream or the group does not exist: kept in the dead-letter stream",
        "mismatch": f"record {r.id} is not of this entry: kept",
        "parts": "an entry in several records cannot be copied in one write and its original "
        "is gone: kept",
    }.get(r.outcome, r.outcome) + (f" ({r.deleted} record(s) removed)" if r.deleted else "")


async def purge_command(target: Target, selection: dl.Selection, *, yes: bool) -> tuple[int, str]:
    if selection.empty:
        return 1, "name what to purge: --group, --source, --id, --origin, or --all"
    lengths = await dead_letter_keys(target)
    doomed: dict[str, list[str]] = {}
    for r in await records(target, [k for k, n in lengths.items() if n]):
        if selection.matches_record(r):
            doomed.setdefault(r.key, []).append(r.id)
    total = sum(len(ids) for ids in doomed.values())
    if not yes:
        return 1, (
            f"would delete {total} dead-letter records of {target.name} "
            f"({', '.join(f'{k}: {len(v)}' for k, v in doomed.items()) or 'none'}); "
            "add --yes to delete them"
        )
    deleted = 0
    for key, ids in doomed.items():
        deleted += await redis_dl.purge(target.gateway, key, ids)
    return 0, f"deleted {deleted} dead-letter records of {target.name}"


async def run(where: Where, kube: KubeClient | None, command: Any) -> tuple[int, str]:
    """Connect, run ``command(target)``, close; Redis trouble becomes one line, exit 1."""
    target = await connect(where, kube)
    try:
        result = await command(target)
    except GatewayError as exc:
        return 1, f"{target.name}: Redis: {exc.message}"
    finally:
        await target.close()
    return result if isinstance(result, tuple) else (0, result)


def _fields(fields: Any, width: int = 60) -> str:
    text = " ".join(f"{_printable(k)}={_printable(v)}" for k, v in fields.items())
    return text if len(text) <= width else text[: width - 3] + "..."


def _printable(text: str) -> str:
    """A field as one line of a table: bytes that are not UTF-8 (surrogate escapes, as the
    gateway decodes them) and control characters as backslash escapes."""
    decoded = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in decoded)


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in [header, *rows]
    )
