"""The one place that talks to Redis: connections, group lifecycle, key discovery, observation.

Every Redis command and Lua script the operator runs goes through ``RedisGateway``. One
gateway serves one endpoint and is shared by every resource on it (see ``pool``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from importlib import resources
from typing import Any

from redis import exceptions as rx
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff
from redis.crc import key_slot

from streamherd.connecting import ClientKeyFiles, sentinel_options, tls_options
from streamherd.gateway import durability as persistence
from streamherd.gateway.endpoint import Endpoint
from streamherd.gateway.errors import GatewayError, classify
from streamherd.observations import (
    EndpointProblem,
    GroupState,
    Observation,
    ServerDurability,
    StreamState,
    StreamStatus,
)

_typed_sentinel: Callable[..., Sentinel] = Sentinel
"""``Sentinel``, called through a typed name: redis-py types its constructor from 8.2 on and
not before, so a ``type: ignore`` on the call is an error under one of them (mypy strict)."""

CLIENT_NAME = "streamherd"

WAKE_CHECK_INTERVAL = 0.2
WAKE_CHECK_STREAMS = 2000
"""Seconds between the non-blocking rounds of a cluster wake-up read, and streams per round."""


def _script_text(name: str) -> str:
    return resources.files(__package__).joinpath(f"scripts/{name}.lua").read_text()


SCRIPT_LIBRARY = _script_text("ids")
"""Lua that every script starts with (Redis scripts cannot import): what several of them
need, written once (entry-id comparison)."""


class Script:
    """A Lua script shipped in ``gateway/scripts``, called by SHA; the library first."""

    def __init__(self, name: str) -> None:
        self.name = name
        own = _script_text(name)
        # A shebang (``#!lua flags=...``) must stay the first line.
        shebang, rest = own.split("\n", 1) if own.startswith("#!") else ("", own)
        self.source = f"{shebang}\n{SCRIPT_LIBRARY}{rest}" if shebang else SCRIPT_LIBRARY + rest
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    def command(self, keys: Sequence[str], args: Sequence[Any]) -> tuple[Any, ...]:
        """The EVALSHA command calling this script (for ``RedisGateway.pipeline``)."""
        return ("EVALSHA", self.sha, len(keys), *keys, *args)


OBSERVE = Script("observe")
ENSURE_GROUP = Script("ensure_group")
REPLAY = Script("replay")
RECOVER = Script("recover")
REMOVE_CONSUMERS = Script("remove_consumers")
RETAIN = Script("retain")
UNLINK_MANAGED = Script("unlink_managed")
CLAIM_GROUP = Script("claim_group")
RELEASE_GROUP = Script("release_group")
SCRIPTS: Mapping[str, Script] = {
    s.sha: s
    for s in (
        OBSERVE,
        ENSURE_GROUP,
        REPLAY,
        RECOVER,
        REMOVE_CONSUMERS,
        RETAIN,
        UNLINK_MANAGED,
        CLAIM_GROUP,
        RELEASE_GROUP,
    )
}
"""The one script registry, by SHA: every script the operator runs, loaded on connect and
again (only where missing) when a server answers NOSCRIPT."""


class GroupOutcome(StrEnum):
    CREATED = "Created"
    ADOPTED = "Adopted"


@dataclass(frozen=True)
class EnsuredGroup:
    key: str
    group: str
    outcome: GroupOutcome
    last_delivered_id: str
    entries_read: int | None


@dataclass
class ScanState:
    """Incremental SCAN over every primary: a cursor per node, kept between polls."""

    pattern: str
    cursors: dict[str, int]
    seen: set[str]
    found: set[str]
    """Keys of the last completed pass plus those seen in the current one."""
    complete_passes: int = 0

    @classmethod
    def start(cls, pattern: str) -> ScanState:
        return cls(pattern=pattern, cursors={}, seen=set(), found=set())

    def learn(self, key: str) -> None:
        """A key found another way (an event): known now, and kept by the current pass."""
        self.found.add(key)
        self.seen.add(key)

    def forget(self, key: str) -> None:
        """A key known to be gone."""
        self.found.discard(key)
        self.seen.discard(key)


MAX_CONNECTIONS = 100
"""Connections to one Redis endpoint at most (redis-py's default pool size)."""
POOL_WAIT_SECONDS = 20.0
"""How long a command waits for one of them (at least its own timeout)."""


class RedisGateway:
    """All Redis I/O for one endpoint."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        streams_per_script: int = 10,
        lag_count_cap: int = 1000,
        lag_count_budget: int = 1000,
        connect_timeout: float = 3.0,
        command_timeout: float = 10.0,
    ) -> None:
        self.endpoint = endpoint
        self.streams_per_script = streams_per_script
        self.lag_count_cap = lag_count_cap
        self.lag_count_budget = lag_count_budget
        """Entries one observe script counts at most for null lags, over all its groups: what
        bounds the time it holds the server (a null lag is counted from whole entries)."""
        self._observe_turn = 0
        """Rotates the order of each batch's keys, so the budget reaches every key in turn."""
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._client: Redis | RedisCluster | None = None
        self._client_keys: ClientKeyFiles | None = None
        self._primary_checked = 0.0
        self._connect_lock = asyncio.Lock()
        self.server_version: tuple[int, int, int] | None = None
        self.round_trips = 0
        """Requests sent so far (a pipeline counts once; in a cluster it is one per node
        touched, sent at once): what benchmarks and tests compare."""

    # ------------------------------------------------------------------ connection

    @property
    def where(self) -> str:
        return self.endpoint.display

    def classify(self, exc: BaseException) -> GatewayError:
        """A Redis failure (an exception, or an error reply in a pipeline's results) as the
        typed GatewayError it means, naming this endpoint."""
        return classify(exc, self.endpoint)

    async def connect(self) -> None:
        """Connect, learn the server version and load the scripts. Idempotent (with Sentinel,
        it also keeps the connections on the current primary)."""
        if self._client is not None:
            await self._follow_primary()
            return
        async with self._connect_lock:
            if self._client is not None:
                return
            client = self._make_client()
            try:
                # One deadline for the whole handshake: a peer that accepts and never answers
                # must fail as fast as a refused port, not after socket timeouts and retries.
                async with asyncio.timeout(self._connect_timeout * 2):
                    if isinstance(client, RedisCluster):
                        await client.initialize()
                    info = await client.info("server")
                if isinstance(client, RedisCluster):  # one answer per node: take any
                    info = next(iter(info.values())) if _per_node(info) else info
                self.server_version = _version(str(info.get("redis_version", "0.0.0")))
                self._client = client
                await self._load_scripts()
            except BaseException as exc:
                self._client = None
                with contextlib.suppress(Exception):
                    await client.aclose()
                self._cleanup_tls()
                raise self.classify(exc) from exc

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()
        self._cleanup_tls()

    async def ping(self) -> None:
        await self._call(lambda c: c.ping())

    def _make_client(self) -> Redis | RedisCluster:
        endpoint = self.endpoint
        socket_options: dict[str, Any] = {
            "socket_connect_timeout": self._connect_timeout,
            "socket_timeout": self._command_timeout,
        }
        options: dict[str, Any] = {
            "username": endpoint.username,
            "password": endpoint.password,
            "decode_responses": True,
            # A binary field (a dead-letter record `streamherd dlq` reads) is text with its
            # undecodable bytes as lone surrogates, not a UnicodeDecodeError that fails the
            # whole reply; sent back (a replay's arguments), it encodes to the same bytes.
            "encoding_errors": "surrogateescape",
            "client_name": CLIENT_NAME,
            # No CLIENT SETINFO at connect: one command fewer for the ACL (README, "Redis
            # permissions"); CLIENT SETNAME already names us.
            "driver_info": None,
            "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=1),
            **socket_options,
        }
        tls = self._tls_options()
        options.update(tls)
        if endpoint.cluster:
            options.pop("retry")  # RedisCluster retries across nodes by itself
            return RedisCluster.from_url(endpoint.url, **options)
        if endpoint.sentinel is not None:
            return self._sentinel_client(options, socket_options, tls)
        # Callers wait for a free connection (up to a command's time): redis-py's own pool
        # fails at once past its 100 ("Too many connections"), and 2,000 groups starting
        # on one endpoint claim their groups at the same moment (bench-load: RedisUnavailable).
        pool = BlockingConnectionPool.from_url(
            endpoint.url,
            max_connections=MAX_CONNECTIONS,
            timeout=max(POOL_WAIT_SECONDS, self._command_timeout or 0.0),
            **options,
        )
        return Redis.from_pool(pool)

    def _sentinel_client(
        self, options: dict[str, Any], socket_options: dict[str, Any], tls: dict[str, Any]
    ) -> Redis:
        """A client of the primary the sentinels name, reconnecting to the new one after a
        failover (redis-py's SentinelConnectionPool asks a sentinel at each connect)."""
        sentinel = self.endpoint.sentinel
        assert sentinel is not None
        ssl = {"ssl": True, **tls} if self.endpoint.tls is not None else {}
        own = sentinel_options(
            sentinel.username, sentinel.password, socket_options=socket_options, ssl=ssl
        )
        sentinels = _typed_sentinel(list(sentinel.addresses), sentinel_kwargs=own)
        client: Redis = sentinels.master_for(
            sentinel.master, db=sentinel.database, **{**options, **ssl}
        )
        return client

    async def _follow_primary(self) -> None:
        """With Sentinel, ask where the primary is at most once a second: after a failover
        (SENTINEL FAILOVER, or a primary that died) connections still open to the old primary,
        now a replica, would go on answering reads; the pool drops them once the sentinels
        name another primary. Sentinels that cannot be asked leave the connections as they
        are (a new connection then fails on its own, typed)."""
        client = self._client
        if self.endpoint.sentinel is None or not isinstance(client, Redis):
            return
        now = time.monotonic()
        if now - self._primary_checked < 1.0:
            return
        self._primary_checked = now
        pool = client.connection_pool
        assert isinstance(pool, SentinelConnectionPool)
        with contextlib.suppress(rx.ConnectionError, rx.TimeoutError, OSError):
            await pool.get_master_address()  # type: ignore[no-untyped-call]

    def _tls_options(self) -> dict[str, Any]:
        tls = self.endpoint.tls
        if tls is None:
            return {}
        if tls.client_cert_pem and tls.client_key_pem and self._client_keys is None:
            self._client_keys = ClientKeyFiles(tls.client_cert_pem, tls.client_key_pem)
        return tls_options(verify=tls.verify, ca_pem=tls.ca_pem, keys=self._client_keys)

    def _cleanup_tls(self) -> None:
        if self._client_keys is not None:
            self._client_keys.close()
            self._client_keys = None

    async def _load_scripts(self, shas: Iterable[str] = SCRIPTS) -> None:
        client = self._require()
        for sha in shas:
            # In a cluster, redis-py sends SCRIPT LOAD to every primary.
            await client.script_load(SCRIPTS[sha].source)

    async def client(self) -> Redis | RedisCluster:
        """The connected client, for the gateway's other modules (discovery subscribes with it)."""
        await self.connect()
        return self._require()

    def _require(self) -> Redis | RedisCluster:
        if self._client is None:
            raise GatewayError(EndpointProblem.UNREACHABLE, f"not connected to {self.where}")
        return self._client

    async def _call(self, fn: Any) -> Any:
        """Run one command (connecting first if needed); failures become GatewayError.
        Scripts never go through here: they go through ``pipeline``."""
        await self.connect()
        self.round_trips += 1
        try:
            return await fn(self._require())
        except Exception as exc:
            raise self.classify(exc) from exc

    async def pipeline(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Run commands in one non-transactional pipeline (one per node in a cluster).
        Per-command errors come back as exceptions in the list (``classify`` them);
        connection failures raise GatewayError.

        The one NOSCRIPT path: a server that lost scripts (a restart, SCRIPT FLUSH, a
        failover to a replica that never loaded them) answers NOSCRIPT to an EVALSHA without
        running anything. Then just those scripts are loaded and just the calls that got
        NOSCRIPT are sent again: a call that ran is never run twice."""
        await self.connect()
        try:
            results = await self._send(commands)
            missing = [i for i, r in enumerate(results) if isinstance(r, rx.NoScriptError)]
            if missing:
                await self._load_scripts({str(commands[i][1]) for i in missing})
                again = await self._send([commands[i] for i in missing])
                for i, result in zip(missing, again, strict=True):
                    results[i] = result
        except Exception as exc:
            raise self.classify(exc) from exc
        return results

    async def _send(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        pipe = self._require().pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        self.round_trips += 1
        return list(await pipe.execute(raise_on_error=False))

    # ------------------------------------------------------------------ groups and keys

    async def ensure_group(
        self, key: str, group: str, start_id: str, *, create_stream: bool
    ) -> EnsuredGroup:
        """Create the group at ``start_id`` or adopt the existing one (never reset it).

        Raises GatewayError STREAM_MISSING / WRONG_TYPE when there is no stream to put it on.
        """
        (result,) = await self.ensure_groups([key], group, start_id, create_stream=create_stream)
        if isinstance(result, GatewayError):
            raise result
        return result

    async def ensure_groups(
        self, keys: Sequence[str], group: str, start_id: str, *, create_stream: bool
    ) -> list[EnsuredGroup | GatewayError]:
        """ensure_group for many keys in one pipeline (a key pattern's streams)."""
        mk = "1" if create_stream else "0"
        commands = [
            ENSURE_GROUP.command([key], [group, start_id, mk, self.lag_count_cap]) for key in keys
        ]
        replies = await self.pipeline(commands)
        return [self._ensured(key, group, reply) for key, reply in zip(keys, replies, strict=True)]

    def _ensured(self, key: str, group: str, reply: Any) -> EnsuredGroup | GatewayError:
        if isinstance(reply, Exception):
            return self.classify(reply)
        status = reply[0]
        if status == "missing":
            return GatewayError(
                EndpointProblem.STREAM_MISSING,
                f"stream {key!r} does not exist on {self.where} and createIfMissing is false",
            )
        if status == "wrongtype":
            return GatewayError(
                EndpointProblem.WRONG_TYPE,
                f"key {key!r} on {self.where} is a {reply[1]}, not a stream",
            )
        entries_read = int(reply[2])
        return EnsuredGroup(
            key=key,
            group=group,
            outcome=GroupOutcome.CREATED if status == "created" else GroupOutcome.ADOPTED,
            last_delivered_id=str(reply[1]),
            entries_read=None if entries_read < 0 else entries_read,
        )

    async def destroy_group(self, key: str, group: str) -> bool:
        """Destroy the group; False when it (or the stream) was already gone."""
        try:
            return bool(await self._call(lambda c: c.xgroup_destroy(key, group)))
        except GatewayError as exc:
            if "no such key" in exc.message or "requires the key to exist" in exc.message:
                return False
            raise

    async def delete_stream(self, key: str) -> bool:
        """Delete (UNLINK) the stream key; False when it was already gone. Refuses other types."""
        kind = await self._call(lambda c: c.type(key))
        if kind == "none":
            return False
        if kind != "stream":
            raise GatewayError(
                EndpointProblem.WRONG_TYPE, f"key {key!r} is a {kind}, not a stream: not deleted"
            )
        return bool(await self._call(lambda c: c.unlink(key)))  # freed in the background

    async def scan_streams(self, state: ScanState, *, budget: int = 10_000) -> bool:
        """Advance discovery of stream keys matching ``state.pattern`` by about ``budget``
        keys examined. Returns True when a full pass over the keyspace has just completed
        (``state.found`` then holds exactly the keys seen in that pass)."""
        await self.connect()
        client = self._require()
        nodes = (
            [n.name for n in client.get_primaries()] if isinstance(client, RedisCluster) else ["-"]
        )
        step = max(100, budget // max(1, len(nodes)))
        pass_done = True
        for node in nodes:
            cursor = state.cursors.get(node, 0)
            if cursor == -1:
                continue
            try:
                if isinstance(client, RedisCluster):
                    target = client.get_node(node_name=node)
                    cursor, keys = await _scan_node(client, target, cursor, state.pattern, step)
                else:
                    cursor, found = await client.scan(
                        cursor, match=state.pattern, count=step, _type="stream"
                    )
                    keys = [str(k) for k in found]
            except Exception as exc:
                raise self.classify(exc) from exc
            state.seen.update(keys)
            state.found.update(keys)
            state.cursors[node] = -1 if cursor == 0 else cursor
            if cursor != 0:
                pass_done = False
        if pass_done:
            state.found = set(state.seen)
            state.seen = set()
            state.cursors = {}
            state.complete_passes += 1
        return pass_done

    async def scan_all(self, pattern: str) -> set[str]:
        """Every stream key matching ``pattern`` now: incremental scans until a full pass."""
        scan = ScanState.start(pattern)
        while not await self.scan_streams(scan):
            pass
        return scan.found

    # ------------------------------------------------------------------ autoscaling

    async def consumer_pending(self, keys: Sequence[str], group: str) -> dict[str, int]:
        """Pending entries per consumer of ``group``, summed over ``keys`` (XPENDING summary,
        one pipeline): which pods hold unfinished work."""
        replies = await self.pipeline([("XPENDING", key, group) for key in keys])
        totals: dict[str, int] = {}
        for reply in replies:
            if isinstance(reply, Exception):
                continue  # stream or group gone: nothing pending there
            consumers = (
                reply.get("consumers")
                if isinstance(reply, Mapping)
                else (reply[3] if len(reply) > 3 else None)
            )
            for item in consumers or []:
                name, count = (item["name"], item["pending"]) if isinstance(item, Mapping) else item
                totals[str(name)] = totals.get(str(name), 0) + int(count)
        return totals

    async def group_positions(self, keys: Sequence[str], group: str) -> dict[str, str]:
        """The group's last-delivered-id on each stream ("0-0" where the stream or group does
        not exist yet): any entry after it is work for the group. Where a wake-up read starts."""
        replies = await self.pipeline([("XINFO", "GROUPS", key) for key in keys])
        out = {}
        for key, reply in zip(keys, replies, strict=True):
            out[key] = "0-0"
            if isinstance(reply, Exception):
                continue
            for info in reply:
                fields = reply_fields(info)
                if fields.get("name") == group:
                    out[key] = str(fields.get("last-delivered-id") or "0-0")
        return out

    async def wait_for_entries(self, positions: Mapping[str, str], block_ms: int) -> dict[str, str]:
        """Block until any stream gets an entry after its position, or ``block_ms`` pass.
        XREAD, not XREADGROUP: it reads without consuming, so no group or consumer is touched.
        One connection blocks on many keys. Returns the new positions of the streams that got
        entries.

        On Redis Cluster a blocking read waits on the keys of one hash slot, and call streams
        are in all of them: a blocked connection per slot would be thousands (redis-py's pool
        stops at 100 per node), cancelled and reopened at every wake-up. So keys of one slot
        are read blocking, as on one server; keys of several are read without blocking, one
        XREAD per slot pipelined per node (at most ``WAKE_CHECK_STREAMS`` streams a round,
        round-robin), every ``WAKE_CHECK_INTERVAL`` seconds: one connection per node, bounded
        Redis work, a wake-up at most that much later. Each XREAD names its node (redis-py
        would first ask a node ``COMMAND GETKEYS``: a round trip per read)."""
        await self.connect()
        client = self._require()
        if not positions:
            await asyncio.sleep(block_ms / 1000)
            return {}
        if isinstance(client, RedisCluster):
            slots: dict[int, dict[str, str]] = {}
            for key, position in positions.items():
                slots.setdefault(key_slot(key.encode()), {})[key] = position
            if len(slots) > 1:
                return await self._check_for_entries(client, list(slots.values()), block_ms)
        keys = list(positions)
        try:
            reply: Any = await client.execute_command(
                "XREAD",
                "COUNT",
                1,
                "BLOCK",
                block_ms,
                "STREAMS",
                *keys,
                *(positions[k] for k in keys),
                **_route(client, keys),
            )
        except Exception as exc:
            raise self.classify(exc) from exc
        self.round_trips += 1
        return _moved(reply)

    async def _check_for_entries(
        self, client: RedisCluster, groups: Sequence[Mapping[str, str]], block_ms: int
    ) -> dict[str, str]:
        """``wait_for_entries`` over many cluster slots: non-blocking rounds (see there)."""
        deadline = time.monotonic() + block_ms / 1000
        at = 0
        while True:
            pipe = client.pipeline()
            checked = 0
            for _ in range(len(groups)):
                group = groups[at % len(groups)]
                if checked and checked + len(group) > WAKE_CHECK_STREAMS:
                    break
                at, checked = at + 1, checked + len(group)
                pipe.execute_command(
                    "XREAD", "COUNT", 1, "STREAMS", *group, *group.values(), **_route(client, group)
                )
            try:
                replies = await pipe.execute(raise_on_error=False)
            except Exception as exc:
                raise self.classify(exc) from exc
            self.round_trips += 1
            moved: dict[str, str] = {}
            for reply in replies:
                if isinstance(reply, Exception):
                    raise self.classify(reply)
                moved.update(_moved(reply))
            left = deadline - time.monotonic()
            if moved or left <= 0:
                return moved
            await asyncio.sleep(min(WAKE_CHECK_INTERVAL, left))

    # ------------------------------------------------------------------ durability

    async def durability(self) -> list[ServerDurability]:
        """Persistence and replication of the server (every primary of a cluster): one
        pipeline per server. A command the user may not run becomes unknown settings;
        raises GatewayError only when the endpoint cannot be reached at all."""
        await self.connect()
        client = self._require()
        if not isinstance(client, RedisCluster):
            return [persistence.parse(self.where, await self.pipeline(persistence.COMMANDS))]
        servers = []
        for node in client.get_primaries():
            replies: list[Any] = []
            for command in persistence.COMMANDS:
                try:
                    replies.append(await client.execute_command(*command, target_nodes=node))
                except (rx.ConnectionError, rx.TimeoutError) as exc:
                    raise self.classify(exc) from exc
                except rx.RedisError as exc:
                    replies.append(exc)
            servers.append(persistence.parse(str(node.name), replies))
        return servers

    # ------------------------------------------------------------------ observation

    async def observe(
        self,
        keys: Iterable[str],
        *,
        ages_for: Collection[str] | None = None,
        details_for: Collection[str] = (),
        lengths_for: Collection[str] = (),
        first_unread_hints: Mapping[str, str] | None = None,
    ) -> Observation:
        """One poll of ``keys`` and all their groups, in one pipeline (per cluster node).

        ages_for: keys whose groups' oldest pending entry (its id) is measured (None: all).
        details_for: keys that also get XINFO STREAM (first/last entry ids).
        lengths_for: other keys whose XLEN is read in the same pipeline (dead-letter streams).
        first_unread_hints: per key, "L F L F ...": F the first entry after last-delivered-id
        L as an earlier observation found it (``GroupState.looked_up_after``,
        ``decisions.sampling.carry_first_unread``): the script skips the lookup where the
        hint provably still holds (observe.lua says when).
        Never raises for Redis trouble: the Observation then carries the problem, and every
        number in it is unknown rather than zero.
        """
        started, wall = time.monotonic(), datetime.now(UTC)
        keys = list(dict.fromkeys(keys))
        self._observe_turn += 1
        batches = [_rotated(batch, self._observe_turn) for batch in self._batches(keys)]
        calls = [
            (
                batch,
                OBSERVE.command(
                    batch,
                    [
                        self.lag_count_cap,
                        "".join("1" if ages_for is None or k in ages_for else "0" for k in batch),
                        self.lag_count_budget,
                        *_hints_of(batch, first_unread_hints),
                    ],
                ),
            )
            for batch in batches
        ]
        detail_keys = [k for k in keys if k in details_for]
        commands = [command for _, command in calls]
        commands += [("XINFO", "STREAM", key) for key in detail_keys]
        length_keys = list(lengths_for)
        commands += [("XLEN", key) for key in length_keys]
        try:
            replies = await self.pipeline(commands) if commands else []
        except GatewayError as exc:
            return Observation(
                taken_at=started,
                wall_time=wall,
                problem=exc.problem,
                message=exc.message,
                duration_s=time.monotonic() - started,
            )
        streams: dict[str, StreamState] = {}
        for (batch, _), reply in zip(calls, replies, strict=False):
            if isinstance(reply, Exception):
                error = self.classify(reply)
                for key in batch:
                    streams[key] = StreamState(key, StreamStatus.ERROR, error=error.message)
            else:
                self._parse_observe(batch, reply, ages_for, streams)
        details_end = len(calls) + len(detail_keys)
        for key, info in zip(detail_keys, replies[len(calls) : details_end], strict=True):
            if not isinstance(info, Exception) and key in streams:
                _add_details(streams[key], info)
        lengths = {
            key: None if isinstance(n, Exception) else int(n)
            for key, n in zip(length_keys, replies[details_end:], strict=True)
        }
        return Observation(
            taken_at=started,
            wall_time=wall,
            streams=streams,
            duration_s=time.monotonic() - started,
            lag_count_cap=self.lag_count_cap,
            lengths=lengths,
        )

    def _batches(self, keys: Sequence[str]) -> list[list[str]]:
        """Keys in script-sized batches; in a cluster, each batch within one hash slot."""
        size = self.streams_per_script
        if not self.endpoint.cluster:
            return [list(keys[i : i + size]) for i in range(0, len(keys), size)]
        by_slot: dict[int, list[str]] = {}
        for key in keys:
            by_slot.setdefault(key_slot(key.encode()), []).append(key)
        return [same[i : i + size] for same in by_slot.values() for i in range(0, len(same), size)]

    def _parse_observe(
        self,
        batch: Sequence[str],
        reply: list[Any],
        ages_for: Collection[str] | None,
        out: dict[str, StreamState],
    ) -> None:
        # The hot loop of a poll (10,000 groups on a large endpoint): five values a group,
        # index access; rare cases go through extras. Only what Redis said is kept here: what
        # a lag means is decided in decisions.lag, for the groups someone asks about.
        server_time_ms, pos = reply[0], 1
        for key in batch:
            status = reply[pos]
            if status != "ok":
                out[key] = _failed_stream(key, str(status))
                pos += 1
                continue
            length, count, extras = reply[pos + 1], reply[pos + 2], reply[pos + 3]
            pos += 4
            aged = ages_for is None or key in ages_for
            states: list[GroupState] = []
            for _ in range(count):
                pending, entries_read, lag = reply[pos + 2], reply[pos + 3], reply[pos + 4]
                states.append(
                    GroupState(
                        reply[pos],
                        reply[pos + 1],
                        pending,
                        None if entries_read < 0 else entries_read,
                        None if lag < 0 else lag,
                        None,
                        aged or pending == 0,
                    )
                )
                pos += 5
            for _ in range(extras):
                state, kind, value = states[reply[pos] - 1], reply[pos + 1], reply[pos + 2]
                pos += 3
                if kind == "u":
                    state.first_unread_id = value
                elif kind == "a":
                    state.looked_up_after = value
                elif kind == "o":
                    state.oldest_pending_id = value
                elif kind == "c":
                    state.counted_lag = value
                elif kind == "b":
                    state.counted_lag, state.counted_lag_bound = value, True
                else:  # "t"
                    state.at_tail = True
            out[key] = StreamState(
                key,
                StreamStatus.OK,
                length=length,
                groups={g.name: g for g in states},
                server_time_ms=server_time_ms,
            )


def _hints_of(batch: Sequence[str], hints: Mapping[str, str] | None) -> list[str]:
    """observe.lua's ARGV[4]: the batch's hints, "|"-separated in its order, one argument
    (none when no key of the batch has a hint)."""
    if not hints:
        return []
    joined = "|".join([hints.get(key, "") for key in batch])
    return [joined] if joined.strip("|") else []


def _rotated(batch: list[str], turn: int) -> list[str]:
    at = turn % len(batch) if batch else 0
    return batch[at:] + batch[:at]


def _failed_stream(key: str, error: str) -> StreamState:
    if "no such key" in error:
        return StreamState(key, StreamStatus.MISSING)
    if error.startswith("WRONGTYPE"):
        return StreamState(key, StreamStatus.WRONG_TYPE, error=f"key {key!r} is not a stream")
    return StreamState(key, StreamStatus.ERROR, error=error)


def reply_fields(reply: Mapping[str, Any] | Sequence[Any]) -> Mapping[str, Any]:
    """An XINFO reply (or one item of it) as a mapping: redis-py hands back a dict where it
    parses the command itself, and the flat [field, value, ...] list elsewhere."""
    if isinstance(reply, Mapping):
        return reply
    return dict(zip(reply[::2], reply[1::2], strict=False))


def _add_details(stream: StreamState, info: Mapping[str, Any] | list[Any]) -> None:
    fields = reply_fields(info)
    first, last = fields.get("first-entry"), fields.get("last-entry")
    stream.first_entry_id = first[0] if first else None
    stream.last_entry_id = last[0] if last else None


async def _scan_node(
    client: RedisCluster, node: Any, cursor: int, pattern: str, count: int
) -> tuple[int, list[str]]:
    # redis-py's cluster SCAN answers ({node name: next cursor}, keys).
    reply: Any = await client.scan(
        cursor, match=pattern, count=count, _type="stream", target_nodes=node
    )
    cursors, keys = reply
    return int(cursors[node.name]), [str(k) for k in keys]


def _route(client: Redis | RedisCluster, keys: Iterable[str]) -> dict[str, Any]:
    """``target_nodes`` for a command on keys of one slot: on a cluster, the node serving it
    (redis-py finds the keys of XREAD by asking a node first otherwise)."""
    if not isinstance(client, RedisCluster):
        return {}
    return {"target_nodes": client.get_node_from_key(next(iter(keys)))}


def _moved(reply: Any) -> dict[str, str]:
    """An XREAD reply: the last id per stream that got entries."""
    items = reply.items() if isinstance(reply, Mapping) else (reply or [])
    return {str(key): str(entries[-1][0]) for key, entries in items if entries}


def _per_node(info: Mapping[str, Any]) -> bool:
    return bool(info) and all(isinstance(v, Mapping) for v in info.values())


def _version(text: str) -> tuple[int, int, int]:
    parts = [int(p) for p in text.split(".")[:3] if p.isdigit()]
    major, minor, patch = [*parts, 0, 0, 0][:3]
    return major, minor, patch
