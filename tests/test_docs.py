"""The documentation site (``docs/``) against the code: what a Sphinx build cannot check.

``make docs`` builds it with warnings as errors (broken references, pages outside every
toctree, docstrings autodoc cannot read). These tests make sure the rest holds: every
system check id the code reports is in the catalogue the reference page is made from, every
backend option is in the settings reference, every Python example is valid Python, and the
tutorial works, step by step, from an empty directory.
"""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pgjobs import backends
from pgjobs.checks import CATALOGUE

from .conftest import ROOT, VENDOR

DOCS = ROOT / "docs"
CHECK_ID = re.compile(r"pgjobs\.[EW]\d{3}")
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _sources():
    return {path: path.read_text() for path in (ROOT / "pgjobs").rglob("*.py")}


def _pages():
    return [ROOT / "README.md", *sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts)]


def test_every_check_id_the_code_reports_is_in_the_catalogue():
    used = {}
    for path, text in _sources().items():
        for check_id in CHECK_ID.findall(text):
            used.setdefault(check_id, path.relative_to(ROOT))
    missing = {check_id: str(path) for check_id, path in used.items() if check_id not in CATALOGUE}
    assert not missing, f"add these to pgjobs.checks.CATALOGUE: {missing}"


def test_every_catalogued_check_id_is_still_reported_somewhere():
    everything = "\n".join(_sources().values())
    stale = [check_id for check_id in CATALOGUE if everything.count(f'"{check_id}"') < 2]
    assert not stale, f"catalogued but never reported (remove them): {stale}"


@pytest.mark.parametrize(
    "backend", ["DatabaseBackend", "RedisBackend", "CeleryBackend", "ImmediateBackend"]
)
def test_every_backend_option_is_in_the_settings_reference(backend):
    page = (DOCS / "reference" / "settings.md").read_text()
    options = getattr(backends, backend).option_names
    missing = sorted(name for name in options if f"`{name}`" not in page)
    assert not missing, f"document {backend} OPTIONS {missing} in docs/reference/settings.md"


def test_every_top_level_setting_is_in_the_settings_reference():
    from pgjobs.conf import TOP_LEVEL_KEYS

    page = (DOCS / "reference" / "settings.md").read_text()
    missing = sorted(key for key in TOP_LEVEL_KEYS if f"`{key}`" not in page)
    assert not missing, f"document PGJOBS keys {missing} in docs/reference/settings.md"


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_python_examples_are_valid_python(page):
    for number, block in enumerate(PYTHON_BLOCK.findall(page.read_text()), 1):
        try:
            # Examples may await at top level, as they would in an async view.
            compile(
                block, f"{page.name}, python block {number}", "exec", ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
            )
        except SyntaxError as exc:
            pytest.fail(f"{page.relative_to(ROOT)}: python block {number}: {exc}")


@pytest.mark.slow
@pytest.mark.skipif(VENDOR != "sqlite", reason="runs once per stack, in the SQLite pass")
def test_the_tutorial_runs_from_an_empty_directory(tmp_path):
    """docs/tutorial/tutorial.sh, every step the tutorial shows, with this virtualenv's
    pgjobs standing in for ``pip install``."""
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "TUTORIAL_SKIP_INSTALL": "1",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    result = subprocess.run(
        ["bash", str(DOCS / "tutorial" / "tutorial.sh")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "jobs are waiting for a worker" in result.stdout
    assert re.search(r"pgjobs_drain: ran (\d+), succeeded \1, failed 0", result.stdout)
    assert re.search(r"[1-9]\d* jobs succeeded, 0 did not", result.stdout)
