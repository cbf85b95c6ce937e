// tensorhub dashboard: polls the page's JSON endpoint and writes what it gets with textContent.
// User data (task names, kwargs, tracebacks, output) only ever becomes text nodes, never markup.
"use strict";

const POLL_MS = 1500;
const body = document.body;
const PAGE = body.dataset.page;
const ACTIONS = body.dataset.actions === "1";

// -- small DOM helpers ---------------------------------------------------------------------------
function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value;
    else if (key === "href") node.setAttribute("href", safeHref(value));
    else if (key === "title") node.title = String(value);
    else if (key.startsWith("data-")) node.setAttribute(key, String(value));
    else if (key === "onclick") node.addEventListener("click", value);
    else node.setAttribute(key, String(value));
  }
  for (const child of children) append(node, child);
  return node;
}
function append(node, child) {
  if (child === undefined || child === null) return;
  if (Array.isArray(child)) { child.forEach((c) => append(node, c)); return; }
  node.append(child instanceof Node ? child : document.createTextNode(String(child)));
}
function safeHref(value) {            // only our own paths
  const text = String(value);
  return text.startsWith("/") && !text.startsWith("//") ? text : "#";
}
function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }
function $(id) { return document.getElementById(id); }
function tbody(id) { return clear($(id).tBodies[0]); }
function text(value) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : String(Number(value.toPrecision(4)));
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}
function kv(obj) {
  return Object.entries(obj || {}).map(([k, v]) => `${k}=${text(v)}`).join(", ");
}
function age(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 120) return `${seconds.toFixed(0)}s`;
  if (seconds < 7200) return `${(seconds / 60).toFixed(0)}m`;
  return `${(seconds / 3600).toFixed(1)}h`;
}
function when(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return isNaN(d) ? String(iso) : d.toLocaleString();
}
function since(iso) {
  if (!iso) return "–";
  return age((Date.now() - new Date(iso).getTime()) / 1000) + " ago";
}
function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}
function duration(data) {            // stored, or from the start and end times (task runs)
  let seconds = data.duration_seconds;
  if ((seconds === null || seconds === undefined) && data.started_at && data.ended_at) {
    seconds = (new Date(data.ended_at) - new Date(data.started_at)) / 1000;
  }
  return seconds === null || seconds === undefined ? "–" : `${seconds.toFixed(1)}s`;
}
function status(value) { return el("span", { class: `status s-${value}`, "data-status": value }, value); }
function facts(id, pairs) {
  const dl = clear($(id));
  for (const [label, value] of pairs) {
    dl.append(el("dt", {}, label), el("dd", {}, value instanceof Node ? value : text(value)));
  }
  if (!pairs.length) dl.append(el("dd", { class: "muted" }, "none"));
}
function none(tb, columns, message) {
  if (!tb.rows.length) tb.append(el("tr", {}, el("td", { colspan: columns, class: "muted" }, message || "none")));
}
function runLink(id, label) { return el("a", { href: `/runs/${encodeURIComponent(id)}` }, label || id); }
function taskLink(id, label) { return el("a", { href: `/tasks/${encodeURIComponent(id)}` }, label || id); }
function pre(value, cls) { return el("pre", { class: cls || "trace" }, value || ""); }

// -- polling -------------------------------------------------------------------------------------
function apiUrl() {
  const query = new URLSearchParams(location.search);
  query.delete("token");
  const qs = query.toString();
  return body.dataset.api + (qs ? `?${qs}` : "");
}
function banner(message, kind) {
  const node = $("banner");
  if (!message) { node.hidden = true; clear(node); return; }
  node.className = `banner ${kind || "down"}`;
  node.textContent = message;
  node.hidden = false;
}
let lastOk = 0;
function offline() {
  $("live").textContent = lastOk ? `stale: last update ${since(new Date(lastOk).toISOString())}` : "offline";
  $("live").className = "live stale";
}
async function poll(render) {
  try {
    const response = await fetch(apiUrl(), { credentials: "same-origin", headers: { Accept: "application/json" } });
    const payload = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
    if (response.status === 503) {
      banner(`Hub unreachable — ${payload.error || "the server does not answer"}. Still trying…`, "down");
      offline();
    } else if (!response.ok) {
      banner(`Error ${response.status}: ${payload.error || response.statusText}`, "bad");
      return;   // a bad request stays bad: stop polling
    } else {
      banner(null);
      lastOk = Date.now();
      render(payload);
      $("live").textContent = "live";
      $("live").className = "live ok";
    }
  } catch (err) {
    banner(`Dashboard unreachable (${err.message}). Still trying…`, "down");
    offline();
  }
  setTimeout(() => poll(render), POLL_MS);
}

