"""The sandbox's sample web app: colour, version, recent uploads behind a flag, health.

One process per host, stdlib HTTP server plus redis-py's sync client:

- ``GET /`` a page with the host's colour and version; the "recent uploads" section (rows
  of the host's own SQLite database) shows only while the ``uploads`` flag is ON in the
  colour's Redis, and a banner while the ``banner`` flag is ON;
- ``POST /uploads`` adds a row (form field or JSON ``name``); ``GET /uploads`` lists rows;
- ``GET /health`` ``{"status": "ok", "colour": ..., "version": ...}``.

The release (version, good or bad) is read from ``current/release.json`` on every request,
so a deploy takes effect at once without a restart. A bad release answers 500 on every
path, ``/health`` included, which is what lets health checks see it. Every response
carries ``X-BG-Env`` and ``X-Version``; each request is a line in ``log/access.log``.

Run: ``python -m console.demo.sample_app --dir HOSTDIR --port P --colour blue --redis URL``.
"""

from __future__ import annotations

import argparse
import html
import json
import logging
import signal
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import parse_qs

import redis
from redis.exceptions import RedisError

from console.demo.releases import Release, read_current

_log = logging.getLogger("sample_app")
_RECENT = 10
_MAX_BODY = 64 * 1024
SCHEMA = """
CREATE TABLE IF NOT EXISTS uploads (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    colour TEXT NOT NULL,
    created_at REAL NOT NULL
)
"""


# Each colour numbers its uploads from its own base, so rows written on green never take
# an id blue already uses: a rows migration then merges the two without conflicts. (Real
# applications get the same from UUIDs or per-node id ranges; sequential ids starting at 1
# on both colours are the classic way to make data migration painful.)
ID_BASE = {"blue": 0, "green": 1_000_000}


def init_db(path: Path, colour: str = "blue") -> None:
    """Create the database and its table (idempotent)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as db:
        # WAL lets a migration read a consistent snapshot while the app keeps writing.
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(SCHEMA)
        seeded = db.execute("SELECT 1 FROM sqlite_sequence WHERE name = 'uploads'").fetchone()
        if not seeded and ID_BASE.get(colour, 0):
            db.execute(
                "INSERT INTO sqlite_sequence(name, seq) VALUES ('uploads', ?)",
                (ID_BASE[colour],),
            )


@dataclass(frozen=True, slots=True)
class AppSettings:
    """What one app process serves."""

    host_dir: Path
    colour: str
    redis_url: str
    flag_prefix: str = "flag:"

    @property
    def db_path(self) -> Path:
        """The host's SQLite database."""
        return self.host_dir / "data" / "app.db"


class App:
    """The app's state shared by the request threads: settings, Redis client, logs."""

    def __init__(self, settings: AppSettings) -> None:
        self.settings = settings
        # Short timeouts: a Redis that is down turns flags off; it must not stall pages.
        self.redis = redis.Redis.from_url(
            settings.redis_url,
            decode_responses=True,
            socket_timeout=0.3,
            socket_connect_timeout=0.3,
        )
        self._access_lock = threading.Lock()
        self._access = (settings.host_dir / "log" / "access.log").open("a", encoding="utf-8")
        self._last_version: str | None = None

    def close(self) -> None:
        """Release the log file and the Redis pool."""
        self._access.close()
        self.redis.close()

    def release(self) -> Release | None:
        """The installed release, logging when it changed since the last request."""
        release = read_current(self.settings.host_dir)
        version = release.version if release else None
        if version != self._last_version:
            self._last_version = version
            behaviour = release.behaviour if release else "-"
            _log.info("release now %s (%s)", version, behaviour)
        return release

    def flag(self, name: str) -> bool:
        """Whether a flag is ON in this colour's Redis; unreadable counts as off."""
        try:
            return self.redis.get(self.settings.flag_prefix + name) == "ON"
        except RedisError as e:
            _log.warning("flag %s unreadable, treated as OFF: %s", name, e)
            return False

    @contextmanager
    def db(self) -> Iterator[sqlite3.Connection]:
        """A connection per request: sqlite3 connections are not shared across threads."""
        connection = sqlite3.connect(self.settings.db_path, timeout=5.0)
        try:
            with connection:
                yield connection
        finally:
            connection.close()

    def recent(self) -> list[tuple[int, str, str, float]]:
        """The latest uploads, newest first."""
        with self.db() as db:
            rows = db.execute(
                "SELECT id, name, colour, created_at FROM uploads ORDER BY id DESC LIMIT ?",
                (_RECENT,),
            ).fetchall()
        return [(int(r[0]), str(r[1]), str(r[2]), float(r[3])) for r in rows]

    def add_upload(self, name: str) -> int:
        """Insert a row; return its id."""
        with self.db() as db:
            cursor = db.execute(
                "INSERT INTO uploads (name, colour, created_at) VALUES (?, ?, ?)",
                (name, self.settings.colour, time.time()),
            )
            return int(cursor.lastrowid or 0)

    def access(self, line: str) -> None:
        """One access-log line, flushed so ``tail -F`` sees it at once."""
        with self._access_lock:
            self._access.write(line + "\n")
            self._access.flush()


