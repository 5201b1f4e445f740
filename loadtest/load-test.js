// The roadmap's staged load profile (section 4.2): ramp to 10, 50 and 100
// virtual users over 21 minutes, each user chatting once per second.
//
//   BASE_URL=http://localhost:4005 JWT_TOKEN=<jwt> k6 run loadtest/load-test.js
//
// Env: BASE_URL or BASE_URLS (comma list), JWT_TOKEN or TOKENS (comma list;
// both lists are spread over VUs), THINK_TIME (seconds between chats, default 1),
// PROMPT, AGENT_ID, RUN_TAG (session id prefix).
import { sleep } from 'k6';
import { chat, runTag, thresholds, trendStats } from './lib/chat.js';

export const options = {
  stages: [
    { duration: '2m', target: 10 }, // warm up
    { duration: '5m', target: 10 }, // baseline
    { duration: '2m', target: 50 }, // scale up
    { duration: '5m', target: 50 }, // sustained
    { duration: '2m', target: 100 }, // spike
    { duration: '3m', target: 100 }, // peak
    { duration: '2m', target: 0 }, // scale down
  ],
  thresholds,
  summaryTrendStats: trendStats,
};

const thinkTime = Number(__ENV.THINK_TIME || 1);

export function setup() {
  return { tag: runTag() };
}

export default function (data) {
  chat(data.tag);
  if (thinkTime > 0) sleep(thinkTime);
}
