/**
 * `npm run kafka [-- --port <p>] [--nodes 3] [--secure]`: a local Apache Kafka in the foreground.
 * Prints one `KAFKA_NODE id=… pid=… address=…` line per node, then `KAFKA_BROKERS=<list>` once all are
 * up; with --secure (a SASL_SSL listener) also the TLS files and SCRAM user as the gateway's `KAFKA_SSL…`
 * and `KAFKA_SASL…` lines. SIGINT/SIGTERM stops every JVM and removes the data folder.
 */
import { parseArgs } from "node:util";
import { MissingToolError } from "./jars.ts";
import { type LocalKafka, startLocalKafka } from "./runner.ts";

const { values } = parseArgs({
  options: {
    port: { type: "string" },
    nodes: { type: "string", default: "1" },
    "heap-mb": { type: "string" },
    secure: { type: "boolean", default: false },
  },
});

function intOption(name: string, raw: string | undefined): number | undefined {
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0) {
    process.stderr.write(`--${name} must be a positive integer, got ${JSON.stringify(raw)}\n`);
    process.exit(2);
  }
  return n;
}

const log = (line: string) => process.stderr.write(`${line}\n`);
let cluster: LocalKafka | undefined;
let stopping = false;

async function shutdown(code: number): Promise<never> {
  if (!stopping) {
    stopping = true;
    await cluster?.stop();
  }
  process.exit(code);
}
process.on("SIGINT", () => void shutdown(0));
process.on("SIGTERM", () => void shutdown(0));

try {
  cluster = await startLocalKafka({
    nodes: intOption("nodes", values.nodes),
    port: intOption("port", values.port),
    heapMb: intOption("heap-mb", values["heap-mb"]),
    secure: values.secure,
    log,
  });
} catch (err) {
  log(err instanceof MissingToolError ? err.message : `could not start Kafka: ${(err as Error).message}`);
  await shutdown(1);
}
const running = cluster as LocalKafka;
running.onNodeExit(() => {
  if (running.nodes.every((n) => !n.running)) {
    log("every Kafka node is gone; exiting");
    void shutdown(1);
  }
});
for (const node of running.nodes) {
  process.stdout.write(`KAFKA_NODE id=${node.id} pid=${node.pid} address=${node.address}\n`);
}
// KAFKA_BROKERS first, as before; a secure run adds its TLS and SASL settings after it.
for (const [name, value] of Object.entries(running.clientEnv)) process.stdout.write(`${name}=${value}\n`);
