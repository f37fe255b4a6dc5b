"""A real redis-server on a free loopback port, for tests and benchmarks; and a Redis
Sentinel group (primary, replica, three sentinels) of them.

No persistence (`--save '' --appendonly no`), like the deployments this project
recommends, so `restart()` really comes back empty, which is what the reconnect tests need.
Test modules wrap it in their own fixture:

    @pytest.fixture(scope="module")
    def redis_server() -> Iterator[RedisServer]:
        with RedisServer() as server:
            yield server
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pytest

from yahaml_voice.core.processes import kill_process, stop_process

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
START_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_tls_files(folder: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1: (ca, cert, key) PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "yahaml-voice test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = (folder / "ca.pem", folder / "redis.pem", folder / "redis.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def _ping(port: int, password: str | None, ca: Path | None = None) -> bool:
    """A raw PING, so the fixture does not depend on the code under test."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as raw:
            sock: socket.socket = raw
            if ca is not None:
                sock = ssl.create_default_context(cafile=str(ca)).wrap_socket(
                    raw, server_hostname="127.0.0.1"
                )
            if password:
                sock.sendall(f"AUTH {password}\r\n".encode())
                if not sock.recv(64).startswith(b"+OK"):
                    return False
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class Started:
    """`with X() as x`: start() on entry (close() if that fails), close() on exit."""

    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class RedisServer(Started):
    """One redis-server child process; `stop()` always reaps it."""

    def __init__(
        self,
        port: int | None = None,
        password: str | None = None,
        tls: bool = False,
        args: list[str] | None = None,
    ) -> None:
        if not Path(REDIS_SERVER).exists():
            pytest.skip("redis-server is not installed (apt-get install redis-server)")
        self.port = port or free_port()
        self.password = password
        self._dir = tempfile.mkdtemp(prefix="yv-redis-")
        # With tls, the port speaks only TLS (rediss://), verified against this CA.
        self.tls_files = write_tls_files(Path(self._dir)) if tls else None
        self.log_path = Path(self._dir) / "redis.log"
        # More redis-server arguments (e.g. --replicaof host port).
        self.args = list(args or [])
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.tls_files:
            return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={self.tls_files[0]}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        if self.tls_files:
            ca, cert, key = self.tls_files
            ports = ["--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", "no"]
            ports += ["--tls-ca-cert-file", str(ca), "--tls-cert-file", str(cert)]
            ports += ["--tls-key-file", str(key)]
        else:
            ports = ["--port", str(self.port)]
        args = [
            REDIS_SERVER,
            *ports,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self._dir,
            "--logfile",
            str(self.log_path),
            "--daemonize",
            "no",
        ]
        if self.password:
            args += ["--requirepass", self.password]
        args += self.args
        self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        ca = self.tls_files[0] if self.tls_files else None
        while not _ping(self.port, self.password, ca):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                log = (
                    self.log_path.read_text(errors="replace")[-2000:]
                    if self.log_path.exists()
                    else ""
                )
                self.stop()
                raise RuntimeError(f"redis-server on port {self.port} did not start:\n{log}")
            time.sleep(0.02)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        stop_process(proc, 5)

    def kill(self) -> None:
        """Die like a crash (SIGKILL): clients see their connections reset."""
        proc, self._proc = self._proc, None
        if proc is not None:
            kill_process(proc)

    def restart(self, down_for: float = 0.0, crash: bool = True) -> None:
        """Stop (by default SIGKILL) and start again on the same port, empty."""
        if crash:
            self.kill()
        else:
            self.stop()
        if down_for:
            time.sleep(down_for)
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


