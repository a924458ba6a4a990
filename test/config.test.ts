import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { generateKeyPairSync } from "node:crypto";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { ConfigError, loadConfig } from "../src/config.ts";
import { tlsOptions } from "../src/kafka/client.ts";
import { createLocalCa, issueCertificate, type LocalCertificate } from "../src/kafka/local-tls.ts";

// Settings of TLS and SASL to a Kafka cluster: read and checked at start-up, reported by name, never echoed.

const PASSWORD = "s3cret-never-printed";
let dir: string;
let caFile: string;
let client: LocalCertificate;
let other: LocalCertificate;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "config-test-"));
  const ca = await createLocalCa(join(dir, "ca"));
  caFile = ca.caFile;
  client = await issueCertificate(ca, "client");
  other = await issueCertificate(ca, "other");
});
after(() => rmSync(dir, { recursive: true, force: true }));

const BROKERS = { KAFKA_BROKERS: "kafka-1:9093,kafka-2:9093" };

function file(name: string, content: string): string {
  const path = join(dir, name);
  writeFileSync(path, content);
  return path;
}

/** The ConfigError's message for `env`; fails if the config loads. */
function problems(env: Record<string, string>): string {
  try {
    loadConfig(env);
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return err.message;
  }
  assert.fail(`expected ${JSON.stringify(env)} to be refused`);
}

test("no Kafka security settings: plaintext, no authentication", () => {
  assert.deepEqual(loadConfig(BROKERS).kafkaSecurity, {});
  assert.deepEqual(loadConfig({}).kafkaSecurity, {});
});

test("TLS with a CA, a client certificate and key, and SCRAM: files read, checks on by default", () => {
  const config = loadConfig({
    ...BROKERS,
    KAFKA_SSL: "true",
    KAFKA_SSL_CA_FILE: caFile,
    KAFKA_SSL_CERT_FILE: client.certFile,
    KAFKA_SSL_KEY_FILE: client.keyFile,
    KAFKA_SASL_MECHANISM: "SCRAM-SHA-512", // Kafka's spelling is accepted too
    KAFKA_SASL_USERNAME: "gateway",
    KAFKA_SASL_PASSWORD: PASSWORD,
  });
  assert.deepEqual(config.kafkaSecurity, {
    tls: {
      ca: readFileSync(caFile, "utf8"),
      cert: readFileSync(client.certFile, "utf8"),
      key: readFileSync(client.keyFile, "utf8"),
      rejectUnauthorized: true,
      checkHostname: true,
    },
    sasl: { mechanism: "scram-sha-512", username: "gateway", password: PASSWORD },
  });
  // The password is in kafkaSecurity only, not among the plain settings.
  assert.equal("KAFKA_SASL_PASSWORD" in config, false);
  // Delivery threads get the Config by structured clone: the security settings must survive it.
  assert.deepEqual(structuredClone(config).kafkaSecurity, config.kafkaSecurity);
  const options = tlsOptions(config.kafkaSecurity.tls as NonNullable<typeof config.kafkaSecurity.tls>);
  assert.equal(options.rejectUnauthorized, true);
  assert.equal(options.checkServerIdentity, undefined, "Node's own host name check stays");
});

test("TLS alone uses Node's CA list; the name check and the chain check can be turned off", () => {
  const config = loadConfig({
    ...BROKERS,
    KAFKA_SSL: "true",
    KAFKA_SSL_CHECK_HOSTNAME: "false",
  });
  const tls = config.kafkaSecurity.tls;
  assert.deepEqual(tls, {
    ca: undefined,
    cert: undefined,
    key: undefined,
    rejectUnauthorized: true,
    checkHostname: false,
  });
  const options = tlsOptions(tls as NonNullable<typeof tls>);
  assert.equal("ca" in options, false);
  assert.equal(options.checkServerIdentity?.("kafka-1", {} as never), undefined);
  const loose = loadConfig({ ...BROKERS, KAFKA_SSL: "1", KAFKA_SSL_REJECT_UNAUTHORIZED: "false" });
  assert.equal(loose.kafkaSecurity.tls?.rejectUnauthorized, false);
});

test("the password can come from a file; one trailing line break is dropped", () => {
  const config = loadConfig({
    ...BROKERS,
    KAFKA_SASL_MECHANISM: "plain",
    KAFKA_SASL_USERNAME: "gateway",
    KAFKA_SASL_PASSWORD_FILE: file("password", `${PASSWORD}\n`),
  });
  assert.deepEqual(config.kafkaSecurity.sasl, {
    mechanism: "plain",
    username: "gateway",
    password: PASSWORD,
  });
  assert.equal(config.kafkaSecurity.tls, undefined, "SASL without TLS (SASL_PLAINTEXT) is allowed");
});

