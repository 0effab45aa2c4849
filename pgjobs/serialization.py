"""How a job's function and arguments travel through storage.

A function travels as its dotted import path and must import back to the very
same object, so only module-level functions qualify. Arguments travel as JSON;
values JSON cannot hold faithfully (tuples, datetimes, decimals, UUIDs, model
instances, ...) travel as *tagged* objects ``{"__pgjobs__": tag, "v": value}``
and come back as the same type. A class of your own travels when it defines
``__pgjobs_encode__(self)`` (returning any of those values) and the classmethod
``__pgjobs_decode__(data)``. Nothing is ever pickled.
"""

import base64
import binascii
import datetime
import decimal
import hashlib
import hmac
import inspect
import json
import math
import sys
import types
import uuid

from django.core.signals import setting_changed
from django.utils.encoding import force_bytes
from django.utils.module_loading import import_string

from .conf import SETTING_NAMES, job_modules, setting_name
from .exceptions import InvalidJob

TAG = "__pgjobs__"


# -- functions ---------------------------------------------------------------


def function_path(func, check_modules=True):
    """Return the dotted path a worker imports to find ``func``.

    Raises ``InvalidJob`` for anything a worker could not import back to the
    same object: lambdas, nested functions, bound methods, builtins, callable
    instances, functions written in C; and (unless ``check_modules`` is false) for a function
    outside the job modules (``job_module_problem``), which workers refuse.
    """
    if isinstance(func, str):
        path = func
        load_function(path, check_modules)  # fails now, at enqueue, rather than in the worker
        return path
    if not check_modules:
        return _checked_function_path(func, check_modules)
    if type(func) is types.FunctionType:
        # A function seen before: only look that its module still holds it (what
        # import_string would find), not every check again. Each enqueue's checks
        # cost about 75 µs on a CPU just woken from idle, on the latency path.
        path = _function_paths.get(func)
        if path is not None:
            module, _, name = path.rpartition(".")
            if getattr(sys.modules.get(module), name, None) is func:
                return path
        path = _checked_function_path(func)
        if len(_function_paths) >= _FUNCTION_PATHS_KEPT:
            _function_paths.clear()  # functions made at run time: keep a bounded few
        _function_paths[func] = path
        return path
    return _checked_function_path(func)


#: Functions that passed ``_checked_function_path``, with their paths.
_function_paths = {}
_FUNCTION_PATHS_KEPT = 1000


def _checked_function_path(func, check_modules=True):
    if not callable(func):
        raise InvalidJob(f"{func!r} is not a function; enqueue a module-level function.")
    name = getattr(func, "__qualname__", None) or repr(func)
    if inspect.ismethod(func):
        raise InvalidJob(
            f"{name} is a bound method; a worker cannot rebuild the object it is bound to. "
            "Enqueue a module-level function and pass the object's id as an argument."
        )
    if inspect.isbuiltin(func) or getattr(func, "__module__", None) in (None, "builtins"):
        raise InvalidJob(
            f"{name} is a builtin; wrap it in a module-level function of your own and enqueue that."
        )
    if not isinstance(func, types.FunctionType) and not inspect.isclass(func):
        # Callable instances, partials, functions written in C: none imports back
        # as a function a worker can check. (A class is called as a job would be.)
        raise InvalidJob(f"{func!r} is not a function; enqueue a module-level function.")
    if func.__name__ == "<lambda>":
        raise InvalidJob(
            f"{func.__module__}.{name} is a lambda; a worker cannot import it. "
            "Define it with `def` at module level."
        )
    if "<locals>" in name:
        raise InvalidJob(
            f"{func.__module__}.{name} is defined inside another function; a worker cannot "
            "import it. Move it to module level."
        )
    path = f"{func.__module__}.{name}"
    if check_modules:
        check_job_module(path)
    try:
        found = import_string(path)
    except ImportError:
        found = None
    if found is not func:
        raise InvalidJob(
            f"{path} does not import back to the function given (is it decorated, renamed or "
            "defined in __main__?). Enqueue the module-level function itself."
        )
    return path


