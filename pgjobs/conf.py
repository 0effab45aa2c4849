"""Reads the ``PGJOBS`` setting (or the RFC's ``WAGTAIL_JOBS`` when it is absent)."""

from django.conf import settings

DEFAULT_BACKEND = "pgjobs.backends.ImmediateBackend"
SETTING_NAMES = ("PGJOBS", "WAGTAIL_JOBS")
#: pgjobs.contrib.wagtail's keys (its ``conf`` module reads them).
WAGTAIL_KEYS = {"WAGTAIL_SCHEDULED_PUBLISHING", "WAGTAIL_RENDITIONS", "WAGTAIL_BULK_ACTIONS"}
TOP_LEVEL_KEYS = {"BACKEND", "OPTIONS", "SCHEDULE", "JOB_MODULES", "QUEUES", *WAGTAIL_KEYS}


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
        "QUEUES": raw.get("QUEUES", {}),
        **{k: v for k, v in raw.items() if k not in TOP_LEVEL_KEYS},
    }


def job_modules():
    """The module-name prefixes whose functions may be jobs, as a tuple.

    ``JOB_MODULES`` when the setting has it; otherwise the site's own code: the
    package of every installed app (``app_config.name``) and of the ``AppConfig``
    classes its config derives from, and pgjobs. Standard library and
    third-party modules that are not apps (``os``, ``subprocess``) are outside
    unless listed. Raises ``ValueError`` naming the setting when
    ``JOB_MODULES`` is not a list of module names."""
    raw = getattr(settings, setting_name(), None)
    if isinstance(raw, dict) and raw.get("JOB_MODULES") is not None:
        modules = raw["JOB_MODULES"]
        if isinstance(modules, str) or not isinstance(modules, (list, tuple)):
            raise ValueError(
                f"{setting_name()}['JOB_MODULES'] must be a list of module names like "
                f"['myapp', 'myproject.jobs'], not {modules!r}"
            )
        for name in modules:
            if not isinstance(name, str) or not all(p.isidentifier() for p in name.split(".")):
                raise ValueError(
                    f"{setting_name()}['JOB_MODULES'] holds {name!r}, which is not a dotted "
                    "module name like 'myapp.jobs'"
                )
        return tuple(modules)
    from django.apps import AppConfig, apps

    if apps.apps_ready:
        names = []
        for app_config in apps.get_app_configs():
            names.append(app_config.name)
            # An app built on another package's AppConfig runs that package's code
            # too (wagtail.search's config derives from modelsearch's, whose tasks
            # Wagtail enqueues): the packages of its config's classes count.
            for cls in type(app_config).__mro__:
                if issubclass(cls, AppConfig) and cls is not AppConfig:
                    names.append(cls.__module__.rpartition(".")[0] or cls.__module__)
    else:  # before django.setup(): the entries as written (an AppConfig path covers less)
        names = [name for name in settings.INSTALLED_APPS if isinstance(name, str)]
    return tuple(dict.fromkeys(["pgjobs", *names]))
