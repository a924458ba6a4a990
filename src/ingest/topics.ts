import type { Admin, ConfigResourceTypes, Kafka } from "kafkajs";
import type { Logger } from "../log.ts";

/** A topic with settings of its own (the shared-state topics); a bare name gets the defaults. */
export interface TopicSpec {
  topic: string;
  /** Unset: EnsureTopicsOptions.partitions. */
  partitions?: number;
  /** Topic configs it is created with, e.g. `cleanup.policy`. */
  configs?: Record<string, string>;
  /**
   * Of `configs`, those an existing topic must have as given: a compacted topic that turns out to delete
   * by age would lose destinations. A mismatch fails the set-up with a message naming the setting.
   */
  required?: string[];
}

export interface EnsureTopicsOptions {
  topics: Array<string | TopicSpec>;
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
  const specs = opts.topics.map((t): TopicSpec => (typeof t === "string" ? { topic: t } : t));
  const admin = kafka.admin({ retry: { retries: 2 } });
  await admin.connect();
  try {
    const known = new Set(await admin.listTopics());
    const missing = specs.filter((t) => !known.has(t.topic));
    const existing = specs.filter((t) => known.has(t.topic)).map((t) => t.topic);
    await checkRequired(
      admin,
      specs.filter((t) => known.has(t.topic)),
    );
    if (missing.length === 0) return { created: [], existing, replicationFactor: undefined };

    let replicationFactor = opts.replicationFactor;
    if (replicationFactor === undefined) {
      const { brokers } = await admin.describeCluster();
      replicationFactor = Math.max(1, Math.min(3, brokers.length));
    }
    await admin.createTopics({
      topics: missing.map((t) => ({
        topic: t.topic,
        numPartitions: t.partitions ?? opts.partitions,
        replicationFactor,
        configEntries: Object.entries(t.configs ?? {}).map(([name, value]) => ({ name, value })),
      })),
      waitForLeaders: true,
      timeout: 15_000,
    });
    const created = missing.map((t) => t.topic);
    opts.logger?.info(
      { topics: created, partitions: opts.partitions, replicationFactor },
      "created Kafka topics",
    );
    return { created, existing, replicationFactor };
  } finally {
    await admin.disconnect().catch(() => {});
  }
}

/** kafkajs's ConfigResourceTypes.TOPIC (its CommonJS export is not visible to an ESM named import). */
const TOPIC_RESOURCE = 2 as ConfigResourceTypes;

/** Existing topics must carry their `required` settings (another replica may have created them first). */
async function checkRequired(admin: Admin, specs: TopicSpec[]): Promise<void> {
  const checked = specs.filter((t) => (t.required?.length ?? 0) > 0);
  if (checked.length === 0) return;
  const { resources } = await admin.describeConfigs({
    includeSynonyms: false,
    resources: checked.map((t) => ({
      type: TOPIC_RESOURCE,
      name: t.topic,
      configNames: t.required,
    })),
  });
  const wrong: string[] = [];
  for (const spec of checked) {
    const entries = resources.find((r) => r.resourceName === spec.topic)?.configEntries ?? [];
    for (const name of spec.required ?? []) {
      const want = spec.configs?.[name];
      const have = entries.find((e) => e.configName === name)?.configValue;
      if (want !== undefined && have !== want)
        wrong.push(`${spec.topic}: ${name} is "${have}", needs "${want}"`);
    }
  }
  if (wrong.length > 0) {
    throw new Error(
      `existing Kafka topics have the wrong settings (fix them with kafka-configs.sh, or name other topics): ${wrong.join("; ")}`,
    );
  }
}
