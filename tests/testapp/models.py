"""Models the tests' jobs write to, so a job's side effect is visible in the database."""

from django.db import models


class Execution(models.Model):
    """One row per job run; ``key`` is unique, so running a job twice is an error."""

    key = models.CharField(max_length=100, unique=True)
    started = models.FloatField(default=0.0)
    attempt = models.IntegerField(default=1)


class Event(models.Model):
    """Free-form log of what jobs did, for ordering and retry tests (not unique)."""

    name = models.CharField(max_length=100)
    value = models.IntegerField(default=0)
    at = models.FloatField(default=0.0)
