"""pgjobs on a Redis Cluster against one Redis server: no-op throughput with 2 worker
processes, measured turn about in one run; and a master failing over mid-run.

Starts its own servers (none of the machine's are touched): one redis-server, and a
cluster of three masters with a replica each (tests/redis_cluster.py), all with the
same flags (no persistence). Each measurement enqueues ``--jobs`` no-op jobs, starts
two ``manage.py pgjobs_worker --concurrency 4`` processes (benchmarks/projects,
``pgjobs_redis_bench``), and times from the first job's start to the last one's end,
from the job hashes (Redis's clock), as benchmarks/systems/redis_pgjobs.py does.
The workers start first and are held (SIGSTOP) while the jobs are enqueued, then let
go together, so start-up is not measured. CPU per job: the ``used_cpu_*`` that the
server (or the masters holding the slots used) spent meanwhile, and the workers' own
(``/proc/<pid>/stat``), which is steadier than jobs/s on a busy machine.

Variants:

- ``single``: one redis-server; both workers on queue ``default``.
- ``cluster``: the cluster, URL naming one node; both workers on ``default``.
- ``cluster-2q-1slot``: two queues under one prefix (one slot, one master), a worker each.
- ``cluster-2q-2slots``: the same two queues, each under a prefix of its own whose slot is
  on another master: what "one slot per queue" would give at best.
- ``single-baseline`` (with ``--baseline DIR``): ``single`` with workers running the
  pgjobs of another checkout, e.g. ``git archive main | tar -x -C /tmp/base``.

``--enqueue``: one-by-one enqueues from this process, one server against the cluster.

The failover run (``--failover``): ``--jobs`` jobs on the cluster, ``CLUSTER FAILOVER``
on the replica of the slot's master once a third of them ran; counts lost jobs (not
succeeded at the end) and repeated ones (attempts > 1). ``--kill`` instead SIGKILLs
that master and lets the cluster promote its replica (after the node timeout).

    python benchmarks/redis_cluster.py --repeat 3 --jobs 20000
    python benchmarks/redis_cluster.py --variants single,single-baseline --baseline /tmp/base
    python benchmarks/redis_cluster.py --failover --jobs 20000
"""

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECTS = ROOT / "benchmarks" / "projects"
sys.path[:0] = [str(ROOT), str(PROJECTS)]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pgjobs_redis_bench.settings")

from tests.redis_cluster import HOST, LocalRedisCluster, free_port  # noqa: E402

CONCURRENCY = 4


