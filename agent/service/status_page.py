"""The technician's local status page, `/status.json` and `/metrics`, served by the agent itself.

Off by default; `status_page: {enabled: true}` serves it on 127.0.0.1:8088. Another `bind`
address needs a `token_file` (refused when others can read it, like the MQTT password), and
once a token is configured every data request must carry it: `Authorization: Bearer <token>`
(Prometheus) or the session cookie the page's login form sets (a hash of the token, HttpOnly,
SameSite=Strict), compared in constant time. Without a token the Host header must be loopback,
so a web page elsewhere cannot read it through DNS rebinding. It is read-only: GET/HEAD, plus
POST /login; nothing reaches a driver or the config. It reads only a snapshot the core keeps
(`health.snapshot` and each device's `agent.polling.recent`, through `agent.service.view`), taken
at most once per `ttl` whatever the request rate, on its own threads (at most `MAX_CLIENTS` at
once), so it can never slow polling or publishing, and a port it cannot bind is logged, not
fatal. The page itself (status_page_files/) has no external assets and a Content-Security-Policy
that forbids loading any.
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import ipaddress
import json
import socket
import socketserver
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from agent.config.status_page import StatusPageConfig, read_token
from agent.core import log
from agent.core.clock import current
from agent.polling import recent
from agent.service import health, metrics
from agent.service.view import AgentView

STATIC = Path(__file__).resolve().parent / "status_page_files"
FILES = {"/": ("index.html", "text/html; charset=utf-8"),
         "/app.js": ("app.js", "text/javascript; charset=utf-8"),
         "/app.css": ("app.css", "text/css; charset=utf-8")}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
COOKIE = "edge_agent_session"
MAX_CLIENTS = 8


class Snapshots:
    """The served documents, each rebuilt at most once per `ttl` seconds (the history, which
    changes once per bucket, at most once per bucket) however often it is asked for.

    `status`: the health snapshot; `page`: per device and point the latest reading, last value
    and newest history sample; `history`: the sparklines' samples, which the page fetches when
    it opens and about once a minute (it adds each refresh's newest sample itself); `metrics`.
    """

    def __init__(self, view: AgentView, ttl: float = 0.5) -> None:
        self._view, self._ttl = view, ttl
        self._lock = threading.Lock()
        self._docs: dict[str, tuple[float, bytes]] = {}
        self._health: tuple[float, dict[str, Any]] | None = None
        self.built = 0  # documents built (tests, benchmarks)

    def get(self, name: str) -> bytes:
        ttl = max(self._ttl, recent.HISTORY_STEP_MS / 1000) if name == "history" else self._ttl
        with self._lock:
            at, body = self._docs.get(name, (-ttl, b""))
            if time.monotonic() - at >= ttl:
                body = getattr(self, f"_{name}")()
                self._docs[name] = (time.monotonic(), body)
                self.built += 1
            return body

    def _snapshot(self) -> dict[str, Any]:
        if self._health is None or time.monotonic() - self._health[0] >= self._ttl:
            self._health = (time.monotonic(), health.snapshot(self._view))
        return self._health[1]

    def _window(self, now: int) -> dict[str, Any]:
        return {"ts": now, "step_ms": recent.HISTORY_STEP_MS,
                "samples": recent.HISTORY_SAMPLES, "bucket": now // recent.HISTORY_STEP_MS}

    def _status(self) -> bytes:
        return _json(self._snapshot())

    def _metrics(self) -> bytes:
        return metrics.render(self._view, self._snapshot()).encode()

    def _page(self) -> bytes:
        view = self._view
        return _json({
            "gateway": view.gateway, "site": view.site,
            **self._window(current().now_ms()),
            "devices": {d.name: {"interval_s": d.interval, "driver": d.driver,
                                 "points": d.recent.snapshot()} for d in view.devices()},
        })

    def _history(self) -> bytes:
        now = current().now_ms()
        return _json({**self._window(now), "devices": {
            d.name: d.recent.history(now) for d in self._view.devices()}})


def _json(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()


class StatusPage:
    """Serves the page for the agent `view` shows, as configured; `start()` never raises, `stop()`
    is idempotent."""

    def __init__(self, view: AgentView, cfg: StatusPageConfig, ttl: float = 0.5) -> None:
        self.cfg = cfg
        self.snapshots = Snapshots(view, ttl)
        self._log = log.get("webui")
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self.url: str | None = None

    def start(self) -> None:
        if not self.cfg.enabled:
            return
        try:
            token = read_token(self.cfg.token_file) if self.cfg.token_file else None
            files = {p: (STATIC / f).read_bytes() for p, (f, _) in FILES.items()}
            httpd = _Server(self.cfg.bind, self.cfg.port, self.snapshots, token, files)
        except OSError as exc:
            self._log.error("status page not started", bind=self.cfg.bind, port=self.cfg.port,
                            error=exc.strerror or str(exc))
            return
        self._httpd = httpd
        host, port = str(httpd.server_address[0]), httpd.server_address[1]
        self.url = f"http://{f'[{host}]' if ':' in host else host}:{port}/"
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="status-page", daemon=True)
        self._thread.start()
        self._log.info("status page serving", url=self.url, token=token is not None)

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 16

    def __init__(self, bind: str, port: int, snapshots: Snapshots, token: str | None,
                 files: dict[str, bytes]) -> None:
        self.address_family = socket.AF_INET6 if ":" in bind else socket.AF_INET
        self.snapshots, self.token, self.files = snapshots, token, files
        self.session = None if token is None else hashlib.sha256(
            b"edge-agent status page\0" + token.encode()).hexdigest()
        self.slots = threading.BoundedSemaphore(MAX_CLIENTS)
        self.log = log.get("webui")
        super().__init__((bind, port), _Handler)

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)  # not HTTPServer's: its getfqdn() asks DNS
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        self.log.warning("status page request failed", client=str(client_address[0]))


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "edge-agent"
    sys_version = ""
    timeout = 10  # a client that stalls mid-request is dropped (HTTP/1.0: no idle keep-alive)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # requests are not logged: a refreshing page would flood the journal

    def do_GET(self) -> None:
        self._guarded(self._get)

    def do_HEAD(self) -> None:
        self._guarded(self._get)

    def do_POST(self) -> None:
        self._guarded(self._post)

    def _refuse(self) -> None:
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, b"read-only\n", "text/plain; charset=utf-8",
                   {"Allow": "GET, HEAD"})

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse

    def _guarded(self, handler: Any) -> None:
        if not self.server.slots.acquire(blocking=False):
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, b"busy\n", "text/plain; charset=utf-8",
                       {"Retry-After": "1"})
            return
        try:
            handler()
        finally:
            self.server.slots.release()

    def _authorized(self) -> bool:
        server = self.server
        if server.token is None or server.session is None:
            host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]")
            try:
                return host == "localhost" or ipaddress.ip_address(host).is_loopback
            except ValueError:
                return False  # a name that is not ours: DNS rebinding
        auth = self.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            return hmac.compare_digest(auth[7:].strip().encode(), server.token.encode())
        for part in (self.headers.get("Cookie") or "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE:
                return hmac.compare_digest(value.encode(), server.session.encode())
        return False

    def _get(self) -> None:
        path = urlsplit(self.path).path
        if path in FILES:
            self._send(HTTPStatus.OK, self.server.files[path], FILES[path][1])
            return
        docs = {"/status.json": ("status", "application/json"),
                "/page.json": ("page", "application/json"),
                "/history.json": ("history", "application/json"),
                "/metrics": ("metrics", "text/plain; version=0.0.4; charset=utf-8")}
        if path not in docs:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")
        elif not self._authorized():
            self._send(HTTPStatus.UNAUTHORIZED, b'{"error":"token required"}\n',
                       "application/json", {"WWW-Authenticate": 'Bearer realm="edge-agent"'})
        else:
            name, ctype = docs[path]
            self._send(HTTPStatus.OK, self.server.snapshots.get(name), ctype)

    def _post(self) -> None:
        """POST /login (form field `token`): set the session cookie; the only POST there is."""
        if urlsplit(self.path).path != "/login" or self.server.token is None:
            self._refuse()
            return
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= 4096:
            self._send(HTTPStatus.BAD_REQUEST, b"bad request\n", "text/plain; charset=utf-8")
            return
        form = parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
        given = (form.get("token") or [""])[0].strip()
        if hmac.compare_digest(given.encode(), self.server.token.encode()):
            cookie = f"{COOKIE}={self.server.session}; Path=/; HttpOnly; SameSite=Strict"
            self._send(HTTPStatus.SEE_OTHER, b"", "text/plain", {"Location": "/",
                                                                  "Set-Cookie": cookie})
        else:
            self.server.log.warning("status page: wrong token", client=self.client_address[0])
            self._send(HTTPStatus.SEE_OTHER, b"", "text/plain", {"Location": "/?login=failed"})

    def _send(self, status: HTTPStatus, body: bytes, ctype: str,
              extra: dict[str, str] | None = None) -> None:
        headers = {"Content-Type": ctype, "Cache-Control": "no-store",
                   "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                   "Content-Security-Policy": CSP, "Vary": "Accept-Encoding", **(extra or {})}
        if len(body) > 1400 and "gzip" in (self.headers.get("Accept-Encoding") or ""):
            body = gzip.compress(body, compresslevel=5)
            headers["Content-Encoding"] = "gzip"
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
