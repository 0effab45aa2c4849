"""How functions and arguments travel through storage (``pgjobs/serialization.py``)."""

import datetime
import decimal
import json
import uuid
from http import HTTPStatus

import pytest
from django.core.signing import Signer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgjobs import InvalidJob
from pgjobs.serialization import (
    SIGNING_SALT,
    _canonical,
    _signed_json,
    decode_arguments,
    decode_result,
    dumps,
    encode_arguments,
    encode_result,
    function_path,
    load_function,
    sign_job,
    verify_job,
)
from tests.testapp import jobs
from tests.testapp.models import Event

# -- strategies ------------------------------------------------------------------

fixed_offsets = st.builds(
    datetime.timezone,
    st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59).map(
        lambda minutes: datetime.timedelta(minutes=minutes)
    ),
)
# Fixed offsets only: zones with folds make aware datetimes compare unequal to
# themselves across zones (PEP 495), which would test datetime, not pgjobs.
timezones = st.just(datetime.UTC) | fixed_offsets

# What JSON columns are picky about: U+0000 and lone surrogates (jsonb refuses both).
awkward_text = st.sampled_from(["a\x00b", "\x00", "\udcff", "file-\udce9.txt", "\ud83d"])

hashable_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(max_size=10),
    awkward_text,
    st.floats(allow_nan=False, allow_infinity=False),
    st.dates(),
    st.datetimes(),
    st.datetimes(timezones=timezones),
    st.times(),
    st.times(timezones=st.just(datetime.UTC)),
    st.timedeltas(),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.uuids(),
    st.binary(max_size=20),
)

values = st.recursive(
    hashable_leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=4).map(tuple),
        st.dictionaries(
            st.text(max_size=8) | awkward_text | st.just("__pgjobs__"), children, max_size=4
        ),
        st.dictionaries(
            st.integers() | st.uuids() | st.dates() | st.tuples(st.integers(), st.text(max_size=3)),
            children,
            max_size=4,
        ),
        st.sets(hashable_leaves, max_size=4),
        st.frozensets(hashable_leaves, max_size=4),
    ),
    max_leaves=12,
)

keyword_names = st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True)


def assert_same(a, b, where="value"):
    """Equal AND of the same types all the way down (``1 == 1.0 == True`` is not enough)."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} came back as {type(b).__name__}"
    if isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        found = {key: key for key in b}
        for key, value in a.items():
            assert_same(key, found[key], f"{where} key {key!r}")
            assert_same(value, b[key], f"{where}[{key!r}]")
    elif isinstance(a, (set, frozenset)):
        assert a == b, where
        found = {item: item for item in b}
        for item in a:
            assert_same(item, found[item], f"{where} item {item!r}")
    elif isinstance(a, (datetime.datetime, datetime.time)):
        assert a == b, where
        assert a.utcoffset() == b.utcoffset(), f"{where}: offset changed"
    else:
        assert a == b, where


def through_storage(args, kwargs):
    """Encode, write as JSON text, read back and decode, as a job's arguments travel."""
    encoded_args, encoded_kwargs = encode_arguments(args, kwargs)
    stored_args, stored_kwargs = json.loads(dumps(encoded_args)), json.loads(dumps(encoded_kwargs))
    return decode_arguments(stored_args, stored_kwargs)


# -- arguments ---------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(args=st.lists(values, max_size=4), kwargs=st.dictionaries(keyword_names, values, max_size=4))
def test_arguments_round_trip_with_their_types(args, kwargs):
    decoded_args, decoded_kwargs = through_storage(args, kwargs)
    assert_same(args, decoded_args, "args")
    assert_same(kwargs, decoded_kwargs, "kwargs")


@settings(max_examples=100, deadline=None)
@given(value=values)
def test_results_round_trip_with_their_types(value):
    assert_same(value, decode_result(json.loads(dumps(encode_result(value)))))


# Ints (and int subclasses, which the quick path must leave to the encoder), strings
# of every kind, bools and None: what the quick path for plain argument lists covers.
plain = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(max_size=8),
    st.sampled_from([HTTPStatus.OK, HTTPStatus.NOT_FOUND]),
)


