import { Worker } from "node:worker_threads";
import type { MetricObjectWithValues, MetricValue } from "prom-client";
import type { Config } from "../config.ts";
import type { RecordSink } from "../ingest/producer.ts";
import type { Logger } from "../log.ts";
import type { Store } from "../store/db.ts";
import { type Destination, listDestinations } from "../store/destinations.ts";
import type { DeliveryRuntime } from "./control.ts";
import { type MainCall, type ThreadCall, ThreadChannel, type ThreadData } from "./thread-channel.ts";

const ENTRY = new URL("./delivery-thread.ts", import.meta.url);
/** How long a thread may take to stop its workers (they give in-flight attempts 5 s) before it is ended. */
const STOP_GRACE_MS = 15_000;
/** A thread that dies within this of its start counts as dying young (see #spawn). */
const YOUNG_MS = 60_000;
const RESTART_BASE_MS = 250;
const RESTART_MAX_MS = 30_000;

type MetricsJson = MetricObjectWithValues<MetricValue<string>>[];

export interface ThreadedDeliveryOptions {
  threads: number;
  config: Config;
  brokers: string[];
  store: Store;
  /** The main thread's producer: every thread's dead letters go through it. */
  sink: Pick<RecordSink, "publish">;
  logger: Logger;
}

interface DeliveryThread {
  index: number;
  worker: Worker;
  channel: ThreadChannel<ThreadCall, MainCall>;
  /** Destinations whose worker runs (or will run) on this thread. */
  owned: Set<string>;
  exited: Promise<void>;
}

/**
 * Runs the delivery workers on `threads` worker threads instead of the main thread, so delivery can use
 * more than one core while ingest and the admin API keep theirs. Each destination lives on exactly one
 * thread — the one with the fewest destinations when it is first started there — and moves only when it
 * is disabled and enabled again. A thread that dies is started again with the same destinations; their
 * workers resume from their committed offsets, as after a gateway restart.
 */
export class ThreadedDelivery implements DeliveryRuntime {
  #opts: ThreadedDeliveryOptions;
  #log: Logger;
  #threads: DeliveryThread[];
  #assigned = new Map<string, DeliveryThread>();
  #started = false;
  #stopping = false;
  /** Timers of threads waiting to be started again. */
  #restarts = new Set<NodeJS.Timeout>();

  constructor(opts: ThreadedDeliveryOptions) {
    if (opts.threads < 1) throw new Error("ThreadedDelivery needs at least one thread");
    this.#opts = opts;
    this.#log = opts.logger.child({ component: "delivery-threads" });
    this.#threads = Array.from({ length: opts.threads }, (_, i) => this.#spawn(i, new Set()));
  }

  get threadCount(): number {
    return this.#threads.length;
  }

  /** The worker_threads Worker at `index` (tests end one to show a lost thread is replaced). */
  thread(index: number): Worker | undefined {
    return this.#threads[index]?.worker;
  }

  /** The thread index a destination's worker runs on, if it is assigned (tests). */
  threadOf(destinationId: string): number | undefined {
    return this.#assigned.get(destinationId)?.index;
  }

  /**
   * Starts thread `index` for `owned`. `crashes` counts the threads at this index that died young in a
   * row: one that keeps dying at start-up (a database it cannot open, say) is restarted less and less
   * often instead of in a tight loop.
   */
  #spawn(index: number, owned: Set<string>, crashes = 0): DeliveryThread {
    const data: ThreadData = {
      index,
      logLevel: this.#opts.logger.level,
      config: this.#opts.config,
      brokers: this.#opts.brokers,
    };
    const spawnedAt = Date.now();
    const worker = new Worker(ENTRY, { workerData: data, name: `delivery-${index}` });
    const channel = new ThreadChannel<ThreadCall, MainCall>(worker, (call) =>
      this.#opts.sink.publish(call.topic, call.messages),
    );
    const thread: DeliveryThread = {
      index,
      worker,
      channel,
      owned,
      exited: new Promise((done) => worker.once("exit", () => done())),
    };
    worker.on("error", (err) => this.#log.error({ err, thread: index }, "delivery thread failed"));
    worker.once("exit", (code) => {
      channel.close(new Error(`delivery thread ${index} exited (code ${code})`));
      if (this.#stopping) return;
      // A thread must never just vanish with its destinations: start another with the same ones.
      const young = Date.now() - spawnedAt < YOUNG_MS;
      const inRow = young ? crashes + 1 : 0;
      const delayMs = inRow === 0 ? 0 : Math.min(RESTART_MAX_MS, RESTART_BASE_MS * 2 ** (inRow - 1));
      this.#log.error(
        { thread: index, code, destinations: owned.size, restartInMs: delayMs },
        "delivery thread exited; restarting it",
      );
      const timer = setTimeout(() => {
        this.#restarts.delete(timer);
        if (this.#stopping) return;
        const next = this.#spawn(index, owned, inRow);
        this.#threads[index] = next;
        for (const id of owned) this.#assigned.set(id, next);
        if (!this.#started) return;
        next.channel
          .request({ op: "start", owned: [...owned] })
          .catch((err: unknown) =>
            this.#log.error({ err, thread: index }, "restarted delivery thread failed to start"),
          );
      }, delayMs);
      this.#restarts.add(timer);
    });
    return thread;
  }

  #leastLoaded(): DeliveryThread {
    return this.#threads.reduce((a, b) => (b.owned.size < a.owned.size ? b : a));
  }

  /** The thread a destination is assigned to, else thread 0 (whose supervisor can do the store work). */
  #assignedOrFirst(destinationId: string): DeliveryThread {
    return this.#assigned.get(destinationId) ?? (this.#threads[0] as DeliveryThread);
  }

