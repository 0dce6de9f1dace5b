// stablenew console: live progress from each job's event stream, and the buttons.
// Everything from a job is put in the page as text (textContent) or as a checked URL, never as markup.
"use strict";

const MAX_STREAMS = 4; // browsers allow ~6 connections per host: keep some for pages and buttons
const streams = new Map();

function jobPath(jobId, rest) {
  return "/v1/jobs/" + encodeURIComponent(jobId) + (rest || "");
}

function setStatus(el, status) {
  el.textContent = status;
  el.className = el.className.replace(/\bstatus-\S+/g, "").trim() + " status-" + status;
}

function updateStage(article, stage) {
  const jobId = article.dataset.job;
  const cell = article.querySelector('[data-stage="' + Number(stage.index) + '"]');
  if (!cell) return;
  cell.dataset.stageStatus = stage.status;
  const label = cell.querySelector(".stage-status");
  if (label) setStatus(label, stage.status);
  const bar = cell.querySelector("progress");
  if (bar) bar.value = stage.status === "finished" ? 1 : stage.progress;
  const thumb = cell.querySelector(".thumb");
  if (thumb && stage.outputs && stage.outputs.length && !thumb.querySelector("img")) {
    const size = article.dataset.detail ? 1024 : 256;
    thumb.textContent = "";
    for (const out of article.dataset.detail ? stage.outputs : stage.outputs.slice(0, 1)) {
      const name = String(out.path).split("/").pop();
      const link = document.createElement("a");
      link.href = jobPath(jobId, "/outputs/" + encodeURIComponent(name));
      const img = document.createElement("img");
      img.src = link.href + "?thumb=" + size;
      img.alt = stage.type + " output";
      link.appendChild(img);
      thumb.appendChild(link);
    }
  }
  const error = cell.querySelector(".stage-error");
  if (error) { error.textContent = stage.error || ""; error.hidden = !stage.error; }
}

function updateJob(article, view) {
  article.dataset.jobStatus = view.status;
  const label = article.querySelector(".job-status");
  if (label) setStatus(label, view.status);
  const error = article.querySelector(".job-error");
  if (error) { error.textContent = view.error || ""; error.hidden = !view.error; }
  const live = ["queued", "started", "deferred", "scheduled"].includes(view.status);
  const canWrite = document.body.dataset.canWrite === "yes";
  const cancel = article.querySelector('[data-action="cancel"]');
  if (cancel) cancel.disabled = !canWrite || !live;
  const retry = article.querySelector('[data-action="retry"]');
  if (retry) retry.disabled = !canWrite || !["failed", "canceled", "stopped"].includes(view.status);
  for (const stage of view.stages || []) updateStage(article, stage);
}

function articles(jobId) {
  return Array.from(document.querySelectorAll("article[data-job]")).filter((a) => a.dataset.job === jobId);
}

function watch(jobId) {
  if (streams.has(jobId) || streams.size >= MAX_STREAMS) return;
  const source = new EventSource(jobPath(jobId, "/events"));
  streams.set(jobId, source);
  const onView = (ev) => { const view = JSON.parse(ev.data); articles(jobId).forEach((a) => updateJob(a, view)); };
  source.addEventListener("state", onView);
  source.addEventListener("job", (ev) => {
    const data = JSON.parse(ev.data);
    articles(jobId).forEach((a) => {
      const label = a.querySelector(".job-status");
      if (label) setStatus(label, data.status);
      a.dataset.jobStatus = data.status;
    });
  });
  source.addEventListener("stage", (ev) => {
    const stage = JSON.parse(ev.data);
    articles(jobId).forEach((a) => updateStage(a, stage));
  });
  const close = () => { source.close(); streams.delete(jobId); refresh(); };
  source.addEventListener("end", (ev) => { onView(ev); close(); });
  source.addEventListener("gone", close);
  source.onerror = () => { if (source.readyState === EventSource.CLOSED) close(); };
}

function watchLiveJobs() {
  // Running jobs first (their progress moves), then the queued ones next in line (the list is newest
  // first, so the oldest queued job is last on the page).
  const all = Array.from(document.querySelectorAll("article[data-job]"));
  const running = all.filter((a) => a.dataset.jobStatus === "started");
  const queued = all.filter((a) => a.dataset.jobStatus === "queued").reverse();
  for (const article of running.concat(queued)) watch(article.dataset.job);
}

let refreshing = false;
async function refresh() {
  const box = document.getElementById("overview");
  if (!box || refreshing) return;
  refreshing = true;
  try {
    const answer = await fetch(box.dataset.refresh, { credentials: "same-origin" });
    if (answer.ok) { box.innerHTML = await answer.text(); watchLiveJobs(); }
  } catch (err) {
    // the server is restarting: try again at the next tick
  } finally {
    refreshing = false;
  }
}

async function act(button) {
  const action = button.dataset.action;
  const url = button.dataset.queue
    ? "/v1/queues/" + encodeURIComponent(button.dataset.queue) + "/" + action
    : jobPath(button.dataset.jobId, "/" + action);
  button.disabled = true;
  let text;
  try {
    const answer = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-StableNew-Console": "1" },
    });
    const body = await answer.json().catch(() => ({}));
    text = answer.ok ? (body.result || action + ": done") : (body.detail || answer.statusText);
  } catch (err) {
    text = "the server did not answer";
  }
  const article = button.closest("article[data-job]");
  const out = article && article.querySelector("[data-result]");
  if (out) out.textContent = text;
  if (button.dataset.jobId) watch(button.dataset.jobId);
  refresh();
  if (document.querySelector("[data-detail]")) setTimeout(() => window.location.reload(), 1500);
}

function parseSettings(text) {
  const changes = {};
  for (const line of text.split("\n")) {
    const at = line.indexOf("=");
    if (at < 1) continue;
    const key = line.slice(0, at).trim();
    const raw = line.slice(at + 1).trim();
    try { changes[key] = JSON.parse(raw); } catch (err) { changes[key] = raw; }
  }
  return changes;
}

document.addEventListener("submit", async (ev) => {
  const form = ev.target.closest("form[data-rerun]");
  if (!form) return;
  ev.preventDefault();
  const out = form.closest("article[data-job]").querySelector("[data-result]");
  const answer = await fetch(jobPath(form.dataset.rerun, "/rerun"), {
    method: "POST",
    credentials: "same-origin",
    headers: { "X-StableNew-Console": "1", "Content-Type": "application/json" },
    body: JSON.stringify({ set: parseSettings(form.elements.set.value) }),
  }).catch(() => null);
  const body = answer ? await answer.json().catch(() => ({})) : {};
  if (answer && answer.ok) {
    window.location.href = "/jobs/" + encodeURIComponent(body.job_id);
  } else if (out) {
    const detail = body.detail;
    out.textContent = Array.isArray(detail) ? detail.map((d) => d.msg || d).join("; ") : (detail || "the server did not answer");
  }
});

document.addEventListener("click", (ev) => {
  const button = ev.target.closest("button[data-action]");
  if (button && !button.disabled) act(button);
});

document.addEventListener("DOMContentLoaded", () => {
  watchLiveJobs();
  if (document.getElementById("overview")) setInterval(refresh, 3000);
});
