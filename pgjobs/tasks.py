"""The Celery task that runs pgjobs jobs, for ``app.autodiscover_tasks()``.

A site on ``pgjobs.backends.CeleryBackend`` whose Celery app autodiscovers the
installed apps' ``tasks`` modules (with ``"pgjobs"`` in ``INSTALLED_APPS``) finds
``pgjobs.run_job`` here; otherwise call ``pgjobs.backends.celery.install(app)`` in
the module that makes the app. Importing this module needs Celery.
"""

from celery import current_app

from .backends.celery import install

run_job = install(current_app)
