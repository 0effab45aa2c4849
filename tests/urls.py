"""URLs for the test suite: the Django admin, for ``tests/test_admin.py``; the
metrics view, for ``tests/test_metrics.py``."""

from django.contrib import admin
from django.urls import path

from pgjobs.metrics.views import metrics

urlpatterns = [path("admin/", admin.site.urls), path("metrics", metrics)]