test("TLS files that are missing, folders or not PEM are refused by name", () => {
  const message = problems({
    ...BROKERS,
    KAFKA_SSL: "true",
    KAFKA_SSL_CA_FILE: join(dir, "no-such-ca.pem"),
    KAFKA_SSL_CERT_FILE: dir,
    KAFKA_SSL_KEY_FILE: file("not-a-key.pem", "hello\n"),
  });
  assert.match(message, /KAFKA_SSL_CA_FILE: cannot read .*no-such-ca\.pem: no such file/);
  assert.match(message, /KAFKA_SSL_CERT_FILE: cannot read .*: is a folder, not a file/);
  assert.match(message, /KAFKA_SSL_KEY_FILE: .*not-a-key\.pem holds no PEM private key/);
  assert.match(
    problems({ ...BROKERS, KAFKA_SSL: "true", KAFKA_SSL_CA_FILE: client.keyFile }),
    /KAFKA_SSL_CA_FILE: .* holds no PEM certificate/,
  );
});

/**
 * `problems(env)` in a process that cannot read past file permissions: as root (CI), a child without the
 * capabilities that let root read any file (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH); otherwise this process.
 */
function problemsWithoutFileCapabilities(env: Record<string, string>): string {
  if (process.getuid?.() !== 0) return problems(env);
  const config = new URL("../src/config.ts", import.meta.url).href;
  const script = `import { loadConfig } from ${JSON.stringify(config)};
try { loadConfig(JSON.parse(process.env.CONFIG_ENV)); console.log("accepted"); } catch (err) { console.log(err.message); }`;
  const caps = "-dac_override,-dac_read_search";
  const child = spawnSync(
    "setpriv",
    ["--bounding-set", caps, "--inh-caps", caps, process.execPath, "--input-type=module", "-e", script],
    { env: { PATH: process.env.PATH ?? "", CONFIG_ENV: JSON.stringify(env) }, encoding: "utf8" },
  );
  assert.equal(child.status, 0, child.stderr);
  return child.stdout;
}

test("an unreadable file is refused with 'permission denied'", () => {
  const path = file("locked.pem", readFileSync(caFile, "utf8"));
  chmodSync(path, 0o000);
  assert.match(
    problemsWithoutFileCapabilities({ ...BROKERS, KAFKA_SSL: "true", KAFKA_SSL_CA_FILE: path }),
    /KAFKA_SSL_CA_FILE: cannot read .*locked\.pem: permission denied/,
  );
});

test("a client certificate needs its key, the key must match it and be unencrypted", () => {
  assert.match(
    problems({ ...BROKERS, KAFKA_SSL: "true", KAFKA_SSL_CERT_FILE: client.certFile }),
    /KAFKA_SSL_KEY_FILE: is needed with KAFKA_SSL_CERT_FILE/,
  );
  assert.match(
    problems({ ...BROKERS, KAFKA_SSL: "true", KAFKA_SSL_KEY_FILE: client.keyFile }),
    /KAFKA_SSL_CERT_FILE: is needed with KAFKA_SSL_KEY_FILE/,
  );
  assert.match(
    problems({
      ...BROKERS,
      KAFKA_SSL: "true",
      KAFKA_SSL_CERT_FILE: client.certFile,
      KAFKA_SSL_KEY_FILE: other.keyFile,
    }),
    /KAFKA_SSL_KEY_FILE: .*other\.key is not the private key of the certificate in .*client\.pem/,
  );
  const encrypted = generateKeyPairSync("rsa", {
    modulusLength: 2048,
    publicKeyEncoding: { type: "spki", format: "pem" },
    privateKeyEncoding: { type: "pkcs8", format: "pem", cipher: "aes-256-cbc", passphrase: "pass" },
  }).privateKey;
  assert.match(
    problems({
      ...BROKERS,
      KAFKA_SSL: "true",
      KAFKA_SSL_CERT_FILE: client.certFile,
      KAFKA_SSL_KEY_FILE: file("encrypted.key", encrypted),
    }),
    /KAFKA_SSL_KEY_FILE: .*encrypted\.key is an encrypted private key/,
  );
});

