// The status page: polls /status/data every 2 s and draws it. Only textContent is
// written (never HTML from the data); the API key, when one is needed, is kept in
// this tab's sessionStorage and sent with the data requests alone.
"use strict";

const POLL_MS = 2000;
const KEY_ITEM = "claude-proxy-key";
const $ = (id) => document.getElementById(id);
let last = null;          // the last snapshot
let skew = 0;             // the daemon's clock minus ours, in seconds
let seen = new Set();     // requests already drawn (to mark the new ones)
let timer = null;

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

function now() { return Date.now() / 1000 + skew; }

function duration(seconds) {
  seconds = Math.max(0, Math.round(seconds));
  const d = Math.floor(seconds / 86400), h = Math.floor(seconds % 86400 / 3600);
  const m = Math.floor(seconds % 3600 / 60), s = seconds % 60;
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${String(m).padStart(2, "0")}m`;
  if (m) return `${m}m ${String(s).padStart(2, "0")}s`;
  return `${s}s`;
}

function clock(unix, withDay, withSeconds) {
  const date = new Date(unix * 1000);
  const opts = { hour: "2-digit", minute: "2-digit" };
  if (withSeconds) opts.second = "2-digit";
  if (withDay) opts.weekday = "short";
  return date.toLocaleTimeString([], opts);
}

function ms(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  return seconds < 1 ? `${Math.round(seconds * 1000)} ms` : `${seconds.toFixed(seconds < 10 ? 2 : 1)} s`;
}

function count(n) {
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (n >= 1e4) return `${(n / 1e3).toFixed(1)}k`;
  return String(n);
}

function level(window) {
  const u = window.utilization ?? 0;
  if (window.status === "rejected" || u >= 0.9) return "bad";
  if (window.status === "allowed_warning" || u >= 0.7) return "warn";
  return "";
}

const WHY = {
  usage_limit: "usage limit reached", rate_limit: "rate limited",
  extra_usage: "drawing on extra usage", not_logged_in: "not logged in",
};

function accountCard(account, overage) {
  const card = el("div", "card account");
  card.dataset.account = account.name;
  const head = el("div", "account-head");
  head.append(el("span", "account-name", account.name));
  let badge;
  if (account.skipped) badge = el("span", "badge bad", "skipped");
  else if (account.status === "ok") badge = el("span", "badge", "logged in");
  else if (account.status === "not_logged_in") badge = el("span", "badge bad", "not logged in");
  else if (account.status === "unavailable") badge = el("span", "badge bad", "CLI unavailable");
  else badge = el("span", "badge none", "unknown");
  head.append(badge);
  card.append(head);
  const login = account.login || {};
  const plan = [login.subscription && `${login.subscription} plan`, login.method].filter(Boolean);
  card.append(el("div", "plan muted small", plan.join(" · ") || "\u00a0"));

  const quota = account.quota;
  if (!quota) {
    card.append(el("p", "muted", "No quota reported yet: it comes with the next answer."));
  } else {
    for (const w of quota.windows) {
      const box = el("div", "window");
      box.dataset.window = w.name;
      const top = el("div", "window-head");
      top.append(el("span", "window-label", w.label));
      const pct = w.utilization === null ? "–" : `${Math.round(w.utilization * 100)}%`;
      top.append(el("span", "pct", pct));
      box.append(top);
      const bar = el("div", "bar");
      const fill = el("div", `fill ${level(w)}`);
      fill.style.width = `${Math.min(100, Math.max(0, (w.utilization ?? 0) * 100))}%`;
      bar.append(fill);
      box.append(bar);
      const reset = el("div", "reset muted small");
      if (w.resets_at) {
        reset.dataset.resets = w.resets_at;
        reset.dataset.long = w.resets_at - now() > 86400 ? "1" : "";
      }
      box.append(reset);
      card.append(box);
    }
  }

  const notes = el("div", "notes small");
  if (account.skipped) {
    const line = el("div", "skipped");
    line.dataset.until = account.skipped.until;
    line.dataset.why = WHY[account.skipped.why] || account.skipped.why;
    notes.append(line);
  }
  if (quota) {
    const extra = quota.extra_usage;
    let text = `Extra usage: ${extra.status || "not offered"}`;
    if (extra.in_use) text += " — in use now";
    text += overage === "refuse"
      ? " · --overage refuse: no requests while answers draw on it"
      : " · --overage allow: requests go on";
    notes.append(el("div", extra.in_use ? "error" : "muted", text));
    const age = el("div", "muted seen");
    age.dataset.seen = quota.seen_at;
    notes.append(age);
  }
  if (notes.childNodes.length) card.append(notes);
  return card;
}

function tick() {
  // The countdowns move every second, between polls too.
  for (const node of document.querySelectorAll("[data-resets]")) {
    const at = Number(node.dataset.resets);
    const left = at - now();
    node.textContent = left > 0
      ? `resets in ${duration(left)} · ${clock(at, node.dataset.long)}`
      : "reset (awaiting the next answer's figures)";
  }
  for (const node of document.querySelectorAll("[data-until]")) {
    const left = Number(node.dataset.until) - now();
    node.textContent = `Skipped (${node.dataset.why}) until ${clock(Number(node.dataset.until))} — in ${duration(left)}`;
  }
  for (const node of document.querySelectorAll("[data-seen]")) {
    node.textContent = `Figures from ${duration(now() - Number(node.dataset.seen))} ago`;
  }
}

function drawChart(minutes) {
  const svg = $("chart");
  const W = 600, H = 140, pad = 6;
  const ns = "http://www.w3.org/2000/svg";
  svg.replaceChildren();
  for (const y of [0.25, 0.5, 0.75]) {
    const line = document.createElementNS(ns, "line");
    line.setAttribute("class", "grid");
    line.setAttribute("x1", 0); line.setAttribute("x2", W);
    line.setAttribute("y1", H * y); line.setAttribute("y2", H * y);
    svg.append(line);
  }
  const maxReq = Math.max(1, ...minutes.map((m) => m.requests));
  const maxTok = Math.max(1, ...minutes.map((m) => m.tokens_in + m.tokens_out));
  const step = W / minutes.length;
  const points = [];
  minutes.forEach((m, i) => {
    const x = i * step;
    const h = (m.requests / maxReq) * (H - pad);
    const fh = (m.failures / maxReq) * (H - pad);
    if (m.requests) {
      const bar = document.createElementNS(ns, "rect");
      bar.setAttribute("class", "req");
      bar.setAttribute("x", x + 1); bar.setAttribute("width", Math.max(1, step - 2));
      bar.setAttribute("y", H - h); bar.setAttribute("height", h);
      const title = document.createElementNS(ns, "title");
      title.textContent = `${clock(m.at)}: ${m.requests} requests, ${m.failures} failed, ` +
        `${m.tokens_in} tokens in, ${m.tokens_out} out`;
      bar.append(title);
      svg.append(bar);
    }
    if (m.failures) {
      const bar = document.createElementNS(ns, "rect");
      bar.setAttribute("class", "fail");
      bar.setAttribute("x", x + 1); bar.setAttribute("width", Math.max(1, step - 2));
      bar.setAttribute("y", H - fh); bar.setAttribute("height", fh);
      svg.append(bar);
    }
    const t = m.tokens_in + m.tokens_out;
    points.push(`${(x + step / 2).toFixed(1)},${(H - (t / maxTok) * (H - pad)).toFixed(1)}`);
  });
  const path = document.createElementNS(ns, "polyline");
  path.setAttribute("class", "tok");
  path.setAttribute("points", points.join(" "));
  svg.append(path);
  const sum = (k) => minutes.reduce((a, m) => a + m[k], 0);
  $("hour-totals").textContent = `${sum("requests")} requests · ${sum("failures")} failed · ` +
    `${count(sum("tokens_in"))} tokens in · ${count(sum("tokens_out"))} out`;
}

function drawRequests(records) {
  const body = $("requests");
  const rows = [];
  const fresh = new Set();
  for (const r of records) {
    const id = `${r.at}|${r.api}|${r.status}|${r.duration}`;
    fresh.add(id);
    const tr = el("tr", r.failed ? "failed" : "");
    if (seen.size && !seen.has(id)) tr.classList.add("new");
    const status = el("td", "status", String(r.status));
    if (r.error) status.append(el("span", "code", r.error));
    tr.append(el("td", "", clock(r.at, false, true)), el("td", "", r.api), el("td", "", r.client),
      el("td", "", r.model), el("td", "", r.account || "–"), status,
      el("td", "r", ms(r.first_token)), el("td", "r", ms(r.duration)),
      el("td", "r", count(r.tokens_in)), el("td", "r", count(r.cache_read)),
      el("td", "r", count(r.tokens_out)));
    rows.push(tr);
  }
  seen = fresh;
  body.replaceChildren(...rows);
  $("no-requests").hidden = records.length > 0;
}

function draw(data) {
  skew = data.now - Date.now() / 1000;
  $("version").textContent = `v${data.version} · up ${duration(data.uptime_seconds)}`;
  $("overage").textContent = `extra usage: --overage ${data.overage}`;
  $("accounts").replaceChildren(...data.accounts.map((a) => accountCard(a, data.overage)));
  const load = data.load;
  $("running").textContent = load.running;
  $("running-of").textContent = `of ${load.max_concurrent} at once`;
  $("queued").textContent = load.queued;
  $("sessions").textContent = load.live_sessions;
  $("sessions-tools").textContent = load.waiting_for_tools
    ? `${load.waiting_for_tools} waiting for tool results` : "";
  $("warm").textContent = load.warm;
  drawChart(data.minutes);
  drawRequests(data.recent);
  tick();
}

function live(ok, text) {
  $("live-dot").className = `dot ${ok ? "on" : "off"}`;
  $("live-text").textContent = text;
}

function askForKey(rejected) {
  $("content").hidden = true;
  $("key").hidden = false;
  $("key-error").hidden = !rejected;
  live(false, "API key needed");
  $("key-input").focus();
}

async function poll() {
  clearTimeout(timer);
  const key = sessionStorage.getItem(KEY_ITEM);
  const headers = key ? { authorization: `Bearer ${key}` } : {};
  try {
    const response = await fetch("/status/data", { headers, cache: "no-store", credentials: "omit" });
    if (response.status === 401) {
      sessionStorage.removeItem(KEY_ITEM);
      askForKey(Boolean(key));
      return; // until a key is given
    }
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    last = await response.json();
    $("key").hidden = true;
    $("content").hidden = false;
    draw(last);
    live(true, `live · updated ${clock(last.now)}`);
  } catch (error) {
    live(false, `cannot reach the daemon (${error.message}) · retrying`);
  }
  timer = setTimeout(poll, POLL_MS);
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const key = $("key-input").value.trim();
  if (!key) return;
  sessionStorage.setItem(KEY_ITEM, key);
  $("key-input").value = "";
  poll();
});
setInterval(() => { if (last) tick(); }, 1000);
poll();