@settings(max_examples=300, deadline=None)
@given(args=st.lists(plain, max_size=6))
def test_plain_argument_lists_are_encoded_and_signed_as_the_json_encoders_would(args):
    encoded, _ = encode_arguments(args, {})
    assert dumps(encoded) == json.JSONEncoder(separators=(",", ":")).encode(encoded)
    signed = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    assert _signed_json(encoded) == signed.encode(_canonical(encoded))
    as_stored = [int(v) if isinstance(v, HTTPStatus) else v for v in args]  # as before
    assert_same(as_stored, through_storage(args, {})[0], "args")


# What a single enqueue encodes once for storing and signing (BaseJobBackend.prepare),
# and what it must leave to encode_arguments: whole floats (signed as ints), floats
# whose repr has an exponent (stored tagged), NaN and infinities (refused), tuples.
quick_path_args = st.lists(
    plain
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([0.5, -2.25, 1e-7, 1e16, 2.0, -0.0, 0.1 + 0.2])
    | st.tuples(st.integers()),
    max_size=5,
)


@settings(max_examples=300, deadline=None)
@given(args=quick_path_args)
def test_a_single_enqueue_stores_and_signs_what_encode_arguments_and_sign_job_would(args):
    from pgjobs.handler import get_backend

    backend = get_backend()
    try:
        encoded, _ = encode_arguments(args, {})
    except InvalidJob:
        with pytest.raises(InvalidJob):
            backend.prepare(jobs.echo, args, {})
        return
    spec = backend.prepare(jobs.echo, args, {})
    assert_same(encoded, spec.args, "args")
    assert spec.kwargs == {}
    if spec.args_json is not None:  # the JSON encoders' text, not pgjobs' own shortcut's
        assert spec.args_json == json.JSONEncoder(separators=(",", ":")).encode(encoded)
    signed = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    text = signed.encode(["tests.testapp.jobs.echo", _canonical(encoded), {}, spec.queue])
    assert spec.signature == sign_job("tests.testapp.jobs.echo", encoded, {}, spec.queue)
    assert spec.signature == Signer(salt=SIGNING_SALT, sep=":").signature(text)
    assert spec.args is not args, "the caller's list must not be stored (it may change)"


@pytest.mark.django_db(transaction=True)
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    args=st.lists(
        plain
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.sampled_from([0.1 + 0.2, 123456.789, 1.9999999999999998, -7.25]),
        max_size=4,
    )
)
def test_fractional_float_arguments_pass_the_workers_signature_check(args):
    """The JSON a single enqueue signs is the one the worker rebuilds from the column."""
    from pgjobs import background
    from pgjobs.handler import get_backend
    from pgjobs.models import Job

    Job.objects.all().delete()
    ref = background.enqueue(jobs.echo, args=args)
    (claimed,) = get_backend().get_store().claim(None, 1, "serialization-test")
    assert claimed.id == ref.id
    verify_job(claimed.func, claimed.args, claimed.kwargs, claimed.queue, claimed.signature)
    decoded_args, _ = decode_arguments(claimed.args, claimed.kwargs)
    as_stored = [int(v) if isinstance(v, HTTPStatus) else v for v in args]
    assert_same(as_stored, decoded_args, "args")


def test_a_kept_signer_made_from_an_old_secret_key_is_not_used(settings):
    """A thread may store a signer made from the old key just after SECRET_KEY changed
    and the kept signers were cleared; the next job must be signed with the new key."""
    from pgjobs import serialization

    old_signer = serialization.job_signer("tests.testapp.jobs.echo", "default")
    old_keys = serialization._hmac_keys()
    settings.SECRET_KEY = "another secret key, of at least fifty characters, for the test"
    serialization._signers["tests.testapp.jobs.echo", "default"] = (old_keys, old_signer)
    signer = serialization.job_signer("tests.testapp.jobs.echo", "default")
    expected = sign_job("tests.testapp.jobs.echo", [1], {}, "default")
    assert signer.sign("[1]") == expected
    assert old_signer.sign("[1]") != expected


@pytest.mark.parametrize("options", [{"queue": "no-such-queue"}, {"queue": ""}])
def test_bad_arguments_are_reported_before_a_bad_queue(options):
    from pgjobs.handler import get_backend

    with pytest.raises(InvalidJob, match=r"args\[0\]"):
        get_backend().prepare(jobs.echo, [object()], {}, **options)


