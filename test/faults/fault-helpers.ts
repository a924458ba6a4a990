/**
 * Shared helpers of the fault-injection suite (test/faults/*.test.ts). The gateway as a child process and
 * its admin API are in test/child-gateway.ts; waitUntil and cleanUp in test/helpers.ts.
 *
 * Other fault tests import these; keep the exported names and shapes stable and add rather than change:
 *   - startLoad, countOutcomes, acceptedEvents, refusalWindows, refusalReasons, phaseFigures
 *                                   paced many-user ingest that records every answer (202 id + per-user seq)
 *   - analyseDeliveries             lost / duplicates / per-user order of what a receiver got
 *   - readTopicEventIds             every event id in a topic (end offsets decide when reading is done)
 *   - countTopicRecords             records in a topic, from its offsets
 *   - faultKafka, topicPartitions, partitionLeaders, waitForIsrWithout, waitForFullIsr
 *                                   Kafka metadata: pick a victim broker, see it fenced, wait for its recovery
 *   - clusterForFile                a 3-node cluster for the file's tests, and their load and receivers,
 *                                   all stopped after them
 */
import { after, before } from "node:test";
import type { Kafka } from "kafkajs";
import { Agent, request } from "undici";
import { createKafka } from "../../src/kafka/client.ts";
import { type LocalKafka, startLocalKafka } from "../../src/kafka/runner.ts";
import { cleanUp, uniqueName, waitUntil } from "../helpers.ts";
import type { Receiver } from "../receiver.ts";

// ---------------------------------------------------------------------------------------------------------
// The file's cluster

export interface FileCluster {
  /** Set once the file's `before` hook has started it. */
  cluster: LocalKafka | undefined;
  /** The load a test started (stopped after the file). */
  load: Load | undefined;
  /** Receivers a test started (closed after the file). */
  receivers: Receiver[];
}

/**
 * A 3-node KRaft cluster (RF 3, min.insync.replicas=2) started before the file's tests; after them, the load
 * is stopped, the receivers closed and the cluster stopped (gateways have their own after hooks, which run
 * first).
 */
export function clusterForFile(): FileCluster {
  const ctx: FileCluster = { cluster: undefined, load: undefined, receivers: [] };
  before(async () => {
    ctx.cluster = await startLocalKafka({ nodes: 3 });
  });
  after(() =>
    cleanUp(
      () => ctx.load?.stop(),
      ...ctx.receivers.map((r) => () => r.close()),
      () => ctx.cluster?.stop(),
    ),
  );
  return ctx;
}

// ---------------------------------------------------------------------------------------------------------
// Ingest load

/** One POST /api/singleEvent and what came back. */
export interface IngestOutcome {
  userID: string;
  /** Per-user sequence number carried in the payload (`payload.seq`); increases with every request of the user. */
  seq: number;
  /** HTTP status; 0 when the request failed without an answer (connection error, client timeout). */
  status: number;
  /** The event id of a 202. */
  id?: string;
  /** Client clock when the request was sent and when its answer arrived (ms since epoch). */
  sentAt: number;
  answeredAt: number;
  /** Retry-After and problem title and detail of a non-2xx answer, or the client error. */
  retryAfter?: string | null;
  contentType?: string | null;
  title?: string;
  detail?: string;
  error?: string;
}

export interface LoadOptions {
  /** Gateway base URL. */
  url: string;
  /**
   * Several gateways: requests go to them in turn (one user's requests too). The array may be changed while
   * the load runs (a replica killed on purpose leaves it).
   */
  urls?: string[];
  /** Concurrent clients; each sends sequentially (one request in flight). */
  clients: number;
  /** Users per client; a client's users are its own (`<prefix>-c<client>-u<n>`), used round-robin. */
  usersPerClient: number;
  /** Requests per second per client (paced against the start time, so slow answers do not add up). */
  ratePerClient: number;
  userPrefix?: string;
  /** Event type of every event (default "fault.test"). */
  type?: string;
  /** Extra bytes of payload padding per event. */
  paddingBytes?: number;
  /** Client-side timeout per request (default 60 s; the gateway answers within its ack timeout). */
  requestTimeoutMs?: number;
}

export interface Load {
  /** Every answer so far, in the order they arrived. */
  readonly outcomes: IngestOutcome[];
  /** Counts of the outcomes so far. */
  counts(): LoadCounts;
  /** Stops sending; resolves once every client's last request is answered. Idempotent. */
  stop(): Promise<void>;
}

export interface LoadCounts {
  sent: number;
  accepted: number;
  refused: number;
  /** Anything that is neither a 202 with an id nor a 503. */
  other: number;
}

