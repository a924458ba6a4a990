/**
 * Entry of the producer thread (worker_threads): the gateway's GroupCommitProducer with a kafkajs client of
 * its own, so that encoding and sending records — a third of ingest's CPU time on the HTTP thread — runs
 * beside the HTTP work instead of in between it. The main thread's ThreadedProducer is its only caller.
 */
import { parentPort, workerData } from "node:worker_threads";
import { createKafka } from "../kafka/client.ts";
import { createLogger } from "../log.ts";
import { kafkaLogsAtDebug } from "./kafka-setup.ts";
import { type BatchTrigger, GroupCommitProducer } from "./producer.ts";
import { type FromThread, type ProducerThreadData, type ToThread, unpackPublishes } from "./producer-wire.ts";

if (!parentPort) throw new Error("producer-thread-entry.ts runs as a worker thread only");
const port = parentPort;
const data = workerData as ProducerThreadData;
const logger = createLogger(data.logLevel).child({ thread: "producer" });

let ok: number[] = [];
let failed: Array<[number, string]> = [];
let batches: Array<[number, number, boolean, BatchTrigger]> = [];
let flushQueued = false;
/** Answers leave once per turn of this thread's event loop, however many publishes it answered. */
function flushSoon(): void {
  if (flushQueued) return;
  flushQueued = true;
  setImmediate(() => {
    flushQueued = false;
    const msg: FromThread = { t: "done", ok, failed, batches };
    ok = [];
    failed = [];
    batches = [];
    port.postMessage(msg);
  });
}

const producer = new GroupCommitProducer(
  createKafka({
    brokers: data.brokers,
    clientId: data.clientId,
    security: data.security,
    overrides: kafkaLogsAtDebug(logger),
  }),
  {
    maxRecords: data.maxRecords,
    maxBytes: data.maxBytes,
    lingerMs: data.lingerMs,
    ackTimeoutMs: data.ackTimeoutMs,
    sender: data.sender,
    logger,
    onBatch: (records, seconds, good, trigger) => {
      batches.push([records, seconds, good, trigger]);
      flushSoon();
    },
    // Before the failed batch's answers (they leave on the next turn): the main thread refuses at once.
    onReadyChange: (ready) => port.postMessage({ t: "state", ready } satisfies FromThread),
  },
);

port.on("message", (msg: ToThread) => {
  if (msg.t === "publish") {
    unpackPublishes(msg.wire, (seq, topic, messages) => {
      producer.publish(topic, messages).then(
        () => {
          ok.push(seq);
          flushSoon();
        },
        (err: Error) => {
          failed.push([seq, err.message]);
          flushSoon();
        },
      );
    });
    if (msg.sendNow) producer.sendNow();
  } else if (msg.t === "start") {
    producer.start();
  } else if (msg.t === "close") {
    void producer.close().then(() => {
      // The last answers first, then "closed": the main thread ends this thread on it.
      setImmediate(() => port.postMessage({ t: "closed" } satisfies FromThread));
    });
  }
});
