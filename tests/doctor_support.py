"""Helpers for the doctor tests: a third-party-shaped app and a whole setup as TOML data."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from servers import HttpBackend, RedisServer, SshServer, free_port, wait_for_port

# An app not written for bgconsole: no /health, no version, a heavy home page that
# takes a while, and a plain access log line per request (with the User-Agent).
_THIRD_PARTY = r"""
import sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
PORT, DELAY, LOG = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
PAGE = (b"<html><body>" + b"<p>recent uploads</p>" * 14000 + b"</body></html>")
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def do_GET(self):
        with open(LOG, "a") as f:
            f.write(f'\x1b[32mGET\x1b[0m {self.path} "{self.headers.get("User-Agent")}"\n')
        if self.path != "/":
            body = b"Cannot GET " + self.path.encode()
            self.send_response(404)
        else:
            time.sleep(DELAY)
            body = PAGE
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
class S(ThreadingHTTPServer):
    daemon_threads = True
S(("127.0.0.1", PORT), H).serve_forever()
"""


@contextmanager
def third_party_app(tmp: Path, delay: float = 0.0) -> Iterator[tuple[str, Path]]:
    """(url, access log path) of a running third-party-shaped app; stopped on exit."""
    port = free_port()
    log = tmp / "access.log"
    log.touch()
    proc = subprocess.Popen(
        [sys.executable, "-c", _THIRD_PARTY, str(port), str(delay), str(log)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}", log
    finally:
        proc.terminate()
        proc.wait(timeout=5)


def setup_data(
    control: RedisServer,
    flags: RedisServer,
    ssh: SshServer,
    blue: HttpBackend,
    green: HttpBackend,
    workdir: Path,
    **host: Any,
) -> dict[str, Any]:
    """A whole setup: both colours on ``ssh`` (same sshd), each its own backend."""

    def env(backend: HttpBackend) -> dict[str, Any]:
        return {
            "url": backend.url,
            "version": "json:version",
            "ssh": ssh.target,
            "identity": str(ssh.client_key_path),
            "workdir": str(workdir),
            "deploy": ["git fetch --prune origin", "git checkout --force --detach origin/{ref}"],
            "logs": {"app": f"tail -F {workdir / 'app.log'}"},
            "flags_redis": flags.url,
            **host,
        }

    return {
        "console": {"name": "doctortest"},
        "control": {"redis": control.url, "timeout": 1.0},
        "router": {"kind": "builtin", "listen": "127.0.0.1:1"},
        "failover": {"interval": 0.1, "timeout": 0.4},
        "ssh": {
            "use_config": False,
            "use_agent": False,
            "known_hosts": str(ssh.known_hosts_path),
            "connect_timeout": 3.0,
        },
        "env": {"blue": env(blue), "green": env(green)},
        "flags": {"uploads": {"description": "uploads page"}},
    }
