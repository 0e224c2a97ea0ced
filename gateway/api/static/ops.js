// The ops page: polls /v1/ops/status, /v1/ops/failures and /v1/ops/throughput with the operator's
// (or an admin's) token and draws the figures with hand-written SVG. No external scripts.
"use strict";

const TOKEN_KEY = "inboxlog.ops.token";
const POLL_MS = 5000;
// Thresholds for the health banner.
const MAX_OLDEST_SECONDS = 300;
const MAX_SYNC_LAG_SECONDS = 900;

const $ = (sel) => document.querySelector(sel);
const SVG_NS = "http://www.w3.org/2000/svg";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

// A token handed over in the URL fragment (#token=...) is taken once, kept in this tab's
// sessionStorage and removed from the address bar (fragments never reach the server).
function takeTokenFromFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get("token");
  if (token) {
    sessionStorage.setItem(TOKEN_KEY, token);
    history.replaceState(null, "", location.pathname + location.search);
  }
}

function token() { return sessionStorage.getItem(TOKEN_KEY); }

class AuthError extends Error {}

async function api(method, path) {
  const resp = await fetch(path, {
    method,
    headers: { Authorization: "Bearer " + token(), Accept: "application/json" },
    cache: "no-store",
  });
  if (resp.status === 401 || resp.status === 403) throw new AuthError(String(resp.status));
  const body = resp.status === 204 ? null : await resp.json();
  if (!resp.ok) throw new Error((body && body.error && body.error.message) || resp.statusText);
  return body;
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 90) return Math.round(seconds) + " s";
  if (seconds < 5400) return Math.round(seconds / 60) + " min";
  if (seconds < 172800) return (seconds / 3600).toFixed(1) + " h";
  return Math.round(seconds / 86400) + " d";
}

function when(iso) {
  if (!iso) return "never";
  const d = new Date(iso);
  return d.toISOString().replace("T", " ").slice(0, 19) + "Z";
}

function setCard(id, value, bad) {
  const card = document.getElementById(id);
  card.querySelector(".value").textContent = value;
  card.classList.toggle("bad", Boolean(bad));
}

function problems(status, failures) {
  const out = [];
  for (const q of status.queues) {
    if (q.depth === null) out.push(`broker unreachable (queue ${q.name})`);
  }
  if ((status.oldest_unprocessed_seconds || 0) > MAX_OLDEST_SECONDS) {
    out.push(`oldest unprocessed message waits ${duration(status.oldest_unprocessed_seconds)}`);
  }
  const unresolved = status.unresolved_failures ?? failures.length;
  if (unresolved > 0) out.push(`${unresolved} unresolved failure(s)`);
  for (const c of status.connections) {
    if (c.status === "reauth_required") {
      out.push(`connection ${c.id} needs to be reconnected (reauth_required)`);
    } else if (c.status === "error" || c.status === "auth_failed") {
      out.push(`connection ${c.id} ${c.status}`);
    } else if (c.imap && c.lag_seconds !== null && c.lag_seconds > MAX_SYNC_LAG_SECONDS) {
      out.push(`connection ${c.id} last synced ${duration(c.lag_seconds)} ago`);
    }
  }
  return out;
}

function renderBanner(list) {
  const banner = $("#banner");
  banner.replaceChildren();
  banner.className = list.length ? "unhealthy" : "healthy";
  banner.dataset.state = banner.className;
  banner.append(list.length ? `Unhealthy — ${list.length} problem(s)` : "Healthy — all systems normal");
  if (list.length) banner.append(el("ul", {}, ...list.map((p) => el("li", {}, p))));
}

function renderStatus(status) {
  const depths = status.queues.map((q) => q.depth);
  const known = depths.every((d) => d !== null);
  setCard("card-queue", known ? depths.reduce((a, b) => a + b, 0) : "unknown", !known);
  const p = status.pipeline;
  setCard("card-stored", p.stored);
  setCard("card-processing", p.processing);
  setCard("card-done", p.done);
  setCard("card-failed", p.failed, p.failed > 0);
  setCard("card-oldest", duration(status.oldest_unprocessed_seconds),
          (status.oldest_unprocessed_seconds || 0) > MAX_OLDEST_SECONDS);
  const g = status.gateway;
  setCard("card-smtp", g ? `${g.accepted} / ${g.rejected}` : "operator only");

  const body = $("#connections tbody");
  body.replaceChildren();
  if (!status.connections.length) {
    body.append(el("tr", {}, el("td", { colspan: 6, class: "empty" }, "no connections")));
  }
  for (const c of status.connections) {
    body.append(el("tr", { "data-connection-id": c.id },
      el("td", {}, c.id), el("td", {}, c.address), el("td", {}, c.kind),
      el("td", {}, el("span", { class: "pill " + c.status }, c.status)),
      el("td", {}, c.imap ? when(c.last_sync_at) : "no IMAP"),
      el("td", { class: "num" }, c.imap ? duration(c.lag_seconds) : "–")));
  }
}

async function retry(button) {
  button.disabled = true;
  button.textContent = "Retrying…";
  try {
    await api("POST", `/v1/ops/failures/${button.dataset.failureId}/retry`);
    button.textContent = "Queued";
  } catch (err) {
    button.textContent = "Retry failed";
    showError(err);
  }
  setTimeout(refresh, 1000);
}

