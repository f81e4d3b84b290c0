// torc web UI: one page, hash routes, no third-party code. Every view renders from the
// controller's /api/v1 and refreshes itself on a timer while it is shown.
"use strict";

const $ = (sel) => document.querySelector(sel);
// Every script error and every error shown to the user, for the browser tests to read.
window.__torcErrors = [];
window.addEventListener("error", (e) => window.__torcErrors.push("script error: " + e.message));
window.addEventListener("unhandledrejection", (e) => window.__torcErrors.push("unhandled: " + e.reason));
const main = $("#main");
let timers = [];
let renderSeq = 0;

// ---------------------------------------------------------------------------------------------
// Helpers

function esc(v) {
  return String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

function ago(ms) {
  if (!ms) return "never";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return s + "s ago";
  if (s < 3600) return Math.round(s / 60) + "m ago";
  return Math.round(s / 3600) + "h ago";
}

function bytes(n) {
  if (n == null) return "";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : Math.round(n)) + " " + u[i];
}

function num(v, d = 1) { return v == null ? "" : Number(v).toFixed(d).replace(/\.0+$/, ""); }

function badge(state) {
  const cls = {
    running: "b-ok", active: "b-ok", healthy: "b-ok", finished: "b-info", none: "",
    staging: "b-warn", pending: "b-warn", killing: "b-warn", unknown: "b-warn", inactive: "b-bad",
    failed: "b-bad", lost: "b-bad", killed: "", unhealthy: "b-bad", error: "b-bad", warning: "b-warn", info: "b-info",
    sole: "b-ok", leader: "b-ok", standby: "b-info", elected: "b-warn", lapsed: "b-bad", stepping_down: "b-warn",
    firing: "b-bad", rolling: "b-warn", "rolling back": "b-bad", "rolled back": "b-bad",
  }[state] ?? "";
  return `<span class="badge ${cls}">${esc(state)}</span>`;
}

function bar(used, total, label) {
  const pct = total > 0 ? Math.min(100, (used / total) * 100) : 0;
  return `<div class="bar" title="${esc(label)}"><span style="width:${pct.toFixed(1)}%"></span><em>${esc(label)}</em></div>`;
}

function showBanner(msg, info) {
  if (msg && !info) window.__torcErrors.push(msg);
  const b = $("#banner");
  b.textContent = msg;
  b.className = info ? "info" : "";
  b.hidden = !msg;
}

function every(ms, fn) { timers.push(setInterval(fn, ms)); }

// ---------------------------------------------------------------------------------------------
// API access: JSON in and out; errors are shown in words. The page holds no token: it logs in
// once (POST /api/v1/session) and the controller keeps a session in an HttpOnly cookie that
// no script can read. A 401 (the session ended) shows the login form again.

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, opts = {}) {
  const headers = { ...(opts.headers || {}) };
  if (opts.body !== undefined) headers["content-type"] = "application/json";
  let resp;
  try {
    resp = await fetch(path, { method: opts.method || "GET", headers, credentials: "same-origin", body: opts.body === undefined ? undefined : JSON.stringify(opts.body) });
  } catch (e) {
    throw new ApiError(0, "The controller did not answer (" + e.message + "). Is the rack up?");
  }
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
  if (!resp.ok) {
    const msg = (data && data.error) || text || resp.statusText;
    if (resp.status === 401 && !opts.retried && !opts.login && (await login(msg))) {
      return api(path, { ...opts, retried: true });
    }
    throw new ApiError(resp.status, msg);
  }
  return data;
}

// A view's data load: errors go to the banner instead of breaking the page.
async function load(path) {
  try { return await api(path); } catch (e) { showBanner(e.message); return null; }
}

function dialog(html, buttons) {
  const d = $("#dialog");
  const f = $("#dialog-form");
  f.innerHTML = html + `<div class="actions">${buttons.map((b) => `<button value="${b[0]}" class="${b[2] || ""}">${esc(b[1])}</button>`).join("")}</div>`;
  return new Promise((resolve) => {
    d.onclose = () => resolve(d.returnValue);
    d.showModal();
  });
}

// Asks for an admin or viewer token and trades it for a session; the token is not kept.
async function login(why) {
  if ($("#dialog").open) return false;
  for (;;) {
    const v = await dialog(`<p><b>Log in to the rack</b></p><p class="muted">${esc(why)}</p>
      <p>Paste an admin or viewer token: for <code>torc up</code>, the admin token file it printed;
      otherwise one from <code>torc token create --role viewer</code>.</p>
      <input id="token-input" type="password" style="width:100%" placeholder="torc_..." autocomplete="off">`, [["cancel", "Cancel"], ["ok", "Log in"]]);
    if (v !== "ok") return false;
    try {
      const who = await api("/api/v1/session", { method: "POST", body: { token: $("#token-input").value.trim() }, login: true });
      showWho(who);
      return true;
    } catch (e) {
      why = e.message;
    }
  }
}

function showWho(who) {
  const w = $("#who");
  if (!who) { w.textContent = ""; return; }
  w.innerHTML = `${esc(who.subject)}${who.insecure ? ' <b class="bad">insecure</b>' : ""}` +
    (who.expires_at ? ` · <a href="#" id="logout">log out</a>` : "");
  const out = $("#logout");
  if (out) out.onclick = async (ev) => {
    ev.preventDefault();
    await api("/api/v1/session", { method: "DELETE", login: true }).catch(() => {});
    location.reload();
  };
}

async function confirmAction(text, danger) {
  return (await dialog(`<p>${esc(text)}</p>`, [["cancel", "Cancel"], ["ok", "Yes, do it", danger ? "danger" : ""]])) === "ok";
}

async function act(text, fn, danger = true) {
  if (!(await confirmAction(text, danger))) return;
  try {
    await fn();
    showBanner("Done: " + text, true);
    setTimeout(() => showBanner(""), 3000);
    render();
  } catch (e) {
    showBanner(e.message);
  }
}

// ---------------------------------------------------------------------------------------------
// Charts: SVG line charts drawn here.

const COLORS = ["#2b6cb0", "#c05621", "#2f855a", "#805ad5", "#b83280", "#2c7a7b", "#975a16", "#4a5568"];

