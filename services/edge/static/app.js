// The docgen demo page: one WebSocket to the edge (docs/protocol.md), one run followed at a
// time, and a resume from the last applied seq whenever the connection drops.

const SUBPROTOCOL = "docgen.v1";
const RECONNECT_BASE_MS = 250;
const RECONNECT_MAX_MS = 8000;
// Standard close codes that mean "try again" besides the protocol's own 4000-4499 range.
// 1006 is also what a browser reports when the handshake itself was refused (bad token,
// edge down): the page cannot tell those apart, so it keeps retrying with backoff.
const TRANSIENT_CLOSE_CODES = new Set([1001, 1006, 1011, 1012, 1013]);
const MAX_NOTICES = 6;
const RESUME_RETRY_MS = 2000;

const EXAMPLE_OUTLINE = {
  document_id: "kitchen-composting-guide",
  title: "Composting in a Small Apartment",
  sections: [
    {
      id: "why",
      title: "Why compost indoors",
      brief: "What share of household waste is organic, what composting saves, and why it works without a garden.",
      target_tokens: 120,
    },
    {
      id: "methods",
      title: "Choosing a method",
      brief: "Compare a worm bin, a bokashi bucket and an electric composter: space, smell, cost, speed.",
      target_tokens: 250,
    },
    {
      id: "routine",
      title: "A weekly routine",
      brief: "What goes in and what stays out, the carbon-to-nitrogen balance, moisture, and a ten-minute weekly check.",
      target_tokens: 200,
    },
    {
      id: "troubleshooting",
      title: "Fixing common problems",
      brief: "Fruit flies, bad smells, a bin that is too wet or too dry, and what to do with finished compost.",
      target_tokens: 160,
    },
  ],
};

const $ = (id) => document.getElementById(id);
const ui = {
  connection: $("connection"),
  editor: $("outline-editor"),
  generate: $("generate"),
  cancel: $("cancel"),
  reconnect: $("reconnect"),
  runStatus: $("run-status"),
  sectionsCount: $("sections-count"),
  sectionsProgress: $("sections-progress"),
  tokensCaption: $("tokens-caption"),
  tokensCount: $("tokens-count"),
  tokensProgress: $("tokens-progress"),
  errors: $("errors"),
  documentTitle: $("document-title"),
  document: $("document"),
  summary: $("summary"),
  summaryMeta: $("summary-meta"),
};

const state = {
  token: null,
  ws: null,
  connected: false,
  reconnectAttempt: 0,
  reconnectTimer: 0,
  reconnects: 0,
  // The run being shown. phase: idle | starting (generate sent, no run_started yet) |
  // running | ended.
  phase: "idle",
  runId: null,
  lastSeq: 0,
  pendingRequestId: null,
  outline: null,
  cancelRequested: false,
  resyncing: false,
  runStatus: "idle",
  sections: new Map(), // section id -> SectionView
  done: 0,
  currentId: null,
};

// --- token ---------------------------------------------------------------------------------

function tokenFromFragment() {
  // The fragment never leaves the browser (not in requests, not in Referer), which is why
  // the token is passed there; it only ever travels in the WebSocket subprotocol.
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get("token");
  return token && token.trim() ? token.trim() : null;
}

function tokenExpiresAt(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(payload));
    return typeof claims.exp === "number" ? claims.exp * 1000 : null;
  } catch {
    return null; // not a JWT we can read: let the edge decide
  }
}

// --- connection ----------------------------------------------------------------------------

function setConnection(kind, text) {
  ui.connection.dataset.state = kind;
  ui.connection.textContent = text;
  ui.reconnect.hidden = kind !== "closed" || !state.token;
  updateControls();
}

