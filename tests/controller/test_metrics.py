from prometheus_client import generate_latest

from streamherd.decisions.totals import GroupTotals
from streamherd.metrics import Metrics
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