async function act(url, question, payload) {
  if (!window.confirm(question)) return;
  const headers = { "X-Tensorhub-Action": "1", Accept: "application/json" };
  if (payload) headers["Content-Type"] = "application/json";
  const response = await fetch(url, { method: "POST", credentials: "same-origin", headers,
                                      body: payload ? JSON.stringify(payload) : undefined });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) banner(`Action failed (${response.status}): ${answer.error || ""}`, "bad");
}

function setForm(names) {
  const query = new URLSearchParams(location.search);
  for (const [name, id] of names) {
    const node = $(id);
    if (node && query.has(name)) node.value = query.get(name);
  }
}
function pager(id, data, page) {
  const node = clear($(id));
  const query = new URLSearchParams(location.search);
  query.delete("token");
  const link = (p, label) => {
    query.set("page", String(p));
    return el("a", { href: `${location.pathname}?${query.toString()}`, class: "page" }, label);
  };
  node.append(`${data.matching} matching · page ${page} of ${data.pages} `);
  if (page > 1) node.append(link(1, "« first"), " ", link(page - 1, "‹ previous"), " ");
  if (page < data.pages) node.append(link(page + 1, "next ›"), " ", link(data.pages, "last »"));
}

// -- pages ---------------------------------------------------------------------------------------
function renderQueue(data) {
  // Counting every task is slow on servers that cannot count from an index: older counts are
  // shown at once while new ones are made, and then say how old they are.
  $("counts-age").textContent = data.counts_age > 3 ? `counted ${age(data.counts_age)} ago` : "";
  const totals = clear($("totals"));
  for (const [name, count] of Object.entries(data.totals)) {
    totals.append(el("a", { class: `count s-${name}`, "data-count": name, href: `/queue?status=${name}`,
                            title: `show the ${name} tasks` }, `${name} `, el("b", {}, count)));
  }
  const select = $("filter-task-name");
  const chosen = new URLSearchParams(location.search).get("task_name") || "";
  const names = data.summary.map((row) => row.task_name);
  if (select.options.length - 1 !== names.length || names.some((n, i) => select.options[i + 1].value !== n)) {
    clear(select).append(el("option", { value: "" }, "all"));
    for (const name of names) select.append(el("option", { value: name }, name));
    select.value = chosen;
  }
  const sums = tbody("summary");
  for (const row of data.summary) {
    const pct = row.total ? Math.round((100 * row.done) / row.total) : 0;
    const bar = el("div", { class: "bar", title: `${row.done} of ${row.total} done` },
                   el("div", { class: "fill", style: `width:${pct}%` }));
    const filter = `/queue?task_name=${encodeURIComponent(row.task_name)}`;
    sums.append(el("tr", { "data-task-name": row.task_name },
      el("td", {}, el("a", { href: filter }, row.task_name)),
      el("td", { class: "progress" }, bar, ` ${row.done}/${row.total} (${pct}%)`),
      ...["pending", "running", "finished", "failed", "cancelled"].map((s) => el("td", { class: `num s-${s}` }, row[s])),
      el("td", { class: "num" }, age(row.oldest_pending_age)),
      ACTIONS ? el("td", { class: "actions" }, sweepActions(row)) : null));
  }
  lastQueue = data;
  const rows = tbody("tasks");
  for (const task of data.tasks) {
    const runner = task.runner ? `${task.runner.host}:${task.runner.pid}${task.runner.gpu !== null ? ` gpu ${task.runner.gpu}` : ""}` : "–";
    const open = expanded.has(task.id);
    rows.append(el("tr", { "data-task-id": task.id },
      el("td", {}, el("button", { class: "expand", title: "attempts, failures, output", "aria-expanded": open ? "true" : "false",
                                  onclick: () => toggle(task.id) }, open ? "▾" : "▸"), " ", taskLink(task.id, task.id.slice(-8))),
      el("td", { class: "name" }, task.task_name),
      el("td", {}, status(task.status)),
      el("td", { class: "num" }, `${task.attempts}/${task.attempt_limit}`),
      el("td", { class: "hp" }, kv(task.hyper_parameters)),
      el("td", {}, runner),
      el("td", {}, since(task.created_at)),
      el("td", { class: "num" }, task.duration_seconds === null ? "–" : `${task.duration_seconds.toFixed(1)}s`),
      el("td", { class: "err" }, task.error ? `${task.error.type}: ${task.error.message}` : "")));
    if (open) rows.append(el("tr", { class: "detail", "data-detail-of": task.id }, el("td", { colspan: 9 }, taskDetail(expanded.get(task.id)))));
  }
  if (!data.tasks.length) rows.append(el("tr", {}, el("td", { colspan: 9, class: "muted" }, "no tasks")));
  pager("pager", data, data.page);
  for (const id of expanded.keys()) loadDetail(id);      // keep the open ones current
}

