"""``RedisBackend``: jobs stored in Redis, for sites that already run it.

It validates and serialises a job (``StoringBackend``), then hands it to
``pgjobs.stores.redis.RedisStore``, which owns every Redis command. Redis cannot
join a database transaction, so a job enqueued inside one is held back and
written when it commits (``StoringBackend``'s hold-until-commit path), and a
rolled-back request leaves no job.
"""

from ..exceptions import InvalidBackend
from .storing import StoringBackend

DEFAULT_URL = "redis://127.0.0.1:6379/0"


class RedisBackend(StoringBackend):
    """Stores jobs in Redis (redis-py: ``pip install pgjobs[redis]``).

    OPTIONS (all optional): ``URL`` (``"redis://127.0.0.1:6379/0"``; any node of a
    Redis Cluster works too, found out at the first command), ``PREFIX``
    (``"pgjobs"``: every key starts with it; ``{pgjobs}`` on a cluster, one slot),
    ``CONNECTION_OPTIONS`` (passed to ``redis.Redis.from_url``, or to
    ``redis.RedisCluster.from_url`` on a cluster), ``RESULT_TTL`` (the older option: both retentions
    at once, ``None`` meaning True; ``KEEP_SUCCEEDED``/``KEEP_FAILED`` given
    beside it win), ``DATABASE`` (the Django database whose transactions hold
    enqueues back until commit: ``"default"``; ``None`` writes at once), and
    those of every storing backend (``StoringBackend``): ``QUEUES``,
    ``MAX_ATTEMPTS``, ``RETRY_DELAY``, ``RETRY_MAX_DELAY``, ``TIMEOUT``,
    ``LEASE_SECONDS``, ``POLL_INTERVAL``, ``KEEP_SUCCEEDED`` (300 s) and
    ``KEEP_FAILED`` (7 days).

    Retention is Redis's own key expiry where it can be: every finished job's
    key expires after the longest finite retention (``result_ttl``), and
    workers delete the jobs of a shorter one (``retention_rules``) sooner.
    """

    option_names = StoringBackend.option_names | {
        "URL",
        "PREFIX",
        "CONNECTION_OPTIONS",
        "RESULT_TTL",
        "DATABASE",
    }

    def __init__(self, options):
        super().__init__(options)
        # Nothing here connects: Django may build backends while apps load.
        self.url = self.options.get("URL", DEFAULT_URL)
        if not isinstance(self.url, str) or not self.url:
            raise InvalidBackend(f"OPTIONS['URL'] must be a redis:// URL, not {self.url!r}")
        self.prefix = self.options.get("PREFIX", "pgjobs")
        if not isinstance(self.prefix, str) or not self.prefix:
            raise InvalidBackend(
                f"OPTIONS['PREFIX'] must be a non-empty string, not {self.prefix!r}"
            )
        self.connection_options = self.options.get("CONNECTION_OPTIONS", {})
        if not isinstance(self.connection_options, dict):
            raise InvalidBackend(
                f"OPTIONS['CONNECTION_OPTIONS'] must be a dict, not {self.connection_options!r}"
            )
        # The expiry every finished job's key gets: the longest finite retention
        # (None when one is True: no expiry).
        kept = [keep for keep in (self.keep_succeeded, self.keep_failed) if keep is not False]
        self.result_ttl = None if any(keep is True for keep in kept) else max(kept)
        self.database = self.options.get("DATABASE", "default")
        if self.database is not None and not isinstance(self.database, str):
            raise InvalidBackend(
                f"OPTIONS['DATABASE'] must be a database alias or None, not {self.database!r}"
            )

    def default_retention(self):
        """``RESULT_TTL``, when given, stands for both retentions."""
        if "RESULT_TTL" in self.options:
            ttl = self._positive_number("RESULT_TTL", None, allow_none=True)
            keep = True if ttl is None else ttl
            return keep, keep
        return super().default_retention()

    def retention_rules(self):
        """``[(statuses, timedelta)]`` that workers enforce: the retentions shorter
        than the keys' own expiry (``result_ttl``), which Redis enforces itself."""
        return [
            (statuses, age)
            for statuses, age in super().retention_rules()
            if self.result_ttl is None or age.total_seconds() < self.result_ttl
        ]

    def make_store(self):
        try:
            from ..stores.redis import RedisStore
        except ImportError as exc:
            raise InvalidBackend(
                f"RedisBackend needs redis-py: pip install 'pgjobs[redis]' ({exc})"
            ) from None
        return RedisStore(
            self.url,
            prefix=self.prefix,
            lease_seconds=self.lease_seconds,
            result_ttl=self.result_ttl,
            keep_succeeded=self.keep_succeeded,
            connection_options=self.connection_options,
        )

    def check(self, **kwargs):
        from django.core import checks

        try:
            import redis  # noqa: F401
        except ImportError:
            return [
                checks.Error(
                    "RedisBackend needs redis-py, which is not installed.",
                    hint="pip install 'pgjobs[redis]'",
                    id="pgjobs.E012",
                )
            ]
        return []
