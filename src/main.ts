import "./v8-flags.ts";
import { ConfigError, loadConfig } from "./config.ts";
import { startGateway } from "./gateway.ts";
import { assertJava, MissingToolError } from "./kafka/jars.ts";
import { createLogger } from "./log.ts";

let config: ReturnType<typeof loadConfig>;
try {
  config = loadConfig();
} catch (err) {
  if (err instanceof ConfigError) {
    process.stderr.write(`${err.message}\n`);
    process.exit(2);
  }
  throw err;
}

if (!config.KAFKA_BROKERS) {
  // The embedded broker needs Java: say so in one sentence before printing a token or opening the database.
  try {
    assertJava();
  } catch (err) {
    if (!(err instanceof MissingToolError)) throw err;
    process.stderr.write(`${err.message}\n`);
    process.exit(1);
  }
}

const logger = createLogger(config.LOG_LEVEL);
if (config.adminTokenGenerated) {
  // Printed once, on stderr, never logged: the admin API is never left open.
  process.stderr.write(
    `ADMIN_TOKEN was not set; generated one for this run: ${config.adminToken}\n` +
      "Set ADMIN_TOKEN to keep a stable token across restarts.\n",
  );
}

let gateway: Awaited<ReturnType<typeof startGateway>>;
try {
  gateway = await startGateway(config, logger);
} catch (err) {
  if (err instanceof MissingToolError) {
    process.stderr.write(`${err.message}\n`);
    process.exit(1);
  }
  logger.fatal({ err }, "gateway failed to start");
  process.exit(1);
}

let shuttingDown = false;
async function shutdown(signal: string): Promise<void> {
  if (shuttingDown) return;
  shuttingDown = true;
  logger.info({ signal }, "shutting down");
  // A second signal, or a drain that hangs, must not keep the process alive forever.
  const force = setTimeout(() => {
    logger.error("graceful shutdown took over 20 s; exiting");
    process.exit(1);
  }, 20_000);
  force.unref();
  try {
    await gateway.stop();
    logger.info("stopped");
    process.exit(0);
  } catch (err) {
    logger.error({ err }, "error during shutdown");
    process.exit(1);
  }
}
process.on("SIGTERM", () => void shutdown("SIGTERM"));
process.on("SIGINT", () => void shutdown("SIGINT"));
