// ttt-studio monitor page: plain JavaScript, no build step.
// Talks only to the monitor (same origin): JSON endpoints plus one server-sent-events stream (/api/stream).
// Text from jobs (storyboards, messages) is user input: it is always set with textContent, never as HTML.
"use strict";

const state = {
  jobs: [],            // the last "jobs" event (ListJobs as JSON), newest first
  previews: new Map(), // job_id -> Map(take -> latest preview event)
  progress: new Map(), // job_id -> latest progress event
  selected: null,      // job_id shown in the takes panel
  takesKey: "",        // what the takes panel shows now (re-rendered only when it changes)
  source: null,        // the EventSource
  playing: true,
  players: [],         // {canvas, image, layout} of the takes panel
};
// Measurements for tests and the benchmark: when each job's first preview reached the page (epoch ms).
window.monitorStats = { firstPreview: {}, previews: 0 };

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

async function api(method, path, body) {
  const options = { method, headers: {}, credentials: "same-origin" };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  const data = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (response.status === 401 && path !== "/api/signin") showSignIn(data.error);
  if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
  return data;
}

// ---------------------------------------------------------------- sign-in

function showSignIn(message) {
  if (state.source) state.source.close();
  state.source = null;
  state.jobs = [];
  state.previews.clear();
  state.progress.clear();
  state.selected = null;
  state.takesKey = "";
  stopPlayers();
  queueRows.clear();
  liveCards.clear();
  for (const id of ["queue", "live", "takes"]) $(id).replaceChildren();
  $("app").hidden = true;
  $("signout").hidden = true;
  $("who").textContent = "";
  $("link").textContent = "";
  $("signin").hidden = false;
  $("signin-error").textContent = message || "";
}

function showApp(me) {
  $("signin").hidden = true;
  $("app").hidden = false;
  $("signout").hidden = false;
  $("who").textContent = `${me.caller} @ ${me.server}`;
  connect();
}

async function signIn(event) {
  event.preventDefault();
  $("signin-error").textContent = "";
  try {
    const me = await api("POST", "/api/signin", { token: $("token").value });
    $("token").value = "";
    showApp(me);
  } catch (error) {
    $("signin-error").textContent = error.message;
  }
}

async function signOut() {
  await api("POST", "/api/signout").catch(() => {});
  showSignIn("Signed out.");
}

// ---------------------------------------------------------------- the stream

function connect() {
  if (state.source) state.source.close();
  const source = new EventSource("/api/stream");
  state.source = source;
  source.addEventListener("jobs", (e) => onJobs(JSON.parse(e.data)));
  source.addEventListener("event", (e) => onJobEvent(JSON.parse(e.data)));
  source.addEventListener("server", (e) => {
    const data = JSON.parse(e.data);
    $("link").textContent = data.ok ? "" : `server unreachable: ${data.error}`;
    $("link").classList.toggle("down", !data.ok);
  });
  source.addEventListener("signed-out", (e) => showSignIn(JSON.parse(e.data).error));
  source.onerror = () => {
    // the browser reconnects by itself; a 401 means the session is gone
    if (source.readyState === EventSource.CLOSED) api("GET", "/api/me").then(connect, () => {});
  };
}

function onJobs(jobs) {
  state.jobs = jobs;
  if (!state.selected || !jobs.some((j) => j.job_id === state.selected)) {
    state.selected = jobs.length ? jobs[0].job_id : null;
  }
  renderQueue();
  renderLive();
  renderTakes();
}

function onJobEvent(event) {
  if (event.kind === "preview") {
    if (!(event.job_id in window.monitorStats.firstPreview)) {
      window.monitorStats.firstPreview[event.job_id] = performance.timeOrigin + performance.now();
    }
    window.monitorStats.previews += 1;
    if (!state.previews.has(event.job_id)) state.previews.set(event.job_id, new Map());
    state.previews.get(event.job_id).set(event.take, event);
    renderLive();
  } else if (event.kind === "progress") {
    state.progress.set(event.job_id, event);
    renderQueue();
  }
}

// ---------------------------------------------------------------- queue

function progressOf(job) {
  const p = state.progress.get(job.job_id);
  if (job.state === "sampling" && p) {
    const what = p.draft ? "draft" : "step";
    return { value: p.step, max: p.total, text: `take ${p.take + 1} · ${what} ${p.step}/${p.total}` };
  }
  if (job.total_frames && (job.state === "decoding" || job.state === "completed")) {
    return { value: job.frames_ready, max: job.total_frames, text: `${job.frames_ready}/${job.total_frames} frames` };
  }
  return null;
}

