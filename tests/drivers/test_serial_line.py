"""The serial_line driver against a simulated text sensor on a real pty (`tests.peers.line_sensor`):
streamed lines with noise, split frames and bad checksums; polled replies; a silent sensor;
a USB adapter unplugged and plugged back under another tty; parking events on change."""

from __future__ import annotations

import os
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from agent.config.load import load_config
from agent.core.errors import ConfigError, DeviceTimeout, DeviceUnreachable
from agent.core.model import Reading
from agent.polling.runner import DeviceRunner
from agent.polling.scheduler import Scheduler
from agent.queue import Queue
from agent.transport.ports import BusConfig, open_port
from agent.transport.stream import Listener
from drivers.registry import create
from drivers.serial_line.driver import MAX_FRAMES, DeviceStale, SerialLine, SerialLineConfig
from drivers.serial_line.parse import checksum
from tests.peers.line_sensor import LineSensor
from tests.support import wait_until

PM = [{"name": "pm25", "key": "PM2.5", "unit": "ug/m3"}, {"name": "pm10", "key": "PM10",
                                                          "unit": "ug/m3"}]


@pytest.fixture
def sensor(tmp_path: Path) -> Iterator[LineSensor]:
    s = LineSensor(tmp_path / "usb-FTDI_FT232R_A50285BI-if00-port0")
    yield s
    s.close()


def line_driver(sensor: LineSensor, **config: Any) -> SerialLine:
    port = open_port(BusConfig(name="env", port=str(sensor.link), timeout=0.3))
    cfg = SerialLineConfig.model_validate(
        {"name": "env", "driver": "serial_line", "bus": "env", "mode": "stream",
         "format": "pairs", "points": PM} | config)
    driver = create(cfg, {"env": port})
    assert isinstance(driver, SerialLine)
    return driver


def listening(driver: SerialLine) -> SerialLine:
    """Open and wait until the port is open (pyserial drops what arrived before it opened)."""
    driver.open()
    assert driver.listener is not None
    wait_until(lambda: driver.listener is not None and driver.listener.connected,
               what="the listener to open the port")
    return driver


def poll_until(driver: SerialLine, count: int, what: str, *, unplugged: bool = False
               ) -> list[Reading]:
    got: list[Reading] = []

    def enough() -> bool:
        try:
            got.extend(driver.poll())
        except DeviceUnreachable:
            if not unplugged:
                raise
        return len(got) >= count

    wait_until(enough, timeout=5, what=what)
    return got


def heard(driver: SerialLine, sensor: LineSensor) -> list[Reading]:
    """One poll, once the listener has heard every byte the sensor wrote."""
    wait_until(lambda: driver.listener is not None
               and driver.listener.received == sensor.written, what="every byte heard")
    return driver.poll()


def nmea(body: bytes) -> bytes:
    """A line with an XOR checksum after '*' (over what follows a leading '$', as NMEA does)."""
    covered = body[1:] if body.startswith(b"$") else body
    return body + b"*" + f"{checksum('xor', covered):02X}".encode() + b"\r\n"


