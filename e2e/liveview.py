"""What `make demo` shows while it runs: a live terminal view (rich) of every group, read from
what a user has (the operator's /metrics, the Events of the API, Redis's INFO), the same
samples as a plain log (``--plain``, for CI), and a plot (matplotlib) of backlog and replicas
per group over time at the end.

The numbers come from the metrics endpoint, which the operator refreshes at every poll
whatever the status write budget: the view never depends on how often status is written.
"""

from __future__ import annotations

import math
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

HEALTH_STYLE = {
    "OK": "green",
    "Lagging": "yellow",
    "Stalled": "red",
    "Stopped": "red",
    "Unknown": "dim",
}


@dataclass(frozen=True)
class GroupRow:
    """One group's numbers in one sample (None: not known)."""

    backlog: float | None = None
    pending: float | None = None
    lag: float | None = None
    lag_seconds: float | None = None
    replicas: float | None = None
    desired: float | None = None
    recovered: float = 0.0
    dead_lettered: float = 0.0
    health: str = "Unknown"


@dataclass(frozen=True)
class Sample:
    at: float
    """Seconds since the view started."""
    groups: Mapping[str, GroupRow]
    memory: int | None
    live_calls: int
    produced: int


def parse_metrics(text: str, names: Iterable[str]) -> dict[str, GroupRow]:
    """Each ConsumerGroup's row from the operator's /metrics text (NaN: unknown)."""
    values: dict[str, dict[str, float]] = {name: {} for name in names}
    health: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.labels.get("consumergroup")
            if name not in values:
                continue
            value = sample.value
            metric = sample.name
            if metric == "streamherd_group_health":
                if value == 1:
                    health[name] = sample.labels["state"]
                continue
            row = values[name]
            if metric in ("streamherd_janitor_recovered_total",):
                row[metric] = row.get(metric, 0.0) + value  # summed over strategies
            else:
                row[metric] = value

    def known(row: Mapping[str, float], metric: str) -> float | None:
        value = row.get(metric)
        return None if value is None or math.isnan(value) else value

    out = {}
    for name, row in values.items():
        out[name] = GroupRow(
            backlog=known(row, "streamherd_group_backlog"),
            pending=known(row, "streamherd_group_pending"),
            lag=known(row, "streamherd_group_lag"),
            lag_seconds=known(row, "streamherd_group_lag_seconds"),
            replicas=known(row, "streamherd_group_replicas"),
            desired=known(row, "streamherd_group_desired_replicas"),
            recovered=row.get("streamherd_janitor_recovered_total", 0.0),
            dead_lettered=row.get("streamherd_janitor_dead_lettered_total", 0.0),
            health=health.get(name, "Unknown"),
        )
    return out


@dataclass
class Phase:
    name: str
    text: str
    at: float


