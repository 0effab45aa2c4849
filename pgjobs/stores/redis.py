"""The Redis store: jobs as hashes, queues as sorted sets, every change a Lua script.

For sites that keep jobs out of their database. Each operation that reads and
then writes runs as one server-side script (``lua/<name>.lua`` after the shared
helpers of ``lua/common.lua``), so claims are atomic across processes and
hosts, and idle workers are woken by pub/sub. Time is always Redis's own clock
(``TIME``), as the database stores use the database's. Jobs enqueued inside a
database transaction are written at its commit (``enqueues_in_transaction``).

Keys, under ``PREFIX`` (``P``)::

    P:seq                   INCR: job ids
    P:job:<id>              hash: the job (fields as the Job table's columns)
    P:queues                set: every queue name seen
    P:ready:<queue>         zset of due jobs. Score -priority; member
                            "<run_at µs, 16 digits>:<id, 19 digits>", so that
                            ZPOPMIN yields claim order (priority desc, run_at,
                            id) exactly, with no float packing of three numbers
    P:scheduled:<queue>     zset of jobs not due yet, scored by run_at (µs);
                            the claim script moves the due ones to P:ready
    P:running               zset of claimed jobs, scored by lease expiry (µs)
    P:done:<queue>:<status> zset of finished jobs, scored by finished_at (µs)
    P:unique:<key>          the id of the ready or running job holding a unique key
    P:workers               zset of live workers, scored by last heartbeat
    P:worker:<worker id>    hash: hostname, pid, queues, concurrency, times
    P:schedule:<name>       hash: last_tick, last_run of a SCHEDULE entry (µs)
    P:batch:<id>            hash: a batch's counts (total, pending, succeeded,
                            failed, cancelled), times, description, callbacks' ids;
                            expires with its jobs' result ttl once finished
    P:batch:<id>:jobs       list: the ids of a batch's jobs, in order
    P:after:<id>            set: the ids of the jobs waiting for job <id> (chains)
    P:wake:<queue>          pub/sub channel: a job became due in <queue>
    P:attempts:<id>         list: the job's attempts that did not succeed (JSON
                            arrays), deleted or expired with the job
    P:figures:<minute µs>   hash: that minute's figures (pgjobs/stats.py), fields
                            "<queue>\x1f<metric>\x1f<bucket or sum>"; expires
                            after stats.KEEP
    P:figures10:<start µs>  hash: the same, per ten minutes (stats.COARSE)

On a Redis Cluster (found out at the first command: ``INFO`` says
``cluster_enabled:1`` on the node the URL names) ``P`` is the prefix in a hash
tag, ``{pgjobs}``, so that every key of a site hashes to one slot and each
script, which builds its keys from ``P``, runs on one node; the script is sent
there by its one declared key, ``P`` itself. Every key, in Python and in Lua,
starts with ``P``: ``RedisStore.key(...)`` in Python, ``P .. ':name'`` in Lua.
Wake-ups are classic pub/sub, which a cluster delivers to subscribers on
every node.
"""

import datetime
import json
import logging
import threading
import time

import redis
from django.conf import settings
from django.utils import timezone

from .. import records, stats
from ..exceptions import InvalidBackend
from ..records import AttemptInfo, BatchInfo, ClaimedJob, JobInfo, QueueFigures, ScheduleInfo
from ..serialization import dumps
from .base import (
    DECODE_ERRORS,
    LOST_OUTCOMES,
    LOST_TRACEBACK,
    WORKER_LOST_MESSAGE,
    WORKER_LOST_TYPE,
    Store,
    args_json,
    one_line,
    read_arguments,
    with_current_attempt,
)
from .queries import lua

logger = logging.getLogger("pgjobs")

#: What a lost server or connection raises; on a cluster also a slot no node is known to
#: serve for a moment (a master died and its replica is not promoted yet).
REDIS_ERRORS = (redis.RedisError, redis.exceptions.RedisClusterException, OSError)

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
MICROSECOND = datetime.timedelta(microseconds=1)

#: The Lua scripts (``lua/<name>.lua``), each after the shared helpers it uses.
SCRIPTS = {
    "push": ("common", "push_jobs", "push"),
    "push_batch": ("common", "push_jobs", "push_batch"),
    "create_schedule": ("common", "create_schedule"),
    "advance_schedule": ("common", "push_jobs", "advance_schedule"),
    "finish_and_claim": ("common", "finish_and_claim"),
    "retry": ("common", "retry"),
    "fail": ("common", "fail"),
    "heartbeat": ("common", "heartbeat"),
    "release": ("common", "release"),
    "rescue": ("common", "rescue"),
    "cancel": ("common", "cancel"),
    "requeue": ("common", "requeue"),
    "run_now": ("common", "run_now"),
    "due": ("common", "due"),
    "status": ("common", "status"),
    "queue_figures": ("common", "queue_figures"),
    "prune": ("common", "prune"),
    "register_worker": ("common", "register_worker"),
    "reserve_ids": ("reserve_ids",),
    "claim_limited": ("common", "claim_limited"),
    "snooze": ("common", "snooze"),
}

