// Drives one page in Debian's headless Chromium through a plan of steps, for
// tests/test_browser.py.
//
//   node drive_page.mjs <page-url> '<plan JSON>'
//
// plan: {"steps": [...], "timeout_ms": 30000, "viewport": {"width": 1400, "height": 900},
//        "failure_screenshot": "path.png"}
// steps (run in order; every wait is a wait-for-condition, never a fixed sleep):
//   {"do": "goto"}                                 load <page-url>
//   {"do": "fill", "selector": "#x", "value": "…"}
//   {"do": "click", "selector": "#x"}
//   {"do": "wait_for", "js": "<expression>"}       polls until the expression is truthy in the page
//   {"do": "signal", "name": "READY_FOR_RESTART"}  print {"signal": name}, wait for a stdin line
//   {"do": "eval", "name": "texts", "js": "<expression>"}   results[name] = its JSON value
//   {"do": "screenshot", "path": "…", "full_page": true}
//   {"do": "select", "selector": "#x", "value": "…"}          choose an <option> by value
//   {"do": "download", "selector": "#x", "name": "markdown"}  click, results[name] = the file's text
// stdout: one JSON object per line: {"signal": …} lines, then one final
//   {"ok": true|false, "results": {…}, "error"?: "…", "failed_step"?: n, "log": {…}}
// where log has the page's console messages and errors, every request URL, and every
// WebSocket the page opened with the frames it sent and how it closed.

import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const CHROMIUM = process.env.DOCGEN_CHROMIUM || "/usr/bin/chromium";
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

const POLL_MS = 20;

function emit(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

const stdinLines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

async function waitForGoAhead(name) {
  emit({ signal: name });
  const { done } = await stdinLines.next();
  if (done) throw new Error(`stdin closed while waiting after signal ${name}`);
}

function recordPage(page, log) {
  page.on("console", (message) => log.console.push({ type: message.type(), text: message.text() }));
  page.on("pageerror", (error) => log.page_errors.push(String(error)));
  page.on("request", (request) => log.requests.push(request.url()));
  page.on("websocket", (ws) => {
    const entry = { url: ws.url(), sent: [], received: 0, closed: false, error: null };
    log.websockets.push(entry);
    ws.on("framesent", (frame) => entry.sent.push(String(frame.payload)));
    ws.on("framereceived", () => { entry.received += 1; });
    ws.on("socketerror", (error) => { entry.error = String(error); });
    ws.on("close", () => { entry.closed = true; });
  });
}

// page.waitForFunction compiles the expression inside the page, which the page's CSP
// (no 'unsafe-eval') forbids; page.evaluate goes through the DevTools protocol instead.
async function waitFor(page, js, timeout) {
  const deadline = Date.now() + timeout;
  while (!(await page.evaluate(js))) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for: ${js}`);
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

async function runStep(page, url, step, results, timeout) {
  switch (step.do) {
    case "goto":
      await page.goto(url, { waitUntil: "load", timeout });
      return;
    case "fill":
      await page.fill(step.selector, step.value, { timeout });
      return;
    case "click":
      await page.click(step.selector, { timeout: step.timeout_ms ?? timeout });
      return;
    case "wait_for":
      await waitFor(page, step.js, step.timeout_ms ?? timeout);
      return;
    case "signal":
      await waitForGoAhead(step.name);
      return;
    case "eval":
      results[step.name] = await page.evaluate(step.js);
      return;
    case "select":
      await page.selectOption(step.selector, step.value, { timeout });
      return;
    case "download": {
      const [download] = await Promise.all([
        page.waitForEvent("download", { timeout }),
        page.click(step.selector, { timeout }),
      ]);
      const chunks = [];
      for await (const chunk of await download.createReadStream()) chunks.push(chunk);
      results[step.name] = { filename: download.suggestedFilename(), text: Buffer.concat(chunks).toString("utf8") };
      return;
    }
    case "screenshot":
      await page.screenshot({ path: step.path, fullPage: step.full_page ?? true, timeout });
      return;
    default:
      throw new Error(`unknown step ${JSON.stringify(step)}`);
  }
}

async function main() {
  const [url, planText] = process.argv.slice(2);
  if (!url || !planText) throw new Error("usage: node drive_page.mjs <page-url> '<plan JSON>'");
  const plan = JSON.parse(planText);
  const timeout = plan.timeout_ms ?? 30000;
  const log = { console: [], page_errors: [], requests: [], websockets: [] };
  const results = {};
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout });
  let outcome;
  try {
    const context = await browser.newContext({ viewport: plan.viewport ?? { width: 1400, height: 900 }, acceptDownloads: true });
    const page = await context.newPage();
    recordPage(page, log);
    let index = 0;
    try {
      for (; index < plan.steps.length; index += 1) {
        await runStep(page, url, plan.steps[index], results, timeout);
      }
      outcome = { ok: true, results, log };
    } catch (error) {
      outcome = { ok: false, error: String(error?.stack ?? error), failed_step: index, results, log };
      if (plan.failure_screenshot) {
        await page.screenshot({ path: plan.failure_screenshot, fullPage: true }).catch(() => {});
      }
      // What the page knew when it failed, to make the failure readable.
      outcome.page_state = await page
        .evaluate(() => ({
          docgen: window.docgen && JSON.parse(JSON.stringify({
            lastSeq: window.docgen.lastSeq, runId: window.docgen.runId, runStatus: window.docgen.runStatus,
            connected: window.docgen.connected, reconnects: window.docgen.reconnects, sections: window.docgen.sections,
          })),
          notices: [...document.querySelectorAll("#errors .notice")].map((n) => n.textContent),
          connection: document.querySelector("#connection")?.textContent,
        }))
        .catch((e) => String(e));
    }
  } finally {
    await browser.close();
  }
  emit(outcome);
  process.exitCode = outcome.ok ? 0 : 1;
  stdinLines.return?.();
  process.stdin.destroy();
}

main().catch((error) => {
  emit({ ok: false, error: String(error?.stack ?? error) });
  process.exit(2);
});
