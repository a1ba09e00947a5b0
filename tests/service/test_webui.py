"""The status page's server against a running agent: its config, the token rule, read-only,
/status.json and /metrics (parsed with prometheus_client's parser), and that it can neither stop
the agent nor be made to rebuild its snapshot faster than it allows."""

from __future__ import annotations

import http.client
import json
import os
import re
import select
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from agent.config.load import load_config
from agent.core.errors import ConfigError
from agent.service.runtime import Agent
from agent.service.status_page import (
    CSP,
    LOGIN_MAX_BYTES,
    MAX_PER_ADDRESS,
    STATIC,
    WRONG_TOKENS,
    Snapshots,
)
from agent.sim.broker import LocalBroker, free_port
from agent.sim.modbus import ModbusSimulator
from tests.support import HEALTH, Collector, modbus_device, wait_until, write_config

TOKEN = "s3cret-token-for-the-cabinet"
Served = Callable[..., tuple[Agent, str]]


def config_with(tmp_path: Path, broker_port: int, devices: list[dict[str, Any]],
                status_page: dict[str, Any]) -> Path:
    path = write_config(tmp_path / "agent.yaml", broker_port=broker_port, devices=devices)
    doc = json.loads(path.read_text())
    doc["status_page"] = status_page
    path.write_text(json.dumps(doc))
    return path


def token_file(tmp_path: Path, text: str = TOKEN, mode: int = 0o600) -> str:
    path = tmp_path / "status.token"
    path.write_text(text + "\n")
    os.chmod(path, mode)
    return str(path)


@pytest.fixture
def served(tmp_path: Path, broker: LocalBroker, plc: ModbusSimulator) -> Iterator[Served]:
    """Starts an agent polling `plc` with the status page on a free port; returns it and the
    page's base URL (always reached on 127.0.0.1)."""
    agents: list[Agent] = []

    def start(devices: list[dict[str, Any]] | None = None, **page: Any) -> tuple[Agent, str]:
        port = page.pop("port", None) or free_port()
        cfg = config_with(tmp_path, broker.port, devices or [modbus_device("plc", plc.port)],
                          {"enabled": True, "port": port, **page})
        agent = Agent(load_config(cfg))
        agents.append(agent)
        agent.start()
        return agent, f"127.0.0.1:{port}"

    yield start
    for a in agents:
        a.stop()


def get(where: str, path: str, headers: dict[str, str] | None = None,
        method: str = "GET", body: str | None = None) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection(where, timeout=5)
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    resp.read()  # keeps .status/.headers; the body is read again below via a fresh request
    return resp


def fetch(where: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(where, timeout=5)
    conn.request("GET", path, headers=headers or {})
    resp = conn.getresponse()
    return resp.status, resp.read()


Samples = dict[tuple[str, tuple[Any, ...]], float]


def scrape(where: str, headers: dict[str, str] | None = None) -> Samples:
    status, body = fetch(where, "/metrics", headers)
    assert status == 200
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


# config


def test_defaults_are_off_and_loopback(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path / "a.yaml", broker_port=1883,
                                   devices=[modbus_device("plc", 5020)]))
    page = cfg.status_page
    assert (page.enabled, page.bind, page.port, page.token_file) == (False, "127.0.0.1", 8088, None)


def test_off_loopback_needs_a_private_token_file(tmp_path: Path) -> None:
    devices = [modbus_device("plc", 5020)]
    with pytest.raises(ConfigError, match=r"status_page.*0\.0\.0\.0 is reachable from other "
                                          r"machines: set token_file"):
        load_config(config_with(tmp_path, 1883, devices, {"enabled": True, "bind": "0.0.0.0"}))
    shared = token_file(tmp_path, mode=0o644)
    with pytest.raises(ConfigError, match=r"readable by other users.*chmod 600") as err:
        load_config(config_with(tmp_path, 1883, devices, {"enabled": True, "bind": "0.0.0.0",
                                                          "token_file": shared}))
    assert TOKEN not in str(err.value)
    short = token_file(tmp_path, "short")
    with pytest.raises(ConfigError, match="at least 16 characters"):
        load_config(config_with(tmp_path, 1883, devices, {"token_file": short}))
    with pytest.raises(ConfigError, match="not an IP address"):
        load_config(config_with(tmp_path, 1883, devices, {"bind": "gateway.local"}))
    ok = load_config(config_with(tmp_path, 1883, devices, {
        "enabled": True, "bind": "0.0.0.0", "token_file": token_file(tmp_path)}))
    assert ok.status_page.token_file == str(tmp_path / "status.token")


# serving


