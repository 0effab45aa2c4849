"""Django settings for measuring Procrastinate through its Django integration.

The integration is what a Django user would pick: jobs are deferred on
Django's own connection (so they join the caller's transaction) and
``manage.py procrastinate worker`` runs an asyncio worker on a psycopg 3
connection pool built from the same DATABASES entry — the same connector as
plain Procrastinate, so nothing is lost by going through Django.
"""

from bench_common import *  # noqa: F403

INSTALLED_APPS = BASE_APPS + ["procrastinate.contrib.django", "procrastinate_bench"]  # noqa: F405
