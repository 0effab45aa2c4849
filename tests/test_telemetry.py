"""What workers tell the outside about each attempt (``pgjobs/worker/telemetry.py``):
the Django signals of ``pgjobs.signals`` and OpenTelemetry spans
(``pgjobs/tracing.py``), the enqueuer's trace carried into the job. Real
workers in this process, real stores; spans recorded by the OpenTelemetry SDK's
in-memory exporter."""

import logging
import threading

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from pgjobs import background, current_job, records, signals
from pgjobs.retry import RetryPolicy
from tests.conftest import run_jobs
from tests.testapp import jobs

NO_WAIT = RetryPolicy(base=0.0, cap=0.0, jitter=0.0)


@pytest.fixture
def heard():
    """Every job_started, job_failed and job_finished sent, as (name, kwargs, thread)."""
    calls = []
    receivers = {}
    for name in ("job_started", "job_failed", "job_finished"):

        def receiver(sender, name=name, **kwargs):
            kwargs["current"] = current_job()
            calls.append((name, kwargs, threading.current_thread().name))

        receivers[name] = receiver
        getattr(signals, name).connect(receiver)
    yield calls
    for name, receiver in receivers.items():
        getattr(signals, name).disconnect(receiver)


@pytest.mark.django_db
def test_workers_send_started_failed_and_finished_for_each_attempt(heard):
    ok = background.enqueue(jobs.add, args=[2, 3], priority=1)
    flaky = background.enqueue(jobs.fail_always, args=["nope"], max_attempts=2)
    run_jobs(retry_policy=NO_WAIT)
    run_jobs(retry_policy=NO_WAIT)

    started = [(kw["job"].id, kw["job"].attempts, thread) for name, kw, thread in heard
               if name == "job_started"]  # fmt: skip
    assert [(job_id, attempt) for job_id, attempt, _ in started] == [
        (ok.id, 1), (flaky.id, 1), (flaky.id, 2)
    ]  # fmt: skip
    main = threading.main_thread().name
    assert all(thread != main for *_, thread in started), "in the job's own thread"
    for name, kw, _ in heard:
        if name == "job_started":
            assert kw["current"].id == kw["job"].id, "current_job() answers there"
    finished = [(kw["job"].id, kw["outcome"], kw["result"]) for name, kw, _ in heard
                if name == "job_finished"]  # fmt: skip
    assert finished == [
        (ok.id, records.SUCCEEDED, 5),
        (flaky.id, records.RETRIED, None),
        (flaky.id, records.FAILED, None),
    ]
    failed = [kw for name, kw, _ in heard if name == "job_failed"]
    assert [(kw["outcome"], kw["will_retry"]) for kw in failed] == [
        (records.RETRIED, True),
        (records.FAILED, False),
    ]
    assert failed[0]["error"]["type"] == "builtins.RuntimeError"
    assert failed[0]["error"]["message"] == "nope"
    names = [name for name, _, _ in heard if name != "job_started"]
    assert names == ["job_finished", "job_failed", "job_finished", "job_failed", "job_finished"]
    assert all(kw["worker_id"] for _, kw, _ in heard)


@pytest.mark.django_db
def test_a_receiver_that_raises_is_logged_and_the_job_goes_on(caplog):
    def broken(sender, **kwargs):
        raise KeyError("receiver bug")

    signals.job_started.connect(broken)
    signals.job_finished.connect(broken)
    try:
        ref = background.enqueue(jobs.add, args=[1, 1])
        with caplog.at_level(logging.ERROR, logger="pgjobs"):
            stats = run_jobs()
    finally:
        signals.job_started.disconnect(broken)
        signals.job_finished.disconnect(broken)
    assert (stats.succeeded, ref.refresh().status, ref.result) == (1, records.SUCCEEDED, 2)
    logged = [r.getMessage() for r in caplog.records if "receiver of" in r.getMessage()]
    assert len(logged) == 2
    assert "a receiver of job_started" in logged[0] and "KeyError" in logged[0]


# -- OpenTelemetry ---------------------------------------------------------------------

_exporter = InMemorySpanExporter()


@pytest.fixture
def spans():
    """The SDK recording into memory (one global tracer provider per process)."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_exporter))
        trace.set_tracer_provider(provider)
    _exporter.clear()
    yield _exporter
    _exporter.clear()


def _named(exporter, prefix):
    return [span for span in exporter.get_finished_spans() if span.name.startswith(prefix)]


@pytest.mark.django_db
def test_a_job_runs_in_a_span_of_the_trace_that_enqueued_it(spans):
    tracer = trace.get_tracer("tests")
    with tracer.start_as_current_span("request") as request:
        ref = background.enqueue(jobs.add, args=[1, 2], queue="default")
    run_jobs()
    assert ref.refresh().result == 3

    (enqueue,) = _named(spans, "pgjobs enqueue")
    (run,) = _named(spans, "pgjobs run")
    trace_id = request.get_span_context().trace_id
    assert enqueue.name == "pgjobs enqueue tests.testapp.jobs.add"
    assert (enqueue.kind, enqueue.parent.span_id) == (
        SpanKind.PRODUCER,
        request.get_span_context().span_id,
    )
    assert run.name == "pgjobs run tests.testapp.jobs.add"
    assert run.kind == SpanKind.CONSUMER
    assert run.context.trace_id == trace_id, "the request's trace goes on into the job"
    assert run.parent.span_id == enqueue.context.span_id
    assert run.attributes["messaging.message.id"] == str(ref.id)
    assert run.attributes["messaging.destination.name"] == "default"
    assert run.attributes["pgjobs.attempt"] == 1
    assert run.status.status_code != StatusCode.ERROR


@pytest.mark.django_db
def test_a_failed_attempt_ends_its_span_with_the_error_and_bulk_enqueues_carry_the_trace(spans):
    tracer = trace.get_tracer("tests")
    with tracer.start_as_current_span("request") as request:
        background.enqueue_many([(jobs.fail_always, ["span boom"], {})] * 2, max_attempts=1)
    run_jobs()
    (enqueue,) = _named(spans, "pgjobs enqueue")
    assert enqueue.attributes["messaging.batch.message_count"] == 2
    runs = _named(spans, "pgjobs run")
    assert len(runs) == 2
    for run in runs:
        assert run.context.trace_id == request.get_span_context().trace_id
        assert run.parent.span_id == enqueue.context.span_id
        assert run.status.status_code == StatusCode.ERROR
        assert run.status.description == "span boom"
        (event,) = [e for e in run.events if e.name == "exception"]
        assert event.attributes["exception.type"] == "RuntimeError"


@pytest.mark.django_db
def test_a_job_enqueued_outside_any_trace_starts_one_at_its_enqueue(spans):
    ref = background.enqueue(jobs.noop)
    run_jobs()
    assert ref.refresh().status == records.SUCCEEDED
    (enqueue,) = _named(spans, "pgjobs enqueue")
    (run,) = _named(spans, "pgjobs run")
    assert enqueue.parent is None
    assert run.parent.span_id == enqueue.context.span_id
