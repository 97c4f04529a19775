from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from streamherd.decisions.totals import GroupTotals
from streamherd.metrics import LabelledCounter, LabelledGauge, LabelledHistogram, Metrics
from streamherd.observations import Reading


def test_a_deleted_group_leaves_no_series_behind_and_others_keep_theirs() -> None:
    metrics = Metrics()
    totals = GroupTotals(known=True, streams=1, pending=2, lag=Reading.exact(3), consumers=1)
    for name in ("gone", "kept"):
        metrics.set_group("ns", name, name, totals)
        metrics.replicas.labels("ns", name, name).set(2)
        metrics.janitor_recovered.labels("ns", name, name, "Requeue").inc(5)
        metrics.janitor_duration.labels("ns", name, name).observe(0.1)
    metrics.forget_group("ns", "gone", "gone")
    text = generate_latest(metrics.registry).decode()
    assert 'consumergroup="gone"' not in text
    assert text.count('consumergroup="kept"') >= 8


def test_unknown_is_nan_not_zero() -> None:
    metrics = Metrics()
    metrics.set_group("ns", "g", "g", GroupTotals.unknown())
    text = generate_latest(metrics.registry).decode()
    assert 'streamherd_group_backlog{consumergroup="g",group="g",namespace="ns"} NaN' in text


def test_the_labelled_metrics_expose_what_prometheus_clients_own_would() -> None:
    """streamherd.metrics keeps a series per dict entry instead of prometheus_client's object
    per series (memory at thousands of resources): the scrape must read the same."""
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    labels = ("namespace", "consumergroup")
    made = [
        (
            LabelledGauge("t_gauge", "g.", labels, ours),
            Gauge("t_gauge", "g.", labels, registry=theirs),
        ),
        (
            LabelledCounter("t_runs_total", "c.", labels, ours),
            Counter("t_runs_total", "c.", labels, registry=theirs),
        ),
        (
            LabelledHistogram("t_seconds", "h.", labels, ours, buckets=(0.1, 1, 2.5)),
            Histogram("t_seconds", "h.", labels, registry=theirs, buckets=(0.1, 1, 2.5)),
        ),
    ]
    for mine, reference in made:
        for metric in (mine, reference):
            for value in (0.05, 0.1, 0.7, 3.0, float("nan")):
                series = metric.labels("ns", "a")
                if isinstance(metric, LabelledGauge | Gauge):
                    series.set(value)
                elif isinstance(metric, LabelledCounter | Counter):
                    series.inc(2)
                elif value == value:  # histograms: no NaN
                    series.observe(value)
            metric.labels("ns", "untouched")
            metric.labels("ns", "gone")
            metric.remove_by_labels({"consumergroup": "gone"})

    def exposed(registry: CollectorRegistry) -> list[str]:
        return [
            line
            for line in generate_latest(registry).decode().splitlines()
            if "_created" not in line
        ]

    assert exposed(ours) == exposed(theirs)
    assert any('le="2.5"' in line for line in exposed(ours))
