#!/usr/bin/env python
"""manage.py for the benchmark projects.

The harness sets DJANGO_SETTINGS_MODULE (``<system>_bench.settings``) and
BENCH_DB; this directory is put on sys.path so the project packages import.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

if __name__ == "__main__":
    if "DJANGO_SETTINGS_MODULE" not in os.environ:
        sys.exit("manage.py: set DJANGO_SETTINGS_MODULE to <system>_bench.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
