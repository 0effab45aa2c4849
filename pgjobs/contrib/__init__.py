"""Integrations with other frameworks (Wagtail)."""