// A task opened in place in the queue: its attempts, failures (traceback tails), output tail, timings.
const expanded = new Map();
let lastQueue = null;
function toggle(id) {
  if (expanded.has(id)) expanded.delete(id); else { expanded.set(id, null); loadDetail(id); }
  if (lastQueue) renderQueue(lastQueue);
}
async function loadDetail(id) {
  const response = await fetch(`/api/tasks/${encodeURIComponent(id)}`, { credentials: "same-origin" }).catch(() => null);
  if (!response || !response.ok || !expanded.has(id)) return;
  const detail = await response.json();
  const first = expanded.get(id) === null;
  expanded.set(id, detail);
  if (first && lastQueue) renderQueue(lastQueue);
  else {
    const cell = document.querySelector(`tr[data-detail-of="${CSS.escape(id)}"] td`);
    if (cell) clear(cell).append(taskDetail(detail));
  }
}
function taskDetail(d) {
  if (!d) return el("span", { class: "muted" }, "loading…");
  const attempts = d.runs.map((r) => `attempt ${r.attempt}: ${r.status}, ${r.epochs_done} epochs, ${r.runner ? r.runner.host + ":" + r.runner.pid : "–"}, ${when(r.started_at)} → ${when(r.ended_at)}`);
  return el("div", { class: "inline-detail" },
    el("p", {}, `started ${when(d.started_at)} · finished ${when(d.finished_at)} · ${d.attempts} of ${d.attempt_limit} attempts`),
    attempts.length ? el("ul", {}, attempts.map((a) => el("li", {}, a))) : null,
    d.failures.map((f, i) => el("div", {}, el("p", { class: "err" }, `failure ${i + 1}: ${f.type}: ${f.message || ""}`), pre(f.traceback))),
    el("p", { class: "muted" }, "output (tail):"), pre(d.output.tail || "(no output yet)", "output"));
}

function sweepActions(row) {
  const buttons = [];
  const active = row.pending + row.running;
  if (active) {
    buttons.push(el("button", { class: "danger", "data-action": "cancel", onclick: () => act("/api/sweeps/cancel",
      `Cancel the ${active} pending and running tasks named ${row.task_name}?`, { task_name: row.task_name }) }, `cancel ${active}`));
  }
  if (row.failed) {
    buttons.push(el("button", { "data-action": "requeue", onclick: () => act("/api/sweeps/requeue",
      `Requeue the ${row.failed} failed tasks named ${row.task_name}?`, { task_name: row.task_name }) }, `requeue ${row.failed} failed`));
  }
  return buttons;
}

