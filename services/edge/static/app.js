// The docgen demo page, built on the first-party client (clients/js/docgen.js, served here
// as /static/docgen.js): the client owns the socket, resume, seq, retries, verification and
// refusals; this file only draws. One run shown at a time.

import { DocgenClient, DocgenError, explainError, tokenExpiresAt } from "./docgen.js";
import { EXAMPLES } from "./examples.js";

const MAX_NOTICES = 6;
const TOKEN_KEY = "docgen.token";
const PLAN_OPTION = "__plan__";
const BUILT_IN_OPTION = "__built_in__";

const BUILT_IN_OUTLINE = {
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
  example: $("example"),
  planRow: $("plan-row"),
  planId: $("plan-id"),
  planIds: $("plan-ids"),
  outlineRow: $("outline-row"),
  editor: $("outline-editor"),
  generate: $("generate"),
  cancel: $("cancel"),
  download: $("download"),
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
  client: null,
  run: null, // the Run shown (clients/js/docgen.js)
  views: new Map(), // section id -> {el, heading, badge, textNode}
  runStatus: "idle",
  lastDownload: null, // {source: "export" | "local", text}
};

// --- token ---------------------------------------------------------------------------------

function takeToken() {
  // The token arrives in the fragment (never sent to a server, never in a Referer). It is kept
  // in this tab's sessionStorage and the fragment is removed from the address bar and history,
  // so it is not left in a bookmark, a shared screenshot or the back button.
  const params = new URLSearchParams(location.hash.slice(1));
  const fresh = params.get("token")?.trim();
  if (fresh) {
    sessionStorage.setItem(TOKEN_KEY, fresh);
    params.delete("token");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + location.search + (rest ? `#${rest}` : ""));
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

// --- connection ----------------------------------------------------------------------------

function setConnection(kind, text) {
  ui.connection.dataset.state = kind;
  ui.connection.textContent = text;
  ui.reconnect.hidden = kind !== "closed";
  updateControls();
}

function onStatus(status, detail) {
  switch (status) {
    case "connecting":
      setConnection("connecting", "Connecting…");
      break;
    case "open":
      setConnection("open", "Connected");
      if (detail?.reconnect) {
        const run = activeRun();
        notify("info", run?.runId ? `Reconnected; resuming the run after event ${run.lastSeq}.` : "Reconnected.");
      }
      break;
    case "session":
      setConnection("open", `Connected as ${detail.user}`);
      break;
    case "reconnecting": {
      if (!detail || detail.code === undefined) break;
      const why = detail.reason ? `${detail.code} ${detail.reason}` : `${detail.code}`;
      setConnection("reconnecting", `Connection lost; retrying in ${(detail.delayMs / 1000).toFixed(1)} s`);
      if (detail.attempt === 1 || detail.attempt % 4 === 0) {
        const hint = detail.attempt >= 4 ? " If this persists, the edge may be down." : "";
        notify("warn", `Connection lost (${why}); reconnecting (attempt ${detail.attempt}).${hint}`);
      }
      break;
    }
    case "closed":
      if (detail?.error) {
        setConnection("closed", "Disconnected");
        notify("error", describeError(detail.error));
      } else {
        setConnection("idle", "Idle (reconnects when needed)");
      }
      break;
    default:
      break;
  }
}

function describeError(error, outline) {
  if (!(error instanceof DocgenError)) return `Unexpected error: ${error?.message ?? error}`;
  if (error.code === "token_expired") return "Your token has expired: open the page again with a new #token=… (token_expired)";
  if (["invalid_token", "missing_token", "token_not_yet_valid"].includes(error.code)) {
    return `The edge refused the token: open the page with a valid #token=… (\`make token\` prints one) (${error.code})`;
  }
  if (error.code === "unreachable") return `The edge cannot be reached; press Reconnect to try again (${error.message}).`;
  return explainError(error, outline);
}

function activeRun() {
  return state.run && !state.run.ended && !state.run.error ? state.run : null;
}

function makeClient() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return new DocgenClient({
    url: `${scheme}//${location.host}/v1/ws`,
    // Read each time: a new #token=… pasted into the address bar is used from then on.
    getToken: () => sessionStorage.getItem(TOKEN_KEY),
    onStatus,
  });
}

