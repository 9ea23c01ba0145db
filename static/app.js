// Heartbeat dashboard: plain DOM, no framework, no build step.
// Rule: every piece of user or LLM text enters the page as a text node (el(), textContent),
// never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "heartbeat.token";
const THREAD_KEY = "heartbeat.thread";
const FEED_MAX = 20;

// A run's status and loop as the API names them (RunStatus and Loop in ledger/records.py).
const STATUS = Object.freeze({
  RUNNING: "running",
  OK: "ok",
  DRY_RUN: "dry_run",
  SKIPPED: "skipped",
  REJECTED: "rejected",
  FAILED: "failed",
  INTERRUPTED: "interrupted",
});
const LOOP = Object.freeze({
  HEARTBEAT: "heartbeat",
  REFLECTION: "reflection",
  PERSONALITY: "personality",
  SELF_REPLY: "self_reply",
});

const state = {
  token: sessionStorage.getItem(TOKEN_KEY) || "",
  thread: null,
  inFlight: {}, // thread id -> run id (-1 while the id is not known yet)
  schedulerRunning: null,
  llmProblem: null,
  mdEmpty: false,
  mdMissing: false,
  mdRevision: null, // the revision of HEARTBEAT.md the editor holds
  configDirty: false,
  historyCursor: null,
  historyIds: new Set(),
  postsCursor: null,
  source: null,
  feed: new Map(), // run id -> the parts of its feed item
};

// ---- DOM and formatting helpers ---------------------------------------------------------------

// el("p", {class: "x"}, "text", child): strings become text nodes, never markup.
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

// The service stores what it sanitized (the agent's Ledger posts and comments, accepted
// decisions and their summaries) HTML-escaped. Shown as text, that is decoded first, so that
// "Q&A" does not read "Q&amp;A"; the exact inverse of the escaping, in one pass.
const ESCAPES = { "&amp;": "&", "&lt;": "<", "&gt;": ">", "&quot;": '"', "&#x27;": "'" };

function unescaped(text) {
  return String(text).replace(/&(?:amp|lt|gt|quot|#x27);/g, (entity) => ESCAPES[entity]);
}

// Whether a run's decision and summary went through the sanitizer (a rejected run keeps the
// model's reply as it came).
function sanitized(run) {
  return run.status === STATUS.OK || run.status === STATUS.DRY_RUN;
}

function setText(id, text) {
  $(id).textContent = text;
}

function relative(date) {
  const secs = (date.getTime() - Date.now()) / 1000;
  const abs = Math.abs(secs);
  if (abs < 45) return secs > 3 ? "in a few seconds" : "just now";
  const [minutes, hours] = [Math.round(abs / 60), Math.round(abs / 3600)];
  let amount = `${Math.round(abs / 86400)} d`;
  if (minutes < 60) amount = `${minutes} min`;
  else if (hours < 24) amount = `${hours} h`;
  return secs > 0 ? `in ${amount}` : `${amount} ago`;
}

// "local time (relative)", or `none` when there is no time.
function when(iso, none = "—") {
  if (!iso) return none;
  const date = new Date(iso);
  return `${date.toLocaleString()} (${relative(date)})`;
}

const enc = encodeURIComponent;

// ---- the API, with the token form on 401 ------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    const err = (body && body.error) || {};
    super(err.message || `HTTP ${status}`);
    this.status = status;
    this.field = err.field || null;
    this.detail = err;
  }
}

async function api(path, { method = "GET", body } = {}) {
  for (;;) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (state.token) headers.Authorization = `Bearer ${state.token}`;
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const resp = await fetch(path, { method, headers, body: payload });
    if (resp.status === 401) {
      await askToken(state.token ? "That token was refused; check it and try again." : "");
      continue;
    }
    const data = await resp.json().catch(() => null);
    if (!resp.ok) throw new ApiError(resp.status, data);
    return data;
  }
}

let tokenWaiter = null;

