"""The jobs the demo enqueues: ordinary module-level functions."""

import asyncio
import random
import time

from pgjobs import current_job


def render_thumbnail(image_id, size=128):
    """Pretend to resize an image: a little CPU-bound work."""
    time.sleep(random.uniform(0.05, 0.2))
    return f"image-{image_id}@{size}px"


def send_newsletter(user_id):
    time.sleep(random.uniform(0.02, 0.1))
    return f"sent to user {user_id}"


def flaky_import(feed):
    """Fails on its first attempt, as a network call might; pgjobs retries it."""
    job = current_job()
    if job and job.attempt < 2:
        raise ConnectionError(f"{feed}: connection reset (attempt {job.attempt})")
    return f"imported {feed} on attempt {job.attempt if job else 1}"


async def warm_cache(page):
    """An async job: runs on the worker's event loop."""
    await asyncio.sleep(0.05)
    return f"warmed {page}"


def nightly_report():
    return "report ready"
