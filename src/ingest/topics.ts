import type { Kafka } from "kafkajs";
import type { Logger } from "../log.ts";

export interface EnsureTopicsOptions {
  topics: string[];
  partitions: number;
  /** Unset: min(3, brokers the cluster lists). */
  replicationFactor?: number;
  logger?: Logger;
}

export interface EnsuredTopics {
  created: string[];
  existing: string[];
  replicationFactor: number | undefined;
}

/**
 * Creates the topics that do not exist yet and waits for their partition leaders. Existing topics are
 * left as they are (an operator may have given them more partitions or other settings on purpose).
 * Safe to run from several gateway replicas at once: "already exists" counts as done.
 */
export async function ensureTopics(kafka: Kafka, opts: EnsureTopicsOptions): Promise<EnsuredTopics> {
  const admin = kafka.admin({ retry: { retries: 2 } });
  await admin.connect();
  try {
    const known = new Set(await admin.listTopics());
    const missing = opts.topics.filter((t) => !known.has(t));
    const existing = opts.topics.filter((t) => known.has(t));
    if (missing.length === 0) return { created: [], existing, replicationFactor: undefined };

    let replicationFactor = opts.replicationFactor;
    if (replicationFactor === undefined) {
      const { brokers } = await admin.describeCluster();
      replicationFactor = Math.max(1, Math.min(3, brokers.length));
    }
    await admin.createTopics({
      topics: missing.map((topic) => ({ topic, numPartitions: opts.partitions, replicationFactor })),
      waitForLeaders: true,
      timeout: 15_000,
    });
    opts.logger?.info(
      { topics: missing, partitions: opts.partitions, replicationFactor },
      "created Kafka topics",
    );
    return { created: missing, existing, replicationFactor };
  } finally {
    await admin.disconnect().catch(() => {});
  }
}