function start() {
  const token = takeToken();
  if (!token) {
    setConnection("closed", "No token");
    ui.reconnect.hidden = true;
    notify("error", "No token: open this page as /#token=<JWT> (for development, `make token` prints one).");
    return;
  }
  const expiresAt = tokenExpiresAt(token);
  if (expiresAt !== null && expiresAt < Date.now()) {
    setConnection("closed", "Token expired");
    ui.reconnect.hidden = true;
    notify("error", "The token has expired: open the page again with a new #token=…");
    return;
  }
  state.client = makeClient();
  state.client.connect().catch(() => {}); // refusals arrive through onStatus("closed")
}

// --- the run -------------------------------------------------------------------------------

async function follow(run, outline) {
  state.run = run;
  setRunStatus("starting");
  try {
    for await (const event of run) {
      if (run !== state.run) return; // a newer run took the page
      render(event, run);
    }
  } catch (error) {
    if (run !== state.run) return;
    notify("error", describeError(error, outline));
    setRunStatus(run.runId ? "unknown" : "idle");
    if (!run.runId) {
      // Refused before it started: nothing of it to show.
      resetDocument("");
      ui.document.replaceChildren(emptyNote());
    }
  }
  finishViews(run);
  updateControls();
}

function render(event, run) {
  switch (event.type) {
    case "run_started": {
      clearNotices(); // the request was accepted: earlier errors no longer apply
      setRunStatus(run.cancelRequested ? "cancelling" : "running");
      ui.documentTitle.textContent = run.state.title ?? run.state.documentId ?? "";
      run.state.sections.forEach((section) => sectionView(section));
      break;
    }
    case "section_start": {
      const section = stateOf(run, event.section_id);
      const view = sectionView(section);
      view.textNode.data = ""; // a retry voids the earlier attempt's text
      view.el.dataset.state = "writing";
      setBadge(view, event.attempt > 1 ? `retrying (attempt ${event.attempt})` : "writing…");
      view.el.scrollIntoView({ block: "nearest" });
      updateTokens(section);
      break;
    }
    case "section_chunk": {
      const section = stateOf(run, event.section_id);
      state.views.get(event.section_id)?.textNode.appendData(event.delta);
      updateTokens(section);
      break;
    }
    case "section_end": {
      const section = stateOf(run, event.section_id);
      const view = sectionView(section);
      view.el.dataset.state = "ended";
      view.el.dataset.finishReason = event.finish_reason;
      view.el.dataset.sha256 = event.text_sha256;
      if (event.verified !== null) view.el.dataset.verified = String(event.verified);
      const seconds = (event.duration_ms / 1000).toFixed(1);
      const tokens = section.outputTokens;
      if (event.finish_reason === "length") setBadge(view, `cut at length · ${tokens} tokens · ${seconds} s`, "warn");
      else if (event.finish_reason === "cancelled") setBadge(view, `cancelled · ${tokens} tokens kept`, "bad");
      else if (event.finish_reason === "error") setBadge(view, "failed", "bad");
      else setBadge(view, `${tokens} tokens · ${seconds} s`);
      if (event.verified === false) notify("error", `The text of “${section.title}” does not match its checksum: part of it was lost.`);
      updateTokens(section);
      break;
    }
    case "summary_update": {
      if (String(event.version) !== String(run.state.summaryVersion)) break; // an older one
      ui.summary.textContent = event.summary;
      ui.summary.dataset.version = String(event.version);
      ui.summary.dataset.method = event.method;
      const through = stateOf(run, event.through_section)?.title ?? event.through_section;
      ui.summaryMeta.textContent = `Version ${event.version} · ${event.method} · through “${through}” · ${event.latency_ms} ms after that section`;
      break;
    }
    case "error": {
      const title = event.section_id ? stateOf(run, event.section_id)?.title ?? event.section_id : null;
      notify(event.code === "summary_unavailable" ? "warn" : "error", `${event.message}${title ? ` in “${title}”` : ""} (${event.code})`);
      const view = event.section_id && state.views.get(event.section_id);
      if (view) view.el.dataset.error = event.code;
      break;
    }
    case "run_end":
      setRunStatus(event.status);
      break;
    default:
      break;
  }
  updateProgress(run);
}

function stateOf(run, sectionId) {
  return run.state.sections.find((s) => s.id === sectionId);
}

/** After the run: sections never started are "not written", and the totals count every token
 * written, the cancelled or failed section's too (run_end's totals count completed ones only). */