  /** The thread of a destination, assigning the least-loaded one when it has none yet. */
  #threadFor(destinationId: string): DeliveryThread {
    let thread = this.#assigned.get(destinationId);
    if (!thread) {
      thread = this.#leastLoaded();
      thread.owned.add(destinationId);
      this.#assigned.set(destinationId, thread);
    }
    return thread;
  }

  #release(destinationId: string): void {
    this.#assigned.get(destinationId)?.owned.delete(destinationId);
    this.#assigned.delete(destinationId);
  }

  async start(): Promise<void> {
    if (this.#stopping) return;
    this.#started = true;
    for (const d of listDestinations(this.#opts.store.db)) if (!d.disabled) this.#threadFor(d.id);
    await Promise.all(this.#threads.map((t) => t.channel.request({ op: "start", owned: [...t.owned] })));
  }

  prepareDestination(destinationId: string): Promise<void> {
    // Any thread's admin client can pin the offsets; the least-loaded one will most likely run it.
    return this.#leastLoaded().channel.request({ op: "prepare", destinationId });
  }

  async destinationAdded(destination: Destination): Promise<void> {
    if (destination.disabled) return;
    await this.#threadFor(destination.id).channel.request({ op: "added", destination });
  }

  async destinationChanged(destination: Destination): Promise<void> {
    const thread = destination.disabled
      ? this.#assigned.get(destination.id)
      : this.#threadFor(destination.id);
    if (!thread) return;
    await thread.channel.request({ op: "changed", destination });
    // Stopped: the next enable may place it on whichever thread is least loaded then.
    if (destination.disabled) this.#release(destination.id);
  }

  async destinationRemoved(destinationId: string): Promise<void> {
    // Its worker (if any) stops on its thread; any thread can delete the ledger rows and the group.
    await this.#assignedOrFirst(destinationId).channel.request({ op: "removed", destinationId });
    this.#release(destinationId);
  }

  replay(destinationId: string, eventIds?: string[]): Promise<number> {
    // Without a running worker the rows are only marked; the worker picks them up when it starts.
    return this.#assignedOrFirst(destinationId).channel.request({ op: "replay", destinationId, eventIds });
  }

  async collectMetrics(): Promise<MetricsJson[]> {
    return Promise.all(
      this.#threads.map((t) =>
        t.channel.request<MetricsJson>({ op: "metrics" }).catch((): MetricsJson => []),
      ),
    );
  }

  async stop(): Promise<void> {
    if (this.#stopping) return;
    this.#stopping = true;
    for (const timer of this.#restarts) clearTimeout(timer);
    this.#restarts.clear();
    await Promise.all(
      this.#threads.map(async (t) => {
        const grace = setTimeout(() => void t.worker.terminate(), STOP_GRACE_MS);
        try {
          await t.channel.request({ op: "stop" });
        } catch (err) {
          this.#log.warn({ err, thread: t.index }, "delivery thread did not stop cleanly");
        }
        // Its port is closed; if anything still holds the thread's loop, end it.
        const forced = setTimeout(() => void t.worker.terminate(), 1000);
        await t.exited;
        clearTimeout(grace);
        clearTimeout(forced);
      }),
    );
  }
}
