"""A page type for the Wagtail tests: its ``related_page`` is a reference the
reference index records once Wagtail's task has run."""

from django.db import models
from wagtail.models import Page


class ArticlePage(Page):
    related_page = models.ForeignKey(
        "wagtailcore.Page", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
