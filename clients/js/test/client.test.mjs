// The client against a real edge process, run by tests/test_js_client.py, which sets
// DOCGEN_TEST_URL (the edge's WebSocket) and DOCGEN_TEST_CONTROL (its control server: tokens,
// the texts the scripted LLM writes, and a SIGKILL + restart of the edge).
//
//   DOCGEN_TEST_URL=ws://… DOCGEN_TEST_CONTROL=http://… node --test test/

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { test } from "node:test";
import WebSocket from "ws";

import { DocgenClient, DocgenError, explainError, toMarkdown } from "../docgen.js";

const URL_ = process.env.DOCGEN_TEST_URL;
const PROXY_URL = process.env.DOCGEN_TEST_PROXY_URL; // the same edge, through a link that can go silent
const CONTROL = process.env.DOCGEN_TEST_CONTROL;
if (!URL_ || !CONTROL) throw new Error("run through tests/test_js_client.py (DOCGEN_TEST_URL, DOCGEN_TEST_CONTROL)");
// A browser's Origin: the edge then refuses a bad token with a 45xx close a page can read.
const ORIGIN = URL_.replace(/^ws/, "http").replace(/\/v1\/ws$/, "");

const OUTLINE = {
  document_id: "compost-guide",
  title: "Composting in a small flat",
  sections: [
    { id: "why", title: "Why compost", brief: "What it saves.", target_tokens: 40 },
    { id: "bin", title: "Choosing a bin", brief: "Worms or bokashi.", target_tokens: 40 },
    { id: "routine", title: "A weekly routine", brief: "Greens and browns.", target_tokens: 40 },
    { id: "fixes", title: "Fixing problems", brief: "Flies and smells.", target_tokens: 40 },
  ],
};

async function control(path, init) {
  const response = await fetch(CONTROL + path, init);
  assert.equal(response.status, 200, `${path}: HTTP ${response.status}`);
  return response.headers.get("content-type")?.includes("json") ? response.json() : response.text();
}
const token = (query = "") => control(`/token?${query}`);
const sha256 = (text) => createHash("sha256").update(text, "utf8").digest("hex");

function client(options) {
  return new DocgenClient({ url: URL_, WebSocket, reconnectBaseMs: 100, reconnectMaxMs: 1000, ...options });
}

/** Collects a run's events, checking the contract on the way: seq 1, 2, 3… with no gap and no
 * repeat, and every section_end verified by the client and by us. */
async function collect(run, onEvent = () => {}) {
  const events = [];
  for await (const event of run) {
    events.push(event);
    await onEvent(event, events);
  }
  assert.deepEqual(events.map((e) => e.seq), events.map((_, i) => i + 1), "seq must be 1, 2, 3… once each");
  for (const end of events.filter((e) => e.type === "section_end")) {
    assert.equal(end.verified, true, `section ${end.section_id} did not verify`);
    const section = run.state.sections.find((s) => s.id === end.section_id);
    assert.equal(sha256(section.text), end.text_sha256);
  }
  return events;
}

async function checkDocument(run, events) {
  const expected = await control("/expected");
  const end = events.at(-1);
  assert.equal(end.type, "run_end");
  assert.equal(end.status, "completed");
  assert.deepEqual(await run.done, end);
  for (const section of run.state.sections) assert.equal(section.text, expected[section.title]);
  assert.equal(run.state.status, "completed");
  assert.equal(run.state.summaryVersion, OUTLINE.sections.length);
  const markdown = run.toMarkdown();
  assert.ok(markdown.startsWith(`# ${OUTLINE.title}\n\n## Why compost\n\n${expected["Why compost"]}\n`));
  assert.equal(markdown, toMarkdown({ title: OUTLINE.title, sections: run.state.sections }));
}

test("a whole run streams, verifies, and the session frame says who we are", async () => {
  const docgen = client({ token: await token("sub=alice") });
  try {
    const run = docgen.generate(OUTLINE);
    const events = await collect(run);
    await checkDocument(run, events);
    assert.equal(docgen.session?.type, "session");
    assert.equal(docgen.session.user, "alice");
    assert.equal(typeof docgen.session.token_expires_at, "number");
    const pong = await docgen.ping();
    assert.equal(pong.type, "pong");
    const listed = await docgen.runs();
    assert.ok(listed.some((r) => r.run_id === run.runId && r.status === "completed"));
    assert.equal(docgen.reconnects, 0);
  } finally {
    docgen.close();
  }
});