/** Sorts outcomes into accepted (202 with an id), refused (503) and other (anything else). */
export function countOutcomes(outcomes: IngestOutcome[]): LoadCounts {
  let accepted = 0;
  let refused = 0;
  let other = 0;
  for (const o of outcomes) {
    if (o.status === 202 && o.id) accepted++;
    else if (o.status === 503) refused++;
    else other++;
  }
  return { sent: outcomes.length, accepted, refused, other };
}

/** The 202 outcomes (with their ids): the events the gateway promised to deliver. */
export function acceptedEvents(outcomes: IngestOutcome[]): Array<IngestOutcome & { id: string }> {
  return outcomes.filter((o): o is IngestOutcome & { id: string } => o.status === 202 && !!o.id);
}

const header = (value: string | string[] | undefined) => (Array.isArray(value) ? value[0] : value) ?? null;

async function sendOne(
  opts: LoadOptions,
  url: string,
  dispatcher: Agent,
  userID: string,
  seq: number,
  padding: string,
): Promise<IngestOutcome> {
  const sentAt = Date.now();
  const timeout = opts.requestTimeoutMs ?? 60_000;
  try {
    // undici's request, not fetch: a fraction of the CPU per request, so the load generator does not
    // compete with the gateway and three brokers for the machine's cores.
    const res = await request(`${url}/api/singleEvent`, {
      method: "POST",
      dispatcher,
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        userID,
        type: opts.type ?? "fault.test",
        payload: padding ? { seq, padding } : { seq },
      }),
      headersTimeout: timeout,
      bodyTimeout: timeout,
    });
    const text = await res.body.text();
    const status = res.statusCode;
    const outcome: IngestOutcome = { userID, seq, status, sentAt, answeredAt: Date.now() };
    if (status >= 200 && status < 300) {
      try {
        const id = (JSON.parse(text) as { id?: unknown }).id;
        if (typeof id === "string") outcome.id = id;
      } catch {
        // a 2xx without a JSON id stays id-less: countOutcomes calls it "other"
      }
    } else {
      outcome.retryAfter = header(res.headers["retry-after"]);
      outcome.contentType = header(res.headers["content-type"]);
      try {
        const problem = JSON.parse(text) as { title?: unknown; detail?: unknown };
        outcome.title = String(problem.title);
        outcome.detail = String(problem.detail);
      } catch {
        outcome.title = text.slice(0, 200);
      }
    }
    return outcome;
  } catch (err) {
    return { userID, seq, status: 0, sentAt, answeredAt: Date.now(), error: (err as Error).message };
  }
}

/**
 * Paced ingest from many users: `clients` loops, each with its own users, one request in flight at a time,
 * payload `{ seq }` numbered per user. A refused request is not retried (the next one gets the next seq),
 * so per-user order can be checked on the accepted ones alone.
 */
export function startLoad(opts: LoadOptions): Load {
  const outcomes: IngestOutcome[] = [];
  const prefix = opts.userPrefix ?? uniqueName("user");
  const padding = "x".repeat(opts.paddingBytes ?? 0);
  const interval = 1000 / opts.ratePerClient;
  let stopped = false;
  const wake = new Set<() => void>();
  const dispatcher = new Agent({ connections: opts.clients, keepAliveTimeout: 30_000 });
  const clients = Array.from({ length: opts.clients }, async (_, c) => {
    const seqs = new Array<number>(opts.usersPerClient).fill(0);
    const started = Date.now() + (c * interval) / opts.clients; // spread the clients over one interval
    for (let n = 0; !stopped; n++) {
      const due = started + n * interval;
      const wait = due - Date.now();
      if (wait > 0) {
        await new Promise<void>((done) => {
          const timer = setTimeout(() => {
            wake.delete(finish);
            done();
          }, wait);
          const finish = () => {
            clearTimeout(timer);
            done();
          };
          wake.add(finish);
        });
        if (stopped) break;
      }
      const u = n % opts.usersPerClient;
      const seq = (seqs[u] as number) + 1;
      seqs[u] = seq;
      const urls = opts.urls && opts.urls.length > 0 ? opts.urls : [opts.url];
      const url = urls[(n + c) % urls.length] as string;
      outcomes.push(await sendOne(opts, url, dispatcher, `${prefix}-c${c}-u${u}`, seq, padding));
    }
  });
  const all = Promise.all(clients);
  let stopping: Promise<void> | undefined;
  return {
    outcomes,
    counts: () => countOutcomes(outcomes),
    stop() {
      stopping ??= (async () => {
        stopped = true;
        for (const finish of wake) finish();
        await all;
        await dispatcher.close();
      })();
      return stopping;
    },
  };
}

/**
 * Periods in which requests were refused: refusals (by answer time) less than `gapMs` apart belong to one
 * window. Times are seconds since `origin`; `count` is the refusals in the window.
 */
