/**
 * Key-ordered concurrency: jobs of one key run one after another in the order they were queued; jobs of
 * different keys run in parallel, at most `limit` at a time (the limit counts running attempts, so a job
 * waiting out a backoff holds no slot — see `slot()`).
 */
export class KeyedScheduler<J> {
  #queues = new Map<string, J[]>();
  #run: (job: J) => Promise<void>;
  #limit: number;
  #active = 0;
  #waiting: Array<() => void> = [];
  #idle: Array<() => void> = [];
  #queued = 0;

  constructor(limit: number, run: (job: J) => Promise<void>) {
    this.#limit = limit;
    this.#run = run;
  }

  set limit(n: number) {
    this.#limit = n;
    while (this.#active < this.#limit && this.#waiting.length > 0) {
      this.#active++;
      this.#waiting.shift()?.();
    }
  }

  /** Jobs queued or running. */
  get size(): number {
    return this.#queued;
  }

  push(key: string, job: J): void {
    this.#queued++;
    const queue = this.#queues.get(key);
    if (queue) {
      queue.push(job);
      return;
    }
    this.#queues.set(key, [job]);
    void this.#drain(key);
  }

  async #drain(key: string): Promise<void> {
    const queue = this.#queues.get(key);
    while (queue && queue.length > 0) {
      const job = queue[0] as J;
      try {
        await this.#run(job);
      } finally {
        queue.shift();
        this.#queued--;
      }
    }
    this.#queues.delete(key);
    if (this.#queued === 0) for (const done of this.#idle.splice(0)) done();
  }

  /**
   * True when `key` has a job queued behind the running one and a slot is free: the running job's end is
   * all that holds work back (nothing else is ready to use the slot).
   */
  isStarving(key: string): boolean {
    return this.#active < this.#limit && (this.#queues.get(key)?.length ?? 0) > 1;
  }

  /** Runs `fn` holding one of the `limit` slots. */
  async slot<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#active >= this.#limit) {
      await new Promise<void>((done) => this.#waiting.push(done));
    } else {
      this.#active++;
    }
    try {
      return await fn();
    } finally {
      // Hand the slot to the next waiter, unless the limit was lowered below the slots in use: then the
      // slot goes away and the waiter stays queued (taking it off the queue without waking it would strand
      // its job, and every later job of its key, for good).
      if (this.#active <= this.#limit && this.#waiting.length > 0) (this.#waiting.shift() as () => void)();
      else this.#active--;
    }
  }

  /** Resolves when nothing is queued or running. */
  idle(): Promise<void> {
    if (this.#queued === 0) return Promise.resolve();
    return new Promise((done) => this.#idle.push(done));
  }
}
