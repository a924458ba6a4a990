import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { after, before, type TestContext, test } from "node:test";
import { fileURLToPath } from "node:url";
import pino from "pino";
import { loadConfig, SETTING_NAMES } from "../src/config.ts";
import { type Gateway, startGateway } from "../src/gateway.ts";
import { createKafka, describeKafkaError, type KafkaSecurity } from "../src/kafka/client.ts";
import { createLocalCa, issueCertificate } from "../src/kafka/local-tls.ts";
import { uniqueName } from "./helpers.ts";
import { startReceiver, waitFor } from "./receiver.ts";

// The gateway against a broker whose only client listener is SASL_SSL with mutual TLS, started the way a
// developer does (`npm run kafka -- --secure`) and used with exactly the settings it prints: ingest and
// delivery work end to end, and a client with a wrong password, a CA that did not sign the broker's
// certificate, no TLS at all or a client certificate the broker does not trust is refused at once with an
// error that names the setting to fix.

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const TOKEN = "test-admin-token-0123456789";

/** `npm run kafka -- --secure`, its printed `KAFKA_…=value` lines, and what they load into. */
let cli: ChildProcess | undefined;
let cliExited: Promise<void> = Promise.resolve();
let printed: Record<string, string> = {};
let brokers: string[];
let security: KafkaSecurity;
/** A second CA (and a certificate it signed) that the broker knows nothing about. */
let foreign: { dir: string; caFile: string; certFile: string; keyFile: string };