function connect() {
  clearTimeout(state.reconnectTimer);
  state.token = tokenFromFragment();
  if (!state.token) {
    setConnection("closed", "No token");
    notify("error", "No token: open this page as /#token=<JWT> (for development, `make token` prints one).");
    ui.reconnect.hidden = true;
    return;
  }
  const expiresAt = tokenExpiresAt(state.token);
  if (expiresAt !== null && expiresAt < Date.now()) {
    setConnection("closed", "Token expired");
    notify("error", "The token has expired: open the page again with a new #token=…");
    ui.reconnect.hidden = true;
    return;
  }
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  let ws;
  try {
    ws = new WebSocket(`${scheme}//${location.host}/v1/ws`, [SUBPROTOCOL, `bearer.${state.token}`]);
  } catch (error) {
    setConnection("closed", "Bad token");
    notify("error", `Cannot connect with this token: ${error.message}`);
    return;
  }
  state.ws = ws;
  setConnection("connecting", state.reconnectAttempt ? `Reconnecting (attempt ${state.reconnectAttempt})…` : "Connecting…");
  ws.addEventListener("open", () => {
    if (ws !== state.ws) return;
    state.connected = true;
    const wasReconnect = state.reconnectAttempt > 0;
    state.reconnectAttempt = 0;
    setConnection("open", "Connected");
    if (wasReconnect) state.reconnects += 1;
    afterReconnect(wasReconnect);
  });
  ws.addEventListener("message", (event) => {
    if (ws !== state.ws) return;
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch {
      notify("error", "The server sent a frame that is not JSON; ignored.");
      return;
    }
    handleFrame(frame);
  });
  ws.addEventListener("close", (event) => {
    if (ws !== state.ws) return;
    state.ws = null;
    state.connected = false;
    onClose(event.code, event.reason);
  });
}

function afterReconnect(wasReconnect) {
  if (state.phase === "running" && state.runId) {
    // Replays every event after the last one applied, then follows live.
    state.resyncing = false;
    send({ type: "resume", run_id: state.runId, after_seq: state.lastSeq });
    if (wasReconnect) notify("info", `Reconnected; resuming the run after event ${state.lastSeq}.`);
  } else if (state.phase === "starting") {
    // The run started (or not) while the socket was down and its id never arrived: the
    // protocol has no way to find it again, so it cannot be followed.
    state.phase = "idle";
    setRunStatus("unknown");
    notify("error", "The connection dropped before the run started, so it cannot be followed. Press Generate again.");
  } else if (wasReconnect) {
    notify("info", "Reconnected.");
  }
  updateControls();
}

function onClose(code, reason) {
  const why = reason ? `${code}: ${reason}` : `${code}`;
  if (code >= 4500 && code <= 4999) {
    const text = code === 4500
      ? "Your token has expired: open the page again with a new #token=…"
      : `The server closed the connection and asked not to reconnect (${why}).`;
    setConnection("closed", "Disconnected");
    ui.reconnect.hidden = true; // same token, same answer: a new #token=… reconnects by itself
    notify("error", text);
    return;
  }
  if ((code >= 4000 && code <= 4499) || TRANSIENT_CLOSE_CODES.has(code)) {
    scheduleReconnect(why);
    return;
  }
  setConnection("closed", "Disconnected");
  notify("error", `The connection closed (${why}).`);
}

function scheduleReconnect(why) {
  state.reconnectAttempt += 1;
  const attempt = state.reconnectAttempt;
  const ceiling = Math.min(RECONNECT_MAX_MS, RECONNECT_BASE_MS * 2 ** (attempt - 1));
  const delay = Math.round(ceiling * (0.5 + Math.random() * 0.5)); // jitter: tabs don't stampede
  setConnection("reconnecting", `Connection lost; retrying in ${(delay / 1000).toFixed(1)} s`);
  if (attempt === 1 || attempt % 4 === 0) {
    const hint = attempt >= 4 ? " If this persists, the edge may be down or the token refused." : "";
    notify("warn", `Connection lost (${why}); reconnecting (attempt ${attempt}).${hint}`);
  }
  state.reconnectTimer = setTimeout(connect, delay);
}

function send(frame) {
  if (!state.ws || state.ws.readyState !== WebSocket.OPEN) return false;
  state.ws.send(JSON.stringify(frame));
  return true;
}

