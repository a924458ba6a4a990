/**
 * OpenTelemetry traces. Off unless OTEL_EXPORTER_OTLP_ENDPOINT is set: then `startTracing` loads the SDK
 * (dynamic import, so the default path never loads it) and the hot paths find a tracer through
 * `activeTracer()`; off, that is `undefined` and they skip every tracing step — no span objects, no
 * header strings.
 *
 * Context travels explicitly (no async context manager): the ingest span's context goes into each Kafka
 * record as a W3C `traceparent` header, a delivery attempt's span is its child, and the outgoing webhook
 * carries the attempt span's `traceparent` (same trace id). Each process or delivery thread that starts
 * tracing exports its own spans.
 */
import {
  type Attributes,
  isSpanContextValid,
  ROOT_CONTEXT,
  type Span,
  type SpanContext,
  SpanKind,
  SpanStatusCode,
  type Tracer,
  trace,
} from "@opentelemetry/api";

export type { Span, Tracer };
export { SpanKind, SpanStatusCode };

export interface TracingOptions {
  /** OTLP/HTTP base URL; spans go to `<endpoint>/v1/traces`. */
  endpoint: string;
  serviceName: string;
  /** Extra resource attributes, e.g. the delivery thread's index. */
  attributes?: Attributes;
}

export interface Tracing {
  /** Exports what is buffered and stops; `activeTracer()` is undefined afterwards. */
  shutdown(): Promise<void>;
}

let tracer: Tracer | undefined;

/** The tracer when tracing is on in this thread, else undefined (the hot paths' one check). */
export function activeTracer(): Tracer | undefined {
  return tracer;
}

/** Spans are exported at least this often (and on shutdown). */
const EXPORT_EVERY_MS = 1000;

/** Loads the SDK and exporter and turns tracing on in this thread (main thread or delivery thread). */
export async function startTracing(opts: TracingOptions): Promise<Tracing> {
  const [{ BatchSpanProcessor, TracerProvider }, { OTLPTraceExporter }, { resourceFromAttributes }] =
    await Promise.all([
      import("@opentelemetry/sdk-trace"),
      import("@opentelemetry/exporter-trace-otlp-http"),
      import("@opentelemetry/resources"),
    ]);
  const exporter = new OTLPTraceExporter({ url: `${opts.endpoint.replace(/\/+$/, "")}/v1/traces` });
  const provider = new TracerProvider({
    resource: resourceFromAttributes({ "service.name": opts.serviceName, ...opts.attributes }),
    spanProcessors: [new BatchSpanProcessor({ exporter, scheduledDelayMillis: EXPORT_EVERY_MS })],
  });
  const own = provider.getTracer("webhook-gateway");
  tracer = own;
  return {
    async shutdown() {
      if (tracer === own) tracer = undefined;
      await provider.shutdown();
    },
  };
}

/** Tracing per the config: started when OTEL_EXPORTER_OTLP_ENDPOINT is set, else nothing at all. */
export async function tracingFromConfig(
  config: { OTEL_EXPORTER_OTLP_ENDPOINT?: string | undefined; OTEL_SERVICE_NAME: string },
  attributes?: Attributes,
): Promise<Tracing | undefined> {
  if (!config.OTEL_EXPORTER_OTLP_ENDPOINT) return undefined;
  return startTracing({
    endpoint: config.OTEL_EXPORTER_OTLP_ENDPOINT,
    serviceName: config.OTEL_SERVICE_NAME,
    attributes,
  });
}

/** The W3C `traceparent` of a span: `00-<trace id>-<span id>-<flags>`. */
export function traceparentOf(span: Span): string {
  const c = span.spanContext();
  return `00-${c.traceId}-${c.spanId}-${c.traceFlags.toString(16).padStart(2, "0")}`;
}

const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:-.*)?$/;

/** A W3C `traceparent` header as a remote span context; undefined when absent or malformed. */
export function parseTraceparent(value: string | undefined): SpanContext | undefined {
  if (value === undefined) return undefined;
  const m = TRACEPARENT.exec(value.trim());
  if (!m || m[1] === "ff" || (m[1] === "00" && value.trim().length !== 55)) return undefined;
  const context: SpanContext = {
    traceId: m[2] as string,
    spanId: m[3] as string,
    traceFlags: Number.parseInt(m[4] as string, 16) & 1,
    isRemote: true,
  };
  return isSpanContextValid(context) ? context : undefined;
}

/** Starts a span, the child of the `traceparent` given (a new trace when it is absent or malformed). */
export function startSpan(
  t: Tracer,
  name: string,
  opts: { kind: SpanKind; attributes?: Attributes; parent?: string | undefined },
): Span {
  const parent = parseTraceparent(opts.parent);
  const ctx = parent ? trace.setSpanContext(ROOT_CONTEXT, parent) : ROOT_CONTEXT;
  return t.startSpan(name, { kind: opts.kind, attributes: opts.attributes }, ctx);
}

/** Ends a span as failed with `err`'s message. */
export function endWithError(span: Span, err: unknown): void {
  const message = err instanceof Error ? err.message : String(err);
  span.recordException(err instanceof Error ? err : message);
  span.setStatus({ code: SpanStatusCode.ERROR, message });
  span.end();
}
