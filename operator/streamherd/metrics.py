"""Prometheus metrics. Unknown values are NaN, never 0: a dashboard must not show a backlog
that could not be read as an empty one."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Gauge, Histogram, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from streamherd import __version__
from streamherd.decisions.totals import GroupTotals

GROUP_LABELS = ("namespace", "consumergroup", "group")


class Series:
    """One series of a LabelledMetric (made per ``labels()`` call, kept by nobody)."""

    __slots__ = ("_key", "_metric")

    def __init__(self, metric: LabelledMetric, key: tuple[str, ...]) -> None:
        self._metric, self._key = metric, key

    def set(self, value: float) -> None:
        self._metric.values[self._key] = float(value)

    def inc(self, amount: float = 1.0) -> None:
        values = self._metric.values
        values[self._key] = values.get(self._key, 0.0) + amount

    def observe(self, value: float) -> None:
        histogram = self._metric
        assert isinstance(histogram, LabelledHistogram)
        counts = histogram.counts.setdefault(self._key, [0.0] * (len(histogram.bounds) + 1))
        for i, bound in enumerate(histogram.bounds):
            if value <= bound:
                counts[i] += 1
        counts[-1] += 1
        histogram.values[self._key] = histogram.values.get(self._key, 0.0) + value


class LabelledMetric:
    """A labelled metric whose series are entries of one dict: label values -> value.
    prometheus_client's labelled child is an object with a value, a lock and a dozen
    attributes (a histogram's one per bucket); with a series per resource in most metrics,
    4,000 resources made those ~9 KiB each of the operator's memory (bench-load). Written
    from the event loop only; scraped from the metrics server's thread, which copies each
    dict first (a copy is atomic under the GIL)."""

    kind = "gauge"

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry
    ) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, tuple(labelnames)
        self.values: dict[tuple[str, ...], float] = {}
        registry.register(self)  # a collector: it has collect()

    def labels(self, *values: object) -> Series:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name}: labels {self.labelnames}, given {values}")
        key = tuple(str(v) for v in values)
        self.values.setdefault(key, 0.0)  # as prometheus_client: a series from its labels
        return Series(self, key)

    def remove_by_labels(self, wanted: dict[str, str]) -> None:
        """Remove the series matching every label of ``wanted`` (ValueError: not labelled so)."""
        if not set(wanted) <= set(self.labelnames):
            raise ValueError(f"{self.name} is not labelled by {sorted(wanted)}")
        at = [(self.labelnames.index(k), v) for k, v in wanted.items()]
        for key in [key for key in list(self.values) if all(key[i] == v for i, v in at)]:
            self._drop(key)

    def _drop(self, key: tuple[str, ...]) -> None:
        self.values.pop(key, None)

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for key, value in list(self.values.items()):
            family.add_metric(key, value)
        yield family


class LabelledGauge(LabelledMetric):
    pass


class LabelledCounter(LabelledMetric):
    kind = "counter"

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for key, value in list(self.values.items()):
            family.add_metric(key, value)
        yield family


def _bound(value: float) -> str:
    """A bucket bound as prometheus_client writes it (1.0, 2.5, +Inf)."""
    return str(floatToGoString(value))  # type: ignore[no-untyped-call]


class LabelledHistogram(LabelledMetric):
    kind = "histogram"

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry,
        buckets: Sequence[float],
    ) -> None:
        self.bounds = tuple(sorted(buckets))
        self.counts: dict[tuple[str, ...], list[float]] = {}
        """Per series, the count of observations at most each bound (cumulative), and all."""
        super().__init__(name, documentation, labelnames, registry)

    def labels(self, *values: object) -> Series:
        series = super().labels(*values)
        self.counts.setdefault(tuple(str(v) for v in values), [0.0] * (len(self.bounds) + 1))
        return series

    def _drop(self, key: tuple[str, ...]) -> None:
        super()._drop(key)
        self.counts.pop(key, None)

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        sums = dict(self.values)
        for key, counts in list(self.counts.items()):
            *at_most, total = list(counts)
            buckets = [(_bound(b), c) for b, c in zip(self.bounds, at_most, strict=True)]
            family.add_metric(key, [*buckets, ("+Inf", total)], sums.get(key, 0.0))
        yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.pending = LabelledGauge(
            "streamherd_group_pending",
            "Entries delivered and not acknowledged (PEL).",
            GROUP_LABELS,
            registry=r,
        )
        self.lag = LabelledGauge(
            "streamherd_group_lag",
            "Entries not yet delivered to the group; a lower bound when Redis could not count them all. NaN when unknown.",
            GROUP_LABELS,
            registry=r,
        )
        self.backlog = LabelledGauge(
            "streamherd_group_backlog", "lag + pending. NaN when unknown.", GROUP_LABELS, registry=r
        )
        self.consumers = LabelledGauge(
            "streamherd_group_consumers",
            "Consumers Redis knows in the group.",
            GROUP_LABELS,
            registry=r,
        )
        self.oldest_pending = LabelledGauge(
            "streamherd_group_oldest_pending_age_seconds",
            "How long ago the oldest pending entry was added (Redis's clock minus its id's time). 0 when nothing is pending.",
            GROUP_LABELS,
            registry=r,
        )
        self.lag_seconds = LabelledGauge(
            "streamherd_group_lag_seconds",
            "Lag in time: how long ago the oldest entry not yet delivered to the group was added (Redis's clock minus its id's time), the largest over its streams; 0 when nothing is unread; a lower bound when some stream's could not be told. NaN when unknown.",
            GROUP_LABELS,
            registry=r,
        )

        self.replicas = LabelledGauge(
            "streamherd_group_replicas",
            "Current replicas of the consumer Deployment.",
            GROUP_LABELS,
            registry=r,
        )
        self.desired_replicas = LabelledGauge(
            "streamherd_group_desired_replicas",
            "Replicas the autoscaler wants.",
            GROUP_LABELS,
            registry=r,
        )
        self.health = LabelledGauge(
            "streamherd_group_health",
            "1 for the group's health state (OK, Lagging, Stalled, Stopped, Unknown), 0 for the others.",
            (*GROUP_LABELS, "state"),
            registry=r,
        )
        self.api_requests = LabelledCounter(
            "streamherd_api_requests_total",
            "Kubernetes API requests the operator's loops sent (kopf's own watches and handler patches not included), by verb and resource.",
            ("verb", "resource"),
            registry=r,
        )
        self.status_interval = Gauge(
            "streamherd_status_interval_seconds",
            "How often each resource's status numbers are refreshed: --status-interval, or longer when --status-writes-per-second cannot write every resource's numbers that often (numbers older than twice this are late).",
            registry=r,
        )
        self.write_queue = Gauge(
            "streamherd_api_write_queue_seconds",
            "How long the longest-waiting queued status write or Event has waited for the write budget.",
            registry=r,
        )
        self._write_queue_age: Callable[[], float] = lambda: 0.0
        self.write_queue.set_function(lambda: self._write_queue_age())
        self.info = LabelledGauge(
            "streamherd_operator_info",
            "1 while the operator runs (its version as a label): absent means it is down or not scraped.",
            ("version",),
            registry=r,
        )
        self.info.labels(__version__).set(1)
        self.reconcile_errors = LabelledCounter(
            "streamherd_reconcile_errors_total",
            "Reconciliations that ended not Ready, by reason.",
            ("kind", "reason"),
            registry=r,
        )
        self.roundtrip = LabelledHistogram(
            "streamherd_redis_roundtrip_seconds",
            "Duration of one Redis round trip (a pipeline or command).",
            ("endpoint", "operation"),
            registry=r,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.poll_duration = LabelledHistogram(
            "streamherd_poll_duration_seconds",
            "Duration of one poll of every stream and group on an endpoint.",
            ("endpoint",),
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.poll_delay = Histogram(
            "streamherd_group_poll_delay_ratio",
            "How old a ConsumerGroup's last measurement was when the next one reached its "
            "loop, in pollIntervals: about 1 on time; above 2 the loops fall behind the poller.",
            registry=r,
            buckets=(1, 1.1, 1.25, 1.5, 1.75, 2, 2.5, 3, 5, 10, 30, 100),
        )
        self.polls = LabelledCounter(
            "streamherd_polls_total",
            "Polls of an endpoint, by outcome.",
            ("endpoint", "outcome"),
            registry=r,
        )
        self.polled_groups = LabelledGauge(
            "streamherd_endpoint_groups",
            "Consumer groups seen in the last poll of an endpoint.",
            ("endpoint",),
            registry=r,
        )
        self.endpoint_durable = LabelledGauge(
            "streamherd_endpoint_durable",
            "1 when the endpoint fsyncs every write (AOF always) and has a replica online, 0 when a crash can lose acknowledged writes, NaN when not known (condition Durable says what).",
            ("endpoint",),
            registry=r,
        )
        self.endpoint_replicas = LabelledGauge(
            "streamherd_endpoint_connected_replicas",
            "Replicas online (INFO replication; the weakest primary of a cluster). NaN when not known.",
            ("endpoint",),
            registry=r,
        )
        self.scaling_decisions = LabelledCounter(
            "streamherd_scaling_decisions_total",
            "Autoscaling decisions that changed replicas, by action (ScaledUp, ScaledDown, WokeUp, ScaledToZero).",
            ("namespace", "consumergroup", "action"),
            registry=r,
        )
        self.stream_length = LabelledGauge(
            "streamherd_stream_length",
            "Entries in a RedisStream (summed over a pattern's keys).",
            ("namespace", "redisstream"),
            registry=r,
        )
        janitor_labels = (*GROUP_LABELS, "strategy")
        self.janitor_recovered = LabelledCounter(
            "streamherd_janitor_recovered_total",
            "Stale or stranded pending entries handed back by the janitor (re-queued or claimed).",
            janitor_labels,
            registry=r,
        )
        self.janitor_dead_lettered = LabelledCounter(
            "streamherd_janitor_dead_lettered_total",
            "Poison entries moved to the dead-letter stream.",
            GROUP_LABELS,
            registry=r,
        )
        self.janitor_dropped = LabelledCounter(
            "streamherd_janitor_dropped_total",
            "Pending entries whose stream entry was trimmed or deleted, removed from the PEL.",
            GROUP_LABELS,
            registry=r,
        )
        self.janitor_consumers_removed = LabelledCounter(
            "streamherd_janitor_consumers_removed_total",
            "Consumers removed from the group (pod gone, or idle without a pod).",
            GROUP_LABELS,
            registry=r,
        )
        self.janitor_runs = LabelledCounter(
            "streamherd_janitor_runs_total",
            "Janitor passes, by outcome (complete, partial: time budget reached, error).",
            (*GROUP_LABELS, "outcome"),
            registry=r,
        )
        self.janitor_duration = LabelledHistogram(
            "streamherd_janitor_run_duration_seconds",
            "Duration of one janitor pass.",
            GROUP_LABELS,
            registry=r,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
        )
        self.dead_letter_entries = LabelledGauge(
            "streamherd_group_dead_letter_entries",
            "Entries in the dead-letter stream(s) the group's poison entries go to (a default <key>:dlq is shared by the groups of its stream). Read by one poll in five; NaN when a length could not be read.",
            GROUP_LABELS,
            registry=r,
        )
        self.janitor_poison_held = LabelledGauge(
            "streamherd_janitor_poison_held",
            "Poison entries the last pass left pending because no dead-letter stream can take them.",
            GROUP_LABELS,
            registry=r,
        )
        self.janitor_dead_letter_blocked = LabelledGauge(
            "streamherd_janitor_dead_letter_blocked",
            "1 when a stream of the group cannot dead-letter (dead-letter key in another Cluster hash slot).",
            GROUP_LABELS,
            registry=r,
        )

        self.janitor_shared_requeue = LabelledGauge(
            "streamherd_janitor_shared_requeue",
            "1 when strategy Requeue appends recovered work to streams other groups read too "
            "(condition RecoveryIsolated=False SharedStream), else 0.",
            GROUP_LABELS,
            registry=r,
        )
        self.discovered = LabelledCounter(
            "streamherd_discovered_streams_total",
            "Stream keys of a pattern found by an event (path: registry, notification), before SCAN.",
            ("endpoint", "path"),
            registry=r,
        )
        policy_labels = ("namespace", "retentionpolicy")
        self.retention_trimmed = LabelledCounter(
            "streamherd_retention_trimmed_total",
            "Entries trimmed by a RetentionPolicy.",
            policy_labels,
            registry=r,
        )
        self.retention_deleted = LabelledCounter(
            "streamherd_retention_deleted_streams_total",
            "Idle streams deleted by a RetentionPolicy (deleteIdleStreamsAfter).",
            policy_labels,
            registry=r,
        )
        self.retention_unconsumed_dropped = LabelledCounter(
            "streamherd_retention_unconsumed_dropped_total",
            "Entries hardMaxLength dropped that some group had not consumed.",
            policy_labels,
            registry=r,
        )
        self.retention_streams = LabelledGauge(
            "streamherd_retention_streams",
            "Streams a RetentionPolicy covered in its last complete pass.",
            policy_labels,
            registry=r,
        )
        self.retention_blocked_streams = LabelledGauge(
            "streamherd_retention_blocked_streams",
            "Streams on which a group holds retention back (last complete pass).",
            (*policy_labels, "redisstream", "group"),
            registry=r,
        )
        self.retention_runs = LabelledCounter(
            "streamherd_retention_runs_total",
            "Complete retention passes, by outcome (complete, error).",
            (*policy_labels, "outcome"),
            registry=r,
        )
        self.retention_duration = LabelledHistogram(
            "streamherd_retention_pass_duration_seconds",
            "Duration of one complete retention pass (its steps and the pauses between them).",
            policy_labels,
            registry=r,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
        )

    def watch_write_queue(self, age: Callable[[], float]) -> None:
        """Where ``streamherd_api_write_queue_seconds`` reads its value (the client's queue)."""
        self._write_queue_age = age

    def serve(self, port: int, address: str = "0.0.0.0") -> None:
        start_http_server(port, addr=address, registry=self.registry)

    def set_group(self, namespace: str, name: str, group: str, totals: GroupTotals) -> None:
        labels = (namespace, name, group)
        self.pending.labels(*labels).set(_number(totals.pending))
        self.lag.labels(*labels).set(_number(totals.lag.value))
        self.backlog.labels(*labels).set(_number(totals.backlog.value))
        self.consumers.labels(*labels).set(_number(totals.consumers))
        lag_age = totals.lag_age_ms.value
        self.lag_seconds.labels(*labels).set(math.nan if lag_age is None else lag_age / 1000)
        age = totals.oldest_pending_age_ms
        self.oldest_pending.labels(*labels).set(
            age / 1000 if age is not None else (0.0 if totals.pending == 0 else math.nan)
        )

    def forget_group(self, namespace: str, name: str, group: str) -> None:
        """Remove every series of a deleted ConsumerGroup: a gauge would otherwise report
        its last value forever. Covers each metric labelled by group, whatever its other labels."""
        self._remove({"namespace": namespace, "consumergroup": name, "group": group})

    def _remove(self, wanted: dict[str, str]) -> None:
        """Remove the series, of every metric labelled by all of ``wanted``, that match it."""
        for metric in vars(self).values():
            if isinstance(metric, LabelledMetric):
                with contextlib.suppress(ValueError):  # not labelled so: nothing to forget
                    metric.remove_by_labels(wanted)

    def set_retention_holds(
        self, namespace: str, policy: str, holds: dict[tuple[str, str], int]
    ) -> None:
        """The blocked-streams gauge for one policy: exactly the groups holding it back now."""
        gauge = self.retention_blocked_streams
        gauge.remove_by_labels({"namespace": namespace, "retentionpolicy": policy})
        for (redis_stream, group), streams in holds.items():
            gauge.labels(namespace, policy, redis_stream, group).set(streams)

    def forget_retention(self, namespace: str, policy: str) -> None:
        """Remove every series of a RetentionPolicy whose loop ended."""
        self._remove({"namespace": namespace, "retentionpolicy": policy})


def _number(value: int | None) -> float:
    return math.nan if value is None else float(value)
