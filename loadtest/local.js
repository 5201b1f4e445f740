// A short local profile: a constant number of VUs chatting back to back (no
// think time), so the host, not the client's pauses, sets the pace.
//
//   VUS=50 DURATION=30s SUMMARY_PATH=summary.json \
//   BASE_URL=http://127.0.0.1:4005 JWT_TOKEN=<jwt> k6 run loadtest/local.js
//
// Env: VUS (default 10), DURATION (default 30s), SUMMARY_PATH (JSON summary,
// default loadtest-summary.json), and the target/token variables of lib/chat.js.
import { chat, runTag, thresholds, trendStats } from './lib/chat.js';

export const options = {
  scenarios: {
    chat: {
      executor: 'constant-vus',
      vus: Number(__ENV.VUS || 10),
      duration: __ENV.DURATION || '30s',
      gracefulStop: '10s',
    },
  },
  thresholds,
  summaryTrendStats: trendStats,
};

export function setup() {
  return { tag: runTag() };
}

export default function (data) {
  chat(data.tag);
}

function ms(v) {
  return v === undefined ? 'n/a' : `${v.toFixed(1)} ms`;
}

function pct(v) {
  return v === undefined ? 'n/a' : `${(v * 100).toFixed(2)} %`;
}

// A few lines on stdout plus the full summary as JSON for the runner.
export function handleSummary(data) {
  const m = data.metrics;
  const d = m.http_req_duration ? m.http_req_duration.values : {};
  const reqs = m.http_reqs ? m.http_reqs.values : {};
  const failed = m.http_req_failed ? m.http_req_failed.values.rate : undefined;
  const checks = m.checks ? m.checks.values.rate : undefined;
  const crossed = Object.keys(m).filter(
    (k) => m[k].thresholds && Object.values(m[k].thresholds).some((t) => !t.ok),
  );
  const lines = [
    '',
    `requests   ${reqs.count || 0} (${(reqs.rate || 0).toFixed(1)}/s)`,
    `latency    p50 ${ms(d.med)}  p95 ${ms(d['p(95)'])}  p99 ${ms(d['p(99)'])}  max ${ms(d.max)}`,
    `failed     ${pct(failed)}   checks passed ${pct(checks)}`,
    `thresholds ${crossed.length === 0 ? 'all passed' : `crossed: ${crossed.join(', ')}`}`,
    '',
  ];
  return {
    stdout: lines.join('\n'),
    [__ENV.SUMMARY_PATH || 'loadtest-summary.json']: JSON.stringify(data, null, 2),
  };
}