def test_status_json_is_the_health_snapshot_and_page_json_has_the_points(
        served: Served, plc: ModbusSimulator) -> None:
    plc.set_value(1, "holding", 100, "float32", 0.42)
    plc.set_value(1, "holding", 102, "uint16", 123)
    _, where = served()

    def points() -> dict[str, Any] | None:
        status, body = fetch(where, "/page.json")
        assert status == 200
        doc = json.loads(body)["devices"]["plc"]["points"]
        return doc if doc.get("chlorine", {}).get("value") == 1.23 else None

    pts = wait_until(points, what="the polled values on /page.json")
    assert pts["turbidity"]["value"] == pytest.approx(0.42, rel=1e-6)
    assert pts["turbidity"]["unit"] == "NTU" and pts["turbidity"]["last"][1] == 0.42
    status, body = fetch(where, "/history.json")
    hist = json.loads(body)
    assert status == 200 and hist["samples"] == 120 and hist["step_ms"] == 5000
    assert hist["devices"]["plc"]["chlorine"][-1] == [0, 1.23]
    status, body = fetch(where, "/status.json")
    snap = json.loads(body)
    assert status == 200 and not list(HEALTH.iter_errors(snap))
    assert snap["devices"]["plc"]["state"] == "online"


def test_read_only_and_safe_headers(served: Served) -> None:
    _, where = served()
    for method in ("PUT", "DELETE", "PATCH", "POST"):
        resp = get(where, "/status.json", method=method, body="{}")
        assert resp.status == 405, method
    assert get(where, "/login", method="POST", body="token=x").status == 405  # no token: no login
    assert get(where, "/../agent.yaml").status == 404
    assert get(where, "/config").status == 404
    page = get(where, "/")
    assert page.status == 200 and page.headers["Content-Security-Policy"] == CSP
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert get(where, "/status.json", method="HEAD").status == 200


def test_without_a_token_only_loopback_host_names_are_served(served: Served) -> None:
    _, where = served()
    assert get(where, "/status.json", {"Host": "localhost:8088"}).status == 200
    assert get(where, "/status.json", {"Host": "[::1]:8088"}).status == 200
    # A page elsewhere that rebinds its name to 127.0.0.1 sends its own name: refused.
    assert get(where, "/status.json", {"Host": "attacker.example:8088"}).status == 401


def test_token_required_off_loopback_wrong_token_refused(tmp_path: Path, served: Served) -> None:
    agent, where = served(bind="0.0.0.0", token_file=token_file(tmp_path))
    assert agent.status_page.url is not None and agent.status_page.url.startswith("http://0.0.0.0:")
    for path in ("/status.json", "/page.json", "/history.json", "/metrics"):
        assert get(where, path).status == 401, path
        wrong = TOKEN[:-1] + "X"  # same length, last character wrong
        assert get(where, path, {"Authorization": f"Bearer {wrong}"}).status == 401
        assert get(where, path, {"Authorization": f"Bearer {TOKEN}"}).status == 200
    assert get(where, "/").status == 200  # the page itself holds no data: it asks for the token
    assert TOKEN.encode() not in fetch(where, "/")[1]

    form = {"Content-Type": "application/x-www-form-urlencoded"}
    bad = get(where, "/login", form, "POST", "token=guess")
    assert bad.status == 303 and bad.headers["Location"] == "/?login=failed"
    assert bad.headers["Set-Cookie"] is None
    good = get(where, "/login", form, "POST", f"token={TOKEN}")
    cookie = good.headers["Set-Cookie"]
    assert good.status == 303 and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert TOKEN not in cookie
    session = cookie.split(";")[0]
    assert get(where, "/status.json", {"Cookie": session}).status == 200
    forged = session[:-1] + ("1" if session.endswith("0") else "0")
    assert get(where, "/status.json", {"Cookie": forged}).status == 401


def test_a_port_in_use_does_not_stop_the_agent(served: Served, collector: Collector) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        agent, _ = served(port=taken.getsockname()[1])
        assert agent.status_page.url is None
        wait_until(lambda: len(collector.readings()) >= 4, what="readings published anyway")


def test_snapshot_is_rebuilt_at_most_once_per_ttl(served: Served) -> None:
    agent, _ = served()
    snaps = Snapshots(agent, ttl=3600)
    for name in ("status", "page", "history", "metrics"):
        assert len({snaps.get(name) for _ in range(100)}) == 1
    assert snaps.built == 4