def test_tuple_args_come_back_as_a_list_of_args_but_tuples_inside_stay_tuples():
    args, kwargs = through_storage((1, (2, 3)), {})
    assert args == [1, (2, 3)]


def test_a_dict_that_looks_like_a_tagged_value_is_not_mistaken_for_one():
    tricky = {"__pgjobs__": "datetime", "v": "2020-01-01T00:00:00"}
    args, _ = through_storage([tricky], {})
    assert_same([tricky], args)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_floats_json_cannot_store_are_rejected(bad):
    with pytest.raises(InvalidJob, match=r"args\[0\]\[1\]"):
        encode_arguments([[1.0, bad]], {})


@pytest.mark.parametrize(
    ("args", "kwargs", "where"),
    [
        ([1, object()], {}, r"args\[1\]"),
        ([], {"user": object()}, r"kwargs\['user'\]"),
        ([{"a": [1, object()]}], {}, r"args\[0\]\['a'\]\[1\]"),
        ([], {"when": {1: jobs.Multiplier(2)}}, r"kwargs\['when'\]\[1\]"),
        ([{object(): 1}], {}, r"args\[0\] key"),
        ([{1, 2, jobs.triple}], {}, r"args\[0\] item"),
        ([jobs.noop], {}, r"args\[0\]"),
        ([bytearray(b"ok"), iter([1])], {}, r"args\[1\]"),
    ],
)
def test_unserialisable_arguments_are_rejected_naming_the_argument(args, kwargs, where):
    with pytest.raises(InvalidJob, match=where) as excinfo:
        encode_arguments(args, kwargs)
    assert "cannot be stored as JSON" in str(excinfo.value)


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ("abc", {}, "args must be a list"),
        ([], [("a", 1)], "kwargs must be a dict"),
        ([], {1: "x"}, "not a valid keyword argument name"),
        ([], {"not valid": "x"}, "not a valid keyword argument name"),
    ],
)
def test_malformed_args_and_kwargs_are_rejected(args, kwargs, message):
    with pytest.raises(InvalidJob, match=message):
        encode_arguments(args, kwargs)


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ({"not": "a list"}, {}),
        ([], ["not", "a", "dict"]),
        ([{"__pgjobs__": "no-such-tag", "v": 1}], {}),
        ([{"__pgjobs__": "datetime", "v": "not a date"}], {}),
        ([{"__pgjobs__": "decimal"}], {}),
        ([{"__pgjobs__": "model", "v": ["nosuchapp.model", 1]}], {}),
    ],
)
def test_stored_arguments_that_cannot_be_decoded_raise_invalid_job(args, kwargs):
    with pytest.raises(InvalidJob, match="stored arguments|cannot decode"):
        decode_arguments(args, kwargs)


def test_unstorable_results_are_described_not_lost():
    assert decode_result(json.loads(dumps(encode_result(jobs.triple)))) == repr(jobs.triple)


# -- model instances ------------------------------------------------------------------


@pytest.mark.django_db
def test_saved_model_instance_travels_as_a_reference_and_is_fetched_fresh():
    event = Event.objects.create(name="before", value=1)
    encoded_args, encoded_kwargs = encode_arguments([event], {"event": event})
    assert "before" not in dumps(encoded_args), "the instance's fields must not be stored"
    Event.objects.filter(pk=event.pk).update(name="after", value=2)

    (fresh,), kwargs = decode_arguments(
        json.loads(dumps(encoded_args)), json.loads(dumps(encoded_kwargs))
    )
    assert isinstance(fresh, Event)
    assert fresh.pk == event.pk
    assert (fresh.name, fresh.value) == ("after", 2)
    assert fresh is not event
    assert kwargs["event"].name == "after"


@pytest.mark.django_db
def test_unsaved_model_instance_is_rejected():
    with pytest.raises(InvalidJob, match=r"kwargs\['event'\] is an unsaved testapp.Event"):
        encode_arguments([], {"event": Event(name="unsaved")})


@pytest.mark.django_db
def test_reference_to_a_deleted_instance_cannot_be_decoded():
    event = Event.objects.create(name="gone")
    encoded_args, encoded_kwargs = encode_arguments([event], {})
    event.delete()
    with pytest.raises(InvalidJob, match="DoesNotExist"):
        decode_arguments(encoded_args, encoded_kwargs)


