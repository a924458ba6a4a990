/**
 * Fault 1 — broker loss. A 3-node KRaft cluster (RF 3, min.insync.replicas=2), the gateway as its own
 * process, ingest from many users, two healthy destinations (one slow through the first loss, so it is
 * behind and catching up on its own readers meanwhile). One broker is SIGKILLed and restarted, then
 * the broker leading the most partitions of the events topic. Every 202 must be in the topic and
 * delivered to both destinations in per-user order; every other answer must be a 503.
 */
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { partitionForKey } from "../../src/kafka/murmur2.ts";
import { type Destination, gatewayEnv, startGateway } from "../child-gateway.ts";
import { waitUntil } from "../helpers.ts";
import { type Behaviour, type Receiver, startReceiver } from "../receiver.ts";
import {
  acceptedEvents,
  analyseDeliveries,
  clusterForFile,
  countTopicRecords,
  faultKafka,
  partitionLeaders,
  phaseFigures,
  readTopicEventIds,
  refusalReasons,
  refusalWindows,
  startLoad,
  topicPartitions,
  waitForFullIsr,
  waitForIsrWithout,
} from "./fault-helpers.ts";

// 200 clients with 5 users each, 4 requests/s per client: 800/s offered. Group commit turns the
// concurrency into batches, so the rate holds while an acks=all round trip takes ~200 ms on a busy
// 2-core machine running three brokers.
const CLIENTS = 200;
const USERS_PER_CLIENT = 5;
const RATE_PER_CLIENT = 4;
const MIN_ACCEPTED = 20_000;
const MIN_LOAD_MS = 20_000;

const file = clusterForFile();

