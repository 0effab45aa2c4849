"""pgjobs through PgBouncer 1.18 in transaction mode (docs/howto/pgbouncer.md): web-side
enqueues and worker processes through a private PgBouncer (``tests/pgbouncer.py``)
whose pool has fewer server connections than there are workers, with only Django's
``DISABLE_SERVER_SIDE_CURSORS`` set and, at most, ``LISTEN_DATABASE``.

Every job runs once; idle workers are woken through the direct LISTEN connection,
or poll when LISTEN would go through the pooler; the pruner prunes; the checks
warn; and sixteen workers reporting different host names share the claims.
"""

import os
import re
import subprocess
import sys

import pytest
from django.core import checks
from django.db import connection
from django.test import override_settings

from pgjobs import records
from pgjobs.checks import listen_database_checks, listen_pooler_checks
from pgjobs.handler import get_backend
from pgjobs.models import Job
from tests import pgbouncer
from tests.conftest import JOBS_IN_REDIS, REQUIRE_SERVICES, ROOT, VENDOR, status_counts, wait_for
from tests.testapp.models import Execution

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        VENDOR != "postgres" or JOBS_IN_REDIS, reason="PgBouncer pools PostgreSQL connections"
    ),
]

POOL_SIZE = 4


@pytest.fixture(scope="module")
def bouncer():
    """A PgBouncer of this module's own, in transaction mode, pooling 4 connections."""
    if not pgbouncer.available():
        if REQUIRE_SERVICES:
            pytest.fail(f"PGJOBS_REQUIRE_SERVICES=1 but there is no {pgbouncer.BINARY}")
        pytest.skip(f"no {pgbouncer.BINARY} (Debian package pgbouncer)")
    server = pgbouncer.PgBouncer(pool_size=POOL_SIZE).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def through_bouncer(bouncer, monkeypatch, request):
    """``start = through_bouncer(listen="direct", keep=None)``: ``start_worker``
    whose processes reach PostgreSQL through the PgBouncer, and an ``env`` for
    other processes (the web side) to do the same."""

    def setup(listen="direct", keep=None):
        monkeypatch.setenv("PGJOBS_TEST_PGBOUNCER_PORT", str(bouncer.port))
        if listen is None:
            monkeypatch.delenv("PGJOBS_TEST_LISTEN_DATABASE", raising=False)
        else:
            monkeypatch.setenv("PGJOBS_TEST_LISTEN_DATABASE", listen)
        if keep is not None:
            monkeypatch.setenv("PGJOBS_TEST_KEEP_SUCCEEDED", str(keep))
        return request.getfixturevalue("start_worker")

    return setup


def django_env(**extra):
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PGJOBS_TEST_DB": "postgres",
        "PGJOBS_TEST_DB_NAME": str(connection.settings_dict["NAME"]),
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


WEB_SIDE = """
import sys
import django
django.setup()
from pgjobs import background
from tests.testapp import jobs
prefix, singles, many, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
def job(key):  # jobs.record, or jobs.sleep_then_record for that many seconds
    return (jobs.sleep_then_record, [key, float(seconds)]) if seconds else (jobs.record, [key])
for n in range(singles):  # one enqueue per request, as views do
    background.enqueue(*job(f"{prefix}-{n}"), priority=n % 3)
# 100 or more at once: by COPY
background.enqueue_many([(*job(f"{prefix}-many-{n}"), {}) for n in range(many)])
print("enqueued")
"""


def enqueue_from_web(prefix, singles, many, seconds=""):
    """Enqueue through the PgBouncer from another process, as a web server would
    (``seconds``: jobs that sleep so long, else jobs that only record)."""
    return subprocess.Popen(
        [sys.executable, "-c", WEB_SIDE, prefix, str(singles), str(many), str(seconds)],
        cwd=ROOT,
        env=django_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process):
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0 and "enqueued" in out, err
    return out


def assert_clean(workers):
    for worker in workers:
        assert "Traceback" not in worker.stderr, worker.output()
        assert "prepared statement" not in worker.stderr, worker.output()


def test_an_idle_worker_is_woken_through_the_direct_listen_connection(through_bouncer, bouncer):
    start = through_bouncer(listen="direct")
    # A poll every minute: only a wake-up can run the job within the wait below.
    worker = start("--poll-interval", "60")
    worker.wait_for_output("Stop with Ctrl-C or SIGTERM.")
    wait_for(lambda: _listening(bouncer), timeout=15, message="the worker to LISTEN directly")
    for round in range(3):
        finish(enqueue_from_web(f"wake{round}", 1, 0))
        wait_for(
            lambda round=round: Execution.objects.filter(key=f"wake{round}-0").exists(),
            timeout=15,
            message=f"job {round} to be woken for",
        )
    assert_clean([worker])