# -- job modules -----------------------------------------------------------------


def job_module_problem(path):
    """Why the dotted ``path`` may not name a job, or None when it lies in a job
    module (``PGJOBS["JOB_MODULES"]``, see ``conf.job_modules``). Looks only at
    the text: nothing is imported. ``InvalidJob`` when the setting is malformed."""
    modules = _job_modules()
    for module in modules:
        if path.startswith(module) and (len(path) == len(module) or path[len(module)] == "."):
            return None
    shown = ", ".join(modules[:8]) + (f" and {len(modules) - 8} more" if len(modules) > 8 else "")
    return (
        f"{path} is outside {setting_name()}['JOB_MODULES'] ({shown or 'empty'}); "
        "list its module there if it holds jobs."
    )


def check_job_module(path):
    """Raise ``InvalidJob`` unless ``path`` lies in a job module."""
    problem = job_module_problem(path)
    if problem is not None:
        raise InvalidJob(problem)


def _job_modules():
    global _modules
    modules = _modules
    if modules is None:
        try:
            modules = job_modules()
        except ValueError as exc:
            raise InvalidJob(str(exc)) from None
        from django.apps import apps

        if apps.apps_ready:  # the installed apps are final only then
            _modules = modules
    return modules


_modules = None  # job_modules(), kept until the settings it reads change


def _forget_job_modules(setting, **kwargs):
    global _modules
    if setting in ("INSTALLED_APPS", *SETTING_NAMES):
        _modules = None
        _function_paths.clear()  # each was checked against the modules of its day


setting_changed.connect(_forget_job_modules, dispatch_uid="pgjobs.serialization.job_modules")


#: Objects a job's path may name that are not functions but know how to run, by
#: class path, with the dotted path of a runner: ``runner(obj)`` returns the function
#: to call. A task of Django's tasks framework is found at its ``module_path``;
#: ``pgjobs.django_tasks`` calls its function with the framework's context and signals.
RUNNERS = {
    "django.tasks.base.Task": "pgjobs.django_tasks.task_runner",
    "django_tasks.base.Task": "pgjobs.django_tasks.task_runner",
}


def _runner(obj):
    for cls in type(obj).__mro__:
        runner = RUNNERS.get(f"{cls.__module__}.{cls.__qualname__}")
        if runner is not None:
            return import_string(runner)
    return None


def load_function(path, check_modules=True):
    """Import the function a job names; raise ``InvalidJob`` with the reason.

    The path must lie in a job module (``check_job_module``), checked before
    anything is imported, and name what ``function_path`` accepts of an object (a
    module-level Python function or class, defined in a job module too), or an
    object that ``RUNNERS`` knows (a task of Django's tasks framework)."""
    if not isinstance(path, str):
        raise InvalidJob(f"a job function's path must be a str, not {type(path).__name__}")
    problem = job_module_problem(path) if check_modules else None
    if problem is not None:
        raise InvalidJob(f"cannot import job function {path!r}: {problem}")
    try:
        func = import_string(path)
        runner = _runner(func)
        if runner is not None:
            return runner(func)
    except ImportError as exc:
        raise InvalidJob(f"cannot import job function {path!r}: {exc}") from None
    except Exception as exc:  # a malformed path ("."), or a module that raises on import
        raise InvalidJob(
            f"cannot import job function {path!r}: {type(exc).__name__}: {exc}"
        ) from None
    if not callable(func):
        raise InvalidJob(f"job function {path!r} is a {type(func).__name__}, not a function")
    try:
        _checked_function_path(func, check_modules)  # the rules of a function given as itself
    except InvalidJob as exc:
        raise InvalidJob(f"job function {path!r}: {exc}") from None
    return func


# -- arguments ---------------------------------------------------------------


def _tag(tag, value):
    return {TAG: tag, "v": value}


