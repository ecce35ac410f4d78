// docgen's JavaScript client: one WebSocket to the edge (docs/protocol.md), any number of runs
// on it, each an async iterator of its events that survives reconnects. Plain ES module, no
// build step, no dependency: browsers use their WebSocket; Node passes one in (the `ws`
// package), as it has none of its own before Node 22.
//
// What it does for you (docs/protocol.md, "Client checklist"): the token in the `bearer.`
// subprotocol; the optional `session` frame; `seq` bookkeeping per run (duplicates dropped,
// a gap re-read); reconnect with jittered backoff by close-code range and `resume` from the
// last applied seq; the same `generate` sent again (same `request_id`) when the socket dropped
// before `run_started`; every section checked against `text_sha256`; application pings; the
// token refreshed in-band before it expires (through your callback); refusals surfaced as
// `DocgenError` with the stable code.

export const SUBPROTOCOL = "docgen.v1";
export const VERSION = "0.1.0";

const DEFAULTS = {
  pingIntervalMs: 20000,
  pongTimeoutMs: 10000,
  reconnectBaseMs: 250,
  reconnectMaxMs: 8000,
  maxReconnectAttempts: 12, // with the 8 s ceiling: about a minute of trying
  refreshBeforeMs: 60000,
};

// Closes that mean "reconnect and resume" besides the protocol's 4000-4499 range. 1006 is
// also what a browser reports when the handshake itself was refused by HTTP (a non-browser
// client without Origin): the attempt limit bounds those.
const TRANSIENT_CLOSES = new Set([1001, 1005, 1006, 1011, 1012, 1013]);
const TOKEN_REFUSALS = new Set(["token_expired", "invalid_token", "missing_token", "token_not_yet_valid"]);
const TOKEN_EXPIRED_CLOSE = 4500;
// Our own close when a ping goes unanswered: in the reconnect range, like a dead link.
const DEAD_LINK_CLOSE = 4000;

/** A refusal or failure with the protocol's stable code (`docs/protocol.md`, "Error codes"). */
export class DocgenError extends Error {
  constructor(code, message, { retryable = false, requestId, runId, closeCode, frame } = {}) {
    super(message);
    this.name = "DocgenError";
    this.code = code;
    this.retryable = retryable;
    this.requestId = requestId;
    this.runId = runId;
    this.closeCode = closeCode;
    this.frame = frame;
  }
}

/** Hex SHA-256 of the text's UTF-8 bytes, with Web Crypto (browsers in a secure context, Node
 * >= 19). Resolves to null where Web Crypto is missing (a page served over plain http from a
 * non-local host): the section then stays unverified rather than failing. */