def test_stream_with_noise_split_frames_and_bad_checksums(sensor: LineSensor) -> None:
    with capture_logs() as logs:
        driver = listening(line_driver(sensor, checksum={"type": "xor", "separator": "*"},
                                       frames="all", max_length=64))
        sensor.write(nmea(b"PM2.5=12.3,PM10=20.1")
                     + b"\x9c\xfe\x00\xe3\x1c\xff\r\n"             # wrong-baud noise
                     + b"PM2.5=99.9,PM10=99.9*00\r\n"               # damaged on the way
                     + b"PM2.5=" + b"9" * 100 + b"\r\n"             # a runaway frame
                     + nmea(b"PM2.5=12.5,PM10=20.4")
                     + nmea(b"PM2.5=13.0,PM10=21.0")[:9])           # the rest comes later
        first = heard(driver, sensor)
        assert [(r.metric, r.value, r.quality) for r in first] == [
            ("pm25", 12.3, "good"), ("pm25", 12.5, "good"),
            ("pm10", 20.1, "good"), ("pm10", 20.4, "good")]
        assert all(r.unit == "ug/m3" for r in first)
        assert driver.framer.pending == 9, "the half frame waits for its other half"
        sensor.write(nmea(b"PM2.5=13.0,PM10=21.0")[9:])
        assert [(r.metric, r.value) for r in heard(driver, sensor)] == [
            ("pm25", 13.0), ("pm10", 21.0)]
        sensor.write(b"PM2.5=1,PM10=2*FF\r\n")
        assert [(r.value, r.quality) for r in heard(driver, sensor)] == [
            (None, "checksum_error"), (None, "checksum_error")]
        driver.close()
    assert driver.counts == {"frames": 3, "checksum_error": 3, "too_long": 1}
    bad = [e for e in logs if e["event"] == "bad frames"]
    assert [e["kind"] for e in bad] == ["checksum_error", "too_long"], "once per kind"
    assert bad[0]["sample"] == "\\x9c\\xfe\\x00\\xe3\\x1c\\xff"
    assert bad[1]["sample"].startswith("PM2.5=999")


def test_a_flood_keeps_the_newest_frames_a_poll_can_hold_and_counts_the_rest(
        sensor: LineSensor) -> None:
    driver = listening(line_driver(sensor, frames="all"))
    flood = MAX_FRAMES + 250
    with capture_logs() as logs:
        for start in range(0, flood, 125):  # a pty holds a few kB: let the listener keep up
            sensor.write(b"".join(b"PM2.5=%d\n" % i for i in range(start, start + 125)))
            wait_until(lambda: driver.listener is not None
                       and driver.listener.received == sensor.written, what="batch heard")
        got = driver.poll()
    driver.close()
    assert sensor.dropped == 0
    values = [r.value for r in got if r.metric == "pm25"]
    assert len(values) == MAX_FRAMES and values[-1] == flood - 1 and values[0] == 250.0
    assert driver.counts["frames"] == flood
    [bad] = [e for e in logs if e["event"] == "bad frames"]
    assert bad["kind"] == "overflow" and "250 valid frame(s) past the 1000" in bad["detail"]


def test_latest_value_per_poll_with_its_arrival_time(sensor: LineSensor) -> None:
    driver = listening(line_driver(sensor))
    sensor.write(b"PM2.5=1\nPM2.5=2,PM10=5\nPM2.5=3\n")
    got = heard(driver, sensor)
    assert [(r.metric, r.value) for r in got] == [("pm25", 3.0), ("pm10", 5.0)]
    assert got[0].ts >= got[1].ts
    driver.close()


def test_a_silent_sensor_is_stale_once_then_back_online(sensor: LineSensor,
                                                        tmp_path: Path) -> None:
    queue = Queue(tmp_path / "q.db")
    with capture_logs() as logs:
        driver = line_driver(sensor, stale_after="200ms", interval="50ms")
        runner = DeviceRunner(driver, queue)
        sensor.stream([b"PM2.5=7,PM10=9\r\n"], 0.02)
        wait_until(lambda: (runner.poll_once(), runner.online and driver.counts["frames"])[1],
                   what="frames")
        sensor.stream([], 0)
        wait_until(lambda: (runner.poll_once(), not runner.online)[1], what="stale")
        for _ in range(5):
            runner.poll_once()  # still silent: no more log lines
        sensor.stream([b"PM2.5=8,PM10=9\r\n"], 0.02)
        wait_until(lambda: (runner.poll_once(), runner.online)[1], what="back online")
        runner.close()
    events = [(e["event"], e.get("kind")) for e in logs if e["event"].startswith("device")]
    assert events == [("device offline", "stale"), ("device back online", None)]
    offline = next(e for e in logs if e["event"] == "device offline")
    assert re.match(r"no valid frame for (0\.[2-9]|[1-9][\d.]*) s on bus env \(",
                    offline["error"])
    qualities = [q.reading.quality for q in queue.peek(0, 10_000)]
    assert "stale" in qualities and qualities[-1] == "good"
    queue.close()


