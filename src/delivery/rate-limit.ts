/**
 * A token bucket: `ratePerSecond` tokens a second, at most `burst` saved up. Each HTTP attempt to the
 * destination takes one. The clock is a parameter of `tryTake`, so the arithmetic is tested without
 * waiting; `take` is the waiting form the worker uses.
 */
export class TokenBucket {
  #rate: number;
  #burst: number;
  #tokens: number;
  #at: number;
  /** Attempts waiting for a token, served first come first served by one timer. */
  #queue: Array<{ resolve(): void; reject(err: unknown): void; signal: AbortSignal | undefined }> = [];
  #timer: NodeJS.Timeout | undefined;

  constructor(ratePerSecond: number, burst: number, now = performance.now()) {
    this.#rate = ratePerSecond;
    this.#burst = Math.max(1, burst);
    this.#tokens = this.#burst;
    this.#at = now;
  }

  get rate(): number {
    return this.#rate;
  }

  get burst(): number {
    return this.#burst;
  }

  /** New settings keep the tokens saved so far (capped at the new burst). */
  configure(ratePerSecond: number, burst: number, now = performance.now()): void {
    this.#refill(now);
    this.#rate = ratePerSecond;
    this.#burst = Math.max(1, burst);
    this.#tokens = Math.min(this.#tokens, this.#burst);
  }

  #refill(now: number): void {
    if (now > this.#at) {
      this.#tokens = Math.min(this.#burst, this.#tokens + ((now - this.#at) / 1000) * this.#rate);
      this.#at = now;
    }
  }

  /** Takes a token if one is there (returns 0), else returns the ms until one will be. */
  tryTake(now = performance.now()): number {
    this.#refill(now);
    if (this.#tokens >= 1) {
      this.#tokens -= 1;
      return 0;
    }
    return Math.max(1, Math.ceil(((1 - this.#tokens) / this.#rate) * 1000));
  }

  /** Waits for a token, after those already waiting; rejects with the signal's reason when it aborts first. */
  take(signal?: AbortSignal): Promise<void> {
    if (this.#queue.length === 0 && this.tryTake() === 0) return Promise.resolve();
    signal?.throwIfAborted();
    return new Promise<void>((resolve, reject) => {
      const waiter = { resolve, reject, signal };
      this.#queue.push(waiter);
      signal?.addEventListener(
        "abort",
        () => {
          const i = this.#queue.indexOf(waiter);
          if (i >= 0) this.#queue.splice(i, 1);
          reject(signal.reason);
        },
        { once: true },
      );
      this.#pump();
    });
  }

  /** Waiting attempts: how many (tests and metrics read it). */
  get waiting(): number {
    return this.#queue.length;
  }

  #pump(): void {
    if (this.#timer !== undefined) return;
    while (this.#queue.length > 0) {
      const wait = this.tryTake();
      if (wait > 0) {
        this.#timer = setTimeout(() => {
          this.#timer = undefined;
          this.#pump();
        }, wait);
        return;
      }
      this.#queue.shift()?.resolve();
    }
  }
}

/**
 * This engine's bucket settings for a destination: its limit times the engine's share of the partitions
 * (the same split as maxConcurrency), so the engines of every process together stay at or under the
 * limit. The burst is split alike, never below one token.
 */
export function sharedLimit(
  ratePerSecond: number,
  burst: number | null,
  share: number,
): { rate: number; burst: number } {
  const whole = burst ?? Math.max(1, Math.ceil(ratePerSecond));
  return { rate: ratePerSecond * share, burst: Math.max(1, Math.floor(whole * share)) };
}
