"""A real Redis Sentinel setup on loopback: a primary, a replica and three sentinels."""

from __future__ import annotations

import socket
import time

from servers import HOST, ManagedServer, RedisServer, free_port

MASTER = "bgcontrol"


class RedisReplica(RedisServer):
    """A redis-server replicating ``primary_port`` (no persistence)."""

    name = "redis-replica"

    def __init__(self, primary_port: int) -> None:
        super().__init__()
        self.primary_port = primary_port

    def _argv(self) -> list[str]:
        return [*super()._argv(), "--replicaof", HOST, str(self.primary_port)]


class SentinelServer(ManagedServer):
    """``redis-server sentinel.conf --sentinel`` watching the primary as ``MASTER``."""

    name = "sentinel"

    def __init__(self, primary_port: int, binary: str) -> None:
        super().__init__()
        self.port = free_port()
        self.primary_port = primary_port
        self.binary = binary
        self.conf = self.dir / "sentinel.conf"

    def _prepare(self) -> None:
        # The sentinel rewrites its file (it records what it learns): write it only once.
        if self.conf.exists():
            return
        self.conf.write_text(
            f"port {self.port}\nbind {HOST}\ndir {self.dir}\n"
            f"sentinel monitor {MASTER} {HOST} {self.primary_port} 2\n"
            f"sentinel down-after-milliseconds {MASTER} 1000\n"
            f"sentinel failover-timeout {MASTER} 5000\n"
            f"sentinel parallel-syncs {MASTER} 1\n"
        )

    def _argv(self) -> list[str]:
        return [self.binary, str(self.conf), "--sentinel"]

    def _ready(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def master_port(self) -> int | None:
        """The primary's port as this sentinel sees it now."""
        try:
            with socket.create_connection((HOST, self.port), timeout=0.5) as sock:
                command = f"SENTINEL get-master-addr-by-name {MASTER}\r\n"
                sock.sendall(command.encode())
                reply = sock.recv(256).decode()
        except OSError:
            return None
        lines = reply.split("\r\n")
        return int(lines[4]) if len(lines) > 4 and lines[4].isdigit() else None


class SentinelSetup:
    """Primary + replica + three sentinels; closes everything it started."""

    def __init__(self) -> None:
        self.primary = RedisServer().start()
        self.replica = RedisReplica(self.primary.port).start()
        self.sentinels = [SentinelServer(self.primary.port, self.primary.binary) for _ in range(3)]
        for sentinel in self.sentinels:
            sentinel.start()
        self.wait_synced()

    @property
    def addresses(self) -> list[str]:
        return [f"{HOST}:{s.port}" for s in self.sentinels]

    def wait_synced(self, timeout: float = 10.0) -> None:
        """Until the replica is connected and the sentinels know it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _info(self.replica.port, "master_link_status:up") and all(
                s.master_port() == self.primary.port for s in self.sentinels
            ):
                time.sleep(1.0)  # sentinels discover the replica through the primary
                return
            time.sleep(0.05)
        raise RuntimeError("the replica or the sentinels did not come up")

    def wait_promoted(self, timeout: float = 15.0) -> int:
        """Until a majority of sentinels name the replica as the primary; its port."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ports = [s.master_port() for s in self.sentinels]
            if ports.count(self.replica.port) >= 2:
                return self.replica.port
            time.sleep(0.05)
        raise RuntimeError(f"no failover within {timeout} s")

    def close(self) -> None:
        for server in [*self.sentinels, self.replica, self.primary]:
            server.close()


def _info(port: int, needle: str) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5) as sock:
            sock.sendall(b"INFO replication\r\n")
            time.sleep(0.02)
            return needle in sock.recv(4096).decode(errors="replace")
    except OSError:
        return False


__all__ = ["MASTER", "SentinelSetup"]