function renderTask(data) {
  $("task-name").textContent = data.task_name;
  clear($("task-status")).append(status(data.status));
  facts("task-facts", [
    ["status", data.status], ["attempts", `${data.attempts} of ${data.attempt_limit} allowed (max_attempts ${data.max_attempts})`],
    ["priority", data.priority], ["timeout", data.timeout_seconds === null ? "none" : `${data.timeout_seconds}s`],
    ["code", [data.code_kind, data.code_name].filter(Boolean).join(" ")], ["runner", data.runner ? `${data.runner.host}:${data.runner.pid}${data.runner.gpu !== null ? ` gpu ${data.runner.gpu}` : ""}` : "–"],
    ["created", when(data.created_at)], ["started", when(data.started_at)], ["finished", when(data.finished_at)],
    ["duration", data.duration_seconds === null ? "–" : `${data.duration_seconds.toFixed(2)}s`],
    ["saved result keys", (data.saved_result_keys || []).join(", ") || "–"]]);
  facts("task-hp", Object.entries(data.hyper_parameters));
  facts("task-fields", Object.entries(data.fields));
  facts("task-result", Object.entries(data.result || {}));
  const runs = tbody("task-runs");
  for (const run of data.runs) {
    runs.append(el("tr", {}, el("td", {}, run.attempt), el("td", {}, runLink(run.id, run.name)), el("td", {}, status(run.status)),
      el("td", { class: "num" }, run.epochs_done), el("td", {}, run.runner ? `${run.runner.host}:${run.runner.pid}` : "–"),
      el("td", {}, when(run.started_at)), el("td", {}, when(run.ended_at))));
  }
  none(runs, 7, "not started yet");
  const error = clear($("task-error"));
  if (data.error) error.append(el("p", { class: "err" }, `${data.error.type}: ${data.error.message}`), pre(data.error.traceback));
  else error.append(el("p", { class: "muted" }, "none"));
  const failures = clear($("task-failures"));
  if (!data.failures.length) failures.append(el("p", { class: "muted" }, "none"));
  data.failures.forEach((f, i) => failures.append(el("details", { open: i === data.failures.length - 1 ? "" : null },
    el("summary", {}, `attempt ${f.attempt ?? i + 1}: ${f.type}: ${f.message || ""} ${f.at ? "— " + when(f.at) : ""}`),
    pre(f.traceback))));
  const history = tbody("task-history");
  for (const h of data.history) {
    const { at, event, ...rest } = h;
    history.append(el("tr", {}, el("td", {}, when(at)), el("td", {}, event), el("td", {}, kv(rest))));
  }
  none(history, 3, "no hand-backs, lost rounds or requeues");
  $("task-output").textContent = data.output.tail || "(no output yet)";
  $("whole-output").hidden = !data.output.stored;
  const actions = clear($("actions"));
  if (ACTIONS) {
    const base = `/api/tasks/${encodeURIComponent(data.id)}`;
    if (data.status === "pending" || data.status === "running") {
      actions.append(el("button", { class: "danger", id: "cancel", onclick: () => act(`${base}/cancel`, `Cancel task ${data.task_name} (${data.id})?`) }, "cancel"));
    } else {
      actions.append(el("button", { id: "requeue", onclick: () => act(`${base}/requeue`, `Requeue task ${data.task_name} (${data.id}) with a fresh attempt budget?`) }, "requeue"));
    }
  }
}

function renderFleet(data) {
  const counts = clear($("fleet-counts"));
  for (const [state, n] of Object.entries(data.counts)) counts.append(el("span", { class: `count r-${state}`, "data-count": state }, `${state} `, el("b", {}, n)));
  const rows = tbody("runners");
  for (const r of data.runners) {
    const slots = el("ul", { class: "slots" }, r.slots.map((s) => el("li", {},
      `${s.gpu !== null && s.gpu !== undefined ? "gpu " + s.gpu : "slot " + s.slot} → `,
      s.task_id ? taskLink(s.task_id, s.task_name || s.task_id) : el("span", { class: "muted" }, "idle"))));
    rows.append(el("tr", { class: `r-${r.state}`, "data-runner-pid": r.pid, "data-state": r.state },
      el("td", {}, `${r.host}:${r.pid}`), el("td", {}, el("span", { class: `state r-${r.state}` }, r.state === "lost" ? "LOST" : r.state)),
      el("td", {}, r.gpus.join(",") || "–"), el("td", {}, slots), el("td", { class: "num" }, age(r.heartbeat_age)),
      el("td", { class: "num" }, r.tasks_done), el("td", { class: "num" }, r.tasks_failed), el("td", {}, kv(r.task_filter) || "any"),
      el("td", {}, r.version), el("td", {}, when(r.started_at))));
  }
  if (!data.runners.length) rows.append(el("tr", {}, el("td", { colspan: 10, class: "muted" }, "no runners registered")));
}

