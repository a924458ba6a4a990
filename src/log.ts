import pino, { type Logger } from "pino";

export type { Logger };

/** The process logger. Secrets are redacted by path so a careless log call cannot leak them. */
export function createLogger(level: string): Logger {
  return pino({
    level,
    base: { service: "webhook-gateway" },
    redact: {
      paths: [
        "secret",
        "*.secret",
        "adminToken",
        "authorization",
        "*.authorization",
        "headers.authorization",
        "req.headers.authorization",
        "*.headers",
        // Kafka credentials (Config.kafkaSecurity: SASL password, TLS private key).
        "password",
        "*.password",
        "kafkaSecurity",
        "*.kafkaSecurity",
        "sasl",
        "*.sasl",
      ],
      censor: "[redacted]",
    },
  });
}
