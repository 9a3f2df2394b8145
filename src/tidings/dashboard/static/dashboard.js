// The tidings dashboard. Everything that comes from the server is put into the page as
// text (textContent, createElement), never parsed as HTML.
"use strict";

const POLL_MS = 2000;
const TOKEN_KEY = "tidings.dashboard.token";
const SVG = "http://www.w3.org/2000/svg";
const COLOURS = 6;

const state = { overview: null, deadSubscription: null, traceId: null, timer: null, signatures: {} };

function $(id) { return document.getElementById(id); }

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null) continue;
    if (key === "className") node.className = value;
    else if (key === "text") node.textContent = String(value);
    else if (key === "onClick") node.addEventListener("click", value);
    else if (key.startsWith("data-") || key === "title" || key === "type") node.setAttribute(key, String(value));
    else node[key] = value;
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" || typeof child === "number" ? String(child) : child);
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
  return node;
}

function time(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

function number(value) {
  if (value === null || value === undefined) return "-";
  return Number.isInteger(value) ? value.toLocaleString() : value.toFixed(1);
}

// -- talking to the server ----------------------------------------------------------------

class Unauthorized extends Error {}

async function api(path, options) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const init = Object.assign({ headers: {} }, options || {});
  init.headers = Object.assign({ Authorization: "Bearer " + token, Accept: "application/json" }, init.headers);
  if (init.body !== undefined) init.headers["Content-Type"] = "application/json";
  const response = await fetch(path, init);
  let body = null;
  try { body = await response.json(); } catch (_) { body = null; }
  if (response.status === 401) throw new Unauthorized((body && body.detail) || "the token was refused");
  if (!response.ok) throw new Error((body && body.detail) || response.status + " " + response.statusText);
  return body;
}

function notify(message, bad) {
  const notice = $("notice");
  notice.textContent = message;
  notice.classList.toggle("bad", Boolean(bad));
  notice.hidden = false;
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  if (state.timer) clearTimeout(state.timer);
  state.timer = null;
  $("main").hidden = true;
  $("sign-out").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("status").textContent = "";
}

async function act(label, work) {
  try {
    const message = await work();
    notify(message, false);
    await refresh();
  } catch (error) {
    if (error instanceof Unauthorized) signOut(error.message);
    else notify(label + " failed: " + error.message, true);
  }
}

// -- subscriptions ------------------------------------------------------------------------

function limits(sub) {
  const parts = [sub.limits.inFlight + (sub.limits.inFlightSet ? "*" : "") + " in flight"];
  if (sub.limits.rate !== null) parts.push(sub.limits.rate + "/s" + (sub.limits.rateSet ? "*" : ""));
  return parts.join(", ");
}

// What the operator set, once every running listener reports following it.
function stateOf(sub) {
  const following = sub.listeners.every((l) => l.paused === sub.paused);
  if (following) return sub.paused ? ["paused", "paused"] : ["running", "running"];
  return sub.paused ? ["pausing", "pending"] : ["resuming", "pending"];
}

function renderSubscriptions(overview) {
  const signature = JSON.stringify([state.deadSubscription, overview.subscriptions.map((s) =>
    [s.name, s.depth, s.processedPerSecond, s.listeners.map((l) => l.paused), s.paused, s.limits])]);
  if (state.signatures.subscriptions === signature) return;
  state.signatures.subscriptions = signature;
  const body = $("subscriptions").querySelector("tbody");
  const rows = overview.subscriptions.map((sub) => {
    const d = sub.depth;
    const toggle = sub.paused
      ? el("button", { type: "button", className: "small", text: "Resume", "data-action": "resume",
          onClick: () => act("Resume", async () => { await api(path(sub.name, "resume"), { method: "POST" }); return sub.name + " resumed"; }) })
      : el("button", { type: "button", className: "small quiet", text: "Pause", "data-action": "pause",
          onClick: () => act("Pause", async () => { await api(path(sub.name, "pause"), { method: "POST" }); return sub.name + " paused"; }) });
    const show = el("button", { type: "button", className: "small quiet", text: "Dead letters",
      onClick: () => { selectDeadSubscription(sub.name); } });
    return el("tr", { "data-subscription": sub.name, className: sub.name === state.deadSubscription ? "selected" : "" },
      el("td", { className: "name", text: sub.name }),
      el("td", { className: "clip", text: sub.topics.join(", ") + (sub.eventTypes.length ? " (" + sub.eventTypes.length + " types)" : ""),
        title: sub.eventTypes.join(", ") || "every event type" }),
      el("td", { className: "num ready", text: number(d.ready) }),
      el("td", { className: "num in-flight", text: number(d.inFlight) }),
      el("td", { className: "num delayed", text: number(d.delayed) }),
      el("td", { className: "num dead" + (d.dead > 0 ? " some" : ""), text: number(d.dead) }),
      el("td", { className: "num rate", text: number(sub.processedPerSecond) }),
      el("td", { className: "num listeners", text: number(sub.listeners.length) }),
      el("td", { className: "limits", text: limits(sub), title: "* set by an operator" }),
      el("td", { className: "state" }, el("span", { className: "badge " + stateOf(sub)[1], text: stateOf(sub)[0] })),
      el("td", { className: "actions" }, toggle, show));
  });
  body.replaceChildren(...rows);
  $("no-subscriptions").hidden = overview.subscriptions.length > 0;
  $("topics").textContent = overview.topics.length
    ? "topics: " + overview.topics.map((t) => t.name + " → " + t.subscriptions.length).join(" · ")
    : "";
}

