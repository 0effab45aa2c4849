"""A real Redis Cluster of our own: ``redis-server --cluster-enabled yes`` nodes on
free local ports in a temporary directory, joined by ``redis-cli --cluster create``.

Used by the tests' ``redis_cluster`` fixture (tests/conftest.py, once per session)
and by ``benchmarks/redis_cluster.py``. Every node is a child process of ours,
killed by ``stop()``; nothing is left behind.
"""

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

HOST = "127.0.0.1"


def free_port():
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def missing_binaries():
    """The binaries a cluster needs that are not on PATH."""
    return [name for name in ("redis-server", "redis-cli") if shutil.which(name) is None]


class RedisClusterError(RuntimeError):
    """The cluster would not start or fail over in time (the nodes' logs say why)."""


class LocalRedisCluster:
    """``masters`` masters with ``replicas`` replica(s) each, all on 127.0.0.1."""

    def __init__(self, masters=3, replicas=1, node_timeout_ms=2000):
        self.masters = masters
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.dir = Path(tempfile.mkdtemp(prefix="pgjobs-redis-cluster-"))
        self.ports = []
        self.processes = []

    @property
    def url(self):
        """A URL naming one node (the first): what a user puts in ``OPTIONS['URL']``."""
        return f"redis://{HOST}:{self.ports[0]}/0"

    def start(self, timeout=30.0):
        try:
            for _ in range(self.masters * (1 + self.replicas)):
                self._start_node()
            deadline = time.monotonic() + timeout
            for port in self.ports:
                self._wait(lambda p=port: self._ask(p, "PING") == "PONG", deadline, "PING")
            subprocess.run(
                [
                    shutil.which("redis-cli"),
                    "--cluster", "create", *(f"{HOST}:{port}" for port in self.ports),
                    "--cluster-replicas", str(self.replicas), "--cluster-yes",
                ],
                check=True, capture_output=True, timeout=timeout,
            )  # fmt: skip
            for port in self.ports:
                self._wait(lambda p=port: self._settled(p), deadline, "the cluster to settle")
        except BaseException:
            self.stop()
            raise
        return self

    def _start_node(self):
        port, bus_port = free_port(), free_port()
        node_dir = self.dir / str(port)
        node_dir.mkdir()
        process = subprocess.Popen(
            [
                shutil.which("redis-server"),
                "--port", str(port), "--cluster-port", str(bus_port), "--bind", HOST,
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(self.node_timeout_ms),
                "--dir", str(node_dir), "--save", "", "--appendonly", "no",
                "--logfile", str(node_dir / "redis.log"),
            ],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.ports.append(port)
        self.processes.append(process)

    def _settled(self, port):
        info = self._ask(port, "CLUSTER", "INFO")
        if "cluster_state:ok" not in info or "cluster_slots_ok:16384" not in info:
            return False
        replication = self.info(port, "replication")
        return "role:master" in replication or "master_link_status:up" in replication

    def _wait(self, condition, deadline, what):
        while True:
            try:
                if condition():
                    return
            except OSError:
                pass
            if time.monotonic() >= deadline:
                raise RedisClusterError(f"timed out waiting for {what} (logs in {self.dir})")
            time.sleep(0.1)

    @staticmethod
    def _ask(port, *command):
        result = subprocess.run(
            [shutil.which("redis-cli"), "-h", HOST, "-p", str(port), *command],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
        return result.stdout.strip()

    def info(self, port, section):
        return self._ask(port, "INFO", section)

    def master_of(self, key):
        """The port of the master that holds ``key``'s slot now."""
        slot = int(self._ask(self.ports[0], "CLUSTER", "KEYSLOT", key))
        for line in self._ask(self.ports[0], "CLUSTER", "NODES").splitlines():
            # <id> <ip:port@bus> <flags> <master> <ping> <pong> <epoch> <link> <slots>...
            fields = line.split()
            flags = fields[2].split(",")
            if "master" not in flags or "fail" in flags:
                continue
            for part in fields[8:]:
                low, _, high = part.partition("-")
                if low.isdigit() and int(low) <= slot <= int(high or low):
                    return int(fields[1].split("@")[0].rsplit(":", 1)[1])
        raise RedisClusterError(f"no master holds the slot of {key!r}")

    def replica_of(self, master_port):
        """The port of a replica of the master on ``master_port``."""
        info = self.info(master_port, "replication")
        for line in info.splitlines():
            if line.startswith("slave0:"):
                fields = dict(part.split("=", 1) for part in line.split(":", 1)[1].split(","))
                return int(fields["port"])
        raise RedisClusterError(f"the master on port {master_port} has no replica")

    def failover(self, key, timeout=20.0):
        """``CLUSTER FAILOVER`` on a replica of the master holding ``key``'s slot;
        wait until that replica is the master. Returns (old master port, new)."""
        old = self.master_of(key)
        new = self.replica_of(old)
        deadline = time.monotonic() + timeout
        self._wait(
            lambda: "master_link_status:up" in self.info(new, "replication"),
            deadline,
            "the replica to be in sync",
        )
        reply = self._ask(new, "CLUSTER", "FAILOVER")
        if reply != "OK":
            raise RedisClusterError(f"CLUSTER FAILOVER on port {new} answered {reply!r}")
        self._wait(lambda: "role:master" in self.info(new, "replication"), deadline, "failover")
        self._wait(lambda: self.master_of(key) == new, deadline, "the new master to be known")
        return old, new

    def stop(self):
        for process in self.processes:
            if process.poll() is None:
                process.kill()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                pass
        self.processes = []
        shutil.rmtree(self.dir, ignore_errors=True)
