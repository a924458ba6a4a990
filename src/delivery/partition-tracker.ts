/**
 * Tracks, per partition, which fetched offsets are finished (delivered, dead-lettered or skipped) and
 * yields the offset that is safe to commit: the lowest offset not yet finished. Finishing out of order
 * (other users' events overtake a retrying one) never moves the commit past unfinished work, so a crash
 * resumes at the oldest unfinished event and at-least-once holds.
 */
export class PartitionTracker {
  /** Offsets in fetch order (ascending) that are not yet below the watermark. */
  #order: number[] = [];
  #head = 0;
  #finished = new Set<number>();
  /** Next offset to commit ("next offset to read"), or undefined before anything was fetched. */
  #watermark: number | undefined;
  #committed: number | undefined;
  /** Highest offset ever added: a re-fetch after a rebalance must not queue an offset twice. */
  #highest = -1;

  /** Registers a fetched offset; false when it was already tracked (re-fetched) and must be ignored. */
  add(offset: number): boolean {
    if (offset <= this.#highest) return false;
    this.#highest = offset;
    if (this.#head === this.#order.length) this.#watermark = offset;
    this.#order.push(offset);
    return true;
  }

  finish(offset: number): void {
    this.#finished.add(offset);
    while (this.#head < this.#order.length) {
      const first = this.#order[this.#head] as number;
      if (!this.#finished.has(first)) break;
      this.#finished.delete(first);
      this.#head++;
      this.#watermark = first + 1;
    }
    if (this.#head < this.#order.length) this.#watermark = this.#order[this.#head] as number;
    // Compact now and then so the array does not grow without bound.
    if (this.#head > 4096 && this.#head * 2 > this.#order.length) {
      this.#order = this.#order.slice(this.#head);
      this.#head = 0;
    }
  }

  /** Tracked offsets that are not finished yet (what is buffered or in flight). */
  get unfinished(): number {
    return this.#order.length - this.#head - this.#finished.size;
  }

  /** The offset to commit if it moved since the last commit, else undefined. */
  takeCommit(): number | undefined {
    if (this.#watermark === undefined || this.#watermark === this.#committed) return undefined;
    this.#committed = this.#watermark;
    return this.#watermark;
  }

  /** A commit that failed must be retried: forget that it was taken. */
  commitFailed(offset: number): void {
    if (this.#committed === offset) this.#committed = undefined;
  }
}