function lineChart(title, series, fmt, fixedMax) {
  const W = 600, H = 150, L = 70, R = 8, T = 8, B = 20;
  const pts = series.flatMap((s) => s.points);
  if (!pts.length) return `<div class="chart"><h3>${esc(title)}</h3><p class="muted">no samples yet</p></div>`;
  const t0 = Math.min(...pts.map((p) => p[0])), t1 = Math.max(...pts.map((p) => p[0]));
  const max = fixedMax ?? Math.max(1e-9, ...pts.map((p) => p[1])) * 1.1;
  const x = (t) => L + ((t - t0) / Math.max(1, t1 - t0)) * (W - L - R);
  const y = (v) => T + (1 - v / max) * (H - T - B);
  let g = "";
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    g += `<line x1="${L}" x2="${W - R}" y1="${y(v)}" y2="${y(v)}" stroke="#e2e8f0"/>` +
      `<text x="${L - 4}" y="${y(v) + 4}" text-anchor="end" font-size="10" fill="#6b7385">${esc(fmt(v))}</text>`;
  }
  g += `<text x="${L}" y="${H - 4}" font-size="10" fill="#6b7385">${esc(new Date(t0).toLocaleTimeString())}</text>` +
    `<text x="${W - R}" y="${H - 4}" text-anchor="end" font-size="10" fill="#6b7385">${esc(new Date(t1).toLocaleTimeString())}</text>`;
  const lines = series.map((s, i) => {
    const d = s.points.map((p, j) => (j ? "L" : "M") + x(p[0]).toFixed(1) + " " + y(p[1]).toFixed(1)).join(" ");
    return `<path d="${d}" fill="none" stroke="${COLORS[i % COLORS.length]}" stroke-width="1.6"/>`;
  }).join("");
  const legend = series.map((s, i) => `<span><i style="background:${COLORS[i % COLORS.length]}"></i>${esc(s.name)}</span>`).join("");
  return `<div class="chart"><h3>${esc(title)}</h3><svg viewBox="0 0 ${W} ${H}" preserveAspectRatio="none">${g}${lines}</svg><div class="legend">${legend}</div></div>`;
}

function hostCharts(history, compact) {
  const s = (name, f) => ({ name, points: history.map((m) => [m.at, f(m)]) });
  const ifaces = [...new Set(history.flatMap((m) => m.interfaces.map((i) => i.name)))].slice(0, compact ? 2 : 6);
  const disks = [...new Set(history.flatMap((m) => m.disks.map((d) => d.device)))].slice(0, 4);
  const pick = (arr, key, name) => arr.find((x) => x[key] === name);
  const charts = [
    lineChart("CPU %", [s("user", (m) => m.cpu.user_percent), s("system", (m) => m.cpu.system_percent), s("iowait", (m) => m.cpu.iowait_percent)], (v) => num(v, 0) + "%", 100),
    lineChart("Memory", [s("used", (m) => m.memory.used_bytes), s("cached", (m) => m.memory.cached_bytes)], bytes),
    lineChart("Network (bytes/s)", ifaces.flatMap((n) => [
      s(n + " rx", (m) => pick(m.interfaces, "name", n)?.rx_bytes_per_s ?? 0),
      s(n + " tx", (m) => pick(m.interfaces, "name", n)?.tx_bytes_per_s ?? 0)]), (v) => bytes(v) + "/s"),
  ];
  if (!compact) {
    charts.push(lineChart("Disk (bytes/s)", disks.flatMap((n) => [
      s(n + " read", (m) => pick(m.disks, "device", n)?.read_bytes_per_s ?? 0),
      s(n + " write", (m) => pick(m.disks, "device", n)?.write_bytes_per_s ?? 0)]), (v) => bytes(v) + "/s"));
    charts.push(lineChart("Load", [s("1m", (m) => m.load[0]), s("5m", (m) => m.load[1]), s("15m", (m) => m.load[2])], (v) => num(v, 2)));
  }
  return charts.join("");
}

// ---------------------------------------------------------------------------------------------
// Views

function table(headers, rows, empty = "nothing here") {
  if (!rows.length) return `<p class="muted">${esc(empty)}</p>`;
  return `<div class="tw"><table><thead><tr>${headers.map((h) => `<th>${esc(h)}</th>`).join("")}</tr></thead><tbody>${rows.map((r) => `<tr>${r.map((c) => `<td>${c}</td>`).join("")}</tr>`).join("")}</tbody></table></div>`;
}

// The rack's controllers: who leads, where this one stands, the store and its members.
function controllersSection(c) {
  if (!c) return "";
  const leader = c.leader ? `${esc(c.leader.name)} leads (epoch ${esc(c.leader.epoch)})` : "no leader is known";
  const store = c.store.kind === "etcd"
    ? `etcd, ${c.store.endpoints.filter((e) => e.healthy).length}/${c.store.endpoints.length} members healthy, under ${esc(c.store.location)}`
    : `a local file${c.store.location ? " (" + esc(c.store.location) + ")" : ""}`;
  const rows = c.controllers.length
    ? c.controllers.map((x, i) => [esc(x.name), esc(x.url), badge(i === 0 ? "leader" : "standby"), esc(x.epoch), x.name === c.name ? "this one" : ""])
    : [[esc(c.name), esc(c.url || ""), badge(c.role), esc(c.epoch ?? ""), "this one"]];
  const members = c.store.endpoints.length ? table(["etcd member", "Healthy", "Raft leader", "Version", "Size", "Alarms or error"], c.store.endpoints.map((e) => [
    esc(e.url), badge(e.healthy ? "healthy" : "unhealthy"), e.raft_leader ? "yes" : "", esc(e.version || ""), bytes(e.db_size), esc([...(e.alarms || []), e.error || ""].filter(Boolean).join(", "))])) : "";
  return `<h2>Controllers</h2>
  <p>${leader}; this one (${esc(c.name)}) is ${badge(c.role)}${c.why_not && c.role !== "standby" ? ": " + esc(c.why_not) : ""}. State store: ${store}.</p>
  ${table(["Controller", "URL", "Role", "Epoch", ""], rows)}${members}`;
}

async function overview(seq) {
  const [nodes, status, events, controllers, alerts] = await Promise.all([load("/api/v1/nodes"), load("/api/v1/status"), load("/api/v1/events"), load("/api/v1/controller"), load("/api/v1/alerts")]);
  if (seq !== renderSeq || !nodes || !status) return;
  const usage = {};
  await Promise.all(nodes.filter((n) => n.active).map(async (n) => {
    // The recent history, not /metrics: it is empty (not an error) before the first sample.
    try {
      const h = await api(`/api/v1/nodes/${n.name}/metrics/history?last=1`);
      if (h.length) usage[n.name] = h[h.length - 1];
    } catch (_) { /* the node just went away; the table shows it */ }
  }));
  if (seq !== renderSeq) return;
  const tasks = status.frameworks.reduce((a, f) => a + (f.tasks.running || 0), 0);
  const svcRun = status.services.reduce((a, s) => a + s.running, 0), svcAll = status.services.reduce((a, s) => a + s.desired, 0);
  main.innerHTML = `<h1>Rack ${esc(status.rack)}</h1>
  <div class="cards">
    <div class="card"><div class="n">${status.nodes_active}/${status.nodes_total}</div><div class="l">nodes active</div></div>
    <div class="card"><div class="n">${tasks}</div><div class="l">tasks running</div></div>
    <div class="card"><div class="n">${svcRun}/${svcAll}</div><div class="l">service instances running</div></div>
    <div class="card"><div class="n">${status.frameworks.filter((f) => f.active).length}/${status.frameworks.length}</div><div class="l">frameworks active</div></div>
  </div>
  ${alerts && alerts.length ? `<h2>Alerts</h2>${table(["Rule", "Subject", "State", "Since", "Summary"], alerts.map((a) => [esc(a.rule), esc(a.subject), badge(a.state), esc(ago(a.since)), esc(a.summary)]))}` : ""}
  <h2>Nodes</h2>
  ${table(["Node", "IP", "Function", "State", "CPU allocated", "Memory allocated", "CPU used", "Memory used", "Tasks"], nodes.map((n) => {
    const u = usage[n.name], r = n.resources;
    return [`<a href="#/agents/${esc(n.name)}">${esc(n.name)}</a>`, esc(n.ip), esc(n.node_function), badge(n.active ? "active" : "inactive"),
      bar(r.allocated.cpus, r.total.cpus, `${num(r.allocated.cpus, 2)} / ${num(r.total.cpus, 2)}`),
      bar(r.allocated.mem_mb, r.total.mem_mb, `${num(r.allocated.mem_mb, 0)} / ${num(r.total.mem_mb, 0)} MiB`),
      u ? bar(u.cpu.user_percent + u.cpu.system_percent, 100, num(u.cpu.user_percent + u.cpu.system_percent) + "%") : '<span class="muted">–</span>',
      u ? bar(u.memory.used_bytes, u.memory.total_bytes, bytes(u.memory.used_bytes)) : '<span class="muted">–</span>',
      String(n.tasks)];
  }))}
  <h2>Services</h2>
  ${table(["Service", "Origin", "Running", "Healthy", "Restarts", "Last failure"], status.services.map((s) => [
    esc(s.name), esc(s.origin), `${s.running}/${s.desired}`, `${s.healthy}/${s.desired}`, String(s.restarts),
    s.last_failure ? `${esc(ago(s.last_failure.at))}: ${esc(s.last_failure.message)}` : ""]), "no services configured")}
  ${status.rollouts && status.rollouts.length ? `<h2>Rollouts</h2>${table(["Service", "Origin", "Step", "State", "Replacing", "Since", "Note"], status.rollouts.map((r) => [
    esc(r.service), esc(r.origin), `${r.step}/${r.of}`, badge(r.state), esc(r.instance || ""), esc(ago(r.started_at)), esc(r.message || "")]))}` : ""}
  ${controllersSection(controllers)}
  <h2>Recent events</h2>
  ${table(["When", "Level", "What"], (events || []).slice(-15).reverse().map((e) => [esc(ago(e.at)), badge(e.level),
    e.task ? `<a href="#/tasks/${esc(e.task)}">${esc(e.message)}</a>` : esc(e.message)]), "nothing happened yet")}`;
}

