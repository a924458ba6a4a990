/**
 * Produce-path benchmark: `npm run bench:produce [-- --records 1,10,50,200 --events 4000]`.
 *
 * CPU time (user + system, this process, every thread) of sending one batch of N records (the gateway's
 * record: ≈ 330-byte JSON value, userID key, two headers) to a 12-partition topic and waiting for acks=all,
 * one batch at a time, no HTTP. Beside each other in one run, on a local broker of its own:
 *   - raw: the same record batches (src/kafka/record-batch.ts, producer id −1, not idempotent) written by
 *     hand on one plain TCP socket — the ceiling: encoding plus one round trip, nothing else;
 *   - own: the gateway's BatchSender with its own Produce requests over kafkajs's connections (INGEST_SENDER=own);
 *   - kafkajs: the gateway's BatchSender over kafkajs's idempotent producer (INGEST_SENDER=kafkajs).
 * Every figure includes building the records (as ingest builds them per request).
 */
import net from "node:net";
import { parseArgs } from "node:util";
import { kafkajsSender } from "../src/ingest/batch-sender.ts";
import { wireSender } from "../src/ingest/wire-sender.ts";
import { createKafka } from "../src/kafka/client.ts";
import { partitionForKey } from "../src/kafka/murmur2.ts";
import { decodeProduceResponse, encodeProduceRequest, encodeRecordBatch } from "../src/kafka/record-batch.ts";
import { startLocalKafka } from "../src/kafka/runner.ts";
import type { Message } from "../src/kafka/sink.ts";
import { PAYLOAD } from "./payload.ts";

const { values } = parseArgs({
  options: {
    records: { type: "string", default: "1,10,50,200" },
    events: { type: "string", default: "4000" },
  },
});
const sizes = (values.records ?? "").split(",").map(Number);
const events = Number(values.events);
const PARTITIONS = 12;
const ID = "0193b5e0-0000-7000-8000-000000000000";

function records(n: number, from: number): Message[] {
  return Array.from({ length: n }, (_, j) => {
    const userID = `user-${(from + j) % 5000}`;
    const value = JSON.stringify({
      id: ID,
      userID,
      type: "order.created",
      timestamp: new Date().toISOString(),
      payload: PAYLOAD,
    });
    return { key: userID, value, headers: { "event-id": ID, "content-type": "application/json" } };
  });
}

/** One plain socket speaking Produce v7 with request header v1: the ceiling. */
async function rawSender(host: string, port: number) {
  const socket = net.connect(port, host);
  socket.setNoDelay(true);
  await new Promise((done, fail) => socket.once("connect", done).once("error", fail));
  const waiting = new Map<number, (body: Buffer) => void>();
  let pending: Buffer = Buffer.alloc(0);
  socket.on("data", (chunk: Buffer) => {
    pending = pending.length > 0 ? Buffer.concat([pending, chunk]) : chunk;
    while (pending.length >= 4 && pending.length >= 4 + pending.readInt32BE(0)) {
      const size = pending.readInt32BE(0);
      waiting.get(pending.readInt32BE(4))?.(pending.subarray(8, 4 + size));
      waiting.delete(pending.readInt32BE(4));
      pending = pending.subarray(4 + size);
    }
  });
  const clientId = Buffer.from("bench-produce");
  let correlation = 0;
  return {
    async send(topic: string, messages: Message[]): Promise<void> {
      const byPartition = new Map<number, Message[]>();
      for (const m of messages) {
        const p = partitionForKey(m.key as string, PARTITIONS);
        const list = byPartition.get(p) ?? [];
        list.push(m);
        byPartition.set(p, list);
      }
      const partitions = [...byPartition].map(([partition, list]) => ({
        partition,
        batch: encodeRecordBatch(list, { producerId: -1n, producerEpoch: -1 }, -1, Date.now()),
      }));
      const body = encodeProduceRequest(-1, 30_000, [{ topic, partitions }]);
      const header = Buffer.allocUnsafe(14 + clientId.length);
      const id = ++correlation;
      header.writeInt32BE(header.length - 4 + body.length, 0);
      header.writeInt16BE(0, 4); // Produce
      header.writeInt16BE(7, 6);
      header.writeInt32BE(id, 8);
      header.writeInt16BE(clientId.length, 12);
      clientId.copy(header, 14);
      const answer = new Promise<Buffer>((done) => waiting.set(id, done));
      socket.write(Buffer.concat([header, body]));
      const { partitions: acks } = decodeProduceResponse(await answer, 7);
      const failed = acks.filter((a) => a.errorCode !== 0);
      if (failed.length > 0) throw new Error(`raw produce failed: ${JSON.stringify(failed)}`);
    },
    close: () => socket.destroy(),
  };
}

const log = (s: string) => process.stderr.write(`${s}\n`);
const kafkaRunner = await startLocalKafka({ log });
try {
  const kafka = createKafka({ brokers: kafkaRunner.brokers, clientId: "bench-produce" });
  const admin = kafka.admin();
  await admin.connect();
  const topic = "bench-produce";
  await admin.createTopics({ topics: [{ topic, numPartitions: PARTITIONS }], waitForLeaders: true });
  await admin.disconnect();
  const [host = "127.0.0.1", port = "9092"] = (kafkaRunner.brokers[0] as string).split(":");
  const raw = await rawSender(host, Number(port));
  const own = wireSender(kafka);
  const kjs = kafkajsSender(kafka);
  await own.connect();
  await kjs.connect();
  const ways: Array<[string, (messages: Message[]) => Promise<void>]> = [
    ["raw socket (ceiling)", (m) => raw.send(topic, m)],
    ["own Produce requests", (m) => own.send(new Map([[topic, m]]), 30_000)],
    ["kafkajs's producer", (m) => kjs.send(new Map([[topic, m]]), 30_000)],
  ];
  const lines = [
    "| records a batch | sender | µs CPU a batch | µs CPU a record | of which system, µs a batch | wall ms a batch |",
    "| ---: | --- | ---: | ---: | ---: | ---: |",
  ];
  for (const n of sizes) {
    const batches = Math.max(20, Math.round(events / n));
    for (const [name, send] of ways) {
      let from = 0;
      const run = async (count: number) => {
        for (let i = 0; i < count; i++) {
          await send(records(n, from));
          from += n;
        }
      };
      await run(20); // warm-up
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      await run(batches);
      const cpu = process.cpuUsage(cpu0);
      const wall = performance.now() - t0;
      const us = (cpu.user + cpu.system) / batches;
      lines.push(
        `| ${n} | ${name} | ${us.toFixed(0)} | ${(us / n).toFixed(1)} | ${(cpu.system / batches).toFixed(0)} | ${(wall / batches).toFixed(2)} |`,
      );
      log(`${n} records, ${name}: ${us.toFixed(0)} µs a batch`);
    }
  }
  raw.close();
  await own.disconnect();
  await kjs.disconnect();
  process.stdout.write(`${lines.join("\n")}\n`);
} finally {
  await kafkaRunner.stop();
}
