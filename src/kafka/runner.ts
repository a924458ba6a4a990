import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createWriteStream, existsSync, type WriteStream } from "node:fs";
import { mkdir, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { createKafka, type KafkaSecurity } from "./client.ts";
import { assertJava, ensureKafkaJars } from "./jars.ts";
import { assertOpenssl, createLocalCa, issueCertificate } from "./local-tls.ts";

/** Options of a local KRaft broker or cluster (combined broker+controller nodes on 127.0.0.1). */
export interface LocalKafkaOptions {
  /** 1 (default) or 3 nodes. Three nodes get replication factor 3 and `min.insync.replicas=2`. */
  nodes?: number;
  /** Client port of node 1; node n listens on port + n - 1. A free port when absent. */
  port?: number;
  /** JVM heap per node in MiB. Default 512 for one node, 384 each for three. */
  heapMb?: number;
  /** Progress and node-exit reports (the CLI sends them to stderr). */
  log?: (line: string) => void;
  /**
   * Extra broker settings, one `server.properties` line each: a key the runner already sets is replaced,
   * any other key is appended. For tests of broker-side behaviour, e.g. `offsets.retention.minutes`.
   */
  properties?: Record<string, string>;
  /**
   * Clients connect over SASL_SSL instead of PLAINTEXT: a CA and certificates made for the run (openssl),
   * a client certificate required (mutual TLS) and SCRAM-SHA-256/512 and PLAIN for one client user.
   * Brokers talk to each other over the same listener (SCRAM-SHA-256); the controller listener stays
   * plaintext on 127.0.0.1. `LocalKafka.clientEnv` holds what a client needs.
   */
  secure?: boolean;
}

/** Files and credentials of a secure run (all inside its data folder, gone when it stops). */
export interface LocalKafkaSecrets {
  caFile: string;
  /** The CA's private key: tests sign certificates of their own with it. */
  caKeyFile: string;
  /** A client certificate signed by the CA, and its key (the broker requires one). */
  clientCertFile: string;
  clientKeyFile: string;
  username: string;
  password: string;
}

export interface LocalKafkaNode {
  id: number;
  address: string;
  port: number;
  controllerPort: number;
  /** The JVM's pid while the node runs; fault tests SIGKILL it. */
  pid: number | undefined;
  running: boolean;
}

interface NodeState extends LocalKafkaNode {
  propsPath: string;
  logPath: string;
  child: ChildProcess | undefined;
  exited: Promise<void>;
}

const DIR_PREFIX = "webhook-gateway-kafka-";

/** A loopback port nobody listens on right now (for a server started later). */
export async function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = createServer();
    server.unref();
    server.on("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => done(port));
    });
  });
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Removes data folders of runners that died without cleaning up (their pid is in the name). */
async function sweepStaleDirs(): Promise<void> {
  const entries = await readdir(tmpdir()).catch(() => [] as string[]);
  for (const name of entries) {
    if (!name.startsWith(DIR_PREFIX)) continue;
    const pid = Number(name.slice(DIR_PREFIX.length).split("-")[0]);
    if (Number.isInteger(pid) && pid > 0 && !isAlive(pid)) {
      await rm(join(tmpdir(), name), { recursive: true, force: true });
    }
  }
}

/** Fails before anything is started when a property could not be one `key=value` line. */
function checkProperties(properties: Record<string, string>): void {
  for (const [key, value] of Object.entries(properties)) {
    if (!/^[A-Za-z0-9._-]+$/.test(key))
      throw new Error(`invalid broker property name: ${JSON.stringify(key)}`);
    if (/[\r\n]/.test(value)) throw new Error(`broker property ${key} has a line break in its value`);
  }
}

/** Replaces the lines of keys in `overrides` and appends the keys not yet there. */
function applyOverrides(lines: string[], overrides: Record<string, string>): string[] {
  const pending = new Map(Object.entries(overrides));
  const out = lines.map((line) => {
    const key = line.slice(0, line.indexOf("="));
    const value = pending.get(key);
    if (value === undefined) return line;
    pending.delete(key);
    return `${key}=${value}`;
  });
  for (const [key, value] of pending) out.push(`${key}=${value}`);
  return out;
}