function renderRuns(data) {
  const select = $("filter-metric");
  if (select.options.length !== data.metrics.length) {
    clear(select);
    for (const m of data.metrics) select.append(el("option", { value: m }, m));
  }
  if (data.metric) select.value = data.metric;
  const head = clear($("leaderboard").tHead.rows[0]);
  const query = new URLSearchParams(location.search);
  query.delete("token"); query.delete("page");
  const hidden = new Set(["run_id", "task_id"]);
  const shown = data.columns.map((c, i) => [c, i]).filter(([c]) => !hidden.has(c));
  for (const [column] of shown) {
    const descending = data.sort === column ? !data.descending : column === data.metric && data.direction === "max";
    query.set("sort", column); query.set("dir", descending ? "desc" : "asc");
    const mark = data.sort === column ? (data.descending ? " ▼" : " ▲") : "";
    head.append(el("th", { "data-column": column }, el("a", { href: `/runs?${query.toString()}` }, column + mark)));
  }
  const rows = tbody("leaderboard");
  const at = Object.fromEntries(data.columns.map((c, i) => [c, i]));
  for (const row of data.rows) {
    rows.append(el("tr", { "data-run-id": row[at.run_id] }, shown.map(([column, i]) =>
      column === "run_name" ? el("td", {}, runLink(row[at.run_id], row[i]))
        : column === "status" ? el("td", {}, status(row[i]))
          : el("td", { class: typeof row[i] === "number" ? "num" : "" }, text(row[i])))));
  }
  if (!data.rows.length) rows.append(el("tr", {}, el("td", { class: "muted" }, data.metric ? `no run logged ${data.metric}` : "no runs with epoch metrics yet")));
  $("leaderboard-note").textContent = data.metric ? `Ranked by each run's best epoch of ${data.metric} (${data.direction} is best); click a column to sort.` : "";
  pager("pager", data, data.page);
}

const SPLIT_PREFIXES = ["val_", "validation_", "test_", "train_"];
function baseMetric(name) {
  for (const p of SPLIT_PREFIXES) if (name.startsWith(p)) return name.slice(p.length);
  return name;
}
function renderCurves(data) {
  const container = $("curves");
  if (typeof Plotly === "undefined") return;
  const ei = data.epoch_columns.indexOf("epoch");
  const metrics = data.epoch_columns.filter((c) => !["epoch", "time", "run_id"].includes(c));
  const groups = {};
  for (const m of metrics) (groups[baseMetric(m)] = groups[baseMetric(m)] || []).push(m);
  const names = Object.keys(groups).sort();
  if (!names.length) { if (!container.dataset.empty) { clear(container).append(el("p", { class: "muted" }, "no epochs logged yet")); container.dataset.empty = "1"; } return; }
  if (container.dataset.empty) { clear(container); delete container.dataset.empty; }
  for (const name of names) {
    const id = `curve-${name.replace(/[^A-Za-z0-9_-]/g, "_")}`;
    let div = document.getElementById(id);
    if (!div) { div = el("div", { id, class: "curve", "data-metric": name }); container.append(div); }
    const traces = groups[name].map((m) => {
      const col = data.epoch_columns.indexOf(m);
      const points = data.epochs.filter((r) => r[col] !== null && r[col] !== undefined);
      return { x: points.map((r) => r[ei]), y: points.map((r) => r[col]), name: m, mode: "lines+markers",
               line: { dash: m === name ? "solid" : "dash" } };
    });
    Plotly.react(div, traces, { title: { text: name }, margin: { t: 36, r: 16, b: 40, l: 48 }, height: 280,
                                xaxis: { title: { text: "epoch" } }, legend: { orientation: "h" } },
                 { displaylogo: false, responsive: true });
  }
}