def test_unplugged_adapter_is_reopened_under_its_by_id_path(sensor: LineSensor) -> None:
    driver = listening(line_driver(sensor, command="START\\r\\n"))  # sent at every open
    wait_until(lambda: sensor.received == b"START\r\n", what="the start command")
    first_tty = sensor.tty
    sensor.write(b"PM2.5=4,PM10=6\r\nPM2.5=9")  # the last frame is cut off by the unplug
    poll_until(driver, 2, "readings")
    wait_until(lambda: (driver.poll(), driver.framer.pending)[1], what="the cut frame")
    sensor.unplug()
    with pytest.raises(DeviceUnreachable, match=r"bus env .*(no data|Input/output|No such file)"):
        wait_until(lambda: driver.poll() and False, timeout=1, interval=0.02)
    taken = os.openpty()  # the old tty number is busy now: the adapter comes back as another
    try:
        sensor.plug()
        assert sensor.tty != first_tty
        wait_until(lambda: sensor.received == b"START\r\n" * 2, what="the port reopened")
        sensor.write(b"PM2.5=5,PM10=7\r\n")
        got = poll_until(driver, 2, "readings after the adapter came back", unplugged=True)
    finally:
        for fd in taken:
            os.close(fd)
    assert [(r.metric, r.value) for r in got] == [("pm25", 5.0), ("pm10", 7.0)]
    assert driver.counts["partial"] == 1 and driver.port.opens == 2
    driver.close()


def polled(sensor: LineSensor, **config: Any) -> SerialLine:
    return line_driver(sensor, **{
        "mode": "poll", "command": "READ\\r\\n", "format": "regex", "timeout": "100ms",
        "pattern": r"T=(?P<t>[-\d.]+)\s+H=(?P<h>\S+)",
        "points": [{"name": "air_temp", "group": "t", "unit": "C"},
                   {"name": "humidity", "group": "h", "scale": 0.1}]} | config)


def test_polled_reply_with_echo_and_a_bad_field(sensor: LineSensor) -> None:
    driver = polled(sensor)
    sensor.reply({b"READ\r\n": b"READ\r\nT=21.5 H=405\r\n"})  # half-duplex adapter echo
    assert [(r.value, r.quality) for r in driver.poll()] == [(21.5, "good"), (40.5, "good")]
    assert sensor.received == b"READ\r\n"
    assert driver.counts == {"frames": 1, "no_match": 1}
    sensor.reply({b"READ\r\n": b"T=-3.0 H=ERR\r\n"})
    assert [(r.value, r.quality) for r in driver.poll()] == [(-3.0, "good"),
                                                             (None, "decode_error")]


def test_polled_silence_and_a_missing_terminator(sensor: LineSensor) -> None:
    driver = polled(sensor)
    with pytest.raises(DeviceTimeout, match=r"no reply to 'READ\\r\\n' on bus env"):
        driver.poll()
    sensor.reply({b"READ\r\n": b"T=21.5 H=405\r"})
    with pytest.raises(DeviceTimeout, match=r"13 byte\(s\) without terminator '\\n'"):
        driver.poll()
    assert polled(sensor, terminator="\r").poll()[0].value == 21.5


def test_polled_garbage_is_stale_after_a_while(sensor: LineSensor) -> None:
    driver = polled(sensor, stale_after="250ms", timeout="50ms")
    sensor.reply({b"READ\r\n": b"\xf0\x0f\x99\r\n"})
    assert {r.quality for r in driver.poll()} == {"no_match"}
    with pytest.raises(DeviceStale, match=r"meanwhile \d+ no_match; last: '\\xf0\\x0f\\x99'"):
        wait_until(lambda: driver.poll() and False, timeout=2)