// One prompt for every request that hit a 401; all of them retry once a token is given.
function askToken(problem) {
  if (tokenWaiter) return tokenWaiter;
  tokenWaiter = new Promise((resolve) => {
    const form = $("token-form");
    setText("token-problem", problem);
    $("token-panel").hidden = false;
    $("token-input").focus();
    form.addEventListener("submit", function onSubmit(ev) {
      ev.preventDefault();
      const value = $("token-input").value.trim();
      if (!value) return;
      form.removeEventListener("submit", onSubmit);
      state.token = value;
      sessionStorage.setItem(TOKEN_KEY, value);
      $("token-input").value = "";
      $("token-panel").hidden = true;
      tokenWaiter = null;
      resolve();
      if (state.thread) connectLive();
    });
  });
  return tokenWaiter;
}

// Show an API error next to the field it names (a slot's data-field lists the names it takes).
function showError(form, error) {
  const field = error.field || "*";
  const slots = [...form.querySelectorAll(".field-error")];
  const slot =
    slots.find((s) => s.dataset.field.split(" ").includes(field)) ||
    slots.find((s) => s.dataset.field === "*") ||
    slots[slots.length - 1];
  slot.textContent = error.message;
  const box = form.elements.namedItem(field === "every" ? "every_seconds" : field);
  if (box instanceof HTMLElement) box.setAttribute("aria-invalid", "true");
}

function clearErrors(form) {
  for (const slot of form.querySelectorAll(".field-error")) slot.textContent = "";
  for (const box of form.querySelectorAll("[aria-invalid]")) box.removeAttribute("aria-invalid");
}

function report(id, error) {
  setText(id, error instanceof ApiError ? error.message : `Failed: ${error.message || error}`);
}

// ---- the clear states at the top --------------------------------------------------------------

function renderAlerts() {
  const alerts = [];
  if (state.llmProblem) alerts.push(["bad", state.llmProblem]);
  if (state.schedulerRunning === false) {
    alerts.push(["warn", "Scheduler stopped: no heartbeat runs on its own until you start it."]);
  }
  const running = state.inFlight[state.thread];
  if (running !== undefined) {
    const which = running > 0 ? ` (run #${running})` : "";
    alerts.push(["info", `A run is in flight for thread ${state.thread}${which}.`]);
  }
  if (state.mdEmpty) {
    alerts.push(["warn", "Empty instructions: runs will be skipped until HEARTBEAT.md has some."]);
  } else if (state.mdMissing) {
    alerts.push(["info", "No HEARTBEAT.md yet: runs go ahead with no standing instructions."]);
  }
  const nodes = alerts.map(([kind, text]) => el("p", { class: `alert ${kind}` }, text));
  $("alerts").replaceChildren(...nodes);
}

async function refreshHealth() {
  try {
    const resp = await fetch("/healthz", { headers: { Accept: "application/json" } });
    const health = await resp.json();
    const llm = health.llm || {};
    const detail = llm.detail ? `: ${llm.detail}` : "";
    state.llmProblem = null;
    if (!llm.reachable) state.llmProblem = `LLM unreachable at ${llm.base_url}${detail}`;
    else if (llm.model_present === false) {
      state.llmProblem = `Model ${llm.model} is not available at ${llm.base_url}${detail}`;
    }
    const badge = $("llm-state");
    badge.textContent = `LLM: ${llm.reachable ? llm.model : "unreachable"}`;
    badge.className = `badge ${state.llmProblem ? "bad" : "ok"}`;
    badge.title = llm.base_url || "";
    if (typeof health.scheduler_running === "boolean") setScheduler(health.scheduler_running);
  } catch (error) {
    state.llmProblem = `The service does not answer (${error.message}).`;
  }
  renderAlerts();
}

// ---- scheduler ---------------------------------------------------------------------------------

function setScheduler(running) {
  state.schedulerRunning = running;
  const badge = $("sched-state");
  badge.textContent = running ? "scheduler: running" : "scheduler: stopped";
  badge.className = `badge ${running ? "ok" : "warn"}`;
  $("sched-toggle").textContent = running ? "Stop scheduler" : "Start scheduler";
  $("sched-toggle").disabled = false;
  renderAlerts();
}

