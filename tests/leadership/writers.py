"""Who talks to Redis, seen from outside the processes: MONITOR (every command, with the
server's timestamp and the client's port) and /proc (which process owns which port). An
operator that stands by must send nothing; the active one sends every poll."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import redis


def _socket_ports(redis_port: int) -> dict[int, int]:
    """Socket inode -> local port, for every TCP connection to ``redis_port`` on this host."""
    found: dict[int, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            next(lines)
            for line in lines:
                parts = line.split()
                local, remote, state, inode = parts[1], parts[2], parts[3], int(parts[9])
                if state == "01" and int(remote.rsplit(":", 1)[1], 16) == redis_port:
                    found[inode] = int(local.rsplit(":", 1)[1], 16)
    return found


def process_ports(pid: int, redis_port: int) -> set[int]:
    """The local ports of the established connections process ``pid`` holds to Redis."""
    sockets = _socket_ports(redis_port)
    ports = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inode = int(target[8:-1])
                    if inode in sockets:
                        ports.add(sockets[inode])
    return ports


@dataclass
class RedisWriters:
    """Records, while running, every command Redis receives (MONITOR) and, every 50 ms, which
    of the watched processes hold connections to it."""

    host: str
    port: int
    pids: dict[str, int] = field(default_factory=dict)
    """name -> pid of the processes to attribute commands to."""
    commands: list[tuple[float, int]] = field(default_factory=list)
    """(server time, client port) of every command seen."""
    owners: dict[int, str] = field(default_factory=dict)
    """client port -> process name, as sampled."""
    overlaps: list[tuple[float, list[str]]] = field(default_factory=list)
    """Samples at which more than one watched process held connections to Redis."""
    _stop: threading.Event = field(default_factory=threading.Event)
    _monitor: Any = None
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> RedisWriters:
        listening = threading.Event()

        def listen() -> None:
            client = redis.Redis(host=self.host, port=self.port, socket_timeout=None)
            with client.monitor() as monitor:
                self._monitor = monitor
                listening.set()
                while not self._stop.is_set():
                    try:
                        seen = monitor.next_command()
                    except redis.TimeoutError:
                        continue  # quiet for a while: go on listening
                    except (redis.ConnectionError, OSError, ValueError):
                        return
                    if seen.get("client_port"):
                        self.commands.append((float(seen["time"]), int(seen["client_port"])))

        def sample() -> None:
            while not self._stop.wait(0.05):
                holding = []
                for name, pid in list(self.pids.items()):
                    ports = process_ports(pid, self.port)
                    for port in ports:
                        self.owners[port] = name
                    if ports:
                        holding.append(name)
                if len(holding) > 1:
                    self.overlaps.append((time.time(), holding))

        for target in (listen, sample):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)
        assert listening.wait(10), "MONITOR did not start"
        return self

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(Exception):
            self._monitor.connection.disconnect()

    def by(self, name: str) -> list[float]:
        """Server times of the commands sent by process ``name``."""
        return [t for t, port in list(self.commands) if self.owners.get(port) == name]

    def first_after(self, name: str, after: float) -> float | None:
        times = [t for t in self.by(name) if t >= after]
        return min(times) if times else None