def test_metrics_parse_and_move(served: Served, plc: ModbusSimulator) -> None:
    _, where = served()
    polls = ("edge_agent_polls_total", (("device", "plc"),))
    published = ("edge_agent_readings_published_total", (("device", "plc"),))

    def published_some() -> Samples | None:
        m = scrape(where)
        return m if m.get(published) else None

    first = wait_until(published_some, what="a published reading counted")
    wait_until(lambda: scrape(where)[polls] > first[polls], what="the poll counter to move")
    m = scrape(where)
    assert m[("edge_agent_modbus_requests_per_poll", (("device", "plc"),))] == 1  # one read
    assert m[("edge_agent_readings_polled_total", (("device", "plc"), ("quality", "good")))] > 0
    assert m[("edge_agent_readings_queued_total", (("device", "plc"),))] > 0
    assert m[("edge_agent_publish_latency_seconds_count", ())] > 0
    assert m[("edge_agent_publish_latency_seconds_bucket", (("le", "+Inf"),))] == \
        m[("edge_agent_publish_latency_seconds_count", ())]
    assert m[("edge_agent_uplink_connected", ())] == 1
    assert m[("edge_agent_device_up", (("device", "plc"),))] == 1
    assert ("edge_agent_queue_depth", ()) in m and ("edge_agent_queue_evicted_total", ()) in m
    plc.stop()
    errors = ("edge_agent_poll_errors_total", (("device", "plc"), ("kind", "unreachable")))
    wait_until(lambda: scrape(where).get(errors, 0) >= 1, what="the poll error counted")
    assert scrape(where)[("edge_agent_device_up", (("device", "plc"),))] == 0


def test_page_files_name_no_other_host() -> None:
    for f in STATIC.iterdir():
        text = f.read_text()
        urls = set(re.findall(r"[a-z]+://[^\s\"'`)]+", text))
        assert urls <= {"http://www.w3.org/2000/svg"}, f  # the SVG namespace is a name only


# hostile clients


def _hold(where: str, source: str, data: bytes) -> socket.socket:
    host, port = where.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=5, source_address=(source, 0))
    sock.sendall(data)
    return sock


def _closed_by_server(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        while sock.recv(4096):
            pass  # a 503 or whatever else the server said first
        return True
    except TimeoutError:
        return False
    except OSError:
        return True  # reset


def test_slow_clients_neither_lock_out_a_valid_request_nor_stay(
        tmp_path: Path, served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("agent.service.status_page.DEADLINE", 1.0)
    _agent, where = served(token_file=token_file(tmp_path))
    slow = [_hold(where, f"127.0.0.{2 + i % 3}", b"POST /login HTTP/1.0\r\n"
                  b"Content-Length: 100\r\n\r\ntok") for i in range(40)]  # then trickle nothing
    slow += [_hold(where, "127.0.0.5", b"GET /status.json HTTP/1.0\r\nHost: x") for _ in range(8)]
    try:
        conn = http.client.HTTPConnection(where, timeout=2)  # within a second, with margin
        conn.request("GET", "/status.json", headers={"Authorization": f"Bearer {TOKEN}"})
        assert conn.getresponse().status == 200
        assert get(where, "/metrics", {"Authorization": f"Bearer {TOKEN}"}).status == 200
        assert all(_closed_by_server(s, within=10) for s in slow), "cut at the deadline"
    finally:
        for s in slow:
            s.close()


def test_connections_over_the_per_address_cap_are_closed_at_once(
        tmp_path: Path, served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("agent.service.status_page.DEADLINE", 60.0)
    _agent, where = served(token_file=token_file(tmp_path))
    idle = [_hold(where, "127.0.0.7", b"") for _ in range(MAX_PER_ADDRESS + 4)]
    try:
        readable: set[socket.socket] = set()  # watched all at once: EOF from the server

        def four_closed() -> bool:
            readable.update(select.select(idle, [], [], 0.05)[0])
            return len(readable) >= 4

        wait_until(four_closed, timeout=3, what="the connections over the cap closed")
        closed = [s in readable and _closed_by_server(s, within=0.5) for s in idle]
        assert closed == [False] * MAX_PER_ADDRESS + [True] * 4
        assert get(where, "/status.json", {"Authorization": f"Bearer {TOKEN}"}).status == 200
    finally:
        for s in idle:
            s.close()


def test_wrong_tokens_are_limited_per_address_and_logged_once(
        tmp_path: Path, served: Served) -> None:
    _agent, where = served(token_file=token_file(tmp_path))
    host, port = where.rsplit(":", 1)

    def from_(source: str, token: str) -> int:
        conn = http.client.HTTPConnection(host, int(port), timeout=5,
                                          source_address=(source, 0))
        conn.request("GET", "/status.json", headers={"Authorization": f"Bearer {token}"})
        return conn.getresponse().status

    with capture_logs() as logs:
        assert [from_("127.0.0.8", "guess-" + "x" * 12) for _ in range(WRONG_TOKENS)] \
            == [401] * WRONG_TOKENS
        assert from_("127.0.0.8", TOKEN) == 429  # even the right one, until the window passes
        assert from_("127.0.0.9", TOKEN) == 200  # another address is not affected
    wrong = [e for e in logs if e["event"] == "status page: wrong token"]
    assert len(wrong) == 1 and wrong[0]["client"] == "127.0.0.8"
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    big = get(where, "/login", form, "POST", "token=" + "x" * LOGIN_MAX_BYTES)
    assert big.status == 400