test("TLS files without KAFKA_SSL=true are refused rather than ignored", () => {
  assert.match(
    problems({ ...BROKERS, KAFKA_SSL_CA_FILE: caFile }),
    /KAFKA_SSL_CA_FILE: is set but KAFKA_SSL is not true/,
  );
  assert.match(problems({ ...BROKERS, KAFKA_SSL: "maybe" }), /KAFKA_SSL: must be true or false/);
});

test("SASL: a known mechanism, with both a username and a password", () => {
  assert.match(
    problems({ ...BROKERS, KAFKA_SASL_MECHANISM: "gssapi" }),
    /KAFKA_SASL_MECHANISM: must be plain, scram-sha-256 or scram-sha-512/,
  );
  const missing = problems({ ...BROKERS, KAFKA_SASL_MECHANISM: "scram-sha-256" });
  assert.match(missing, /KAFKA_SASL_USERNAME: is needed with KAFKA_SASL_MECHANISM=scram-sha-256/);
  assert.match(missing, /KAFKA_SASL_PASSWORD: is needed with KAFKA_SASL_MECHANISM=scram-sha-256/);
  assert.match(
    problems({ ...BROKERS, KAFKA_SASL_USERNAME: "gateway", KAFKA_SASL_PASSWORD: PASSWORD }),
    /KAFKA_SASL_USERNAME: is set but KAFKA_SASL_MECHANISM is not/,
  );
  const both = problems({
    ...BROKERS,
    KAFKA_SASL_MECHANISM: "plain",
    KAFKA_SASL_USERNAME: "gateway",
    KAFKA_SASL_PASSWORD: PASSWORD,
    KAFKA_SASL_PASSWORD_FILE: file("pw", PASSWORD),
  });
  assert.match(both, /KAFKA_SASL_PASSWORD_FILE: set either KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE/);
  assert.match(
    problems({
      ...BROKERS,
      KAFKA_SASL_MECHANISM: "plain",
      KAFKA_SASL_USERNAME: "gateway",
      KAFKA_SASL_PASSWORD_FILE: file("empty", "\n"),
    }),
    /KAFKA_SASL_PASSWORD_FILE: .*empty is empty/,
  );
  // Whatever is wrong, the message never holds the password or a key.
  for (const message of [both, missing]) assert.ok(!message.includes(PASSWORD));
});

test("TLS or SASL without KAFKA_BROKERS is refused: the embedded broker is plaintext", () => {
  const message = problems({
    KAFKA_SSL: "true",
    KAFKA_SASL_MECHANISM: "plain",
    KAFKA_SASL_USERNAME: "gateway",
    KAFKA_SASL_PASSWORD: PASSWORD,
  });
  assert.match(message, /KAFKA_BROKERS: is needed with KAFKA_SSL or KAFKA_SASL_MECHANISM/);
  assert.match(message, /npm run kafka -- --secure/);
  assert.ok(!message.includes(PASSWORD));
});

test("ingest producer settings: INGEST_PRODUCER_THREAD is a boolean, off by default", () => {
  assert.equal(loadConfig(BROKERS).INGEST_PRODUCER_THREAD, false);
  assert.equal(loadConfig({ ...BROKERS, INGEST_PRODUCER_THREAD: "true" }).INGEST_PRODUCER_THREAD, true);
  assert.match(
    problems({ ...BROKERS, INGEST_PRODUCER_THREAD: "maybe" }),
    /INGEST_PRODUCER_THREAD: must be true or false/,
  );
});

test("ingest producer settings: BATCH_SEND_EARLY is a boolean, on by default", () => {
  assert.equal(loadConfig(BROKERS).BATCH_SEND_EARLY, true);
  assert.equal(loadConfig({ ...BROKERS, BATCH_SEND_EARLY: "false" }).BATCH_SEND_EARLY, false);
  assert.match(problems({ ...BROKERS, BATCH_SEND_EARLY: "soon" }), /BATCH_SEND_EARLY: must be true or false/);
});

test("ingest producer settings: INGEST_SENDER is own (default) or kafkajs", () => {
  assert.equal(loadConfig(BROKERS).INGEST_SENDER, "own");
  assert.equal(loadConfig({ ...BROKERS, INGEST_SENDER: "kafkajs" }).INGEST_SENDER, "kafkajs");
  assert.match(
    problems({ ...BROKERS, INGEST_SENDER: "platformatic" }),
    /INGEST_SENDER: must be own or kafkajs/,
  );
});