def render_page(app: App, release: Release) -> str:
    """The home page."""
    colour = html.escape(app.settings.colour)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>demo app - {colour}</title></head>",
        f"<body style='border-top: 12px solid {colour}; font-family: sans-serif'>",
        f"<h1>Hello from <span id='colour'>{colour}</span></h1>",
        f"<p>version <span id='version'>{html.escape(release.version)}</span></p>",
    ]
    if app.flag("banner"):
        parts.append("<p id='banner'><strong>New look!</strong> (flag banner is ON)</p>")
    parts.append(
        "<form method='post' action='/uploads'><input name='name' placeholder='file name'>"
        "<button>Upload</button></form>"
    )
    if app.flag("uploads"):
        parts.append("<section id='uploads'><h2>Recent uploads</h2><ul>")
        for row_id, name, row_colour, _ in app.recent():
            parts.append(
                f"<li>#{row_id} {html.escape(name)} <small>({html.escape(row_colour)})</small></li>"
            )
        parts.append("</ul></section>")
    parts.append("</body></html>")
    return "\n".join(parts)


class Handler(BaseHTTPRequestHandler):
    """Routes requests to the app; one instance per request, in its own thread."""

    server: AppServer
    protocol_version = "HTTP/1.1"

    @property
    def app(self) -> App:
        return self.server.app

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr log; :meth:`_send` writes the access log instead."""

    def _send(self, status: int, body: str, content_type: str, version: str = "-") -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-BG-Env", self.app.settings.colour)
        self.send_header("X-Version", version)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        elapsed_ms = (time.perf_counter() - self._started) * 1000
        self.app.access(
            f"{self.client_address[0]} - - [{time.strftime('%d/%b/%Y:%H:%M:%S %z')}] "
            f'"{self.command} {self.path} {self.request_version}" {status} {len(data)} '
            f"{elapsed_ms:.1f}ms v={version}"
        )

    def _json(self, status: int, obj: object, version: str = "-") -> None:
        self._send(status, json.dumps(obj), "application/json", version)

    def _read_body(self) -> bytes:
        length = min(int(self.headers.get("Content-Length") or 0), _MAX_BODY)
        return self.rfile.read(length) if length > 0 else b""

    def _handle(self) -> None:
        self._started = time.perf_counter()
        body = self._read_body() if self.command == "POST" else b""
        release = self.app.release()
        if release is None:
            self._json(503, {"status": "error", "error": "no release installed"})
            return
        version = release.version
        if release.behaviour == "bad":
            # The version too: a health check can then say which release is broken.
            error = {"status": "error", "error": "release is broken", "version": version}
            self._json(500, error, version)
            return
        path = self.path.split("?", 1)[0]
        if path == "/health":
            status = {"status": "ok", "colour": self.app.settings.colour, "version": version}
            self._json(200, status, version)
        elif path == "/" and self.command in ("GET", "HEAD"):
            self._send(200, render_page(self.app, release), "text/html; charset=utf-8", version)
        elif path == "/uploads" and self.command == "GET":
            rows = [
                {"id": r[0], "name": r[1], "colour": r[2], "created_at": r[3]}
                for r in self.app.recent()
            ]
            self._json(200, rows, version)
        elif path == "/uploads" and self.command == "POST":
            self._upload(body, version)
        else:
            self._json(404, {"error": "not found"}, version)

    def _upload(self, body: bytes, version: str) -> None:
        form = self.headers.get("Content-Type", "").startswith("application/x-www-form")
        try:
            if form:
                name = parse_qs(body.decode())["name"][0]
            else:
                name = str(json.loads(body or b"{}")["name"])
        except (ValueError, KeyError, IndexError):
            self._json(400, {"error": "expected a 'name'"}, version)
            return
        row_id = self.app.add_upload(name.strip()[:200] or "unnamed")
        if form:
            # A browser form post lands back on the page (post/redirect/get).
            self.send_response(303)
            self.send_header("Location", "/")
            self.send_header("Content-Length", "0")
            self.send_header("X-BG-Env", self.app.settings.colour)
            self.send_header("X-Version", version)
            self.end_headers()
            return
        self._json(201, {"id": row_id, "name": name, "colour": self.app.settings.colour}, version)

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()


class AppServer(ThreadingHTTPServer):
    """The HTTP server, holding the app for its handlers."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: App, *, fd: int | None = None) -> None:
        self.app = app
        if fd is None:
            super().__init__(address, Handler)
            return
        # A listening socket bound by the sandbox (see DemoHost.listen): adopt it.
        super().__init__(address, Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = socket.socket(fileno=fd)
        self.server_address = self.socket.getsockname()
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hung up mid-response is normal under a proxy; log the rest.
        exc = sys.exc_info()[1]
        if not isinstance(exc, ConnectionError | TimeoutError):
            _log.exception("request from %s failed", client_address)


def _stop(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM or SIGINT; returns the exit status."""
    parser = argparse.ArgumentParser(prog="sample_app", description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True, type=Path, help="the host directory")
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument("--fd", type=int, help="serve on this inherited listening socket")
    parser.add_argument("--colour", required=True, choices=("blue", "green"))
    parser.add_argument("--redis", required=True, help="the colour's flags Redis URL")
    parser.add_argument("--flag-prefix", default="flag:")
    args = parser.parse_args(argv)
    host_dir: Path = args.dir.resolve()
    (host_dir / "log").mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        filename=host_dir / "log" / "app.log",
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    settings = AppSettings(host_dir, args.colour, args.redis, args.flag_prefix)
    init_db(settings.db_path, settings.colour)
    app = App(settings)
    try:
        server = AppServer(("127.0.0.1", args.port), app, fd=args.fd)
    except OSError as e:
        print(f"sample_app: cannot listen on 127.0.0.1:{args.port}: {e}", file=sys.stderr)
        app.close()
        return 1
    signal.signal(signal.SIGTERM, _stop)
    _log.info("%s app listening on 127.0.0.1:%d", args.colour, args.port)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        _log.info("stopping")
    finally:
        server.server_close()
        app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