def storable_str(value):
    """Whether a database's JSON column keeps ``value`` as it is: PostgreSQL's jsonb
    holds neither U+0000 nor lone surrogates (what ``os.fsdecode`` makes of
    undecodable file names)."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_plain(value):
    """Whether ``value`` is stored as it is, decided quickly for the arguments most
    jobs take (ids, names, flags); anything else goes through ``_encode``."""
    kind = type(value)
    if kind is int:
        return -_MAX_INT < value < _MAX_INT
    if kind is bool or value is None:
        return True
    return kind is str and value.isascii() and "\x00" not in value


#: How deep containers may nest in a job's arguments (a list in a list is 2 levels),
#: on the way in and out. Well below what Python's recursion limit lets the
#: encoder, the decoder and JSON readers reach (about 1,000 frames, a tagged value
#: taking two or three JSON levels) and what jsonb holds.
MAX_DEPTH = 100

#: The most digits a stored integer may have: Python refuses to read or write
#: longer ones as text (``sys.get_int_max_str_digits``), so a worker could not
#: decode the row.
MAX_INT_DIGITS = 4300
_MAX_INT = 10**MAX_INT_DIGITS


class _TooDeep(Exception):
    """Raised from deep inside ``_encode``; ``encode_arguments`` names the argument."""


def _encode(value, where, depth=0):
    """Turn ``value`` into JSON-ready data; ``where`` names it in errors, ``depth``
    counts the containers around it."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if -_MAX_INT < value < _MAX_INT:
            return value
        raise InvalidJob(
            f"{where} is an integer of more than {MAX_INT_DIGITS:,} digits, which JSON readers "
            "refuse; pass it as a str (or a Decimal)."
        )
    if isinstance(value, str):
        if storable_str(value):
            return value
        return _tag("str", base64.b64encode(value.encode("utf-8", "surrogatepass")).decode())
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise InvalidJob(f"{where} is {value!r}, which JSON cannot store; pass a string.")
        if "e" in repr(value):
            # jsonb reads 1e+16 as a number and prints it back as 10000000000000000,
            # an int to JSON (and not even this float's digits): keep the text.
            return _tag("float", repr(value))
        return value
    if depth >= MAX_DEPTH and isinstance(value, (list, tuple, dict, set, frozenset)):
        raise _TooDeep
    inner = depth + 1
    if isinstance(value, list):
        return [_encode(v, f"{where}[{i}]", inner) for i, v in enumerate(value)]
    if isinstance(value, tuple):
        return _tag("tuple", [_encode(v, f"{where}[{i}]", inner) for i, v in enumerate(value)])
    if isinstance(value, dict):
        if all(isinstance(k, str) and storable_str(k) for k in value) and TAG not in value:
            return {k: _encode(v, f"{where}[{k!r}]", inner) for k, v in value.items()}
        # Non-string keys (or a key that looks like our tag, or that the database
        # cannot hold as it is) survive as pairs.
        return _tag(
            "dict",
            [
                [_encode(k, f"{where} key {k!r}", inner), _encode(v, f"{where}[{k!r}]", inner)]
                for k, v in value.items()
            ],
        )
    if isinstance(value, datetime.datetime):
        return _tag("datetime", value.isoformat())
    if isinstance(value, datetime.date):
        return _tag("date", value.isoformat())
    if isinstance(value, datetime.time):
        return _tag("time", value.isoformat())
    if isinstance(value, datetime.timedelta):
        return _tag("timedelta", [value.days, value.seconds, value.microseconds])
    if isinstance(value, decimal.Decimal):
        return _tag("decimal", str(value))
    if isinstance(value, uuid.UUID):
        return _tag("uuid", str(value))
    if isinstance(value, (bytes, bytearray)):
        return _tag("bytes", base64.b64encode(bytes(value)).decode("ascii"))
    if isinstance(value, (set, frozenset)):
        items = [_encode(v, f"{where} item", inner) for v in value]
        return _tag("set" if isinstance(value, set) else "frozenset", items)
    if hasattr(type(value), "__pgjobs_encode__"):
        if depth >= MAX_DEPTH:
            raise _TooDeep
        cls = type(value)
        data = _encode(value.__pgjobs_encode__(), f"{where} ({cls.__qualname__})", inner)
        return _tag("object", [f"{cls.__module__}.{cls.__qualname__}", data])
    model_ref = _model_reference(value, where)
    if model_ref is not None:
        return _tag("model", model_ref)
    raise InvalidJob(
        f"{where} is a {type(value).__module__}.{type(value).__qualname__}, which cannot be "
        "stored as JSON. Pass plain data (str, int, float, bool, None, list, dict, tuple, "
        "datetime, date, time, timedelta, Decimal, UUID, bytes, set) or a saved model instance."
    )