async function refreshStatus() {
  const status = await api("/api/heartbeat/status");
  setScheduler(status.running);
  state.inFlight = { ...status.in_flight };
  renderRunButton();
}

async function toggleScheduler() {
  $("sched-toggle").disabled = true;
  try {
    const verb = state.schedulerRunning ? "stop" : "start";
    setScheduler((await api(`/api/heartbeat/${verb}`, { method: "POST" })).running);
    await loadConfig();
  } catch (error) {
    report("run-status", error);
    $("sched-toggle").disabled = false;
  }
}

// ---- threads -----------------------------------------------------------------------------------

async function loadThreads(select) {
  const threads = [];
  let cursor = null;
  do {
    const page = await api(`/api/threads?limit=1000${cursor ? `&cursor=${enc(cursor)}` : ""}`);
    threads.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor);
  const label = (t) => (t.title === t.thread_id ? t.thread_id : `${t.title} (${t.thread_id})`);
  $("thread-select").replaceChildren(
    ...threads.map((t) => el("option", { value: t.thread_id }, label(t))),
  );
  const wanted = select || state.thread || localStorage.getItem(THREAD_KEY);
  const chosen = threads.some((t) => t.thread_id === wanted) ? wanted : threads[0]?.thread_id;
  if (chosen) {
    $("thread-select").value = chosen;
    await selectThread(chosen);
  }
}

async function selectThread(tid) {
  state.thread = tid;
  state.configDirty = false;
  localStorage.setItem(THREAD_KEY, tid);
  state.feed.clear();
  $("feed").replaceChildren();
  $("feed-empty").hidden = false;
  setText("run-status", "");
  setText("config-status", "");
  renderRunButton();
  connectLive();
  await Promise.all([loadConfig(), loadHistory(true), loadTimeline()]);
}

async function createThread(ev) {
  ev.preventDefault();
  const form = ev.currentTarget;
  clearErrors(form);
  const body = {};
  const [tid, title] = [$("new-thread-id").value.trim(), $("new-thread-title").value.trim()];
  if (tid) body.thread_id = tid;
  if (title) body.title = title;
  try {
    const thread = await api("/api/threads", { method: "POST", body });
    form.reset();
    $("new-thread").open = false;
    await loadThreads(thread.thread_id);
  } catch (error) {
    showError(form, error);
  }
}

// ---- limits ------------------------------------------------------------------------------------

// The forms' bounds and hints are the service's: each form takes them from the request schema of
// the route it posts to, in the OpenAPI document.
const FORM_ROUTES = {
  "new-thread-form": "/api/threads",
  "config-form": "/api/threads/{thread_id}/heartbeat/config",
  "md-form": "/api/heartbeat/heartbeat.md",
};

async function loadLimits() {
  try {
    const doc = await api("/openapi.json");
    for (const [form, path] of Object.entries(FORM_ROUTES)) {
      const body = doc.paths[path].post.requestBody.content["application/json"].schema;
      applyLimits($(form), body.properties);
    }
  } catch (error) {
    report("config-status", error);
  }
}

function applyLimits(form, properties) {
  for (const [name, schema] of Object.entries(properties)) {
    const box = form.elements.namedItem(name);
    if (!(box instanceof HTMLElement)) continue;
    if (schema.maxLength !== undefined) box.maxLength = schema.maxLength;
    if (schema.minimum === undefined || schema.maximum === undefined) continue;
    const [lo, hi] = [schema.minimum, schema.maximum];
    if (box.type === "number") Object.assign(box, { min: lo, max: hi });
    const hint = $(`hint-${name}`);
    if (!hint) continue;
    const unit = name === "every_seconds" ? " seconds" : "";
    const optional = name.startsWith("active_hours")
      ? "; empty for all day"
      : name === "daily_token_budget" || name === "quiet_after_user_seconds"
        ? "; empty for none"
        : "";
    hint.textContent = `${lo}–${hi}${unit}${optional}`;
  }
}