/** What the broker side of a secure run needs: its key store, the CA, the inter-broker SCRAM user. */
interface BrokerTls {
  keystoreFile: string;
  caFile: string;
  brokerUser: string;
  brokerPassword: string;
  clientUser: string;
  clientPassword: string;
}

/** Listener lines: PLAINTEXT, or SASL_SSL for clients and brokers; the controller's is plaintext either way. */
function listenerProperties(node: NodeState, tls: BrokerTls | undefined): string[] {
  const controller = `CONTROLLER://127.0.0.1:${node.controllerPort}`;
  if (!tls) {
    return [
      `listeners=PLAINTEXT://127.0.0.1:${node.port},${controller}`,
      `advertised.listeners=PLAINTEXT://127.0.0.1:${node.port}`,
      "controller.listener.names=CONTROLLER",
      "inter.broker.listener.name=PLAINTEXT",
      "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
    ];
  }
  const scram = "org.apache.kafka.common.security.scram.ScramLoginModule required";
  return [
    `listeners=SASL_SSL://127.0.0.1:${node.port},${controller}`,
    `advertised.listeners=SASL_SSL://127.0.0.1:${node.port}`,
    "controller.listener.names=CONTROLLER",
    "inter.broker.listener.name=SASL_SSL",
    "listener.security.protocol.map=CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL",
    "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
    "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-256",
    // One JAAS line per mechanism on the listener. SCRAM users live in the cluster metadata (formatted
    // with --add-scram); the broker logs in to the others with the first line's user. PLAIN users are
    // listed in their line.
    `listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=${scram} username="${tls.brokerUser}" password="${tls.brokerPassword}";`,
    `listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=${scram};`,
    `listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_${tls.clientUser}="${tls.clientPassword}";`,
    // PEM files straight from openssl: the key store file is the private key (PKCS#8) then the certificate.
    "ssl.keystore.type=PEM",
    `ssl.keystore.location=${tls.keystoreFile}`,
    "ssl.truststore.type=PEM",
    `ssl.truststore.location=${tls.caFile}`,
    // Clients need a certificate signed by the CA as well as a SASL login (mutual TLS). On a SASL_SSL
    // listener only the listener-prefixed setting counts (KIP-684); a plain ssl.client.auth is ignored.
    "listener.name.sasl_ssl.ssl.client.auth=required",
  ];
}

function serverProperties(
  node: NodeState,
  voters: string,
  dataDir: string,
  clusterSize: number,
  overrides: Record<string, string> = {},
  tls?: BrokerTls,
): string {
  const replicated = clusterSize >= 3;
  const lines = [
    "process.roles=broker,controller",
    `node.id=${node.id}`,
    `controller.quorum.voters=${voters}`,
    ...listenerProperties(node, tls),
    `log.dirs=${dataDir}`,
    "num.partitions=1",
    // Topics are created on purpose (the gateway does it at start-up); a typo must not invent one.
    "auto.create.topics.enable=false",
    `default.replication.factor=${replicated ? 3 : 1}`,
    `min.insync.replicas=${replicated ? 2 : 1}`,
    `offsets.topic.replication.factor=${replicated ? 3 : 1}`,
    // A small offsets topic makes the first consumer-group join of a test fast.
    "offsets.topic.num.partitions=4",
    `transaction.state.log.replication.factor=${replicated ? 3 : 1}`,
    `transaction.state.log.min.isr=${replicated ? 2 : 1}`,
    "group.initial.rebalance.delay.ms=0",
    // Fence a SIGKILLed node within a few seconds so leadership and the ISR move on quickly.
    "broker.heartbeat.interval.ms=1000",
    "broker.session.timeout.ms=6000",
    "num.network.threads=2",
    "num.io.threads=4",
    // The log cleaner allocates its whole dedupe buffer (default 128 MiB) up front when it starts; on a small
    // heap that alone made a node die with OutOfMemoryError at start-up (CI, 256 MiB heap). 16 MiB still maps
    // ~700k keys per cleaning pass, far more than a local broker's compacted topics hold.
    "log.cleaner.dedupe.buffer.size=16777216",
  ];
  return `${applyOverrides(lines, overrides).join("\n")}\n`;
}

const LOG4J2 = `status = warn
appender.console.type = Console
appender.console.name = OUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.out.ref = OUT
`;

