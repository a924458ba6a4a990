import assert from "node:assert/strict";
import { test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { startIngestGateway } from "./ingest-fixture.ts";

// A graceful stop under load loses nothing it accepted: every 202 answered before or during the stop is in
// the topic afterwards — for each place the producer can run (the HTTP thread, its own thread).
const VARIANTS: Array<[string, Record<string, string>]> = [
  ["producer on the HTTP thread (the default)", {}],
  ["producer thread", { INGEST_PRODUCER_THREAD: "true" }],
];

for (const [label, settings] of VARIANTS) {
  test(`a graceful stop under load: every 202 is in the topic (${label})`, async () => {
    // A long linger keeps records queued in the producer when the stop begins.
    const g = await startIngestGateway({ ...settings, BATCH_LINGER_MS: "20", TOPIC_PARTITIONS: "4" });
    let stopping = false;
    try {
      await g.gateway.kafkaReady;
      const accepted: string[] = [];
      let refused = 0;
      const sender = async (n: number) => {
        for (let i = 0; !stopping; i++) {
          try {
            const res = await g.post("/api/singleEvent", { userID: `stop-${n}`, payload: { i } });
            if (res.status === 202) accepted.push(((await res.json()) as { id: string }).id);
            else {
              await res.body?.cancel();
              assert.ok(res.status >= 500, `a refusal is a 5xx, not ${res.status}`);
              refused++;
            }
          } catch {
            refused++; // the listener is closed: connection refused or reset
            return;
          }
        }
      };
      const senders = Array.from({ length: 24 }, (_, n) => sender(n));
      await sleep(1500);
      const stopped = g.gateway.stop();
      stopping = true;
      await stopped;
      await Promise.all(senders);
      assert.ok(accepted.length > 20, `load reached the gateway (${accepted.length} accepted)`);
      const inTopic = new Set((await g.readTopic()).map((r) => (JSON.parse(r.value) as { id: string }).id));
      const lost = accepted.filter((id) => !inTopic.has(id));
      assert.deepEqual(lost, [], `${lost.length} of ${accepted.length} accepted events are not in the topic`);
      process.stdout.write(`# ${label}: ${accepted.length} accepted, all in the topic; ${refused} refused\n`);
    } finally {
      stopping = true;
      await g.stop();
    }
  });
}