def _listening(bouncer=None):
    """Whether a session LISTENs (pg_stat_activity's last query); with ``bouncer``,
    a session of its own, not one of the PgBouncer's server connections."""
    pooled = [server["remote_pid"] for server in bouncer.admin("SHOW SERVERS")] if bouncer else []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND query LIKE 'LISTEN %%' AND NOT pid = ANY(%s)",
            [pooled],
        )
        return cursor.fetchone()[0] > 0


def test_listen_through_the_pooler_falls_back_to_polling_and_the_pruner_prunes(through_bouncer):
    """No LISTEN_DATABASE: the worker finds its LISTEN connection is PgBouncer's,
    says so, and polls; finished jobs are pruned through the pooler."""
    start = through_bouncer(listen=None, keep=0.5)
    worker = start("--concurrency", "2")
    worker.wait_for_output("LISTEN would go through a connection pooler", stream="stderr")
    finish(enqueue_from_web("poll", 20, 0))
    wait_for(
        lambda: Execution.objects.count() == 20, timeout=30, interval=0.1, message="jobs by polling"
    )
    # KEEP_SUCCEEDED 0.5 s: the pruner deletes them all soon after.
    wait_for(lambda: not Job.objects.exists(), timeout=30, interval=0.2, message="the pruner")
    assert "polling instead" in worker.stderr
    assert "Traceback" not in worker.stderr and "prepared statement" not in worker.stderr
    assert not _listening()  # nowhere, PgBouncer's server connections included


def test_a_worker_behind_an_untold_pooler_stops_preparing_and_runs_every_job_once(
    through_bouncer, monkeypatch
):
    """DISABLE_SERVER_SIDE_CURSORS forgotten: the worker finds the pooler when it
    tries to LISTEN, and from then on prepares nothing (which failed with
    'prepared statement "_pg3_2" already exists' before)."""
    monkeypatch.setenv("PGJOBS_TEST_PGBOUNCER_UNTOLD", "1")  # before start_worker reads it
    start = through_bouncer(listen=None)
    workers = [start("--concurrency", "2", persistent_connections=True) for _ in range(3)]
    for worker in workers:
        worker.wait_for_output("lack DISABLE_SERVER_SIDE_CURSORS", stream="stderr")
    # The jobs are enqueued directly: a web process behind the untold pooler
    # would prepare its enqueue (the W004 check and the docs say to tell Django).
    from pgjobs import background
    from tests.testapp import jobs

    keys = [f"untold-{n}" for n in range(300)]
    background.enqueue_many([(jobs.record, [key], {}) for key in keys[:150]])
    for key in keys[150:]:
        background.enqueue(jobs.record, args=[key])
    wait_for(
        lambda: (
            Execution.objects.count() == len(keys)
            and not Job.objects.exclude(status=records.SUCCEEDED).exists()
        ),
        timeout=60,
        interval=0.2,
        message="every job",
    )
    assert set(Execution.objects.values_list("key", flat=True)) == set(keys)
    assert not Job.objects.filter(attempts__gt=1).exists()
    assert_clean(workers)


def test_poll_only_says_so_and_runs_jobs(through_bouncer):
    start = through_bouncer(listen="false")
    worker = start()
    worker.wait_for_output("polling (no LISTEN)")
    finish(enqueue_from_web("pollonly", 5, 0))
    wait_for(lambda: Execution.objects.count() == 5, timeout=30, interval=0.1, message="jobs")
    assert "pooler" not in worker.stderr, worker.output()  # chosen: no warning
    assert_clean([worker])


# -- checks ------------------------------------------------------------------------------


