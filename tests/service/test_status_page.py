"""The status page as a technician sees it: Debian's headless Chromium (driven by Selenium through
the system chromedriver, no browser download) against a running agent polling simulated Modbus
devices and publishing to a real Mosquitto. Asserts what is on the screen: devices online,
values updating and marked as changed, sparklines, a device going offline, the token form, a
phone-width layout, and that no request the page made left the machine."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from agent.config.load import load_config
from agent.polling import recent
from agent.service.runtime import Agent
from agent.sim.broker import LocalBroker, free_port
from agent.sim.modbus import ModbusSimulator
from tests.service.test_webui import TOKEN, config_with, token_file
from tests.support import modbus_device, wait_until

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
INSTALL = "apt-get install -y chromium chromium-driver (bash .ci/setup does it)"


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.fail(f"{' and '.join(missing)} missing: run {INSTALL}")
    opts = Options()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-default-apps", "--disable-extensions",
                "--no-first-run", "--no-default-browser-check", "--window-size=1280,900",
                # names resolve nowhere: even a page that tried could not reach another host
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL"})  # every request made
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


@pytest.fixture
def agents() -> Iterator[list[Agent]]:
    started: list[Agent] = []
    yield started
    for a in started:
        a.stop()


def start_agent(tmp_path: Path, broker: LocalBroker, agents: list[Agent],
                devices: list[dict[str, Any]], **page: Any) -> str:
    port = free_port()
    cfg = config_with(tmp_path, broker.port, devices, {"enabled": True, "port": port, **page})
    agent = Agent(load_config(cfg))
    agents.append(agent)
    agent.start()
    return f"http://127.0.0.1:{port}"


def text(driver: webdriver.Chrome, css: str) -> str | None:
    """The text of the first element matching `css`, or None (read in one script call)."""
    found: str | None = driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;", css)
    return found


def requests_made(driver: webdriver.Chrome) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg["method"] == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    return urls


def test_technician_sees_devices_values_changes_and_a_device_going_offline(
        tmp_path: Path, broker: LocalBroker, plc: ModbusSimulator, agents: list[Agent],
        browser: webdriver.Chrome, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recent, "HISTORY_STEP_MS", 200)  # sparkline buckets in test time
    meter = ModbusSimulator(port=free_port())
    meter.start()
    try:
        plc.set_value(1, "holding", 100, "float32", 0.42)
        plc.set_value(1, "holding", 102, "uint16", 123)
        base = start_agent(tmp_path, broker, agents, [
            modbus_device("intake-plc", plc.port, interval="200ms"),
            modbus_device("meter", meter.port, interval="200ms")])
        browser.get_log("performance")  # start the request log here
        browser.get(base + "/?every=500")
        plc_card, meter_card = '[data-device="intake-plc"]', '[data-device="meter"]'
        wait_until(lambda: text(browser, f"{plc_card} .state") == "online"
                   and text(browser, f"{meter_card} .state") == "online",
                   what="both devices shown online")
        chlorine = f'{plc_card} [data-point="chlorine"]'
        wait_until(lambda: text(browser, f"{chlorine} .v") == "1.23", what="chlorine 1.23")
        assert text(browser, f"{chlorine} .unit") == "mg/L"
        assert text(browser, f'{plc_card} [data-point="turbidity"] .v') == "0.42"
        assert text(browser, "#uplink [data-field=state]") == "Connected"

        plc.set_value(1, "holding", 102, "uint16", 150)  # the technician opens a valve...
        value_cell = browser.find_element(By.CSS_SELECTOR, f"{chlorine} .value")
        wait_until(lambda: text(browser, f"{chlorine} .v") == "1.5", what="the new value")
        assert "changed" in (value_cell.get_attribute("class") or "")  # it flashes
        wait_until(lambda: browser.find_elements(By.CSS_SELECTOR,
                                                 f"{chlorine} .spark svg polyline"),
                   what="a sparkline")

        meter.stop()  # the meter loses power
        stopped = time.monotonic()
        wait_until(lambda: text(browser, f"{meter_card} .state") == "offline", timeout=15,
                   what="the meter shown offline")
        took = time.monotonic() - stopped
        error = browser.find_element(By.CSS_SELECTOR, f"{meter_card} .error")
        assert error.is_displayed() and "Connection refused" in error.text
        assert text(browser, f"{plc_card} .state") == "online"
        assert text(browser, "#device-count") == "2: 1 online, 1 offline"
        print(f"meter shown offline {took:.2f} s after it stopped answering")

        urls = requests_made(browser)
        assert {u.split("?")[0] for u in urls} >= {f"{base}/", f"{base}/app.js",
                                                   f"{base}/app.css", f"{base}/status.json"}
        assert [u for u in urls if not u.startswith(base + "/")] == []  # nothing left the box

        # A phone: one column, nothing wider than the screen.
        browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": 360, "height": 760, "deviceScaleFactor": 2, "mobile": True})
        try:
            wait_until(lambda: browser.execute_script("return window.innerWidth") == 360,
                       what="the phone viewport")
            overflow = browser.execute_script("""
                const w = window.innerWidth;
                const wide = [...document.querySelectorAll('.card, table, header')]
                    .filter(e => e.getBoundingClientRect().right > w + 0.5).length;
                return [document.documentElement.scrollWidth - w, wide];""")
            assert overflow == [0, 0]
            assert browser.find_element(By.CSS_SELECTOR, f"{chlorine} .v").is_displayed()
        finally:
            browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    finally:
        meter.stop()


def test_page_asks_for_the_token_and_refuses_a_wrong_one(
        tmp_path: Path, broker: LocalBroker, plc: ModbusSimulator, agents: list[Agent],
        browser: webdriver.Chrome) -> None:
    base = start_agent(tmp_path, broker, agents, [modbus_device("intake-plc", plc.port)],
                       token_file=token_file(tmp_path))
    browser.delete_all_cookies()
    browser.get(base + "/?every=500")
    form = wait_until(lambda: [f for f in browser.find_elements(By.ID, "login")
                               if f.is_displayed()], what="the token form")[0]
    assert not browser.find_element(By.ID, "main").is_displayed()  # no data without it
    form.find_element(By.NAME, "token").send_keys("not-the-token-at-all")
    form.submit()
    wait_until(lambda: browser.find_element(By.ID, "login-failed").is_displayed(),
               what="'That token is not right.'")
    assert text(browser, '[data-device="intake-plc"] .state') is None
    form = browser.find_element(By.ID, "login")
    form.find_element(By.NAME, "token").send_keys(TOKEN)
    form.submit()
    wait_until(lambda: text(browser, '[data-device="intake-plc"] .state') == "online",
               what="the device after logging in")
    assert TOKEN not in browser.page_source