class SentinelGroup(Started):
    """A primary, its replica and three sentinels (`redis-server <conf> --sentinel`)
    watching them under `service`, all on free loopback ports; `close()` always reaps every
    process. Short timeouts, so that a failover takes a few seconds."""

    def __init__(
        self, service: str = "yv-test", down_after_ms: int = 1000, failover_timeout_ms: int = 3000
    ) -> None:
        self.service = service
        # A replica's first sync starts at once (diskless sync waits 5 s by default).
        fast = ["--repl-diskless-sync-delay", "0"]
        self.primary = RedisServer(args=fast)
        self.replica = RedisServer(args=[*fast, "--replicaof", "127.0.0.1", str(self.primary.port)])
        self.sentinel_ports = [free_port() for _ in range(3)]
        self._down_after_ms = down_after_ms
        self._failover_timeout_ms = failover_timeout_ms
        self._dir = Path(tempfile.mkdtemp(prefix="yv-sentinel-"))
        self._sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def addresses(self) -> list[str]:
        """The sentinels as `redis.sentinels` takes them."""
        return [f"127.0.0.1:{port}" for port in self.sentinel_ports]

    def _conf(self, port: int) -> Path:
        path = self._dir / f"sentinel-{port}.conf"
        name = self.service
        path.write_text(
            f"port {port}\nbind 127.0.0.1\ndaemonize no\ndir {self._dir}\n"
            f"logfile {self._dir / f'sentinel-{port}.log'}\n"
            f"sentinel monitor {name} 127.0.0.1 {self.primary.port} 2\n"
            f"sentinel down-after-milliseconds {name} {self._down_after_ms}\n"
            f"sentinel failover-timeout {name} {self._failover_timeout_ms}\n"
            f"sentinel parallel-syncs {name} 1\n"
        )
        return path

    def start(self) -> None:
        import redis

        self.primary.start()
        self.replica.start()
        # In sync before the sentinels start: their first INFO of the primary lists it.
        replica = redis.Redis(port=self.replica.port, socket_timeout=1)
        with replica:
            _wait(lambda: replica.info("replication")["master_link_status"] == "up", "replica sync")
        for port in self.sentinel_ports:
            conf = self._conf(port)
            self._sentinels.append(
                subprocess.Popen([REDIS_SERVER, str(conf), "--sentinel"], stdin=subprocess.DEVNULL)
            )
        for port in self.sentinel_ports:
            sentinel = redis.Redis(port=port, socket_timeout=1)
            with sentinel:
                # Every sentinel knows the replica and the two others: a failover can happen.
                def ready(sentinel: redis.Redis = sentinel) -> bool:
                    state: Any = sentinel.sentinel_master(self.service)
                    return bool(state["num-slaves"] >= 1 and state["num-other-sentinels"] >= 2)

                _wait(ready, f"sentinel {port}")

    def master_port(self) -> int | None:
        """The master's port as a majority of the live sentinels name it."""
        import redis

        ports: list[int] = []
        for port in self.sentinel_ports:
            try:
                with redis.Redis(port=port, socket_timeout=1) as sentinel:
                    address = sentinel.sentinel_get_master_addr_by_name(self.service)
            except redis.RedisError:
                continue
            if address:
                ports.append(int(address[1]))
        best = max(set(ports), key=ports.count, default=None)
        return best if best is not None and ports.count(best) >= 2 else None

    def failover(self) -> None:
        """A planned failover (`SENTINEL FAILOVER`): the replica is promoted and the old
        primary, still running, is demoted to its replica."""
        import redis

        with redis.Redis(port=self.sentinel_ports[0], socket_timeout=5) as sentinel:
            sentinel.sentinel_failover(self.service)

    def promoted(self) -> bool:
        """The sentinels name the replica as master and it has taken the role."""
        import redis

        if self.master_port() != self.replica.port:
            return False
        with redis.Redis(port=self.replica.port, socket_timeout=1) as replica:
            return bool(replica.info("replication")["role"] == "master")

    def sentinel_logs(self) -> str:
        return "\n".join(
            log.read_text(errors="replace")[-3000:] for log in sorted(self._dir.glob("*.log"))
        )

    def close(self) -> None:
        for proc in self._sentinels:
            kill_process(proc)
        self._sentinels = []
        # SIGKILL: a master with replicas would wait for them on SIGTERM (shutdown-timeout).
        for server in (self.replica, self.primary):
            server.kill()
            server.close()
        shutil.rmtree(self._dir, ignore_errors=True)


def _wait(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            if condition():
                return
        except OSError:
            pass
        except Exception as exc:  # redis-py errors while the process comes up
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: {exc}") from exc
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready in {START_TIMEOUT}s")
        time.sleep(0.05)