// --- frames --------------------------------------------------------------------------------

function handleFrame(frame) {
  if (typeof frame.seq === "number") {
    applyRunEvent(frame);
  } else if (frame.type === "error") {
    handleRequestError(frame);
  } else if (frame.type !== "pong") {
    console.warn("docgen: ignoring an unknown frame", frame.type);
  }
}

function applyRunEvent(frame) {
  if (state.runId === null) {
    // Our run's first event echoes the request_id of the generate frame that started it.
    const ours = state.phase === "starting" && frame.type === "run_started"
      && frame.request_id === state.pendingRequestId;
    if (!ours) return;
    state.runId = frame.run_id;
  }
  if (frame.run_id !== state.runId) return; // an earlier run still being relayed
  if (frame.seq <= state.lastSeq) return; // already applied (a replay overlapping what we have)
  if (frame.seq !== state.lastSeq + 1) {
    // Never expected (seq grows by exactly 1), but applying it would lose text: re-read the
    // log from our cursor instead, and drop frames until the replay catches up.
    if (!state.resyncing && send({ type: "resume", run_id: state.runId, after_seq: state.lastSeq })) {
      state.resyncing = true;
      console.warn(`docgen: seq gap (${state.lastSeq} -> ${frame.seq}); resuming`);
    }
    return;
  }
  state.resyncing = false;
  state.lastSeq = frame.seq;
  const apply = EVENT_HANDLERS[frame.type];
  if (apply) apply(frame);
}

const EVENT_HANDLERS = {
  run_started(frame) {
    state.phase = "running";
    setRunStatus(state.cancelRequested ? "cancelling" : "running");
    if (state.cancelRequested) send({ type: "cancel", run_id: state.runId });
    const titles = new Map((state.outline?.sections ?? []).map((s) => [s.id, s]));
    frame.sections.forEach((id, index) => {
      const planned = titles.get(id);
      sectionView(id, index, planned?.title ?? id, planned?.target_tokens ?? 0);
    });
    updateProgress();
  },

  section_start(frame) {
    const view = sectionView(frame.section_id, frame.index, frame.title, frame.target_tokens);
    if (frame.attempt > 1) {
      view.text = ""; // the earlier attempt's text is void
      view.textNode.data = "";
      setBadge(view, `retrying (attempt ${frame.attempt})`);
    } else {
      setBadge(view, "writing…");
    }
    view.chunks = 0;
    view.el.dataset.state = "writing";
    state.currentId = frame.section_id;
    view.el.scrollIntoView({ block: "nearest" });
    updateProgress();
  },

  section_chunk(frame) {
    const view = state.sections.get(frame.section_id);
    if (!view) return;
    view.text += frame.delta;
    view.textNode.appendData(frame.delta);
    view.chunks += 1;
    if (frame.section_id === state.currentId) updateTokens(view);
  },

  section_end(frame) {
    const view = state.sections.get(frame.section_id);
    if (!view) return;
    view.tokens = frame.usage?.output_tokens ?? view.chunks;
    view.el.dataset.sha256 = frame.text_sha256;
    view.el.dataset.finishReason = frame.finish_reason;
    view.el.dataset.state = "ended";
    if (frame.finish_reason === "stop" || frame.finish_reason === "length") {
      state.done += 1;
      setBadge(view, `${view.tokens} tokens · ${(frame.duration_ms / 1000).toFixed(1)} s`);
    } else {
      setBadge(view, frame.finish_reason);
    }
    verifySection(view, frame.text_sha256);
    updateProgress();
  },

  summary_update(frame) {
    ui.summary.textContent = frame.summary;
    ui.summary.dataset.version = String(frame.version);
    ui.summary.dataset.method = frame.method;
    const through = state.sections.get(frame.through_section)?.title ?? frame.through_section;
    ui.summaryMeta.textContent = `Version ${frame.version} · ${frame.method} · through “${through}” · ${frame.latency_ms} ms after that section`;
  },

  run_end(frame) {
    state.phase = "ended";
    state.currentId = null;
    setRunStatus(frame.status);
    updateProgress();
    const totals = frame.totals ?? {};
    ui.tokensCaption.textContent = "Whole run";
    ui.tokensCount.textContent = `${totals.output_tokens ?? 0} tokens in ${((totals.duration_ms ?? 0) / 1000).toFixed(1)} s`;
    ui.tokensProgress.max = 1;
    ui.tokensProgress.value = frame.status === "completed" ? 1 : 0;
  },

  error(frame) {
    const where = frame.section_id ? ` in “${state.sections.get(frame.section_id)?.title ?? frame.section_id}”` : "";
    notify("error", `${frame.message}${where} (${frame.code})`);
    const view = frame.section_id && state.sections.get(frame.section_id);
    if (view) view.el.dataset.error = frame.code;
  },
};