function finishViews(run) {
  if (!run.ended) return;
  for (const section of run.state.sections) {
    if (section.state !== "pending") continue;
    const view = sectionView(section);
    view.el.dataset.state = "not-written";
    setBadge(view, "not written");
  }
  const written = run.state.sections.reduce((sum, s) => sum + (s.outputTokens ?? 0), 0);
  const completed = run.state.totals?.output_tokens ?? 0;
  const seconds = ((run.state.totals?.duration_ms ?? 0) / 1000).toFixed(1);
  const partial = written - completed;
  ui.tokensCaption.textContent = "Whole run";
  ui.tokensCount.textContent = partial > 0
    ? `${written} tokens written (${partial} of them in the ${run.state.status} section) in ${seconds} s`
    : `${written} tokens written in ${seconds} s`;
  ui.tokensCount.dataset.written = String(written);
  ui.tokensProgress.max = 1;
  ui.tokensProgress.value = run.state.status === "completed" ? 1 : 0;
}

function sectionView(section) {
  let view = state.views.get(section.id);
  if (!view) {
    const el = document.createElement("article");
    el.className = "section";
    el.dataset.sectionId = section.id;
    el.dataset.state = "pending";
    const header = document.createElement("header");
    const heading = document.createElement("h4");
    heading.id = `section-title-${section.index}`;
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
    view = { el, heading, badge, textNode };
    state.views.set(section.id, view);
  }
  view.heading.textContent = `${section.index + 1}. ${section.title}`;
  return view;
}

function emptyNote() {
  const note = document.createElement("p");
  note.className = "empty";
  note.textContent = "Nothing written yet: fix the outline and press Generate.";
  return note;
}

function setBadge(view, text, level = "") {
  view.badge.textContent = text;
  view.badge.className = `badge ${level}`.trim();
}

function resetDocument(title) {
  state.views.clear();
  state.lastDownload = null;
  ui.document.replaceChildren();
  ui.documentTitle.textContent = title ?? "";
  ui.summary.textContent = "";
  delete ui.summary.dataset.version;
  ui.summaryMeta.textContent = "No summary yet.";
  ui.tokensCaption.textContent = "Current section";
  ui.tokensCount.textContent = "—";
  delete ui.tokensCount.dataset.written;
  ui.tokensProgress.value = 0;
  ui.sectionsCount.textContent = "0 / 0";
  ui.sectionsProgress.value = 0;
}

function setRunStatus(status) {
  state.runStatus = status;
  ui.runStatus.textContent = status;
  ui.runStatus.dataset.status = status;
  const busy = ["starting", "running", "cancelling"].includes(status);
  ui.document.setAttribute("aria-busy", String(busy));
  updateControls();
}

function updateProgress(run) {
  const total = run.state.sections.length;
  const done = run.state.sections.filter((s) => ["stop", "length", "content_filter"].includes(s.finishReason)).length;
  ui.sectionsCount.textContent = `${done} / ${total}`;
  ui.sectionsProgress.max = Math.max(total, 1);
  ui.sectionsProgress.value = done;
}

function updateTokens(section) {
  // One chunk is one streamed token, near enough; section_end brings the exact count.
  const count = section.state === "ended" ? section.outputTokens : section.chunks;
  ui.tokensCount.textContent = `${section.title}: ${count} / ${section.targetTokens} tokens`;
  ui.tokensProgress.max = Math.max(section.targetTokens, 1);
  ui.tokensProgress.value = Math.min(count, section.targetTokens);
}

function updateControls() {
  const connectionUsable = state.client !== null && ui.connection.dataset.state !== "closed";
  const running = activeRun() !== null;
  ui.generate.disabled = !connectionUsable || running;
  ui.cancel.disabled = !running || state.run?.cancelRequested === true;
  ui.download.disabled = !(state.run?.ended && state.run.state.sections.some((s) => s.text));
}

function notify(level, message) {
  const item = document.createElement("p");
  item.className = `notice ${level}`;
  const time = document.createElement("time");
  time.textContent = new Date().toLocaleTimeString();
  item.append(time, " ", message);
  ui.errors.prepend(item); // newest on top, right under the buttons
  while (ui.errors.childElementCount > MAX_NOTICES) ui.errors.lastElementChild.remove();
  if (level === "error") console.error(`docgen: ${message}`);
}

function clearNotices() {
  ui.errors.replaceChildren();
}

// --- controls ------------------------------------------------------------------------------

