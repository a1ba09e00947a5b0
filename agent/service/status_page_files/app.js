// edge-agent status page: polls /status.json and /page.json and updates the page in place.
// No framework, no external assets; every value goes in through textContent (never as HTML).
// Ages are computed against the agent's own clock (the snapshot's ts), so a laptop whose clock
// is off still shows "3 s ago" correctly.
"use strict";

const params = new URLSearchParams(location.search);
const EVERY = Math.min(60000, Math.max(250, Number(params.get("every")) || 2000));
const SVG = "http://www.w3.org/2000/svg";
const $ = (sel, root = document) => root.querySelector(sel);
const HISTORY_EVERY = 60000;  // re-read the sparklines' history; in between, add each refresh's sample
let failingSince = 0;
let historyAt = 0;
const series = {};  // device -> point -> [[bucket, value or null], ...], oldest first

function ago(ms) {
  if (ms === null || ms === undefined) return "–";
  const s = Math.max(0, ms / 1000);
  if (s < 1) return "just now";
  return duration(s) + " ago";
}

function duration(s) {
  if (s < 60) return Math.round(s) + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (Math.round(s % 60) ? Math.round(s % 60) + " s" : "");
  if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  return Math.floor(s / 86400) + " d " + Math.floor((s % 86400) / 3600) + " h";
}

function utc(ts) {
  return ts ? new Date(ts).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC") : "";
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return (i ? n.toFixed(n < 10 ? 1 : 0) : n) + " " + units[i];
}

function show(value) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "number") {  // 4 significant digits; the full value is in the tooltip
    if (Number.isInteger(value)) return String(value);
    return Math.abs(value) >= 1000 ? value.toFixed(1) : String(Number(value.toPrecision(4)));
  }
  return String(value);
}

function set(root, field, text, cls) {
  const el = $(`[data-field="${field}"]`, root);
  el.textContent = text;
  if (cls !== undefined) el.className = cls;
  return el;
}