function renderRun(data) {
  $("run-name").textContent = data.name;
  clear($("run-status")).append(status(data.status));
  renderCurves(data);
  facts("run-facts", [["status", data.status], ["attempt", data.attempt], ["epochs done", data.epochs_done],
    ["steps done", data.steps_done], ["runner", data.runner ? `${data.runner.host}:${data.runner.pid}` : "–"],
    ["started", when(data.started_at)], ["ended", when(data.ended_at)],
    ["duration", duration(data)]]);
  facts("run-hp", Object.entries(data.hyper_parameters));
  const summary = tbody("run-summary");
  for (const [name, s] of Object.entries(data.summary)) {
    summary.append(el("tr", {}, el("td", {}, name), el("td", { class: "num" }, `${text(s.min)} (${text(s.min_epoch)})`),
      el("td", { class: "num" }, `${text(s.max)} (${text(s.max_epoch)})`), el("td", { class: "num" }, text(s.last))));
  }
  none(summary, 4, "no epoch metrics yet");
  facts("run-lineage", [
    ["task", data.task_id ? taskLink(data.task_id, `${data.task_name || ""} ${data.task_id}`) : "– (a script's own run)"],
    ["continues", data.parent_run_id ? runLink(data.parent_run_id) : "–"],
    ["datasets read", data.datasets.length ? data.datasets.map((d) => `${d.dataset_name} v${d.version} (${String(d.sha256 || "").slice(0, 12)})`).join("; ") : "none recorded"],
    ["models saved", data.models.length ? data.models.map((m) => `${m.model_name} v${m.version} at epoch ${m.epoch}`).join("; ") : "none"]]);
  const ancestors = tbody("run-ancestors");
  for (const a of data.ancestors) {
    ancestors.append(el("tr", {}, el("td", {}, a.attempt), el("td", {}, runLink(a.id, a.name)), el("td", {}, status(a.status)),
      el("td", { class: "num" }, a.epochs_done), el("td", {}, when(a.started_at))));
  }
  if (!data.ancestors.length) ancestors.append(el("tr", {}, el("td", { colspan: 5, class: "muted" }, "none: this is a first attempt")));
  const head = clear($("run-epochs").tHead.rows[0]);
  const cols = data.epoch_columns.filter((c) => c !== "time");
  for (const c of cols) head.append(el("th", {}, c));
  const epochs = tbody("run-epochs");
  for (const row of data.epochs) {
    epochs.append(el("tr", {}, cols.map((c) => {
      const v = row[data.epoch_columns.indexOf(c)];
      return c === "run_id" ? el("td", {}, v ? runLink(v, v.slice(-8)) : "–") : el("td", { class: "num" }, text(v));
    })));
  }
  const checkpoints = tbody("run-checkpoints");
  for (const c of data.checkpoints) {
    checkpoints.append(el("tr", {}, el("td", { class: "num" }, c.epoch), el("td", { class: "num" }, c.version),
      el("td", { class: "num" }, bytes(c.size)), el("td", { class: "sha", title: c.sha256 }, String(c.sha256).slice(0, 16)),
      el("td", {}, when(c.created_at)), el("td", {}, kv(c.fields))));
  }
  if (!data.checkpoints.length) checkpoints.append(el("tr", {}, el("td", { colspan: 6, class: "muted" }, "none")));
  const error = clear($("run-error"));
  if (data.error) error.append(el("p", { class: "err" }, `${data.error.type}: ${data.error.message}`), pre(data.error.traceback));
  else error.append(el("p", { class: "muted" }, "none"));
}

function renderRecords(data) {
  const rows = tbody("records");
  for (const r of data.records) {
    rows.append(el("tr", {}, el("td", { class: "name" }, r.name), el("td", { class: "num" }, r.version),
      el("td", { class: "hp" }, kv(r.fields)), el("td", {}, r.summary), el("td", { class: "num" }, bytes(r.size)),
      el("td", { class: "sha", title: r.sha256 }, String(r.sha256).slice(0, 16)), el("td", {}, when(r.created_at)),
      el("td", {}, r.run ? runLink(r.run.run_id, `${r.run.run_name} (epoch ${text(r.run.epoch)})`) : "–")));
  }
  if (!data.records.length) rows.append(el("tr", {}, el("td", { colspan: 8, class: "muted" }, `no ${data.kind}`)));
}

const PAGES = {
  queue: () => { setForm([["status", "filter-status"], ["order", "filter-order"], ["per_page", "filter-per-page"]]); poll(renderQueue); },
  task: () => poll(renderTask),
  fleet: () => poll(renderFleet),
  runs: () => { setForm([["direction", "filter-direction"], ["task_name", "filter-task-name"], ["per_page", "filter-per-page"]]); poll(renderRuns); },
  run: () => poll(renderRun),
  models: () => { setForm([["name", "filter-name"], ["limit", "filter-limit"]]); poll(renderRecords); },
  datasets: () => { setForm([["name", "filter-name"], ["limit", "filter-limit"]]); poll(renderRecords); },
};
const detail = body.dataset.taskId ? "task" : body.dataset.runId ? "run" : PAGE;
(PAGES[detail] || (() => {}))();