function renderFailures(items) {
  const body = $("#failures tbody");
  body.replaceChildren();
  if (!items.length) {
    body.append(el("tr", {}, el("td", { colspan: 7, class: "empty" }, "no unresolved failures")));
  }
  for (const f of items) {
    const button = el("button", { type: "button", class: "retry", "data-failure-id": f.id }, "Retry");
    button.addEventListener("click", () => retry(button));
    body.append(el("tr", { "data-failure-id": f.id },
      el("td", {}, f.id), el("td", {}, when(f.created_at)), el("td", {}, f.stage),
      // Personal-inbox mail (C4): only its owner reads the text; ops sees that it failed.
      el("td", { class: "err" }, f.redacted ? `personal mail (connection ${f.connection_id}): hidden` : f.error),
      el("td", { class: "num" }, f.attempts),
      el("td", {}, "stored #" + f.stored_message_id), el("td", {}, button)));
  }
}

// A chart of one or more per-minute series: lines, or grouped bars.
function chart(target, items, series, kind) {
  const W = 600, H = 180, L = 40, R = 8, T = 10, B = 22;
  const root = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img",
                            "data-points": items.length, preserveAspectRatio: "none" });
  const max = Math.max(1, ...items.flatMap((it) => series.map((s) => it[s.key])));
  const x = (i) => L + (i * (W - L - R)) / Math.max(1, items.length - 1);
  const y = (v) => T + (H - T - B) * (1 - v / max);
  for (const frac of [0, 0.5, 1]) {
    const v = Math.round(max * frac);
    root.append(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#e4e7ec" }));
    root.append(svg("text", { x: L - 4, y: y(v) + 3, "text-anchor": "end" }, String(v)));
  }
  items.forEach((it, i) => {
    if (i % 15 === 0 || i === items.length - 1) {
      const label = new Date(it.minute).toISOString().slice(11, 16);
      const anchor = i === 0 ? "start" : i === items.length - 1 ? "end" : "middle";
      root.append(svg("text", { x: x(i), y: H - 6, "text-anchor": anchor }, label));
    }
  });
  if (kind === "line") {
    for (const s of series) {
      const d = items.map((it, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(it[s.key]).toFixed(1)}`);
      root.append(svg("path", { d: d.join(""), fill: "none", stroke: s.color, "stroke-width": 2,
                                class: "series", "data-series": s.key }));
    }
  } else {
    const slot = (W - L - R) / Math.max(1, items.length);
    const bw = Math.max(1, (slot * 0.8) / series.length);
    series.forEach((s, k) => {
      const g = svg("g", { class: "series", "data-series": s.key, fill: s.color });
      items.forEach((it, i) => {
        const v = it[s.key];
        if (!v) return;
        const bx = L + i * slot + k * bw;
        g.append(svg("rect", { x: bx.toFixed(1), y: y(v).toFixed(1), width: bw.toFixed(1),
                               height: (H - B - y(v)).toFixed(1) }));
      });
      root.append(g);
    });
  }
  $(target).replaceChildren(root);
}

function renderThroughput(items) {
  chart("#backlog-chart", items, [{ key: "backlog", color: "#2f6fdf" }], "line");
  chart("#throughput-chart", items, [
    { key: "stored", color: "#2f6fdf" },
    { key: "processed", color: "#12a594" },
    { key: "failed", color: "#b42318" },
  ], "bars");
}

function showError(err) {
  const box = $("#error");
  box.hidden = !err;
  box.textContent = err ? "Could not refresh: " + err.message : "";
}

function showLogin() {
  sessionStorage.removeItem(TOKEN_KEY);
  $("#dashboard").hidden = true;
  $("#signout").hidden = true;
  $("#login").hidden = false;
}

let timer = null;

async function refresh() {
  clearTimeout(timer);
  try {
    const [status, failures, through] = await Promise.all([
      api("GET", "/v1/ops/status"),
      api("GET", "/v1/ops/failures?limit=100"),
      api("GET", "/v1/ops/throughput?minutes=60"),
    ]);
    renderStatus(status);
    renderFailures(failures.items);
    renderThroughput(through.items);
    renderBanner(problems(status, failures.items));
    $("#scope").textContent = status.gateway ? "operator view: all accounts" : "admin view: your account";
    $("#updated").textContent = "updated " + new Date().toLocaleTimeString();
    showError(null);
  } catch (err) {
    if (err instanceof AuthError) { showLogin(); return; }
    const banner = $("#banner");
    banner.className = "unhealthy";
    banner.textContent = "Unhealthy — the API did not answer";
    showError(err);
  }
  timer = setTimeout(refresh, POLL_MS);
}

function openDashboard() {
  if (!token()) { showLogin(); return; }
  $("#login").hidden = true;
  $("#dashboard").hidden = false;
  $("#signout").hidden = false;
  refresh();
}

function start() {
  takeTokenFromFragment();
  $("#login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("#token-input").value.trim());
    $("#token-input").value = "";
    openDashboard();
  });
  $("#signout").addEventListener("click", () => { clearTimeout(timer); showLogin(); });
  openDashboard();
}

document.addEventListener("DOMContentLoaded", start, { once: true });
