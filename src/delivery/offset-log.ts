/**
 * What delivery needs from Kafka besides the shared consumer: offsets of member-less groups, the log's ends
 * and reads of one partition from any offset (catch-up readers). src/kafka/log-client.ts implements it.
 */
export interface LogRecord {
  offset: number;
  key: Buffer | null;
  value: Buffer | null;
  timestamp: number;
  /** Record headers (the ingest span's `traceparent`; operational events carry `op`). */
  headers?: Record<string, Buffer | undefined>;
}

export interface FetchResult {
  records: LogRecord[];
  /** Offset to fetch next (last record + 1, or the asked offset when nothing came). */
  next: number;
  highWatermark: number;
  logStartOffset: number;
}

export interface OffsetLog {
  connect(): Promise<void>;
  close(): Promise<void>;
  endOffsets(topic: string): Promise<Map<number, number>>;
  offsetsForTime(topic: string, ms: number): Promise<Map<number, number>>;
  committed(groupId: string, topic: string): Promise<Map<number, number>>;
  committedMany(groupIds: string[], topic: string): Promise<Map<string, Map<number, number>>>;
  commit(
    groupId: string,
    topic: string,
    offsets: Array<{ partition: number; offset: number }>,
  ): Promise<void>;
  fetch(
    topic: string,
    partition: number,
    offset: number,
    opts: { maxBytes: number; maxWaitMs: number },
  ): Promise<FetchResult>;
  deleteGroups(groupIds: string[]): Promise<void>;
}