def test_parking_events_are_sent_on_change_with_a_periodic_full_state(
        sensor: LineSensor, tmp_path: Path) -> None:
    queue = Queue(tmp_path / "q.db")
    driver = listening(line_driver(sensor, stale_after=0, points=[
        {"name": "bay17", "key": "BAY17", "type": "bool", "state": True, "on_change": True},
        {"name": "bay18", "key": "BAY18", "type": "bool", "state": True, "on_change": True},
        {"name": "entries", "key": "IN", "type": "int", "accumulate": True, "on_change": True,
         "max_silence": "200ms"},
        {"name": "exits", "key": "OUT", "type": "int", "accumulate": True, "on_change": True},
    ]))
    runner = DeviceRunner(driver, queue)
    runner.poll_once()  # before any event: the counters' known state (0 since start)
    sensor.write(b"BAY17=1\r\nIN+1\r\nIN+1\r\nBAY17=0\r\nOUT+1\r\nBAY17=0\r\n")

    def sent() -> list[tuple[str, Any]]:
        return [(q.reading.metric, q.reading.value) for q in queue.peek(0, 1000)]

    wait_until(lambda: (runner.poll_once(), ("exits", 1) in sent())[1], what="the events")
    per_metric = {m: [v for n, v in sent() if n == m] for m in ("bay17", "bay18", "entries",
                                                               "exits")}
    assert per_metric == {"bay17": [True, False], "bay18": [], "entries": [0, 1, 2],
                          "exits": [0, 1]}
    wait_until(lambda: (runner.poll_once(), sent().count(("entries", 2)) == 2)[1],
               what="the full state again after max_silence")
    runner.close()
    queue.close()


CONFIG = Path(__file__).resolve().parents[2] / "config"


def test_example_configs_parse_what_their_sensors_send() -> None:
    env = {d.name: d for d in load_config(CONFIG / "environment.yaml").devices}
    ports = {b: open_port(BusConfig(name=b, port="/dev/null")) for b in
             ("pm-line", "weather", "rs485-air", "bay-controller", "gate")}
    weather = create(env["weather"], ports)
    assert isinstance(weather, SerialLine)
    wind, temp = nmea(b"$WIMWV,270.0,R,5.2,M,A"), nmea(b"$WIMTA,-1.5,C")
    got = [weather.parser.parse(f.strip()) for f in (wind, temp, nmea(b"$GPGGA,1,2"))]
    assert [(r.spec.name, r.value) for r in got[0].fields if r.text] == [
        ("wind_dir", 270.0), ("wind_speed", 5.2)]
    assert [(r.spec.name, r.value) for r in got[1].fields if r.text] == [("air_temp", -1.5)]
    assert got[2].kind == "ignored"
    gas = create(env["gas"], ports)
    assert isinstance(gas, SerialLine) and gas.command == b"#01RD\r"
    assert [r.value for r in gas.parser.parse(b"!01,NO2=0.021,O3=0.034").fields] == [0.021,
                                                                                      0.034]
    noise = create(env["noise"], ports)
    assert isinstance(noise, SerialLine) and noise.command == b"\x02R\x03"
    frame = noise.framer.feed(b"\x02LAeq,54.2,LAFmax,61.0\x03")[0].data
    assert [r.value for r in noise.parser.parse(frame).fields] == [54.2, 61.0]
    parking = {d.name: d for d in load_config(CONFIG / "parking.yaml").devices}
    gate = create(parking["gate-counters"], ports)
    assert isinstance(gate, SerialLine)
    assert [r.value for r in gate.parser.parse(b"IN+1").fields] == [1, None]


def config_errors(tmp_path: Path, devices: str) -> list[str]:
    path = tmp_path / "agent.yaml"
    path.write_text("gateway: {id: gw}\nmqtt: {host: localhost}\nqueue: {path: q.db}\n"
                    "buses:\n  - {name: line, port: /dev/ttyUSB0}\n" + devices)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    return [str(i).replace(str(tmp_path) + "/", "") for i in err.value.issues]


