// The last day of a thread's heartbeats as a timeline: one colored mark per beat on a 24 h axis
// (decided, acted, skipped, failed), read from the history API and kept up to date from the live
// events. Loaded after app.js, whose helpers ($, el, api, enc, state, STATUS, LOOP) it uses.
"use strict";

const DAY_MS = 24 * 3600 * 1000;
const TIMELINE_PAGES = 10; // history pages of 200 read at most (a beat a minute for 33 h)
const SVG_NS = "http://www.w3.org/2000/svg";
const TIMELINE_W = 960;
const TIMELINE_H = 56;
const KINDS = Object.freeze(["acted", "decided", "skipped", "failed"]);

const timeline = { runs: new Map(), thread: null };

// What a beat amounts to: it acted on the Ledger, it decided (nothing to do, or a dry run), it
// was skipped without a decision, or it failed (refused, unusable, interrupted).
function beatKind(run) {
  if (run.status === STATUS.SKIPPED) return "skipped";
  if (run.status === STATUS.OK) {
    return run.action && run.action !== "none" ? "acted" : "decided";
  }
  if (run.status === STATUS.DRY_RUN) return "decided";
  return "failed";
}

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  for (const child of children) node.append(child);
  return node;
}

function drawTimeline() {
  const now = Date.now();
  const start = now - DAY_MS;
  const x = (t) => ((t - start) / DAY_MS) * TIMELINE_W;
  const axis = svg("g", { class: "tl-axis" });
  for (let h = 0; h <= 24; h += 3) {
    const t = start + h * 3600 * 1000;
    const label = h === 24 ? "now" : `-${24 - h}h`;
    axis.append(
      svg("line", { x1: x(t), x2: x(t), y1: 4, y2: TIMELINE_H - 16 }),
      svg(
        "text",
        { x: x(t), y: TIMELINE_H - 3, "text-anchor": h === 0 ? "start" : h === 24 ? "end" : "middle" },
        document.createTextNode(label),
      ),
    );
  }
  const counts = Object.fromEntries(KINDS.map((k) => [k, 0]));
  const marks = svg("g", { class: "tl-marks" });
  const rows = { acted: 10, decided: 20, skipped: 30, failed: 40 };
  for (const run of timeline.runs.values()) {
    const at = Date.parse(run.finished_at || run.started_at);
    if (!(at >= start)) continue;
    const kind = beatKind(run);
    counts[kind] += 1;
    const what = [run.trigger, run.status, run.action || run.reason].filter(Boolean).join(" · ");
    const mark = svg(
      "rect",
      {
        class: `tl-mark tl-${kind}`,
        x: Math.max(0, x(at) - 2),
        y: rows[kind] - 4,
        width: 4,
        height: 8,
        rx: 1,
        "data-run": run.run_id,
        "data-kind": kind,
      },
      svg("title", {}, document.createTextNode(`#${run.run_id} ${when(run.finished_at)}: ${what}`)),
    );
    marks.append(mark);
  }
  $("timeline").replaceChildren(
    svg(
      "svg",
      {
        viewBox: `0 0 ${TIMELINE_W} ${TIMELINE_H}`,
        class: "tl-chart",
        role: "img",
        "aria-label": `Beats of the last 24 hours: ${KINDS.map((k) => `${counts[k]} ${k}`).join(", ")}`,
      },
      axis,
      marks,
    ),
  );
  $("timeline-legend").replaceChildren(
    ...KINDS.map((k) =>
      el("li", { "data-kind": k }, el("span", { class: `tl-key tl-${k}` }), `${k} ${counts[k]}`),
    ),
  );
}

async function loadTimeline() {
  const tid = state.thread;
  timeline.thread = tid;
  timeline.runs.clear();
  const since = Date.now() - DAY_MS;
  let cursor = "";
  try {
    for (let page = 0; page < TIMELINE_PAGES; page += 1) {
      const got = await api(
        `/api/threads/${enc(tid)}/heartbeat/history?loop=${LOOP.HEARTBEAT}&limit=200${cursor}`,
      );
      if (tid !== state.thread) return;
      let older = false;
      for (const run of got.items) {
        if (Date.parse(run.started_at) < since) older = true;
        else if (run.status !== STATUS.RUNNING) timeline.runs.set(run.run_id, run);
      }
      if (older || !got.next_cursor) break;
      cursor = `&cursor=${enc(got.next_cursor)}`;
    }
  } catch (error) {
    report("timeline-state", error);
  }
  drawTimeline();
}

// A run that finished: a mark on the selected thread's timeline.
function timelineAdd(run) {
  if (run.loop !== LOOP.HEARTBEAT || run.thread_id !== timeline.thread) return;
  timeline.runs.set(run.run_id, run);
  drawTimeline();
}
