"""pgjobs for Wagtail: background hooks (``from pgjobs.contrib.wagtail import hooks``)
and the job rows in the Wagtail admin (add ``"pgjobs.contrib.wagtail"`` to
``INSTALLED_APPS``)."""
