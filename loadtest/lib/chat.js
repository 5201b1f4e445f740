// Shared by load-test.js and local.js: target and token selection, one chat
// request, and the checks every chat answer must pass.
import http from 'k6/http';
import { check } from 'k6';
import { Counter, Trend } from 'k6/metrics';

export const chatRequests = new Counter('chat_requests');
export const chatDuration = new Trend('chat_duration', true);

const SLOW_MS = 5000;

function list(value) {
  return (value || '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

// BASE_URLS (comma list) wins over BASE_URL; VUs are spread round-robin.
const bases = (() => {
  const many = list(__ENV.BASE_URLS);
  if (many.length > 0) return many;
  return [__ENV.BASE_URL || 'http://localhost:4005'];
})().map((b) => b.replace(/\/+$/, ''));

// TOKENS (comma list) wins over JWT_TOKEN; VUs are spread round-robin.
const tokens = (() => {
  const many = list(__ENV.TOKENS);
  if (many.length > 0) return many;
  return [__ENV.JWT_TOKEN || 'test-jwt-token'];
})();

const prompt = __ENV.PROMPT || 'Show me open work orders';
const agentId = __ENV.AGENT_ID || 'atlas-copilot';

function pick(items) {
  return items[(__VU - 1) % items.length];
}

// A tag that differs between runs, so a long-lived Redis never mixes them.
export function runTag() {
  return __ENV.RUN_TAG || `lt${Date.now().toString(36)}`;
}

function parse(res) {
  try {
    return JSON.parse(res.body);
  } catch (_) {
    return null;
  }
}

// One chat turn in a session of its own (VU + iteration), then the checks.
export function chat(tag) {
  const sessionId = `${tag}-${__VU}-${__ITER}`;
  const body = JSON.stringify({ prompt, agentId, metadata: { sessionId } });
  const res = http.post(`${pick(bases)}/v1/chat`, body, {
    headers: {
      'Content-Type': 'application/json',
      Authorization: `Bearer ${pick(tokens)}`,
    },
    tags: { name: 'chat' },
  });
  chatRequests.add(1);
  chatDuration.add(res.timings.duration);

  const answer = res.status === 200 ? parse(res) : null;
  check(res, {
    'status is 200': (r) => r.status === 200,
    'response has sessionId': () => answer !== null && answer.sessionId === sessionId,
    'response time < 5s': (r) => r.timings.duration < SLOW_MS,
    'one assistant message': () =>
      answer !== null &&
      Array.isArray(answer.messages) &&
      answer.messages.length === 1 &&
      answer.messages[0].role === 'assistant',
    'view_work_orders succeeded': () =>
      answer !== null &&
      Array.isArray(answer.toolCalls) &&
      answer.toolCalls.some((c) => c.toolName === 'view_work_orders' && c.status === 'success'),
  });
  return res;
}

// Trend columns wanted in summaries (p50 and p99 are not there by default).
export const trendStats = ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max', 'count'];

export const thresholds = {
  http_req_duration: ['p(95)<5000'],
  http_req_failed: ['rate<0.05'],
};
