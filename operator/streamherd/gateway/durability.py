"""Reading a Redis server's persistence and replication settings: the commands (one pipeline
per server: two INFO sections and one CONFIG GET) and the parsing of their replies into
``ServerDurability``. A denied CONFIG GET (ACL, or a managed service that renames or forbids
it) leaves those settings unknown; nothing is inferred from defaults."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streamherd.observations import ServerDurability

CONFIG_NAMES = ("appendfsync", "save", "min-replicas-to-write", "min-replicas-max-lag")
COMMANDS: tuple[tuple[str, ...], ...] = (
    ("INFO", "persistence"),
    ("INFO", "replication"),
    ("CONFIG", "GET", *CONFIG_NAMES),  # several names in one CONFIG GET: Redis >= 7.0
)


def parse(node: str, replies: list[Any]) -> ServerDurability:
    """``replies`` of COMMANDS, in order; an item is an exception when that command failed."""
    persistence, replication, config = replies
    for reply in (persistence, replication):
        if isinstance(reply, BaseException) or not isinstance(reply, Mapping):
            return ServerDurability(node, info_error=_error(reply))
    settings: Mapping[str, Any] = {}
    config_error = None
    if isinstance(config, BaseException) or not isinstance(config, Mapping):
        config_error = _error(config)
    elif any(name not in config for name in CONFIG_NAMES):
        missing = sorted(name for name in CONFIG_NAMES if name not in config)
        config_error = f"CONFIG GET did not return {', '.join(missing)}"
    else:
        settings = config
    return ServerDurability(
        node,
        config_error=config_error,
        aof_enabled=_flag(persistence.get("aof_enabled")),
        appendfsync=str(settings["appendfsync"]) if settings else None,
        save=str(settings["save"]) if settings else None,
        aof_write_ok=_status(persistence.get("aof_last_write_status")),
        snapshot_ok=_status(persistence.get("rdb_last_bgsave_status")),
        role=str(replication["role"]) if "role" in replication else None,
        connected_replicas=_online_replicas(replication),
        min_replicas_to_write=_int(settings.get("min-replicas-to-write")),
        min_replicas_max_lag=_int(settings.get("min-replicas-max-lag")),
    )


def _online_replicas(replication: Mapping[str, Any]) -> int | None:
    """Replicas listed as slave<N> with state=online (one still syncing keeps nothing yet)."""
    if "connected_slaves" not in replication:
        return None
    listed = [v for k, v in replication.items() if k.startswith("slave") and k[5:].isdigit()]
    if not listed:
        return 0
    return sum(1 for v in listed if isinstance(v, Mapping) and v.get("state") == "online")


def _error(reply: Any) -> str:
    if isinstance(reply, BaseException):
        return str(reply) or type(reply).__name__
    return f"unexpected reply {type(reply).__name__}"


def _flag(value: Any) -> bool | None:
    return None if value is None else str(value) == "1"


def _status(value: Any) -> bool | None:
    return None if value is None else str(value) == "ok"


def _int(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None