function handleRequestError(frame) {
  // Errors about one of our frames; they are not part of a run's log (no seq).
  notify("error", `${frame.message} (${frame.code})`);
  if (state.phase === "starting" && frame.request_id && frame.request_id === state.pendingRequestId) {
    state.phase = "idle"; // the generate frame was refused
    setRunStatus("idle");
    ui.document.setAttribute("aria-busy", "false");
  } else if (state.phase === "running" && frame.run_id === state.runId) {
    if (frame.retryable) {
      // The edge gave up following the run (generator unreachable): ask again shortly.
      const runId = state.runId;
      setTimeout(() => {
        if (state.phase === "running" && state.runId === runId) {
          send({ type: "resume", run_id: runId, after_seq: state.lastSeq });
        }
      }, RESUME_RETRY_MS);
    } else if (frame.code === "run_not_found" || frame.code === "cursor_out_of_range") {
      state.phase = "ended"; // the run can no longer be followed (expired, or not ours)
      setRunStatus("unknown");
    }
  }
  updateControls();
}

// --- document view -------------------------------------------------------------------------

function sectionView(id, index, title, target) {
  let view = state.sections.get(id);
  if (!view) {
    const el = document.createElement("article");
    el.className = "section";
    el.dataset.sectionId = id;
    el.dataset.state = "pending";
    const header = document.createElement("header");
    const heading = document.createElement("h4");
    heading.id = `section-title-${index}`;
    el.setAttribute("aria-labelledby", heading.id);
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.textContent = "waiting";
    header.append(heading, badge);
    const body = document.createElement("p");
    body.className = "section-text";
    const textNode = document.createTextNode("");
    body.append(textNode);
    el.append(header, body);
    ui.document.append(el);
    view = { id, el, heading, badge, textNode, text: "", chunks: 0, tokens: 0, title, target };
    state.sections.set(id, view);
  }
  view.title = title || view.title;
  view.target = target || view.target;
  view.heading.textContent = `${index + 1}. ${view.title}`;
  return view;
}

function setBadge(view, text) {
  view.badge.textContent = text;
}

async function verifySection(view, expected) {
  // crypto.subtle exists only in secure contexts (https, localhost); elsewhere skip quietly.
  if (!globalThis.crypto?.subtle) return;
  const text = view.text;
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  const hex = Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
  view.el.dataset.verified = String(hex === expected);
  if (hex !== expected) {
    notify("error", `The text of “${view.title}” does not match its checksum: part of it was lost.`);
  }
}

function resetDocument(outline) {
  state.sections.clear();
  state.done = 0;
  state.currentId = null;
  state.runId = null;
  state.lastSeq = 0;
  state.resyncing = false;
  state.cancelRequested = false;
  ui.document.replaceChildren();
  ui.documentTitle.textContent = outline.title ?? "";
  ui.summary.textContent = "";
  delete ui.summary.dataset.version;
  ui.summaryMeta.textContent = "No summary yet.";
  ui.tokensCaption.textContent = "Current section";
  ui.tokensCount.textContent = "—";
  ui.tokensProgress.value = 0;
}

