"""The example site's one page type: an article that may point at another page
(a reference Wagtail's reference index records, in a worker)."""

from django.db import models
from wagtail.admin.panels import FieldPanel
from wagtail.fields import RichTextField
from wagtail.models import Page


class ArticlePage(Page):
    body = RichTextField(blank=True)
    related_page = models.ForeignKey(
        "wagtailcore.Page", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    content_panels = [*Page.content_panels, FieldPanel("body"), FieldPanel("related_page")]
