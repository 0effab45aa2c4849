"""Wagtail hooks that can run in the background (RFC 72, "Background Hooks").

::

    from pgjobs.contrib.wagtail import hooks

    @hooks.register("after_publish_page", background=True)
    def notify_subscribers(request, page):
        ...  # runs in a pgjobs worker

Without ``background`` this is ``wagtail.hooks.register``, unchanged. With it, Wagtail
calls a small proxy that enqueues the hook function as a job and returns at once. Model
instances among the arguments travel as references and are fetched fresh in the
worker; a ``request`` travels as a ``RequestSnapshot`` (user id, path, method, site),
which the hook receives in its place. Job options (``priority``, ``queue``,
``max_attempts``, ``timeout``) may follow ``background=True``.

Only event-like ``after_*`` hooks can run in the background (``BACKGROUND_HOOKS``):
the others register menu items or URLs, return values Wagtail uses, or veto or change
what is about to happen, so they raise ``ImproperlyConfigured``.
"""

import dataclasses
from functools import cached_property

from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest
from wagtail import hooks as wagtail_hooks

from ... import background
from ...backends.base import JOB_OPTIONS

get_hooks = wagtail_hooks.get_hooks
register_temporarily = wagtail_hooks.register_temporarily

#: Hooks that may run in the background: Wagtail calls them after the change is
#: made and ignores what they return.
BACKGROUND_HOOKS = frozenset(
    {
        "after_create_page",
        "after_edit_page",
        "after_publish_page",
        "after_unpublish_page",
        "after_move_page",
        "after_copy_page",
        "after_convert_alias_page",
        "after_create_snippet",
        "after_edit_snippet",
        "after_publish",
        "after_unpublish",
        "after_edit_setting",
        "after_create_user",
        "after_edit_user",
    }
)

#: ``after_*`` hooks that cannot, and why.
NOT_IN_BACKGROUND = {
    "after_delete_page": "the page no longer exists when a worker would fetch it",
    "after_delete_snippet": "the snippets no longer exist when a worker would fetch them",
    "after_delete_user": "the user no longer exists when a worker would fetch it",
    "after_bulk_action": "its action instance cannot travel to a worker",
}


def register(hook_name, fn=None, order=0, *, background=False, **job_options):
    """``wagtail.hooks.register``, plus ``background=True`` to run the hook as a job."""
    if not background:
        if job_options:
            raise TypeError(
                f"register() got job options {', '.join(sorted(job_options))} without "
                "background=True"
            )
        return wagtail_hooks.register(hook_name, fn, order=order)
    check_background_hook(hook_name)
    unknown = sorted(set(job_options) - set(JOB_OPTIONS))
    if unknown:
        raise TypeError(
            f"register() got unknown job options {', '.join(unknown)}; "
            f"options are {', '.join(JOB_OPTIONS)}"
        )
    if fn is None:

        def decorator(fn):
            register(hook_name, fn, order=order, background=True, **job_options)
            return fn

        return decorator
    wagtail_hooks.register(hook_name, BackgroundHook(hook_name, fn, job_options), order=order)


def check_background_hook(hook_name):
    """Raise ``ImproperlyConfigured`` unless ``hook_name`` can run in the background."""
    if hook_name in BACKGROUND_HOOKS:
        return
    reason = NOT_IN_BACKGROUND.get(hook_name) or (
        "Wagtail needs it to run during the request (it registers something, returns a "
        "value Wagtail uses, or acts before the change is made)"
    )
    raise ImproperlyConfigured(
        f"The {hook_name!r} hook cannot run in the background: {reason}. Register it "
        "without background=True (it can still enqueue jobs itself). Hooks that can run "
        f"in the background: {', '.join(sorted(BACKGROUND_HOOKS))}."
    )


class BackgroundHook:
    """What Wagtail calls for a background hook: enqueues ``fn`` and returns None."""

    def __init__(self, hook_name, fn, job_options):
        name = getattr(fn, "__qualname__", "")
        if not callable(fn) or "<locals>" in name or getattr(fn, "__name__", "") == "<lambda>":
            raise ImproperlyConfigured(
                f"background hook {fn!r} must be a module-level function: a worker imports it"
            )
        self.hook_name = hook_name
        self.fn = fn
        self.job_options = job_options

    def __repr__(self):
        return f"<BackgroundHook {self.hook_name} {self.fn.__module__}.{self.fn.__qualname__}>"

    def __call__(self, *args, **kwargs):
        background.enqueue(
            self.fn,
            args=[_travelling(value) for value in args],
            kwargs={key: _travelling(value) for key, value in kwargs.items()},
            **self.job_options,
        )


def _travelling(value):
    if isinstance(value, HttpRequest):
        return RequestSnapshot.from_request(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_travelling(v) for v in value)
    return value


@dataclasses.dataclass(frozen=True)
class RequestSnapshot:
    """What a background hook receives for the ``request`` of the admin view.

    ``user`` reads the user again, in the worker; ``site`` the Wagtail site.
    """

    user_id: object = None
    path: str = ""
    method: str = "GET"
    site_id: int | None = None
    hostname: str = ""

    @classmethod
    def from_request(cls, request):
        user = getattr(request, "user", None)
        site = _site_for(request)
        return cls(
            user_id=user.pk if user is not None and user.is_authenticated else None,
            path=request.get_full_path(),
            method=request.method or "GET",
            site_id=site.pk if site is not None else None,
            hostname=site.hostname if site is not None else _host(request),
        )

    @cached_property
    def user(self):
        from django.contrib.auth import get_user_model
        from django.contrib.auth.models import AnonymousUser

        if self.user_id is None:
            return AnonymousUser()
        return get_user_model()._default_manager.filter(pk=self.user_id).first() or (
            AnonymousUser()
        )

    @cached_property
    def site(self):
        from wagtail.models import Site

        return None if self.site_id is None else Site.objects.filter(pk=self.site_id).first()

    def __pgjobs_encode__(self):
        return dataclasses.asdict(self)

    @classmethod
    def __pgjobs_decode__(cls, data):
        return cls(**data)


def _site_for(request):
    from wagtail.models import Site

    try:
        return Site.find_for_request(request)
    except Exception:  # no sites yet, a host Wagtail does not know
        return None


def _host(request):
    try:
        return request.get_host().split(":")[0]
    except Exception:  # DisallowedHost
        return ""
