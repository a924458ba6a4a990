/**
 * Recording benchmark: `npm run bench:recording [-- --deliveries 100000 --batch 50 --destinations 10]`.
 *
 * What the delivery recorder costs per delivery: one attempt row and one ledger upsert per delivery, in
 * transactions of `--batch` deliveries (the recorder's 10 ms window holds ≈ 50 at 5,000 deliveries/s),
 * event ids UUIDv7 as the gateway makes them, destinations interleaved as when several drain at once.
 * Beside it, the floor measured in the same run: the same values as plain inserts into two tables with no
 * index at all (a rowid B-tree each). CPU is this process's user + system time; wall includes the WAL
 * writes the kernel did not count as CPU. Each row runs on a fresh database file in a temporary directory.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import Database from "better-sqlite3";
import { uuidv7 } from "../src/ingest/event-id.ts";
import { insertAttempts } from "../src/store/attempts.ts";
import { openStore } from "../src/store/db.ts";
import { upsertLedger } from "../src/store/ledger.ts";

const { values } = parseArgs({
  options: {
    deliveries: { type: "string", default: "100000" },
    batch: { type: "string", default: "50" },
    destinations: { type: "string", default: "10" },
  },
});
const N = Number(values.deliveries);
const BATCH = Number(values.batch);
const destinations = Array.from({ length: Number(values.destinations) }, (_, i) => `dest-${uuidv7()}-${i}`);
const deliveries = Array.from({ length: N }, (_, i) => ({
  eventId: uuidv7(),
  destinationId: destinations[i % destinations.length] as string,
  userId: `user-${i % 1000}`,
}));

function measure(write: (part: typeof deliveries, at: number) => void): { cpu: number; wall: number } {
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < N; i += BATCH) write(deliveries.slice(i, i + BATCH), Date.now());
  const cpu = process.cpuUsage(cpu0);
  return { cpu: (cpu.user + cpu.system) / N, wall: ((performance.now() - t0) * 1000) / N };
}

const dir = mkdtempSync(join(tmpdir(), "bench-recording-"));
try {
  const store = openStore(join(dir, "gateway.db"));
  const gateway = measure((part, at) =>
    store.sqlite.transaction(() => {
      insertAttempts(
        store.db,
        part.map((d) => ({
          ...d,
          attemptNumber: 1,
          startedAt: at - 3,
          durationMs: 3,
          statusCode: 200,
          error: null,
          responseSnippet: "ok",
          outcome: "succeeded",
        })),
      );
      upsertLedger(
        store.db,
        part.map((d) => ({ ...d, status: "delivered", attempts: 1, lastError: null, event: null, at })),
      );
    })(),
  );
  store.close();

  const bare = new Database(join(dir, "bare.db"));
  bare.pragma("journal_mode = WAL");
  bare.pragma("synchronous = NORMAL");
  bare.exec(`create table a (event_id, destination_id, user_id, attempt_number, started_at, duration_ms,
    status_code, error, response_snippet, outcome);
    create table l (destination_id, event_id, user_id, status, attempts, last_error, event, updated_at, dead_at)`);
  const insertA = bare.prepare("insert into a values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
  const insertL = bare.prepare("insert into l values (?, ?, ?, ?, ?, ?, ?, ?, ?)");
  const floor = measure((part, at) =>
    bare.transaction(() => {
      for (const d of part)
        insertA.run(d.eventId, d.destinationId, d.userId, 1, at - 3, 3, 200, null, "ok", "succeeded");
      for (const d of part)
        insertL.run(d.destinationId, d.eventId, d.userId, "delivered", 1, null, null, at, null);
    })(),
  );
  bare.close();

  const f = (n: number) => n.toFixed(1);
  console.log(
    `${N.toLocaleString("en-US")} deliveries to ${destinations.length} destinations, ${BATCH} per transaction\n`,
  );
  console.log("| run | CPU µs/delivery | wall µs/delivery |");
  console.log("| --- | ---: | ---: |");
  console.log(`| floor: two plain inserts into index-less tables | ${f(floor.cpu)} | ${f(floor.wall)} |`);
  console.log(
    `| the gateway's recording (attempt row + ledger upsert, schema indexes) | ${f(gateway.cpu)} | ${f(gateway.wall)} |`,
  );
} finally {
  rmSync(dir, { recursive: true, force: true });
}