// ---- config ------------------------------------------------------------------------------------

// Each field of the form (input id "cfg-<name>") and how its value is read.
const FIELDS = {
  enabled: "bool",
  every_seconds: "every",
  target: "text",
  model: "text-or-null",
  max_tokens: "number",
  temperature: "number",
  active_hours_start: "number-or-null",
  active_hours_end: "number-or-null",
  timezone: "text",
  dry_run: "bool",
  skip_unchanged: "bool",
  daily_token_budget: "number-or-null",
  quiet_after_user_seconds: "number-or-null",
};

// Reload the config; the form's fields are left alone while they hold unsaved edits.
async function loadConfig() {
  const tid = state.thread;
  if (!tid) return;
  try {
    const cfg = await api(`/api/threads/${enc(tid)}/heartbeat/config`);
    if (tid !== state.thread) return;
    if (!state.configDirty) renderConfig(cfg);
    renderTimes(cfg);
    if (cfg.warning) setText("config-status", cfg.warning);
  } catch (error) {
    report("config-status", error);
  }
}

function renderConfig(cfg) {
  for (const [name, kind] of Object.entries(FIELDS)) {
    const box = $(`cfg-${name}`);
    if (kind === "bool") box.checked = Boolean(cfg[name]);
    else box.value = cfg[name] === null || cfg[name] === undefined ? "" : String(cfg[name]);
  }
  state.configDirty = false;
  renderTimes(cfg);
}

function renderTimes(cfg) {
  let next = when(cfg.next_run_at, "not scheduled");
  if (!cfg.enabled) next = "— (heartbeat disabled)";
  else if (!cfg.next_run_at && !cfg.anchor_at) next = "not scheduled yet: save the config to start";
  setText("next-run", next);
  $("next-run").dataset.iso = (cfg.enabled && cfg.next_run_at) || "";
  setText("last-run", when(cfg.last_run_at, "never"));
  $("last-run").dataset.iso = cfg.last_run_at || "";
  setText("beats-today", describeDay(cfg.status));
}

// A thread's day in one line: tokens and budget, beats decided and skipped by reason, a pause.
function describeDay(day) {
  if (!day) return "—";
  const budget = day.daily_token_budget === null ? "" : ` of ${day.daily_token_budget}`;
  const skipped = Object.entries(day.skipped_today).map(([why, n]) => `${n} ${why}`);
  const parts = [
    `${day.tokens_today}${budget} tokens`,
    `${day.decided_today} decided`,
    skipped.length ? `skipped: ${skipped.join(", ")}` : "none skipped",
  ];
  if (day.failed_today) parts.push(`${day.failed_today} failed`);
  if (day.paused) parts.push(`PAUSED: ${day.paused_reason}`);
  return parts.join(" · ");
}

// The form as a config patch. Bad values go to the API as typed, so its message names them.
function readConfig() {
  const patch = {};
  for (const [name, kind] of Object.entries(FIELDS)) {
    const box = $(`cfg-${name}`);
    const raw = box.value.trim();
    if (kind === "bool") patch[name] = box.checked;
    else if (kind === "every") {
      if (/^\d+$/.test(raw)) patch.every_seconds = Number(raw);
      else patch.every = raw;
    } else if (kind === "text") patch[name] = raw;
    else if (kind === "text-or-null") patch[name] = raw || null;
    else if (raw === "") patch[name] = kind === "number-or-null" ? null : "";
    else patch[name] = Number.isFinite(Number(raw)) ? Number(raw) : raw;
  }
  return patch;
}

async function saveConfig(ev) {
  ev.preventDefault();
  const form = ev.currentTarget;
  clearErrors(form);
  setText("config-status", "Saving…");
  try {
    const path = `/api/threads/${enc(state.thread)}/heartbeat/config`;
    const cfg = await api(path, { method: "POST", body: readConfig() });
    renderConfig(cfg);
    setText("config-status", cfg.warning || "Saved.");
  } catch (error) {
    setText("config-status", "Not saved: see the message by the field.");
    showError(form, error);
  }
}