export function refusalWindows(
  outcomes: IngestOutcome[],
  origin: number,
  gapMs = 2000,
): Array<{ from: number; to: number; count: number }> {
  const times = outcomes
    .filter((o) => o.status === 503)
    .map((o) => o.answeredAt)
    .sort((a, b) => a - b);
  const windows: Array<{ from: number; to: number; count: number }> = [];
  for (const at of times) {
    const last = windows.at(-1);
    const t = (at - origin) / 1000;
    if (last && t - last.to <= gapMs / 1000) {
      last.to = t;
      last.count++;
    } else windows.push({ from: t, to: t, count: 1 });
  }
  return windows;
}

/** Refusals counted by the reason in their problem detail (its first clause), most frequent first. */
export function refusalReasons(outcomes: IngestOutcome[]): Array<[string, number]> {
  const counts = new Map<string, number>();
  for (const o of outcomes) {
    if (o.status !== 503) continue;
    const detail = (o.detail ?? o.title ?? "").replace(/^nothing was accepted: /, "");
    const reason = detail.split(/[:;(]/)[0]?.trim() ?? "";
    counts.set(reason, (counts.get(reason) ?? 0) + 1);
  }
  return [...counts].sort((a, b) => b[1] - a[1]);
}

export interface PhaseFigures {
  sent: number;
  accepted: number;
  refused: number;
  other: number;
  /** Answer time of the 202s (ms): median, 99th percentile, maximum; 0 when there were none. */
  p50: number;
  p99: number;
  max: number;
}

/** Counts and 202 latencies of the requests sent in [from, to). */
export function phaseFigures(outcomes: IngestOutcome[], from: number, to: number): PhaseFigures {
  const inPhase = outcomes.filter((o) => o.sentAt >= from && o.sentAt < to);
  const latencies = acceptedEvents(inPhase)
    .map((o) => o.answeredAt - o.sentAt)
    .sort((a, b) => a - b);
  const at = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * q))] ?? 0;
  const { sent, accepted, refused, other } = countOutcomes(inPhase);
  return { sent, accepted, refused, other, p50: at(0.5), p99: at(0.99), max: latencies.at(-1) ?? 0 };
}

// ---------------------------------------------------------------------------------------------------------
// Delivery analysis

/** What a receiver got, as test/receiver.ts records it (`receiver.delivered`: 2xx answers in arrival order). */
export interface DeliveredEvent {
  id: string;
  userID: string;
  payload: unknown;
}

export interface DeliveryReport {
  /** Accepted events. */
  expected: number;
  /** 2xx deliveries in total (duplicates included). */
  deliveries: number;
  /** Accepted events delivered at least once. */
  delivered: number;
  /** Deliveries beyond the first of an event. */
  duplicates: number;
  /** Accepted event ids never delivered. */
  lost: string[];
  /** Delivered ids that no 202 announced (e.g. a 503'd request whose record Kafka did keep). */
  unannounced: number;
  /** "user: seq a before seq b" for each user whose first deliveries are not in acceptance order. */
  orderViolations: string[];
}

/**
 * Compares a receiver's deliveries with the accepted events: lost ones, duplicates, and per-user order —
 * for each user the first deliveries of its accepted events must come in increasing `seq` order.
 */
export function analyseDeliveries(
  accepted: Array<{ id: string; userID: string; seq: number }>,
  deliveries: DeliveredEvent[],
): DeliveryReport {
  const seqOf = new Map<string, number>();
  for (const a of accepted) seqOf.set(a.id, a.seq);
  const seen = new Set<string>();
  const lastSeq = new Map<string, number>();
  const orderViolations: string[] = [];
  let duplicates = 0;
  let unannounced = 0;
  for (const d of deliveries) {
    if (seen.has(d.id)) {
      duplicates++;
      continue;
    }
    seen.add(d.id);
    const seq = seqOf.get(d.id);
    if (seq === undefined) {
      unannounced++;
      continue;
    }
    const last = lastSeq.get(d.userID);
    if (last !== undefined && seq <= last) orderViolations.push(`${d.userID}: seq ${last} before seq ${seq}`);
    lastSeq.set(d.userID, Math.max(seq, last ?? 0));
  }
  const lost = accepted.filter((a) => !seen.has(a.id)).map((a) => a.id);
  return {
    expected: accepted.length,
    deliveries: deliveries.length,
    delivered: accepted.length - lost.length,
    duplicates,
    lost,
    unannounced,
    orderViolations,
  };
}

// ---------------------------------------------------------------------------------------------------------
// Kafka

/** A kafkajs client for the test itself (not the gateway's), with quick retries. */
export function faultKafka(brokers: string[]): Kafka {
  return createKafka({
    brokers,
    clientId: uniqueName("fault-test"),
    overrides: { retry: { initialRetryTime: 200, maxRetryTime: 2000, retries: 8 } },
  });
}

