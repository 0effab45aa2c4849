"""URLs for the test suite: the Django admin, for ``tests/test_admin.py``."""

from django.contrib import admin
from django.urls import path

urlpatterns = [path("admin/", admin.site.urls)]
