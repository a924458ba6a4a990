/**
 * KafkaLog: reads and offset writes that kafkajs's public API lacks, as a thin port over its internals.
 *
 * kafkajs 2.2.4 has no `assign()`, no member-less offset commit and an `admin.setOffsets` that runs a
 * throwaway consumer (≈ 5 s a call). This class takes a kafkajs Cluster built by the given `Kafka`'s own
 * private factory — the same brokers, TLS, SASL, timeouts and retry settings — and sends single requests
 * through kafkajs's Broker objects (their encoders, decoders, version negotiation and connections).
 *
 * kafkajs internals this depends on (checked against 2.2.4, see node_modules/kafkajs/src):
 * - the Kafka instance's own Symbol 'private:Kafka:createCluster' (index.js);
 * - Cluster: connect, disconnect, metadata({topics}), findBroker({nodeId}), findGroupCoordinator({groupId});
 * - Broker: offsetCommit, offsetFetch, listOffsets, fetch, deleteGroups and their decoded response shapes
 *   (protocol/requests/*); records carry `batchContext` (recordBatch/v0/decoder.js); Fetch v11's decoder
 *   names the log start offset `lastStartOffset`;
 * - error objects: KafkaJSProtocolError `type` strings (protocol/error.js) and error class `name`s.
 *
 * Measured (2026-12, local Kafka 4.3.1 runner, 2 shared cores, a scratch script — not a bench target):
 * 1,000 member-less commits to 1,000 groups, one KafkaLog, coordinators cached:
 * - awaited one after another: 430–1,140 ms (≈ 0.4–1.1 ms a commit; 12 partitions a commit: 500–950 ms);
 * - all 1,000 in flight at once: 410–770 ms (12 partitions + 64 B metadata each: 350–1,120 ms);
 * - a fresh KafkaLog, so also 1,000 FindCoordinator lookups: 650–1,360 ms; on a broker whose
 *   `__consumer_offsets` did not exist yet, the very first round took 4.2–4.5 s (the first group request
 *   makes Kafka create that topic; kafkajs's coordinator lookup retries until it is there);
 * - committedMany over 1,000 groups: 270–1,040 ms; deleteGroups of 1,000: 140–190 ms;
 * - fetch: 20,000 records of ≈ 550 B in 20 calls (maxBytes 1 MiB) in 150–400 ms.
 * For comparison, kafkajs's admin.setOffsets took 5.1–5.7 s per group (it runs a throwaway consumer).
 */
import { setTimeout as sleep } from "node:timers/promises";
import type { Kafka } from "kafkajs";
import type { Logger } from "../log.ts";
import { KAFKAJS_CONNECTION_ERRORS, kafkajsCluster } from "./kafkajs-internals.ts";

export interface LogRecord {
  offset: number;
  key: Buffer | null;
  value: Buffer | null;
  timestamp: number;
  /** A header sent more than once keeps its last value. */
  headers: Record<string, Buffer | undefined>;
}

export interface FetchResult {
  records: LogRecord[];
  /**
   * Offset to fetch next: one past the last record batch the broker returned, which is the last record + 1,
   * or further when the response ended in control or aborted records (so a reader never loops on them);
   * the asked offset when nothing came back.
   */
  next: number;
  highWatermark: number;
  /** -1 when the broker did not say. */
  logStartOffset: number;
}

/** A failed Kafka operation; `kafkaError` is Kafka's error name (e.g. NOT_COORDINATOR_FOR_GROUP) when known. */
export class KafkaLogError extends Error {
  readonly kafkaError: string | undefined;
  constructor(message: string, kafkaError?: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "KafkaLogError";
    this.kafkaError = kafkaError;
  }
}

/** The group has live members (a running consumer): a member-less commit or delete is refused. */
export class GroupNotEmptyError extends KafkaLogError {
  readonly groupId: string;
  constructor(groupId: string, action: string, kafkaError: string, options?: ErrorOptions) {
    super(
      `group "${groupId}" has active members: Kafka refused the ${action} with ${kafkaError}` +
        " (stop the group's consumers first)",
      kafkaError,
      options,
    );
    this.name = "GroupNotEmptyError";
    this.groupId = groupId;
  }
}

