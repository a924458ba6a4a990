import { Worker } from "node:worker_threads";
import type { Config } from "../config.ts";
import type { Logger } from "../log.ts";
import {
  type CallOf,
  dispatchTo,
  ENGINE_CALLS,
  type EngineApi,
  type MainApi,
  type MetricsJson,
  proxyOf,
} from "./engine-api.ts";
import { ThreadChannel, type ThreadData } from "./thread-channel.ts";

const ENTRY = new URL("./delivery-thread.ts", import.meta.url);
/** How long a thread may take to stop its engine (in-flight attempts get 5 s) before it is ended. */
const STOP_GRACE_MS = 15_000;
/** A thread that dies within this of its start counts as dying young (see #spawn). */
const YOUNG_MS = 60_000;
const RESTART_BASE_MS = 250;
const RESTART_MAX_MS = 30_000;

export interface DeliveryThreadsOptions {
  threads: number;
  config: Config;
  brokers: string[];
  logger: Logger;
  /** What the threads ask of the main thread (dead letters, 410s). */
  main: MainApi;
}

interface DeliveryThread {
  index: number;
  worker: Worker;
  channel: ThreadChannel<CallOf<EngineApi>, CallOf<MainApi>>;
  exited: Promise<void>;
}

/**
 * Runs `threads` delivery engines on worker threads, so delivery uses more than one core while ingest and
 * the admin API keep the main thread. Each engine is a member of the delivery consumer group like any
 * other process's: Kafka splits the partitions between them, and a thread that dies is started again and
 * rejoins (its partitions meanwhile go to the others after the session timeout).
 */
export class DeliveryThreads {
  #opts: DeliveryThreadsOptions;
  #log: Logger;
  #threads: DeliveryThread[];
  #engines: EngineApi[];
  #started = false;
  #stopping = false;
  /** Timers of threads waiting to be started again. */
  #restarts = new Set<NodeJS.Timeout>();

  constructor(opts: DeliveryThreadsOptions) {
    if (opts.threads < 1) throw new Error("DeliveryThreads needs at least one thread");
    this.#opts = opts;
    this.#log = opts.logger.child({ component: "delivery-threads" });
    this.#threads = Array.from({ length: opts.threads }, (_, i) => this.#spawn(i));
    // Each proxy sends to whichever thread holds its index now (a restarted one replaces the dead one).
    this.#engines = this.#threads.map((_, i) =>
      proxyOf<EngineApi>(ENGINE_CALLS, async (call) => {
        const thread = this.#threads[i] as DeliveryThread;
        if (call.method === "start") this.#started = true;
        return thread.channel.request(call);
      }),
    );
  }

  get threadCount(): number {
    return this.#threads.length;
  }

  /** The worker_threads Worker at `index` (tests end one to show a lost thread is replaced). */
  thread(index: number): Worker | undefined {
    return this.#threads[index]?.worker;
  }

  engines(): EngineApi[] {
    return this.#engines;
  }

  /**
   * Starts thread `index`. `crashes` counts the threads at this index that died young in a row: one that
   * keeps dying at start-up (a database it cannot open, say) is restarted less and less often.
   */
  #spawn(index: number, crashes = 0): DeliveryThread {
    const data: ThreadData = {
      index,
      logLevel: this.#opts.logger.level,
      config: this.#opts.config,
      brokers: this.#opts.brokers,
    };
    const spawnedAt = Date.now();
    const worker = new Worker(ENTRY, { workerData: data, name: `delivery-${index}` });
    const channel = new ThreadChannel<CallOf<EngineApi>, CallOf<MainApi>>(worker, (call) =>
      dispatchTo(this.#opts.main, call),
    );
    const thread: DeliveryThread = {
      index,
      worker,
      channel,
      exited: new Promise((done) => worker.once("exit", () => done())),
    };
    worker.on("error", (err) => this.#log.error({ err, thread: index }, "delivery thread failed"));
    worker.once("exit", (code) => {
      channel.close(new Error(`delivery thread ${index} exited (code ${code})`));
      if (this.#stopping) return;
      // A thread must never just vanish: start another in its place.
      const young = Date.now() - spawnedAt < YOUNG_MS;
      const inRow = young ? crashes + 1 : 0;
      const delayMs = inRow === 0 ? 0 : Math.min(RESTART_MAX_MS, RESTART_BASE_MS * 2 ** (inRow - 1));
      this.#log.error({ thread: index, code, restartInMs: delayMs }, "delivery thread exited; restarting it");
      const timer = setTimeout(() => {
        this.#restarts.delete(timer);
        if (this.#stopping) return;
        const next = this.#spawn(index, inRow);
        this.#threads[index] = next;
        if (!this.#started) return;
        next.channel
          .request({ method: "start", args: [] })
          .catch((err: unknown) =>
            this.#log.error({ err, thread: index }, "restarted delivery thread failed"),
          );
      }, delayMs);
      this.#restarts.add(timer);
    });
    return thread;
  }

  async collectMetrics(): Promise<MetricsJson[]> {
    return Promise.all(
      this.#threads.map((t) =>
        t.channel.request<MetricsJson>({ method: "metrics", args: [] }).catch((): MetricsJson => []),
      ),
    );
  }

  /** Ends every thread (their engines were asked to stop first); a thread that hangs is terminated. */
  async stop(): Promise<void> {
    if (this.#stopping) return;
    this.#stopping = true;
    for (const timer of this.#restarts) clearTimeout(timer);
    this.#restarts.clear();
    await Promise.all(
      this.#threads.map(async (t) => {
        const grace = setTimeout(() => void t.worker.terminate(), STOP_GRACE_MS);
        // Its engine has stopped and its port is closing; if anything still holds the loop, end it.
        const forced = setTimeout(() => void t.worker.terminate(), 2000);
        await t.exited;
        clearTimeout(grace);
        clearTimeout(forced);
      }),
    );
  }
}