function query() {
  const q = location.hash.split("?")[1] || "";
  return Object.fromEntries(new URLSearchParams(q));
}

async function tasksView(seq) {
  const f = query();
  const params = new URLSearchParams();
  for (const k of ["node", "framework", "state"]) if (f[k]) params.set(k, f[k]);
  const [tasks, nodes, fws] = await Promise.all([load("/api/v1/tasks?" + params), load("/api/v1/nodes"), load("/api/v1/frameworks")]);
  if (seq !== renderSeq || !tasks || !nodes || !fws) return;
  const shown = f.all || f.state ? tasks : tasks.filter((t) => !["finished", "failed", "killed", "lost"].includes(t.state));
  const sel = (name, opts) => `<select data-f="${name}"><option value="">any ${name}</option>${opts.map((o) => `<option ${f[name] === o ? "selected" : ""}>${esc(o)}</option>`).join("")}</select>`;
  main.innerHTML = `<h1>Tasks</h1>
  <div class="toolbar">${sel("node", nodes.map((n) => n.name))}${sel("framework", fws.map((x) => x.name))}
    ${sel("state", ["pending", "staging", "running", "killing", "finished", "failed", "killed", "lost"])}
    <label><input type="checkbox" id="all" ${f.all ? "checked" : ""}> ended tasks too</label>
    <span class="muted">${shown.length} of ${tasks.length}</span></div>
  ${table(["Task", "State", "Node", "Ports", "Framework", "Exit", "Message", "Updated"], shown.slice().reverse().map((t) => [
    `<a href="#/tasks/${esc(t.id)}">${esc(t.id)}</a>`, badge(t.state), esc(t.node || "–"), esc(t.ports.join(", ")), esc(t.framework),
    esc(t.exit_code ?? ""), esc(t.message || ""), esc(ago(t.updated_at))]), "no tasks")}`;
  const update = () => {
    const p = new URLSearchParams();
    main.querySelectorAll("select[data-f]").forEach((s) => s.value && p.set(s.dataset.f, s.value));
    if ($("#all").checked) p.set("all", "1");
    location.hash = "#/tasks?" + p;
  };
  main.querySelectorAll("select[data-f]").forEach((s) => (s.onchange = update));
  $("#all").onchange = update;
}