def _encode_argument(value, where):
    """``_encode`` for one argument of a job, a too deep one named as a whole."""
    try:
        return _encode(value, where)
    except (_TooDeep, RecursionError):
        # RecursionError: an argument's __pgjobs_encode__ or __repr__ of its own.
        if _refers_to_itself(value):
            problem = "refers to itself (a container inside itself), which JSON cannot hold"
        else:
            problem = f"is nested deeper than {MAX_DEPTH} levels"
        raise InvalidJob(f"{where} {problem}; pass flatter data (or ids to look up).") from None


def _refers_to_itself(value):
    """Whether a container holds itself, at any depth: a walk with a stack (deep
    data must not exhaust Python's), each container explored once."""
    on_path, done = set(), set()
    stack = [(value, False)]
    while stack:
        item, leaving = stack.pop()
        key = id(item)
        if leaving:
            on_path.discard(key)
            done.add(key)
            continue
        if isinstance(item, dict):
            children = [*item.keys(), *item.values()]
        elif isinstance(item, (list, tuple, set, frozenset)):
            children = item
        else:
            continue
        if key in on_path:
            return True
        if key in done:
            continue
        on_path.add(key)
        stack.append((item, True))
        stack.extend((child, False) for child in children)
    return False


def _model_reference(value, where):
    """Models travel as (app_label.model_name, pk) and are fetched fresh in the worker."""
    meta = getattr(value, "_meta", None)
    if meta is None or not hasattr(meta, "label_lower") or not hasattr(value, "pk"):
        return None
    if value.pk is None:
        raise InvalidJob(f"{where} is an unsaved {meta.label} instance; save it before enqueuing.")
    return [meta.label_lower, _encode(value.pk, f"{where}.pk")]


def _decode(value, depth=0):
    # Containers stop at depth MAX_DEPTH - 1, as in _encode; a value inside the
    # deepest of them may itself be a tagged dict (a datetime, a str): depth MAX_DEPTH.
    if depth > MAX_DEPTH and isinstance(value, (list, dict)):
        raise ValueError(f"the arguments are nested deeper than {MAX_DEPTH} levels")
    inner_depth = depth + 1
    if isinstance(value, list):
        return [_decode(v, inner_depth) for v in value]
    if not isinstance(value, dict):
        return value
    tag = value.get(TAG)
    if tag is None:
        return {k: _decode(v, inner_depth) for k, v in value.items()}
    inner = value["v"]
    if tag == "str":
        return base64.b64decode(inner).decode("utf-8", "surrogatepass")
    if tag == "float":
        return float(inner)
    if tag == "tuple":
        return tuple(_decode(v, inner_depth) for v in inner)
    if tag == "dict":
        return {_decode(k, inner_depth): _decode(v, inner_depth) for k, v in inner}
    if tag == "datetime":
        return datetime.datetime.fromisoformat(inner)
    if tag == "date":
        return datetime.date.fromisoformat(inner)
    if tag == "time":
        return datetime.time.fromisoformat(inner)
    if tag == "timedelta":
        return datetime.timedelta(days=inner[0], seconds=inner[1], microseconds=inner[2])
    if tag == "decimal":
        return decimal.Decimal(inner)
    if tag == "uuid":
        return uuid.UUID(inner)
    if tag == "bytes":
        return base64.b64decode(inner)
    if tag == "set":
        return {_decode(v, inner_depth) for v in inner}
    if tag == "frozenset":
        return frozenset(_decode(v, inner_depth) for v in inner)
    if tag == "model":
        return _load_model(inner[0], _decode(inner[1], inner_depth))
    if tag == "object":
        cls = import_string(inner[0])
        if not hasattr(cls, "__pgjobs_decode__"):
            raise ValueError(f"{inner[0]} does not define __pgjobs_decode__")
        return cls.__pgjobs_decode__(_decode(inner[1], inner_depth))
    raise ValueError(f"unknown tagged value {tag!r}")