// Rows are updated in place (a progress event comes every step): a button under a finger stays the same
// element, so a tap is never lost to a re-render.
const queueRows = new Map(); // job_id -> {row, title, badge, meta, progress, cancel}

function queueRow(jobId) {
  if (queueRows.has(jobId)) return queueRows.get(jobId);
  const parts = {
    title: el("div", { class: "title" }),
    badge: el("span", { "data-testid": "state" }),
    meta: el("span"),
    progress: el("progress"),
    cancel: el("button", { class: "cancel", type: "button", text: "Cancel", "data-testid": "cancel" }),
  };
  parts.row = el("li", { "data-job": jobId }, parts.title, el("div", { class: "meta" }, parts.badge, parts.meta),
    parts.progress, el("div", { class: "actions" }, parts.cancel));
  parts.cancel.addEventListener("click", (e) => {
    e.stopPropagation();
    cancelJob(jobId);
  });
  parts.row.addEventListener("click", () => {
    state.selected = jobId;
    renderQueue();
    renderTakes();
  });
  queueRows.set(jobId, parts);
  return parts;
}

function renderQueue() {
  $("queue-empty").hidden = state.jobs.length > 0;
  const listed = new Set(state.jobs.map((job) => job.job_id));
  for (const [jobId, parts] of queueRows) {
    if (!listed.has(jobId)) {
      parts.row.remove();
      queueRows.delete(jobId);
    }
  }
  state.jobs.forEach((job, position) => {
    const parts = queueRow(job.job_id);
    const meta = [`${job.segments} seg`, `${job.takes.length} take${job.takes.length > 1 ? "s" : ""}`, job.priority];
    if (job.queue_position) meta.unshift(`#${job.queue_position} in queue`);
    if (job.message) meta.push(job.message);
    parts.row.className = `job${job.job_id === state.selected ? " selected" : ""}`;
    parts.row.dataset.state = job.state;
    parts.title.textContent = job.shot || job.text || job.job_id;
    parts.badge.className = `state ${job.state}`;
    parts.badge.textContent = job.state;
    parts.meta.textContent = ` ${meta.join(" · ")}`;
    const progress = progressOf(job);
    parts.progress.hidden = !progress;
    if (progress) {
      parts.progress.max = progress.max;
      parts.progress.value = progress.value;
      parts.progress.title = progress.text;
    }
    parts.cancel.hidden = job.terminal;
    parts.cancel.disabled = job.cancel_requested;
    const here = $("queue").children[position];
    if (here !== parts.row) $("queue").insertBefore(parts.row, here || null);
  });
}

async function cancelJob(jobId) {
  try {
    await api("POST", `/api/jobs/${encodeURIComponent(jobId)}/cancel`);
  } catch (error) {
    $("takes-error").textContent = error.message;
  }
}

// ---------------------------------------------------------------- live previews

const liveCards = new Map(); // "job_id/take" -> {card, image, caption}

function renderLive() {
  const shown = new Set();
  for (const job of state.jobs) {
    const takes = state.previews.get(job.job_id);
    if (job.terminal || !takes) continue;
    for (const [take, p] of [...takes.entries()].sort((a, b) => a[0] - b[0])) {
      const key = `${job.job_id}/${take}`;
      shown.add(key);
      if (!liveCards.has(key)) {
        const image = el("img", { "data-testid": "preview" });
        const caption = el("figcaption", { class: "caption" });
        const card = el("figure", { class: "preview", "data-job": job.job_id, "data-take": String(take) }, image, caption);
        liveCards.set(key, { card, image, caption });
      }
      const { card, image, caption } = liveCards.get(key);
      const text = `${job.shot || job.job_id} · take ${take + 1} · ${p.draft ? "draft " : ""}step ${p.step}`;
      if (image.src !== p.image) image.src = p.image;
      image.alt = text;
      caption.textContent = text;
      $("live").append(card); // in queue order
    }
  }
  for (const [key, { card }] of liveCards) {
    if (!shown.has(key)) {
      card.remove();
      liveCards.delete(key);
    }
  }
  $("live-empty").hidden = shown.size > 0;
}

// ---------------------------------------------------------------- takes side by side

function stopPlayers() {
  state.players = [];
}

