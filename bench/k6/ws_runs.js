// docgen WebSocket runs driven by k6, a load client docgen did not write (run by bench/run.py).
//
// Each VU connects the way a browser does (subprotocols `docgen.v1` + `bearer.<JWT>`), starts a
// one-section run whose LLM is the stamping server (every token carries its send time as
// `|<unix seconds>`), reads it to `run_end`, closes, and starts over until the duration ends.
//
// Environment: URL (ws://host:port/v1/ws), TOKENS_FILE (JSON list of JWTs, one per VU),
// VUS, DURATION (e.g. 30s), SECTION_TOKENS, SUMMARY_FILE (where handleSummary writes JSON).
import { WebSocket } from 'k6/experimental/websockets';
import { Counter, Trend } from 'k6/metrics';

const tokens = JSON.parse(open(__ENV.TOKENS_FILE));
const sectionTokens = Number(__ENV.SECTION_TOKENS || 150);

const relay = new Trend('docgen_relay_ms', true);
const runTime = new Trend('docgen_run_ms', true);
const firstChunk = new Trend('docgen_first_chunk_ms', true);
const chunks = new Counter('docgen_chunks');
const runsCompleted = new Counter('docgen_runs_completed');
const runsFailed = new Counter('docgen_runs_failed');
const errorFrames = new Counter('docgen_error_frames');

export const options = {
  scenarios: {
    runs: {
      executor: 'constant-vus',
      vus: Number(__ENV.VUS || 10),
      duration: __ENV.DURATION || '10s',
      gracefulStop: '60s',
    },
  },
  summaryTrendStats: ['avg', 'min', 'med', 'p(95)', 'p(99)', 'max', 'count'],
};

export default function () {
  const token = tokens[(__VU - 1) % tokens.length];
  let started = 0;
  let sawChunk = false;
  let ended = false;
  const ws = new WebSocket(__ENV.URL, ['docgen.v1', 'bearer.' + token]);

  ws.onopen = () => {
    started = Date.now();
    ws.send(JSON.stringify({
      type: 'generate',
      request_id: `k6-${__VU}-${__ITER}`,
      outline: {
        document_id: `k6-${__VU}-${__ITER}`,
        title: 'k6 stream',
        // The brief asks the stamping LLM for the stream's length; the target lies past it, so
        // the generator's sentence stop and whole-sentence hold never shape it (bench/wsclient.py).
        sections: [{
          id: 's1',
          title: 'Relay',
          brief: `stream ${sectionTokens} tokens`,
          target_tokens: Math.ceil(sectionTokens / 0.9) + 1,
        }],
      },
    }));
  };

  ws.onmessage = (event) => {
    const now = Date.now();
    const frame = JSON.parse(event.data);
    if (frame.type === 'section_chunk') {
      const bar = frame.delta.lastIndexOf('|');
      if (bar >= 0) {
        relay.add(now - parseFloat(frame.delta.slice(bar + 1)) * 1000);
      }
      if (!sawChunk) {
        sawChunk = true;
        firstChunk.add(now - started);
      }
      chunks.add(1);
    } else if (frame.type === 'error') {
      errorFrames.add(1, { code: frame.code });
    } else if (frame.type === 'run_end') {
      ended = true;
      runTime.add(now - started);
      (frame.status === 'completed' ? runsCompleted : runsFailed).add(1);
      ws.close();
    }
  };

  ws.onclose = () => {
    if (!ended) {
      runsFailed.add(1);
    }
  };

  ws.onerror = () => {
    if (!ended) {
      ended = true;
      runsFailed.add(1);
    }
  };
}

export function handleSummary(data) {
  return { [__ENV.SUMMARY_FILE]: JSON.stringify(data, null, 2) };
}
