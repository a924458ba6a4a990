/**
 * Kafka's produce path on the wire: a RecordBatch (magic 2) of an idempotent producer, the Produce request
 * body (v3–v7) that carries such batches, and that request's response.
 *
 * Why our own: kafkajs 2.2.4 encodes each record through three fresh zero-filled 512-byte `Encoder`s (the
 * record and each header), its varlongs through an emulated 64-bit `Long`, and its CRC32C a byte at a time.
 * On the producer thread that was most of the 34–39 µs per ingested event (bench/README.md "Issue 16").
 * Here a batch is sized first and written into one buffer; the checksum reads 8 bytes a step.
 *
 * Formats: https://kafka.apache.org/documentation/#recordbatch and the Produce request/response schemas
 * (clients/src/main/resources/common/message/Produce{Request,Response}.json). Versions 3–7 share one request
 * layout; 5–7 add `log_start_offset` to each partition of the response. v8 adds record errors, v9 is flexible.
 */
import type { Message } from "./sink.ts";

// ---- CRC32C (Castagnoli), slicing-by-8 ----

const CASTAGNOLI = 0x82f63b78;
const CRC_TABLE = (() => {
  const t = new Int32Array(8 * 256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ CASTAGNOLI : c >>> 1;
    t[n] = c;
  }
  for (let n = 0; n < 256; n++) {
    let c = t[n] as number;
    for (let k = 1; k < 8; k++) {
      c = (t[c & 0xff] as number) ^ (c >>> 8);
      t[k * 256 + n] = c;
    }
  }
  return t;
})();

/**
 * CRC32C of `buf[start, end)`, as an unsigned 32-bit number.
 *
 * The bytes that do not fill a step of 8 go first, and the 8-byte loop is a function of its own that returns
 * straight after its loop. The first call of a process is a long one, so V8 compiles the loop on the stack
 * (OSR) before any code after it has run; code after the loop without type feedback then deoptimized on
 * every later call that entered the loop's compiled code (≈ 100 deopts a second at 5,000 events/s, seen
 * with `--trace-deopt`).
 */
export function crc32c(buf: Uint8Array, start = 0, end = buf.length): number {
  const t = CRC_TABLE;
  let crc = -1;
  let i = start;
  const head = start + ((end - start) & 7);
  for (; i < head; i++) crc = (t[(crc ^ (buf[i] as number)) & 0xff] as number) ^ (crc >>> 8);
  crc = crcSteps(t, buf, crc, i, end);
  return ~crc >>> 0;
}

/** The slicing-by-8 steps over `buf[i, end)`, whose length is a multiple of 8. */
function crcSteps(t: Int32Array, buf: Uint8Array, crc: number, i: number, end: number): number {
  for (; i < end; i += 8) {
    crc ^=
      (buf[i] as number) |
      ((buf[i + 1] as number) << 8) |
      ((buf[i + 2] as number) << 16) |
      ((buf[i + 3] as number) << 24);
    crc =
      (t[1792 + (crc & 0xff)] as number) ^
      (t[1536 + ((crc >>> 8) & 0xff)] as number) ^
      (t[1280 + ((crc >>> 16) & 0xff)] as number) ^
      (t[1024 + (crc >>> 24)] as number) ^
      (t[768 + (buf[i + 4] as number)] as number) ^
      (t[512 + (buf[i + 5] as number)] as number) ^
      (t[256 + (buf[i + 6] as number)] as number) ^
      (t[buf[i + 7] as number] as number);
  }
  return crc;
}

// ---- varints (zigzag, as records use them) ----

function zigzag(n: number): number {
  return ((n << 1) ^ (n >> 31)) >>> 0;
}

function varintSize(n: number): number {
  const z = zigzag(n);
  return z < 0x80 ? 1 : z < 0x4000 ? 2 : z < 0x200000 ? 3 : z < 0x10000000 ? 4 : 5;
}

function writeVarint(buf: Buffer, at: number, n: number): number {
  let z = zigzag(n);
  while (z >= 0x80) {
    buf[at++] = (z & 0x7f) | 0x80;
    z >>>= 7;
  }
  buf[at++] = z;
  return at;
}

