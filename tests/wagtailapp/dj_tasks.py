"""Test tasks of ``django.tasks``, Django's own framework (Django >= 6.0)."""

from django.tasks import signals, task

from .task_bodies import define

define(globals(), task, signals)
