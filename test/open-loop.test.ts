import assert from "node:assert/strict";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { test } from "node:test";
import { closedLoop, openLoop } from "../bench/open-loop.ts";

/** A loopback server; `handle` answers each request (after its body is read). */
async function serve(
  handle: (body: string, res: ServerResponse, req: IncomingMessage) => void,
): Promise<{ server: Server; port: number }> {
  const server = createServer((req, res) => {
    let body = "";
    req.setEncoding("utf8");
    req.on("data", (chunk: string) => {
      body += chunk;
    });
    req.on("end", () => handle(body, res, req));
  });
  await new Promise<void>((done) => server.listen(0, "127.0.0.1", done));
  return { server, port: (server.address() as AddressInfo).port };
}

function answer(res: ServerResponse, status: number): void {
  const body = JSON.stringify({ status });
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
  res.end(body);
}

/** 600 requests at 400/s over at most `connections` connections, each with the userID `u-<n>`. */
function sendFor1500Ms(port: number, connections: number) {
  return openLoop({
    host: "127.0.0.1",
    port,
    path: "/api/singleEvent",
    rate: 400,
    duration: 1.5,
    connections,
    body: (n) => JSON.stringify({ userID: `u-${n}`, payload: {} }),
  });
}

async function close(server: Server): Promise<void> {
  server.closeAllConnections();
  await new Promise((done) => server.close(done));
}

test("the open-loop generator sends every request once, spread evenly, and counts each answer", async () => {
  const arrivals: number[] = [];
  const seen = new Set<string>();
  const { server, port } = await serve((body, res) => {
    arrivals.push(performance.now());
    const { userID } = JSON.parse(body) as { userID: string };
    seen.add(userID);
    // Every tenth request is refused: it must count as non-2xx, not as an answer.
    answer(res, Number(userID.split("-")[1]) % 10 === 0 ? 503 : 202);
  });
  try {
    const result = await sendFor1500Ms(port, 10);
    assert.equal(result.sent, 600);
    assert.equal(seen.size, 600, "each request arrived once, with its own body");
    assert.equal(result["2xx"], 540);
    assert.equal(result.non2xx, 60);
    assert.equal(result.errors + result.timeouts, 0);
    // Even pacing puts 40 requests in each 100 ms; autocannon's overallRate would send them all at once.
    const first = arrivals[0] as number;
    const span = (arrivals.at(-1) as number) - first;
    assert.ok(span >= 1300, `the requests arrived over ${span.toFixed(0)} ms, not over the 1.5 s`);
    let busiest = 0;
    for (let i = 0, j = 0; i < arrivals.length; i++) {
      while ((arrivals[i] as number) - (arrivals[j] as number) >= 100) j++;
      busiest = Math.max(busiest, i - j + 1);
    }
    assert.ok(busiest <= 150, `${busiest} of 600 requests arrived within 100 ms`);
    assert.ok(result.peakPer100Ms <= 150, `the generator sent ${result.peakPer100Ms} within 100 ms`);
  } finally {
    await close(server);
  }
});

test("a stalled server is charged for the requests that waited behind the stall", async () => {
  // From 400 ms to 700 ms after the first request the server holds every answer; with two connections
  // both are soon busy, and the requests that come due meanwhile wait in the generator. Counting from
  // their due time they took up to 300 ms; counting from when they were written they would look instant.
  let stallFrom = 0;
  let released = false;
  const held: ServerResponse[] = [];
  const { server, port } = await serve((_body, res) => {
    const now = performance.now();
    if (stallFrom === 0) {
      stallFrom = now + 400;
      setTimeout(() => {
        released = true;
        for (const r of held.splice(0)) answer(r, 202);
      }, 700);
    }
    if (now >= stallFrom && !released) held.push(res);
    else answer(res, 202);
  });
  try {
    const result = await sendFor1500Ms(port, 2);
    assert.equal(result["2xx"], 600);
    assert.ok(result.latency.p50 < 100, `p50 ${result.latency.p50} ms`);
    // About 120 requests came due during the stall (20 %), waiting 300 ms down to 0: p99 well over 100 ms.
    assert.ok(result.latency.p99 >= 100, `p99 ${result.latency.p99} ms should include the queueing`);
    assert.ok(result.latency.max >= 250, `max ${result.latency.max} ms`);
  } finally {
    await close(server);
  }
});

test("the open-loop generator counts refused connections as errors and does not hang", async () => {
  const { server, port } = await serve((_body, res) => answer(res, 202));
  await close(server);
  const result = await openLoop({
    host: "127.0.0.1",
    port,
    path: "/api/singleEvent",
    rate: 200,
    duration: 0.2,
    connections: 4,
    body: (n) => JSON.stringify({ userID: `u-${n}` }),
  });
  assert.equal(result.sent, 40);
  assert.equal(result.errors, 40);
  assert.equal(result["2xx"], 0);
});

test("the closed-loop generator keeps one request in flight per connection, all of them busy, and counts each answer", async () => {
  const seen = new Set<string>();
  let inFlight = 0;
  let maxInFlight = 0;
  const sockets = new Set<unknown>();
  const { server, port } = await serve((body, res, req) => {
    sockets.add(req.socket);
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    const { userID } = JSON.parse(body) as { userID: string };
    assert.ok(!seen.has(userID), `${userID} sent twice`);
    seen.add(userID);
    setTimeout(() => {
      inFlight--;
      answer(res, Number(userID.split("-")[1]) % 10 === 0 ? 503 : 202);
    }, 5);
  });
  try {
    const result = await closedLoop({
      host: "127.0.0.1",
      port,
      path: "/api/singleEvent",
      connections: 8,
      duration: 1,
      body: (n) => JSON.stringify({ userID: `u-${n}`, payload: {} }),
    });
    assert.equal(maxInFlight, 8, "every connection busy, never more requests than connections");
    assert.equal(sockets.size, 8);
    assert.equal(result.connectionsOpened, 8);
    assert.equal(result.sent, seen.size, "each request arrived once, with its own body");
    assert.equal(result["2xx"] + result.non2xx, result.sent);
    assert.equal(result.non2xx, Math.ceil(result.sent / 10));
    assert.equal(result.errors + result.timeouts, 0);
    assert.ok(result.latency.p50 >= 5, `p50 ${result.latency.p50} ms includes the server's 5 ms`);
  } finally {
    await close(server);
  }
});

test("the closed-loop generator counts refused connections and unanswered requests, and stops on time", async () => {
  const refused = await serve((_body, res) => answer(res, 202));
  await close(refused.server);
  const opts = { host: "127.0.0.1", path: "/api/singleEvent", duration: 0.3, body: () => "{}" };
  const none = await closedLoop({ ...opts, port: refused.port, connections: 4 });
  assert.equal(none["2xx"], 0);
  assert.ok(none.errors >= 4, `${none.errors} errors`);
  assert.ok(none.connectionsOpened > 4, "refused connections are replaced while the time lasts");

  const silent = await serve(() => {});
  try {
    const unanswered = await closedLoop({ ...opts, port: silent.port, connections: 3, timeoutMs: 100 });
    assert.equal(unanswered["2xx"], 0);
    assert.ok(unanswered.timeouts >= 3, `${unanswered.timeouts} timeouts`);
    assert.equal(unanswered.sent, unanswered.timeouts, "every request sent timed out");
  } finally {
    await close(silent.server);
  }
});