@dataclass
class LiveView:
    """Samples every ``every`` seconds on its own thread; renders live (rich) or as a log.

    ``metrics_url``: the operator's /metrics; ``events``: a callable listing the namespace's
    Events (dicts as the API returns them); ``memory``: Redis's used memory now; ``calls``:
    (live calls, events produced) now."""

    names: Sequence[str]
    metrics_url: str
    events: Callable[[], list[dict[str, Any]]]
    memory: Callable[[], int | None]
    calls: Callable[[], tuple[int, int]]
    plain: bool = False
    every: float = 0.5
    console: Console = field(default_factory=Console)
    samples: list[Sample] = field(default_factory=list)
    phases: list[Phase] = field(default_factory=list)
    seen_events: list[tuple[float, str, str, str, str]] = field(default_factory=list)
    """(at, type, object, reason, message) in the order they happened."""
    notes: list[str] = field(default_factory=list)
    _event_keys: set[str] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _live: Live | None = None
    _started: float = field(default_factory=time.monotonic)
    _last_table: float = 0.0

    # ------------------------------------------------------------ lifecycle

    def start(self) -> LiveView:
        self._started = time.monotonic()
        if not self.plain:
            self._live = Live(
                get_renderable=self.render, console=self.console, refresh_per_second=4
            )
            self._live.start()
        self._thread = threading.Thread(target=self._run, daemon=True, name="live-view")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if self._live is not None:
            self._live.stop()
            self._live = None

    def now(self) -> float:
        return time.monotonic() - self._started

    def phase(self, name: str, text: str) -> None:
        """A new chapter of the story."""
        self.phases.append(Phase(name, text, self.now()))
        if self.plain:
            self.console.print(f"\n[{self.now():6.1f}s] === {name}: {text}", highlight=False)
            self._print_table()

    def note(self, text: str) -> None:
        """Something the story did (a kill, a command run): in the log and the view."""
        self.notes.append(f"[{self.now():5.1f}s] {text}")
        if self.plain:
            self.console.print(f"[{self.now():6.1f}s] >>> {text}", highlight=False)

    # ------------------------------------------------------------ sampling

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.every)

    def sample(self) -> Sample | None:
        try:
            with urllib.request.urlopen(self.metrics_url, timeout=2) as reply:
                text = reply.read().decode()
        except OSError:
            return None
        live, produced = self.calls()
        taken = Sample(self.now(), parse_metrics(text, self.names), self.memory(), live, produced)
        self.samples.append(taken)
        self._collect_events()
        if self.plain and taken.at - self._last_table >= 10:
            self._print_table()
        return taken

    def _collect_events(self) -> None:
        try:
            events = self.events()
        except Exception:  # the view never stops the story
            return
        fresh = []
        for event in events:
            key = event["metadata"].get("uid") or event["metadata"]["name"]
            if key in self._event_keys:
                continue
            self._event_keys.add(key)
            fresh.append(event)
        fresh.sort(key=lambda e: e.get("lastTimestamp") or e.get("firstTimestamp") or "")
        for event in fresh:
            row = (
                self.now(),
                event.get("type") or "Normal",
                event["involvedObject"]["name"],
                event.get("reason") or "",
                event.get("message") or "",
            )
            self.seen_events.append(row)
            if self.plain:
                at, type_, obj, reason, message = row
                self.console.print(
                    f"[{at:6.1f}s] event {type_:7s} {obj:12s} {reason}: {message}",
                    highlight=False,
                    soft_wrap=True,
                )

    # ------------------------------------------------------------ rendering

    def table(self) -> Table:
        sample = self.samples[-1] if self.samples else None
        table = Table(expand=False, header_style="bold", pad_edge=False)
        for column, justify in (
            ("group", "left"),
            ("backlog", "right"),
            ("pending", "right"),
            ("lag", "right"),
            ("lag s", "right"),
            ("replicas/desired", "center"),
            ("recovered", "right"),
            ("dead-lettered", "right"),
            ("health", "left"),
        ):
            table.add_column(column, justify=justify)  # type: ignore[arg-type]
        for name in self.names:
            row = sample.groups.get(name, GroupRow()) if sample else GroupRow()
            table.add_row(
                name,
                _count(row.backlog),
                _count(row.pending),
                _count(row.lag),
                "?" if row.lag_seconds is None else f"{row.lag_seconds:.1f}",
                f"{_count(row.replicas)}/{_count(row.desired)}",
                _count(row.recovered),
                _count(row.dead_lettered),
                Text(row.health, style=HEALTH_STYLE.get(row.health, "")),
            )
        return table

    def header(self) -> Text:
        sample = self.samples[-1] if self.samples else None
        phase = self.phases[-1] if self.phases else None
        text = Text()
        text.append("streamherd demo", style="bold")
        text.append(f"   t={self.now():5.1f}s")
        if phase is not None:
            text.append("   ")
            text.append(phase.name, style="bold cyan")
            text.append(f": {phase.text}")
        if sample is not None:
            memory = "?" if sample.memory is None else f"{sample.memory / 1e6:.2f} MB"
            text.append(
                f"\nlive calls {sample.live_calls}   events produced {sample.produced:,}"
                f"   Redis used memory {memory}"
            )
        return text

    def render(self) -> Group:
        events = Table.grid(padding=(0, 1))
        for at, type_, obj, reason, message in self.seen_events[-12:]:
            style = "yellow" if type_ == "Warning" else ""
            events.add_row(
                f"{at:5.1f}s", Text(obj, style="bold"), Text(reason, style=style), message
            )
        notes = Text("\n".join(self.notes[-4:]))
        return Group(
            Panel(self.header(), border_style="cyan"),
            self.table(),
            Panel(events, title="Events, as they happen", title_align="left"),
            Panel(notes, title="what the story does", title_align="left"),
        )

    def _print_table(self) -> None:
        self._last_table = self.now()
        if self.samples:
            self.console.print(self.table())

    # ------------------------------------------------------------ the plot

    def plot(self, path: Path, title: str) -> Path:
        """Backlog (line) and replicas (steps: actual, and desired dashed) per group over
        time, the story's phases marked; saved as a PNG."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        times = [s.at for s in self.samples]
        fig, axes = plt.subplots(
            len(self.names), 1, sharex=True, figsize=(11, 2.6 * len(self.names) + 0.8)
        )
        axes = list(axes) if len(self.names) > 1 else [axes]
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for index, (ax, name) in enumerate(zip(axes, self.names, strict=True)):
            rows = [s.groups.get(name, GroupRow()) for s in self.samples]
            backlog = [math.nan if r.backlog is None else r.backlog for r in rows]
            replicas = [math.nan if r.replicas is None else r.replicas for r in rows]
            desired = [math.nan if r.desired is None else r.desired for r in rows]
            ax.fill_between(times, backlog, step=None, alpha=0.25, color=colors[0])
            ax.plot(times, backlog, color=colors[0], linewidth=1.4, label="backlog (lag + pending)")
            ax.set_ylabel("backlog", color=colors[0])
            ax.set_ylim(bottom=0)
            ax.set_title(name, loc="left", fontsize=11, fontweight="bold")
            ax.grid(alpha=0.3)
            twin = ax.twinx()
            twin.step(times, replicas, where="post", color=colors[3], linewidth=2, label="replicas")
            twin.step(
                times,
                desired,
                where="post",
                color=colors[1],
                linewidth=1.3,
                linestyle=(0, (4, 2)),
                label="desired replicas",
            )
            top = max([r for r in replicas + desired if not math.isnan(r)] + [1])
            twin.set_ylim(0, top + 1)
            twin.yaxis.get_major_locator().set_params(integer=True)
            twin.set_ylabel("replicas", color=colors[3])
            for number, phase in enumerate(self.phases):
                ax.axvline(phase.at, color="grey", linewidth=0.8, linestyle=":")
                if index == 0:  # staggered: phases close together stay readable
                    ax.annotate(
                        phase.name,
                        (phase.at, 1.0),
                        xycoords=("data", "axes fraction"),
                        xytext=(2, 4 + 11 * (number % 2)),
                        textcoords="offset points",
                        fontsize=8,
                        color="dimgrey",
                    )
            if index == 0:
                lines = ax.get_legend_handles_labels()
                twins = twin.get_legend_handles_labels()
                ax.legend(lines[0] + twins[0], lines[1] + twins[1], loc="upper right", fontsize=8)
        axes[-1].set_xlabel("seconds since the operator started")
        fig.suptitle(title, fontsize=12, y=0.995)
        fig.tight_layout(rect=(0, 0, 1, 0.97))
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


def _count(value: float | None) -> str:
    return "?" if value is None else f"{value:,.0f}"


def clock() -> str:
    return datetime.now().strftime("%H:%M:%S")