function fillExamples() {
  const options = [new Option("Composting in a small apartment (built in)", BUILT_IN_OPTION)];
  for (const example of EXAMPLES) options.push(new Option(`${example.outline.title} (${example.file})`, example.file));
  options.push(new Option("By plan id… (the planner supplies the outline)", PLAN_OPTION));
  ui.example.replaceChildren(...options);
  ui.planIds.replaceChildren(...EXAMPLES.map((e) => new Option(e.outline.title, e.outline.document_id)));
  ui.editor.value = JSON.stringify(BUILT_IN_OUTLINE, null, 2);
}

function onExample() {
  const choice = ui.example.value;
  const byPlan = choice === PLAN_OPTION;
  ui.planRow.hidden = !byPlan;
  ui.outlineRow.hidden = byPlan;
  if (byPlan) {
    ui.planId.focus();
    return;
  }
  const outline = choice === BUILT_IN_OPTION ? BUILT_IN_OUTLINE : EXAMPLES.find((e) => e.file === choice)?.outline;
  if (outline) ui.editor.value = JSON.stringify(outline, null, 2);
}

function onGenerate() {
  let request;
  let outline = null;
  if (ui.example.value === PLAN_OPTION) {
    const documentId = ui.planId.value.trim();
    if (!documentId) {
      notify("error", "Type the plan's document id, e.g. course-sourdough-101.");
      ui.planId.focus();
      return;
    }
    request = { plan: { document_id: documentId } };
  } else {
    try {
      outline = JSON.parse(ui.editor.value);
    } catch (error) {
      notify("error", `The outline is not valid JSON: ${error.message}. Check the commas and quotes near there.`);
      ui.editor.focus();
      return;
    }
    if (!outline || typeof outline !== "object" || Array.isArray(outline)) {
      notify("error", "The outline must be a JSON object: { \"document_id\": …, \"title\": …, \"sections\": [ … ] }.");
      ui.editor.focus();
      return;
    }
    request = outline;
  }
  resetDocument(outline?.title);
  const run = state.client.generate(request);
  follow(run, outline);
  updateControls();
}

function onCancel() {
  const run = activeRun();
  if (!run) return;
  run.cancel().catch((error) => notify("error", describeError(error)));
  setRunStatus("cancelling");
}

async function onDownload() {
  const run = state.run;
  if (!run?.ended) return;
  // The edge's export (GET /v1/runs/{id}/document) when it answers; else the same Markdown
  // assembled here from the verified sections.
  let text = null;
  let source = "local";
  try {
    const response = await fetch(`/v1/runs/${encodeURIComponent(run.runId)}/document`, {
      headers: { Authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY)}`, Accept: "text/markdown" },
    });
    if (response.ok) {
      text = await response.text();
      source = "export";
    }
  } catch {
    // offline or an older edge: assemble it here
  }
  if (text === null) text = run.toMarkdown();
  state.lastDownload = { source, text };
  const url = URL.createObjectURL(new Blob([text], { type: "text/markdown;charset=utf-8" }));
  const link = document.createElement("a");
  link.href = url;
  link.download = `${run.state.documentId ?? "document"}.md`;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

fillExamples();
ui.example.addEventListener("change", onExample);
ui.generate.addEventListener("click", onGenerate);
ui.cancel.addEventListener("click", onCancel);
ui.download.addEventListener("click", onDownload);
ui.reconnect.addEventListener("click", () => {
  clearNotices();
  state.client?.close();
  start();
});
window.addEventListener("hashchange", () => {
  // A new #token=… pasted into the address bar: keep it, and hand it to the open socket.
  const before = sessionStorage.getItem(TOKEN_KEY);
  const token = takeToken();
  if (!token || token === before) return;
  if (!state.client || ui.connection.dataset.state === "closed") {
    clearNotices();
    start();
  } else {
    state.client.refresh(token).catch(() => {}); // if refused, the next reconnect uses it
  }
});

// Read-only view for tests and the curious.
window.docgen = {
  get lastSeq() { return state.run?.lastSeq ?? 0; },
  get runId() { return state.run?.runId ?? null; },
  get sections() { return Object.fromEntries((state.run?.state.sections ?? []).map((s) => [s.id, s.text])); },
  get runStatus() { return state.runStatus; },
  get connected() { return ["open"].includes(ui.connection.dataset.state); },
  get reconnects() { return state.client?.reconnects ?? 0; },
  get lastDownload() { return state.lastDownload; },
};

start();
