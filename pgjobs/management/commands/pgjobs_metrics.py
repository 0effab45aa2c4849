"""``manage.py pgjobs_metrics --port N``: serve pgjobs' Prometheus metrics at
``/metrics`` on their own, e.g. beside the workers of a host."""

import signal
import threading

from django.core.management.base import BaseCommand, CommandError

from ._options import workable_backend


class Command(BaseCommand):
    help = (
        "Serve pgjobs' Prometheus metrics (queue depth, oldest due job, jobs finished, wait "
        "and run times, live workers) at http://ADDR:PORT/metrics until stopped."
    )

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, required=True, help="Port to listen on.")
        parser.add_argument(
            "--addr", default="0.0.0.0", help="Address to listen on (default 0.0.0.0)."
        )

    def handle(self, *args, port, addr, **options):
        try:
            from prometheus_client import start_http_server
        except ImportError:
            raise CommandError(
                "pgjobs_metrics needs prometheus_client: pip install 'pgjobs[prometheus]'"
            ) from None
        if not 0 <= port <= 65535:
            raise CommandError(f"--port must be between 0 and 65535, not {port}")
        workable_backend()
        from ...metrics.registry import registry

        try:
            server, _ = start_http_server(port, addr=addr, registry=registry())
        except OSError as exc:
            raise CommandError(f"cannot listen on {addr}:{port}: {exc.strerror or exc}") from None
        host, bound = server.server_address[:2]
        self.stdout.write(f"pgjobs metrics at http://{host}:{bound}/metrics")
        self.stdout.flush()
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        while not stop.wait(1.0):
            pass
        server.shutdown()