// ---- HEARTBEAT.md ------------------------------------------------------------------------------

function renderMd(md) {
  $("md-text").value = md.content;
  state.mdRevision = md.revision; // sent back with a save: a save made meanwhile is not lost
  state.mdEmpty = md.exists && md.empty;
  state.mdMissing = !md.exists;
  let line = md.exists ? `Last modified ${when(md.last_modified)}` : "No file yet";
  if (state.mdEmpty) line += " · Empty instructions: runs will be skipped";
  setText("md-state", line);
  $("md-state").className = state.mdEmpty ? "warn-text" : "muted";
  renderAlerts();
}

async function loadMd() {
  try {
    renderMd(await api("/api/heartbeat/heartbeat.md"));
  } catch (error) {
    report("md-status", error);
  }
}

async function saveMd(ev) {
  ev.preventDefault();
  const form = ev.currentTarget;
  clearErrors(form);
  setText("md-status", "Saving…");
  try {
    const body = { content: $("md-text").value, base_revision: state.mdRevision ?? null };
    renderMd(await api("/api/heartbeat/heartbeat.md", { method: "POST", body }));
    setText("md-status", "Saved.");
  } catch (error) {
    setText("md-status", "Not saved.");
    showError(form, error);
  }
}

// ---- run now -----------------------------------------------------------------------------------

function renderRunButton() {
  const button = $("run-now");
  const running = state.inFlight[state.thread];
  button.disabled = !state.thread || running !== undefined;
  const which = running > 0 ? ` (run #${running})` : "";
  button.textContent = running === undefined ? "Run now" : `Running…${which}`;
  button.setAttribute("aria-busy", String(running !== undefined));
  renderAlerts();
}

async function runNow() {
  const tid = state.thread;
  if (state.inFlight[tid] === undefined) state.inFlight[tid] = -1;
  renderRunButton();
  setText("run-status", "");
  try {
    const run = await api(`/api/threads/${enc(tid)}/heartbeat/run-now`, { method: "POST" });
    finishRun(run); // in case the live stream missed it
    const summary = run.summary ? ` — ${runSummary(run)}` : "";
    if (tid === state.thread) setText("run-status", `Run #${run.run_id}: ${run.status}${summary}`);
  } catch (error) {
    if (error.status === 409) {
      state.inFlight[tid] = error.detail.run_id;
      setText("run-status", `Already running: run #${error.detail.run_id} is in flight.`);
    } else {
      delete state.inFlight[tid];
      report("run-status", error);
    }
  }
  renderRunButton();
}

// ---- the live feed -----------------------------------------------------------------------------

function feedItem(runId, info = {}) {
  let item = state.feed.get(runId);
  if (item) return item;
  const meta = [info.trigger, info.model].filter(Boolean).join(" · ");
  item = {
    status: el("span", { class: "badge running" }, STATUS.RUNNING),
    tokens: el("pre", { class: "tokens", "aria-label": `reply of run ${runId} as it streams` }),
    decision: el("div", { class: "decision" }),
    summary: el("p", { class: "summary" }),
  };
  const head = el("div", { class: "feed-head" }, el("strong", {}, `Run #${runId}`), item.status);
  head.append(el("span", { class: "muted" }, meta));
  item.li = el("li", { class: "feed-item", "data-run": runId }, head, item.tokens, item.decision);
  item.li.append(item.summary);
  state.feed.set(runId, item);
  $("feed").prepend(item.li);
  $("feed-empty").hidden = true;
  while ($("feed").children.length > FEED_MAX) {
    state.feed.delete(Number($("feed").lastElementChild.dataset.run));
    $("feed").lastElementChild.remove();
  }
  return item;
}

function renderDecision(box, decision, escaped = false) {
  const rows = [["action", decision.action]];
  for (const key of ["title", "post_id", "vote_direction", "content", "reasoning"]) {
    if (decision[key]) rows.push([key.replace("_", " "), decision[key]]);
  }
  const shown = (v) => (escaped ? unescaped(v) : String(v));
  const pairs = rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, shown(v))]);
  box.replaceChildren(el("dl", {}, ...pairs));
}