function renderSummary(st) {
  const now = st.ts;
  const up = $("#uplink");
  const connected = st.uplink.connected;
  set(up, "state", connected ? "Connected" : "Disconnected", "big " + (connected ? "ok" : "bad"));
  set(up, "since", connected && st.uplink.since ? ago(now - st.uplink.since) : "–").title = utc(st.uplink.since);
  set(up, "last_ack", st.uplink.last_ack ? ago(now - st.uplink.last_ack) : "none yet").title = utc(st.uplink.last_ack);
  set(up, "reconnects", String(st.uplink.reconnects));
  set(up, "published", String(st.published) + " readings");
  const err = $('[data-field="error"]', up);
  err.hidden = connected || !st.uplink.last_error;
  err.textContent = st.uplink.last_error || "";

  const q = st.queue;
  const qc = $("#queue");
  set(qc, "depth", q.depth + (q.depth === 1 ? " reading waiting" : " readings waiting"),
      "big " + (q.depth > 1000 ? "warn" : "ok"));
  set(qc, "oldest", q.oldest_age_s === null ? "–" : duration(q.oldest_age_s));
  set(qc, "bytes", bytes(q.bytes));
  set(qc, "evicted", String(q.evicted), q.evicted ? "warn" : "");
  set(qc, "dropped", String(q.dropped), q.dropped ? "warn" : "");

  const ag = $("#agent");
  set(ag, "clock", st.clock_synced ? "Clock synchronized" : "Clock NOT synchronized",
      "big " + (st.clock_synced ? "ok" : "warn")).title = st.clock_synced ? "" :
      "readings are flagged clock=unsynced until NTP has synchronized the clock";
  set(ag, "version", st.version);
  set(ag, "uptime", duration(st.uptime_s));
  set(ag, "disk", bytes(st.disk_free_bytes), st.disk_free_bytes !== null && st.disk_free_bytes < 200e6 ? "warn" : "");
  set(ag, "cpu", st.cpu_temp_c === null ? "–" : st.cpu_temp_c + " °C", st.cpu_temp_c > 75 ? "warn" : "");
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function deviceCard(name) {
  const card = el("article", "card device");
  card.dataset.device = name;
  const head = el("header");
  head.append(el("h3", "", name), el("span", "state"));
  card.append(head, el("div", "meta muted"), el("p", "error"), el("table"));
  $(".error", card).hidden = true;
  $("#devices").append(card);
  return card;
}

function pointRow(table, name) {
  const row = el("tr");
  row.dataset.point = name;
  const value = el("td", "value");
  value.append(el("span", "v"), el("span", "unit"));
  const label = el("td", "name");
  name.split("_").forEach((part, i, all) => {  // may wrap after an underscore, not mid-word
    label.append(part + (i < all.length - 1 ? "_" : ""));
    if (i < all.length - 1) label.append(el("wbr"));
  });
  row.append(label, value, el("td", "spark"), el("td", "age"));
  table.append(row);
  return row;
}

function merge(device, metric, last, page) {
  // The newest sample of a point joins its series (replacing one of the same bucket).
  const byPoint = series[device] || (series[device] = {});
  const s = byPoint[metric] || (byPoint[metric] = []);
  if (last) {
    const tail = s[s.length - 1];
    if (tail && tail[0] === last[0]) tail[1] = last[1];
    else if (!tail || tail[0] < last[0]) s.push([last[0], last[1]]);
  }
  while (s.length && s[0][0] <= page.bucket - page.samples) s.shift();
  return s;
}

function sparkline(cell, history, page) {
  const w = 100, h = 30, pad = 3;
  const pts = history.filter((p) => p[1] !== null);
  cell.replaceChildren();
  if (pts.length < 2) return;
  let lo = Math.min(...pts.map((p) => p[1]));
  let hi = Math.max(...pts.map((p) => p[1]));
  if (hi === lo) { hi += 1; lo -= 1; }
  const windowMs = page.samples * page.step_ms;
  const x = (b) => (w * (1 - (page.bucket - b) / page.samples)).toFixed(1);
  const y = (v) => (h - pad - ((v - lo) / (hi - lo)) * (h - 2 * pad)).toFixed(1);
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.setAttribute("preserveAspectRatio", "none");
  const title = document.createElementNS(SVG, "title");
  title.textContent = `last ${duration(windowMs / 1000).trim()}: min ${show(Math.min(...pts.map((p) => p[1])))}, max ${show(Math.max(...pts.map((p) => p[1])))}`;
  svg.append(title);
  let run = [];
  const flush = () => {
    if (run.length > 1) {
      const line = document.createElementNS(SVG, "polyline");
      line.setAttribute("points", run.join(" "));
      line.setAttribute("vector-effect", "non-scaling-stroke");
      svg.append(line);
    }
    run = [];
  };
  for (const [t, v] of history) {
    if (v === null) flush(); else run.push(`${x(t)},${y(v)}`);
  }
  flush();
  const [lt, lv] = pts[pts.length - 1];
  const dot = document.createElementNS(SVG, "circle");
  dot.setAttribute("cx", x(lt)); dot.setAttribute("cy", y(lv)); dot.setAttribute("r", "2");
  svg.append(dot);
  cell.append(svg);
}

function renderDevices(st, page) {
  const now = page.ts;
  const names = Object.keys(page.devices);
  const counts = {};
  for (const name of names) {
    const health = st.devices[name] || { state: "stale", last_ok: null, last_error: null, last_error_ts: null, polls: 0 };
    const info = page.devices[name];
    counts[health.state] = (counts[health.state] || 0) + 1;
    const card = $(`[data-device="${CSS.escape(name)}"]`) || deviceCard(name);
    card.className = "card device " + health.state;
    const badge = $(".state", card);
    badge.textContent = health.state;
    badge.className = "state " + health.state;
    $(".meta", card).textContent = `${info.driver} · every ${show(info.interval_s)} s · ` +
      (health.last_ok ? `answered ${ago(st.ts - health.last_ok)}` : "no answer yet");
    const err = $(".error", card);
    err.hidden = !health.last_error || health.state === "online";
    err.textContent = health.last_error ? `${health.last_error} (${ago(st.ts - health.last_error_ts)})` : "";
    err.title = utc(health.last_error_ts);
    const table = $("table", card);
    for (const [metric, p] of Object.entries(info.points)) {
      const row = $(`[data-point="${CSS.escape(metric)}"]`, table) || pointRow(table, metric);
      const cell = $(".value", row);
      const good = p.quality === "good" || p.quality === "unmapped";
      const text = good ? show(p.value) : p.quality.replace(/_/g, " ");
      const v = $(".v", cell);
      if (v.textContent !== text) {
        if (v.textContent !== "" && good) {  // restart the flash
          cell.classList.remove("changed"); void cell.offsetWidth; cell.classList.add("changed");
        }
        v.textContent = text;
      }
      cell.classList.toggle("bad", !good);
      cell.title = good ? String(p.value) : `last value ${show(p.value)} ${ago(now - p.value_ts)}`;
      $(".unit", cell).textContent = good && p.unit ? p.unit : "";
      sparkline($(".spark", row), merge(name, metric, p.last, page), page);
      const age = $(".age", row);
      age.replaceChildren(document.createTextNode(ago(now - p.ts)));
      age.title = `read ${utc(p.ts)}; value since ${utc(p.changed_ts)}`;
      const still = p.changed_ts ? now - p.changed_ts : 0;
      if (good && typeof p.value === "number" && still > 5 * 60000) {
        age.append(el("br"), el("span", "stuck", `same for ${duration(still / 1000)}`));
      }
    }
  }
  for (const card of document.querySelectorAll("[data-device]")) {
    if (!(card.dataset.device in page.devices)) card.remove();
  }
  $("#device-count").textContent = `${names.length}: ` +
    ["online", "offline", "stale"].filter((s) => counts[s]).map((s) => `${counts[s]} ${s}`).join(", ");
}

async function getJson(path) {
  const r = await fetch(path, { cache: "no-store", credentials: "same-origin" });
  if (r.status === 401) throw Object.assign(new Error("token required"), { login: true });
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}

async function refresh() {
  try {
    const wantHistory = Date.now() - historyAt > HISTORY_EVERY;
    const [st, page, hist] = await Promise.all([getJson("/status.json"), getJson("/page.json"),
      wantHistory ? getJson("/history.json") : null]);
    if (hist) {
      for (const [device, points] of Object.entries(hist.devices)) {
        series[device] = {};
        for (const [metric, samples] of Object.entries(points)) {
          series[device][metric] = samples.map(([i, v]) => [hist.bucket + i, v]);
        }
      }
      historyAt = Date.now();
    }
    $("#gateway").textContent = page.gateway;
    $("#site").textContent = page.site || "";
    document.title = `${page.gateway} · edge-agent`;
    renderSummary(st);
    renderDevices(st, page);
    $("#main").hidden = false;
    $("#login").hidden = true;
    $("#banner").hidden = true;
    failingSince = 0;
  } catch (e) {
    if (e.login) {
      $("#login").hidden = false;
      $("#login-failed").hidden = params.get("login") !== "failed";
      $("#main").hidden = true;
      $("#live").textContent = "token required";
      $("#live").className = "live down";
      return;  // no polling until the form is sent
    }
    failingSince = failingSince || Date.now();
    const banner = $("#banner");
    banner.hidden = false;
    banner.textContent = `The agent is not answering (since ${new Date(failingSince).toLocaleTimeString()}): ` +
      "the values below are the last it sent.";
  }
  const live = $("#live");
  live.className = "live " + (failingSince ? "down" : "ok");
  live.textContent = failingSince ? "not answering" : "live";
  setTimeout(refresh, EVERY);
}

$("#every").textContent = show(EVERY / 1000);
refresh();