#: What ``rescue.lua`` needs to write ``worker_lost_error`` for each job it takes back.
_WORKER_LOST = json.dumps(
    {
        "type": WORKER_LOST_TYPE,
        "message": WORKER_LOST_MESSAGE,
        "traceback": LOST_TRACEBACK,
        "outcomes": LOST_OUTCOMES,
    }
)


def to_us(when):
    """Microseconds since the epoch for a datetime (naive ones are in TIME_ZONE)."""
    if timezone.is_naive(when):
        when = timezone.make_aware(when, timezone.get_default_timezone())
    return (when - EPOCH) // MICROSECOND


def from_us(value):
    """The datetime for microseconds since the epoch, aware or naive as USE_TZ says."""
    if value in (None, "", b""):
        return None
    when = EPOCH + datetime.timedelta(microseconds=int(value))
    if not settings.USE_TZ:
        return timezone.make_naive(when, timezone.get_default_timezone())
    return when


def hash_tagged(prefix):
    """``prefix`` as a Redis Cluster needs it: with a hash tag, so that every key
    under it hashes to one slot. A prefix that has a tag already keeps it."""
    start = prefix.find("{")
    if start >= 0 and prefix.find("}", start + 1) > start + 1:  # Redis's rule: not "{}"
        return prefix
    return "{" + prefix + "}"


def is_cluster(client):
    """Whether the Redis server ``client`` speaks to is a node of a Redis Cluster."""
    try:
        return bool(client.info("cluster").get("cluster_enabled"))
    except redis.ResponseError:  # INFO refused (ACLs, renamed commands): a single server
        return False


def _int(value, default=0):
    return default if value in (None, "") else int(value)


def _json(value):
    return None if value in (None, "") else json.loads(value)


def _claimed(row):
    """A ``ClaimedJob`` from the claim script's fields (strings). A job whose
    fields cannot be read (arguments it cannot decode, a field changed by hand)
    comes back with its ``problem`` set, rather than failing the whole claim."""
    job_id, func, args, kwargs, queue, priority, run_at, attempts, max_attempts, *rest = row
    timeout, signature, traceparent = rest
    args, kwargs, problem = read_arguments(args, kwargs)
    try:
        return ClaimedJob(
            id=int(job_id),
            func=func,
            args=args,
            kwargs=kwargs,
            queue=queue,
            priority=int(priority),
            run_at=from_us(run_at),
            attempts=int(attempts),
            max_attempts=int(max_attempts),
            timeout=float(timeout) if timeout else None,
            signature=signature or "",
            traceparent=traceparent or None,
            problem=problem,
        )
    except (*DECODE_ERRORS, OverflowError) as exc:
        return ClaimedJob(
            id=int(job_id),
            func=func,
            args=None,
            kwargs=None,
            queue=queue,
            priority=0,
            run_at=from_us(0),  # any time: claim order sorts by it
            attempts=_int_or(attempts, 1),
            max_attempts=_int_or(max_attempts, 1),
            problem="cannot read the job: " + one_line(exc),
        )


def _int_or(value, default):
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


