import type { AttemptResult } from "./send.ts";

/** What delivery reports as it works (metrics.ts feeds Prometheus from it); every hook is cheap and sync. */
export interface DeliveryObserver {
  attempt(destinationId: string, result: AttemptResult): void;
  finished(destinationId: string, outcome: "delivered" | "dead", acceptedAt: number | undefined): void;
  buffered(destinationId: string, count: number): void;
  /** The destination is gone: drop its series. */
  forget?(destinationId: string): void;
}
