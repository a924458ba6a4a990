import type { EventInput } from "../ingest/events.ts";
import type { AttemptRow } from "../store/attempts.ts";

/** One line of the console's live tail. */
export type LiveItem =
  | { kind: "accepted"; at: number; eventId: string; userID: string; type: string }
  | {
      kind: "delivery";
      at: number;
      eventId: string;
      userID: string;
      destinationId: string;
      /** Known when this replica accepted the event while a console listened. */
      type?: string;
      attemptNumber: number;
      outcome: string;
      statusCode: number | null;
      durationMs: number;
    };

const TYPES_KEPT = 50_000;

export type LiveListener = (items: LiveItem[]) => void;

/**
 * In-process fan-out of what the console's live tail shows. Ingest publishes the events it accepted, the
 * state view the attempts it applied. With no listener a publish is one size check and returns: nothing is
 * built, so the tail costs nothing until a console opens it. Listeners are called synchronously and must
 * only queue (the SSE route drops, with a counter, what a slow client cannot take).
 */
export class LiveBus {
  #listeners = new Set<LiveListener>();
  /** Types of recently accepted events (kept only while someone listens), to label their deliveries. */
  #types = new Map<string, string>();

  #closers = new Set<() => void>();
  #closed = false;

  /**
   * Called when the gateway stops: every open tail ends its stream, so the HTTP server's graceful close
   * is not held open by consoles.
   */
  onClose(fn: () => void): () => void {
    if (this.#closed) fn();
    else this.#closers.add(fn);
    return () => this.#closers.delete(fn);
  }

  close(): void {
    this.#closed = true;
    for (const fn of this.#closers) fn();
    this.#closers.clear();
  }

  get listeners(): number {
    return this.#listeners.size;
  }

  subscribe(fn: LiveListener): () => void {
    this.#listeners.add(fn);
    return () => {
      this.#listeners.delete(fn);
      if (this.#listeners.size === 0) this.#types.clear();
    };
  }

  accepted(events: readonly EventInput[], ids: readonly string[], at: number): void {
    if (this.#listeners.size === 0) return;
    const items: LiveItem[] = events.map((e, i) => ({
      kind: "accepted",
      at,
      eventId: ids[i] as string,
      userID: e.userID,
      type: e.type,
    }));
    for (let i = 0; i < events.length; i++) this.#types.set(ids[i] as string, (events[i] as EventInput).type);
    // Insertion order is age: trim the oldest.
    if (this.#types.size > TYPES_KEPT) {
      let extra = this.#types.size - TYPES_KEPT;
      for (const key of this.#types.keys()) {
        if (extra-- <= 0) break;
        this.#types.delete(key);
      }
    }
    this.#emit(items);
  }

  attempts(rows: readonly AttemptRow[]): void {
    if (this.#listeners.size === 0) return;
    const items: LiveItem[] = rows.map((r) => ({
      kind: "delivery",
      at: r.startedAt + r.durationMs,
      eventId: r.eventId,
      userID: r.userId,
      destinationId: r.destinationId,
      type: this.#types.get(r.eventId),
      attemptNumber: r.attemptNumber,
      outcome: r.outcome,
      statusCode: r.statusCode ?? null,
      durationMs: r.durationMs,
    }));
    this.#emit(items);
  }

  #emit(items: LiveItem[]): void {
    for (const fn of this.#listeners) {
      try {
        fn(items);
      } catch {
        // a listener's failure is its own; ingest and the view go on
      }
    }
  }
}
