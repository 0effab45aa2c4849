"""URLs of the example site: the Django admin, where the job rows can be browsed."""

from django.contrib import admin
from django.urls import path

urlpatterns = [path("admin/", admin.site.urls)]