class SingleRedis:
    """One redis-server of our own, with the cluster nodes' flags but no cluster."""

    def __init__(self):
        self.port = free_port()
        self.dir = Path(f"/tmp/pgjobs-bench-redis-{self.port}")
        self.dir.mkdir()
        self.process = subprocess.Popen(
            [
                shutil.which("redis-server"), "--port", str(self.port), "--bind", HOST,
                "--dir", str(self.dir), "--save", "", "--appendonly", "no",
                "--logfile", str(self.dir / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        self.url = f"redis://{HOST}:{self.port}/0"
        import redis

        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(self.url).ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self):
        self.process.kill()
        self.process.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def backend(url, prefix):
    from pgjobs.backends import RedisBackend

    return RedisBackend(
        {"URL": url, "PREFIX": prefix, "DATABASE": None, "QUEUES": ["default", "q1", "q2"]}
    )


def start_worker(url, prefix, queue, root=ROOT):
    """A worker process running the ``pgjobs`` of checkout ``root``."""
    env = {
        **os.environ,
        "BENCH_PGJOBS_REDIS_URL": url,
        "BENCH_PGJOBS_REDIS_PREFIX": prefix,
        "PYTHONPATH": os.pathsep.join([str(root), str(PROJECTS)]),
    }
    return subprocess.Popen(
        [sys.executable, str(PROJECTS / "manage.py"), "pgjobs_worker", "-v", "0",
         "--concurrency", str(CONCURRENCY), "--queue", queue],
        env=env, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def redis_cpu(clients):
    total = 0.0
    for client in clients:
        info = client.info("cpu")
        total += info["used_cpu_user"] + info["used_cpu_sys"]
    return total


def counts(stores):
    done = unfinished = 0
    for store in stores:
        for queue in store.status()["queues"]:
            c = queue["counts"]
            done += c.get("succeeded", 0) + c.get("failed", 0) + c.get("cancelled", 0)
            unfinished += c.get("ready", 0) + c.get("running", 0)
    return done, unfinished


def span(store, ids):
    first = last = None
    for start in range(0, len(ids), 1000):
        pipe = store.client.pipeline()
        for job_id in ids[start : start + 1000]:
            pipe.hmget(store.key("job", job_id), "started_at", "finished_at")
        for started, finished in pipe.execute():
            first = int(started) if first is None else min(first, int(started))
            last = int(finished) if last is None else max(last, int(finished))
    return (last - first) / 1e6


def enqueue(be, queue, n):
    from pgjobs_bench.tasks import noop

    ids = []
    for start in range(0, n, 500):
        refs = be.enqueue_many([(noop, [], {})] * min(500, n - start), queue=queue)
        ids += [ref.id for ref in refs]
    return ids


def process_cpu(pids):
    """Seconds of CPU (user + system) the processes ``pids`` used so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def run(url, lanes, jobs, cpu_clients, on_the_way=None, timeout=120, root=ROOT):
    """``jobs`` no-op jobs split over ``lanes`` [(prefix, queue)], one worker per lane.

    The workers start first and are stopped (SIGSTOP) once registered, the jobs are
    enqueued, and the workers go on (SIGCONT) together: their start-up is neither in
    the span nor in the CPU counted. Returns (jobs/s, Redis CPU µs per job, worker CPU
    µs per job, {prefix: store}, ids per lane)."""
    backends = [backend(url, prefix) for prefix, _ in lanes]
    stores = {prefix: be.get_store() for be, (prefix, _) in zip(backends, lanes, strict=True)}
    for store in stores.values():
        store.flush()
    workers = [start_worker(url, prefix, queue, root) for prefix, queue in lanes]
    try:
        deadline = time.monotonic() + timeout

        def check():
            if time.monotonic() > deadline:
                raise SystemExit("timed out")
            if any(worker.poll() is not None for worker in workers):
                raise SystemExit("a worker exited (its error is above)")
            time.sleep(0.05)

        while sum(len(store.live_workers()) for store in stores.values()) < len(workers):
            check()
        time.sleep(0.5)  # past the first (empty) claim, waiting for a wake-up
        for worker in workers:
            worker.send_signal(signal.SIGSTOP)
        ids = [
            enqueue(be, queue, jobs // len(lanes))
            for be, (_, queue) in zip(backends, lanes, strict=True)
        ]
        total = sum(map(len, ids))
        worker_cpu = process_cpu(worker.pid for worker in workers)
        redis_cpu_before = redis_cpu(cpu_clients)
        for worker in workers:
            worker.send_signal(signal.SIGCONT)
        while True:
            try:
                done, unfinished = counts(stores.values())
            except Exception:  # a failover under way
                done, unfinished = -1, -1
            if on_the_way is not None and done >= total // 3:
                on_the_way()
                on_the_way = None
            if done == total or (done >= 0 and unfinished == 0 and on_the_way is None):
                break
            check()
        worker_cpu = process_cpu(worker.pid for worker in workers) - worker_cpu
        redis_used = redis_cpu(cpu_clients) - redis_cpu_before
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGCONT)
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(60)
    seconds = max(span(stores[p], lane) for (p, _), lane in zip(lanes, ids, strict=True) if lane)
    return total / seconds, redis_used / total * 1e6, worker_cpu / total * 1e6, stores, ids


def two_prefixes_on_two_masters(cluster):
    """Two prefixes whose hash-tagged slots two different masters hold."""
    first = "bench-a"
    master = cluster.master_of("{" + first + "}")
    for n in range(100):
        other = f"bench-b{n}"
        if cluster.master_of("{" + other + "}") != master:
            return first, other
    raise RuntimeError("no second prefix on another master")


def throughput(args):
    import redis

    single, cluster = SingleRedis(), LocalRedisCluster().start()
    try:
        a, b = two_prefixes_on_two_masters(cluster)

        def masters(*prefixes):
            ports = {cluster.master_of("{" + prefix + "}") for prefix in prefixes}
            return [redis.Redis(host=HOST, port=port) for port in ports]

        variants = {
            "single": (single.url, [("bench", "default")] * 2, [redis.Redis(port=single.port)]),
            "cluster": (cluster.url, [("bench", "default")] * 2, masters("bench")),
            "cluster-2q-1slot": (cluster.url, [("bench", "q1"), ("bench", "q2")], masters("bench")),
            "cluster-2q-2slots": (cluster.url, [(a, "q1"), (b, "q2")], masters(a, b)),
        }
        if args.baseline:
            variants["single-baseline"] = variants["single"]
        chosen = args.variants.split(",") if args.variants else list(variants)
        results = {name: [] for name in chosen}
        for round_no in range(args.repeat):
            for name in chosen:
                url, lanes, cpu_clients = variants[name]
                root = args.baseline if name.endswith("-baseline") else ROOT
                rate, cpu_us, worker_us, _, _ = run(url, lanes, args.jobs, cpu_clients, root=root)
                results[name].append((rate, cpu_us, worker_us))
                print(
                    f"round {round_no + 1} {name:18} {rate:8.0f} jobs/s  "
                    f"CPU per job: Redis {cpu_us:5.1f} µs, workers {worker_us:5.1f} µs",
                    flush=True,
                )
        print(f"\n{args.jobs} no-op jobs, 2 worker processes x concurrency {CONCURRENCY}, "
              f"median of {args.repeat} (alternating):")  # fmt: skip
        for name, runs in results.items():
            rates, cpus, workers = zip(*runs, strict=True)
            print(
                f"  {name:18} {statistics.median(rates):8.0f} jobs/s "
                f"(runs: {', '.join(f'{r:.0f}' for r in rates)}); CPU per job: "
                f"Redis {statistics.median(cpus):.1f} µs (the slots' masters), "
                f"workers {statistics.median(workers):.1f} µs"
            )
    finally:
        single.stop()
        cluster.stop()


def enqueues(args):
    """One-by-one enqueues (each a script call that publishes a wake-up, which a cluster
    sends to every node), alternating one server and the cluster."""
    from pgjobs_bench.tasks import noop

    single, cluster = SingleRedis(), LocalRedisCluster().start()
    try:
        results = {"single": [], "cluster": []}
        for _ in range(args.repeat):
            for name, url in (("single", single.url), ("cluster", cluster.url)):
                be = backend(url, "bench")
                be.get_store().flush()
                be.enqueue(noop, [], {})  # connected, scripts loaded
                started = time.perf_counter()
                for _ in range(args.jobs):
                    be.enqueue(noop, [], {})
                results[name].append(args.jobs / (time.perf_counter() - started))
                be.get_store().flush()
        print(f"{args.jobs} enqueues one by one, median of {args.repeat} (alternating):")
        for name, rates in results.items():
            print(
                f"  {name:8} {statistics.median(rates):7.0f} jobs/s "
                f"(runs: {', '.join(f'{r:.0f}' for r in rates)})"
            )
    finally:
        single.stop()
        cluster.stop()


def failover(args):
    import redis

    cluster = LocalRedisCluster().start()
    try:
        every_node = [redis.Redis(host=HOST, port=port) for port in cluster.ports]
        events = {}

        def fail_over():
            started = time.monotonic()
            if args.kill:
                master = cluster.master_of("{bench}")
                replica = cluster.replica_of(master)
                cluster.processes[cluster.ports.index(master)].kill()
                every_node[:] = [
                    c for c in every_node if c.connection_pool.connection_kwargs["port"] != master
                ]
                events["what"] = (
                    f"SIGKILL of master {master}; replica {replica} promoted by the cluster"
                )
            else:
                old, new = cluster.failover("{bench}")
                events["what"] = f"CLUSTER FAILOVER: {old} -> {new}"
            events["took"] = time.monotonic() - started

        rate, _, _, stores, lanes = run(
            cluster.url, [("bench", "default")] * 2, args.jobs, [], on_the_way=fail_over
        )
        store, ids = stores["bench"], [job_id for lane in lanes for job_id in lane]
        statuses, repeated = {}, 0
        for start in range(0, len(ids), 1000):
            pipe = store.client.pipeline()
            for job_id in ids[start : start + 1000]:
                pipe.hmget(store.key("job", job_id), "status", "attempts")
            for status, attempts in pipe.execute():
                statuses[status] = statuses.get(status, 0) + 1
                repeated += int(attempts or 0) > 1
        lost = len(ids) - statuses.get("succeeded", 0)
        print(f"{events.get('what')} (took {events.get('took', 0):.2f} s) after a third of "
              f"{len(ids)} jobs: {rate:.0f} jobs/s overall; statuses {statuses}; "
              f"lost {lost}; repeated {repeated}")  # fmt: skip
    finally:
        cluster.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--variants", help="comma-separated (default: all of them)")
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        help="a checkout of another commit: adds single-baseline, workers running its pgjobs",
    )
    parser.add_argument("--failover", action="store_true", help="the failover run instead")
    parser.add_argument("--enqueue", action="store_true", help="one-by-one enqueues instead")
    parser.add_argument("--kill", action="store_true", help="with --failover: SIGKILL the master")
    args = parser.parse_args()
    import django

    django.setup()
    if args.failover:
        failover(args)
    elif args.enqueue:
        enqueues(args)
    else:
        throughput(args)


if __name__ == "__main__":
    main()