async function taskView(seq, id) {
  const t = await load("/api/v1/tasks/" + encodeURIComponent(id));
  if (seq !== renderSeq || !t) return;
  const live = !["finished", "failed", "killed", "lost"].includes(t.state);
  const s = t.spec;
  main.innerHTML = `<h1>Task ${esc(t.id)} ${badge(t.state)}</h1>
  <div class="toolbar">${live ? '<button class="danger" id="kill">Kill task</button>' : ""}
    <a href="#/tasks?framework=${esc(t.framework)}">other tasks of ${esc(t.framework)}</a></div>
  <dl class="kv">
    ${s.container ? `<dt>Image</dt><dd><code>${esc(s.container.image)}</code>${(s.container.volumes || []).map((v) => ` <code>-v ${esc(v.host_path)}:${esc(v.container_path)}${v.read_only ? ":ro" : ""}</code>`).join("")}${s.container.options && s.container.options.no_network ? " (network none)" : ""}</dd>` : ""}
    <dt>Command</dt><dd>${s.container && !s.command ? `the image's entrypoint${s.args.length ? ` with <code>${esc(s.args.join(" "))}</code>` : ""}` : `<code>${esc([s.command, ...s.args].join(" "))}</code>`}</dd>
    <dt>Node</dt><dd>${t.node ? `<a href="#/agents/${esc(t.node)}">${esc(t.node)}</a> (${esc(t.ip || "")})` : "not placed"}</dd>
    <dt>Ports</dt><dd>${esc(t.ports.join(", ") || "none")}</dd>
    <dt>Resources</dt><dd>${num(s.resources.cpus, 2)} cpus, ${num(s.resources.mem_mb, 0)} MiB memory, ${num(s.resources.disk_mb, 0)} MiB disk</dd>
    <dt>Constraints</dt><dd>${esc(JSON.stringify(s.constraints))}</dd>
    <dt>Environment</dt><dd>${esc(Object.entries(s.env).map(([k, v]) => k + "=" + v).join(" ") || "–")}</dd>
    <dt>Framework</dt><dd>${esc(t.framework)}</dd>
    <dt>Exit code</dt><dd>${esc(t.exit_code ?? "–")}</dd>
    <dt>Message</dt><dd>${esc(t.message || "–")}</dd>
    <dt>Created</dt><dd>${esc(new Date(t.created_at).toLocaleString())}</dd>
  </dl>
  <h2>History</h2>
  ${table(["When", "State", "Message"], t.history.map((h) => [esc(new Date(h.at).toLocaleTimeString()), badge(h.state), esc(h.message || "")]))}
  <h2>Output</h2>
  <div class="toolbar tabs"><button data-s="stdout" class="on">stdout</button><button data-s="stderr">stderr</button>
    <span class="muted" id="logstate"></span></div>
  <pre id="log"></pre>`;
  if (live) $("#kill").onclick = () => act(`Kill task ${t.id}?`, () => api("/api/v1/tasks/" + encodeURIComponent(t.id), { method: "DELETE" }));
  let stream = "stdout", offset = null;
  const pull = async () => {
    if (!t.node) { $("#logstate").textContent = "the task was never placed, so it has no output"; return; }
    try {
      const q = offset == null ? "tail=16384" : "offset=" + offset;
      const c = await api(`/api/v1/tasks/${encodeURIComponent(t.id)}/logs?stream=${stream}&${q}`);
      const pre = $("#log");
      if (!pre) return;
      if (offset == null) pre.textContent = "";
      pre.textContent += c.data;
      if (c.data) pre.scrollTop = pre.scrollHeight;
      offset = c.next_offset;
      $("#logstate").textContent = `${bytes(c.size)}${live ? ", following" : ""}`;
    } catch (e) { const ls = $("#logstate"); if (ls) ls.textContent = e.message; }
  };
  main.querySelectorAll(".tabs button").forEach((b) => (b.onclick = () => {
    main.querySelectorAll(".tabs button").forEach((x) => x.classList.toggle("on", x === b));
    stream = b.dataset.s; offset = null; pull();
  }));
  pull();
  if (live) every(1000, pull);
}

async function frameworksView(seq) {
  const fws = await load("/api/v1/frameworks");
  if (seq !== renderSeq || !fws) return;
  main.innerHTML = `<h1>Frameworks</h1>
  ${table(["Framework", "Kind", "State", "Failover timeout", "Last seen", "Tasks", "Note"], fws.map((f) => [
    `<a href="#/tasks?framework=${esc(f.name)}&all=1">${esc(f.name)}</a>`, f.builtin ? "built-in scheduler" : "sub-scheduler",
    badge(f.active ? "active" : "inactive"), f.failover_timeout_ms != null ? num(f.failover_timeout_ms / 1000) + " s" : "–",
    f.builtin ? "–" : esc(ago(f.last_seen)), esc(Object.entries(f.tasks).map(([k, v]) => `${v} ${k}`).join(", ") || "none"), esc(f.message || "")]))}`;
}

async function agentsView(seq) {
  const nodes = await load("/api/v1/nodes");
  if (seq !== renderSeq || !nodes) return;
  main.innerHTML = `<h1>Agents</h1>
  ${table(["Node", "IP", "Type", "Function", "State", "CPUs", "Memory", "Disk", "Ports", "Last heartbeat", "Limits", "Maintenance", "Power", ""], nodes.map((n) => {
    const r = n.resources;
    return [`<a href="#/agents/${esc(n.name)}">${esc(n.name)}</a>`, esc(n.ip), esc(n.node_type), esc(n.node_function), badge(n.active ? "active" : "inactive"),
      `${num(r.allocated.cpus, 2)} / ${num(r.total.cpus, 2)}`, `${num(r.allocated.mem_mb, 0)} / ${num(r.total.mem_mb, 0)} MiB`,
      `${num(r.allocated.disk_mb, 0)} / ${num(r.total.disk_mb, 0)} MiB`, `${r.ports_allocated} of ${esc(n.port_range)}`, esc(ago(n.last_seen)),
      n.runtime.limits_enforced ? badge("enforced") : `<span class="muted" title="${esc(n.runtime.limits_note || "")}">not enforced</span>`,
      `<span data-maintenance="${esc(n.name)}">${esc(maintenanceText(n))}</span>`, `<span data-power="${esc(n.name)}" title="${esc(n.power ? n.power.last.output : "")}">${esc(powerText(n))}</span>`,
      nodeButtons(n)];
  }))}`;
  wireNodeButtons();
}

// A node's maintenance as `torc nodes` shows it: cordoned, draining (with progress), drained.
function maintenanceText(n) {
  const d = n.drain;
  if (d && d.done_at == null) return `draining: ${d.moved} moved, ${d.to_move} to move` + (d.moving ? `; moving ${d.moving}` : "") + (d.waiting ? `; waits: ${d.waiting}` : "");
  if (d && n.cordoned && !d.stopped) return "cordoned, drained" + (d.left.length ? ` (${d.left.length} left in place)` : "");
  return n.cordoned ? "cordoned" : "–";
}

// The power state the last `status` read, and the last action when it was another or failed.
function powerText(n) {
  const p = n.power;
  if (!p) return "–";
  const state = p.state || "–";
  if (p.last.action === "status" && p.last.ok) return `${state} (${ago(p.state_at)})`;
  return `${state} (${p.last.action} ${p.last.ok ? "ran" : "failed"} ${ago(p.last.at)})`;
}

// Cordon or uncordon, drain, and power on, off or status: each behind the confirmation.
function nodeButtons(n) {
  const b = (what, label, cls = "") => `<button class="${cls}" data-node-act="${what}" data-node="${esc(n.name)}">${label}</button>`;
  const draining = n.drain && n.drain.done_at == null;
  return [n.cordoned ? b("uncordon", "Uncordon") : b("cordon", "Cordon"), draining ? "" : b("drain", "Drain", "danger"),
    b("power-on", "Power on"), b("power-off", "Power off", "danger"), b("power-status", "Power status")].join(" ");
}

const NODE_ACTIONS = {
  cordon: [(n) => `Cordon node ${n}? No new task is placed on it; its tasks keep running.`, false, (n) => api(`/api/v1/nodes/${n}/cordon`, { method: "POST", body: {} })],
  uncordon: [(n) => `Uncordon node ${n}? Tasks may be placed on it again (a drain going on stops).`, false, (n) => api(`/api/v1/nodes/${n}/uncordon`, { method: "POST", body: {} })],
  drain: [(n) => `Drain node ${n}? It is cordoned and its service instances move to other nodes, one at a time.`, true, (n) => api(`/api/v1/nodes/${n}/drain`, { method: "POST", body: {} })],
  "power-on": [(n) => `Power node ${n} on with the rack's power command?`, false, (n) => api(`/api/v1/nodes/${n}/power`, { method: "POST", body: { action: "on" } })],
  "power-off": [(n) => `Power node ${n} off with the rack's power command? Everything running on it stops.`, true, (n) => api(`/api/v1/nodes/${n}/power`, { method: "POST", body: { action: "off" } })],
  "power-status": [(n) => `Ask node ${n}'s power state with the rack's power command?`, false, (n) => api(`/api/v1/nodes/${n}/power`, { method: "POST", body: { action: "status" } })],
};

function wireNodeButtons() {
  main.querySelectorAll("[data-node-act]").forEach((b) => (b.onclick = () => {
    const [text, danger, call] = NODE_ACTIONS[b.dataset.nodeAct];
    act(text(b.dataset.node), () => call(b.dataset.node), danger);
  }));
}

// Whether a node's agent runs containers: "yes" (with its engine), or "unavailable: " and the
// agent's reason, as `torc nodes` shows it.
function containersText(rt) {
  if (rt.containers) return "yes" + (rt.containers_note ? " (" + esc(rt.containers_note) + ")" : "");
  return "unavailable: " + esc(rt.containers_note || "its agent gives no reason");
}

