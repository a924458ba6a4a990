/**
 * A machine without Java and without KAFKA_BROKERS: `npm start`, `npm run kafka` and `npm test` each stop
 * with one sentence saying what to install (or to set KAFKA_BROKERS), never a stack trace. Needs no Kafka:
 * the children run with a PATH that holds nothing at all, so `java` cannot be found.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const SENTENCE =
  /^`java` was not found: install Java 17 or newer \(e\.g\. `[^`]+`\), or set KAFKA_BROKERS to an existing Kafka cluster\.\n$/;

function run(args: string[], env: Record<string, string>): Promise<{ code: number | null; stderr: string }> {
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, args, { cwd: ROOT, env, stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString("utf8");
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
    child.on("error", fail);
    child.on("exit", (code) => {
      clearTimeout(timer);
      done({ code, stderr });
    });
  });
}

test("without java and KAFKA_BROKERS every entry point says what to install, in one sentence", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "missing-java-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const emptyBin = join(dir, "bin");
  const home = join(dir, "home");
  for (const d of [emptyBin, home]) mkdirSync(d);
  const dbPath = join(dir, "gateway.db");
  const trivial = join(dir, "never.test.ts");
  writeFileSync(trivial, 'import { test } from "node:test";\ntest("never runs", () => {});\n');
  // Exactly these variables: nothing of this run (its KAFKA_BROKERS above all) leaks in.
  const env = { PATH: emptyBin, HOME: home, DB_PATH: dbPath };

  const cases: [string, string[]][] = [
    ["npm start", ["src/main.ts"]],
    ["npm run kafka", ["src/kafka/cli.ts"]],
    ["npm test", ["--test", "--test-global-setup=test/global-setup.ts", trivial]],
  ];
  for (const [name, args] of cases) {
    const { code, stderr } = await run(args, env);
    assert.equal(code, 1, `${name}: exit code (stderr: ${stderr})`);
    assert.match(stderr, SENTENCE, `${name}: stderr is the one sentence`);
  }
  assert.equal(existsSync(dbPath), false, "npm start stopped before opening the database");
});