function byteLength(v: string | Uint8Array): number {
  return typeof v === "string" ? Buffer.byteLength(v) : v.length;
}

function writeBytes(buf: Buffer, at: number, v: string | Uint8Array, length: number): number {
  if (typeof v === "string") buf.write(v, at);
  else buf.set(v, at);
  return at + length;
}

// ---- RecordBatch ----

export interface BatchProducer {
  producerId: bigint;
  producerEpoch: number;
}

/** Offsets inside a RecordBatch (v2) header. */
const LENGTH_AT = 8;
const MAGIC_AT = 16;
const CRC_AT = 17;
const ATTRIBUTES_AT = 21;
const HEADER_SIZE = 61;

/** Byte lengths gathered by the sizing pass, read back by the writing pass (grown as needed, reused). */
let lengths = new Int32Array(1024);

/**
 * One RecordBatch (magic 2, no compression, CreateTime `timestamp` for every record) of an idempotent
 * producer, records numbered from `baseSequence`. Keys and values are written as UTF-8 (strings) or as is.
 */
export function encodeRecordBatch(
  messages: readonly Message[],
  producer: BatchProducer,
  baseSequence: number,
  timestamp: number,
): Buffer {
  // Sizing pass: per record its body size, key and value lengths, and per header its name and value lengths.
  let need = messages.length * 3;
  for (const m of messages) if (m.headers) for (const _ in m.headers) need += 2;
  if (lengths.length < need) lengths = new Int32Array(Math.max(need, lengths.length * 2));
  const len = lengths;
  let l = 0;
  let recordsSize = 0;
  for (let i = 0; i < messages.length; i++) {
    const m = messages[i] as Message;
    const at = l;
    l += 3;
    const keyLength = m.key === null ? -1 : byteLength(m.key);
    const valueLength = m.value === null ? -1 : byteLength(m.value);
    // attributes (1), timestampDelta 0 (1), offsetDelta
    let body = 2 + varintSize(i);
    body += varintSize(keyLength) + Math.max(keyLength, 0);
    body += varintSize(valueLength) + Math.max(valueLength, 0);
    let headerCount = 0;
    const headers = m.headers;
    if (headers) {
      for (const name in headers) {
        const nameLength = Buffer.byteLength(name);
        const valueBytes = byteLength(headers[name] as string | Buffer);
        len[l++] = nameLength;
        len[l++] = valueBytes;
        body += varintSize(nameLength) + nameLength + varintSize(valueBytes) + valueBytes;
        headerCount++;
      }
    }
    body += varintSize(headerCount);
    len[at] = body;
    len[at + 1] = keyLength;
    len[at + 2] = valueLength;
    recordsSize += varintSize(body) + body;
  }

  const buf = Buffer.allocUnsafe(HEADER_SIZE + recordsSize);
  buf.writeBigInt64BE(0n, 0); // baseOffset: the broker assigns offsets
  buf.writeInt32BE(buf.length - 12, LENGTH_AT); // batchLength: the bytes after this field
  buf.writeInt32BE(-1, 12); // partitionLeaderEpoch: set by the broker
  buf[MAGIC_AT] = 2;
  buf.writeInt16BE(0, ATTRIBUTES_AT); // no compression, CreateTime, not transactional, not control
  buf.writeInt32BE(messages.length - 1, 23); // lastOffsetDelta
  buf.writeBigInt64BE(BigInt(timestamp), 27); // baseTimestamp
  buf.writeBigInt64BE(BigInt(timestamp), 35); // maxTimestamp
  buf.writeBigInt64BE(producer.producerId, 43);
  buf.writeInt16BE(producer.producerEpoch, 51);
  buf.writeInt32BE(baseSequence, 53);
  buf.writeInt32BE(messages.length, 57);

  let at = HEADER_SIZE;
  l = 0;
  for (let i = 0; i < messages.length; i++) {
    const m = messages[i] as Message;
    const body = len[l] as number;
    const keyLength = len[l + 1] as number;
    const valueLength = len[l + 2] as number;
    l += 3;
    at = writeVarint(buf, at, body);
    buf[at++] = 0; // attributes
    buf[at++] = 0; // timestampDelta
    at = writeVarint(buf, at, i); // offsetDelta
    at = writeVarint(buf, at, keyLength);
    if (m.key !== null) at = writeBytes(buf, at, m.key, keyLength);
    at = writeVarint(buf, at, valueLength);
    if (m.value !== null) at = writeBytes(buf, at, m.value, valueLength);
    const headers = m.headers;
    if (!headers) {
      buf[at++] = 0;
      continue;
    }
    const countAt = at;
    let headerCount = 0;
    for (const _ in headers) headerCount++;
    at = writeVarint(buf, countAt, headerCount);
    for (const name in headers) {
      const nameLength = len[l++] as number;
      const valueBytes = len[l++] as number;
      at = writeVarint(buf, at, nameLength);
      at += buf.write(name, at);
      at = writeVarint(buf, at, valueBytes);
      at = writeBytes(buf, at, headers[name] as string | Buffer, valueBytes);
    }
  }
  if (at !== buf.length) throw new Error(`RecordBatch size mismatch: wrote ${at} of ${buf.length} bytes`);
  buf.writeUInt32BE(crc32c(buf, ATTRIBUTES_AT, buf.length), CRC_AT);
  return buf;
}