test("resume by run id, from the start or after a seq, from another client", async () => {
  const first = client({ token: await token("sub=lou") });
  const second = client({ token: await token("sub=lou") });
  try {
    const original = await collect(first.generate({ ...OUTLINE, document_id: "compost-resume" }));
    const runId = original[0].run_id;
    // A tab that lost everything: the whole run again, identical.
    const again = second.resume(runId);
    const replayed = await collect(again);
    assert.deepEqual(replayed.map(({ verified, ...frame }) => frame), original.map(({ verified, ...frame }) => frame));
    await checkDocument(again, replayed);
    // A tab that had the first section: the rest, each later section verified on its own.
    const cursor = original.find((e) => e.type === "summary_update").seq;
    const tail = second.resume(runId, { afterSeq: cursor });
    const events = [];
    for await (const event of tail) events.push(event);
    assert.deepEqual(events.map((e) => e.seq), original.slice(cursor).map((e) => e.seq));
    assert.deepEqual(tail.state.sections.map((s) => s.id), ["bin", "routine", "fixes"]);
    assert.ok(events.filter((e) => e.type === "section_end").every((e) => e.verified === true));
    // Someone else's run is not found, and says so.
    const stranger = client({ token: await token("sub=mallory") });
    try {
      await assert.rejects(stranger.resume(runId).done, (error) => error.code === "run_not_found");
    } finally {
      stranger.close();
    }
  } finally {
    first.close();
    second.close();
  }
});

test("the edge killed mid-run and restarted: every event once, every section verified", async () => {
  const statuses = [];
  // A cold Python edge takes seconds to start on a busy machine: keep trying long enough.
  const docgen = client({ token: await token("sub=bob"), onStatus: (status) => statuses.push(status), maxReconnectAttempts: 100 });
  try {
    const run = docgen.generate(OUTLINE);
    let crashed = false;
    const events = await collect(run, async (event) => {
      // In the middle of the second section: the edge dies without a close frame (1006).
      if (!crashed && event.type === "section_chunk" && event.index === 1) {
        crashed = true;
        await control("/edge/crash", { method: "POST" });
      }
    });
    assert.ok(crashed);
    await checkDocument(run, events);
    assert.ok(docgen.reconnects >= 1, `reconnects: ${docgen.reconnects}`);
    assert.ok(statuses.includes("reconnecting"), statuses.join(","));
  } finally {
    docgen.close();
  }
});

test("a silent link is noticed by the application pings, and the run resumes", async () => {
  let stalled = false;
  let restored = null;
  const docgen = new DocgenClient({
    url: PROXY_URL,
    WebSocket,
    token: await token("sub=kim"),
    pingIntervalMs: 300,
    pongTimeoutMs: 600,
    reconnectBaseMs: 100,
    reconnectMaxMs: 500,
    maxReconnectAttempts: 100,
    onStatus: (status) => {
      // The client gave up on the silent socket: let the link work again.
      if (status === "reconnecting" && stalled && !restored) restored = control("/link/restore", { method: "POST" });
    },
  });
  try {
    const run = docgen.generate({ ...OUTLINE, document_id: "compost-silent-link" });
    const events = await collect(run, async (event) => {
      if (!stalled && event.type === "section_chunk" && event.index === 1) {
        stalled = true;
        await control("/link/stall", { method: "POST" });
      }
    });
    await checkDocument(run, events);
    assert.ok(restored, "the client never noticed the silent link");
    await restored;
    assert.ok(docgen.reconnects >= 1);
  } finally {
    docgen.close();
  }
});

test("a refused token surfaces its code and is not retried", async () => {
  for (const [query, code] of [["sub=eve&bad=1", "invalid_token"], ["sub=eve&ttl_s=-60", "token_expired"]]) {
    const statuses = [];
    const docgen = client({ token: await token(query), webSocketOptions: { origin: ORIGIN }, onStatus: (s) => statuses.push(s) });
    try {
      const run = docgen.generate(OUTLINE);
      await assert.rejects(run.done, (error) => {
        assert.ok(error instanceof DocgenError);
        assert.equal(error.code, code);
        assert.ok(error.closeCode >= 4500 && error.closeCode <= 4999, `close ${error.closeCode}`);
        return true;
      });
      await assert.rejects(async () => {
        for await (const _ of run);
      }, DocgenError);
      assert.ok(!statuses.includes("reconnecting"), statuses.join(","));
    } finally {
      docgen.close();
    }
  }
});

