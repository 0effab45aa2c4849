"""Running one job's function, shared by the in-band backend and the worker:
the current-job context a running job can read, and how errors are recorded."""

import contextvars
import dataclasses
import traceback

_current = contextvars.ContextVar("pgjobs_current_job", default=None)


_UNREAD = object()


@dataclasses.dataclass
class JobContext:
    """What a running job can learn about itself: ``pgjobs.current_job()``."""

    id: object
    func: str
    queue: str
    attempt: int
    max_attempts: int
    cancel_requested: bool = False
    #: ``job id -> stored result`` of the job it ran after (``Store.previous_result``).
    previous_loader: object = dataclasses.field(default=None, repr=False, compare=False)
    _previous: object = dataclasses.field(default=_UNREAD, init=False, repr=False, compare=False)

    @property
    def previous_result(self):
        """The return value of the job this one ran after (``after=ref``,
        ``background.chain``), or None; read from the store on first use."""
        if self._previous is _UNREAD:
            from .serialization import decode_result

            stored = None if self.previous_loader is None else self.previous_loader(self.id)
            self._previous = None if stored is None else decode_result(stored)
        return self._previous


def current_job():
    """The ``JobContext`` of the job running in this thread or task, or None."""
    return _current.get()


def set_current_job(context):
    """Make ``context`` the current job; returns a token for ``reset_current_job``."""
    return _current.set(context)


def reset_current_job(token):
    _current.reset(token)


def describe_error(exc):
    """The stored form of an exception: type path, message and traceback."""
    cls = type(exc)
    return {
        "type": f"{cls.__module__}.{cls.__qualname__}",
        "message": _storable(str(exc)),
        "traceback": _storable("".join(traceback.format_exception(exc))),
    }


def _storable(text):
    """``text`` with what a JSON column cannot hold (U+0000, lone surrogates) escaped:
    an error that cannot be stored would keep its job running forever."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
