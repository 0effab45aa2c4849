"""Sphinx configuration for the pgjobs documentation (``make docs``).

Pages are MyST Markdown. The reference pages are pulled from the code: autodoc for the
public names, ``docs/_ext/pgjobs_docs.py`` for the management commands (their argument
parsers) and the system checks (``pgjobs.checks.CATALOGUE``). Django is set up with a
settings module of its own (``docs/django_settings.py``) so that autodoc can import pgjobs.
"""

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))
sys.path.insert(0, str(DOCS / "_ext"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "docs.django_settings")

import django  # noqa: E402

django.setup()

project = "pgjobs"
author = "the pgjobs developers"
copyright = "2026, the pgjobs developers"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    "sphinx_copybutton",
    "pgjobs_docs",
]

myst_enable_extensions = ["colon_fence", "deflist", "fieldlist"]
myst_heading_anchors = 3
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build", "README.md", "examples"]
root_doc = "index"

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "undoc-members": False}


nitpicky = False
suppress_warnings = ["config.cache"]

html_theme = "furo"
html_title = "pgjobs"
html_static_path = []