async function agentView(seq, name) {
  const [n, tasks] = await Promise.all([load("/api/v1/nodes/" + name), load("/api/v1/tasks?node=" + name)]);
  if (seq !== renderSeq || !n || !tasks) return;
  const r = n.resources;
  main.innerHTML = `<h1>Node ${esc(n.name)} ${badge(n.active ? "active" : "inactive")}</h1>
  <dl class="kv">
    <dt>Address</dt><dd>${esc(n.ip)}${n.external_ip ? " (external " + esc(n.external_ip) + ")" : ""}</dd>
    <dt>Management</dt><dd>${esc(n.management_ip || "–")}</dd>
    <dt>Type / function</dt><dd>${esc(n.node_type)} / ${esc(n.node_function)}</dd>
    <dt>Agent</dt><dd>${esc(n.agent_url || "never registered")}, last heartbeat ${esc(ago(n.last_seen))}</dd>
    <dt>CPUs</dt><dd>${num(r.allocated.cpus, 2)} allocated of ${num(r.total.cpus, 2)}</dd>
    <dt>Memory</dt><dd>${num(r.allocated.mem_mb, 0)} MiB allocated of ${num(r.total.mem_mb, 0)} MiB</dd>
    <dt>Ports</dt><dd>${r.ports_allocated} allocated in ${esc(n.port_range)}</dd>
    <dt>Runtime</dt><dd>${esc(n.runtime.kind)}; limits ${n.runtime.limits_enforced ? "enforced (cgroup v2)" : "not enforced: " + esc(n.runtime.limits_note || "")}</dd>
    <dt>Containers</dt><dd>${containersText(n.runtime)}</dd>
    <dt>Maintenance</dt><dd>${esc(maintenanceText(n))}${n.drain && n.drain.left.length ? "<br><span class=\"muted\">left in place: " + esc(n.drain.left.join("; ")) + "</span>" : ""}</dd>
    <dt>Power</dt><dd>${esc(powerText(n))}${n.power && n.power.last.output ? " <code>" + esc(n.power.last.output) + "</code>" : ""}</dd>
    <dt>Attributes</dt><dd>${esc(Object.entries(n.attributes).map(([k, v]) => k + "=" + v).join(", ") || "–")}</dd>
  </dl>
  <div class="toolbar">${nodeButtons(n)}</div>
  <h2>Live metrics <a class="muted" href="#/metrics/${esc(n.name)}">(full dashboard)</a></h2><div class="grid2" id="charts"></div>
  <h2>Tasks on ${esc(n.name)}</h2>
  ${table(["Task", "State", "Ports", "Framework", "Message"], tasks.filter((t) => !["finished", "failed", "killed", "lost"].includes(t.state)).map((t) => [
    `<a href="#/tasks/${esc(t.id)}">${esc(t.id)}</a>`, badge(t.state), esc(t.ports.join(", ")), esc(t.framework), esc(t.message || "")]), "no live tasks")}`;
  wireNodeButtons();
  if (n.active) {
    const draw = async () => {
      const h = await load(`/api/v1/nodes/${name}/metrics/history`);
      const c = $("#charts");
      if (h && c && seq === renderSeq) c.innerHTML = hostCharts(h, true);
    };
    draw();
    every(3000, draw);
  }
}

async function servicesView(seq, _arg, refresh) {
  const [services, groups] = await Promise.all([load("/api/v1/services"), load("/api/v1/groups")]);
  if (seq !== renderSeq || !services || !groups) return;
  const svc = table(["Instance", "Origin", "State", "Node", "Address", "Health", "Restarts", "Note"], services.map((s) => [
    s.task ? `<a href="#/tasks/${esc(s.task)}">${esc(s.name)}</a>` : esc(s.name), esc(s.origin), s.state ? badge(s.state) : '<span class="muted">–</span>',
    esc(s.node || "–"), esc(s.ip ? s.ip + (s.ports.length ? ":" + s.ports.join(",") : "") : "–"), badge(s.health.state),
    String(s.restarts), esc(s.waiting || (s.last_failure ? "last failure " + ago(s.last_failure.at) + ": " + s.last_failure.message : ""))]), "no service instances");
  const grp = table(["Group", "Services", "Instances", ""], groups.map((g) => [esc(g.name), esc(g.services.join(", ")), String(g.instances.length),
    `<button data-start="${esc(g.name)}">Start</button> <button class="danger" data-stop="${esc(g.name)}">Stop</button>`]), "no groups in the rack config");
  // A refresh only replaces the tables, so the lookup box keeps what the user typed.
  if (!(refresh && $("#svc-table"))) {
    main.innerHTML = `<h1>Services</h1><div id="svc-table"></div>
    <h2>DNS lookup</h2>
    <div class="toolbar"><input id="dns-name" placeholder="etcd.service.torc" size="36">
      <select id="dns-type">${["A", "SRV", "AAAA", "PTR", "MX", "TXT", "SOA", "NS", "CNAME"].map((t) => `<option>${t}</option>`).join("")}</select>
      <button id="dns-go">Look up</button> <span class="muted">asks the rack's own DNS server</span></div>
    <pre id="dns-out" hidden></pre>
    <h2>Service groups</h2><div id="groups-table"></div>`;
    $("#dns-go").onclick = async () => {
      const out = $("#dns-out");
      out.hidden = false;
      const name = $("#dns-name").value.trim();
      if (!name) { out.textContent = "Type a name first, e.g. dns.service.torc"; return; }
      try {
        const r = await api(`/api/v1/dns/lookup?name=${encodeURIComponent(name)}&type=${$("#dns-type").value}`);
        out.textContent = `${r.rcode}${r.authoritative ? " (authoritative)" : ""} from ${r.server} in ${num(r.elapsed_ms, 2)} ms\n` +
          (r.answers.length ? r.answers.join("\n") : "no answer records") + (r.authority.length ? "\n;; authority\n" + r.authority.join("\n") : "");
      } catch (e) { out.textContent = e.message; }
    };
  }
  $("#svc-table").innerHTML = svc;
  $("#groups-table").innerHTML = grp;
  main.querySelectorAll("[data-start]").forEach((b) => (b.onclick = () =>
    act(`Start service group ${b.dataset.start}?`, () => api(`/api/v1/groups/${b.dataset.start}/start`, { method: "POST", body: {} }), false)));
  main.querySelectorAll("[data-stop]").forEach((b) => (b.onclick = () =>
    act(`Stop service group ${b.dataset.stop}? Its instances are killed.`, () => api(`/api/v1/groups/${b.dataset.stop}/stop`, { method: "POST", body: {} }))));
}

