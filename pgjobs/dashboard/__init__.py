"""The jobs dashboard: per-queue figures, charts of the last hour or day, live workers
and schedules, shown in the Wagtail admin (under Jobs) and the Django admin.

``figures`` reads what is true now (queues, workers, schedules), ``series`` the charts'
history, ``charts`` draws that history as SVG, ``views`` serves the page and the
fragment its script fetches every few seconds, and ``actions`` holds the job page's
Retry, Cancel and Run-now buttons shared by both admins.
"""