async function runToCompletion(cmd: string, args: string[], logFile: string): Promise<void> {
  const out = createWriteStream(logFile, { flags: "a" });
  const code = await new Promise<number>((done, fail) => {
    const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
    child.stdout.pipe(out, { end: false });
    child.stderr.pipe(out, { end: false });
    child.on("error", fail);
    child.on("exit", (c) => done(c ?? 1));
  });
  out.end();
  if (code !== 0) {
    const tail = (await readFile(logFile, "utf8")).slice(-2000);
    // The last arguments name the step; SCRAM arguments (passwords) are left out of the message.
    const shown = args.filter((a, i) => a !== "--add-scram" && args[i - 1] !== "--add-scram").slice(-4);
    throw new Error(`${cmd} ${shown.join(" ")} failed (exit ${code}):\n${tail}`);
  }
}

/**
 * A local Apache Kafka (KRaft) on 127.0.0.1 made of JVMs this process owns.
 *
 * Every JVM runs under `setpriv --pdeathsig KILL`, so the kernel kills it when this process dies for any
 * reason (SIGKILL included): no orphaned broker survives a crashed test or runner.
 */
export class LocalKafka {
  readonly brokers: string[];
  readonly dataRoot: string;
  /** What a client of this cluster needs besides the brokers (empty for a plaintext one). */
  readonly security: KafkaSecurity;
  /** A secure run's CA, client certificate and SCRAM user; undefined for a plaintext one. */
  readonly secrets: LocalKafkaSecrets | undefined;
  #nodes: NodeState[];
  #classpath: string;
  #jvmArgs: string[];
  #log: (line: string) => void;
  #stopping = false;
  #exitListeners: Array<(node: LocalKafkaNode, code: number | null, signal: string | null) => void> = [];

  constructor(
    nodes: NodeState[],
    dataRoot: string,
    classpath: string,
    jvmArgs: string[],
    log: (l: string) => void,
    secrets?: LocalKafkaSecrets,
    security: KafkaSecurity = {},
  ) {
    this.#nodes = nodes;
    this.dataRoot = dataRoot;
    this.secrets = secrets;
    this.security = security;
    this.#classpath = classpath;
    this.#jvmArgs = jvmArgs;
    this.#log = log;
    this.brokers = nodes.map((n) => n.address);
  }

  /**
   * The gateway's settings for this cluster, named as src/config.ts reads them: `KAFKA_BROKERS`, and for a
   * secure run the TLS files and the SCRAM user (`npm run kafka` prints them as `NAME=value` lines).
   */
  get clientEnv(): Record<string, string> {
    const env: Record<string, string> = { KAFKA_BROKERS: this.brokers.join(",") };
    const s = this.secrets;
    if (!s) return env;
    return {
      ...env,
      KAFKA_SSL: "true",
      KAFKA_SSL_CA_FILE: s.caFile,
      KAFKA_SSL_CERT_FILE: s.clientCertFile,
      KAFKA_SSL_KEY_FILE: s.clientKeyFile,
      KAFKA_SASL_MECHANISM: "scram-sha-256",
      KAFKA_SASL_USERNAME: s.username,
      KAFKA_SASL_PASSWORD: s.password,
    };
  }