// ---- Produce request and response ----

export interface ProduceTopic {
  topic: string;
  partitions: Array<{ partition: number; batch: Buffer }>;
}

/** The body of a Produce request (v3–v7; after the request header): no transactional id. */
export function encodeProduceRequest(
  acks: number,
  timeoutMs: number,
  topics: readonly ProduceTopic[],
): Buffer {
  let size = 2 + 2 + 4 + 4;
  for (const t of topics) {
    size += 2 + Buffer.byteLength(t.topic) + 4;
    for (const p of t.partitions) size += 4 + 4 + p.batch.length;
  }
  const buf = Buffer.allocUnsafe(size);
  let at = buf.writeInt16BE(-1, 0); // transactional_id: null
  at = buf.writeInt16BE(acks, at);
  at = buf.writeInt32BE(timeoutMs, at);
  at = buf.writeInt32BE(topics.length, at);
  for (const t of topics) {
    const nameLength = Buffer.byteLength(t.topic);
    at = buf.writeInt16BE(nameLength, at);
    at += buf.write(t.topic, at);
    at = buf.writeInt32BE(t.partitions.length, at);
    for (const p of t.partitions) {
      at = buf.writeInt32BE(p.partition, at);
      at = buf.writeInt32BE(p.batch.length, at);
      buf.set(p.batch, at);
      at += p.batch.length;
    }
  }
  return buf;
}

export interface ProducePartitionResult {
  topic: string;
  partition: number;
  errorCode: number;
  baseOffset: bigint;
}

export interface ProduceResponse {
  partitions: ProducePartitionResult[];
  throttleTimeMs: number;
}

/** A Produce response body (v3–v7; after the correlation id). Throws on a truncated body. */
export function decodeProduceResponse(buf: Buffer, version: number): ProduceResponse {
  if (version < 3 || version > 7) throw new Error(`Produce response v${version} is not supported`);
  let at = 0;
  const topicCount = buf.readInt32BE(at);
  at += 4;
  const partitions: ProducePartitionResult[] = [];
  for (let t = 0; t < topicCount; t++) {
    const nameLength = buf.readInt16BE(at);
    at += 2;
    const topic = buf.toString("utf8", at, at + nameLength);
    at += nameLength;
    const partitionCount = buf.readInt32BE(at);
    at += 4;
    for (let p = 0; p < partitionCount; p++) {
      const partition = buf.readInt32BE(at);
      const errorCode = buf.readInt16BE(at + 4);
      const baseOffset = buf.readBigInt64BE(at + 6);
      at += 4 + 2 + 8 + 8; // + log_append_time
      if (version >= 5) at += 8; // log_start_offset
      partitions.push({ topic, partition, errorCode, baseOffset });
    }
  }
  const throttleTimeMs = buf.readInt32BE(at);
  return { partitions, throttleTimeMs };
}