def _load_model(label, pk):
    from django.apps import apps

    model = apps.get_model(label)
    return model._default_manager.get(pk=pk)


def encode_arguments(args, kwargs):
    """Validate and encode a job's arguments; raise ``InvalidJob`` naming the bad one."""
    if args is None:
        args = []
    if kwargs is None:
        kwargs = {}
    if not isinstance(args, (list, tuple)):
        raise InvalidJob(f"args must be a list, not {type(args).__name__}")
    if not isinstance(kwargs, dict):
        raise InvalidJob(f"kwargs must be a dict, not {type(kwargs).__name__}")
    for key in kwargs:
        if not isinstance(key, str) or not key.isidentifier():
            raise InvalidJob(f"kwargs key {key!r} is not a valid keyword argument name")
    encoded_args = [
        v if _is_plain(v) else _encode_argument(v, f"args[{i}]") for i, v in enumerate(args)
    ]
    encoded_kwargs = {k: _encode_argument(v, f"kwargs[{k!r}]") for k, v in kwargs.items()}
    return encoded_args, encoded_kwargs


def decode_arguments(args, kwargs):
    """Rebuild the arguments a job was enqueued with.

    Raises ``InvalidJob`` when the stored data cannot be decoded (a row edited
    by hand, a model instance deleted since), so the job fails with a reason.
    """
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise InvalidJob(
            f"stored arguments are malformed: args is {type(args).__name__}, kwargs is "
            f"{type(kwargs).__name__} (expected a JSON list and object)"
        )
    if not args and not kwargs:
        return [], {}
    try:
        # Each argument from depth 0, as encode_arguments encoded it.
        return [_decode(v) for v in args], {k: _decode(v) for k, v in kwargs.items()}
    except Exception as exc:  # any decoding problem is the row's fault, not the worker's
        raise InvalidJob(f"cannot decode stored arguments: {type(exc).__name__}: {exc}") from None


_DB_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
_encode_string = json.encoder.encode_basestring_ascii  # what that encoder does to a str


def dumps(value):
    """JSON text for the database; strict (no NaN) so every vendor accepts it."""
    if type(value) is list:
        text = _plain_list_json(value)
        if text is not None:
            return text
    return _DB_ENCODER.encode(value)


_PLAIN_JSON = {True: "true", False: "false", None: "null"}


def _plain_list_json(values, storable_only=False):
    """The compact JSON of a list of ints, ASCII-escaped strs, bools, Nones and
    fractional floats (what both encoders here make of it, keys being absent), or
    None for a list holding anything else. Most jobs' arguments are such a list; joining them
    here skips the encoder set-up that costs more than the encoding itself.

    ``storable_only``: also None for a str that ``_encode`` would tag (see
    ``_is_plain``), so that the text is that of the encoded arguments too."""
    parts = []
    for value in values:
        kind = type(value)
        if kind is int:
            if not -_MAX_INT < value < _MAX_INT:
                return None  # too long to write as text: _encode says so
            parts.append(int.__repr__(value))
        elif kind is str:
            if storable_only and (not value.isascii() or "\x00" in value):
                return None
            parts.append(_encode_string(value))
        elif kind is bool or value is None:
            parts.append(_PLAIN_JSON[value])
        elif kind is float and math.isfinite(value) and not value.is_integer():
            # What both encoders write (float.__repr__), and what the signed form
            # keeps: only whole floats are canonicalised (to ints), and only
            # exponent forms are tagged (``_encode``).
            text = float.__repr__(value)
            if "e" in text:
                return None
            parts.append(text)
        else:
            return None
    return f"[{','.join(parts)}]"


