// The floor under every chat: `GET /health/live`, one inbound request through
// the host's full middleware stack (request id, trace span, metrics, CORS,
// load shedding) and nothing else. Divide the host's CPU time over the run
// by the request count to get the cost of the HTTP layer alone.
//
//   BASE_URL=http://127.0.0.1:4005 VUS=10 DURATION=15s k6 run loadtest/floor.js
import http from 'k6/http';
import { check } from 'k6';

export const options = {
  vus: Number(__ENV.VUS || 10),
  duration: __ENV.DURATION || '15s',
  thresholds: { http_req_failed: ['rate<0.01'] },
};

const url = `${__ENV.BASE_URL || 'http://localhost:4005'}/health/live`;

export default function () {
  const res = http.get(url);
  check(res, { 'status 200': (r) => r.status === 200 });
}