export class OffsetOutOfRangeError extends KafkaLogError {
  readonly topic: string;
  readonly partition: number;
  readonly offset: number;
  readonly logStartOffset: number | undefined;
  readonly highWatermark: number | undefined;
  constructor(topic: string, partition: number, offset: number, range: { start?: number; end?: number }) {
    const known = range.start !== undefined && range.end !== undefined;
    super(
      `offset ${offset} is out of range for ${topic}/${partition}` +
        (known ? ` (log holds ${range.start}..${range.end})` : ""),
      "OFFSET_OUT_OF_RANGE",
    );
    this.name = "OffsetOutOfRangeError";
    this.topic = topic;
    this.partition = partition;
    this.offset = offset;
    this.logStartOffset = range.start;
    this.highWatermark = range.end;
  }
}

// ---- the slice of kafkajs internals used here ----

interface RawRecord {
  offset: string;
  timestamp: string;
  key: Buffer | null;
  value: Buffer | null;
  headers: Record<string, Buffer | Buffer[] | null | undefined>;
  isControlRecord: boolean;
  batchContext?: { firstOffset: string; lastOffsetDelta: number; producerId: string; inTransaction: boolean };
}

interface RawFetchPartition {
  partition: number;
  highWatermark: string;
  lastStartOffset?: string;
  logStartOffset?: string;
  abortedTransactions?: Array<{ producerId: string; firstOffset: string }>;
  messages: RawRecord[];
}

interface TopicPartitions<P> {
  topic: string;
  partitions: P[];
}

interface InternalBroker {
  nodeId: number | string | null;
  disconnect(): Promise<void>;
  offsetCommit(req: {
    groupId: string;
    groupGenerationId: number;
    memberId: string;
    topics: TopicPartitions<{ partition: number; offset: string; metadata: string | null }>[];
  }): Promise<unknown>;
  offsetFetch(req: { groupId: string; topics: TopicPartitions<{ partition: number }>[] }): Promise<{
    responses: TopicPartitions<{ partition: number; offset: string }>[];
  }>;
  listOffsets(req: {
    isolationLevel: number;
    topics: TopicPartitions<{ partition: number; timestamp: number }>[];
  }): Promise<{ responses: TopicPartitions<{ partition: number; offset: string }>[] }>;
  fetch(req: {
    isolationLevel: number;
    maxWaitTime: number;
    minBytes: number;
    maxBytes: number;
    topics: TopicPartitions<{ partition: number; fetchOffset: string; maxBytes: number }>[];
  }): Promise<{ responses: Array<{ topicName: string; partitions: RawFetchPartition[] }> }>;
  deleteGroups(groupIds: string[]): Promise<{ results: Array<{ groupId: string; error?: unknown }> }>;
}

interface InternalCluster {
  connect(): Promise<void>;
  disconnect(): Promise<void>;
  metadata(opts: { topics: string[] }): Promise<{
    topicMetadata: Array<{
      topic: string;
      partitionMetadata: Array<{ partitionId: number; leader: number }>;
    }>;
  }>;
  findBroker(opts: { nodeId: number }): Promise<InternalBroker>;
  findGroupCoordinator(opts: { groupId: string }): Promise<InternalBroker>;
}

const READ_UNCOMMITTED = 0;
const READ_COMMITTED = 1;
const LATEST = -1;
const EARLIEST = -2;

/** Kafka's error name of a kafkajs error (or of ours), else the error class name. */
function errorType(err: unknown): string {
  const e = err as { type?: unknown; kafkaError?: unknown; name?: unknown } | null;
  if (e && typeof e.type === "string") return e.type;
  if (e && typeof e.kafkaError === "string") return e.kafkaError;
  if (e && typeof e.name === "string") return e.name;
  return "UnknownError";
}

/** A Fetch response's partition as a FetchResult, from the asked `offset` on. */
function fetchResultOf(data: RawFetchPartition, offset: number): FetchResult {
  let next = offset;
  for (const m of data.messages) {
    const batch = m.batchContext;
    const end = batch ? Number(batch.firstOffset) + batch.lastOffsetDelta : Number(m.offset);
    if (end + 1 > next) next = end + 1;
  }
  const records = withoutAborted(data.messages, data.abortedTransactions)
    .filter((m) => !m.isControlRecord && Number(m.offset) >= offset)
    .map(toRecord);
  return {
    records,
    next,
    highWatermark: Number(data.highWatermark),
    logStartOffset: Number(data.logStartOffset ?? data.lastStartOffset ?? -1),
  };
}

