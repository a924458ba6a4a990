import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { test } from "node:test";
import { activeTracer, parseTraceparent, tracingFromConfig } from "../src/telemetry.ts";
import { gatewayEnv, startGateway } from "./child-gateway.ts";
import { waitUntil } from "./helpers.ts";
import { startReceiver } from "./receiver.ts";

/** One span as OTLP/HTTP JSON carries it, with its attributes flattened and its resource's attributes. */
interface ReceivedSpan {
  name: string;
  kind: number;
  traceId: string;
  spanId: string;
  parentSpanId: string;
  status: { code?: number; message?: string };
  attributes: Record<string, unknown>;
  resource: Record<string, unknown>;
}

type OtlpValue = {
  stringValue?: string;
  intValue?: string | number;
  boolValue?: boolean;
  arrayValue?: { values?: OtlpValue[] };
};
type OtlpAttribute = { key: string; value: OtlpValue };

function otlpValue(v: OtlpValue): unknown {
  if (v.stringValue !== undefined) return v.stringValue;
  if (v.intValue !== undefined) return Number(v.intValue);
  if (v.boolValue !== undefined) return v.boolValue;
  if (v.arrayValue !== undefined) return (v.arrayValue.values ?? []).map(otlpValue);
  return undefined;
}

const flat = (attrs: OtlpAttribute[] | undefined) =>
  Object.fromEntries((attrs ?? []).map((a) => [a.key, otlpValue(a.value)]));

/** A real OTLP/HTTP endpoint on loopback: takes POST /v1/traces (JSON) and keeps every span. */
async function startCollector(t: { after(fn: () => unknown): void }) {
  const spans: ReceivedSpan[] = [];
  const paths: string[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      paths.push(`${req.method} ${req.url} ${req.headers["content-type"]}`);
      const body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
      for (const rs of body.resourceSpans ?? []) {
        const resource = flat(rs.resource?.attributes);
        for (const ss of rs.scopeSpans ?? []) {
          for (const s of ss.spans ?? []) {
            spans.push({
              name: s.name,
              kind: s.kind,
              traceId: s.traceId,
              spanId: s.spanId,
              parentSpanId: s.parentSpanId ?? "",
              status: s.status ?? {},
              attributes: flat(s.attributes),
              resource,
            });
          }
        }
      }
      res.writeHead(200, { "content-type": "application/json" }).end("{}");
    });
  });
  await new Promise<void>((done) => server.listen(0, "127.0.0.1", done));
  t.after(
    () =>
      new Promise<void>((done) => {
        server.closeAllConnections();
        server.close(() => done());
      }),
  );
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, spans, paths };
}

const SPAN_KIND_CLIENT = 3;
const SPAN_KIND_PRODUCER = 4;
const STATUS_OK = 1;
const STATUS_ERROR = 2;

