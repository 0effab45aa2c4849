"""Named statements: each vendor's SQL in ``sql/<vendor>.sql``, Lua in ``lua/*.lua``.

A ``.sql`` file is a list of blocks, each under a ``-- name: <name>`` header
(Procrastinate's ``queries.sql`` is the model); comment lines are dropped and
the text is sent as written. A block whose name begins with ``_`` is a part
that several statements share, written into them where they say
``{+_name}``. The only other thing filled in is the tables' names,
once, at load time: ``{job}``, ``{batch}``, ``{worker}``, ``{schedule}``, ``{queue}``,
``{attempt}`` and ``{stat}`` become the
models' ``db_table``, quoted by the connection. Values always travel as
parameters; where a statement's shape varies with its data (a batch of N
rows), ``values`` repeats a row of placeholders and nothing else.
"""

import functools
import importlib.resources
import re

_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)
_TABLE = re.compile(r"\{(\w+)\}")
_PART = re.compile(r"\{\+(_\w+)\}")


@functools.cache
def _named(vendor):
    """``{name: text}`` of ``sql/<vendor>.sql``, tables not filled in yet."""
    text = importlib.resources.files(__package__).joinpath("sql", f"{vendor}.sql").read_text()
    parts = _HEADER.split(text)
    named = {}
    for name, block in zip(parts[1::2], parts[2::2], strict=True):
        if name in named:
            raise ValueError(f"sql/{vendor}.sql names {name!r} twice")
        lines = [line for line in block.splitlines() if not line.lstrip().startswith("--")]
        named[name] = "\n".join(lines).strip().rstrip(";").strip()
    parts = {name: text for name, text in named.items() if name.startswith("_")}
    return {
        name: _PART.sub(lambda match: parts[match.group(1)], text)
        for name, text in named.items()
        if name not in parts
    }


def tables(quote_name):
    """``{"job": ..., "batch": ..., "worker": ..., "schedule": ..., "queue": ...,
    "attempt": ..., "stat": ...}``: the models' tables, quoted."""
    from ..models import Batch, Job, JobAttempt, JobStat, QueueControl, ScheduleState, WorkerProcess

    return {
        "job": quote_name(Job._meta.db_table),
        "batch": quote_name(Batch._meta.db_table),
        "attempt": quote_name(JobAttempt._meta.db_table),
        "stat": quote_name(JobStat._meta.db_table),
        "worker": quote_name(WorkerProcess._meta.db_table),
        "schedule": quote_name(ScheduleState._meta.db_table),
        "queue": quote_name(QueueControl._meta.db_table),
    }


class Queries:
    """A vendor's statements as attributes (``queries.claim``), with ``names``
    (``{"job": ...}``, see ``tables``) filled in."""

    def __init__(self, vendor, names):
        for name, text in _named(vendor).items():
            setattr(self, name, _TABLE.sub(lambda match: names[match.group(1)], text))


_loaded = {}


def sql(connection):
    """The statements for Django database ``connection``'s vendor, its tables
    quoted by it: made once per vendor and process, then shared by every thread
    (a vendor quotes names the same on every connection)."""
    vendor = {"postgresql": "postgres"}.get(connection.vendor, connection.vendor)
    queries = _loaded.get(vendor)
    if queries is None:
        queries = _loaded[vendor] = Queries(vendor, tables(connection.ops.quote_name))
    return queries


def values(row, count):
    """The ``VALUES`` list of a batch: ``row``, one row's placeholders as a named
    statement gives them, ``count`` times. The only statement text that varies
    with the data, and it holds placeholders only."""
    return ", ".join([row] * count)


@functools.cache
def lua(*names):
    """The Lua script made of ``lua/<name>.lua`` for each name, in order (shared
    helpers first, then the script's own body)."""
    folder = importlib.resources.files(__package__).joinpath("lua")
    return "\n".join(folder.joinpath(f"{name}.lua").read_text() for name in names)