function describe(err: unknown): string {
  return `${errorType(err)}: ${err instanceof Error ? err.message : String(err)}`;
}

const COORDINATOR_ERRORS = new Set([
  "NOT_COORDINATOR_FOR_GROUP",
  "GROUP_COORDINATOR_NOT_AVAILABLE",
  "GROUP_LOAD_IN_PROGRESS",
  // The request reached no usable broker: refresh what we cached and try again.
  ...KAFKAJS_CONNECTION_ERRORS,
]);
const LEADER_ERRORS = new Set([
  "NOT_LEADER_FOR_PARTITION",
  "UNKNOWN_TOPIC_OR_PARTITION",
  "LEADER_NOT_AVAILABLE",
  "FENCED_LEADER_EPOCH",
  "UNKNOWN_LEADER_EPOCH",
  // The request reached no usable broker: refresh what we cached and try again.
  ...KAFKAJS_CONNECTION_ERRORS,
]);
// What Kafka answers a generation −1, member-less request when the group has members (ClassicGroup).
const HAS_MEMBERS_ERRORS = new Set(["UNKNOWN_MEMBER_ID", "ILLEGAL_GENERATION", "REBALANCE_IN_PROGRESS"]);

const COORDINATOR_ATTEMPTS = 5;
const IN_FLIGHT_GROUPS = 32;

