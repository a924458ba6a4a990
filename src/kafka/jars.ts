import { spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** docker/kafka/pom.xml pins the broker version and its logging runtime; it is the one source of truth. */
export const POM_PATH = resolve(dirname(fileURLToPath(import.meta.url)), "../../docker/kafka/pom.xml");

export class MissingToolError extends Error {
  override name = "MissingToolError";
}

/** Reads `<kafka.version>` from the pom so the cache folder names the version it holds. */
export async function kafkaVersion(pomPath = POM_PATH): Promise<string> {
  const pom = await readFile(pomPath, "utf8");
  const match = /<kafka\.version>([^<]+)<\/kafka\.version>/.exec(pom);
  if (!match?.[1]) throw new Error(`${pomPath} has no <kafka.version> property`);
  return match[1].trim();
}

function hasCommand(cmd: string, args: string[]): boolean {
  const r = spawnSync(cmd, args, { stdio: "ignore" });
  return r.error === undefined && r.status === 0;
}

/** One clear sentence per missing tool, before anything slow starts. */
export function assertJava(): void {
  if (!hasCommand("java", ["-version"])) {
    throw new MissingToolError(
      "`java` was not found: install Java 17 or newer (e.g. `apt-get install openjdk-17-jre-headless`), or set KAFKA_BROKERS to an existing Kafka cluster.",
    );
  }
}

function assertMaven(): void {
  if (!hasCommand("mvn", ["-v"])) {
    throw new MissingToolError(
      "`mvn` was not found: install Maven (e.g. `apt-get install maven`) so the Kafka jars can be fetched from Maven Central, or set KAFKA_BROKERS to an existing Kafka cluster.",
    );
  }
}

/**
 * Makes sure the broker's jars are in `<cacheRoot>/kafka-<version>/libs` and returns that folder.
 * Maven copies into a private folder that is renamed into place only when complete, so an
 * interrupted fetch or two runners fetching at once never leave a half-filled cache behind.
 */
export async function ensureKafkaJars(opts: { cacheRoot?: string; log?: (line: string) => void } = {}) {
  const version = await kafkaVersion();
  const root = opts.cacheRoot ?? join(homedir(), ".cache", "webhook-gateway");
  const home = join(root, `kafka-${version}`);
  const libs = join(home, "libs");
  if (existsSync(join(home, "COMPLETE"))) return { version, libs };

  assertMaven();
  await mkdir(root, { recursive: true });
  const staging = join(root, `.kafka-${version}-${process.pid}-${Date.now()}`);
  opts.log?.(`fetching Apache Kafka ${version} jars from Maven Central into ${libs} (once) …`);
  const args = [
    "-B",
    "-q",
    "-f",
    POM_PATH,
    "dependency:copy-dependencies",
    "-DincludeScope=runtime",
    `-DoutputDirectory=${join(staging, "libs")}`,
  ];
  const code = await new Promise<number>((done, fail) => {
    const child = spawn("mvn", args, { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString();
    });
    child.stderr.on("data", (d: Buffer) => {
      out += d.toString();
    });
    child.on("error", fail);
    child.on("exit", (c) => {
      if (c !== 0) opts.log?.(out.slice(-4000));
      done(c ?? 1);
    });
  });
  if (code !== 0) {
    await rm(staging, { recursive: true, force: true });
    throw new Error(`mvn could not fetch the Kafka ${version} jars (exit ${code}); see the output above`);
  }
  const jars = await readdir(join(staging, "libs"));
  if (!jars.some((j) => j.startsWith("kafka_2.13-")))
    throw new Error("mvn finished but no kafka_2.13 jar arrived");
  await writeFile(join(staging, "COMPLETE"), `${jars.length} jars\n`);
  try {
    await rename(staging, home);
  } catch (err) {
    // Another runner won the race: its copy is complete, ours is redundant.
    await rm(staging, { recursive: true, force: true });
    if (!existsSync(join(home, "COMPLETE"))) throw err;
  }
  return { version, libs };
}