function setRunStatus(status) {
  state.runStatus = status;
  ui.runStatus.textContent = status;
  ui.runStatus.dataset.status = status;
  const busy = status === "starting" || status === "running" || status === "cancelling";
  ui.document.setAttribute("aria-busy", String(busy));
  updateControls();
}

function updateProgress() {
  const total = state.sections.size;
  ui.sectionsCount.textContent = `${state.done} / ${total}`;
  ui.sectionsProgress.max = Math.max(total, 1);
  ui.sectionsProgress.value = state.done;
  const current = state.currentId && state.sections.get(state.currentId);
  if (current) updateTokens(current);
}

function updateTokens(view) {
  // One chunk is one streamed token, near enough; section_end brings the exact count.
  const count = view.el.dataset.state === "ended" ? view.tokens : view.chunks;
  ui.tokensCount.textContent = `${view.title}: ${count} / ${view.target} tokens`;
  ui.tokensProgress.max = Math.max(view.target, 1);
  ui.tokensProgress.value = Math.min(count, view.target);
}

function updateControls() {
  const active = state.phase === "starting" || state.phase === "running";
  ui.generate.disabled = !state.connected || active;
  ui.cancel.disabled = !state.connected || !active || state.cancelRequested;
}

function notify(level, message) {
  const item = document.createElement("p");
  item.className = `notice ${level}`;
  const time = document.createElement("time");
  time.textContent = new Date().toLocaleTimeString();
  item.append(time, " ", message);
  ui.errors.append(item);
  while (ui.errors.childElementCount > MAX_NOTICES) ui.errors.firstElementChild.remove();
  if (level === "error") console.error(`docgen: ${message}`);
}

// --- controls ------------------------------------------------------------------------------

function requestId() {
  return globalThis.crypto?.randomUUID?.() ?? `req-${Date.now()}-${Math.random().toString(16).slice(2)}`;
}

function onGenerate() {
  let outline;
  try {
    outline = JSON.parse(ui.editor.value);
  } catch (error) {
    notify("error", `The outline is not valid JSON: ${error.message}`);
    ui.editor.focus();
    return;
  }
  if (!outline || typeof outline !== "object" || !Array.isArray(outline.sections) || outline.sections.length === 0) {
    notify("error", "The outline needs a non-empty \"sections\" list.");
    ui.editor.focus();
    return;
  }
  resetDocument(outline);
  state.outline = outline;
  state.pendingRequestId = requestId();
  state.phase = "starting";
  setRunStatus("starting");
  updateProgress();
  if (!send({ type: "generate", outline, request_id: state.pendingRequestId })) {
    state.phase = "idle";
    setRunStatus("idle");
    notify("error", "Not connected: wait for the connection and try again.");
  }
}

function onCancel() {
  state.cancelRequested = true;
  if (state.runId) send({ type: "cancel", run_id: state.runId }); // otherwise on run_started
  setRunStatus("cancelling");
}

ui.editor.value = JSON.stringify(EXAMPLE_OUTLINE, null, 2);
ui.generate.addEventListener("click", onGenerate);
ui.cancel.addEventListener("click", onCancel);
ui.reconnect.addEventListener("click", () => {
  state.reconnectAttempt = 0;
  connect();
});
window.addEventListener("hashchange", () => {
  // A new token pasted into the address bar: reconnect with it (and resume, if running).
  if (tokenFromFragment() === state.token) return;
  const old = state.ws;
  state.ws = null;
  state.connected = false;
  old?.close(1000, "new token");
  state.reconnectAttempt = 0;
  connect();
});

// Read-only view for tests and the curious.
window.docgen = {
  get lastSeq() { return state.lastSeq; },
  get runId() { return state.runId; },
  get sections() { return Object.fromEntries([...state.sections].map(([id, view]) => [id, view.text])); },
  get runStatus() { return state.runStatus; },
  get connected() { return state.connected; },
  get reconnects() { return state.reconnects; },
};

connect();