function path(name, action) {
  return "/api/subscriptions/" + encodeURIComponent(name) + "/" + action;
}

// -- the chart ----------------------------------------------------------------------------

function drawChart(container, history, names, field) {
  const width = 560, height = 170, left = 44, right = 8, top = 8, bottom = 22;
  const root = svg("svg", { viewBox: "0 0 " + width + " " + height, preserveAspectRatio: "none", role: "img" });
  const now = Date.now();
  const span = history.window * 1000;
  let max = 0;
  for (const name of names) for (const point of history.subscriptions[name] || []) max = Math.max(max, point[field]);
  max = max <= 0 ? 1 : niceCeiling(max);
  const x = (at) => left + (width - left - right) * (1 - (now - at) / span);
  const y = (v) => top + (height - top - bottom) * (1 - v / max);
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    root.append(svg("line", { x1: left, x2: width - right, y1: y(v), y2: y(v), class: i === 0 ? "axis" : "gridline" }));
    const label = svg("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end" });
    label.textContent = String(Number(v.toFixed(2)));
    root.append(label);
  }
  for (let minutes = 0; minutes <= span / 60000; minutes += 2) {
    const label = svg("text", { x: x(now - minutes * 60000), y: height - 6, "text-anchor": minutes === 0 ? "end" : "middle" });
    label.textContent = minutes === 0 ? "now" : "-" + minutes + " min";
    root.append(label);
  }
  names.forEach((name, index) => {
    const points = (history.subscriptions[name] || [])
      .map((p) => [x(Date.parse(p.at)), y(p[field])])
      .filter(([px]) => px >= left);
    if (points.length === 0) return;
    const line = svg("polyline", { class: "series c" + (index % COLOURS), points: points.map((p) => p[0].toFixed(1) + "," + p[1].toFixed(1)).join(" ") });
    const title = svg("title", {});
    title.textContent = name;
    line.append(title);
    root.append(line);
  });
  container.replaceChildren(root);
}

function niceCeiling(value) {
  const power = Math.pow(10, Math.floor(Math.log10(value)));
  for (const step of [1, 2, 5, 10]) if (value <= step * power) return step * power;
  return 10 * power;
}

function renderHistory(history) {
  const names = Object.keys(history.subscriptions).sort();
  drawChart($("chart-throughput"), history, names, "throughput");
  drawChart($("chart-backlog"), history, names, "backlog");
  $("legend").replaceChildren(...names.map((name, index) =>
    el("li", {}, el("span", { className: "swatch c" + (index % COLOURS) }), el("span", { text: name }))));
  $("window").textContent = "last " + Math.round(history.window / 60) + " minutes, a point every " + history.interval + " s";
}

// -- dead letters -------------------------------------------------------------------------

function selectDeadSubscription(name) {
  state.deadSubscription = name;
  $("dead-subscription").value = name;
  state.signatures.dead = null;
  refresh();
}

function renderDeadOptions(overview) {
  const select = $("dead-subscription");
  const names = overview.subscriptions.map((s) => s.name);
  if (!state.deadSubscription || !names.includes(state.deadSubscription)) {
    const withDead = overview.subscriptions.find((s) => s.depth.dead > 0);
    state.deadSubscription = withDead ? withDead.name : names[0] || null;
  }
  const signature = names.join("\n") + "\n" + overview.subscriptions.map((s) => s.depth.dead).join(",");
  if (state.signatures.options !== signature) {
    state.signatures.options = signature;
    select.replaceChildren(...overview.subscriptions.map((s) =>
      el("option", { value: s.name, text: s.name + " (" + s.depth.dead + ")" })));
  }
  select.value = state.deadSubscription || "";
}

function renderDeadLetters(result) {
  const signature = JSON.stringify(result);
  if (state.signatures.dead === signature) return;
  state.signatures.dead = signature;
  const sub = result.subscription;
  const rows = result.deadLetters.map((d) => {
    const redrive = el("button", { type: "button", className: "small", text: "Redrive", "data-action": "redrive",
      onClick: () => act("Redrive", async () => {
        const r = await api(path(sub, "redrive"), { method: "POST", body: JSON.stringify({ ids: [d.id] }) });
        return sub + ": " + r.redriven + " dead letter redriven";
      }) });
    return el("tr", { "data-dead-letter-id": d.id },
      el("td", {}, el("div", { className: "name", text: d.eventType }), el("div", { className: "muted mono clip", text: d.topic + " · " + d.messageId, title: d.messageId })),
      el("td", { className: "mono clip key", text: d.key, title: d.key }),
      el("td", { className: "num", text: number(d.attempts) }),
      el("td", { className: "wrap reason", text: d.reason }),
      el("td", { className: "num", text: time(d.lastFailedAt).slice(0, 8), title: d.lastFailedAt }),
      el("td", { className: "body" },
        el("details", { className: "body" },
          el("summary", { className: "mono", text: preview(d.body) }),
          el("pre", { text: pretty(d.body) + (d.bodyTruncated ? "\n…" : "") }))),
      el("td", { className: "actions" }, redrive));
  });
  $("dead-letters").querySelector("tbody").replaceChildren(...rows);
  $("no-dead-letters").hidden = rows.length > 0;
  $("redrive-all").disabled = rows.length === 0;
  $("purge").disabled = rows.length === 0;
}

