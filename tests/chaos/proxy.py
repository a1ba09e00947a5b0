"""A TCP proxy on loopback between the agent and the broker, to cut the network locally.

`CutProxy` listens on 127.0.0.1:`port` and forwards each connection to 127.0.0.1:`upstream`.
`cut()` black-holes traffic: bytes in both directions are read and dropped, new connections
are accepted and then hear nothing, like a link that went dark (no RST, no FIN, so only the
MQTT keepalive can notice). `restore()` ends the cut: connections that lived through it are
closed (what they carried is gone) and new ones pass again. `hold()` refuses new connections
(closed at once) while the broker is brought back, so the test's subscriber resubscribes first,
as the platform's always-subscribed consumers would be; `release()` lets them in again.
Nothing here reaches beyond 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import socket
import threading

from agent.sim.broker import free_port


class CutProxy:
    """127.0.0.1:`port` -> 127.0.0.1:`upstream`, with `cut`/`restore` and `hold`/`release`."""

    def __init__(self, upstream: int, port: int | None = None) -> None:
        self.upstream = upstream
        self.port = port or free_port()
        self.cutting = False
        self.holding = False
        self.connections = 0
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket, bool]] = []  # (down, up, seen cut)
        self._listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        self._listener.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="cut-proxy", daemon=True)
        self._thread.start()

    def cut(self) -> None:
        with self._lock:
            self.cutting = True
            self._pairs = [(d, u, True) for d, u, _ in self._pairs]

    def restore(self) -> None:
        with self._lock:
            self.cutting = False
            dead = [(d, u) for d, u, seen in self._pairs if seen]
            self._pairs = [p for p in self._pairs if not p[2]]
        for down, up in dead:
            self._close(down, up)

    def hold(self) -> None:
        with self._lock:
            self.holding = True

    def release(self) -> None:
        with self._lock:
            self.holding = False

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for down, up, _ in pairs:
            self._close(down, up)

    @staticmethod
    def _close(*socks: socket.socket) -> None:
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                down, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                holding, cutting = self.holding, self.cutting
            if holding:
                self._close(down)
                continue
            try:
                up = socket.create_connection(("127.0.0.1", self.upstream), timeout=2)
            except OSError:
                self._close(down)
                continue
            up.settimeout(None)
            with self._lock:
                self.connections += 1
                self._pairs.append((down, up, cutting))
            for src, dst in ((down, up), (up, down)):
                threading.Thread(target=self._pump, args=(src, dst, down), daemon=True,
                                 name="cut-proxy-pump").start()

    def _dropping(self, down: socket.socket) -> bool:
        with self._lock:
            return self.cutting or any(d is down and seen for d, _, seen in self._pairs)

    def _pump(self, src: socket.socket, dst: socket.socket, down: socket.socket) -> None:
        """Copy src -> dst until either side closes; while cut, read and drop."""
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            if self._dropping(down):
                continue
            try:
                dst.sendall(data)
            except OSError:
                break
        with self._lock:
            pair = next(((d, u) for d, u, _ in self._pairs if d is down), None)
            self._pairs = [p for p in self._pairs if p[0] is not down]
        self._close(*(pair or (src, dst)))