test("a bad outline is explained in words with the stable code", async () => {
  const docgen = client({ token: await token("sub=frank") });
  try {
    const { document_id, ...withoutId } = OUTLINE;
    const run = docgen.generate(withoutId);
    const error = await run.done.then(() => null, (e) => e);
    assert.ok(error instanceof DocgenError);
    assert.equal(error.code, "invalid_frame");
    assert.equal(
      explainError(error, withoutId),
      'the outline has no "document_id"; add it. "document_id": a name you choose for the document, 1–128 characters, e.g. "my-guide". (invalid_frame at $.outline)',
    );
  } finally {
    docgen.close();
  }
});

test("a token about to expire is refreshed in-band through the callback", async () => {
  let minted = 0;
  const docgen = client({
    // The first token lives 2 s (the edge has no leeway here); the socket must outlive it.
    token: await token("sub=gina&ttl_s=2"),
    getToken: async () => {
      minted += 1;
      return token("sub=gina&ttl_s=600");
    },
    refreshBeforeMs: 1500,
  });
  try {
    const slowOutline = { ...OUTLINE, document_id: "compost-refresh" };
    const run = docgen.generate(slowOutline);
    const started = Date.now();
    const events = await collect(run);
    await checkDocument(run, events);
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, started + 3500 - Date.now())));
    assert.equal((await docgen.ping()).type, "pong", "the socket outlived its first token");
    assert.ok(minted >= 1);
    assert.equal(docgen.reconnects, 0, "refreshed in-band: the socket was never closed");
    assert.ok(docgen.tokenExpiresAt > Date.now() + 60000);
  } finally {
    docgen.close();
  }
});

test("a generate whose socket dropped before run_started is sent again and starts one run", async () => {
  // The network loses everything after the first generate frame leaves: the run exists on the
  // server, but its run_started never arrives. The client sends the same frame again.
  let dropped = 0;
  class LossyWebSocket extends WebSocket {
    send(data, ...rest) {
      if (dropped === 0 && JSON.parse(data).type === "generate") {
        dropped += 1;
        this.deaf = true;
        return super.send(data, () => this.terminate());
      }
      return super.send(data, ...rest);
    }
    set onmessage(handler) {
      super.onmessage = (message) => !this.deaf && handler(message);
    }
    get onmessage() {
      return super.onmessage;
    }
  }
  const before = (await control("/llm/requests")).count;
  const docgen = client({ token: await token("sub=henry"), WebSocket: LossyWebSocket });
  try {
    const outline = { ...OUTLINE, document_id: "compost-idempotent" };
    const run = docgen.generate(outline, { requestId: "gen-once-only" });
    const events = await collect(run);
    await checkDocument(run, events);
    assert.equal(dropped, 1);
    assert.equal(events[0].request_id, "gen-once-only");
    const runs = (await docgen.runs()).filter((r) => r.document_id === "compost-idempotent");
    assert.equal(runs.length, 1, JSON.stringify(runs));
    // One LLM request per section: the second generate started nothing.
    assert.equal((await control("/llm/requests")).count - before, outline.sections.length);
  } finally {
    docgen.close();
  }
});

test("cancel stops the run; the cancelled section keeps and verifies its partial text", async () => {
  const docgen = client({ token: await token("sub=ivy") });
  try {
    const run = docgen.generate({ ...OUTLINE, document_id: "compost-cancel" });
    const events = await collect(run, (event) => {
      if (event.type === "section_chunk" && event.index === 1 && !run.cancelRequested) return run.cancel();
    });
    assert.equal(events.at(-1).status, "cancelled");
    const states = run.state.sections.map((s) => [s.state, s.finishReason]);
    assert.deepEqual(states.slice(0, 2), [["ended", "stop"], ["ended", "cancelled"]]);
    assert.ok(states.slice(2).every(([state]) => state === "pending"));
    assert.ok(!run.toMarkdown().includes("## Choosing a bin"), "a cancelled section is not part of the document");
  } finally {
    docgen.close();
  }
});