# -- functions ----------------------------------------------------------------------------


def module_level(x):
    return x


def test_module_level_functions_travel_as_their_dotted_path(settings):
    # This module is no installed app's: listed, as a site lists its job modules.
    settings.PGJOBS = {**settings.PGJOBS, "JOB_MODULES": ["tests"]}
    assert function_path(jobs.add) == "tests.testapp.jobs.add"
    assert function_path(module_level) == "tests.test_serialization.module_level"
    assert function_path(jobs.async_add) == "tests.testapp.jobs.async_add"
    assert load_function(function_path(jobs.add)) is jobs.add


def test_a_decorated_function_that_imports_back_to_itself_is_accepted():
    assert function_path(jobs.decorated_add) == "tests.testapp.jobs.decorated_add"


def test_a_function_replaced_in_its_module_is_rejected_though_enqueued_before(monkeypatch):
    """function_path remembers the functions it checked; it still looks that the
    module holds the very same one, as a worker importing the path will."""
    original = jobs.add
    assert function_path(original) == "tests.testapp.jobs.add"
    monkeypatch.setattr(jobs, "add", jobs.echo)
    with pytest.raises(InvalidJob, match="does not import back"):
        function_path(original)
    monkeypatch.undo()
    assert function_path(original) == "tests.testapp.jobs.add"


def test_a_string_path_is_checked_and_kept():
    assert function_path("tests.testapp.jobs.add") == "tests.testapp.jobs.add"


def _nested():
    def inner():
        pass

    return inner


@pytest.mark.parametrize(
    ("func", "message"),
    [
        (lambda: None, "lambda"),
        (_nested(), "inside another function"),
        (jobs.Multiplier(2).times, "bound method"),
        (len, "builtin"),
        (print, "builtin"),
        ("".join, "bound method|builtin"),
        (jobs.triple, "not a function"),
        (jobs.decorated_add.__wrapped__, "does not import back"),
        (42, "not a function"),
        (None, "not a function"),
    ],
    ids=[
        "lambda",
        "nested",
        "bound-method",
        "builtin-len",
        "builtin-print",
        "builtin-method",
        "callable-instance",
        "decorated-original",
        "int",
        "none",
    ],
)
def test_functions_a_worker_could_not_import_are_rejected(func, message):
    with pytest.raises(InvalidJob, match=message):
        function_path(func)


@pytest.mark.parametrize(
    "path",
    [
        "tests.testapp.jobs.does_not_exist",
        "no_such_module.func",
        "add",
        "",
        "tests.testapp.jobs.UNSERIALISABLE",
        "tests.testapp.jobs.time",
    ],
)
def test_string_paths_that_do_not_import_a_function_are_rejected(path):
    with pytest.raises(InvalidJob):
        function_path(path)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(max_size=30))
def test_any_string_path_is_either_a_function_or_invalid_job(text):
    try:
        path = function_path(text)
    except InvalidJob:
        return
    assert callable(load_function(path))


def test_model_reference_round_trip_keeps_uuid_and_decimal_primary_keys_encoded():
    # Encoding of the primary key goes through the same tags as any argument.
    value = {"id": uuid.UUID(int=7), "amount": decimal.Decimal("1.10")}
    args, _ = through_storage([value], {})
    assert_same([value], args)


# -- through the database ----------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(args=st.lists(values, max_size=3), kwargs=st.dictionaries(keyword_names, values, max_size=3))
def test_arguments_survive_the_database_with_their_types(args, kwargs):
    """The same property through the real JSON column (jsonb, MySQL JSON, SQLite text)
    and the store's claim, as a worker receives them."""
    from pgjobs import background
    from pgjobs.handler import get_backend
    from pgjobs.models import Job

    Job.objects.all().delete()
    ref = background.enqueue(jobs.echo, args=args, kwargs=kwargs)
    (claimed,) = get_backend().get_store().claim(None, 1, "serialization-test")
    assert claimed.id == ref.id
    decoded_args, decoded_kwargs = decode_arguments(claimed.args, claimed.kwargs)
    assert_same(args, decoded_args, "args")
    assert_same(kwargs, decoded_kwargs, "kwargs")