function playable(take) {
  if (take.state === "completed") return { draft: false };
  if (take.draft_complete) return { draft: true };
  return null;
}

function renderTakes() {
  const job = state.jobs.find((j) => j.job_id === state.selected);
  const key = job ? JSON.stringify([job.job_id, job.takes, job.approved_take, job.state]) : "";
  if (key === state.takesKey) return;
  state.takesKey = key;
  stopPlayers();
  $("takes-error").textContent = "";
  $("takes-title").textContent = job ? `· ${job.shot || job.job_id} · ${job.rate} fps` : "";
  if (!job) {
    $("takes").replaceChildren();
    return;
  }
  const cards = job.takes.map((take) => {
    const play = playable(take);
    const approve = el("button", { class: "approve", type: "button", text: "Approve", "data-testid": "approve" });
    approve.disabled = !play || take.approved;
    approve.addEventListener("click", () => approveTake(job.job_id, take.index));
    const status = take.approved
      ? el("span", { class: "badge", text: `approved by ${take.approved_by}`, "data-testid": "approved" })
      : el("span", { class: `state ${take.state}`, text: take.state });
    const card = el("div", { class: `take${take.approved ? " approved" : ""}`, "data-take": String(take.index) });
    const caption = el("div", { class: "caption" }, el("span", { text: `Take ${take.index + 1} · seed ${take.seed}` }), status, approve);
    if (play) {
      const canvas = el("canvas", { "data-testid": "player", "data-frame": "-1" });
      card.append(canvas, caption);
      loadPlayer(job, take.index, play.draft, canvas);
    } else {
      card.append(el("p", { class: "empty", text: `${take.frames_ready}/${take.total_frames} frames` }), caption);
    }
    return card;
  });
  $("takes").replaceChildren(...cards);
}

async function loadPlayer(job, take, draft, canvas) {
  try {
    const layout = await api("GET", `/api/jobs/${encodeURIComponent(job.job_id)}/takes/${take}/playback?draft=${draft ? 1 : 0}`);
    const image = new Image();
    image.src = layout.sheet;
    await image.decode();
    canvas.width = layout.frame_width;
    canvas.height = layout.frame_height;
    canvas.dataset.fps = String(layout.fps);
    canvas.dataset.frames = String(layout.frames);
    canvas.dataset.draft = draft ? "1" : "0";
    state.players.push({ canvas, image, layout });
  } catch (error) {
    $("takes-error").textContent = `take ${take + 1}: ${error.message}`;
  }
}

// Every take plays in step: frame = elapsed time x the shot's rate, so takes compare frame for frame.
const clock = { start: performance.now(), pausedAt: null };

function tick(now) {
  const elapsed = (clock.pausedAt ?? now) - clock.start;
  for (const { canvas, image, layout } of state.players) {
    if (!canvas.isConnected) continue;
    const frame = Math.floor((elapsed / 1000) * layout.fps) % layout.frames;
    if (String(frame) === canvas.dataset.frame) continue;
    const column = frame % layout.columns;
    const row = Math.floor(frame / layout.columns);
    const w = layout.frame_width;
    const h = layout.frame_height;
    canvas.getContext("2d").drawImage(image, column * w, row * h, w, h, 0, 0, w, h);
    canvas.dataset.frame = String(frame);
  }
  requestAnimationFrame(tick);
}

function togglePlay() {
  const now = performance.now();
  if (clock.pausedAt === null) {
    clock.pausedAt = now;
    $("play").textContent = "Play";
  } else {
    clock.start += now - clock.pausedAt;
    clock.pausedAt = null;
    $("play").textContent = "Pause";
  }
}

async function approveTake(jobId, take) {
  $("takes-error").textContent = "";
  try {
    const job = await api("POST", `/api/jobs/${encodeURIComponent(jobId)}/takes/${take}/approve`);
    state.jobs = state.jobs.map((j) => (j.job_id === job.job_id ? job : j));
    renderTakes();
  } catch (error) {
    $("takes-error").textContent = error.message;
  }
}

// ---------------------------------------------------------------- start

document.addEventListener("DOMContentLoaded", () => {
  $("signin-form").addEventListener("submit", signIn);
  $("signout").addEventListener("click", signOut);
  $("play").addEventListener("click", togglePlay);
  requestAnimationFrame(tick);
  api("GET", "/api/me").then(showApp, () => showSignIn(""));
});