export interface PartitionInfo {
  partition: number;
  leader: number;
  replicas: number[];
  isr: number[];
}

/** The topic's partitions with leader, replicas and ISR, fresh from the cluster. */
export async function topicPartitions(kafka: Kafka, topic: string): Promise<PartitionInfo[]> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const { topics } = await admin.fetchTopicMetadata({ topics: [topic] });
    return (topics[0]?.partitions ?? []).map((p) => ({
      partition: p.partitionId,
      leader: p.leader,
      replicas: p.replicas,
      isr: p.isr,
    }));
  } finally {
    await admin.disconnect().catch(() => {});
  }
}

/** How many partitions of `topic` each broker leads (brokers leading none are absent). */
export async function partitionLeaders(kafka: Kafka, topic: string): Promise<Map<number, number>> {
  const counts = new Map<number, number>();
  for (const p of await topicPartitions(kafka, topic)) counts.set(p.leader, (counts.get(p.leader) ?? 0) + 1);
  return counts;
}

/**
 * Waits until no partition of `topic` lists `nodeId` in its ISR or as leader: the controller has fenced a
 * killed broker (broker.session.timeout.ms) and leadership has moved on.
 */
export async function waitForIsrWithout(
  kafka: Kafka,
  topic: string,
  nodeId: number,
  timeoutMs = 60_000,
): Promise<void> {
  await waitUntil(
    async () => {
      try {
        const partitions = await topicPartitions(kafka, topic);
        return (
          partitions.length > 0 && partitions.every((p) => p.leader !== nodeId && !p.isr.includes(nodeId))
        );
      } catch {
        return false;
      }
    },
    `node ${nodeId} to leave every ISR of ${topic}`,
    timeoutMs,
    250,
  );
}

/** Waits until every partition of each topic has all its replicas in sync (a restarted broker caught up). */
export async function waitForFullIsr(kafka: Kafka, topics: string[], timeoutMs = 90_000): Promise<void> {
  await waitUntil(
    async () => {
      try {
        for (const topic of topics) {
          const partitions = await topicPartitions(kafka, topic);
          if (partitions.length === 0) return false;
          if (partitions.some((p) => p.isr.length < p.replicas.length)) return false;
        }
        return true;
      } catch {
        return false;
      }
    },
    `full ISR of ${topics.join(", ")}`,
    timeoutMs,
    500,
  );
}

/** Records in `topic` (sum of end minus start offsets); more than its distinct ids means duplicate writes. */
export async function countTopicRecords(kafka: Kafka, topic: string): Promise<number> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const offsets = await admin.fetchTopicOffsets(topic);
    return offsets.reduce((sum, o) => sum + Number(o.high) - Number(o.low), 0);
  } finally {
    await admin.disconnect().catch(() => {});
  }
}

/**
 * Every event id (`value.id`) in `topic`, read from the beginning with a throwaway consumer group until
 * each partition's end offset (taken first) is reached.
 */
export async function readTopicEventIds(
  kafka: Kafka,
  topic: string,
  timeoutMs = 60_000,
): Promise<Set<string>> {
  const admin = kafka.admin();
  await admin.connect();
  let ends: Array<{ partition: number; high: string; low: string }>;
  try {
    ends = await admin.fetchTopicOffsets(topic);
  } finally {
    await admin.disconnect().catch(() => {});
  }
  const remaining = new Map<number, number>();
  for (const e of ends) if (Number(e.high) > Number(e.low)) remaining.set(e.partition, Number(e.high) - 1);
  const ids = new Set<string>();
  if (remaining.size === 0) return ids;
  const consumer = kafka.consumer({ groupId: uniqueName("fault-reader"), maxWaitTimeInMs: 200 });
  await consumer.connect();
  try {
    await consumer.subscribe({ topic, fromBeginning: true });
    let timer: NodeJS.Timeout | undefined;
    await new Promise<void>((done, fail) => {
      timer = setTimeout(
        () => fail(new Error(`read ${ids.size} ids of ${topic}; partitions left: ${[...remaining.keys()]}`)),
        timeoutMs,
      );
      void consumer.run({
        eachBatch: async ({ batch, resolveOffset }) => {
          for (const message of batch.messages) {
            try {
              const id = (JSON.parse(message.value?.toString("utf8") ?? "") as { id?: unknown }).id;
              if (typeof id === "string") ids.add(id);
            } catch {
              // not an event: counted by offset only
            }
            resolveOffset(message.offset);
            const last = remaining.get(batch.partition);
            if (last !== undefined && Number(message.offset) >= last) remaining.delete(batch.partition);
          }
          if (remaining.size === 0) done();
        },
      });
    }).finally(() => clearTimeout(timer));
  } finally {
    await consumer.disconnect().catch(() => {});
  }
  return ids;
}