class RedisStore(Store):
    """Jobs in one Redis database, under a key prefix."""

    supports_listen = True
    supports_live_workers = True
    supports_schedules = True
    enqueues_in_transaction = False
    # Pub/sub wakes workers for due jobs; polling only backs it up.
    default_poll_interval = 2.0

    def __init__(
        self,
        url="redis://127.0.0.1:6379/0",
        *,
        prefix="pgjobs",
        lease_seconds=20.0,
        result_ttl=7 * 24 * 3600.0,
        keep_succeeded=True,
        connection_options=None,
    ):
        super().__init__(lease_seconds=lease_seconds)
        self.url = url
        self.prefix = prefix
        self.result_ttl = result_ttl  # None: finished jobs stay until pruned
        # False: a job that succeeds is deleted at once instead of kept with its result.
        self.keep_succeeded = keep_succeeded
        self._options = dict(connection_options or {})
        self._options["decode_responses"] = True
        self._lease_us = int(lease_seconds * 1e6)
        self._ttl_us = int(result_ttl * 1e6) if result_ttl else 0
        # Set at the first command (_connect), when it is known whether the URL
        # names a cluster node: the client, the prefix of every key, the scripts.
        self._client = None
        self.cluster = None
        self.key_prefix = None
        self._script_keys = None
        self._scripts = None
        self._connect_lock = threading.Lock()
        self._pubsub = None
        self._listen_queues = None
        self._listener_failed_at = None

    def _connect(self):
        """Find out whether the URL names a cluster node, and build the client,
        the key prefix (hash-tagged on a cluster) and the scripts to match. An
        unreachable server raises, and the next command tries again."""
        with self._connect_lock:
            if self._client is not None:
                return
            single = redis.Redis.from_url(self.url, **self._options)
            pool = single.connection_pool
            db = pool.connection_kwargs.get("db") or 0
            # A cluster node refuses SELECT: ask on database 0 whatever the URL says.
            probe = single
            if db:
                probe = redis.Redis(
                    connection_pool=type(pool)(
                        connection_class=pool.connection_class,
                        **{**pool.connection_kwargs, "db": 0},
                    )
                )
            try:
                cluster = is_cluster(probe)
            finally:
                if probe is not single:
                    probe.connection_pool.disconnect()
            if cluster:
                single.close()
                if db:
                    raise InvalidBackend(
                        f"OPTIONS['URL'] names database {db}, but a Redis Cluster has only "
                        f"database 0: end the URL with /0 ({self.url})"
                    )
                client = redis.RedisCluster.from_url(self.url, **self._options)
                self.cluster, self.key_prefix = True, hash_tagged(self.prefix)
            else:
                client, self.cluster, self.key_prefix = single, False, self.prefix
            self._script_keys = [self.key_prefix]
            self._scripts = {
                name: client.register_script(lua(*parts)) for name, parts in SCRIPTS.items()
            }
            self._client = client

    @property
    def client(self):
        """The redis-py client: ``redis.Redis``, or ``redis.RedisCluster`` on a cluster."""
        if self._client is None:
            self._connect()
        return self._client

    def _run(self, script, *args, keys=None):
        """Run a script: ARGV is the key prefix ``P`` (hash-tagged on a cluster),
        then ``args``. KEYS is ``P`` itself, or ``keys`` when the script declares
        keys of its own: each made by ``key()``, so that all share the slot that
        routes the call. Every script call goes through here."""
        if self._scripts is None:
            self._connect()
        return self._scripts[script](
            keys=self._script_keys if keys is None else keys, args=[self.key_prefix, *args]
        )

    def key(self, *parts):
        """The name of one of this store's keys: the prefix (hash-tagged on a
        cluster), then ``parts``, joined by ``:``. Every key goes through here
        (and every script's through ``P``), so all share the site's slot."""
        if self.key_prefix is None:
            self._connect()
        return ":".join([self.key_prefix, *map(str, parts)])

    def describe(self):
        try:
            client = self.client
        except (*REDIS_ERRORS, InvalidBackend) as exc:
            # Down at start (workers wait for it), or a URL a cluster refuses (the
            # worker says so next, through setup_problem): say where it is looked for.
            where = redis.connection.parse_url(self.url)
            where = where.get("path") or f"{where.get('host')}:{where.get('port', 6379)}"
            state = "not reachable yet" if isinstance(exc, REDIS_ERRORS) else "refused"
            return f"redis {where} ({state}), key prefix {self.prefix!r}"
        if self.cluster:
            masters = len(client.get_primaries())
            return (
                f"redis cluster of {masters} masters (via {self.url}), key prefix "
                f"{self.key_prefix!r} (one slot), woken by pub/sub"
            )
        kwargs = client.connection_pool.connection_kwargs
        where = kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}"
        return (
            f"redis {where} db {kwargs.get('db', 0)}, key prefix {self.prefix!r}, woken by pub/sub"
        )

    # -- producers -----------------------------------------------------------------

    @staticmethod
    def _push_args(spec, job_id=""):
        return [
            job_id,
            spec.func,
            args_json(spec),
            dumps(spec.kwargs),
            spec.queue,
            spec.priority,
            "" if spec.run_at is None else to_us(spec.run_at),
            spec.max_attempts,
            "" if spec.timeout is None else repr(float(spec.timeout)),
            spec.unique_key or "",
            spec.signature,
            "1" if spec.unique_key else "0",
            "" if spec.after is None else int(spec.after),
            spec.traceparent or "",
        ]

    def push(self, specs, ids=None):
        """Write ``specs`` (with ``ids`` reserved earlier, or new ones); return
        their ``JobInfo``s. A job with a ``unique_key`` that a ready or running
        job holds is not written: that job's ``JobInfo`` stands in for it."""
        if not specs:
            return []
        try:
            reply = self._run("push", *self._jobs_args(specs, ids))
        except redis.ResponseError as exc:
            if "to run after" in str(exc):
                raise ValueError(str(exc)) from None
            raise
        return self._pushed(specs, reply)

    def _jobs_args(self, specs, ids=None):
        args = []
        for n, spec in enumerate(specs):
            args += self._push_args(spec, "" if ids is None else ids[n])
        return args

    def _pushed(self, specs, reply):
        return self._infos(specs, json.loads(reply))

    def _infos(self, specs, pushed):
        infos = []
        for spec, (job_id, existing, run_at, created_at, status) in zip(specs, pushed, strict=True):
            job_id = int(job_id)
            if existing == "1":
                infos.append(self.get(job_id))
            else:
                info = self.new_info(spec, job_id, run_at, created_at)
                info.status = status
                infos.append(info)
        return infos

    @staticmethod
    def new_info(spec, job_id, run_at=None, created_at=None):
        """The ``JobInfo`` of a job just written (or about to be, at commit)."""
        return JobInfo(
            id=job_id,
            func=spec.func,
            queue=spec.queue,
            status=records.READY,
            priority=spec.priority,
            run_at=from_us(run_at) if run_at is not None else spec.run_at,
            max_attempts=spec.max_attempts,
            created_at=from_us(created_at),
        )

    def reserve_ids(self, count):
        """``count`` new job ids, for jobs pushed later (at commit)."""
        last = int(self._run("reserve_ids", count))
        return list(range(last - count + 1, last + 1))

    def active_holder(self, unique_key):
        """The ready or running job holding ``unique_key``, or None."""
        job_id = self.client.get(self.key("unique", unique_key))
        if job_id is None:
            return None
        info = self.get(job_id)
        if info is None or info.status not in (records.READY, records.RUNNING):
            return None
        return info

    def enqueue(self, spec):
        return self.push([spec])[0]

    def enqueue_many(self, specs, ids=None):
        return self.push(list(specs), ids)

    def enqueue_unique(self, spec):
        return self.push([spec])[0]

    def get(self, job_id):
        fields = self.client.hgetall(self.key("job", job_id))
        if not fields:
            return None
        info = JobInfo(
            id=int(job_id),
            func=fields["func"],
            queue=fields["queue"],
            status=fields["status"],
            priority=int(fields["priority"]),
            run_at=from_us(fields["run_at"]),
            attempts=_int(fields.get("attempts")),
            max_attempts=_int(fields.get("max_attempts"), 3),
            created_at=from_us(fields.get("created_at")),
            started_at=from_us(fields.get("started_at")),
            finished_at=from_us(fields.get("finished_at")),
            result=_json(fields.get("result")),
            error=_json(fields.get("error")),
            worker_id=fields.get("worker_id") or None,
        )
        args, kwargs, _ = read_arguments(fields.get("args"), fields.get("kwargs"))
        info.args, info.kwargs = args, kwargs
        return info

    def cancel(self, job_id):
        cancelled, _ = self.cancel_many([job_id])
        return bool(cancelled)

    def cancel_many(self, job_ids):
        job_ids = [str(int(job_id)) for job_id in job_ids]
        if not job_ids:
            return 0, 0
        cancelled, asked = self._run("cancel", self._ttl_us, *job_ids)
        return cancelled, asked

    def requeue(self, job_ids):
        job_ids = [str(int(job_id)) for job_id in job_ids]
        return self._run("requeue", *job_ids) if job_ids else 0

    def run_now(self, job_ids):
        job_ids = [str(int(job_id)) for job_id in job_ids]
        return self._run("run_now", *job_ids) if job_ids else 0

    # -- batches and chains ------------------------------------------------------------

    def enqueue_batch(
        self, specs, on_finish=None, on_success=None, description="", *, batch_id=None, ids=None
    ):
        specs = list(specs)
        if not specs:
            raise ValueError("pgjobs: a batch needs at least one job")
        if any(spec.after is not None or spec.unique_key is not None for spec in specs):
            raise ValueError("pgjobs: a batch's jobs take neither after nor unique_key")
        everything = [*specs, *(spec for spec in (on_finish, on_success) if spec is not None)]
        if ids is not None and len(ids) != len(everything):
            raise ValueError(f"{len(everything)} jobs but {len(ids)} ids")
        reply = self._run(
            "push_batch",
            "" if batch_id is None else int(batch_id),
            description,
            len(specs),
            "1" if on_finish is not None else "0",
            "1" if on_success is not None else "0",
            *self._jobs_args(everything, ids),
        )
        batch_id, created_at, pushed = json.loads(reply)
        infos = self._infos(everything, pushed)
        callbacks = iter(info.id for info in infos[len(specs) :])
        counts = dict.fromkeys(records.STATUSES, 0)
        counts[records.READY] = len(specs)
        batch = BatchInfo(
            id=int(batch_id),
            total=len(specs),
            pending=len(specs),
            created_at=from_us(created_at),
            on_finish_id=None if on_finish is None else next(callbacks),
            on_success_id=None if on_success is None else next(callbacks),
            counts=counts,
            description=description,
        )
        return batch, infos[: len(specs)]

    def _batch_job_ids(self, batch_id):
        return [
            int(job_id) for job_id in self.client.lrange(self.key("batch", batch_id, "jobs"), 0, -1)
        ]

    def get_batch(self, batch_id):
        fields = self.client.hgetall(self.key("batch", batch_id))
        if not fields:
            return None
        counts = dict.fromkeys(records.STATUSES, 0)
        pipe = self.client.pipeline(transaction=False)
        for job_id in self._batch_job_ids(batch_id):
            pipe.hget(self.key("job", job_id), "status")
        for status in pipe.execute():
            if status in (records.READY, records.RUNNING):
                counts[status] += 1
        info = BatchInfo(
            id=int(batch_id),
            total=int(fields["total"]),
            pending=int(fields["pending"]),
            succeeded=int(fields["succeeded"]),
            failed=int(fields["failed"]),
            cancelled=int(fields["cancelled"]),
            created_at=from_us(fields.get("created_at")),
            finished_at=from_us(fields.get("finished_at")),
            on_finish_id=_int(fields.get("on_finish_id"), None),
            on_success_id=_int(fields.get("on_success_id"), None),
            description=fields.get("description", ""),
        )
        counts.update(succeeded=info.succeeded, failed=info.failed, cancelled=info.cancelled)
        info.counts = counts
        return info

    def batch_jobs(self, batch_id):
        infos = (self.get(job_id) for job_id in sorted(self._batch_job_ids(batch_id)))
        return [info for info in infos if info is not None]

    def cancel_batch(self, batch_id):
        return self.cancel_many(self._batch_job_ids(batch_id))

    def prune_batches(self, older_than, limit):
        """Nothing to do: a finished batch's keys expire with its jobs (``result_ttl``)."""
        return 0

    def previous_result(self, job_id):
        return _json(self.client.hget(self.key("job", job_id), "previous_result"))

    # -- workers -------------------------------------------------------------------

    def claim(self, queues, limit, worker_id):
        return self.finish_and_claim(worker_id, [], queues, limit)

    def _steered_claim(self, plan, limit, worker_id):
        """A claim from queues some of which are paused or limited: each limited
        queue by ``claim_limited.lua`` (counted and claimed in one step), then
        the other queues as usual."""
        claimed = []
        try:
            self._claim_steered(plan, limit, worker_id, claimed)
        except REDIS_ERRORS:
            if not claimed:
                raise
            # Those already claimed run under this worker now, and only a rescue
            # would find them if the claim raised: run them.
            logger.warning("pgjobs: a claim from steered queues failed part way", exc_info=True)
        claimed.sort(key=lambda job: -job.priority)
        return claimed

    def _claim_steered(self, plan, limit, worker_id, claimed):
        """``_steered_claim``'s calls, each one's jobs added to ``claimed`` as it
        returns."""
        defaults = self.controls.defaults()
        for limited in plan.limited:
            if len(claimed) >= limit:
                break
            default = defaults.get(limited.queue)
            concurrency = default.concurrency if default and default.concurrency else -1
            rate, period = (default.rate, default.period) if default and default.rate else (-1, 0)
            reply = self._run(
                "claim_limited",
                worker_id,
                self._lease_us,
                limit - len(claimed),
                limited.queue,
                concurrency,
                rate,
                int(period * 1e6),
                keys=[self.key("control", limited.queue)],
            )
            claimed += [_claimed(row) for row in json.loads(reply)]
        rest = limit - len(claimed)
        if rest > 0 and plan.others:
            include = plan.include
            if include is None:  # every queue but the steered ones
                excluded = set(plan.exclude)
                include = sorted(
                    q for q in self.client.smembers(self.key("queues")) if q not in excluded
                )
            if include:
                claimed += self.finish_and_claim(worker_id, [], include, rest)

    def finish(self, worker_id, results):
        if results:
            self.finish_and_claim(worker_id, results, None, 0)

    def finish_and_claim(self, worker_id, results, queues, limit):
        if limit > 0:
            plan = self.controls.plan(queues)
            if plan is not None:
                self.finish(worker_id, results)
                return self._steered_claim(plan, limit, worker_id)
        ttl_us = self._ttl_us if self.keep_succeeded else -1
        args = [worker_id, self._lease_us, max(0, limit), ttl_us, len(results)]
        for job_id, result in results:
            args += [job_id, dumps(result)]
        args += list(queues or ())
        rows = json.loads(self._run("finish_and_claim", *args))
        return [_claimed(row) for row in rows]

    def retry(self, worker_id, job_id, error, delay):
        delay_us = max(0, int(delay * 1e6))
        self._run("retry", worker_id, job_id, dumps(error), delay_us, self._ttl_us)

    def snooze(self, worker_id, job_id, delay):
        self._run("snooze", worker_id, job_id, max(0, int(delay * 1e6)), self._ttl_us)

    # -- queue control -----------------------------------------------------------------

    def queue_controls(self):
        queues = sorted(self.client.smembers(self.key("controls")))
        if not queues:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for queue in queues:
            pipe.hmget(self.key("control", queue), "paused", "concurrency", "rate", "period")
        controls = {}
        for queue, (paused, concurrency, rate, period) in zip(queues, pipe.execute(), strict=True):
            controls[queue] = records.QueueControl(
                queue,
                paused == "1",
                _int_or(concurrency, None),
                _int_or(rate, None),
                float(period) if period else None,
            )
        return controls

    def set_queue_control(self, queue, **changes):
        unknown = set(changes) - {"paused", "concurrency", "rate", "period"}
        if unknown:
            raise TypeError(f"unknown queue control field(s): {', '.join(sorted(unknown))}")
        key = self.key("control", queue)
        written = {}
        cleared = []
        for name, value in changes.items():
            if name == "paused":
                written[name] = "1" if value else "0"
            elif value is None:
                cleared.append(name)
            else:
                written[name] = repr(float(value)) if name == "period" else str(int(value))
        pipe = self.client.pipeline(transaction=True)
        pipe.sadd(self.key("controls"), queue)
        pipe.hset(key, "queue", queue, mapping=written)
        if cleared:
            pipe.hdel(key, *cleared)
        pipe.execute()
        self.controls.forget()
        return self.queue_controls()[queue]

    def fail(self, worker_id, job_id, error, status=records.FAILED):
        self._run("fail", worker_id, job_id, dumps(error), status, self._ttl_us)

    def heartbeat(self, worker_id, job_ids):
        return [
            int(job_id) for job_id in self._run("heartbeat", worker_id, self._lease_us, *job_ids)
        ]

    def rescue(self):
        stale_us = int(3 * self.lease_seconds * 1e6)
        count, ended = self._run("rescue", _WORKER_LOST, self._ttl_us, stale_us)
        return records.Rescued(count, [int(job_id) for job_id in ended])

    def release(self, worker_id, job_ids):
        if job_ids:
            self._run("release", worker_id, *job_ids)

    def seconds_until_due(self, queues):
        _, wait_us = self._run("due", *(queues or ()))
        return None if wait_us < 0 else wait_us / 1e6

    def count_due(self, queues):
        due, _ = self._run("due", *(queues or ()))
        return due

    # -- the worker registry and status --------------------------------------------------

    def register_worker(self, worker_id, hostname, pid, queues, concurrency):
        self._run(
            "register_worker", worker_id, hostname, pid, json.dumps(list(queues or [])), concurrency
        )

    def live_workers(self):
        # Heartbeats come every lease/3: a worker silent for half a lease is
        # likely gone (as the SQL stores judge it).
        seconds, microseconds = self._time()
        fresh = seconds * 1_000_000 + microseconds - self._lease_us // 2
        worker_ids = self.client.zrangebyscore(self.key("workers"), fresh, "+inf")
        pipe = self.client.pipeline()
        for worker_id in worker_ids:
            pipe.hget(self.key("worker", worker_id), "queues")
        return [
            (worker_id, json.loads(queues) or None)
            for worker_id, queues in zip(worker_ids, pipe.execute(), strict=True)
            if queues is not None
        ]

    def setup_problem(self, exc):
        """A URL that a cluster refuses (another database than 0) is fatal: waiting
        cannot fix it."""
        if isinstance(exc, InvalidBackend):
            return str(exc), True
        return None

    def _time(self):
        """Redis's clock, as the scripts read it: on a cluster, that of the node
        holding this store's slot."""
        if self.cluster:
            node = self.client.get_node_from_key(self.key_prefix)
            return self.client.time(target_nodes=node)
        return self.client.time()

    def unregister_worker(self, worker_id):
        pipe = self.client.pipeline()
        pipe.delete(self.key("worker", worker_id))
        pipe.zrem(self.key("workers"), worker_id)
        pipe.execute()

    def status(self):
        now_us, queue_rows, worker_rows = self._run("status", self._ttl_us)
        stale = now_us - 3 * self.lease_seconds * 1e6
        pipe = self.client.pipeline()
        for worker_id, _ in worker_rows:
            pipe.hgetall(self.key("worker", worker_id))
        workers = []
        for (worker_id, running), fields in zip(worker_rows, pipe.execute(), strict=True):
            if not fields or int(fields["heartbeat_at"]) < stale:
                continue
            workers.append(
                {
                    "id": worker_id,
                    "hostname": fields["hostname"],
                    "pid": int(fields["pid"]),
                    "queues": json.loads(fields["queues"]),
                    "concurrency": int(fields["concurrency"]),
                    "started_at": from_us(fields["started_at"]),
                    "heartbeat_at": from_us(fields["heartbeat_at"]),
                    "running": running,
                }
            )
        workers.sort(key=lambda w: w["started_at"])
        queues = []
        for queue, ready, running, succeeded, failed, cancelled, oldest in sorted(queue_rows):
            counts = {
                status: n
                for status, n in (
                    (records.READY, ready),
                    (records.RUNNING, running),
                    (records.SUCCEEDED, succeeded),
                    (records.FAILED, failed),
                    (records.CANCELLED, cancelled),
                )
                if n
            }
            if not counts:
                continue
            queues.append(
                {
                    "queue": queue,
                    "counts": counts,
                    "oldest_due_seconds": None if oldest < 0 else (now_us - oldest) / 1e6,
                }
            )
        return {"workers": workers, "queues": queues}

    def prune(self, older_than, statuses, batch_size=1000, dry_run=False):
        """Delete finished jobs that finished before now - ``older_than``, up to
        ``batch_size`` per queue and status in each script call."""
        age_us = older_than // MICROSECOND
        statuses = list(statuses)
        if dry_run:
            return self._run("prune", age_us, batch_size, "1", *statuses)
        deleted = 0
        while True:
            n = self._run("prune", age_us, batch_size, "0", *statuses)
            deleted += n
            if n == 0:
                return deleted

    def prune_batch(self, older_than, statuses, limit):
        """Delete jobs in ``statuses`` that finished more than ``older_than`` ago, up
        to ``limit`` per queue and status, in one script call; return how many.
        For the retentions shorter than the keys' own expiry (``RedisBackend``)."""
        return self._run("prune", older_than // MICROSECOND, limit, "0", *statuses)

    # -- history and figures ------------------------------------------------------------

    def job_attempts(self, job_id):
        job_id = int(job_id)
        pipe = self.client.pipeline()
        pipe.lrange(self.key("attempts", job_id), 0, -1)
        pipe.hmget(
            self.key("job", job_id), "status", "attempts", "started_at", "finished_at", "worker_id"
        )
        entries, (status, attempts, started_at, finished_at, worker_id) = pipe.execute()
        kept = []
        for entry in entries:
            attempt, started, finished, worker, outcome, error = json.loads(entry)
            kept.append(
                AttemptInfo(
                    attempt, from_us(started), from_us(finished), worker or None, outcome, error
                )
            )
        job = None
        if status is not None:
            job = (status, _int(attempts), from_us(started_at), from_us(finished_at),
                   worker_id or None)  # fmt: skip
        return with_current_attempt(kept, job)

    def queue_figures(self):
        now_us, rows = self._run("queue_figures")
        figures = {}
        for queue, ready, deferred, running, oldest in rows:
            if ready or deferred or running:
                figures[queue] = QueueFigures(
                    queue,
                    ready,
                    deferred,
                    running,
                    oldest_due_seconds=None if oldest < 0 else max(0.0, (now_us - oldest) / 1e6),
                )
        for minute in self.minute_figures(datetime.timedelta(hours=1)):
            failed = minute.outcomes[records.FAILED]
            if failed:
                if minute.queue not in figures:
                    figures[minute.queue] = QueueFigures(minute.queue)
                figures[minute.queue].failed_last_hour += failed
        return [figures[queue] for queue in sorted(figures)]

    def _now_us(self):
        seconds, microseconds = self._time()
        return seconds * 1_000_000 + microseconds

    def minute_figures(self, since):
        """The minutes of the last ``stats.COARSE_AFTER`` from their own hashes;
        before that, the ten-minute hashes (each at the start of its ten
        minutes), so that a day is some two hundred hashes, not 1,440."""
        now_us = self._now_us()
        since_us = now_us - since // MICROSECOND if isinstance(since, datetime.timedelta) else (
            to_us(since))  # fmt: skip
        minute, coarse = 60_000_000, stats.COARSE * 60_000_000
        boundary = now_us - stats.COARSE_AFTER // MICROSECOND
        boundary -= boundary % coarse
        keys = [
            (start, self.key("figures10", start))
            for start in range(since_us - since_us % coarse, boundary, coarse)
        ]
        first = max(since_us - since_us % minute, boundary)
        keys += [(m, self.key("figures", m)) for m in range(first, now_us + 1, minute)]
        pipe = self.client.pipeline()
        for _, key in keys:
            pipe.hgetall(key)
        rows = []
        for (start, _), fields in zip(keys, pipe.execute(), strict=True):
            when = from_us(start)
            for field, value in fields.items():
                queue, metric, bucket = field.rsplit("\x1f", 2)
                if bucket == "sum":
                    rows.append((when, queue, metric, 0, 0, float(value)))
                else:
                    rows.append((when, queue, metric, int(bucket), int(value), 0.0))
        return stats.figures_from_rows(rows)

    def prune_figures(self, older_than):
        """Figures expire by themselves after ``stats.KEEP``; a shorter retention
        deletes the hashes of the minutes before it, looking back ``stats.KEEP``."""
        if older_than >= stats.KEEP:
            return 0
        cutoff = self._now_us() - older_than // MICROSECOND
        first = cutoff - stats.KEEP // MICROSECOND
        keys = []
        for kind, step in (("figures", 60_000_000), ("figures10", stats.COARSE * 60_000_000)):
            end = cutoff - cutoff % step
            keys += [self.key(kind, m) for m in range(first - first % step, end, step)]
        return self.client.delete(*keys) if keys else 0

    # -- schedules -------------------------------------------------------------------

    def get_schedules(self, names):
        names = list(names)
        pipe = self.client.pipeline()
        for name in names:
            pipe.hmget(self.key("schedule", name), "last_tick", "last_run")
        return {
            name: ScheduleInfo(name, from_us(last_tick), from_us(last_run))
            for name, (last_tick, last_run) in zip(names, pipe.execute(), strict=True)
            if last_tick is not None
        }

    def create_schedule(self, name, last_tick):
        return bool(self._run("create_schedule", name, to_us(last_tick)))

    def advance_schedule(self, name, last_tick, new_last_tick, specs):
        specs = list(specs)
        reply = self._run(
            "advance_schedule",
            name,
            to_us(last_tick),
            to_us(new_last_tick),
            *self._jobs_args(specs),
        )
        return None if reply is None else self._pushed(specs, reply)

    # -- wake-ups --------------------------------------------------------------------

    def listen(self, queues):
        self._listen_queues = list(queues) if queues else None
        self._close_listener()

    def _subscribe(self):
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        if self._listen_queues is None:
            pubsub.psubscribe(self.key("wake", "*"))
        else:
            pubsub.subscribe(*(self.key("wake", q) for q in self._listen_queues))
        self._pubsub = pubsub

    def wait(self, timeout):
        """Block on the pub/sub connection until a job becomes due in one of
        our queues. A broken connection is made again (the caller is told it
        was woken then, since messages may have been missed meanwhile)."""
        if self._pubsub is None:
            return self._reconnect_listener(timeout)
        try:
            message = self._pubsub.get_message(timeout=timeout)
            if message is None:
                return False
            while self._pubsub.get_message(timeout=0) is not None:
                pass  # a burst of enqueues is one wake-up
            return True
        except REDIS_ERRORS as exc:
            logger.warning("pgjobs: lost the Redis pub/sub connection (%s); reconnecting", exc)
            self._close_listener()
            return self._reconnect_listener(timeout)

    def _reconnect_listener(self, timeout):
        try:
            self._subscribe()
        except REDIS_ERRORS as exc:
            self._close_listener()
            time.sleep(min(timeout, 1.0))
            if self._listener_failed_at is None:
                self._listener_failed_at = time.monotonic()
                logger.warning("pgjobs: cannot subscribe yet (%s); polling until it can", exc)
            return False
        if self._listener_failed_at is not None:
            logger.warning("pgjobs: Redis pub/sub connection restored")
            self._listener_failed_at = None
        return True

    def _close_listener(self):
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            try:
                pubsub.close()
            except REDIS_ERRORS:
                pass

    def close(self):
        # Idle connections only: another thread may be using one right now, and
        # redis-py reconnects a broken connection on its next command anyway.
        if self._client is None:
            return
        if self.cluster:
            pools = [
                node.redis_connection.connection_pool
                for node in self._client.get_nodes()
                if node.redis_connection is not None
            ]
        else:
            pools = [self._client.connection_pool]
        for pool in pools:
            pool.disconnect(inuse_connections=False)

    # -- tests and maintenance -------------------------------------------------------

    def flush(self):
        """Delete every key under this store's prefix (tests, resets); nothing else."""
        deleted = 0
        batch = []
        for key in self.client.scan_iter(match=self.key("*"), count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += self.client.unlink(*batch)
                batch = []
        if batch:
            deleted += self.client.unlink(*batch)
        return deleted
