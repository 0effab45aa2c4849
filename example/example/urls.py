"""URLs of the example site: the Wagtail admin (jobs under "Jobs"), the Django
admin, and the pages."""

from django.contrib import admin
from django.urls import include, path
from wagtail import urls as wagtail_urls
from wagtail.admin import urls as wagtailadmin_urls

urlpatterns = [
    path("django-admin/", admin.site.urls),
    path("admin/", include(wagtailadmin_urls)),
    path("", include(wagtail_urls)),
]
