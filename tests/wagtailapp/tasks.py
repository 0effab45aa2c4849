"""Test tasks of the ``django_tasks`` package (django-tasks), the one Wagtail uses."""

from django_tasks import signals, task

from .task_bodies import define

define(globals(), task, signals)
