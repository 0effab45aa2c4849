"""Imports pgjobs while apps load, as a site's models or tasks module would."""

from pgjobs import background  # noqa: F401
