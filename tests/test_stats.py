"""``pgjobs/stats.py``: buckets, quantiles, and the edges every store writes with."""

import datetime
import importlib.resources
import os
import re

import pytest

from pgjobs import records, stats

MINUTE = datetime.datetime(2026, 1, 2, 3, 4, tzinfo=datetime.UTC)


def test_a_bucket_counts_values_from_the_edge_below_up_to_the_edge_above():
    assert stats.bucket_of(0) == 0
    assert stats.bucket_of(-3) == 0, "clocks apart: no negative bucket"
    assert stats.bucket_of(0.004) == 0
    assert stats.bucket_of(0.005) == 1, "an edge starts its bucket, as width_bucket says"
    assert stats.bucket_of(0.7) == stats.EDGES.index(1.0)
    assert stats.bucket_of(10**6) == len(stats.EDGES) == stats.BUCKETS - 1


def test_quantiles_are_read_between_the_edges_of_their_bucket():
    buckets = [0] * stats.BUCKETS
    assert stats.quantile(buckets, 0.5) is None
    buckets[stats.bucket_of(0.3)] = 100  # 0.25 <= x < 0.5
    assert stats.quantile(buckets, 0.5) == pytest.approx(0.375)
    assert stats.quantile(buckets, 0.95) == pytest.approx(0.4875)
    buckets[stats.bucket_of(20)] = 100  # 10 <= x < 30
    assert 0.25 <= stats.quantile(buckets, 0.5) <= 0.5
    assert 10 <= stats.quantile(buckets, 0.95) <= 30
    over = [0] * stats.BUCKETS
    over[-1] = 1
    assert stats.quantile(over, 0.5) == stats.EDGES[-1], "past the last edge: read as it"


def test_rows_of_the_same_key_add_up_in_key_order():
    rows = stats.attempt_rows(MINUTE, "b", 1, records.FAILED, 0.3, 2.0)
    rows += stats.attempt_rows(MINUTE, "a", 1, records.SUCCEEDED, 0.3, None)
    rows += stats.attempt_rows(MINUTE, "b", 1, records.FAILED, 0.4, 2.5)
    merged = stats.merge_rows(rows)
    assert merged == sorted(merged)
    by_key = {row[:5]: row[5:] for row in merged}
    assert by_key[(MINUTE, "b", 1, records.FAILED, 0)] == (2, 0.0)
    assert by_key[(MINUTE, "b", 1, stats.WAIT, stats.bucket_of(0.3))] == (2, pytest.approx(0.7))
    assert (MINUTE, "a", 1, stats.RUN, 0) not in by_key, "no run time: not counted"


def test_figures_from_rows_fill_every_outcome_and_bucket():
    later = MINUTE + datetime.timedelta(minutes=1)
    rows = [
        (later, "q", records.SUCCEEDED, 0, 2, 0.0),
        (MINUTE, "q", stats.WAIT, 3, 1, 0.03),
        (MINUTE, "q", stats.WAIT, 3, 1, 0.04),
        (MINUTE, "q", stats.RUN, 99, 1, 5000.0),  # a bucket a later version adds: the last
    ]
    first, second = stats.figures_from_rows(rows)
    assert (first.minute, second.minute) == (MINUTE, later)
    assert first.outcomes == dict.fromkeys(records.OUTCOMES, 0)
    assert first.wait_buckets[3] == 2 and first.wait_sum == pytest.approx(0.07)
    assert first.run_buckets[-1] == 1
    assert second.outcomes[records.SUCCEEDED] == 2


def _text(*path):
    return importlib.resources.files("pgjobs.stores").joinpath(*path).read_text()


def test_every_store_buckets_with_the_same_edges_and_keeps_figures_as_long():
    """The SQL statements and the Lua scripts bucket without Python: their edges
    are written out, and must be stats.EDGES."""
    for vendor in ("mysql", "sqlite"):
        text = _text("sql", f"{vendor}.sql")
        edges = [float(e) for e in re.findall(r"\(x >= ([\d.]+)\)", text)]
        assert tuple(edges) == stats.EDGES, vendor
    common = _text("lua", "common.lua")
    lua_edges = re.search(r"local EDGES = \{([^}]*)\}", common).group(1)
    assert tuple(float(e) for e in lua_edges.split(",")) == stats.EDGES
    keep_ms = int(re.search(r"local FIGURES_KEEP_MS = (\d+)", common).group(1))
    assert keep_ms == stats.KEEP // datetime.timedelta(milliseconds=1)
    # PostgreSQL gets them as a parameter.
    from pgjobs.stores.postgres import _EDGES

    assert tuple(float(e) for e in _EDGES.strip("{}").split(",")) == stats.EDGES


def test_shards_are_fixed_per_worker_and_spread():
    assert stats.shard_of("host:1") == stats.shard_of("host:1")
    assert len({stats.shard_of(f"host:{pid}") for pid in range(100)}) == stats.SHARDS


def test_binned_adds_figures_up_per_bin():
    rows = [
        (MINUTE.replace(minute=minute), "q", records.SUCCEEDED, 0, 1, 0.0)
        for minute in (0, 9, 10, 19, 25)
    ]
    bins = stats.binned(stats.figures_from_rows(rows), 10)
    assert [(b.minute.minute, b.outcomes[records.SUCCEEDED]) for b in bins] == [
        (0, 2),
        (10, 2),
        (20, 1),
    ]
    assert stats.coarse_of(MINUTE.replace(minute=37, second=5)).minute == 30


@pytest.mark.skipif(os.environ.get("PGJOBS_TEST_DB") == "redis", reason="SQL stores' shards")
@pytest.mark.django_db
def test_folding_keeps_every_figure_in_fewer_rows():
    from django.utils import timezone

    from pgjobs.handler import get_backend
    from pgjobs.models import JobStat

    store = get_backend().get_store()
    start = stats.minute_of(timezone.now()) - datetime.timedelta(hours=3)
    JobStat.objects.bulk_create(
        JobStat(
            minute=start + datetime.timedelta(minutes=m),
            queue="q",
            shard=shard,
            metric=metric,
            bucket=bucket,
            count=m + shard,
            total=0.5,
        )  # fmt: skip
        for m in range(0, 100, 7)  # all older than COARSE_AFTER
        for shard in (0, 3, 5)
        for metric, bucket in ((records.SUCCEEDED, 0), (stats.WAIT, 2), (stats.RUN, 4))
    )
    before = stats.binned(store.minute_figures(datetime.timedelta(hours=4)), 10)
    rows_before = JobStat.objects.count()
    folded = store.fold_figures(stats.FOLD_AFTER, span=datetime.timedelta(days=1))
    assert folded >= rows_before
    after = store.minute_figures(datetime.timedelta(hours=4))
    assert stats.binned(after, 10) == before
    assert {(f.minute.minute % 10) for f in after} == {0}
    assert set(JobStat.objects.values_list("shard", flat=True)) == {0}
    assert JobStat.objects.count() < rows_before / 3
    assert store.fold_figures(stats.FOLD_AFTER, span=datetime.timedelta(days=1)) == 0