/** Starts the CLI (killed with this process, should it die) and resolves with its settings lines. */
async function startSecureCli(): Promise<Record<string, string>> {
  const child = spawn("setpriv", ["--pdeathsig", "KILL", process.execPath, "src/kafka/cli.ts", "--secure"], {
    cwd: ROOT,
    stdio: ["ignore", "pipe", "pipe"],
  });
  cli = child;
  cliExited = new Promise((done) => child.once("exit", () => done()));
  let stdout = "";
  let stderr = "";
  child.stderr?.on("data", (d: Buffer) => {
    stderr += d.toString();
  });
  await new Promise<void>((done, fail) => {
    const timer = setTimeout(() => fail(new Error(`no settings within 180 s:\n${stderr}`)), 180_000);
    child.stdout?.on("data", (d: Buffer) => {
      stdout += d.toString();
      if (/^KAFKA_SASL_PASSWORD=.*\n/m.test(stdout)) {
        clearTimeout(timer);
        done();
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      fail(new Error(`npm run kafka -- --secure exited (${code}):\n${stderr}`));
    });
  });
  const settings: Record<string, string> = {};
  for (const line of stdout.split("\n")) {
    const match = /^(KAFKA_[A-Z_]+)=(.*)$/.exec(line);
    if (match?.[1] && match[2] !== undefined) settings[match[1]] = match[2];
  }
  return settings;
}

before(async () => {
  printed = await startSecureCli();
  const config = loadConfig(printed);
  brokers = config.KAFKA_BROKERS ?? [];
  security = config.kafkaSecurity;
  const dir = mkdtempSync(join(tmpdir(), "foreign-ca-"));
  const ca = await createLocalCa(dir, "someone else's CA");
  const cert = await issueCertificate(ca, "intruder");
  foreign = { dir, caFile: ca.caFile, certFile: cert.certFile, keyFile: cert.keyFile };
});
after(async () => {
  cli?.kill("SIGTERM");
  await cliExited;
  if (foreign) rmSync(foreign.dir, { recursive: true, force: true });
});

test("`npm run kafka -- --secure` prints TLS and SASL settings under the names the gateway reads", () => {
  assert.deepEqual(Object.keys(printed).sort(), [
    "KAFKA_BROKERS",
    "KAFKA_SASL_MECHANISM",
    "KAFKA_SASL_PASSWORD",
    "KAFKA_SASL_USERNAME",
    "KAFKA_SSL",
    "KAFKA_SSL_CA_FILE",
    "KAFKA_SSL_CERT_FILE",
    "KAFKA_SSL_KEY_FILE",
  ]);
  for (const name of Object.keys(printed)) assert.ok(SETTING_NAMES.includes(name), name);
  assert.ok(security.tls?.ca && security.tls.cert && security.tls.key, "CA, client certificate and key read");
  assert.equal(security.sasl?.mechanism, "scram-sha-256");
});

interface RunningGateway {
  gateway: Gateway;
  /** Everything the gateway logged so far (pino JSON lines). */
  logs(): string;
  post(path: string, body: unknown, headers?: Record<string, string>): Promise<Response>;
}

/**
 * A whole gateway in-process with the runner's client settings, `env` on top; stopped after the test.
 * Its log is kept (from `level` up; delivery threads log at that level to stdout).
 */
async function startSecureGateway(
  t: TestContext,
  env: Record<string, string> = {},
  level = "warn",
): Promise<RunningGateway> {
  const lines: string[] = [];
  const logger = pino({ level }, { write: (line: string) => void lines.push(line) });
  const dbPath = join(tmpdir(), `${uniqueName("secure")}.db`);
  const config = loadConfig({
    PORT: "0",
    DB_PATH: dbPath,
    EVENTS_TOPIC: uniqueName("secure-events"),
    DEAD_LETTER_TOPIC: uniqueName("secure-dead"),
    TOPIC_PARTITIONS: "2",
    CONSUMER_GROUP_PREFIX: uniqueName("gw"),
    ADMIN_TOKEN: TOKEN,
    ALLOW_PRIVATE_DESTINATIONS: "true",
    ...printed,
    ...env,
  });
  const gateway = await startGateway(config, logger);
  t.after(async () => {
    await gateway.stop();
    for (const suffix of ["", "-wal", "-shm"]) rmSync(`${dbPath}${suffix}`, { force: true });
  });
  return {
    gateway,
    logs: () => lines.join(""),
    post: (path, body, headers = {}) =>
      fetch(`${gateway.url}${path}`, {
        method: "POST",
        headers: { "content-type": "application/json", ...headers },
        body: JSON.stringify(body),
      }),
  };
}

/** Everything secret the runner handed out: none of it may show up in a log. */
function secrets(): string[] {
  const key = (security.tls?.key ?? "").split("\n")[1] ?? "";
  assert.ok(key.length > 16 && printed.KAFKA_SASL_PASSWORD);
  return [printed.KAFKA_SASL_PASSWORD, key];
}

for (const threads of ["0", "1"]) {
  const where = threads === "0" ? "on the main thread" : "on a delivery thread";
  test(`ingest and delivery end to end over SASL_SSL with mutual TLS (delivery ${where})`, async (t) => {
    // Debug logs on the main thread: not even those may hold a secret.
    const gw = await startSecureGateway(t, { DELIVERY_THREADS: threads }, threads === "0" ? "debug" : "warn");
    await gw.gateway.kafkaReady;
    // The readiness probe's own admin client logs in too (TLS and SCRAM: give a loaded machine time).
    await waitFor(
      async () => (await fetch(`${gw.gateway.url}/readyz`)).status === 200,
      "/readyz 200",
      15_000,
    );
    const receiver = await startReceiver();
    t.after(() => receiver.close());

    const created = await gw.post(
      "/api/destinations",
      { url: receiver.url },
      { authorization: `Bearer ${TOKEN}` },
    );
    assert.equal(created.status, 201);
    const accepted = await gw.post("/api/singleEvent", {
      userID: "u1",
      type: "order.created",
      payload: { n: 1 },
    });
    assert.equal(accepted.status, 202);
    const { id } = (await accepted.json()) as { id: string };
    await waitFor(() => receiver.delivered.length >= 1, "the event at the receiver", 30_000);
    assert.equal(receiver.delivered[0]?.id, id);
    assert.deepEqual(receiver.delivered[0]?.payload, { n: 1 });

    const logs = gw.logs();
    for (const secret of secrets()) assert.ok(!logs.includes(secret), "a secret in the gateway's log");
  });
}

/** Connects an admin client with `security` and no retries; resolves to what it says (or "connected"). */
async function connectWith(security: KafkaSecurity): Promise<{ err?: Error; described: string }> {
  const client = createKafka({
    brokers,
    clientId: uniqueName("secure-probe"),
    security,
    overrides: { connectionTimeout: 2000, retry: { retries: 0 } },
  });
  const admin = client.admin();
  try {
    await admin.connect();
    await admin.describeCluster();
    return { described: "connected" };
  } catch (err) {
    return { err: err as Error, described: describeKafkaError(client, err) };
  } finally {
    await admin.disconnect().catch(() => {});
  }
}

/** The KafkaJS error and its causes, by name. */
function names(err: Error | undefined): string[] {
  const out: string[] = [];
  for (let e = err as { name?: string; cause?: unknown } | undefined; e; e = e.cause as typeof e) {
    out.push(e.name ?? "");
  }
  return out;
}

test("every mechanism the runner enables logs in: SCRAM-SHA-256, SCRAM-SHA-512 and PLAIN", async () => {
  const { tls, sasl } = security;
  assert.ok(tls && sasl);
  for (const mechanism of ["scram-sha-256", "scram-sha-512", "plain"] as const) {
    const { described } = await connectWith({ tls, sasl: { ...sasl, mechanism } });
    assert.equal(described, "connected", mechanism);
  }
});

/**
 * The gateway started with `env` keeps serving, is not ready, answers ingest with 503, and logs why
 * (once) in words that match `reason`, without any secret.
 */
async function assertGatewayRefused(t: TestContext, env: Record<string, string>, reason: RegExp) {
  const gw = await startSecureGateway(t, env);
  await waitFor(
    () => /cannot make sure the Kafka topics exist/.test(gw.logs()),
    "the gateway's log of the refusal",
    30_000,
  );
  const line =
    gw
      .logs()
      .split("\n")
      .find((l) => l.includes("cannot make sure the Kafka topics exist")) ?? "";
  assert.match(JSON.parse(line).err, reason);
  assert.equal((await fetch(`${gw.gateway.url}/readyz`)).status, 503);
  const refused = await gw.post("/api/singleEvent", { userID: "u1", payload: {} });
  assert.equal(refused.status, 503);
  for (const secret of [...secrets(), ...Object.values(env)].filter((s) => s.length > 8)) {
    if (secret.startsWith("/")) continue; // file names may be logged; their content may not
    assert.ok(!gw.logs().includes(secret), "a secret in the gateway's log");
  }
}

test("a wrong password is refused: SASL authentication failed", async (t) => {
  const { tls, sasl } = security;
  assert.ok(tls && sasl);
  const wrong = `wrong-${sasl.password}`;
  const { err, described } = await connectWith({ tls, sasl: { ...sasl, password: wrong } });
  assert.equal(err?.name, "KafkaJSSASLAuthenticationError");
  assert.match(described, /authentication failed.*invalid credentials/i);
  assert.match(described, /check KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD/);

  await assertGatewayRefused(t, { KAFKA_SASL_PASSWORD: wrong }, /SASL SCRAM SHA256 authentication failed/);
});

test("a CA that did not sign the broker's certificate is refused: the certificate is not trusted", async (t) => {
  const { tls, sasl } = security;
  assert.ok(tls && sasl);
  const { err, described } = await connectWith({
    tls: { ...tls, ca: readFileSync(foreign.caFile, "utf8") },
    sasl,
  });
  assert.ok(names(err).includes("KafkaJSConnectionError"), names(err).join(" < "));
  assert.equal((err?.cause as { code?: string } | undefined)?.code, "UNABLE_TO_VERIFY_LEAF_SIGNATURE");
  assert.match(described, /not signed by a CA this client trusts: set KAFKA_SSL_CA_FILE/);

  await assertGatewayRefused(t, { KAFKA_SSL_CA_FILE: foreign.caFile }, /set KAFKA_SSL_CA_FILE/);
});

test("a plaintext client is refused: the broker hangs up, and the error says to set KAFKA_SSL", async (t) => {
  const { err, described } = await connectWith({});
  assert.ok(names(err).includes("KafkaJSConnectionClosedError"), names(err).join(" < "));
  assert.match(described, /if its listener is SSL or SASL_SSL, set KAFKA_SSL=true/);

  // Empty means unset: the gateway gets the brokers and nothing else.
  const plaintext = Object.fromEntries(Object.keys(printed).map((name) => [name, ""]));
  await assertGatewayRefused(
    t,
    { ...plaintext, KAFKA_BROKERS: brokers.join(",") },
    /Closed connection.*set KAFKA_SSL=true/,
  );
});

test("mutual TLS: no client certificate, or one from another CA, is refused by the broker", async () => {
  const { tls, sasl } = security;
  assert.ok(tls && sasl);
  const none = await connectWith({ tls: { ...tls, cert: undefined, key: undefined }, sasl });
  assert.ok(names(none.err).includes("KafkaJSConnectionError"), names(none.err).join(" < "));
  assert.match(none.described, /the broker wants a client certificate: set KAFKA_SSL_CERT_FILE/);

  const intruder = await connectWith({
    tls: { ...tls, cert: readFileSync(foreign.certFile, "utf8"), key: readFileSync(foreign.keyFile, "utf8") },
    sasl,
  });
  assert.ok(names(intruder.err).includes("KafkaJSConnectionError"), names(intruder.err).join(" < "));
  assert.match(intruder.described, /the broker refused this client's certificate/);
});

test("SIGTERM stops the secure broker and removes its keys", async () => {
  const keyFile = printed.KAFKA_SSL_KEY_FILE ?? "";
  assert.ok(existsSync(keyFile));
  cli?.kill("SIGTERM");
  await cliExited;
  assert.equal(existsSync(keyFile), false, "the run's key files are gone");
});