export async function sha256Hex(text) {
  const subtle = globalThis.crypto?.subtle;
  if (!subtle) return null;
  const digest = await subtle.digest("SHA-256", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The token's `exp` in Unix ms, read without checking the signature (the server checks). */
export function tokenExpiresAt(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const json = typeof atob === "function" ? atob(payload) : Buffer.from(payload, "base64").toString();
    const claims = JSON.parse(json);
    return typeof claims.exp === "number" ? claims.exp * 1000 : null;
  } catch {
    return null;
  }
}

function newRequestId(prefix) {
  const random = globalThis.crypto?.randomUUID?.() ?? `${Date.now()}-${Math.random().toString(16).slice(2)}`;
  return `${prefix}-${random}`;
}

/** `# title`, then `## heading` and the text of every section that was written (stop, length,
 * content_filter): the same bytes as the edge's `GET /v1/runs/{id}/document` and the CLI's
 * `--output` file. */
export function toMarkdown(document) {
  const written = document.sections.filter((s) => ["stop", "length", "content_filter"].includes(s.finishReason));
  return `# ${document.title}\n` + written.map((s) => `\n## ${s.title}\n\n${s.text}\n`).join("");
}

// --- friendly messages for outline errors (same rules as clients/explain.py) ---------------

const FIELD_RULES = {
  document_id: 'a name you choose for the document, 1–128 characters, e.g. "my-guide"',
  title: "1–300 characters, not only spaces",
  sections: "a list of 1–64 sections, each with id, title and target_tokens",
  id: "unique in the outline, up to 64 letters, digits and _ . : -",
  brief: "optional: what the section should cover, up to 4000 characters",
  target_tokens: "the section's length in tokens, a whole number from 1 to 4096 (one token is about 0.75 English words)",
  language: "optional: a language tag such as en, es or pt-BR",
};
const TYPE_WORDS = { string: "text in quotes", integer: "a whole number", object: "an object { … }", array: "a list [ … ]" };

function placeOf(path, outline) {
  const match = /sections\[(\d+)\](?:\.(\w+))?/.exec(path);
  if (match) {
    const index = Number(match[1]);
    let place = `section ${index + 1}`;
    const title = outline?.sections?.[index]?.title;
    if (typeof title === "string" && title.trim()) place += ` "${title.trim()}"`;
    return [place, match[2] ?? null];
  }
  if (path === "$" || path === "$.outline" || !path.startsWith("$.outline.")) return ["the outline", null];
  return ["the outline", path.split(".").pop()];
}

function problemInWords(problem, field) {
  let m;
  if ((m = /^'([^']+)' is a required property$/.exec(problem))) return [`has no "${m[1]}"; add it`, m[1]];
  if ((m = /^Additional properties are not allowed \((.+) (?:was|were) unexpected/.exec(problem))) {
    return [`has a field docgen does not know (${m[1]}); remove it or check its spelling`, null];
  }
  if ((m = /^(-?[\d.]+) is less than the minimum of (-?[\d.]+)$/.exec(problem))) {
    return [`"${field}" is ${m[1]}, below the minimum of ${m[2]}`, field];
  }
  if ((m = /^(-?[\d.]+) is greater than the maximum of (-?[\d.]+)$/.exec(problem))) {
    return [`"${field}" is ${m[1]}, above the maximum of ${m[2]}`, field];
  }
  if ((m = /^([\s\S]*) is not of type '(\w+)'$/.exec(problem))) {
    return [`"${field}" is ${m[1]}, but it must be ${TYPE_WORDS[m[2]] ?? m[2]}`, field];
  }
  if (/(should be non-empty|is too short)$/.test(problem)) return [`"${field}" is empty`, field];
  if (/is too long$/.test(problem) || problem.startsWith("fails maxLength")) return [`"${field}" is too long`, field];
  if (problem.includes("does not match")) return [`"${field}" has characters that are not allowed`, field];
  return [problem, field];
}

/** A sentence a person can act on for an error answer: what is wrong, where (section number
 * and title), the rule for that field, and the stable code at the end. */
export function explainError(error, outline) {
  const code = error.code;
  const message = error.message ?? "";
  const server = /^(\$[^:\s]*): ([\s\S]*)$/.exec(message);
  if (code === "invalid_frame" && server) {
    const [place, pathField] = placeOf(server[1], outline);
    const [words, field] = problemInWords(server[2], pathField);
    const rule = FIELD_RULES[field] ? ` "${field}": ${FIELD_RULES[field]}.` : "";
    return `${place}${words.startsWith("has ") ? " " : ": "}${words}.${rule} (${code} at ${server[1]})`;
  }
  if (code === "invalid_outline") {
    const parts = message.split("; ").map((item) => {
      if (!/^sections\[\d+\]/.test(item)) return item;
      const [place] = placeOf(item, outline);
      const text = item.replace(/^sections\[\d+\]\.?/, "").replace(/^(id|title|brief|target_tokens)\b/, '"$1"');
      return `${place}: ${text}`;
    });
    return `the outline needs fixing: ${parts.join("; ")} (${code})`;
  }
  return `${message} (${code})`;
}

// --- a run ---------------------------------------------------------------------------------

/** One run: an async iterator of its events, each yielded once and in `seq` order, whatever
 * the reconnects; `state` is the document assembled so far. `section_end` events carry one
 * field of the client's own: `verified` (true, false, or null where Web Crypto is missing). */
export class Run {
  constructor(client, { requestId, opening, runId = null, afterSeq = 0, outline = null }) {
    this._client = client;
    this._opening = opening; // the generate frame, sent again as is until run_started
    this._queue = [];
    this._waiters = [];
    this._failure = null;
    this._finished = false;
    this._resyncing = false;
    this._chain = Promise.resolve(); // events are applied one at a time (hashing is async)
    this.requestId = requestId;
    this.runId = runId;
    this.lastSeq = afterSeq;
    this.outline = outline;
    this.state = {
      runId,
      documentId: outline?.document_id ?? null,
      title: outline?.title ?? null,
      language: null,
      status: runId ? "resuming" : "starting",
      sections: [],
      summary: null,
      summaryVersion: 0,
      totals: null,
      errors: [],
    };
    let resolveDone;
    let rejectDone;
    this.done = new Promise((resolve, reject) => {
      resolveDone = resolve;
      rejectDone = reject;
    });
    this.done.catch(() => {}); // a caller that only iterates must not see an unhandled rejection
    this._resolveDone = resolveDone;
    this._rejectDone = rejectDone;
  }

  get ended() {
    return this._finished;
  }

  /** The DocgenError that stopped the client from following this run, else null. */
  get error() {
    return this._failure;
  }

  /** Stops the run on the server; its `section_end{cancelled}` and `run_end` still arrive. */
  cancel() {
    this.cancelRequested = true;
    if (this.runId) return this._client.cancel(this.runId);
    return Promise.resolve(null); // sent once run_started names the run
  }

  /** The document as Markdown (only the sections that were written). */
  toMarkdown() {
    return toMarkdown({
      title: this.state.title ?? this.state.documentId ?? "",
      sections: this.state.sections,
    });
  }

  [Symbol.asyncIterator]() {
    return {
      next: () => {
        if (this._queue.length) return Promise.resolve({ value: this._queue.shift(), done: false });
        if (this._failure) return Promise.reject(this._failure);
        if (this._finished) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve, reject) => this._waiters.push({ resolve, reject }));
      },
      return: () => {
        this._detached = true;
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }

  // The frame to send after (re)connecting: the same generate until the run is named, then
  // resume after the last applied seq.
  _reattachFrame() {
    if (!this.runId) return this._opening;
    return { type: "resume", run_id: this.runId, after_seq: this.lastSeq, request_id: this.requestId };
  }

  _push(event) {
    const waiter = this._waiters.shift();
    if (waiter) waiter.resolve({ value: event, done: false });
    else if (!this._detached) this._queue.push(event);
  }

  _finish() {
    this._finished = true;
    for (const waiter of this._waiters.splice(0)) waiter.resolve({ value: undefined, done: true });
  }

  _fail(error) {
    if (this._finished || this._failure) return;
    this._failure = error;
    this.state.status = "failed_to_follow";
    this._client._forget(this);
    for (const waiter of this._waiters.splice(0)) waiter.reject(error);
    this._rejectDone(error);
  }

  /** A frame with `seq` for this run: applied once, in order (docs/protocol.md, "seq"). */
  _offer(frame) {
    this._chain = this._chain.then(() => this._apply(frame)).catch((error) => this._fail(error));
  }

  async _apply(frame) {
    if (this._finished || this._failure) return;
    if (frame.seq <= this.lastSeq) return; // a replay overlapping what we have
    if (frame.seq !== this.lastSeq + 1) {
      // Never expected; applying it would lose text. Re-read from our cursor instead.
      if (!this._resyncing) {
        this._resyncing = true;
        this._client._send(this._reattachFrame());
      }
      return;
    }
    this._resyncing = false;
    this.lastSeq = frame.seq;
    const event = await this._update(frame);
    this._push(event);
    if (frame.type === "run_end") {
      this._client._forget(this);
      this._finish();
      this._resolveDone(frame);
    }
  }

  async _update(frame) {
    const state = this.state;
    const section = (id) => state.sections.find((s) => s.id === id);
    switch (frame.type) {
      case "run_started": {
        this.runId = state.runId = frame.run_id;
        state.documentId = frame.document_id;
        if (frame.title) state.title = frame.title;
        if (frame.language) state.language = frame.language;
        state.status = "running";
        const planned = new Map((this.outline?.sections ?? []).map((s) => [s.id, s]));
        state.sections = frame.sections.map((id, index) => ({
          id,
          index,
          title: planned.get(id)?.title ?? id,
          targetTokens: planned.get(id)?.target_tokens ?? 0,
          text: "",
          state: "pending",
          attempt: 0,
          chunks: 0,
          outputTokens: null,
          finishReason: null,
          verified: null,
        }));
        if (this.cancelRequested) this._client.cancel(this.runId);
        return frame;
      }
      case "section_start": {
        let s = section(frame.section_id);
        if (!s) {
          // A resume after seq 1 never sees run_started: the section is known from here on.
          s = { id: frame.section_id, index: frame.index, outputTokens: null, finishReason: null, verified: null };
          state.sections.push(s);
          state.sections.sort((a, b) => a.index - b.index);
        }
        Object.assign(s, { title: frame.title, targetTokens: frame.target_tokens, text: "", chunks: 0, attempt: frame.attempt, state: "writing" });
        return frame;
      }
      case "section_chunk": {
        const s = section(frame.section_id);
        if (s) {
          s.text += frame.delta;
          s.chunks += 1;
        }
        return frame;
      }
      case "section_end": {
        const s = section(frame.section_id);
        let verified = null;
        if (s) {
          const digest = await this._client._sha256(s.text);
          verified = digest === null ? null : digest === frame.text_sha256;
          Object.assign(s, {
            state: "ended",
            finishReason: frame.finish_reason,
            outputTokens: frame.usage?.output_tokens ?? s.chunks,
            verified,
          });
        }
        return { ...frame, verified };
      }
      case "summary_update":
        if (frame.version > state.summaryVersion) {
          state.summary = frame.summary;
          state.summaryVersion = frame.version;
        }
        return frame;
      case "error":
        state.errors.push(frame);
        return frame;
      case "run_end":
        state.status = frame.status;
        state.totals = frame.totals;
        return frame;
      default:
        return frame; // a type this client does not know: passed through, as the protocol asks
    }
  }
}

// --- the client ----------------------------------------------------------------------------

/**
 * new DocgenClient({url, token, WebSocket?, getToken?, ...options})
 *
 * - `url`: `ws(s)://HOST:PORT/v1/ws`.
 * - `token`: a JWT, or omit it and give `getToken`.
 * - `getToken()`: returns (a promise of) a fresh JWT for the same user; called for the first
 *   connection when `token` is absent, before the token expires (an in-band `refresh`), and
 *   after a close that refused the token. Without it, an expired token ends every run with
 *   `DocgenError("token_expired")`.
 * - `WebSocket`: the implementation (default `globalThis.WebSocket`); `webSocketOptions` is
 *   passed as its third argument (Node's `ws`: headers, origin…).
 * - `onStatus(status, detail)`: "connecting", "open", "session", "reconnecting", "closed".
 */
export class DocgenClient {
  constructor(options) {
    const o = { ...DEFAULTS, ...options };
    if (!o.url) throw new TypeError("DocgenClient: `url` is required");
    this.url = o.url;
    this._token = o.token ?? null;
    this._getToken = o.getToken ?? null;
    this._WebSocket = o.WebSocket ?? globalThis.WebSocket;
    if (typeof this._WebSocket !== "function") {
      throw new TypeError("DocgenClient: no WebSocket implementation (pass `WebSocket`, e.g. from the `ws` package)");
    }
    this._wsOptions = o.webSocketOptions;
    this._options = o;
    this._sha256 = o.sha256 ?? sha256Hex;
    this._onStatus = o.onStatus ?? (() => {});
    this._runs = new Set();
    this._pending = new Map(); // request_id -> {resolve, reject, command}
    this._ws = null;
    this._open = false;
    this._closedByUser = false;
    this._attempt = 0;
    this._timers = new Set();
    this.session = null;
    this.tokenExpiresAt = null; // Unix ms: from the session frame, then from each refresh ack
    this.reconnects = 0;
    this.status = "idle";
  }

  // --- commands ------------------------------------------------------------------------------

  /** Starts a run from an outline (or `{plan: {document_id}}`) and returns it at once. */
  generate(outlineOrPlan, { requestId = newRequestId("gen"), options } = {}) {
    const frame = { type: "generate", request_id: requestId };
    let outline = null;
    if (outlineOrPlan && outlineOrPlan.plan) frame.plan = outlineOrPlan.plan;
    else {
      outline = outlineOrPlan;
      frame.outline = outlineOrPlan;
    }
    if (options) frame.options = options;
    const run = new Run(this, { requestId, opening: frame, outline });
    this._runs.add(run);
    this._send(frame);
    this._ensureConnected();
    return run;
  }

  /** Follows a run by id from after `afterSeq` (0: replays it all, so `state` is complete). */
  resume(runId, { afterSeq = 0, requestId = newRequestId("res"), outline = null } = {}) {
    const run = new Run(this, { requestId, runId, afterSeq, outline, opening: null });
    this._runs.add(run);
    this._send(run._reattachFrame());
    this._ensureConnected();
    return run;
  }

  /** `cancel`; resolves to its `ack` (`{status}`), or null from a server without acks. */
  cancel(runId) {
    return this._command({ type: "cancel", run_id: runId }, { optionalAnswer: true });
  }

  /** This user's resumable runs (`runs` → `ack.runs`). */
  async runs() {
    const ack = await this._command({ type: "runs" });
    return ack.runs;
  }

  /** `ping` → `pong`. */
  ping() {
    return this._command({ type: "ping" });
  }

  /** Sends a new token in-band (`refresh`); resolves to the new expiry (Unix ms). */
  async refresh(token) {
    const ack = await this._command({ type: "refresh", token });
    this._token = token;
    this._scheduleRefresh(ack.token_expires_at);
    return ack.token_expires_at;
  }

  /** Opens the socket now (commands open it anyway); resolves once it is open. */
  connect() {
    this._ensureConnected();
    if (this._open) return Promise.resolve(this.session);
    return new Promise((resolve, reject) => {
      this._openWaiters = [...(this._openWaiters ?? []), { resolve, reject }];
    });
  }

  /** Closes the socket for good; runs keep going on the server (until its grace period). */
  close() {
    this._closedByUser = true;
    this._clearTimers();
    const ws = this._ws;
    this._ws = null;
    this._open = false;
    if (ws && ws.readyState <= 1) ws.close(1000, "client closed");
    const error = new DocgenError("client_closed", "the client was closed");
    for (const run of [...this._runs]) run._fail(error);
    this._rejectPending(error);
    this._setStatus("closed", { code: 1000 });
  }

  // --- socket --------------------------------------------------------------------------------

  _setStatus(status, detail) {
    this.status = status;
    try {
      this._onStatus(status, detail);
    } catch (error) {
      console.error("docgen: onStatus threw", error);
    }
  }

  _ensureConnected() {
    if (this._ws || this._connecting || this._closedByUser || this._reconnectTimer) return;
    this._connect();
  }

  async _connect() {
    this._reconnectTimer = null;
    if (!this._token && this._getToken) {
      this._connecting = true;
      try {
        this._token = await this._getToken();
      } catch (error) {
        this._failAll(new DocgenError("missing_token", `getToken failed: ${error?.message ?? error}`));
        return;
      } finally {
        this._connecting = false;
      }
    }
    if (!this._token) {
      this._failAll(new DocgenError("missing_token", "no token: pass `token` or `getToken`"));
      return;
    }
    let ws;
    try {
      const protocols = [SUBPROTOCOL, `bearer.${this._token}`];
      ws = this._wsOptions ? new this._WebSocket(this.url, protocols, this._wsOptions) : new this._WebSocket(this.url, protocols);
    } catch (error) {
      this._failAll(new DocgenError("invalid_token", `cannot open the WebSocket with this token: ${error.message}`));
      return;
    }
    this._ws = ws;
    this._setStatus(this._attempt ? "reconnecting" : "connecting", { attempt: this._attempt });
    ws.onopen = () => ws === this._ws && this._onOpen(ws);
    ws.onmessage = (message) => ws === this._ws && this._onMessage(message.data);
    ws.onclose = (event) => ws === this._ws && this._onClose(event.code, event.reason, ws);
    ws.onerror = () => {}; // a close event always follows, with the code that matters
  }

  _onOpen(ws) {
    this._open = true;
    const wasReconnect = this._everOpened === true;
    if (wasReconnect) this.reconnects += 1;
    this._everOpened = true;
    this._attempt = 0;
    this._setStatus("open", { reconnect: wasReconnect });
    // A server without revision 2 sends no session frame: the token itself tells its expiry.
    this._scheduleRefresh(tokenExpiresAt(this._token));
    this._startPings();
    for (const frame of this._outbox ?? []) ws.send(JSON.stringify(frame));
    this._outbox = [];
    for (const run of this._runs) this._sendNow(run._reattachFrame());
    for (const waiter of this._openWaiters ?? []) waiter.resolve(this.session);
    this._openWaiters = [];
  }

  _send(frame) {
    if (this._open && this._ws) {
      this._sendNow(frame);
      return;
    }
    // Run frames are derived again on open (generate, or resume from the last seq); only
    // other commands wait in the outbox.
    const isRunFrame = [...this._runs].some((run) => run._opening === frame || (frame.type === "resume" && frame.run_id === run.runId));
    if (!isRunFrame) (this._outbox ??= []).push(frame);
  }

  _sendNow(frame) {
    try {
      this._ws.send(JSON.stringify(frame));
    } catch {
      // the close event that follows reconnects and re-sends what matters
    }
  }

  _command(body, { optionalAnswer = false } = {}) {
    const requestId = newRequestId(body.type);
    const frame = { ...body, request_id: requestId };
    return new Promise((resolve, reject) => {
      this._pending.set(requestId, { resolve, reject, command: body.type, optionalAnswer, frame });
      this._send(frame);
      this._ensureConnected();
      if (optionalAnswer && this.session === null) {
        // A server before revision 2 answers a successful cancel with nothing at all.
        this._timer(() => {
          if (this._pending.delete(requestId)) resolve(null);
        }, this._options.pongTimeoutMs);
      }
    });
  }

  _onMessage(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      console.warn("docgen: a frame that is not JSON was ignored");
      return;
    }
    if (!frame || typeof frame !== "object") return;
    this._lastData = Date.now();
    if (typeof frame.seq === "number") {
      this._routeEvent(frame);
      return;
    }
    switch (frame.type) {
      case "session":
        this.session = frame;
        this._scheduleRefresh(frame.token_expires_at);
        this._setStatus("session", frame);
        return;
      case "pong":
      case "ack":
        this._answer(frame.request_id, frame);
        return;
      case "error":
        this._onErrorAnswer(frame);
        return;
      default:
        return; // unknown frames are ignored (docs/protocol.md)
    }
  }

  _routeEvent(frame) {
    for (const run of this._runs) {
      if (run.runId === frame.run_id) {
        run._offer(frame);
        return;
      }
    }
    if (frame.type === "run_started") {
      for (const run of this._runs) {
        if (!run.runId && run.requestId === frame.request_id) {
          run.runId = frame.run_id; // claimed now, so the events that follow find it
          run._offer(frame);
          return;
        }
      }
    }
  }

  _answer(requestId, frame) {
    const pending = requestId && this._pending.get(requestId);
    if (pending) {
      this._pending.delete(requestId);
      pending.resolve(frame);
    }
  }

  _onErrorAnswer(frame) {
    const error = new DocgenError(frame.code, frame.message, {
      retryable: frame.retryable,
      requestId: frame.request_id,
      runId: frame.run_id,
      frame,
    });
    const pending = frame.request_id && this._pending.get(frame.request_id);
    if (pending) {
      this._pending.delete(frame.request_id);
      pending.reject(error);
      return;
    }
    for (const run of this._runs) {
      const ours = (frame.request_id && run.requestId === frame.request_id) || (frame.run_id && run.runId === frame.run_id);
      if (!ours) continue;
      if (frame.code === "cursor_out_of_range" && run.runId) {
        // Our cursor is not from this run: rebuild it from the start.
        run.lastSeq = 0;
        run.state.sections = [];
        this._sendNow(run._reattachFrame());
      } else if (frame.retryable && (run.runId || frame.code === "generator_unavailable")) {
        // The edge lost the generator: ask again after a pause (same generate, or resume).
        this._timer(() => this._runs.has(run) && this._sendNow(run._reattachFrame()), this._backoffMs(1));
      } else {
        run._fail(error);
      }
      return;
    }
    if (frame.code === "rate_limited") console.warn("docgen: the edge dropped frames (rate_limited)");
  }

  _onClose(code, reason, ws) {
    this._ws = null;
    this._open = false;
    this._stopPings();
    for (const [id, pending] of this._pending) {
      if (pending.heartbeat) {
        pending.resolve();
        this._pending.delete(id);
      }
    }
    if (this._closedByUser) return;
    const refusal = reason && /^[a-z_]+$/.test(reason) ? reason : null;
    const tokenProblem = code === TOKEN_EXPIRED_CLOSE || (code >= 4500 && TOKEN_REFUSALS.has(refusal));
    if (tokenProblem && this._getToken) {
      // Changing something before reconnecting: a new token.
      const old = this._token;
      this._token = null;
      this._reconnectTimer = -1; // no other connection attempt while the token is fetched
      Promise.resolve()
        .then(() => this._getToken())
        .then((token) => {
          if (!token || token === old) throw new Error("getToken returned the refused token again");
          this._token = token;
          this._scheduleReconnect(code, reason);
        })
        .catch((error) => this._giveUp(code, reason, refusal ?? "token_expired", `${error?.message ?? error}`));
      return;
    }
    if (code >= 4500 && code <= 4999) {
      this._giveUp(code, reason, refusal ?? (code === TOKEN_EXPIRED_CLOSE ? "token_expired" : "policy_violation"));
      return;
    }
    if ((code >= 4000 && code <= 4499) || TRANSIENT_CLOSES.has(code)) {
      // Commands still waiting for their answer were lost with the socket; they are all safe
      // to send again (ping, runs, cancel, refresh), so they go out again once reconnected.
      for (const pending of this._pending.values()) if (pending.frame) (this._outbox ??= []).push(pending.frame);
      if (this._runs.size === 0 && this._pending.size === 0 && !(this._outbox?.length)) {
        this._setStatus("closed", { code, reason }); // nothing to resume: reconnect on demand
        return;
      }
      this._scheduleReconnect(code, reason);
      return;
    }
    this._giveUp(code, reason, code === 1009 ? "frame_too_large" : "connection_refused");
  }

  _backoffMs(attempt) {
    const ceiling = Math.min(this._options.reconnectMaxMs, this._options.reconnectBaseMs * 2 ** (attempt - 1));
    return Math.round(ceiling * (0.5 + Math.random() * 0.5)); // jitter: clients don't stampede
  }

  _scheduleReconnect(code, reason) {
    this._attempt += 1;
    if (this._attempt > this._options.maxReconnectAttempts) {
      this._giveUp(code, reason, "unreachable", `gave up after ${this._options.maxReconnectAttempts} reconnections`);
      return;
    }
    const delay = this._backoffMs(this._attempt);
    this._setStatus("reconnecting", { code, reason, attempt: this._attempt, delayMs: delay });
    this._reconnectTimer = this._timer(() => this._connect(), delay);
  }

  _giveUp(code, reason, errorCode, extra) {
    const why = reason ? `${code} ${reason}` : `${code}`;
    const error = new DocgenError(errorCode, `the connection closed (${why})${extra ? `: ${extra}` : ""}`, { closeCode: code });
    this._setStatus("closed", { code, reason, error });
    this._failAll(error);
  }

  _failAll(error) {
    for (const run of [...this._runs]) run._fail(error);
    this._rejectPending(error);
    for (const waiter of this._openWaiters ?? []) waiter.reject(error);
    this._openWaiters = [];
    this._outbox = [];
  }

  _rejectPending(error) {
    for (const pending of this._pending.values()) pending.reject(error);
    this._pending.clear();
  }

  _forget(run) {
    this._runs.delete(run);
  }

  // --- heartbeat and token refresh -----------------------------------------------------------

  _startPings() {
    this._stopPings();
    const interval = this._options.pingIntervalMs;
    if (!interval) return;
    this._pingTimer = setInterval(() => {
      const ws = this._ws;
      if (!ws || !this._open) return;
      const requestId = newRequestId("ping");
      const timeout = setTimeout(() => {
        if (this._pending.delete(requestId) && ws === this._ws) {
          // No pong: the link is dead even if the socket does not know it yet.
          ws.close(DEAD_LINK_CLOSE, "no pong");
          this._onClose(1006, "no pong", ws);
        }
      }, this._options.pongTimeoutMs);
      const settle = () => clearTimeout(timeout);
      this._pending.set(requestId, { resolve: settle, reject: settle, command: "ping", heartbeat: true });
      this._sendNow({ type: "ping", request_id: requestId });
    }, interval);
  }

  _stopPings() {
    clearInterval(this._pingTimer);
    this._pingTimer = null;
  }

  _scheduleRefresh(expiresAt) {
    clearTimeout(this._refreshTimer);
    if (typeof expiresAt === "number") this.tokenExpiresAt = expiresAt;
    if (!this._getToken || typeof expiresAt !== "number") return;
    const lifetime = expiresAt - Date.now();
    const margin = Math.min(this._options.refreshBeforeMs, Math.max(lifetime / 10, 1000));
    const delay = Math.max(0, lifetime - margin);
    this._refreshTimer = setTimeout(async () => {
      if (!this._open) return;
      try {
        const token = await this._getToken();
        if (token && token !== this._token) await this.refresh(token);
      } catch (error) {
        // The socket keeps its old expiry; a 4500 close then reconnects with a new token.
        this._setStatus("refresh_failed", { error });
      }
    }, Math.min(delay, 2 ** 31 - 1));
  }

  _timer(fn, ms) {
    const id = setTimeout(() => {
      this._timers.delete(id);
      fn();
    }, ms);
    this._timers.add(id);
    return id;
  }

  _clearTimers() {
    for (const id of this._timers) clearTimeout(id);
    this._timers.clear();
    clearTimeout(this._refreshTimer);
    this._stopPings();
    this._reconnectTimer = null;
  }
}
