"""OpenTelemetry spans, when ``opentelemetry-api`` is installed (``pgjobs[otel]``).

An enqueue runs in a ``PRODUCER`` span (``pgjobs enqueue``); each job stores the
W3C ``traceparent`` of the span that enqueued it (``Job.traceparent``), and each
attempt runs in a ``CONSUMER`` span (``pgjobs run <function>``) of that trace,
so a request's trace goes on into the jobs it started. Spans are recorded by
whatever tracer provider the site configures (the SDK, an exporter); without
one, or without the package, nothing is recorded and no ``traceparent`` is
stored.
"""

import contextlib

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode

    _UNSET_PROVIDERS = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
except ImportError:  # pgjobs[otel] not installed
    trace = None

#: The instrumentation scope of pgjobs' spans.
TRACER_NAME = "pgjobs"
SYSTEM = "pgjobs"


def installed():
    return trace is not None


def _tracer():
    # A proxy until a provider is set, then that provider's: fetched each time,
    # as cheap as a dictionary lookup.
    return trace.get_tracer(TRACER_NAME)


@contextlib.contextmanager
def enqueue_span(queue=None):
    """The ``PRODUCER`` span of an enqueue, current while the jobs are prepared
    (``current_traceparent`` reads it) and written; yields it (None without
    OpenTelemetry). Errors end it with an error status."""
    if trace is None:
        yield None
        return
    attributes = {"messaging.system": SYSTEM, "messaging.operation.type": "send"}
    if queue is not None:
        attributes["messaging.destination.name"] = queue
    with _tracer().start_as_current_span(
        "pgjobs enqueue", kind=SpanKind.PRODUCER, attributes=attributes
    ) as span:
        yield span


def describe_enqueue(span, spec, count=1):
    """Name the enqueue ``span`` after the job it wrote (``spec``, a ``JobSpec``)."""
    if span is not None and span.is_recording():
        span.update_name(f"pgjobs enqueue {spec.func}")
        span.set_attribute("messaging.destination.name", spec.queue)
        span.set_attribute("code.function", spec.func)
        if count != 1:
            span.set_attribute("messaging.batch.message_count", count)


def current_traceparent():
    """The W3C ``traceparent`` of the current span, or None (no OpenTelemetry, no
    span, or one that is not sampled in)."""
    if trace is None:
        return None
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    carrier = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


class AttemptSpan:
    """The ``CONSUMER`` span of one attempt of ``job`` (a ``ClaimedJob``), a child
    of the span that enqueued it; current in the job's thread or task from
    ``start()`` until ``end()``."""

    __slots__ = ("span", "token")

    def __init__(self, job, worker_id):
        parent = None
        if job.traceparent:
            parent = propagate.extract({"traceparent": job.traceparent})
        self.span = _tracer().start_span(
            f"pgjobs run {job.func}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": SYSTEM,
                "messaging.operation.type": "process",
                "messaging.destination.name": job.queue,
                "messaging.message.id": str(job.id),
                "code.function": job.func,
                "pgjobs.attempt": job.attempts,
                "pgjobs.max_attempts": job.max_attempts,
                "pgjobs.worker_id": worker_id,
            },
        )
        self.token = otel_context.attach(trace.set_span_in_context(self.span))

    def end(self, exc=None, error=None):
        """End the span: with ``exc`` (the exception the attempt raised) or
        ``error`` (``{"type", "message"}`` of one it could not start), an error."""
        try:
            if exc is not None:
                self.span.record_exception(exc)
            if exc is not None or error is not None:
                message = error["message"] if error else str(exc)
                self.span.set_status(Status(StatusCode.ERROR, message))
        finally:
            self.span.end()
            otel_context.detach(self.token)


def attempt_span(job, worker_id):
    """An ``AttemptSpan`` for ``job``; None without OpenTelemetry or while no
    tracer provider is set (nothing would record it)."""
    if trace is None:
        return None
    if isinstance(trace.get_tracer_provider(), _UNSET_PROVIDERS):
        return None
    return AttemptSpan(job, worker_id)