def plain_args_json(args):
    """The JSON text of a job's ``args`` when each is stored as it is (an int, an
    ASCII str, a bool, None or a fractional float): the text both stored and
    signed, made once. None
    for anything else, which ``encode_arguments`` then encodes."""
    return _plain_list_json(args, storable_only=True) if type(args) is list else None


def plain_call_json(args, kwargs):
    """``plain_args_json(args)`` for a call without kwargs, else None: the calls
    whose JSON is made once for storing and signing (single and bulk enqueues)."""
    return plain_args_json(args) if type(kwargs) is dict and not kwargs else None


def encode_result(value):
    """Encode a job's return value for storage; unstorable results are described, not lost."""
    try:
        return _encode(value, "the job's return value")
    except (InvalidJob, _TooDeep, RecursionError):  # a value that contains itself, say
        return {TAG: "repr", "v": _storable_repr(value)}


def _storable_repr(value):
    try:
        text = repr(value)
    except Exception as exc:  # a broken __repr__ must not lose the outcome
        text = f"<{type(value).__qualname__} object (repr failed: {type(exc).__name__})>"
    text = text[:1000]
    if not storable_str(text):  # a custom __repr__ may return anything
        text = text.encode("utf-8", "backslashreplace").decode().replace("\x00", "\\x00")
    return text


def decode_result(value):
    if isinstance(value, dict) and value.get(TAG) == "repr":
        return value["v"]
    return _decode(value)


# -- signatures ----------------------------------------------------------------

SIGNING_SALT = "pgjobs.job"


def _canonical(value):
    """A form that survives the database's JSON round trip unchanged: sorted keys,
    and integral floats as integers (jsonb prints 1e20 back as an integer)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    return value


_SIGNED_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _signed_text(func, args, kwargs, queue):
    # The JSON of [func, args, kwargs, queue], joined from its parts: the same
    # text as encoding the list, without building an encoder for the empty
    # args and kwargs most jobs have.
    return (
        f"[{_encode_string(func)},{_signed_json(args)},{_signed_json(kwargs)},"
        f"{_encode_string(queue)}]"
    )


def _signed_json(value):
    if not value and isinstance(value, (list, dict)):
        return "[]" if isinstance(value, list) else "{}"
    if type(value) is list:
        text = _plain_list_json(value)  # no floats, no keys: already canonical
        if text is not None:
            return text
    return _SIGNED_ENCODER.encode(_canonical(value))


def _hmac_keys():
    """The HMAC keys for the site's ``SECRET_KEY`` and ``SECRET_KEY_FALLBACKS``,
    current key first, each as the two SHA-256 states HMAC starts from. Signing is
    on every job's path (enqueue and run), and Django's ``Signer`` derives its key
    afresh on each call (about 30 µs): the keys are kept until those settings
    change, and a signature is then two copies of a hash state and two updates."""
    global _keys
    if _keys is None:
        from django.conf import settings

        _keys = _derive_keys(
            settings.SECRET_KEY, tuple(getattr(settings, "SECRET_KEY_FALLBACKS", ()))
        )
    return _keys


_keys = None


def _forget_keys(setting, **kwargs):
    global _keys
    if setting in ("SECRET_KEY", "SECRET_KEY_FALLBACKS"):
        _keys = None
        _signers.clear()


setting_changed.connect(_forget_keys, dispatch_uid="pgjobs.serialization.keys")


def _derive_keys(secret_key, fallbacks):
    # What django.utils.crypto.salted_hmac does for Signer(salt=SIGNING_SALT):
    # the key salt is the signer's salt + "signer", the key sha256(salt + secret).
    key_salt = f"{SIGNING_SALT}signer".encode()
    return tuple(
        _HmacKey(hashlib.sha256(key_salt + force_bytes(secret)).digest())
        for secret in (secret_key, *fallbacks)
    )


class _HmacKey:
    """HMAC-SHA256 (RFC 2104) with the key's inner and outer pads hashed once:
    ``hmac.digest`` hashes them again on every call, which costs more than the
    short text of a job. ``digest`` equals ``hmac.digest(key, text, "sha256")``."""

    def __init__(self, key):
        block = key.ljust(64, b"\0")  # the key is a 32-byte digest, shorter than a block
        self.inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self.outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))

    def digest(self, text):
        inner = self.inner.copy()
        inner.update(text)
        outer = self.outer.copy()
        outer.update(inner.digest())
        return outer.digest()


def _signature(key, text):
    return _base64(key.digest(text.encode())).decode()


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _base64(digest):
    """Unpadded URL-safe base64, as Django's signatures are (binascii: no wrappers)."""
    return binascii.b2a_base64(digest, newline=False).translate(_URLSAFE).rstrip(b"=")


