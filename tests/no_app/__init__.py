"""A site's own app that uses pgjobs while ``"pgjobs"`` is missing from
``INSTALLED_APPS`` (``tests/no_app_settings.py``)."""
