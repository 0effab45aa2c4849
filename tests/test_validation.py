"""Bad input from code and from ``manage.py pgjobs_enqueue`` (issue 20): every refusal is
one line that names the argument and says how to fix it, and writes nothing. Also which
modules may hold jobs (``PGJOBS["JOB_MODULES"]``), enforced at enqueue, in the worker
and by ``manage.py check``."""

import io

import pytest
from django.core.management import CommandError, call_command

from pgjobs import InvalidJob, background
from pgjobs.serialization import (
    MAX_DEPTH,
    decode_arguments,
    encode_arguments,
)
from tests.conftest import status_counts
from tests.testapp import jobs

pytestmark = pytest.mark.django_db


def job_count():
    return sum(status_counts().values())


def refused(call, *names):
    """Run ``call``; it must raise a one-line ``InvalidJob`` naming each of ``names``,
    and leave no job behind. Returns the message."""
    before = job_count()
    with pytest.raises(InvalidJob) as excinfo:
        call()
    message = str(excinfo.value)
    assert "\n" not in message, message
    for name in names:
        assert name in message, (name, message)
    assert job_count() == before
    return message


def command_refused(*args):
    """``pgjobs_enqueue`` with ``args`` must fail with a one-line ``CommandError``."""
    before = job_count()
    with pytest.raises(CommandError) as excinfo:
        call_command("pgjobs_enqueue", *args, stdout=io.StringIO())
    message = str(excinfo.value)
    assert "\n" not in message and len(message) < 400, message
    assert job_count() == before
    return message


def test_an_integer_too_long_for_json_readers_is_refused_from_code():
    refused(lambda: background.enqueue(jobs.echo, args=[10**5000]), "args[0]", "digits")
    refused(lambda: background.enqueue(jobs.echo, kwargs={"n": -(10**5000)}), "kwargs['n']")


# -- 3. nesting -----------------------------------------------------------------------------


def nested(depth):
    value = []
    for _ in range(depth):
        value = [value]
    return value


def test_an_argument_that_refers_to_itself_is_refused():
    loop = []
    loop.append(loop)
    message = refused(lambda: background.enqueue(jobs.echo, args=[1, loop]), "args[1]")
    assert "refers to itself" in message
    cyclic = {"a": {}}
    cyclic["a"]["b"] = cyclic
    message = refused(lambda: background.enqueue(jobs.echo, kwargs={"data": cyclic}), "kwargs")
    assert "refers to itself" in message and "data" in message


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 3000, 100_000])
def test_an_argument_nested_too_deep_is_refused(depth):
    message = refused(lambda: background.enqueue(jobs.echo, args=[nested(depth)]), "args[0]")
    assert f"deeper than {MAX_DEPTH} levels" in message
    refused(lambda: background.enqueue(jobs.echo, args=[(nested(depth),)]), "args[0]")


def test_nesting_up_to_the_limit_is_accepted_and_decodes():
    args, kwargs = encode_arguments([nested(MAX_DEPTH - 1)], {})
    assert decode_arguments(args, kwargs) == ([nested(MAX_DEPTH - 1)], {})


def test_stored_arguments_nested_deeper_than_the_limit_are_not_decoded():
    with pytest.raises(InvalidJob, match=f"deeper than {MAX_DEPTH} levels"):
        decode_arguments([nested(MAX_DEPTH + 5)], {})


def test_an_encode_hook_that_returns_itself_is_refused():
    class Loops:
        def __pgjobs_encode__(self):
            return self

    refused(lambda: background.enqueue(jobs.echo, args=[Loops()]), "args[0]")