async function networkView(seq) {
  const net = await load("/api/v1/network");
  if (seq !== renderSeq || !net) return;
  const wanted = new Map(net.desired.routes.map((r) => [r.destination, r]));
  const rep = net.reported;
  const taskOf = (r) => {
    const d = r.prefix_len === 32 ? wanted.get(r.destination) : undefined;
    return d ? `<a href="#/tasks/${esc(d.task)}">${esc(d.task)}</a> (${esc(d.service)} on ${esc(d.node)})` : "";
  };
  const held = rep ? rep.routes : [];
  const routeRows = held.map((r) => [esc(r.destination + "/" + r.prefix_len), esc(r.gateway || "–"), esc(r.port || "–"),
    r.protocol === "torc" ? badge("torc") : esc(r.protocol), taskOf(r)]);
  for (const d of net.missing) {
    routeRows.push([esc(d.destination + "/32"), esc(d.next_hop), "–", badge("missing"),
      `<a href="#/tasks/${esc(d.task)}">${esc(d.task)}</a> (${esc(d.service)} on ${esc(d.node)})`]);
  }
  const where = net.desired.switch === null || net.desired.switch === undefined
    ? "This rack programs no routes: its config has no <code>network-agent</code> of type <code>netlink</code>."
    : `The switch: ${net.desired.switch ? "namespace <code>" + esc(net.desired.switch) + "</code>" : "the network agent's own namespace"}.`;
  const said = rep ? `The network agent reported ${ago(net.reported_at)}, having applied generation ${rep.generation_applied} of ${net.desired.generation}.`
    : "The switch's network agent has not reported.";
  main.innerHTML = `<h1>Network</h1><p class="muted">${where} ${said}</p>
    <h2>Ports</h2>${table(["Port", "State", "MTU", "MAC", "Rx bytes", "Tx bytes", "Rx/Tx packets", "Rx/Tx errors"], (rep ? rep.ports : []).map((p) => [
      esc(p.name), badge(p.oper_state), String(p.mtu), esc(p.mac || "–"), num(p.rx_bytes), num(p.tx_bytes),
      `${num(p.rx_packets)}/${num(p.tx_packets)}`, `${p.rx_errors}/${p.tx_errors}`]), "no ports reported")}
    <h2>Routes</h2><p class="muted">${wanted.size} task route(s) wanted (generation ${net.desired.generation}); routes owned by torc are the network agent's, the others are left alone.</p>
    ${table(["Destination", "Via", "Port", "Owner", "Task"], routeRows, "no routes")}`;
}

async function metricsView(seq, name) {
  const nodes = await load("/api/v1/nodes");
  if (seq !== renderSeq || !nodes) return;
  const active = nodes.filter((n) => n.active).map((n) => n.name);
  const hosts = name ? [name] : active;
  main.innerHTML = `<h1>Metrics ${name ? esc(name) : "— all hosts"}</h1>
  <div class="toolbar">${[`<a href="#/metrics">all hosts</a>`, ...active.map((n) => `<a href="#/metrics/${esc(n)}">${esc(n)}</a>`), `<a href="#/control-plane">control plane</a>`].join(" · ")}</div>
  ${hosts.map((h) => `${name ? "" : `<h2><a href="#/metrics/${esc(h)}">${esc(h)}</a></h2>`}<div class="grid2" data-host="${esc(h)}"></div>`).join("")}
  ${name ? '<h2>Tasks</h2><div id="task-metrics"></div>' : ""}`;
  const draw = async () => {
    await Promise.all(hosts.map(async (h) => {
      const hist = await load(`/api/v1/nodes/${h}/metrics/history`);
      const el = main.querySelector(`[data-host="${h}"]`);
      if (!hist || !el || seq !== renderSeq) return;
      el.innerHTML = hostCharts(hist, !name);
      const tm = $("#task-metrics");
      const last = hist[hist.length - 1];
      if (tm && last) {
        tm.innerHTML = table(["Task", "CPU user %", "CPU system %", "Memory", "Processes", "Metered"], last.tasks.map((t) => [
          `<a href="#/tasks/${esc(t.id)}">${esc(t.id)}</a>`, num(t.cpu_user_percent), num(t.cpu_system_percent), bytes(t.memory_bytes), String(t.processes), t.metered ? "yes" : "no"]), "no tasks on this node");
      }
    }));
  };
  draw();
  every(3000, draw);
}

