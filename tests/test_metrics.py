"""Prometheus metrics (``pgjobs/metrics/``): the view a site mounts and
``manage.py pgjobs_metrics``, read by Prometheus's own text parser, over the
store of this run with real workers' outcomes."""

import datetime
import socket
import urllib.request

import pytest
from django.core.management import CommandError, call_command
from prometheus_client.parser import text_string_to_metric_families

from pgjobs import background, records, stats
from pgjobs.handler import get_backend
from pgjobs.metrics import registry
from pgjobs.retry import RetryPolicy
from tests.conftest import run_jobs, wait_for
from tests.testapp import jobs

NO_WAIT = RetryPolicy(base=0.0, cap=0.0, jitter=0.0)


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch):
    """Each test counts from its own first scrape."""
    monkeypatch.setattr(registry, "_registry", None)


def samples(text):
    """``{(name, labels as a sorted tuple): value}`` of a scrape."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def scrape(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    return samples(response.content.decode())


def q(queue, **labels):
    return tuple(sorted({"queue": queue, **labels}.items()))


@pytest.mark.django_db(transaction=True)  # PostgreSQL's now() moves between claims
@pytest.mark.urls("tests.urls")
def test_the_view_tells_queue_depth_oldest_wait_workers_and_what_finished(client):
    store = get_backend().get_store()
    store.register_worker("metrics-w1", "host-a", 1, ["other"], 4)
    store.register_worker("metrics-w2", "host-b", 2, None, 2)
    background.enqueue(jobs.noop, queue="other")
    background.defer(jobs.noop, datetime.timedelta(hours=1), queue="other")
    first = scrape(client)
    assert first[("pgjobs_queue_ready_jobs", q("other"))] == 1
    assert first[("pgjobs_queue_deferred_jobs", q("other"))] == 1
    assert first[("pgjobs_queue_running_jobs", q("other"))] == 0
    assert 0 <= first[("pgjobs_queue_oldest_due_seconds", q("other"))] < 60
    assert first[("pgjobs_workers", q("other"))] == 2, "one works mq, one every queue"
    assert first[("pgjobs_workers", q("*"))] == 1

    background.enqueue(jobs.add, args=[1, 2], queue="other")
    background.enqueue(jobs.fail_always, args=["x"], queue="other", max_attempts=2)
    run_jobs(queues=["other"], retry_policy=NO_WAIT)
    run_jobs(queues=["other"], retry_policy=NO_WAIT)
    second = scrape(client)
    assert second[("pgjobs_queue_ready_jobs", q("other"))] == 0
    assert second[("pgjobs_queue_failed_last_hour", q("other"))] == 1
    finished = {o: second[("pgjobs_jobs_finished_total", q("other", outcome=o))]
                for o in records.OUTCOMES}  # fmt: skip
    assert finished == {"succeeded": 2, "failed": 1, "retried": 1, "cancelled": 0}
    for metric in ("pgjobs_job_wait_seconds", "pgjobs_job_run_seconds"):
        assert second[(f"{metric}_count", q("other"))] == 4
        assert second[(f"{metric}_bucket", q("other", le="+Inf"))] == 4
        assert second[(f"{metric}_bucket", q("other", le="0.005"))] <= 4
        assert second[(f"{metric}_sum", q("other"))] >= 0

    third = scrape(client)
    assert third[("pgjobs_jobs_finished_total", q("other", outcome="succeeded"))] == 2, (
        "counted once however often it is scraped"
    )


@pytest.mark.django_db
@pytest.mark.urls("tests.urls")
def test_counting_starts_at_the_first_scrape(client):
    background.enqueue(jobs.noop, queue="other")
    run_jobs(queues=["other"])
    first = scrape(client)
    assert ("pgjobs_jobs_finished_total", q("other", outcome="succeeded")) not in first
    background.enqueue(jobs.noop, queue="other")
    run_jobs(queues=["other"])
    assert scrape(client)[("pgjobs_jobs_finished_total", q("other", outcome="succeeded"))] == 1


def test_histogram_buckets_are_the_figures_edges():
    from pgjobs.metrics.collector import _cumulative

    buckets = [0] * stats.BUCKETS
    buckets[0], buckets[3], buckets[-1] = 1, 2, 4
    cumulative = _cumulative(buckets)
    assert cumulative[0] == ("0.005", 1)
    assert cumulative[3] == (str(stats.EDGES[3]), 3)
    assert cumulative[-1] == ("+Inf", 7)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_pgjobs_metrics_serves_the_metrics_on_its_port(start_worker):
    background.enqueue(jobs.noop, queue="default")
    port = free_port()
    server = start_worker("--port", str(port), "--addr", "127.0.0.1", command="pgjobs_metrics")
    server.wait_for_output(f"pgjobs metrics at http://127.0.0.1:{port}/metrics")

    def scraped():
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return samples(response.read().decode())

    found = wait_for(scraped, timeout=10)
    assert found[("pgjobs_queue_ready_jobs", q("default"))] == 1
    assert server.stop() == 0


@pytest.mark.parametrize("port", ["70000", "-1"])
def test_pgjobs_metrics_refuses_a_port_out_of_range(port):
    with pytest.raises(CommandError, match="--port must be between 0 and 65535"):
        call_command("pgjobs_metrics", "--port", port)