for (const threads of ["0", "1"]) {
  test(`traces (DELIVERY_THREADS=${threads}): ingest span → traceparent in Kafka → a span per attempt → traceparent on the webhook`, async (t) => {
    const collector = await startCollector(t);
    // The first attempt fails (500), the second succeeds: two attempt spans.
    const receiver = await startReceiver((_req, res) => {
      res.statusCode = receiver.requests.length === 1 ? 500 : 200;
    });
    t.after(() => receiver.close());
    const gw = await startGateway(
      t,
      gatewayEnv({
        TOPIC_PARTITIONS: "1",
        DELIVERY_THREADS: threads,
        OTEL_EXPORTER_OTLP_ENDPOINT: collector.url,
        OTEL_SERVICE_NAME: "gateway-under-test",
      }),
      { dropTopics: true },
    );
    const dest = await gw.registerDestination({ url: receiver.url, backoffBaseMs: 1, backoffMaxMs: 10 });

    // The client's own trace: the ingest span continues it.
    const clientTrace = randomBytes(16).toString("hex");
    const clientSpan = randomBytes(8).toString("hex");
    let accepted: { id: string } | undefined;
    await waitUntil(async () => {
      const res = await fetch(`${gw.url}/api/singleEvent`, {
        method: "POST",
        headers: { "content-type": "application/json", traceparent: `00-${clientTrace}-${clientSpan}-01` },
        body: JSON.stringify({ userID: "u-1", type: "order.created", payload: { n: 1 } }),
      });
      if (res.status === 202) accepted = (await res.json()) as { id: string };
      else await res.text();
      return res.status === 202;
    }, "ingest to accept (Kafka setup)");
    assert.ok(accepted);

    await waitUntil(() => receiver.delivered.length === 1, "the webhook to be delivered", 30_000);
    const isOurs = (s: ReceivedSpan) => s.traceId === clientTrace;
    await waitUntil(
      () => collector.spans.filter(isOurs).length >= 3,
      "the ingest span and two attempt spans at the OTLP endpoint",
      30_000,
    );
    assert.ok(
      collector.paths.every((p) => p.startsWith("POST /v1/traces application/json")),
      collector.paths.join("\n"),
    );

    const ours = collector.spans.filter(isOurs);
    const ingest = ours.filter((s) => s.name === "ingest singleEvent");
    assert.equal(ingest.length, 1, JSON.stringify(ours, null, 2));
    const ingestSpan = ingest[0] as ReceivedSpan;
    assert.equal(ingestSpan.kind, SPAN_KIND_PRODUCER);
    assert.equal(ingestSpan.parentSpanId, clientSpan, "the ingest span is the client span's child");
    assert.equal(ingestSpan.attributes["messaging.destination.name"], gw.env.EVENTS_TOPIC);
    assert.deepEqual(ingestSpan.attributes["webhook.event.ids"], [accepted.id]);
    assert.equal(ingestSpan.resource["service.name"], "gateway-under-test");

    const attempts = ours
      .filter((s) => s.name === "webhook attempt")
      .sort((a, b) => Number(a.attributes["webhook.attempt"]) - Number(b.attributes["webhook.attempt"]));
    assert.equal(attempts.length, 2, JSON.stringify(ours, null, 2));
    for (const [i, span] of attempts.entries()) {
      assert.equal(span.kind, SPAN_KIND_CLIENT);
      assert.equal(span.parentSpanId, ingestSpan.spanId, "an attempt span is the ingest span's child");
      assert.equal(span.attributes["webhook.destination.id"], dest.id);
      assert.equal(span.attributes["webhook.event.id"], accepted.id);
      assert.equal(span.attributes["webhook.attempt"], i + 1);
      assert.equal(span.attributes["http.response.status_code"], i === 0 ? 500 : 200);
      assert.equal(span.status.code, i === 0 ? STATUS_ERROR : STATUS_OK);
      if (threads === "1") assert.equal(span.resource["webhook.delivery_thread"], 0);
      // The webhook of this attempt carried the attempt span's context: same trace id.
      const header = receiver.requests[i]?.headers.traceparent;
      assert.equal(header, `00-${clientTrace}-${span.spanId}-01`);
    }
  });
}

test("without OTEL_EXPORTER_OTLP_ENDPOINT: no tracer, and webhooks carry no traceparent (even when the client sent one)", async (t) => {
  assert.equal(await tracingFromConfig({ OTEL_SERVICE_NAME: "x" }), undefined);
  assert.equal(activeTracer(), undefined);
  const receiver = await startReceiver();
  t.after(() => receiver.close());
  const gw = await startGateway(t, gatewayEnv({ TOPIC_PARTITIONS: "1" }), { dropTopics: true });
  await gw.registerDestination({ url: receiver.url });
  await gw.ingestBatch([{ userID: "u-1", payload: {} }], {
    headers: { traceparent: `00-${"a".repeat(32)}-${"b".repeat(16)}-01` },
  });
  await waitUntil(() => receiver.delivered.length === 1, "the webhook to be delivered", 30_000);
  assert.equal(receiver.requests[0]?.headers.traceparent, undefined);
  assert.doesNotMatch(gw.stdout(), /exporting traces/);
});

test("traceparent parsing: valid W3C contexts only", () => {
  const ok = parseTraceparent(`00-${"0af7651916cd43dd8448eb211c80319c"}-${"b7ad6b7169203331"}-01`);
  assert.deepEqual(ok, {
    traceId: "0af7651916cd43dd8448eb211c80319c",
    spanId: "b7ad6b7169203331",
    traceFlags: 1,
    isRemote: true,
  });
  for (const bad of [
    undefined,
    "",
    "garbage",
    `00-${"0".repeat(32)}-${"b".repeat(16)}-01`,
    `00-${"a".repeat(32)}-${"0".repeat(16)}-01`,
    `ff-${"a".repeat(32)}-${"b".repeat(16)}-01`,
    `00-${"A".repeat(32)}-${"b".repeat(16)}-01`,
    `00-${"a".repeat(32)}-${"b".repeat(16)}-01-extra`,
  ]) {
    assert.equal(parseTraceparent(bad), undefined, String(bad));
  }
});