def run_django(*args, **env):
    """``python -m django *args`` in the test settings (``env``: more variables)."""
    return subprocess.run(
        [sys.executable, "-m", "django", *args],
        cwd=ROOT,
        env=django_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_warns_when_listen_would_go_through_the_pooler(bouncer):
    through = {"PGJOBS_TEST_PGBOUNCER_PORT": str(bouncer.port)}
    # DISABLE_SERVER_SIDE_CURSORS says the alias is a transaction pooler's.
    result = run_django("check", **through)
    assert "pgjobs.W004" in result.stdout + result.stderr
    assert "'default'" in result.stderr
    # A direct connection for LISTEN: nothing to say.
    result = run_django("check", **through, PGJOBS_TEST_LISTEN_DATABASE="direct")
    assert result.returncode == 0 and "W004" not in result.stdout + result.stderr, result.stderr
    result = run_django("check", **through, PGJOBS_TEST_LISTEN_DATABASE="false")
    assert "W004" not in result.stdout + result.stderr, result.stderr
    # Django not told: only the server can say (check --database), and the hint says
    # what to tell Django.
    untold = {**through, "PGJOBS_TEST_PGBOUNCER_UNTOLD": "1"}
    result = run_django("check", **untold)
    assert "W004" not in result.stdout + result.stderr, result.stderr
    result = run_django("check", "--database", "default", **untold)
    assert "pgjobs.W004" in result.stderr and "DISABLE_SERVER_SIDE_CURSORS = True" in result.stderr


def test_the_database_check_asks_the_server_who_answers_a_dsn(bouncer):
    name = connection.settings_dict["NAME"]
    dsn = f"postgresql://root@127.0.0.1:{bouncer.port}/{name}"
    backend = get_backend()
    options = {**backend.options, "LISTEN_DATABASE": dsn}
    with override_settings(
        PGJOBS={"BACKEND": "pgjobs.backends.DatabaseBackend", "OPTIONS": options}
    ):
        pooled = get_backend()
        assert listen_database_checks(pooled) == []  # a DSN: the settings cannot tell
        [warning] = listen_pooler_checks(pooled)
        assert warning.id == "pgjobs.W004" and isinstance(warning, checks.Warning)
    direct = f"postgresql://root@127.0.0.1:{connection.settings_dict['PORT']}/{name}"
    options["LISTEN_DATABASE"] = direct
    with override_settings(
        PGJOBS={"BACKEND": "pgjobs.backends.DatabaseBackend", "OPTIONS": options}
    ):
        assert listen_pooler_checks(get_backend()) == []


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("nosuch", "not an alias in DATABASES"),
        ("host='unclosed", "not a valid DSN"),
    ],
)
def test_a_bad_listen_database_is_error_e017(value, says):
    options = {"QUEUES": ["default", "other"], "LISTEN_DATABASE": value}
    with override_settings(
        PGJOBS={"BACKEND": "pgjobs.backends.DatabaseBackend", "OPTIONS": options}
    ):
        [error] = listen_database_checks(get_backend())
    assert error.id == "pgjobs.E017" and says in error.msg


def test_listen_database_of_the_wrong_type_is_error_e002():
    from pgjobs.checks import check_settings

    options = {"LISTEN_DATABASE": 5}
    with override_settings(
        PGJOBS={"BACKEND": "pgjobs.backends.DatabaseBackend", "OPTIONS": options}
    ):
        [error] = [m for m in check_settings() if m.id == "pgjobs.E002"]
    assert "LISTEN_DATABASE" in error.msg


# -- many hosts --------------------------------------------------------------------------

HOSTS = 16


def test_web_enqueues_and_sixteen_hosts_through_a_pool_of_four_run_every_job_once(
    through_bouncer, bouncer
):
    """Two web processes enqueue (one job per request, and by COPY) and sixteen
    workers with host names of their own claim, all through a pool of four server
    connections: every job runs once, each host takes its share, and none prepares
    a statement (which the pooler would mix up between its clients)."""
    start = through_bouncer(listen="direct")
    workers = [
        start("--hostname", f"host-{n}", "--prefetch", "0", persistent_connections=True)
        for n in range(HOSTS)
    ]
    for worker in workers:
        worker.wait_for_output("Stop with Ctrl-C or SIGTERM.", timeout=60)
    through = {"PGJOBS_TEST_PGBOUNCER_PORT": str(bouncer.port)}
    status = run_django("pgjobs_status", **through)
    assert status.returncode == 0, status.stderr
    assert f"Workers ({HOSTS} live)" in status.stdout, status.stdout
    shown = set(re.findall(r"\bhost-\d+\b", status.stdout))
    assert shown == {f"host-{n}" for n in range(HOSTS)}, status.stdout
    # 40 jobs of 20 ms a host: half of them one enqueue each, half by COPY.
    per_web = 20 * HOSTS // 2
    webs = [enqueue_from_web(f"web{w}", per_web, per_web, seconds=0.02) for w in range(2)]
    for web in webs:
        finish(web)
    keys = {f"web{w}-{n}" for w in range(2) for n in range(per_web)}
    keys |= {f"web{w}-many-{n}" for w in range(2) for n in range(per_web)}
    count = len(keys)
    wait_for(
        lambda: status_counts() == {records.SUCCEEDED: count},
        timeout=60,
        interval=0.2,
        message="every job",
    )
    # Execution.key is unique: each job's work was done once.
    assert set(Execution.objects.values_list("key", flat=True)) == keys
    assert not Job.objects.filter(attempts__gt=1).exists()
    hosts = {}
    for worker_id in Job.objects.values_list("worker_id", flat=True):
        host = worker_id.split(":", 1)[0]
        hosts[host] = hosts.get(host, 0) + 1
    print("jobs per host:", dict(sorted(hosts.items())))
    assert set(hosts) == {f"host-{n}" for n in range(HOSTS)}, hosts
    # Fair: with 16 idle workers of one slot and jobs of 20 ms, no host ran more
    # than twice its share, none less than half (seen: 38 to 43 jobs of 40).
    share = count / HOSTS
    assert max(hosts.values()) <= 2 * share and min(hosts.values()) >= share / 2, hosts
    assert len(bouncer.server_connections(connection.settings_dict["NAME"])) <= POOL_SIZE
    assert_clean(workers)
    for worker in workers:
        assert "woken by LISTEN/NOTIFY of database 'direct'" in worker.stdout, worker.output()
