"""Models of the Wagtail tests: a page type whose ``related_page`` is a reference the
reference index records once Wagtail's task has run, and a snippet with publishing."""

from django.contrib.contenttypes.fields import GenericRelation
from django.db import models
from wagtail.models import DraftStateMixin, Page, RevisionMixin


class ArticlePage(Page):
    related_page = models.ForeignKey(
        "wagtailcore.Page", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )


class Notice(DraftStateMixin, RevisionMixin, models.Model):
    """A snippet with publishing: scheduled like a page (tests/test_wagtail_scheduling.py)."""

    text = models.CharField(max_length=100)
    _revisions = GenericRelation("wagtailcore.Revision", related_query_name="notice")

    def __str__(self):
        return self.text