function finishRun(run) {
  if (state.inFlight[run.thread_id] === run.run_id || state.inFlight[run.thread_id] === -1) {
    delete state.inFlight[run.thread_id];
    renderRunButton();
  }
  if (run.thread_id !== state.thread) return;
  const item = feedItem(run.run_id, run);
  item.status.textContent = run.status;
  item.status.className = `badge status-${run.status}`;
  if (run.decision && !item.decision.firstChild) {
    renderDecision(item.decision, run.decision, sanitized(run));
  }
  const text = runSummary(run);
  item.summary.textContent = run.error ? `${text} — ${run.error}` : text;
  addHistoryRow(run, true);
}

const handlers = {
  run_started(data) {
    state.inFlight[data.thread_id] = data.run_id;
    renderRunButton();
    feedItem(data.run_id, data);
  },
  token(data) {
    const tokens = feedItem(data.run_id).tokens;
    // reset: the LLM is asked again, so the text streamed so far for this run is discarded
    if (data.reset) tokens.replaceChildren();
    if (data.text) tokens.append(document.createTextNode(data.text));
  },
  decision(data) {
    renderDecision(feedItem(data.run_id).decision, data.decision);
  },
  run_finished(run) {
    finishRun(run);
    timelineAdd(run);
    if (run.loop === LOOP.HEARTBEAT) loadConfig();
    if (run.status === STATUS.OK && ["post", "comment", "vote"].includes(run.action)) {
      loadPosts(true);
    }
  },
  loop_state(data) {
    if (data.name === LOOP.HEARTBEAT) setScheduler(Boolean(data.running));
  },
  config_changed(data) {
    if (data.thread_id === state.thread) loadConfig();
  },
};

function setLive(text, kind) {
  setText("live-state", `live: ${text}`);
  $("live-state").className = `badge ${kind}`;
}

// One EventSource for the selected thread. The browser reconnects by itself and sends
// Last-Event-ID, so the server replays the runs that finished meanwhile.
function connectLive() {
  if (state.source) state.source.close();
  if (!state.thread) return;
  const params = new URLSearchParams({ thread_id: state.thread });
  if (state.token) params.set("token", state.token);
  const source = new EventSource(`/api/heartbeat/events?${params}`);
  state.source = source;
  setLive("connecting…", "");
  source.onopen = () => setLive("connected", "ok");
  for (const [name, handle] of Object.entries(handlers)) {
    source.addEventListener(name, (ev) => handle(JSON.parse(ev.data)));
  }
  // "error" is both the server's own event (it dropped us for falling behind) and the
  // browser's connection error.
  source.addEventListener("error", (ev) => {
    if (state.source !== source) return;
    if (ev.data) setLive("fell behind, catching up…", "warn");
    else if (source.readyState !== EventSource.CLOSED) setLive("reconnecting…", "warn");
    else {
      setLive("disconnected; retrying", "bad");
      setTimeout(() => retryLive(source), 5000);
    }
  });
}

// The browser gave up (say, a refused token): ask the API, which shows the token form on a
// 401, then open a new stream.
async function retryLive(source) {
  if (state.source !== source) return;
  try {
    await refreshStatus();
  } catch {
    setTimeout(() => retryLive(source), 5000);
    return;
  }
  if (state.source === source) connectLive();
}

// ---- history -----------------------------------------------------------------------------------

function runSummary(run) {
  if (run.summary) return sanitized(run) ? unescaped(run.summary) : run.summary;
  return run.reason || "";
}

