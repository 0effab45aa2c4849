"""A private PgBouncer for the tests and benchmarks: started on a free port in a
temporary directory, in front of the test PostgreSQL server, in transaction mode
with a small pool (fewer server connections than workers), and stopped after.

``PGJOBS_TEST_PGBOUNCER_PORT`` in a process's environment points the test
settings (``tests/settings.py``) at it, with Django's
``DISABLE_SERVER_SIDE_CURSORS``; ``PGJOBS_TEST_LISTEN_DATABASE`` (``direct``,
``false``) sets ``LISTEN_DATABASE``.
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

BINARY = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def available():
    return Path(BINARY).exists()


class PgBouncer:
    """``pgbouncer`` in transaction mode on 127.0.0.1:``port``, pooling at most
    ``pool_size`` server connections per database and user."""

    def __init__(self, *, pool_size=4, server_host="127.0.0.1", server_port=5432, user="root"):
        self.port = free_port()
        self.pool_size = pool_size
        self.user = user
        self.dir = Path(tempfile.mkdtemp(prefix="pgjobs-pgbouncer-"))
        self.log = self.dir / "pgbouncer.log"
        self.pidfile = self.dir / "pgbouncer.pid"
        (self.dir / "users.txt").write_text(f'"{user}" ""\n')
        (self.dir / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host={server_host} port={server_port}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.dir / 'users.txt'}\n"
            f"admin_users = {user}\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {pool_size}\n"
            "min_pool_size = 0\n"
            "reserve_pool_size = 0\n"
            "max_client_conn = 1000\n"
            # psycopg sends none, but a site's OPTIONS may; Django's own are fine.
            "ignore_startup_parameters = extra_float_digits,options\n"
            "server_reset_query =\n"
            f"logfile = {self.log}\n"
            f"pidfile = {self.pidfile}\n"
        )
        self.process = None

    def start(self):
        user = {}
        if os.geteuid() == 0:  # PgBouncer refuses to run as root
            shutil.chown(self.dir, "postgres", "postgres")
            for path in self.dir.iterdir():
                shutil.chown(path, "postgres", "postgres")
            user = {"user": "postgres", "group": "postgres", "extra_groups": []}
        self.process = subprocess.Popen(
            [BINARY, str(self.dir / "pgbouncer.ini")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            **user,
        )
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"pgbouncer did not start:\n{self.log_text()}") from None
                time.sleep(0.05)

    def stop(self):
        """Stop at once (SIGINT: close every connection), so that the databases
        it served can be dropped; remove its directory."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_text(self):
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def admin(self, command):
        """Rows of an admin console command (``SHOW POOLS``, ``SHOW SERVERS``) as dicts."""
        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=self.user, dbname="pgbouncer", autocommit=True
        ) as conn:
            cursor = conn.cursor()
            cursor.execute(command, prepare=False)
            names = [c.name for c in cursor.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def server_connections(self, database):
        """The server connections PgBouncer holds for ``database`` now."""
        return [s for s in self.admin("SHOW SERVERS") if s["database"] == database]