// The control plane: this controller's own figures now (its Prometheus /metrics, which the
// session may read like any viewer), and their last 15 minutes from the rack's time-series
// database (the datacollector's control_plane series).
function promSamples(text) {
  const out = [];
  for (const line of text.split("\n")) {
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)/);
    if (!m) continue;
    const labels = {};
    for (const l of (m[2] || "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2].replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

// A row's time as the query proxy gives it: milliseconds (or an RFC 3339 string).
const when = (t) => (typeof t === "number" ? t : Date.parse(t));

const CP_WHERE = "FROM control_plane WHERE role = 'controller' AND time > now() - 15m GROUP BY time(15s) fill(none)";

async function controlPlaneView(seq) {
  let text = "";
  try {
    const r = await fetch("/metrics", { credentials: "same-origin" });
    text = await r.text();
    if (!r.ok) throw new Error(text || r.statusText);
  } catch (e) { showBanner("The controller's /metrics: " + e.message); }
  if (seq !== renderSeq) return;
  const all = promSamples(text);
  const one = (name, label) => all.find((x) => x.name === name && (!label || Object.values(x.labels).includes(label)))?.value;
  const commits = one("torc_controller_store_commits_total", "ok"), failed = one("torc_controller_store_commits_total", "failed");
  const csum = one("torc_controller_store_commit_duration_seconds_sum"), ccount = one("torc_controller_store_commit_duration_seconds_count");
  const tasks = all.filter((x) => x.name === "torc_controller_tasks").map((x) => `${esc(x.labels.state)} ${num(x.value, 0)}`).join(" · ");
  main.innerHTML = `<h1>Control plane</h1>
  <div class="toolbar"><a href="#/metrics">← hosts' metrics</a></div>
  <p class="muted">This controller's own figures (<code>GET /metrics</code>, for Prometheus with a viewer token), and below their history, which the datacollector writes to the <code>control_plane</code> series.</p>
  ${table(["Figure", "Now"], [
    ["Acting", one("torc_controller_acting") === 1 ? badge("leader") : badge("standby")],
    ["Epoch", num(one("torc_controller_epoch"), 0)],
    ["Nodes active / inactive", `${num(one("torc_controller_nodes", "active"), 0)} / ${num(one("torc_controller_nodes", "inactive"), 0)}`],
    ["Tasks by state", tasks],
    ["Store commits (failed)", `${num(commits, 0)} (${num(failed, 0)})`],
    ["Mean commit time", ccount ? num((csum / ccount) * 1000, 2) + " ms" : "–"],
    ["Resident memory", bytes(one("process_resident_memory_bytes"))],
    ["CPU time", num(one("process_cpu_seconds_total"), 1) + " s"],
    ["Open files", `${num(one("process_open_fds"), 0)} of ${num(one("process_max_fds"), 0)}`],
  ])}
  <h2>Last 15 minutes</h2><div class="grid2" id="cp-charts"><p class="muted">loading…</p></div>`;
  const q = (fields) => api(`/api/v1/query?api=1.x&q=${encodeURIComponent(`SELECT ${fields} ${CP_WHERE}`)}`).catch(() => null);
  const draw = async () => {
    const [t, c, m] = await Promise.all([
      q("mean(tasks_running) AS running, mean(tasks_pending) AS pending, mean(nodes_active) AS nodes"),
      q("non_negative_derivative(max(store_commits_total_ok), 1s) AS commits, non_negative_derivative(max(store_commit_duration_seconds_sum), 1s) AS busy"),
      q("mean(process_resident_memory_bytes) AS rss, non_negative_derivative(max(process_cpu_seconds_total), 1s) AS cpu"),
    ]);
    const el = $("#cp-charts");
    if (!el || seq !== renderSeq) return;
    const rows = (d) => ((d?.results || [])[0]?.series || [])[0] || { columns: [], values: [] };
    const col = (d, name, f = (v) => v) => {
      const s = rows(d), i = s.columns.indexOf(name);
      return i < 0 ? [] : s.values.filter((r) => r[i] !== null).map((r) => [when(r[0]), f(r[i])]);
    };
    // The mean commit time per interval: commit seconds per second over commits per second.
    const cs = rows(c), ci = cs.columns.indexOf("commits"), bi = cs.columns.indexOf("busy");
    const meanMs = ci < 0 || bi < 0 ? [] : cs.values.filter((r) => r[ci] > 0 && r[bi] !== null).map((r) => [when(r[0]), (r[bi] / r[ci]) * 1000]);
    el.innerHTML = [
      lineChart("Tasks and nodes", [{ name: "running", points: col(t, "running") }, { name: "pending", points: col(t, "pending") }, { name: "active nodes", points: col(t, "nodes") }], (v) => num(v, 0)),
      lineChart("Store commits", [{ name: "commits/s", points: col(c, "commits") }], (v) => num(v, 1) + "/s"),
      lineChart("Mean commit time", [{ name: "ms", points: meanMs }], (v) => num(v, 2) + " ms"),
      lineChart("Controller process", [{ name: "resident memory", points: col(m, "rss") }], bytes),
      lineChart("Controller CPU", [{ name: "cores", points: col(m, "cpu") }], (v) => num(v, 2)),
    ].join("");
  };
  await draw();
  every(5000, draw);
}

// InfluxQL against the rack's time-series database, the seed's sample queries one click away.
const SAMPLES = [
  ["0.8", "list series"],
  ["0.8", "select * from machine where hostname = 'bladerunner1' limit 1000"],
  ["0.8", "select * from network where hostname = 'bladerunner1' and interface_name = 'lo' limit 1000"],
  ["1.x", "SELECT mean(cpu_usage_user), mean(cpu_usage_system) FROM machine WHERE time > now() - 15m GROUP BY time(30s), hostname"],
  ["1.x", "SELECT mean(network_in_bytes) FROM network WHERE interface_name = 'lo' AND time > now() - 15m GROUP BY time(30s)"],
  ["1.x", "SHOW MEASUREMENTS"],
];

async function queryView(seq) {
  const f = query();
  main.innerHTML = `<h1>Query</h1>
  <div class="toolbar"><select id="q-api"><option value="0.8">0.8 API (/db/torc/series)</option><option value="1.x">1.x API (/query)</option></select>
    <span class="muted">database <b>torc</b></span></div>
  <textarea id="q-text" rows="3" style="width:100%; font-family:monospace"></textarea>
  <div class="toolbar"><button id="q-run">Run</button> <span class="muted" id="q-info"></span></div>
  <h2>Sample queries</h2><div>${SAMPLES.map((s, i) => `<div><a href="#" data-sample="${i}"><code>${esc(s[1])}</code></a> <span class="muted">(${s[0]})</span></div>`).join("")}</div>
  <div id="q-chart"></div><div id="q-table"></div>`;
  $("#q-api").value = f.api || "0.8";
  $("#q-text").value = f.q || SAMPLES[1][1];
  main.querySelectorAll("[data-sample]").forEach((a) => (a.onclick = (ev) => {
    ev.preventDefault();
    const s = SAMPLES[Number(a.dataset.sample)];
    $("#q-api").value = s[0];
    $("#q-text").value = s[1];
    run();
  }));
  const run = async () => {
    const which = $("#q-api").value, q = $("#q-text").value.trim();
    if (!q) { $("#q-info").textContent = "Type a query first."; return; }
    const t0 = performance.now();
    let data;
    try {
      data = await api(`/api/v1/query?api=${encodeURIComponent(which)}&q=${encodeURIComponent(q)}`);
    } catch (e) {
      $("#q-info").textContent = "";
      $("#q-table").innerHTML = `<pre>${esc(e.message)}</pre>`;
      $("#q-chart").innerHTML = "";
      return;
    }
    if (seq !== renderSeq) return;
    // 1.x reports a statement's error inside its answer.
    const failed = which === "1.x" && (data.results || []).find((r) => r.error);
    if (failed) {
      $("#q-info").textContent = "";
      $("#q-table").innerHTML = `<pre>influxdb: ${esc(failed.error)}</pre>`;
      $("#q-chart").innerHTML = "";
      return;
    }
    // Both APIs become a list of {name, tags, columns, rows}; time is in ms either way.
    const series = which === "0.8"
      ? (data || []).map((s) => ({ name: s.name, tags: {}, columns: s.columns, rows: s.points || [] }))
      : ((data.results || [])[0]?.series || []).map((s) => ({ name: s.name, tags: s.tags || {}, columns: s.columns, rows: s.values || [] }));
    const rows = series.reduce((a, s) => a + s.rows.length, 0);
    $("#q-info").textContent = `${series.length} series, ${rows} rows in ${num(performance.now() - t0, 0)} ms`;
    $("#q-table").innerHTML = series.map((s) => `<h2>${esc(s.name)} ${esc(Object.entries(s.tags).map(([k, v]) => k + "=" + v).join(" "))}</h2>` +
      table(s.columns, s.rows.slice(0, 500).map((r) => r.map((c, i) => esc(c === null ? ""
        : s.columns[i] === "time" && typeof c === "number" ? new Date(c).toISOString()
          : typeof c === "number" ? num(c, 3) : c))), "no rows")).join("") || '<p class="muted">no series</p>';
    // A time chart of every numeric column of the time series.
    const lines = [];
    for (const s of series) {
      const ti = s.columns.indexOf("time");
      if (ti < 0 || s.rows.length < 2 || typeof s.rows[0][ti] !== "number") continue;
      s.columns.forEach((c, i) => {
        if (i === ti || c === "sequence_number") return;
        const pts = s.rows.filter((r) => typeof r[i] === "number").map((r) => [r[ti], r[i]]).sort((a, b) => a[0] - b[0]);
        const tag = Object.values(s.tags).join(",");
        if (pts.length > 1 && lines.length < 8) lines.push({ name: `${s.name}${tag ? "{" + tag + "}" : ""}.${c}`, points: pts });
      });
    }
    $("#q-chart").innerHTML = lines.length ? `<div class="grid2">${lineChart("Result", lines, (v) => num(v, 2))}</div>` : "";
  };
  $("#q-run").onclick = run;
  if (f.q) run();
}

// The state soup: the etcd-compatible store as a tree, live through a watch.
async function stateView(seq) {
  const f = query();
  const prefix = f.prefix || "/";
  let listing = null, selected = f.key || null;
  main.innerHTML = `<h1>State browser</h1>
  <div class="toolbar"><label>prefix <input id="kv-prefix" value="${esc(prefix)}" size="30"></label>
    <button id="kv-new">New key</button> <span class="muted" id="kv-info"></span></div>
  <div class="grid2" style="grid-template-columns: minmax(300px, 1fr) 2fr">
    <div class="card" id="kv-tree" style="overflow:auto; max-height:70vh"></div>
    <div id="kv-detail"><p class="muted">Pick a key.</p></div>
  </div>`;
  $("#kv-prefix").onchange = () => { location.hash = "#/state?prefix=" + encodeURIComponent($("#kv-prefix").value || "/"); };
  const tree = () => {
    const root = {};
    for (const e of listing.entries) {
      let node = root;
      const parts = e.key.split("/").filter((p, i) => p !== "" || i > 0);
      parts.forEach((p, i) => {
        node[p] = node[p] || { __children: {} };
        if (i === parts.length - 1) node[p].__entry = e;
        node = node[p].__children;
      });
    }
    const draw = (node) => Object.keys(node).sort().map((k) => {
      const n = node[k], kids = Object.keys(n.__children).length;
      const leaf = n.__entry ? `<a href="#" data-key="${esc(n.__entry.key)}" ${n.__entry.key === selected ? 'style="font-weight:700"' : ""}>${esc(k)}</a>` : esc(k);
      return kids ? `<details open><summary>${leaf}${n.__entry ? "" : "/"}</summary><div style="margin-left:14px">${draw(n.__children)}</div></details>` : `<div>${leaf}</div>`;
    }).join("");
    $("#kv-tree").innerHTML = listing.entries.length ? draw(root) : '<p class="muted">no keys under this prefix</p>';
    $("#kv-info").textContent = `${listing.entries.length} keys${listing.more ? " (more not shown)" : ""}, revision ${listing.revision}, store ${listing.endpoint}`;
    $("#kv-tree").querySelectorAll("[data-key]").forEach((a) => (a.onclick = (ev) => { ev.preventDefault(); selected = a.dataset.key; tree(); detail(); }));
  };
  const detail = () => {
    const d = $("#kv-detail");
    const e = listing.entries.find((x) => x.key === selected);
    if (!e) { d.innerHTML = selected ? `<p class="muted">${esc(selected)} is gone.</p>` : '<p class="muted">Pick a key.</p>'; return; }
    let pretty = e.value, isJson = false;
    try { pretty = JSON.stringify(JSON.parse(e.value), null, 2); isJson = true; } catch (_) { /* plain text */ }
    d.innerHTML = `<h2 style="margin-top:0">${esc(e.key)}</h2>
      <p class="muted">version ${e.version}, modified at revision ${e.mod_revision}, created at ${e.create_revision}${e.lease ? ", lease " + e.lease : ""}${isJson ? ", JSON" : ""}</p>
      <pre id="kv-value">${esc(pretty)}</pre>
      <h2>Edit</h2><textarea id="kv-edit" rows="8" style="width:100%; font-family:monospace">${esc(pretty)}</textarea>
      <div class="toolbar"><button id="kv-save">Save</button><button class="danger" id="kv-del">Delete</button></div>`;
    $("#kv-save").onclick = () => act(`Write ${e.key}?`, () => api("/api/v1/kv?key=" + encodeURIComponent(e.key), { method: "PUT", body: { value: $("#kv-edit").value } }), false);
    $("#kv-del").onclick = () => act(`Delete ${e.key}?`, () => api("/api/v1/kv?key=" + encodeURIComponent(e.key), { method: "DELETE" }));
  };
  $("#kv-new").onclick = async () => {
    const v = await dialog(`<p><b>New key</b></p><p><input id="nk-key" style="width:100%" value="${esc(prefix)}"></p>
      <p><textarea id="nk-val" rows="5" style="width:100%; font-family:monospace" placeholder="value"></textarea></p>`, [["cancel", "Cancel"], ["ok", "Create"]]);
    if (v !== "ok") return;
    const key = $("#nk-key").value.trim();
    if (!key) { showBanner("A key needs a name."); return; }
    try { await api("/api/v1/kv?key=" + encodeURIComponent(key), { method: "PUT", body: { value: $("#nk-val").value } }); selected = key; } catch (e) { showBanner(e.message); }
  };
  const reload = async () => {
    listing = await load("/api/v1/kv?prefix=" + encodeURIComponent(prefix));
    if (!listing || seq !== renderSeq) return false;
    tree();
    detail();
    return true;
  };
  if (!(await reload())) return;
  // Live: an etcd watch through the controller; each change reloads the listing.
  while (seq === renderSeq) {
    try {
      const c = await api(`/api/v1/kv/watch?prefix=${encodeURIComponent(prefix)}&after=${listing.revision}&wait_ms=20000`);
      if (seq !== renderSeq) return;
      if (c.changed && !(await reload())) return;
    } catch (e) {
      if (seq !== renderSeq) return;
      showBanner(e.message);
      await new Promise((r) => setTimeout(r, 3000));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Router

const routes = [
  [/^#?\/?$/, overview],
  [/^#\/tasks\/([^?]+)$/, taskView],
  [/^#\/tasks(\?.*)?$/, tasksView],
  [/^#\/frameworks$/, frameworksView],
  [/^#\/agents\/([^?]+)$/, agentView],
  [/^#\/agents$/, agentsView],
  [/^#\/services$/, servicesView],
  [/^#\/network$/, networkView],
  [/^#\/metrics\/([^?]+)$/, metricsView],
  [/^#\/metrics$/, metricsView],
  [/^#\/control-plane$/, controlPlaneView],
  [/^#\/state(\?.*)?$/, stateView],
  [/^#\/query(\?.*)?$/, queryView],
];

async function render() {
  timers.forEach(clearInterval);
  timers = [];
  const seq = ++renderSeq;
  const hash = location.hash || "#/";
  document.querySelectorAll("#nav a").forEach((a) => {
    const base = a.getAttribute("href");
    a.classList.toggle("active", base === "#/" ? hash === "#/" : hash.startsWith(base));
  });
  for (const [re, view] of routes) {
    const m = hash.match(re);
    if (m) {
      const arg = m[1] && !m[1].startsWith("?") ? decodeURIComponent(m[1]) : undefined;
      try { await view(seq, arg); } catch (e) { showBanner(e.message); }
      if (view === overview || view === tasksView || view === frameworksView || view === agentsView || view === servicesView || view === networkView) {
        every(5000, () => { if (seq === renderSeq && !$("#dialog").open) view(seq, arg, true).catch((e) => showBanner(e.message)); });
      }
      return;
    }
  }
  main.innerHTML = `<h1>Not found</h1><p>No page at <code>${esc(hash)}</code>. <a href="#/">Back to the overview</a>.</p>`;
}

window.addEventListener("hashchange", () => { showBanner(""); render(); });
(async () => {
  let who = null;
  try { who = await api("/api/v1/session", { login: true }); } catch (e) {
    if (!(await login(e.message))) {
      // The server's refusal already says "not logged in: ..."; other failures get the prefix.
      const why = /^not logged in/i.test(e.message) ? e.message : "not logged in: " + e.message;
      showBanner(why.charAt(0).toUpperCase() + why.slice(1));
      return;
    }
    who = await api("/api/v1/session", { login: true }).catch(() => null);
  }
  showWho(who);
  load("/api/v1/status").then((s) => {
    if (!s) return;
    $("#rack").textContent = "rack " + s.rack;
    if (s.warnings && s.warnings.length) showBanner(s.warnings.join(" · "));
  });
  render();
})();
