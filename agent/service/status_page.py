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
fatal. Hostile clients cannot lock others out: at most `MAX_CONNECTIONS` connections are open
(`MAX_PER_ADDRESS` from one address; more are closed at once), each is closed `DEADLINE` s after
it was accepted whatever it does (a whole request, not per byte: trickling bytes does not
help), a request is read before it takes one of the `MAX_CLIENTS` slots, `/login` takes at most
`LOGIN_MAX_BYTES`, and an address that gave `WRONG_TOKENS` wrong tokens within `WRONG_WINDOW` s
is answered 429 until the window passes (logged once per address and window). The page itself
(status_page_files/) has no external assets and a Content-Security-Policy
that forbids loading any.
"""

from __future__ import annotations

import contextlib
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
"""Requests being answered at once (after they were read)."""
MAX_CONNECTIONS = 64
"""Open connections at once; each is a thread and a file descriptor."""
MAX_PER_ADDRESS = 16
"""Open connections from one client address."""
DEADLINE = 5.0
"""Seconds a connection may take from accept to its last byte: a whole request and answer."""
LOGIN_MAX_BYTES = 1024
"""Largest /login body: a form with one token field."""
WRONG_TOKENS, WRONG_WINDOW = 10, 60.0
"""Wrong tokens from one address within the window before it is answered 429."""


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
            httpd = _Server(self.cfg.bind, self.cfg.port, self.snapshots, token, files,
                            deadline=DEADLINE)
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
    request_queue_size = MAX_CONNECTIONS  # a burst waits in the kernel, not dropped SYNs

    def __init__(self, bind: str, port: int, snapshots: Snapshots, token: str | None,
                 files: dict[str, bytes], deadline: float = DEADLINE) -> None:
        self.address_family = socket.AF_INET6 if ":" in bind else socket.AF_INET
        self.snapshots, self.token, self.files = snapshots, token, files
        self.session = None if token is None else hashlib.sha256(
            b"edge-agent status page\0" + token.encode()).hexdigest()
        self.slots = threading.BoundedSemaphore(MAX_CLIENTS)
        self.log = log.get("webui")
        self.deadline = deadline
        self._open: dict[socket.socket, tuple[str, float]] = {}  # -> (address, deadline)
        self._wrong: dict[str, list[float]] = {}  # address -> times of its recent wrong tokens
        self._told: dict[str, float] = {}  # address -> when its wrong tokens were last logged
        self._lock = threading.Lock()
        self._closed = threading.Event()
        super().__init__((bind, port), _Handler)
        self._reaper = threading.Thread(target=self._reap, name="status-page-reaper",
                                        daemon=True)
        self._reaper.start()

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Accept a connection only under the caps; a refused one is closed at once."""
        addr = str(client_address[0])
        with self._lock:
            if len(self._open) >= MAX_CONNECTIONS or \
                    sum(a == addr for a, _ in self._open.values()) >= MAX_PER_ADDRESS:
                return False
            self._open[request] = (addr, time.monotonic() + self.deadline)
        return True

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            self._open.pop(request, None)
        super().shutdown_request(request)

    def _reap(self) -> None:
        """Cut every connection past its deadline: its reading or writing thread then ends."""
        while not self._closed.wait(min(0.25, self.deadline / 4)):
            now = time.monotonic()
            with self._lock:
                late = [s for s, (_, until) in self._open.items() if until < now]
            for sock in late:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def server_close(self) -> None:
        self._closed.set()
        super().server_close()

    def locked_out(self, addr: str) -> bool:
        with self._lock:
            now = time.monotonic()
            recent = [t for t in self._wrong.get(addr, ()) if now - t < WRONG_WINDOW]
            if recent:
                self._wrong[addr] = recent
            else:
                self._wrong.pop(addr, None)
            return len(recent) >= WRONG_TOKENS

    def wrong_token(self, addr: str) -> None:
        """Count a wrong token; log it once per address and window (with how many)."""
        with self._lock:
            now = time.monotonic()
            times = [t for t in self._wrong.get(addr, ()) if now - t < WRONG_WINDOW] + [now]
            self._wrong[addr] = times
            if len(self._wrong) > 1024:  # bounded whatever the number of addresses
                del self._wrong[next(iter(self._wrong))]
            if now - self._told.get(addr, -WRONG_WINDOW) < WRONG_WINDOW:
                return
            self._told[addr] = now
            if len(self._told) > 1024:
                del self._told[next(iter(self._told))]
        self.log.warning("status page: wrong token", client=addr, recent=len(times),
                         limit=f"{WRONG_TOKENS} per {WRONG_WINDOW:g} s, then 429")

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)  # not HTTPServer's: its getfqdn() asks DNS
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A request that failed mid-way (the client went, or its deadline cut it): logged at
        debug level, or a crowd of hostile clients would flood the journal."""
        self.log.debug("status page request failed", client=str(client_address[0]))


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
        """POST /login: the body is read before the request takes a slot (a client trickling
        it holds only its own connection, and only until the deadline)."""
        if urlsplit(self.path).path != "/login" or self.server.token is None:
            self._refuse()
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 < length <= LOGIN_MAX_BYTES:
            self._send(HTTPStatus.BAD_REQUEST, b"bad request\n", "text/plain; charset=utf-8")
            return
        body = self.rfile.read(length)
        self._guarded(lambda: self._post(body))

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

    def _authorized(self) -> bool | None:
        """True, False, or None when this address gave too many wrong tokens lately."""
        server = self.server
        if server.token is None or server.session is None:
            host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]")
            try:
                return host == "localhost" or ipaddress.ip_address(host).is_loopback
            except ValueError:
                return False  # a name that is not ours: DNS rebinding
        addr = str(self.client_address[0])
        if server.locked_out(addr):
            return None
        auth = self.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            if hmac.compare_digest(auth[7:].strip().encode(), server.token.encode()):
                return True
            server.wrong_token(addr)
            return False
        for part in (self.headers.get("Cookie") or "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE:
                return hmac.compare_digest(value.encode(), server.session.encode())
        return False

    def _too_many(self) -> None:
        self._send(HTTPStatus.TOO_MANY_REQUESTS, b'{"error":"too many wrong tokens"}\n',
                   "application/json", {"Retry-After": str(int(WRONG_WINDOW))})

    def _get(self) -> None:
        path = urlsplit(self.path).path
        if path in FILES:
            self._send(HTTPStatus.OK, self.server.files[path], FILES[path][1])
            return
        docs = {"/status.json": ("status", "application/json"),
                "/page.json": ("page", "application/json"),
                "/history.json": ("history", "application/json"),
                "/metrics": ("metrics", "text/plain; version=0.0.4; charset=utf-8")}
        allowed = self._authorized() if path in docs else False
        if path not in docs:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")
        elif allowed is None:
            self._too_many()
        elif not allowed:
            self._send(HTTPStatus.UNAUTHORIZED, b'{"error":"token required"}\n',
                       "application/json", {"WWW-Authenticate": 'Bearer realm="edge-agent"'})
        else:
            name, ctype = docs[path]
            self._send(HTTPStatus.OK, self.server.snapshots.get(name), ctype)

    def _post(self, body: bytes) -> None:
        """POST /login (form field `token`): set the session cookie; the only POST there is."""
        assert self.server.token is not None
        addr = str(self.client_address[0])
        if self.server.locked_out(addr):
            self._too_many()
            return
        form = parse_qs(body.decode("utf-8", "replace"))
        given = (form.get("token") or [""])[0].strip()
        if hmac.compare_digest(given.encode(), self.server.token.encode()):
            cookie = f"{COOKIE}={self.server.session}; Path=/; HttpOnly; SameSite=Strict"
            self._send(HTTPStatus.SEE_OTHER, b"", "text/plain", {"Location": "/",
                                                                  "Set-Cookie": cookie})
        else:
            self.server.wrong_token(addr)
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
