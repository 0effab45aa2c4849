"""Make chancy's finish times comparable with the other queues'.

Every other queue here timestamps a finished job in the database when its
outcome is written back (pgjobs' ``finished_at = now()``, PGQueuer's
``successful`` log row, Oban's ``completed_at`` in its acknowledgement).
chancy sets ``completed_at`` from the worker's clock when the job returns and
writes the outcome back later, in batches, once a second; a span ending at the
last ``completed_at`` would leave that write-back out. This trigger, installed
by the harness in chancy's benchmark database only, sets ``completed_at`` to
the time of the write-back transaction (``now()``) instead, when a job turns
``succeeded``. It costs chancy's write-back a trigger call per job (a few µs).

    python instrument.py     # DJANGO_SETTINGS_MODULE=chancy_bench.settings, BENCH_DB
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SQL = """
CREATE OR REPLACE FUNCTION bench_written_back() RETURNS trigger AS $$
BEGIN
    NEW.completed_at := now();
    RETURN NEW;
END $$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS bench_written_back ON chancy_jobs;
CREATE TRIGGER bench_written_back BEFORE UPDATE ON chancy_jobs
    FOR EACH ROW WHEN (NEW.state = 'succeeded' AND OLD.state IS DISTINCT FROM 'succeeded')
    EXECUTE FUNCTION bench_written_back();
"""


def main():
    import psycopg

    from chancy_bench.app import _dsn

    with psycopg.connect(_dsn(), autocommit=True) as conn:
        conn.execute(SQL)


if __name__ == "__main__":
    main()