def sign_job(func, args, kwargs, queue):
    """HMAC (Django's signing, the site's ``SECRET_KEY``) over what a worker will run.

    ``args`` and ``kwargs`` are the encoded (stored) forms. The value is what
    ``django.core.signing.Signer(salt=SIGNING_SALT).signature()`` returns.
    """
    return _signature(_hmac_keys()[0], _signed_text(func, args, kwargs, queue))


class JobSigner:
    """``sign_job`` for many jobs of one function and queue, given the JSON of
    their arguments as ``plain_args_json`` made it (already the signed form): the
    function's part of the text is hashed once, so each job costs one short HMAC."""

    def __init__(self, func, queue, key=None):
        if key is None:
            key = _hmac_keys()[0]
        self._head = key.inner.copy()
        self._head.update(f"[{_encode_string(func)},".encode())
        self._outer = key.outer
        self._tail = f",{_encode_string(queue)}]"

    def sign(self, args_json, kwargs_json="{}"):
        # _HmacKey.digest and _base64 written out: this runs once per job.
        inner = self._head.copy()
        inner.update(f"{args_json},{kwargs_json}{self._tail}".encode())
        outer = self._outer.copy()
        outer.update(inner.digest())
        # 32 bytes are 43 base64 characters and one "=" of padding, cut off.
        return binascii.b2a_base64(outer.digest(), newline=False)[:43].translate(_URLSAFE).decode()


def job_signer(func, queue):
    """The ``JobSigner`` of ``func`` on ``queue``, kept for the next job of theirs
    (until ``SECRET_KEY`` changes): a single enqueue then hashes only its args."""
    keys = _hmac_keys()
    kept = _signers.get((func, queue))
    # A signer made from other keys (another thread made it while SECRET_KEY changed,
    # and stored it after _forget_keys cleared the rest) is made again.
    if kept is not None and kept[0] is keys:
        return kept[1]
    if len(_signers) >= _SIGNERS_KEPT:
        _signers.clear()
    signer = JobSigner(func, queue, keys[0])
    _signers[func, queue] = (keys, signer)
    return signer


_signers = {}  # (func, queue) -> (the keys it was made from, JobSigner)
_SIGNERS_KEPT = 1000


def verify_job(func, args, kwargs, queue, signature):
    """Raise ``InvalidJob`` unless ``signature`` was made by this site (its current
    ``SECRET_KEY`` or one of ``SECRET_KEY_FALLBACKS``) for exactly this job."""
    text = _signed_text(func, args, kwargs, queue).encode()
    given = (signature or "").encode("ascii", "replace")
    for key in _hmac_keys():
        if hmac.compare_digest(given, _base64(key.digest(text))):
            return
    raise InvalidJob(
        f"signature mismatch: job {func!r} was not enqueued by this site (or its row was "
        "changed since); it will not be run. Enqueue jobs through pgjobs (or "
        "manage.py pgjobs_enqueue) so they are signed with SECRET_KEY."
    )
