"""Reads the ``PGJOBS`` setting (or the RFC's ``WAGTAIL_JOBS`` when it is absent)."""

from django.conf import settings

DEFAULT_BACKEND = "pgjobs.backends.ImmediateBackend"
SETTING_NAMES = ("PGJOBS", "WAGTAIL_JOBS")
TOP_LEVEL_KEYS = {"BACKEND", "OPTIONS", "SCHEDULE"}


def setting_name():
    """The name of the setting in force: ``PGJOBS`` wins over ``WAGTAIL_JOBS``."""
    for name in SETTING_NAMES:
        if hasattr(settings, name):
            return name
    return SETTING_NAMES[0]


def jobs_settings():
    """The configured settings dict, with defaults filled in."""
    raw = getattr(settings, setting_name(), None) or {}
    if not isinstance(raw, dict):
        return {"BACKEND": raw, "OPTIONS": {}, "SCHEDULE": {}}
    return {
        "BACKEND": raw.get("BACKEND", DEFAULT_BACKEND),
        "OPTIONS": raw.get("OPTIONS", {}),
        "SCHEDULE": raw.get("SCHEDULE", {}),
        **{k: v for k, v in raw.items() if k not in TOP_LEVEL_KEYS},
    }