/** Runs `work` over `items` with at most `limit` in flight; the first failure rejects (the rest stop taking items). */
async function eachLimited<T>(items: T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failed = false;
  const worker = async () => {
    while (!failed && next < items.length) {
      const item = items[next++] as T;
      try {
        await work(item);
      } catch (err) {
        failed = true;
        throw err;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

/** kafkajs's own rule (consumer/filterAbortedMessages.js): drop records of aborted transactions. */
function withoutAborted(
  messages: RawRecord[],
  aborted: RawFetchPartition["abortedTransactions"],
): RawRecord[] {
  if (!aborted || aborted.length === 0) return messages;
  const remaining = [...aborted].sort((a, b) => Number(a.firstOffset) - Number(b.firstOffset));
  const abortedProducers = new Set<string>();
  return messages.filter((m) => {
    const first = remaining[0];
    if (first && Number(m.offset) >= Number(first.firstOffset)) {
      abortedProducers.add(first.producerId);
      remaining.shift();
    }
    const producerId = m.batchContext?.producerId ?? "";
    const isAbortMarker = m.isControlRecord && m.key?.equals(ABORT_MARKER_KEY) === true;
    if (isAbortMarker) {
      abortedProducers.delete(producerId);
      return true;
    }
    return !(abortedProducers.has(producerId) && m.batchContext?.inTransaction);
  });
}
const ABORT_MARKER_KEY = Buffer.from([0, 0, 0, 0]);

function toRecord(m: RawRecord): LogRecord {
  const headers: Record<string, Buffer | undefined> = {};
  for (const [name, value] of Object.entries(m.headers ?? {})) {
    headers[name] = (Array.isArray(value) ? value[value.length - 1] : value) ?? undefined;
  }
  return { offset: Number(m.offset), key: m.key, value: m.value, timestamp: Number(m.timestamp), headers };
}

export class KafkaLog {
  #cluster: InternalCluster;
  #logger: Logger | undefined;
  /** groupId → coordinator node id; the coordinator of a group only moves when `__consumer_offsets` does. */
  #coordinators = new Map<string, Promise<number>>();
  /** topic → partition → leader node id, refreshed only after a leader or connection error. */
  #leaders = new Map<string, Promise<Map<number, number>>>();
  #closed = false;
  #brokers = new Set<InternalBroker>();
  #connecting: Promise<void> | undefined;
  #fetchLanes = new Map<number, Promise<void>>();
  #closing: Promise<void> | undefined;

  constructor(kafka: Kafka, opts: { logger?: Logger } = {}) {
    this.#cluster = kafkajsCluster<InternalCluster>(
      kafka,
      "KafkaLog (src/kafka/log-client.ts)",
      READ_COMMITTED,
    );
    this.#logger = opts.logger?.child({ component: "kafka-log" });
  }

  /** Connects (every call connects on its own first; this only lets a caller fail early). */
  async connect(): Promise<void> {
    this.#assertOpen();
    this.#connecting ??= this.#cluster.connect().catch((err: unknown) => {
      this.#connecting = undefined;
      throw err;
    });
    await this.#connecting;
  }

  /** Closes the connections; later calls (and calls after it) are no-ops or fail clearly. */
  async close(): Promise<void> {
    this.#closed = true;
    // Every broker object handed out is disconnected too: kafkajs's pool forgets the ones a metadata refresh
    // replaced, and a fetch connection opened by a request in flight at close time would stay open.
    // A connect still under way would finish after the disconnect and leave its socket open: wait for it.
    this.#closing ??= (async () => {
      await this.#connecting?.catch(() => {});
      await this.#cluster.disconnect();
      await Promise.all([...this.#brokers].map((b) => b.disconnect().catch(() => {})));
    })();
    await this.#closing;
  }

  /**
   * Runs fetches to one broker one at a time. kafkajs opens a broker's fetch connection on the first fetch,
   * and concurrent first fetches each open a socket of which it keeps only the last (the others leak, and
   * hold the process open). The broker answers the requests of one connection in order anyway, so this
   * costs no parallelism.
   */
  #oneFetchAt<T>(nodeId: number, fetch: () => Promise<T>): Promise<T> {
    const previous = this.#fetchLanes.get(nodeId) ?? Promise.resolve();
    const run = previous.then(() => {
      this.#assertOpen();
      return fetch();
    });
    const settled = run.then(
      () => {},
      () => {},
    );
    this.#fetchLanes.set(nodeId, settled);
    void settled.then(() => {
      if (this.#fetchLanes.get(nodeId) === settled) this.#fetchLanes.delete(nodeId);
    });
    return run;
  }

  /** The broker object of a node, remembered so close() can disconnect it. */
  async #broker(nodeId: number): Promise<InternalBroker> {
    const broker = await this.#cluster.findBroker({ nodeId });
    this.#brokers.add(broker);
    return broker;
  }

  /** High watermark (next offset to be written) per partition. */
  async endOffsets(topic: string): Promise<Map<number, number>> {
    return this.#listOffsets(topic, () => LATEST);
  }

  /** First offset still in the log per partition. */
  async startOffsets(topic: string): Promise<Map<number, number>> {
    return this.#listOffsets(topic, () => EARLIEST);
  }

  /** Per partition the first offset whose timestamp ≥ ms (ListOffsets by time), or the end offset when none. */
  async offsetsForTime(topic: string, ms: number): Promise<Map<number, number>> {
    const found = await this.#listOffsets(topic, () => ms);
    if ([...found.values()].some((o) => o < 0)) {
      const ends = await this.endOffsets(topic);
      for (const [partition, offset] of found) {
        if (offset < 0) found.set(partition, ends.get(partition) ?? 0);
      }
    }
    return found;
  }

  /** Committed offsets ("next offset to read") of one group for a topic; partitions without a commit are absent. */
  async committed(groupId: string, topic: string): Promise<Map<number, number>> {
    const partitions = [...(await this.#partitionLeaders(topic)).keys()].map((partition) => ({ partition }));
    try {
      const { responses } = await this.#onCoordinator(groupId, (broker) =>
        broker.offsetFetch({ groupId, topics: [{ topic, partitions }] }),
      );
      const out = new Map<number, number>();
      for (const t of responses) {
        if (t.topic !== topic) continue;
        for (const p of t.partitions) {
          const offset = Number(p.offset);
          if (offset >= 0) out.set(p.partition, offset);
        }
      }
      return out;
    } catch (err) {
      throw new KafkaLogError(
        `reading offsets of group "${groupId}" failed: ${describe(err)}`,
        errorType(err),
        {
          cause: err,
        },
      );
    }
  }

  /** `committed` for many groups, at most 32 in flight; one failing group rejects the whole call. */
  async committedMany(groupIds: string[], topic: string): Promise<Map<string, Map<number, number>>> {
    const out = new Map<string, Map<number, number>>();
    await eachLimited([...new Set(groupIds)], IN_FLIGHT_GROUPS, async (groupId) => {
      out.set(groupId, await this.committed(groupId, topic));
    });
    return out;
  }

  /**
   * OffsetCommit as a member-less group (generation −1, empty member id — what the Java consumer does after
   * `assign()`). Offsets are "next offset to read". Rejects with GroupNotEmptyError when the group has live
   * members. Retries coordinator moves and loads (re-finding the coordinator) up to 5 attempts.
   *
   * Kafka expires such offsets `offsets.retention.minutes` (default 7 days) after their last commit, even
   * while the gateway is running: re-commit every partition well within that time.
   */
  async commit(
    groupId: string,
    topic: string,
    offsets: Array<{ partition: number; offset: number; metadata?: string }>,
  ): Promise<void> {
    if (offsets.length === 0) return;
    for (const { partition, offset } of offsets) {
      if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isInteger(partition) || partition < 0) {
        throw new RangeError(`invalid offset ${offset} for ${topic}/${partition}`);
      }
    }
    const partitions = offsets.map((o) => ({
      partition: o.partition,
      offset: String(o.offset),
      metadata: o.metadata ?? null,
    }));
    try {
      await this.#onCoordinator(groupId, (broker) =>
        broker.offsetCommit({
          groupId,
          groupGenerationId: -1,
          memberId: "",
          topics: [{ topic, partitions }],
        }),
      );
    } catch (err) {
      const type = errorType(err);
      if (HAS_MEMBERS_ERRORS.has(type)) {
        throw new GroupNotEmptyError(groupId, "member-less offset commit", type, { cause: err });
      }
      throw new KafkaLogError(`offset commit of group "${groupId}" failed: ${describe(err)}`, type, {
        cause: err,
      });
    }
  }

  /**
   * Fetches one partition from `offset`, from its leader (read_committed). Records below `offset` in the
   * first batch, control records and aborted transactional records are dropped. After a leader or
   * connection error the partition's leader is looked up again and the fetch is tried once more.
   */
  async fetch(
    topic: string,
    partition: number,
    offset: number,
    opts: { maxBytes: number; maxWaitMs: number; minBytes?: number },
  ): Promise<FetchResult> {
    const response = await this.#onLeaders(topic, async (leaders) => {
      const nodeId = leaders.get(partition);
      if (nodeId === undefined) {
        throw new KafkaLogError(`${topic} has no partition ${partition}`, "UNKNOWN_TOPIC_OR_PARTITION");
      }
      const broker = await this.#broker(nodeId);
      this.#assertOpen();
      try {
        return await this.#oneFetchAt(nodeId, () =>
          broker.fetch({
            isolationLevel: READ_COMMITTED,
            maxWaitTime: opts.maxWaitMs,
            minBytes: opts.minBytes ?? 1,
            maxBytes: opts.maxBytes,
            topics: [
              { topic, partitions: [{ partition, fetchOffset: String(offset), maxBytes: opts.maxBytes }] },
            ],
          }),
        );
      } catch (err) {
        if (errorType(err) === "OFFSET_OUT_OF_RANGE") throw await this.#outOfRange(topic, partition, offset);
        throw err;
      }
    });
    const data = response.responses
      .find((t) => t.topicName === topic)
      ?.partitions.find((p) => p.partition === partition);
    if (!data) throw new KafkaLogError(`fetch response for ${topic}/${partition} has no data for it`);
    return fetchResultOf(data, offset);
  }

  /**
   * One Fetch per leader broker for many partitions of many topics at once (the shared-state view reads
   * every partition of its topics in one long poll per broker). The requests to different brokers run in
   * parallel. A partition whose offset is out of range fails the whole call with OffsetOutOfRangeError
   * naming it (Kafka's answer carries no data for the others worth keeping); a leader error refreshes the
   * topics' metadata for the next call and is thrown.
   */
  async fetchMany(
    positions: ReadonlyArray<{ topic: string; partition: number; offset: number }>,
    opts: { maxBytes: number; maxBytesPerPartition: number; maxWaitMs: number },
  ): Promise<Array<FetchResult & { topic: string; partition: number }>> {
    const topics = [...new Set(positions.map((p) => p.topic))];
    const leaders = new Map<string, Map<number, number>>();
    for (const topic of topics) leaders.set(topic, await this.#partitionLeaders(topic));
    this.#assertOpen();
    const byNode = new Map<number, Array<{ topic: string; partition: number; offset: number }>>();
    for (const p of positions) {
      const nodeId = leaders.get(p.topic)?.get(p.partition);
      if (nodeId === undefined) {
        throw new KafkaLogError(`${p.topic} has no partition ${p.partition}`, "UNKNOWN_TOPIC_OR_PARTITION");
      }
      byNode.set(nodeId, [...(byNode.get(nodeId) ?? []), p]);
    }
    try {
      const parts = await Promise.all(
        [...byNode].map(async ([nodeId, wanted]) => {
          const broker = await this.#broker(nodeId);
          this.#assertOpen();
          const perTopic = new Map<
            string,
            Array<{ partition: number; fetchOffset: string; maxBytes: number }>
          >();
          for (const w of wanted) {
            perTopic.set(w.topic, [
              ...(perTopic.get(w.topic) ?? []),
              { partition: w.partition, fetchOffset: String(w.offset), maxBytes: opts.maxBytesPerPartition },
            ]);
          }
          const response = await this.#oneFetchAt(nodeId, () =>
            broker.fetch({
              isolationLevel: READ_COMMITTED,
              maxWaitTime: opts.maxWaitMs,
              minBytes: 1,
              maxBytes: opts.maxBytes,
              topics: [...perTopic].map(([topic, partitions]) => ({ topic, partitions })),
            }),
          );
          return wanted.map((w) => {
            // kafkajs shuffles the partitions (KIP-74) and lists a topic once per run of them: look in all.
            const data = response.responses
              .filter((t) => t.topicName === w.topic)
              .flatMap((t) => t.partitions)
              .find((p) => p.partition === w.partition);
            if (!data) {
              throw new KafkaLogError(`fetch response for ${w.topic}/${w.partition} has no data for it`);
            }
            return { topic: w.topic, partition: w.partition, ...fetchResultOf(data, w.offset) };
          });
        }),
      );
      return parts.flat();
    } catch (err) {
      const type = errorType(err);
      if (type === "OFFSET_OUT_OF_RANGE") {
        const { topic, partition } = err as { topic?: string; partition?: number };
        const at = positions.find((p) => p.topic === topic && p.partition === partition);
        if (topic !== undefined && partition !== undefined && at) {
          throw await this.#outOfRange(topic, partition, at.offset);
        }
      }
      if (LEADER_ERRORS.has(type)) for (const topic of topics) this.#leaders.delete(topic);
      throw err;
    }
  }

  /** Deletes groups (admin DeleteGroups); a group that does not exist counts as deleted. */
  async deleteGroups(groupIds: string[]): Promise<void> {
    let pending = [...new Set(groupIds)];
    for (let attempt = 1; pending.length > 0; attempt++) {
      const byNode = new Map<number, string[]>();
      await eachLimited(pending, IN_FLIGHT_GROUPS, async (groupId) => {
        const nodeId = await this.#coordinatorNode(groupId);
        byNode.set(nodeId, [...(byNode.get(nodeId) ?? []), groupId]);
      });
      const retry: string[] = [];
      let lastError: unknown;
      await Promise.all(
        [...byNode].map(async ([nodeId, ids]) => {
          let results: Array<{ groupId: string; error?: unknown }>;
          try {
            this.#assertOpen();
            results = (await (await this.#broker(nodeId)).deleteGroups(ids)).results;
          } catch (err) {
            if (!COORDINATOR_ERRORS.has(errorType(err))) throw err;
            results = ids.map((groupId) => ({ groupId, error: err }));
          }
          for (const { groupId, error } of results) {
            const type = error ? errorType(error) : undefined;
            if (type === undefined || type === "GROUP_ID_NOT_FOUND") continue;
            if (type === "NON_EMPTY_GROUP") throw new GroupNotEmptyError(groupId, "group deletion", type);
            if (!COORDINATOR_ERRORS.has(type)) {
              throw new KafkaLogError(`deleting group "${groupId}" failed: ${describe(error)}`, type);
            }
            this.#coordinators.delete(groupId);
            retry.push(groupId);
            lastError = error;
          }
        }),
      );
      if (retry.length > 0 && attempt >= COORDINATOR_ATTEMPTS) {
        throw new KafkaLogError(
          `deleting ${retry.length} group(s) failed after ${attempt} attempts: ${describe(lastError)}`,
          errorType(lastError),
        );
      }
      if (retry.length > 0) await sleep(backoffMs(attempt));
      pending = retry;
    }
  }

  #assertOpen(): void {
    if (this.#closed) throw new Error("KafkaLog is closed");
  }

  #coordinatorNode(groupId: string): Promise<number> {
    this.#assertOpen();
    let node = this.#coordinators.get(groupId);
    if (!node) {
      node = this.connect()
        .then(() => this.#cluster.findGroupCoordinator({ groupId }))
        .then((broker) => {
          if (broker.nodeId === null)
            throw new KafkaLogError(`coordinator of group "${groupId}" has no node id`);
          return Number(broker.nodeId);
        });
      this.#coordinators.set(groupId, node);
      node.catch(() => {
        if (this.#coordinators.get(groupId) === node) this.#coordinators.delete(groupId);
      });
    }
    return node;
  }

  /** Runs `run` on the group's (cached) coordinator; on a coordinator move or load, forgets it and retries. */
  async #onCoordinator<T>(groupId: string, run: (broker: InternalBroker) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        const nodeId = await this.#coordinatorNode(groupId);
        // Checked again after every wait: a call finishing after close() must not reconnect the cluster.
        this.#assertOpen();
        const broker = await this.#broker(nodeId);
        this.#assertOpen();
        return await run(broker);
      } catch (err) {
        const type = errorType(err);
        if (!COORDINATOR_ERRORS.has(type) || attempt >= COORDINATOR_ATTEMPTS) throw err;
        this.#logger?.debug(
          { groupId, attempt, error: type },
          "coordinator request failed; finding it again",
        );
        this.#coordinators.delete(groupId);
        await sleep(backoffMs(attempt));
      }
    }
  }

  #partitionLeaders(topic: string): Promise<Map<number, number>> {
    this.#assertOpen();
    let leaders = this.#leaders.get(topic);
    if (!leaders) {
      leaders = this.connect()
        .then(() => this.#cluster.metadata({ topics: [topic] }))
        .then(({ topicMetadata }) => {
          const meta = topicMetadata.find((t) => t.topic === topic);
          if (!meta) throw new KafkaLogError(`topic ${topic} not found`, "UNKNOWN_TOPIC_OR_PARTITION");
          return new Map(meta.partitionMetadata.map((p) => [p.partitionId, p.leader]));
        });
      this.#leaders.set(topic, leaders);
      leaders.catch(() => {
        if (this.#leaders.get(topic) === leaders) this.#leaders.delete(topic);
      });
    }
    return leaders;
  }

  /** Runs `run` with the topic's cached leaders; after a leader or connection error, once more with fresh ones. */
  async #onLeaders<T>(topic: string, run: (leaders: Map<number, number>) => Promise<T>): Promise<T> {
    const cached = this.#partitionLeaders(topic);
    try {
      const leaders = await cached;
      this.#assertOpen();
      return await run(leaders);
    } catch (err) {
      const type = errorType(err);
      if (!LEADER_ERRORS.has(type)) throw err;
      this.#logger?.debug({ topic, error: type }, "leader request failed; refreshing metadata");
      if (this.#leaders.get(topic) === cached) this.#leaders.delete(topic);
      const leaders = await this.#partitionLeaders(topic);
      this.#assertOpen();
      return await run(leaders);
    }
  }

  async #listOffsets(topic: string, timestamp: (partition: number) => number): Promise<Map<number, number>> {
    return this.#onLeaders(topic, async (leaders) => {
      const byNode = new Map<number, number[]>();
      for (const [partition, nodeId] of leaders)
        byNode.set(nodeId, [...(byNode.get(nodeId) ?? []), partition]);
      const out = new Map<number, number>();
      await Promise.all(
        [...byNode].map(async ([nodeId, partitions]) => {
          const broker = await this.#broker(nodeId);
          this.#assertOpen();
          const { responses } = await broker.listOffsets({
            // The high watermark, not the last stable offset (they differ only while a transaction is open).
            isolationLevel: READ_UNCOMMITTED,
            topics: [
              {
                topic,
                partitions: partitions.map((partition) => ({ partition, timestamp: timestamp(partition) })),
              },
            ],
          });
          for (const t of responses) {
            for (const p of t.partitions) out.set(p.partition, Number(p.offset));
          }
        }),
      );
      return out;
    });
  }

  async #outOfRange(topic: string, partition: number, offset: number): Promise<OffsetOutOfRangeError> {
    const [start, end] = await Promise.all([
      this.startOffsets(topic).then((m) => m.get(partition)),
      this.endOffsets(topic).then((m) => m.get(partition)),
    ]).catch(() => [undefined, undefined]);
    return new OffsetOutOfRangeError(topic, partition, offset, { start, end });
  }
}

function backoffMs(attempt: number): number {
  return Math.min(100 * 2 ** (attempt - 1), 1000) * (0.8 + Math.random() * 0.4);
}