// The event's data when the body is an event envelope (flat or CloudEvents), else the body.
function preview(body) {
  try {
    const parsed = JSON.parse(body);
    return JSON.stringify(parsed.eventData ?? parsed.data ?? parsed);
  } catch (_) {
    return body.replace(/\s+/g, " ");
  }
}

function pretty(body) {
  try { return JSON.stringify(JSON.parse(body), null, 2); } catch (_) { return body; }
}

// -- trace --------------------------------------------------------------------------------

function renderTrace(records, title) {
  $("trace-title").textContent = title;
  $("trace").querySelector("tbody").replaceChildren(...records.map((r) => {
    const open = el("button", { type: "button", className: "small quiet mono", text: r.correlationId.slice(0, 8), title: r.correlationId,
      onClick: () => { $("correlation-id").value = r.correlationId; showTrace(r.correlationId); } });
    return el("tr", { "data-outcome": r.outcome },
      el("td", { className: "num", text: time(r.at), title: r.at }),
      el("td", {}, el("span", { className: "outcome " + r.outcome, text: r.outcome.replace("_", " ") })),
      el("td", {}, el("div", { text: r.eventType }), state.traceId ? null : open),
      el("td", { className: "mono clip", text: r.entityId, title: r.entityId }),
      el("td", { text: r.subscription || (r.topic ? "topic " + r.topic : "") }),
      el("td", { className: "num", text: r.attempt === null ? "" : String(r.attempt) }),
      el("td", { className: "mono clip", text: r.process, title: r.process }),
      el("td", { className: "wrap", text: r.detail || "" }));
  }));
}

async function showTrace(id) {
  state.traceId = id || null;
  await refreshTrace();
}

async function refreshTrace() {
  if (state.traceId) {
    const result = await api("/api/trace/" + encodeURIComponent(state.traceId));
    renderTrace(result.records, result.records.length
      ? "Correlation id " + state.traceId + ": " + result.records.length + " steps"
      : "Nothing recorded for correlation id " + state.traceId + " (yet).");
  } else {
    const result = await api("/api/trace?limit=15");
    renderTrace(result.records, "The latest steps of every event; pick a correlation id to follow one change.");
  }
}

// -- the loop -----------------------------------------------------------------------------

async function refresh() {
  if (state.timer) clearTimeout(state.timer);
  try {
    const [overview, history] = await Promise.all([api("/api/overview"), api("/api/history")]);
    state.overview = overview;
    renderDeadOptions(overview);
    renderSubscriptions(overview);
    renderHistory(history);
    if (state.deadSubscription) {
      renderDeadLetters(await api(path(state.deadSubscription, "dead-letters")));
    }
    await refreshTrace();
    $("status").textContent = "updated " + time(overview.generatedAt);
    $("status").classList.remove("down");
  } catch (error) {
    if (error instanceof Unauthorized) { signOut(error.message); return; }
    $("status").textContent = "not updated: " + error.message;
    $("status").classList.add("down");
  }
  state.timer = setTimeout(refresh, POLL_MS);
}

function start() {
  $("login").hidden = true;
  $("main").hidden = false;
  $("sign-out").hidden = false;
  refresh();
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token").value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token").value = "";
    start();
  });
  $("sign-out").addEventListener("click", () => signOut(""));
  $("dead-subscription").addEventListener("change", (event) => selectDeadSubscription(event.target.value));
  $("redrive-all").addEventListener("click", () => {
    const sub = state.deadSubscription;
    if (!sub) return;
    act("Redrive", async () => {
      const r = await api(path(sub, "redrive"), { method: "POST", body: JSON.stringify({}) });
      return sub + ": " + r.redriven + " dead letter(s) redriven";
    });
  });
  $("purge").addEventListener("click", () => {
    const sub = state.deadSubscription;
    if (!sub || !window.confirm("Delete every dead letter of " + sub + "?")) return;
    act("Purge", async () => {
      const r = await api("/api/subscriptions/" + encodeURIComponent(sub) + "/dead-letters", { method: "DELETE" });
      return sub + ": " + r.purged + " dead letter(s) purged";
    });
  });
  $("trace-form").addEventListener("submit", (event) => {
    event.preventDefault();
    showTrace($("correlation-id").value.trim()).catch((error) => notify("Trace failed: " + error.message, true));
  });
  $("trace-recent").addEventListener("click", () => {
    $("correlation-id").value = "";
    showTrace(null).catch((error) => notify("Trace failed: " + error.message, true));
  });
  if (sessionStorage.getItem(TOKEN_KEY)) start();
  else signOut("");
});
