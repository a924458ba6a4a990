import { createServer, type IncomingHttpHeaders, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { waitUntil } from "./helpers.ts";

export interface ReceivedRequest {
  /** Path and query of the request. */
  url: string;
  headers: IncomingHttpHeaders;
  body: string;
  at: number;
}

/** What the receiver does with one request: set res.statusCode (default 200), or answer itself and return "handled". */
export type Behaviour = (req: ReceivedRequest, res: ServerResponse) => unknown;

export interface Receiver {
  url: string;
  requests: ReceivedRequest[];
  /** Parsed bodies of requests answered 2xx, in arrival order. */
  delivered: Array<{ id: string; userID: string; type: string; payload: unknown }>;
  behaviour: Behaviour;
  connections: number;
  close(): Promise<void>;
}

/** A real HTTP receiver on 127.0.0.1 whose answers a test scripts through `behaviour`. */
export async function startReceiver(behaviour: Behaviour = () => {}): Promise<Receiver> {
  const receiver: Receiver = {
    url: "",
    requests: [],
    delivered: [],
    behaviour,
    connections: 0,
    close: async () => {},
  };
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const record = {
        url: req.url ?? "",
        headers: req.headers,
        body: Buffer.concat(chunks).toString("utf8"),
        at: Date.now(),
      };
      receiver.requests.push(record);
      const outcome = receiver.behaviour(record, res);
      if (outcome === "handled") return;
      if (!res.headersSent) res.statusCode ||= 200;
      if (res.statusCode >= 200 && res.statusCode < 300) receiver.delivered.push(JSON.parse(record.body));
      if (!res.writableEnded) res.end("ok");
    });
  });
  server.on("connection", () => {
    receiver.connections++;
  });
  await new Promise<void>((done) => server.listen(0, "127.0.0.1", done));
  receiver.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
  receiver.close = () =>
    new Promise<void>((done) => {
      server.closeAllConnections();
      server.close(() => done());
    });
  return receiver;
}

/** A receiver that holds every answer (its requests stay open) until `release()`, then answers at once. */
export interface HoldingReceiver extends Receiver {
  /** Answers of the requests held so far, oldest first. */
  held: Array<() => void>;
  /** True once released. */
  readonly released: boolean;
  /** Answers every held request 200 and every later one at once. */
  release(): void;
}

export async function startHoldingReceiver(): Promise<HoldingReceiver> {
  const receiver = (await startReceiver()) as HoldingReceiver;
  let released = false;
  receiver.held = [];
  Object.defineProperty(receiver, "released", { get: () => released });
  receiver.release = () => {
    released = true;
    for (const answer of receiver.held.splice(0)) answer();
  };
  receiver.behaviour = (req, res) => {
    const answer = () => {
      receiver.delivered.push(JSON.parse(req.body));
      res.end("ok");
    };
    if (released) answer();
    else receiver.held.push(answer);
    return "handled";
  };
  return receiver;
}

/** Polls `check` every 50 ms until it returns true or the deadline passes (then fails with `what`). */
export function waitFor(
  check: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 60_000,
): Promise<void> {
  return waitUntil(check, what, timeoutMs, 50);
}