def test_config_errors_are_located(tmp_path: Path) -> None:
    assert config_errors(tmp_path, """devices:
  - {name: a, driver: serial_line, bus: line, mode: stream, format: pairs,
     points: [{name: t, key: T}]}
  - {name: b, driver: serial_line, bus: line, mode: poll, command: "R\\r", format: pairs,
     points: [{name: t, key: T}]}
""") == ["agent.yaml:9:41: devices[1].bus: bus 'line' is read all the time by devices[0] 'a' "
         "(line 7, mode stream); a streaming sensor needs its bus to itself"]
    assert config_errors(tmp_path, """devices:
  - name: a
    driver: serial_line
    bus: line
    mode: poll
    format: regex
    pattern: 'T=(?P<temp>[0-9.]+'
    terminator: '\\q'
    points: [{name: t, group: tmp}, {name: h, key: H}]
""") == [
        "agent.yaml:12:14: devices[0].pattern: not a valid regular expression: missing ), "
        "unterminated subpattern at position 2",
        "agent.yaml:13:17: devices[0].terminator: unknown escape \\q at character 1; use \\r "
        "\\n \\t \\0 \\e \\\\ or \\xHH",
        "agent.yaml:14:13: devices[0].points: points[1] (h): format regex finds fields by "
        "`group`"]
    assert config_errors(tmp_path, """devices:
  - {name: a, driver: serial_line, bus: line, mode: poll, format: regex,
     pattern: 'T=(?P<temp>[0-9.]+)', points: [{name: t, group: tmp}]}
""") == ["agent.yaml:8:46: devices[0].points: points[0] (t): the pattern has no group 'tmp' "
         "(did you mean 'temp'?); its groups: temp"]


def test_scheduler_runs_a_stream_and_stops_its_listener(sensor: LineSensor,
                                                        tmp_path: Path) -> None:
    queue = Queue(tmp_path / "q.db")
    driver = line_driver(sensor, interval="50ms")
    scheduler = Scheduler([DeviceRunner(driver, queue)], {"env": driver.port})
    sensor.stream([b"PM2.5=3,PM10=4\r\n"], 0.01)
    scheduler.start()
    try:
        wait_until(lambda: len(queue.peek(0, 100)) >= 6, what="streamed readings queued")
    finally:
        scheduler.stop()
    assert driver.listener is None
    assert not [t for t in threading.enumerate() if t.name.startswith("listen:")]
    assert {(q.reading.metric, q.reading.value) for q in queue.peek(0, 100)} >= {
        ("pm25", 3.0), ("pm10", 4.0)}
    queue.close()


def test_stream_through_a_serial_to_ethernet_converter_that_restarts(tmp_path: Path) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    host, tcp = server.getsockname()
    accepted: list[socket.socket] = []

    def converter() -> None:  # sends a line on each connection it accepts
        for n in (1, 2):
            conn = server.accept()[0]
            accepted.append(conn)
            conn.sendall(f"PM2.5={n},PM10={n}\r\n".encode())

    thread = threading.Thread(target=converter, daemon=True)
    thread.start()
    port = open_port(BusConfig(name="nport", host=host, port=tcp, timeout=0.3))
    driver = create(SerialLineConfig.model_validate(
        {"name": "env", "driver": "serial_line", "bus": "nport", "mode": "stream",
         "format": "pairs", "points": PM}), {"nport": port})
    assert isinstance(driver, SerialLine)
    driver.open()
    try:
        assert [r.value for r in poll_until(driver, 2, "the first connection")] == [1.0, 1.0]
        accepted[0].close()  # the converter restarts: the agent connects again by itself
        assert [r.value for r in poll_until(driver, 2, "the second connection",
                                            unplugged=True)] == [2.0, 2.0]
        assert port.opens == 2
    finally:
        driver.close()
        thread.join(5)
        for conn in accepted:
            conn.close()
        server.close()


def test_bytes_nobody_takes_are_bounded_and_counted(sensor: LineSensor) -> None:
    port = open_port(BusConfig(name="env", port=str(sensor.link)))
    listener = Listener(port, "env", max_bytes=100)
    listener.start()
    try:
        for n in range(1, 6):  # separate reads: the oldest are dropped whole
            sensor.write(b"PM2.5=1\n" * 5)
            wait_until(lambda n=n: listener.received == 40 * n, what="the listener to read")
        heard = listener.take()
    finally:
        listener.stop()
    kept = sum(len(c.data) for c in heard.chunks)
    assert kept <= 100 and heard.dropped >= 100 and kept + heard.dropped == 200
    assert heard.chunks[-1].data.endswith(b"PM2.5=1\n") and heard.error is None