  get nodes(): LocalKafkaNode[] {
    return this.#nodes.map(({ id, address, port, controllerPort, pid, running }) => ({
      id,
      address,
      port,
      controllerPort,
      pid,
      running,
    }));
  }

  /** Called whenever a node's JVM exits while the cluster is not being stopped. */
  onNodeExit(listener: (node: LocalKafkaNode, code: number | null, signal: string | null) => void): void {
    this.#exitListeners.push(listener);
  }

  #node(id: number): NodeState {
    const node = this.#nodes.find((n) => n.id === id);
    if (!node) throw new Error(`no Kafka node with id ${id}`);
    return node;
  }

  /** Starts (or restarts) the JVM of one node; its data folder is kept, so it rejoins with its log. */
  spawnNode(id: number): void {
    const node = this.#node(id);
    if (node.running) throw new Error(`Kafka node ${id} is already running`);
    const out: WriteStream = createWriteStream(node.logPath, { flags: "a" });
    const child = spawn(
      "setpriv",
      [
        "--pdeathsig",
        "KILL",
        "java",
        ...this.#jvmArgs,
        "-cp",
        this.#classpath,
        "kafka.Kafka",
        node.propsPath,
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    child.stdout?.pipe(out, { end: false });
    child.stderr?.pipe(out, { end: false });
    node.child = child;
    node.pid = child.pid;
    node.running = true;
    node.exited = new Promise((done) => {
      child.on("exit", (code, signal) => {
        node.running = false;
        node.pid = undefined;
        node.child = undefined;
        out.end();
        if (!this.#stopping) {
          this.#log(
            `KAFKA_NODE id=${node.id} exited (${signal ?? `code ${code}`}); the other nodes keep running`,
          );
          for (const listener of this.#exitListeners) listener(node, code, signal);
        }
        done();
      });
    });
  }

  /** Waits until the cluster lists every running node as a live broker. */
  async waitReady(timeoutMs = 90_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const wanted = this.#nodes.filter((n) => n.running).map((n) => n.id);
    const live = this.#nodes.filter((n) => n.running).map((n) => n.address);
    let lastError: unknown;
    while (Date.now() < deadline) {
      for (const n of this.#nodes) {
        if (wanted.includes(n.id) && !n.running) {
          throw new Error(`Kafka node ${n.id} exited while starting:\n${await this.logTail(n.id)}`);
        }
      }
      const admin = createKafka({
        brokers: live,
        clientId: "local-kafka-ready",
        security: this.security,
        overrides: { connectionTimeout: 1000, retry: { retries: 0 } },
      }).admin();
      try {
        await admin.connect();
        await admin.listTopics();
        const { brokers } = await admin.describeCluster();
        const ids = new Set(brokers.map((b) => b.nodeId));
        if (wanted.every((id) => ids.has(id))) return;
      } catch (err) {
        lastError = err;
      } finally {
        await admin.disconnect().catch(() => {});
      }
      await sleep(250);
    }
    throw new Error(`Kafka did not become ready within ${timeoutMs} ms: ${String(lastError)}`);
  }

  async logTail(id: number, chars = 3000): Promise<string> {
    const node = this.#node(id);
    return existsSync(node.logPath) ? (await readFile(node.logPath, "utf8")).slice(-chars) : "";
  }

  /** Sends `signal` (default SIGKILL) to one node's JVM and waits for it to exit. */
  async killNode(id: number, signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
    const node = this.#node(id);
    if (!node.running || !node.child) return;
    node.child.kill(signal);
    await node.exited;
  }

  /** Starts a stopped node again and waits until the cluster lists it. */
  async restartNode(id: number, timeoutMs = 90_000): Promise<void> {
    this.spawnNode(id);
    await this.waitReady(timeoutMs);
  }

  /** Kills every JVM, waits for them to exit and removes the data folder. Idempotent. */
  async stop(): Promise<void> {
    this.#stopping = true;
    for (const node of this.#nodes) node.child?.kill("SIGKILL");
    await Promise.all(this.#nodes.map((n) => n.exited));
    await rm(this.dataRoot, { recursive: true, force: true });
  }
}

/**
 * A secure run's CA and certificates (openssl, in `<dataRoot>/tls`), SCRAM users with random passwords,
 * and the storage tool arguments that put those users into the cluster metadata (KIP-900), so SCRAM works
 * from the first start on.
 */
async function prepareSecureRun(dataRoot: string) {
  try {
    const ca = await createLocalCa(join(dataRoot, "tls"));
    const broker = await issueCertificate(ca, "broker");
    const client = await issueCertificate(ca, "client");
    // Hex passwords: nothing in them needs quoting in a JAAS line or an --add-scram argument.
    const tls: BrokerTls = {
      keystoreFile: broker.keystoreFile,
      caFile: ca.caFile,
      brokerUser: "broker",
      brokerPassword: randomBytes(18).toString("hex"),
      clientUser: "gateway",
      clientPassword: randomBytes(18).toString("hex"),
    };
    const formatArgs: string[] = [];
    for (const [name, password] of [
      [tls.brokerUser, tls.brokerPassword],
      [tls.clientUser, tls.clientPassword],
    ]) {
      for (const mechanism of ["SCRAM-SHA-256", "SCRAM-SHA-512"]) {
        formatArgs.push("--add-scram", `${mechanism}=[name=${name},password=${password}]`);
      }
    }
    const secrets: LocalKafkaSecrets = {
      caFile: ca.caFile,
      caKeyFile: ca.caKeyFile,
      clientCertFile: client.certFile,
      clientKeyFile: client.keyFile,
      username: tls.clientUser,
      password: tls.clientPassword,
    };
    const security: KafkaSecurity = {
      tls: {
        ca: await readFile(ca.caFile, "utf8"),
        cert: await readFile(client.certFile, "utf8"),
        key: await readFile(client.keyFile, "utf8"),
        rejectUnauthorized: true,
        checkHostname: true,
      },
      sasl: { mechanism: "scram-sha-256", username: secrets.username, password: secrets.password },
    };
    return { tls, secrets, security, formatArgs };
  } catch (err) {
    await rm(dataRoot, { recursive: true, force: true });
    throw err;
  }
}

/** Fetches the jars if needed, formats fresh KRaft storage, starts the node(s) and waits until ready. */
export async function startLocalKafka(opts: LocalKafkaOptions = {}): Promise<LocalKafka> {
  const count = opts.nodes ?? 1;
  if (count !== 1 && count !== 3) throw new Error(`--nodes must be 1 or 3, got ${count}`);
  checkProperties(opts.properties ?? {});
  const log = opts.log ?? (() => {});
  assertJava();
  if (opts.secure) assertOpenssl();
  const { libs } = await ensureKafkaJars({ log });
  await sweepStaleDirs();

  const dataRoot = join(tmpdir(), `${DIR_PREFIX}${process.pid}-${randomBytes(4).toString("hex")}`);
  // Readable by this user only: a secure run keeps keys and passwords in it.
  await mkdir(dataRoot, { recursive: true, mode: 0o700 });
  const log4jPath = join(dataRoot, "log4j2.properties");
  await writeFile(log4jPath, LOG4J2);

  const nodes: NodeState[] = [];
  for (let i = 0; i < count; i++) {
    const id = i + 1;
    const port = opts.port ? opts.port + i : await freePort();
    nodes.push({
      id,
      port,
      address: `127.0.0.1:${port}`,
      controllerPort: await freePort(),
      pid: undefined,
      running: false,
      propsPath: join(dataRoot, `node-${id}.properties`),
      logPath: join(dataRoot, `node-${id}.log`),
      child: undefined,
      exited: Promise.resolve(),
    });
  }
  const voters = nodes.map((n) => `${n.id}@127.0.0.1:${n.controllerPort}`).join(",");
  // A KRaft cluster id is 16 random bytes in URL-safe base64 without padding (what `random-uuid` prints).
  // Like Kafka's own Uuid.randomUuid, never one starting with "-": the storage tool would read it as a flag.
  let clusterId = randomBytes(16).toString("base64url");
  while (clusterId.startsWith("-")) clusterId = randomBytes(16).toString("base64url");
  const heap = opts.heapMb ?? (count === 1 ? 512 : 384);
  const jvmArgs = [
    `-Xms${Math.min(128, heap)}m`,
    `-Xmx${heap}m`,
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
    `-Dlog4j2.configurationFile=${log4jPath}`,
  ];
  const classpath = join(libs, "*");

  const secure = opts.secure ? await prepareSecureRun(dataRoot) : undefined;
  try {
    await Promise.all(
      nodes.map(async (node) => {
        const dataDir = join(dataRoot, `data-${node.id}`);
        const props = serverProperties(node, voters, dataDir, count, opts.properties, secure?.tls);
        await writeFile(node.propsPath, props, { mode: 0o600 });
        await runToCompletion(
          "setpriv",
          [
            "--pdeathsig",
            "KILL",
            "java",
            ...jvmArgs,
            "-cp",
            classpath,
            "kafka.tools.StorageTool",
            "format",
          ].concat(["-t", clusterId, "-c", node.propsPath], secure?.formatArgs ?? []),
          node.logPath,
        );
      }),
    );
  } catch (err) {
    await rm(dataRoot, { recursive: true, force: true });
    throw err;
  }

  const cluster = new LocalKafka(nodes, dataRoot, classpath, jvmArgs, log, secure?.secrets, secure?.security);
  try {
    for (const node of nodes) cluster.spawnNode(node.id);
    await cluster.waitReady();
  } catch (err) {
    await cluster.stop();
    throw err;
  }
  return cluster;
}
