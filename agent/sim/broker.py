"""A private Mosquitto broker on a free loopback port, for the demo and the tests.

It never touches the system broker (port 1883): it writes its own config into a work directory,
starts `mosquitto -c` as a child process, waits until the port accepts connections, and stops
the process it started by its pid. `stop()` then `start()` on the same port simulates an outage.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

INSTALL_HINT = "install it with: apt-get install -y mosquitto"


def find_mosquitto() -> str:
    """Path of the mosquitto binary, or RuntimeError saying how to install it."""
    found = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)),
        None,
    )
    if found is None:
        raise RuntimeError(f"mosquitto is not installed; {INSTALL_HINT}")
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float, host: str = "127.0.0.1") -> bool:
    """Poll until `host:port` accepts a TCP connection; False on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.02)
    return False


class LocalBroker:
    """`mosquitto` on 127.0.0.1:`port`, anonymous; `persistent` keeps sessions across restarts."""

    def __init__(self, workdir: str | Path, port: int | None = None,
                 persistent: bool = False, listener_options: list[str] | None = None,
                 anonymous: bool = True, own_session: bool = False) -> None:
        self.workdir = Path(workdir)
        self.own_session = own_session  # out of the terminal's reach: Ctrl-C stops the owner,
        # which then stops the broker after the agent said goodbye (the demo)
        self.port = port or free_port()
        self.persistent = persistent
        self.listener_options = listener_options or []  # e.g. certfile/keyfile, password_file
        self.anonymous = anonymous
        self.proc: subprocess.Popen[bytes] | None = None
        self.binary = find_mosquitto()

    def start(self, timeout: float = 10.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1", *self.listener_options,
                 f"allow_anonymous {'true' if self.anonymous else 'false'}",
                 "max_queued_messages 0"]
        if self.persistent:  # sessions and queued messages survive stop()/start()
            lines += ["persistence true", f"persistence_location {self.workdir}/"]
        else:
            lines.append("persistence false")
        if os.geteuid() == 0:
            lines.append("user root")
        conf.write_text("\n".join(lines) + "\n")
        logf = (self.workdir / "mosquitto.log").open("ab")
        self.proc = subprocess.Popen([self.binary, "-c", str(conf)], stdout=logf, stderr=logf,
                                     stdin=subprocess.DEVNULL,
                                     start_new_session=self.own_session)
        logf.close()
        if not wait_port(self.port, timeout):
            self.stop()
            tail = (self.workdir / "mosquitto.log").read_text(errors="replace")[-400:]
            raise RuntimeError(f"mosquitto did not listen on 127.0.0.1:{self.port}: {tail}")

    def stop(self) -> None:
        """Stop the process this object started (SIGTERM, then SIGKILL); idempotent."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """SIGKILL, even while paused: whatever it had received but not processed is gone."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def reload(self) -> None:
        """SIGHUP: Mosquitto reads its password and ACL files again."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGHUP)

    def pause(self) -> None:
        """SIGSTOP: the connection hangs instead of dropping."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)

    def __enter__(self) -> LocalBroker:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