test("broker loss: SIGKILL a broker, then the partition leaders' broker — nothing acknowledged is lost", async (t) => {
  assert.ok(file.cluster);
  const brokers = file.cluster.brokers;
  const k = faultKafka(brokers);
  const env = gatewayEnv({
    KAFKA_BROKERS: brokers.join(","),
    TOPIC_PARTITIONS: "6",
    TOPIC_REPLICATION_FACTOR: "3",
    INGEST_RETRY_AFTER_S: "1",
  });
  // Every log line kept: the diagnostics below count warnings over the whole run.
  const gw = await startGateway(t, env, { keepLines: Number.POSITIVE_INFINITY });

  // Destination b answers slowly through the first broker loss: it falls behind, its cursors leave the
  // shared reader, and its own catch-up readers (and its queue of waiting attempts) go through the fault.
  let slowB = true;
  const slow: Behaviour = (req, res) => {
    if (!slowB) return;
    setTimeout(() => {
      b.delivered.push(JSON.parse(req.body));
      res.end("ok");
    }, 80);
    return "handled";
  };
  const b = await startReceiver(slow);
  file.receivers.push(await startReceiver(), b);
  const destinations: Destination[] = [];
  for (const r of file.receivers) {
    destinations.push(await gw.registerDestination({ url: r.url, maxConcurrency: 32 }));
  }

  const topic = env.EVENTS_TOPIC;
  const partitions = await topicPartitions(k, topic);
  assert.equal(partitions.length, 6);
  for (const p of partitions) assert.equal(p.replicas.length, 3, `partition ${p.partition} has RF 3`);

  const started = Date.now();
  const mark = (what: string) => {
    const c = file.load?.counts();
    t.diagnostic(
      `+${((Date.now() - started) / 1000).toFixed(1)} s ${what} (sent ${c?.sent}, accepted ${c?.accepted}, refused ${c?.refused})`,
    );
  };
  file.load = startLoad({
    url: gw.url,
    clients: CLIENTS,
    usersPerClient: USERS_PER_CLIENT,
    ratePerClient: RATE_PER_CLIENT,
  });
  const running = file.load;

  const phases: Array<{ name: string; from: number }> = [{ name: "steady", from: started }];
  const phase = (name: string) => {
    phases.push({ name, from: Date.now() });
    mark(name);
  };
  /** SIGKILL a broker, wait until the cluster has fenced it, keep it down a little, restart, wait for its ISRs. */
  const loseBroker = async (victim: number, why: string) => {
    phase(`node ${victim} killed (${why})`);
    await file.cluster?.killNode(victim);
    await waitForIsrWithout(k, topic, victim);
    phase(`node ${victim} fenced: out of every ISR, leaders moved`);
    await sleep(3000);
    phase(`node ${victim} restarting`);
    await file.cluster?.restartNode(victim);
    await waitForFullIsr(k, [topic, "__consumer_offsets"]);
    phase(`node ${victim} back in every ISR`);
  };

  // Fault 1a: an arbitrary broker (node 2), SIGKILLed while it leads some partitions and follows others.
  await sleep(5000);
  await loseBroker(2, `leaders per node ${JSON.stringify([...(await partitionLeaders(k, topic))])}`);
  slowB = false;
  const behind = await gw.get<{ lag: number | null }>(`/api/destinations/${destinations[1]?.id}`);
  // Above 5,000 queued events a destination's cursors leave the shared reader (DEFAULT_BUFFER_LIMITS).
  mark(`destination b answers at full speed again; its lag ${behind.lag}`);
  await sleep(3000);

  // Fault 1b: the broker that leads the most partitions of the events topic.
  const leaders = await partitionLeaders(k, topic);
  const [victim] = [...leaders].sort((a, b) => b[1] - a[1])[0] ?? [1];
  await loseBroker(victim, `leader of ${leaders.get(victim)} of 6 partitions`);

  await waitUntil(
    () => running.counts().accepted >= MIN_ACCEPTED && Date.now() - started >= MIN_LOAD_MS,
    `${MIN_ACCEPTED} accepted events`,
    180_000,
  );
  await running.stop();
  const loadSeconds = (Date.now() - started) / 1000;
  mark("load stopped");

  const counts = running.counts();
  const accepted = acceptedEvents(running.outcomes);
  const others = running.outcomes.filter((o) => !(o.status === 202 && o.id) && o.status !== 503);
  assert.deepEqual(
    others.slice(0, 5).map((o) => `${o.status} ${o.error ?? o.title ?? ""}`),
    [],
    "every answer is a 202 with an id or a 503",
  );
  for (const o of running.outcomes.filter((x) => x.status === 503).slice(0, 50)) {
    assert.equal(o.contentType, "application/problem+json");
    assert.equal(o.retryAfter, "1");
  }

  // Every acknowledged event is in the topic.
  const inTopic = await readTopicEventIds(k, topic, 120_000);
  const topicRecords = await countTopicRecords(k, topic);
  const missingFromTopic = accepted.filter((a) => !inTopic.has(a.id));
  mark(`topic read: ${inTopic.size} events`);

  // ... and reaches both destinations (wait for the last of them, then analyse).
  const expected = new Set(accepted.map((a) => a.id));
  const deliveredAll = (r: Receiver) => {
    let got = 0;
    const seen = new Set<string>();
    for (const d of r.delivered) if (expected.has(d.id) && !seen.has(d.id) && seen.add(d.id)) got++;
    return got === expected.size;
  };
  await waitUntil(
    () => file.receivers.every(deliveredAll),
    "every accepted event at both destinations",
    180_000,
    500,
  ).catch((err: Error) => mark(`${err.message}`));
  mark("deliveries complete");

  t.diagnostic(
    `load: ${counts.sent} requests over ${loadSeconds.toFixed(1)} s from ${CLIENTS * USERS_PER_CLIENT} users; ` +
      `accepted ${counts.accepted}, refused (503) ${counts.refused}, other ${counts.other}; ` +
      `topic: ${topicRecords} records, ${inTopic.size} distinct events (${topicRecords - inTopic.size} written twice), ` +
      `missing accepted: ${missingFromTopic.length}`,
  );
  const windows = refusalWindows(running.outcomes, started)
    .map((w) => `+${w.from.toFixed(1)}…+${w.to.toFixed(1)} s: ${w.count}`)
    .join(", ");
  t.diagnostic(`503 windows (answer times): ${windows || "none"}`);
  t.diagnostic(
    `503 reasons: ${
      refusalReasons(running.outcomes)
        .map(([reason, n]) => `${n}× ${reason}`)
        .join("; ") || "none"
    }`,
  );
  const ends = [...phases.slice(1).map((p) => p.from), Date.now()];
  for (const [i, p] of phases.entries()) {
    const f = phaseFigures(running.outcomes, p.from, ends[i] as number);
    t.diagnostic(
      `phase "${p.name}" (+${((p.from - started) / 1000).toFixed(1)} s, ${(((ends[i] as number) - p.from) / 1000).toFixed(1)} s): ` +
        `sent ${f.sent}, accepted ${f.accepted}, refused ${f.refused}; 202 latency p50 ${f.p50} ms, p99 ${f.p99} ms, max ${f.max} ms`,
    );
  }
  const reports = file.receivers.map((r) => analyseDeliveries(accepted, r.delivered));
  for (const [i, report] of reports.entries()) {
    t.diagnostic(
      `destination ${"ab"[i]}: delivered ${report.delivered} of ${report.expected}, ${report.deliveries} deliveries, ` +
        `duplicates ${report.duplicates}, lost ${report.lost.length}, refused-but-written ${report.unannounced}, ` +
        `order violations ${report.orderViolations.length}`,
    );
  }
  // How often the producer caught kafkajs acknowledging only part of a batch (see src/ingest/producer.ts).
  const partial = gw.logs().filter((l) => String(l.err ?? "").includes("only part of the batch")).length;
  t.diagnostic(`partially acknowledged batches refused (503) by the producer: ${partial}`);
  const warnings = [...gw.warnings()].map(([msg, n]) => `${n}× ${msg}`);
  t.diagnostic(`gateway warnings: ${warnings.join("; ") || "none"}`);
  for (const line of gw.logs().filter((l) => typeof l.level === "number" && l.level >= 50)) {
    const err = line.err as { message?: string } | undefined;
    t.diagnostic(`gateway error: ${String(line.msg)}${err?.message ? `: ${err.message}` : ""}`);
  }

  // A loss says where: per partition, what the destination's lag is now, and what the delivery engine
  // logged (the whole gateway log goes to a file).
  if (reports.some((r) => r.lost.length > 0)) {
    const userOf = new Map(accepted.map((a) => [a.id, a.userID]));
    for (const [i, report] of reports.entries()) {
      if (report.lost.length === 0) continue;
      const perPartition = new Map<number, number>();
      for (const id of report.lost) {
        const p = partitionForKey(userOf.get(id) as string, partitions.length);
        perPartition.set(p, (perPartition.get(p) ?? 0) + 1);
      }
      const view = await gw.get<{ lag: unknown }>(`/api/destinations/${destinations[i]?.id}`).catch((e) => e);
      t.diagnostic(
        `destination ${"ab"[i]} (${destinations[i]?.id}) lost per partition: ${JSON.stringify([...perPartition].sort())}; ` +
          `lag now: ${JSON.stringify((view as { lag?: unknown }).lag ?? String(view))}`,
      );
      // Attempted and failed (dead-lettered), or never attempted?
      const dead = await gw
        .get(`/api/destinations/${destinations[i]?.id}/dead-letters`)
        .catch((e) => String(e));
      t.diagnostic(`destination ${"ab"[i]} dead letters: ${JSON.stringify(dead).slice(0, 600)}`);
      for (const id of report.lost.slice(0, 3)) {
        const answer = await gw
          .get<{ attempts: Array<Record<string, unknown>> }>(`/api/events/${id}/attempts`)
          .catch((e): { attempts: Array<Record<string, unknown>> } => ({ attempts: [{ error: String(e) }] }));
        const here = answer.attempts
          .filter((a) => a.destinationId === undefined || a.destinationId === destinations[i]?.id)
          .map((a) => `#${a.attemptNumber} ${a.startedAt} ${a.statusCode} ${a.outcome} ${a.error ?? ""}`);
        t.diagnostic(`lost ${id} (user ${userOf.get(id)}): attempts here: ${here.join("; ") || "none"}`);
      }
    }
    const engine = /catch-up|crash|assigned|Restart|consumer|cursor|shared|rebalanc|group/i;
    for (const line of gw.logs()) {
      const component = String(line.component ?? "");
      if (component !== "delivery-engine" && !engine.test(String(line.msg ?? ""))) continue;
      const at = typeof line.time === "number" ? `+${((line.time - started) / 1000).toFixed(1)} s` : "";
      const err = line.err as { message?: string } | undefined;
      t.diagnostic(
        `gateway ${at} [${line.level}] ${String(line.msg)}${err?.message ? `: ${err.message}` : ""} ${JSON.stringify(
          { partitions: line.partitions, destinationId: line.destinationId, partition: line.partition },
        )}`,
      );
    }
    const logFile = join(tmpdir(), `broker-loss-${process.pid}-${Date.now()}.log`);
    writeFileSync(
      logFile,
      gw
        .logs()
        .map((l) => JSON.stringify(l))
        .join("\n"),
    );
    t.diagnostic(`gateway log: ${logFile}`);
  }

  assert.ok(counts.accepted >= MIN_ACCEPTED);
  assert.deepEqual(missingFromTopic.slice(0, 5), [], "every 202 event is in the topic");
  for (const [i, report] of reports.entries()) {
    assert.deepEqual(report.lost.slice(0, 5), [], `destination ${"ab"[i]} lost nothing`);
    assert.deepEqual(report.orderViolations.slice(0, 5), [], `destination ${"ab"[i]} kept per-user order`);
  }
});
