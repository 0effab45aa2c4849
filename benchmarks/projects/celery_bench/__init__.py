"""Celery's Django layout: the app is loaded with the project."""

from celery_bench.celery import app as celery_app

__all__ = ["celery_app"]
