import type { MessagePort, Worker } from "node:worker_threads";
import type { Config } from "../config.ts";

/** Data a delivery thread is started with (`workerData`). */
export interface ThreadData {
  index: number;
  logLevel: string;
  /** The gateway's Config, as structured-clone data. */
  config: Config;
  brokers: string[];
}

type Wire =
  | { t: "req"; id: number; body: unknown }
  | { t: "res"; id: number; ok: true; value: unknown }
  | { t: "res"; id: number; ok: false; error: WireError };

interface WireError {
  name: string;
  message: string;
  retriable?: boolean;
  code?: string;
}

/** An error from the other side of a channel, with the name, message and retriable flag it had there. */
export class RemoteError extends Error {
  retriable: boolean | undefined;
  code: string | undefined;
  constructor(wire: WireError) {
    super(wire.message);
    this.name = wire.name;
    this.retriable = wire.retriable;
    this.code = wire.code;
  }
}

function toWire(err: unknown): WireError {
  if (err instanceof Error) {
    const { retriable, code } = err as { retriable?: unknown; code?: unknown };
    return {
      name: err.name,
      message: err.message,
      retriable: typeof retriable === "boolean" ? retriable : undefined,
      code: typeof code === "string" ? code : undefined,
    };
  }
  return { name: "Error", message: String(err) };
}

/**
 * Request/response over a worker's message port, the same on both sides. Structured clone
 * carries the data; errors cross as {name, message, retriable}, since an Error's class does not survive it.
 */
export class ThreadChannel<Out, In> {
  #port: MessagePort | Worker;
  #pending = new Map<number, { resolve(value: unknown): void; reject(err: Error): void }>();
  #next = 1;
  #closed: Error | undefined;

  constructor(port: MessagePort | Worker, handle: (call: In) => unknown) {
    this.#port = port;
    port.on("message", (wire: Wire) => {
      if (wire.t === "res") {
        const pending = this.#pending.get(wire.id);
        this.#pending.delete(wire.id);
        if (wire.ok) pending?.resolve(wire.value);
        else pending?.reject(new RemoteError(wire.error));
      } else {
        Promise.resolve()
          .then(() => handle(wire.body as In))
          .then(
            (value) => this.#send({ t: "res", id: wire.id, ok: true, value }),
            (err: unknown) => this.#send({ t: "res", id: wire.id, ok: false, error: toWire(err) }),
          );
      }
    });
  }

  #send(wire: Wire): void {
    if (this.#closed) return;
    try {
      this.#port.postMessage(wire);
    } catch {
      // The other side is gone (thread exited): its caller learns it from close().
    }
  }

  /** Asks the other side; rejects with its error, or when the channel closes first. */
  request<T>(call: Out): Promise<T> {
    if (this.#closed) return Promise.reject(this.#closed);
    const id = this.#next++;
    return new Promise<T>((resolve, reject) => {
      this.#pending.set(id, { resolve: resolve as (value: unknown) => void, reject });
      this.#send({ t: "req", id, body: call });
    });
  }

  /** The other side is gone: every open request fails with `reason`, and so does every later one. */
  close(reason: Error): void {
    this.#closed = reason;
    for (const pending of this.#pending.values()) pending.reject(reason);
    this.#pending.clear();
  }
}