function addHistoryRow(run, atTop) {
  if (state.historyIds.has(run.run_id) || run.thread_id !== state.thread) return;
  state.historyIds.add(run.run_id);
  const row = el(
    "tr",
    { "data-run": run.run_id },
    el("td", {}, `#${run.run_id}`),
    el("td", { title: run.finished_at || "" }, when(run.finished_at, STATUS.RUNNING)),
    el("td", { title: run.event_text || "" }, run.trigger),
    el("td", {}, el("span", { class: `badge status-${run.status}` }, run.status)),
    el("td", {}, run.action || "—"),
    el("td", { class: "summary-cell" }, runSummary(run) || run.error || ""),
  );
  if (atTop) $("history").tBodies[0].prepend(row);
  else $("history").tBodies[0].append(row);
  $("history-empty").hidden = true;
}

async function loadHistory(reset) {
  if (reset) {
    state.historyCursor = null;
    state.historyIds.clear();
    $("history").tBodies[0].replaceChildren();
  }
  const tid = state.thread;
  const cursor = state.historyCursor ? `&cursor=${enc(state.historyCursor)}` : "";
  try {
    const page = await api(`/api/threads/${enc(tid)}/heartbeat/history?limit=20${cursor}`);
    if (tid !== state.thread) return;
    for (const run of page.items) addHistoryRow(run, false);
    state.historyCursor = page.next_cursor;
    $("history-more").hidden = !page.next_cursor;
    $("history-empty").hidden = state.historyIds.size > 0;
  } catch (error) {
    report("run-status", error);
  }
}

// ---- the Ledger --------------------------------------------------------------------------------

function postItem(post) {
  const comments = post.comment_count === 1 ? "1 comment" : `${post.comment_count} comments`;
  const age = relative(new Date(post.created_at));
  const agent = post.author === "agent"; // written by a run, so sanitized
  const title = agent ? unescaped(post.title) : post.title;
  const content = agent ? unescaped(post.content) : post.content;
  const snippet = content.length > 280 ? `${content.slice(0, 279)}…` : content;
  const body = el(
    "div",
    { class: "post-body" },
    el("h3", {}, title),
    el("p", { class: "muted" }, `${comments} · by ${post.author} · ${age}`),
    el("p", { class: "snippet" }, snippet),
  );
  const score = el("div", { class: "score", title: "score" }, String(post.score));
  return el("li", { class: "post", "data-post": post.post_id }, score, body);
}

async function loadPosts(reset) {
  if (reset) state.postsCursor = null;
  const cursor = state.postsCursor ? `&cursor=${enc(state.postsCursor)}` : "";
  try {
    const page = await api(`/api/ledger/posts?limit=20${cursor}`);
    const items = page.items.map(postItem);
    if (reset) $("posts").replaceChildren(...items);
    else $("posts").append(...items);
    state.postsCursor = page.next_cursor;
    $("posts-more").hidden = !page.next_cursor;
    setText("posts-empty", "The Ledger is empty.");
    $("posts-empty").hidden = $("posts").children.length > 0;
  } catch (error) {
    $("posts-empty").hidden = false;
    report("posts-empty", error);
  }
}

// ---- start-up ----------------------------------------------------------------------------------

function refreshTimes() {
  for (const id of ["next-run", "last-run"]) {
    if ($(id).dataset.iso) setText(id, when($(id).dataset.iso));
  }
}

function bind() {
  const on = (id, type, fn) => $(id).addEventListener(type, fn);
  on("thread-select", "change", (ev) => selectThread(ev.target.value));
  on("new-thread-form", "submit", createThread);
  on("config-form", "submit", saveConfig);
  on("config-form", "input", () => (state.configDirty = true));
  on("md-form", "submit", saveMd);
  on("run-now", "click", runNow);
  on("sched-toggle", "click", toggleScheduler);
  on("history-more", "click", () => loadHistory(false));
  on("posts-more", "click", () => loadPosts(false));
  on("posts-refresh", "click", () => loadPosts(true));
}

async function boot() {
  bind();
  refreshHealth();
  setInterval(refreshHealth, 30000);
  setInterval(refreshTimes, 15000);
  try {
    await refreshStatus();
    await Promise.all([loadLimits(), loadThreads(), loadMd(), loadPosts(true)]);
  } catch (error) {
    report("run-status", error);
  }
}

document.addEventListener("DOMContentLoaded", boot);
