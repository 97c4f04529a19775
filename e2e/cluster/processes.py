"""Running a command as "the operator" against a cluster, and polling helpers for tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = str(Path(sys.executable).parent)
_T = TypeVar("_T")


def wait_until(
    predicate: Callable[[], _T],
    timeout: float = 10.0,
    interval: float = 0.02,
    message: str | Callable[[], str] = "condition not met",
) -> _T:
    """Poll ``predicate`` until it returns something truthy (returned); TimeoutError otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise TimeoutError(f"after {timeout}s: {text}")
        time.sleep(interval)


async def async_wait_until(
    predicate: Callable[[], _T | Awaitable[_T]],
    within: float = 10.0,
    interval: float = 0.02,
    message: str | Callable[[], str] = "condition not met",
) -> _T:
    """The async twin of wait_until (``within``: seconds)."""
    timeout = within
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if isinstance(value, Awaitable):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise TimeoutError(f"after {timeout}s: {text}")
        await asyncio.sleep(interval)


class OperatorProcess:
    """A subprocess run with KUBECONFIG pointing at the cluster; output goes to a log file."""

    def __init__(
        self,
        cmd: str | Sequence[str],
        *,
        kubeconfig: str | os.PathLike[str],
        log_path: str | os.PathLike[str],
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] = REPO_ROOT,
    ) -> None:
        self.argv = shlex.split(cmd) if isinstance(cmd, str) else list(cmd)
        self.log_path = Path(log_path)
        self.env = {
            **os.environ,
            "PATH": os.pathsep.join([VENV_BIN, os.environ.get("PATH", "")]),
            "KUBECONFIG": str(kubeconfig),
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self.cwd = Path(cwd)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """Wait until the output matches the regex ``pattern``; fails early if the process exits."""
        regex = re.compile(pattern)

        def check() -> re.Match[str] | None:
            found = regex.search(self.logs())
            if found is None and not self.running:
                raise RuntimeError(
                    f"{self.argv[0]} exited ({self.returncode}) before logging "
                    f"{pattern!r}:\n{self.logs()[-4000:]}"
                )
            return found

        return wait_until(
            check, timeout, message=lambda: f"no {pattern!r} in:\n{self.logs()[-4000:]}"
        )

    def signal(self, sig: int) -> None:
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (to its process group), SIGKILL after ``timeout``; returns the exit code."""
        if self.process is None:
            return None
        if self.running:
            self.signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.process.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)  # leftovers in its group
        return self.process.returncode

    def __enter__(self) -> OperatorProcess:
        return self.start() if self.process is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
