"""Database connections of the threads that run jobs.

Django's ``connection_created`` signal tells, in the thread that opened it, of
every connection; each thread keeps its own list (thread-local), and
``tidy_connections`` looks at that list after each job in the same thread. No
state here is shared between threads.
"""

import threading

from django.db.backends.signals import connection_created


class _ThreadConnections(threading.local):
    """The connections each thread has opened, as Django's connection_created
    signal reports them: tidy_connections looks at these few instead of asking
    ``connections.all()``, whose thread-local lookups cost more than a no-op job.
    Made empty in each thread on first use, so that a thread that never connects
    (most of a no-op worker's) finds a list, not a missing attribute: a lookup
    that fails raises AttributeError inside, which cost 0.7 µs per job."""

    def __init__(self):
        self.seen = []


_thread_connections = _ThreadConnections()


def tidy_connections():
    """After a job, in its thread: keep the thread's database connections for
    the next job, but close those the job broke or left outside autocommit.

    Django's ``close_old_connections`` would close every connection after each
    job under the default ``CONN_MAX_AGE = 0``, which means "one per request" in
    a web process; a worker has no requests, and reconnecting per job costs more
    than most jobs. A positive ``CONN_MAX_AGE`` is honoured as usual.
    """
    for connection in _thread_connections.seen:
        if connection.connection is None:
            continue
        if connection.settings_dict["CONN_MAX_AGE"]:
            connection.close_if_unusable_or_obsolete()
        elif connection.get_autocommit() != connection.settings_dict["AUTOCOMMIT"]:
            connection.close()  # the job left a transaction open
        elif connection.errors_occurred:
            if connection.is_usable():
                connection.errors_occurred = False
            else:
                connection.close()


def _remember_connection(sender, connection, **kwargs):
    seen = _thread_connections.seen
    if not any(known is connection for known in seen):
        seen.append(connection)


connection_created.connect(_remember_connection, dispatch_uid="pgjobs.worker.connections")
