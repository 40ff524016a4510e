"""Redis servers and sentinels of a test's own, on loopback ports: a primary, replicas, sentinels watching them.

Real `redis-server` and `redis-sentinel` processes (Debian packages `redis-server` and `redis-sentinel`); tests that
use them skip, naming what is missing, when either is not installed.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from redis import Redis
from redis.exceptions import RedisError

MASTER_NAME = "mymaster"

needs_sentinel = pytest.mark.skipif(
    shutil.which("redis-server") is None or shutil.which("redis-sentinel") is None,
    reason="needs redis-server and redis-sentinel (apt-get install redis-server redis-sentinel)",
)


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except RedisError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


class RedisProcesses:
    """Starts servers and sentinels in `tmp`; `stop()` ends every one still running."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self.argv: dict[int, list[str]] = {}

    def _start(self, port: int, argv: list[str], name: str) -> subprocess.Popen[bytes]:
        log = (self.tmp / f"{name}-{port}.log").open("ab")
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        self.processes[port] = process
        self.argv[port] = argv
        return process

    def server(self, replica_of: int | None = None, appendfsync: str = "everysec", streamed: bool = True) -> int:
        """A redis-server with AOF on (a replica of the server on port `replica_of`, if given); returns its port.

        A new replica is sent the primary's writes only after its first acknowledgement (up to a second after its
        sync); `streamed` waits for that, else a failover right away may promote a replica that has nothing."""
        port = free_port()
        data = self.tmp / f"redis-{port}"
        data.mkdir()
        argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data), "--save", ""]
        argv += ["--appendonly", "yes", "--appendfsync", appendfsync]
        argv += ["--repl-diskless-sync-delay", "0"]  # a new replica syncs at once, not after 5 s
        if replica_of is not None:
            argv += ["--replicaof", "127.0.0.1", str(replica_of)]
        self._start(port, argv, "redis")
        _wait(lambda: Redis(port=port).ping(), 30, f"redis-server on {port}")
        if replica_of is not None:
            # Up on both ends: the primary counts a replica (in WAIT, in its INFO) only once it has acknowledged.
            _wait(lambda: Redis(port=port).info("replication")["master_link_status"] == "up", 30, "replication")
            _wait(lambda: self._online_replica(replica_of, port), 30, "the primary to see its replica online")
            if streamed:
                writer = Redis(port=replica_of, single_connection_client=True)  # WAIT counts this connection's writes
                writer.delete("__replica_streamed__")
                writer.set("__replica_streamed__", 1)
                writer.delete("__replica_streamed__")
                assert writer.wait(1, 10_000) >= 1, "the replica acknowledged no write in 10 s"
                writer.close()
        return port

    @staticmethod
    def _online_replica(primary: int, port: int) -> bool:
        info = Redis(port=primary).info("replication")
        entries = [value for key, value in info.items() if key.startswith("slave") and isinstance(value, dict)]
        return any(entry["port"] == port and entry["state"] == "online" for entry in entries)

    def sentinel(
        self, primary: int, quorum: int = 2, down_after_ms: int = 1000, failover_timeout_ms: int = 3000
    ) -> int:
        """A redis-sentinel watching the primary on port `primary` as `mymaster`; returns its port."""
        port = free_port()
        config = self.tmp / f"sentinel-{port}.conf"  # sentinel rewrites its own config file: one per sentinel
        config.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {self.tmp}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {primary} {quorum}\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {down_after_ms}\n"
            f"sentinel failover-timeout {MASTER_NAME} {failover_timeout_ms}\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n"
        )
        self._start(port, ["redis-sentinel", str(config)], "sentinel")
        _wait(lambda: Redis(port=port).sentinel_get_master_addr_by_name(MASTER_NAME), 30, f"sentinel on {port}")
        return port

    def wait_replicas_known(self, sentinels: list[int], replicas: int, timeout: float = 30) -> None:
        """Until every sentinel lists `replicas` replicas and sees the other sentinels (ready to fail over)."""

        def ready(port: int) -> bool:
            client = Redis(port=port)
            [master] = [m for m in client.sentinel_masters().values() if m["name"] == MASTER_NAME]
            # A replica is a failover candidate once the sentinel is connected to it and has read its INFO.
            known = [r for r in client.sentinel_slaves(MASTER_NAME) if r["is_slave"] and not r["is_disconnected"]]
            good = [r for r in known if r["master-link-status"] == "ok" and not r["is_sdown"]]
            return len(good) >= replicas and master["num-other-sentinels"] >= len(sentinels) - 1

        _wait(lambda: all(ready(port) for port in sentinels), timeout, "the sentinels to see everyone")

    def primary_port(self, sentinel: int) -> int:
        """The primary's port as the sentinel on port `sentinel` names it now."""
        _host, port = Redis(port=sentinel).sentinel_get_master_addr_by_name(MASTER_NAME)
        return int(port)

    def kill(self, port: int) -> None:
        """SIGKILL the process on `port` (no shutdown, no final AOF write)."""
        process = self.processes[port]
        process.send_signal(signal.SIGKILL)
        process.wait()

    def restart(self, port: int) -> None:
        """Start the redis-server on `port` again, as it was started (same AOF directory), after `kill`."""
        self._start(port, self.argv[port], "redis")
        _wait(lambda: Redis(port=port).ping(), 30, f"redis-server on {port} again")

    def pause(self, port: int) -> None:
        """SIGSTOP: the process keeps its connections open and answers nothing."""
        self.processes[port].send_signal(signal.SIGSTOP)

    def resume(self, port: int) -> None:
        self.processes[port].send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """End every process (after the test: nothing of theirs is read again). SIGKILL, since a primary on SIGTERM
        waits up to `shutdown-timeout` (10 s) for replicas that are stopping too."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.kill()
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
