import type { MetricObjectWithValues, MetricValue } from "prom-client";
import type { Message } from "../kafka/sink.ts";
import type { Destination } from "../store/destinations.ts";
import type { LedgerRow } from "../store/ledger.ts";

export type MetricsJson = MetricObjectWithValues<MetricValue<string>>[];

/**
 * What the main thread asks of a delivery engine — the DeliveryEngine on the main thread, or one on a
 * delivery thread through its channel. This interface and the list below are the one contract both sides
 * of a thread channel are built from (delivery-thread.ts dispatches on the names, threads.ts proxies them).
 */
export interface EngineApi {
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Adds, updates or (when disabled) stops the destination's worker. */
  upsert(destination: Destination): Promise<void>;
  /** The destination is being deleted. */
  remove(destinationId: string): Promise<void>;
  /** Queues replaying ledger rows (those of users whose partition this engine reads). */
  replay(destinationId: string, rows: LedgerRow[]): Promise<void>;
  /** Unfinished events per partition this engine reads. */
  lag(destinationId: string): Promise<Record<number, number>>;
  /** Which partitions the engine reads now, and how many destination workers it runs. */
  status(): Promise<EngineStatus>;
  /** The engine's thread-local metrics (only delivery threads have their own registry). */
  metrics(): Promise<MetricsJson>;
}
export const ENGINE_CALLS = [
  "start",
  "stop",
  "upsert",
  "remove",
  "replay",
  "lag",
  "status",
  "metrics",
] as const;

export interface EngineStatus {
  partitions: number[];
  workers: number;
}

/** What a delivery thread asks of the main thread. */
export interface MainApi {
  /** Dead letters go through the main thread's one producer. */
  publish(topic: string, messages: Message[]): Promise<void>;
  /** A receiver answered 410: disable the destination everywhere. */
  gone(destinationId: string, reason: string): Promise<void>;
  /** The main thread's state view has applied every outcome recorded so far (EngineDeps.outcomesCaughtUp). */
  outcomesCaughtUp(): Promise<void>;
}
export const MAIN_CALLS = ["publish", "gone", "outcomesCaughtUp"] as const;

/** A call of interface `Api` as it crosses a channel. */
export type CallOf<Api> = {
  [K in keyof Api]: Api[K] extends (...args: infer A) => unknown ? { method: K; args: A } : never;
}[keyof Api];

type Method = (...args: unknown[]) => Promise<unknown>;

/** Builds the calling side: an object whose methods send their call through `send`. */
export function proxyOf<Api>(
  names: readonly (keyof Api & string)[],
  send: (call: CallOf<Api>) => Promise<unknown>,
): Api {
  const api: Record<string, Method> = {};
  for (const method of names) api[method] = (...args) => send({ method, args } as CallOf<Api>);
  return api as Api;
}

/** Builds the answering side: runs a call that crossed the channel on `target`. */
export function dispatchTo<Api>(target: Api, call: CallOf<Api>): Promise<unknown> {
  const { method, args } = call as unknown as { method: keyof Api; args: unknown[] };
  return (target[method] as unknown as Method).apply(target, args);
}
