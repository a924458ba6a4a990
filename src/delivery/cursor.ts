/**
 * Where one destination stands in one partition. `next` is the next offset to hand to the destination;
 * the watermark — what may be committed to the destination's consumer group — is the lowest offset handed
 * over and not yet finished (delivered, dead-lettered), or `next` when nothing is outstanding. Offsets the
 * destination passes over (filtered out, finished before a crash) never enter the list, so a destination
 * subscribed to one type costs nothing per record of the other types.
 *
 * A cursor is either attached (the partition's shared reader hands it records) or detached (its own
 * catch-up reader reads from `next` until it reaches the shared reader and attaches again).
 */
export class Cursor {
  readonly partition: number;
  next: number;
  attached = true;
  /** The partition was handed over or the worker stopped: its queued records are dropped, not delivered. */
  released = false;
  /** A catch-up reader is running for this cursor. */
  catchingUp = false;
  /** Offsets handed over, ascending, from #head on not yet below the watermark. */
  #order: number[] = [];
  #head = 0;
  #finished = new Set<number>();
  /** The last offset committed (or known committed when the cursor was made). */
  #committed: number;

  constructor(partition: number, start: number) {
    this.partition = partition;
    this.next = start;
    this.#committed = start;
  }

  /** The record at `offset` was handed to the destination. */
  track(offset: number): void {
    this.#order.push(offset);
    this.next = offset + 1;
  }

  /** Everything below `offset` is behind this destination (passed over or already handed over). */
  skipTo(offset: number): void {
    if (offset > this.next) this.next = offset;
  }

  finish(offset: number): void {
    this.#finished.add(offset);
    while (this.#head < this.#order.length) {
      const first = this.#order[this.#head] as number;
      if (!this.#finished.has(first)) break;
      this.#finished.delete(first);
      this.#head++;
    }
    if (this.#head === this.#order.length) {
      this.#order = [];
      this.#head = 0;
    } else if (this.#head > 4096 && this.#head * 2 > this.#order.length) {
      this.#order = this.#order.slice(this.#head);
      this.#head = 0;
    }
  }

  /** Records handed over and not finished. */
  get unfinished(): number {
    return this.#order.length - this.#head - this.#finished.size;
  }

  /** Lowest unfinished offset, or `next`: every offset below it is finished for this destination. */
  get watermark(): number {
    return this.#head < this.#order.length ? (this.#order[this.#head] as number) : this.next;
  }

  get committed(): number {
    return this.#committed;
  }

  /** The watermark if it moved since the last commit, else undefined. */
  takeCommit(): number | undefined {
    const w = this.watermark;
    if (w === this.#committed) return undefined;
    this.#committed = w;
    return w;
  }

  /** A commit that failed must be retried: forget it was taken (unless a later one was taken since). */
  commitFailed(offset: number): void {
    if (this.#committed === offset) this.#committed = -1;
  }
}
