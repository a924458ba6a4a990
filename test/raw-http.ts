import { connect } from "node:net";

/** One HTTP/1.x response as read off a raw socket (1xx interim responses skipped). */
export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}

/** The connection ended (closed or reset) before a whole response arrived, or nothing came in time. */
export class DroppedConnectionError extends Error {
  override name = "DroppedConnectionError";
}

const NO_BODY = new Set([204, 304]);

/** Parses the first final response in `buf`; undefined while it is incomplete (`closed`: no more bytes come). */
export function parseResponse(buf: Buffer, isHead: boolean, closed: boolean): RawResponse | undefined {
  let at = 0;
  for (;;) {
    const end = buf.indexOf("\r\n\r\n", at);
    if (end < 0) return undefined;
    const lines = buf.subarray(at, end).toString("latin1").split("\r\n");
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? "");
    if (!m) throw new DroppedConnectionError(`not an HTTP response: ${JSON.stringify(lines[0])}`);
    const status = Number(m[1]);
    const headers: Record<string, string> = {};
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(":");
      const name = line.slice(0, colon).trim().toLowerCase();
      const value = line.slice(colon + 1).trim();
      headers[name] = name in headers ? `${headers[name]}, ${value}` : value;
    }
    const bodyStart = end + 4;
    if (status >= 100 && status < 200) {
      at = bodyStart;
      continue;
    }
    if (isHead || NO_BODY.has(status)) return { status, headers, body: Buffer.alloc(0) };
    if (/chunked/i.test(headers["transfer-encoding"] ?? ""))
      return parseChunked(buf, bodyStart, status, headers);
    const length = headers["content-length"];
    if (length !== undefined) {
      const n = Number(length);
      if (buf.length - bodyStart < n) return undefined;
      return { status, headers, body: buf.subarray(bodyStart, bodyStart + n) };
    }
    return closed ? { status, headers, body: buf.subarray(bodyStart) } : undefined;
  }
}

function parseChunked(
  buf: Buffer,
  start: number,
  status: number,
  headers: Record<string, string>,
): RawResponse | undefined {
  const parts: Buffer[] = [];
  let at = start;
  for (;;) {
    const lineEnd = buf.indexOf("\r\n", at);
    if (lineEnd < 0) return undefined;
    const size = Number.parseInt(buf.subarray(at, lineEnd).toString("latin1"), 16);
    if (Number.isNaN(size)) throw new DroppedConnectionError("bad chunk size in the response");
    const dataStart = lineEnd + 2;
    if (size === 0) {
      // The last chunk, then (no trailers) an empty line.
      if (buf.length < dataStart + 2) return undefined;
      return { status, headers, body: Buffer.concat(parts) };
    }
    if (buf.length < dataStart + size + 2) return undefined;
    parts.push(buf.subarray(dataStart, dataStart + size));
    at = dataStart + size + 2;
  }
}

export interface RawRequestOptions {
  /** The request's method, so a HEAD answer is not expected to carry a body. */
  method: string;
  /** Send FIN after the bytes (a client that stops half-way). */
  halfClose?: boolean;
  timeoutMs?: number;
}

/**
 * Writes `bytes` to 127.0.0.1:port as they are and reads one response. Resolves as soon as a whole response
 * is in, even if the server then resets the connection; rejects with DroppedConnectionError when the
 * connection ends first.
 */
export function sendRaw(port: number, bytes: Buffer, opts: RawRequestOptions): Promise<RawResponse> {
  const isHead = opts.method.toUpperCase() === "HEAD";
  return new Promise((resolve, reject) => {
    const socket = connect(port, "127.0.0.1");
    const chunks: Buffer[] = [];
    let settled = false;
    const finish = (closed: boolean, why?: string) => {
      if (settled) return;
      let res: RawResponse | undefined;
      try {
        res = parseResponse(Buffer.concat(chunks), isHead, closed);
      } catch (err) {
        settled = true;
        socket.destroy();
        reject(err);
        return;
      }
      if (res) {
        settled = true;
        socket.destroy();
        resolve(res);
      } else if (closed) {
        settled = true;
        socket.destroy();
        const got = Buffer.concat(chunks).subarray(0, 120).toString("latin1");
        reject(
          new DroppedConnectionError(
            `${why ?? "connection closed"} before a whole response (got ${JSON.stringify(got)})`,
          ),
        );
      }
    };
    const timer = setTimeout(
      () => finish(true, `no answer in ${opts.timeoutMs ?? 30_000} ms`),
      opts.timeoutMs ?? 30_000,
    );
    socket.on("data", (chunk: Buffer) => {
      chunks.push(chunk);
      finish(false);
    });
    // A reset after the response was sent (EPIPE on our unfinished write) is fine: finish() looks at what came.
    socket.on("error", (err) => finish(true, (err as NodeJS.ErrnoException).code ?? err.message));
    socket.on("close", () => {
      clearTimeout(timer);
      finish(true);
    });
    socket.write(bytes);
    if (opts.halfClose) socket.end();
  });
}
