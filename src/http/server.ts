import {
  createServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
  STATUS_CODES,
} from "node:http";
import type { Duplex } from "node:stream";
import { getRequestListener, RequestError } from "@hono/node-server";
import type { Logger } from "../log.ts";
import { HttpProblem, problemDocument, sendProblem } from "./problem.ts";

export interface ServeOptions {
  port: number;
  hostname: string;
  /** SO_REUSEPORT: other processes may listen on the same port; the kernel spreads connections. */
  reusePort?: boolean;
  logger: Logger;
  /**
   * Routes answered straight from Node's request, ahead of the app, keyed "METHOD /path" (the path without
   * its query): ingest's, where Hono's routing, context and response conversion cost about a tenth of the
   * CPU per event (bench/README.md, session 18). Every other request, and any form of these paths only the
   * app's router recognises (percent-encoded, say), goes to the app.
   */
  direct?: ReadonlyMap<string, DirectHandler>;
  /** Counts the server's open connections (ingest reads it: see IngestServiceOptions.clients). */
  connections?: OpenConnections;
}

/** A server's open connections, counted as they open and close. */
export class OpenConnections {
  #count = 0;

  get count(): number {
    return this.#count;
  }

  track(server: Server): void {
    server.on("connection", (socket: Duplex) => {
      this.#count++;
      socket.once("close", () => this.#count--);
    });
  }
}

/** A direct route: answers on `res` itself; `path` is the request's path, for problem documents. */
export type DirectHandler = (req: IncomingMessage, res: ServerResponse, path: string) => Promise<void>;

type Fetch = (request: Request, env: { incoming: IncomingMessage; outgoing: ServerResponse }) => unknown;

/**
 * After answering a request Node could not parse, how long the socket may stay half-open while the
 * client reads the answer. Destroying it at once, with the client's unread bytes still queued, makes the
 * kernel send a reset that can overtake the answer.
 */
const LINGER_MS = 2000;

/** A whole HTTP/1.1 response carrying a problem, for sockets that have no ServerResponse. */
function rawProblemResponse(p: HttpProblem): string {
  const body = problemDocument(p, undefined);
  const head = [
    `HTTP/1.1 ${p.status} ${STATUS_CODES[p.status] ?? "Error"}`,
    "content-type: application/problem+json",
    `content-length: ${Buffer.byteLength(body)}`,
    ...Object.entries(p.headers).map(([name, value]) => `${name}: ${value}`),
    "connection: close",
  ];
  return `${head.join("\r\n")}\r\n\r\n${body}`;
}

function endWithProblem(socket: Duplex, p: HttpProblem): void {
  socket.end(rawProblemResponse(p));
  // Keep reading (and dropping) what the client still sends until it closes or the linger ends.
  socket.resume();
  const timer = setTimeout(() => socket.destroy(), LINGER_MS);
  timer.unref();
  socket.once("close", () => clearTimeout(timer));
}

/** What Node's own parser refused, as the problem Node would have answered with a bare status line. */
function parserProblem(code: string | undefined): HttpProblem {
  switch (code) {
    case "HPE_HEADER_OVERFLOW":
      return new HttpProblem(431, "Request header fields too large", "the request's headers are too large");
    case "HPE_CHUNK_EXTENSIONS_OVERFLOW":
      return new HttpProblem(413, "Payload too large", "the request's chunk extensions are too large");
    case "ERR_HTTP_REQUEST_TIMEOUT":
      return new HttpProblem(408, "Request timeout", "the request did not arrive in time");
    default:
      return new HttpProblem(400, "Malformed request", "the request is not valid HTTP/1.1");
  }
}

/** A refusal made before the app runs: answered, then the connection is closed. */
function writeProblem(res: ServerResponse, p: HttpProblem, instance: string | undefined): void {
  sendProblem(
    res,
    new HttpProblem(p.status, p.title, p.detail, { headers: { connection: "close", ...p.headers } }),
    instance,
  );
}

/**
 * Serves the Hono app on Node's HTTP server, like @hono/node-server's `serve`, but so that every refusal —
 * including the ones Node or the adapter make before the app runs — is an `application/problem+json`
 * 4xx and no malformed request just loses its connection:
 * - a request line or header Node's parser refuses (400, 431 for oversized headers, 408 on timeout);
 * - a request target or Host header the adapter cannot turn into a URL (`GET *`, a backslash path);
 * - an HTTP/1.1 request without Host; an `Expect` other than 100-continue (417); CONNECT (405).
 */
export function serveApp(fetch: Fetch, opts: ServeOptions): Promise<Server> {
  const listener = getRequestListener(fetch as Parameters<typeof getRequestListener>[0], {
    // Only HTTP/1.0 requests get here without a Host; they are served as if addressed to us.
    hostname: opts.hostname,
    errorHandler: (err) => {
      if (err instanceof RequestError) {
        const p = new HttpProblem(
          400,
          "Malformed request",
          `the request target is not valid: ${err.message}`,
          {
            headers: { connection: "close" },
          },
        );
        return new Response(problemDocument(p, undefined), {
          status: 400,
          headers: { "content-type": "application/problem+json", ...p.headers },
        });
      }
      opts.logger.error({ err }, "unhandled error serving a request");
      const p = new HttpProblem(500, "Internal error", "the gateway failed to handle this request");
      return new Response(problemDocument(p, undefined), {
        status: 500,
        headers: { "content-type": "application/problem+json" },
      });
    },
  });

  const direct = opts.direct?.size ? opts.direct : undefined;
  // Node would answer a missing Host with a bodiless 400; the check is ours so the 400 is a problem.
  const server = createServer({ requireHostHeader: false }, (req, res) => {
    if (req.headers.host === undefined && req.httpVersion !== "1.0") {
      writeProblem(
        res,
        new HttpProblem(400, "Malformed request", "an HTTP/1.1 request needs a Host header"),
        req.url,
      );
      return;
    }
    if (direct !== undefined) {
      const url = req.url ?? "";
      const query = url.indexOf("?");
      const path = query === -1 ? url : url.slice(0, query);
      const handler = direct.get(`${req.method} ${path}`);
      if (handler !== undefined) {
        void handler(req, res, path);
        return;
      }
    }
    void listener(req, res);
  });

  opts.connections?.track(server);
  const answered = new WeakSet<Duplex>();
  server.on("clientError", (err: NodeJS.ErrnoException, socket: Duplex) => {
    // Node calls this again for every later chunk of a connection its parser gave up on.
    if (answered.has(socket)) return;
    answered.add(socket);
    const inFlight = (socket as { _httpMessage?: ServerResponse })._httpMessage;
    if (err.code === "ECONNRESET" || !socket.writable || inFlight?.headersSent) {
      socket.destroy();
      return;
    }
    endWithProblem(socket, parserProblem(err.code));
  });

  server.on("checkExpectation", (req: IncomingMessage, res: ServerResponse) => {
    const p = new HttpProblem(417, "Expectation failed", "only Expect: 100-continue is supported");
    writeProblem(res, p, req.url);
  });

  // Without a listener Node drops a CONNECT's socket without a word.
  server.on("connect", (_req: IncomingMessage, socket: Duplex) => {
    endWithProblem(
      socket,
      new HttpProblem(405, "Method not allowed", "CONNECT is not supported: this is not a proxy", {
        headers: { allow: "GET, HEAD, POST, PATCH, DELETE" },
      }),
    );
  });

  return new Promise((done, fail) => {
    server.once("error", fail);
    server.listen({ port: opts.port, host: opts.hostname, reusePort: opts.reusePort ?? false }, () => {
      server.off("error", fail);
      done(server);
    });
  });
}
