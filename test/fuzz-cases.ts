import { CreateDestinationBody, PatchDestinationBody } from "../src/http/destination-schemas.ts";
import { EventBatchSchema, EventInputSchema } from "../src/ingest/events.ts";

/** mulberry32: small, fast, and the same sequence on every machine for one seed. */
export class Rand {
  #state: number;
  constructor(seed: number) {
    this.#state = seed >>> 0;
  }
  next(): number {
    this.#state = (this.#state + 0x6d2b79f5) >>> 0;
    let t = this.#state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** An integer in [min, max]. */
  int(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1));
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)] as T;
  }
  bytes(n: number): Buffer {
    const out = Buffer.alloc(n);
    for (let i = 0; i < n; i++) out[i] = Math.floor(this.next() * 256);
    return out;
  }
  hex(n: number): string {
    let s = "";
    for (let i = 0; i < n; i++) s += "0123456789abcdef"[Math.floor(this.next() * 16)];
    return s;
  }
}

/** Case `index` of a run gets its own stream, so one case can be replayed alone (FUZZ_ONLY). */
export function caseRand(seed: number, index: number): Rand {
  let h = (seed ^ Math.imul(index + 1, 0x9e3779b1)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return new Rand((h ^ (h >>> 16)) >>> 0);
}

/**
 * One generated request. `allowed` is decided by the generator before anything is sent: "4xx" when the
 * request can never be valid, "2xx|4xx" where it may happen to be (a read-only route).
 */
export interface FuzzCase {
  generator: string;
  method: string;
  target: string;
  headers: Array<[string, string]>;
  body?: Buffer;
  /** Send the body with Transfer-Encoding: chunked (undici streams an iterable). */
  chunked?: boolean;
  /** Bytes written as they are on a raw socket instead of a request built from the fields above. */
  raw?: Buffer;
  halfClose?: boolean;
  allowed: "4xx" | "2xx|4xx";
}

export interface FuzzContext {
  adminToken: string;
  ingestKeys: string[];
  /** A destination that exists, with attempts and dead letters: never sent a token on a changing route. */
  seededId: string;
  seededEventId: string;
  ingestMaxBody: number;
  adminMaxBody: number;
}

const deep = (r: Rand, levels: number): string =>
  r.chance(0.5) ? "[".repeat(levels) + "]".repeat(levels) : `${'{"a":'.repeat(levels)}1${"}".repeat(levels)}`;

const ODD_NUMBERS = [
  "1e400",
  "-1e400",
  "-0",
  "NaN",
  "Infinity",
  "-Infinity",
  "1e-400",
  "123456789012345678901234567890",
  "0x10",
  "01",
  ".5",
  "1.",
  "+1",
  "9007199254740993",
  "-9223372036854775809",
  "4.9e-324",
  "1E+308",
];

/** A JSON (or almost-JSON) value fragment of a type no field expects, or out of range. */
function wrongValue(r: Rand): string {
  switch (r.int(0, 9)) {
    case 0:
      return r.pick(["null", "true", "false", "0", "-1", "1.5", '""', "[]", "{}", '[1,"a",null]']);
    case 1:
      return r.pick(ODD_NUMBERS);
    case 2:
      return JSON.stringify("x".repeat(r.int(201, 5000)));
    case 3:
      return deep(r, r.pick([10, 1000, 10_000]));
    case 4:
      return r.pick([
        '"\\u0000"',
        '"\\ud800"',
        '"\\udfff\\ud800"',
        '"\\\\"',
        '"\\x41"',
        "'single'",
        "undefined",
      ]);
    case 5:
      return r.pick(['{"__proto__":{"polluted":1}}', '{"constructor":{"prototype":{"polluted":1}}}']);
    case 6:
      return JSON.stringify(r.bytes(r.int(1, 64)).toString("latin1"));
    case 7:
      return `[${Array.from({ length: r.int(2, 2000) }, () => "1").join(",")}]`;
    case 8:
      return r.pick([
        '"ftp://x/"',
        '"javascript:alert(1)"',
        '"http://"',
        '"http://[::1"',
        '"http://127.0.0.1:99999/"',
      ]);
    default:
      return r.pick(['"whsec_"', '"whsec_!!!"', '"whsec_AAAA"', '"a b"', '"\\r\\n"', '" "']);
  }
}

type Fields = Array<[string, string]>;
const obj = (fields: Fields) => `{${fields.map(([k, v]) => `${JSON.stringify(k)}:${v}`).join(",")}}`;

const EVENT: Fields = [
  ["userID", '"user-1"'],
  ["type", '"order.paid"'],
  ["payload", '{"orderId":"o-1","amount":12.5}'],
];
const DESTINATION: Fields = [
  ["url", '"https://receiver.example.com/hook"'],
  ["name", '"fuzz"'],
  ["eventTypes", '["order.paid"]'],
  ["headers", '{"authorization":"Bearer x"}'],
  ["maxAttempts", "3"],
  ["timeoutMs", "1000"],
  ["backoffBaseMs", "10"],
  ["backoffMaxMs", "100"],
  ["maxConcurrency", "2"],
];
const BAD_HEADERS = [
  '{"host":"x"}',
  '{"bad name":"x"}',
  '{"x":"a\\r\\nb"}',
  '{"__proto__":"x"}',
  '{"X":"1","x":"2"}',
  '{"webhook-id":"x"}',
  `{"x":${JSON.stringify("v".repeat(9000))}}`,
  obj(Array.from({ length: 100 }, (_, i) => [`x-${i}`, '"v"'])),
];

/** Mutates a template object at the JSON-text level (so duplicates, 1e400 and NaN can be written). */
function mutateFields(r: Rand, template: Fields): string {
  let fields: Fields = template.filter((_, i) => i === 0 || r.chance(0.5)).map(([k, v]) => [k, v]);
  const rounds = r.int(1, 3);
  for (let n = 0; n < rounds; n++) {
    const i = r.int(0, fields.length - 1);
    switch (r.int(0, 5)) {
      case 0:
        if (fields[i]) fields[i] = [fields[i][0], wrongValue(r)];
        break;
      case 1:
        fields.splice(i, 1);
        break;
      case 2:
        fields.push([
          r.pick(["__proto__", "constructor", "prototype", "unknown", "", "userID\u0000"]),
          wrongValue(r),
        ]);
        break;
      case 3: {
        const dup = fields[i];
        if (dup) fields.splice(r.int(0, fields.length), 0, [dup[0], r.chance(0.5) ? wrongValue(r) : dup[1]]);
        break;
      }
      case 4:
        if (fields[i]?.[0] === "headers" || r.chance(0.3)) fields.push(["headers", r.pick(BAD_HEADERS)]);
        else if (fields[i]) fields[i] = [fields[i][0], r.pick(ODD_NUMBERS)];
        break;
      default:
        fields = fields.map(([k, v]) => [r.chance(0.2) ? k.toUpperCase() : k, v]);
    }
  }
  return obj(fields);
}

const SCALARS = [
  "",
  " ",
  "null",
  "[]",
  '"x"',
  "0",
  "true",
  "{",
  "}",
  "{}}",
  "\ufeff{}",
  "{}",
  "[{}]",
  "\u0000",
];

/** Puts invalid UTF-8 sequences into a body at random places. */
function breakUtf8(r: Rand, body: Buffer): Buffer {
  const bad = [
    [0xff],
    [0xc0, 0x80],
    [0xed, 0xa0, 0x80],
    [0xe2, 0x82],
    [0xf8, 0x88, 0x80, 0x80, 0x80],
    [0x80],
  ];
  const parts: Buffer[] = [];
  let at = 0;
  for (let n = r.int(1, 4); n > 0; n--) {
    const cut = r.int(at, body.length);
    parts.push(body.subarray(at, cut), Buffer.from(r.pick(bad)));
    at = cut;
  }
  parts.push(body.subarray(at));
  return Buffer.concat(parts);
}

/** A body that is wrong in one of the ways the brief lists; `valid` is a template body that would pass. */
function badBody(r: Rand, template: Fields, limit: number, wrap: (inner: string) => string): Buffer {
  const valid = wrap(obj(template));
  let text: string;
  switch (r.int(0, 9)) {
    case 0:
      return r.bytes(r.int(1, 2048));
    case 1:
      text = valid.slice(0, r.int(0, valid.length - 1));
      break;
    case 2:
      text = r.chance(0.5)
        ? deep(r, 10_000)
        : wrap(obj([...template.slice(1), [template[0]?.[0] ?? "x", deep(r, 10_000)]]));
      break;
    case 3: {
      // Just under or just over the body limit, in one long string field.
      const target = limit + r.pick([-200, -50, 1, 100, 5000]);
      const filler = Math.max(0, target - valid.length - 12);
      text = wrap(
        obj([
          ...template.slice(1),
          [template[0]?.[0] ?? "x", "1"],
          ["pad", JSON.stringify("p".repeat(filler))],
        ]),
      );
      break;
    }
    case 4:
      text = r.pick(SCALARS);
      break;
    case 5: {
      const encoded = Buffer.from(wrap(mutateFields(r, template)), "utf16le");
      return r.chance(0.5) ? Buffer.concat([Buffer.from([0xff, 0xfe]), encoded]) : encoded;
    }
    default:
      text = wrap(mutateFields(r, template));
  }
  const body = Buffer.from(text, "utf8");
  return r.chance(0.15) ? breakUtf8(r, body) : body;
}

/** True when the gateway would read `body` as a valid request for `schema`: then no credential goes with it. */
function readsValid(
  schema: { safeParse(v: unknown): { success: boolean } },
  body: Buffer | undefined,
): boolean {
  if (!body) return false;
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder().decode(body));
  } catch {
    return false;
  }
  return schema.safeParse(value).success;
}

const JSON_TYPES = [
  "application/json",
  "application/json; charset=utf-8",
  "application/json; charset=utf-16",
  "APPLICATION/JSON",
  "application/cloudevents+json",
  "application/json;;;",
  'application/json; charset="unterminated',
  "application/json; a=b; a=c",
];
const OTHER_TYPES = [
  "text/plain",
  "application/x-www-form-urlencoded",
  "multipart/form-data; boundary=x",
  "application/jsonx",
  "*/*",
  "",
];

function contentType(r: Rand): Array<[string, string]> {
  if (r.chance(0.1)) return [];
  return [["content-type", r.chance(0.8) ? r.pick(JSON_TYPES) : r.pick(OTHER_TYPES)]];
}

/** An Authorization header that carries `secret` (when `right`), or one that must not be accepted. */
function auth(r: Rand, secret: string, right: boolean): Array<[string, string]> {
  if (right) return [["authorization", r.pick([`Bearer ${secret}`, `Bearer   ${secret}`])]];
  const wrong = [
    "Bearer wrong-token-0123456789",
    `Bearer ${secret}x`,
    `Bearer ${secret.slice(0, -1)}`,
    `Basic ${Buffer.from(`admin:${secret}`).toString("base64")}`,
    "Bearer",
    `Token ${secret}`,
    `Bearer ${"t".repeat(r.int(100, 10_000))}`,
    `Bearer ${secret}, Bearer x`,
    `Bearer x ${secret}`,
  ];
  return r.chance(0.3) ? [] : [["authorization", r.pick(wrong)]];
}

function unknownId(r: Rand): string {
  return r.pick([
    `dest_${r.hex(32)}`,
    "x",
    `dest_${r.hex(8)}%00`,
    "a".repeat(201),
    "%ZZ",
    "..%2f..%2f",
    "null",
    "__proto__",
  ]);
}

function ingestCase(r: Rand, ctx: FuzzContext): FuzzCase {
  const batch = r.chance(0.4);
  let body: Buffer;
  if (batch && r.chance(0.2)) {
    const n = r.pick([0, 1001]);
    body = Buffer.from(
      `{"events":[${Array.from({ length: n }, () => '{"userID":"u","payload":1}').join(",")}]}`,
    );
  } else {
    const wrap = batch ? (inner: string) => `{"events":[${obj(EVENT)},${inner}]}` : (inner: string) => inner;
    body = badBody(r, EVENT, ctx.ingestMaxBody, wrap);
  }
  const valid = readsValid(batch ? EventBatchSchema : EventInputSchema, body);
  const headers: Array<[string, string]> = [
    ...contentType(r),
    ...auth(r, r.pick(ctx.ingestKeys), !valid && r.chance(0.8)),
  ];
  if (r.chance(0.2)) {
    headers.push([
      "idempotency-key",
      r.pick(["k-1", "", "a".repeat(300), "with space", `k-${r.hex(8)}`, "é"]),
    ]);
  }
  return {
    generator: "ingest",
    method: "POST",
    target: batch ? "/api/events" : "/api/singleEvent",
    headers,
    body,
    chunked: r.chance(0.2),
    allowed: "4xx",
  };
}

function adminWriteCase(r: Rand, ctx: FuzzContext): FuzzCase {
  const op = r.pick([
    "create",
    "create",
    "patch",
    "patch-seeded",
    "replay",
    "replay-seeded",
    "delete",
    "delete-seeded",
  ]);
  const id = op.endsWith("seeded") ? ctx.seededId : unknownId(r);
  const template =
    op === "create"
      ? DESTINATION
      : op.startsWith("patch")
        ? [...DESTINATION.slice(1), ["disabled", "true"] as [string, string]]
        : [["eventIds", '["e-1"]'] as [string, string]];
  const body =
    op.startsWith("delete") && r.chance(0.7) ? undefined : badBody(r, template, ctx.adminMaxBody, (s) => s);
  const headers = contentType(r);
  // A changing route gets the token only when the request cannot change anything: an unknown id, or a
  // body the schema refuses. The seeded destination's replay and delete never get it.
  let mayUseToken: boolean;
  if (op === "create") mayUseToken = !readsValid(CreateDestinationBody, body);
  else if (op === "patch-seeded") {
    const media = (headers[0]?.[1] ?? "").split(";")[0]?.trim() ?? "";
    mayUseToken = /^application\/([\w.-]+\+)?json$/i.test(media) && !readsValid(PatchDestinationBody, body);
  } else mayUseToken = !op.endsWith("seeded");
  headers.push(...auth(r, ctx.adminToken, mayUseToken && r.chance(0.8)));
  const method = op.startsWith("patch") ? "PATCH" : op.startsWith("delete") ? "DELETE" : "POST";
  const target =
    op === "create"
      ? "/api/destinations"
      : op.startsWith("replay")
        ? `/api/destinations/${id}/dead-letters/replay`
        : `/api/destinations/${id}`;
  return { generator: "admin-write", method, target, headers, body, chunked: r.chance(0.15), allowed: "4xx" };
}

function cursor(r: Rand): string {
  const b64 = (s: string) => Buffer.from(s).toString("base64url");
  return r.pick([
    b64('{"b":-1}'),
    b64('{"b":1.5}'),
    b64('{"b":"x"}'),
    b64('{"b":1e400}'),
    b64('{"d":1,"e":{"$gt":""}}'),
    b64('{"d":"1","e":"x"}'),
    b64("[]"),
    b64("null"),
    b64(deep(r, 100)),
    r.hex(r.int(1, 40)),
    "%%%",
    "x".repeat(r.int(400, 1200)),
    b64('{"b":1,"__proto__":{"x":1}}'),
  ]);
}

function query(r: Rand): string {
  const pieces = [
    () =>
      `limit=${r.pick(["0", "-1", "1", "500", "501", "1000", "1001", "1e3", "abc", "", "%00", "99999999999999999999", "+5", "0x10"])}`,
    () => `cursor=${cursor(r)}`,
    () =>
      `since=${r.pick(["", "2025-01-01T00:00:00Z", "yesterday", "2025-13-45T99:99:99Z", "0", "%ZZ", "2025-01-01"])}`,
    () => `outcome=${r.pick(["dead", "failed", "x", "", "DEAD"])}`,
    () =>
      r.pick([
        "unknown=1",
        "__proto__=1",
        "constructor=x",
        "limit=1&limit=2",
        "a[b]=c",
        "&&&",
        "%",
        "=",
        "q=%E0%A4%A",
      ]),
    () => `x=${"q".repeat(r.int(1000, 6000))}`,
  ];
  const n = r.int(0, 3);
  return n === 0 ? "" : `?${Array.from({ length: n }, () => r.pick(pieces)()).join("&")}`;
}

function adminReadCase(r: Rand, ctx: FuzzContext): FuzzCase {
  const id = r.chance(0.6) ? ctx.seededId : unknownId(r);
  const target = r.pick([
    "/api/destinations",
    `/api/destinations/${id}`,
    `/api/destinations/${id}/attempts`,
    `/api/destinations/${id}/dead-letters`,
    `/api/events/${r.chance(0.5) ? ctx.seededEventId : unknownId(r)}/attempts`,
  ]);
  return {
    generator: "admin-read",
    method: r.chance(0.85) ? "GET" : "HEAD",
    target: target + query(r),
    headers: auth(r, ctx.adminToken, r.chance(0.7)),
    allowed: "2xx|4xx",
  };
}

function publicCase(r: Rand): FuzzCase {
  const method = r.pick(["GET", "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]);
  return {
    generator: "public",
    method,
    target: r.pick(["/healthz", "/readyz", "/metrics", "/openapi.json"]) + query(r),
    headers: r.chance(0.3) ? [["authorization", "Bearer whatever-0123456789"]] : [],
    body: method === "GET" || method === "HEAD" ? undefined : r.bytes(r.int(0, 100)),
    allowed: method === "GET" || method === "HEAD" ? "2xx|4xx" : "4xx",
  };
}

function pathCase(r: Rand, ctx: FuzzContext): FuzzCase {
  // Never the seeded id: a dot segment could route a tricked DELETE with the token to it.
  const base = r.pick([
    "/api/singleEvent",
    "/api/events",
    "/api/destinations",
    `/api/destinations/${unknownId(r)}`,
    `/api/destinations/${unknownId(r)}/attempts`,
    `/api/destinations/${unknownId(r)}/dead-letters/replay`,
    "/healthz",
    "/openapi.json",
  ]);
  const tricks: Array<(p: string) => string> = [
    (p) => `${p}/..%2f..%2f`,
    () => "/api/destinations/..%2f..%2fhealthz",
    () => "/api/destinations/%2e%2e/%2e%2e/healthz",
    (p) => p.replace(/\//g, "//"),
    (p) => `${p}%00`,
    (p) => `${p}/%00/`,
    (p) => `${p}/${"a".repeat(r.int(1000, 8000))}`,
    () => `/${"a/".repeat(r.int(9000, 12_000))}`,
    (p) => `${p}/%E2%82%AC%F0%9F%98%80`,
    (p) => `${p}/€😀`,
    (p) => `${p}/%ZZ%`,
    (p) => p.toUpperCase(),
    (p) => `${p}/`,
    (p) => `${p}?`,
    (p) => `${p}#frag`,
    (p) => p.replace("/api", "/./api/../api"),
    () => "/api/destinations;jsessionid=1",
    (p) => `${p}\\..\\`,
    (p) => `http://127.0.0.1${p}`,
    () => "*",
    (p) => `${p}/\u202e\ufeff`,
    (p) => p.replace("api", "%61pi"),
  ];
  const method = r.pick(["GET", "GET", "HEAD", "POST", "PATCH", "DELETE"]);
  const readOnly = method === "GET" || method === "HEAD";
  const headers: Array<[string, string]> = [...auth(r, ctx.adminToken, r.chance(0.5))];
  // The only body a write gets here is one every schema refuses (a strict object with an unknown key).
  const body = readOnly || r.chance(0.4) ? undefined : Buffer.from('{"fuzz":true}');
  if (body) headers.push(["content-type", "application/json"]);
  return {
    generator: "paths",
    method,
    target: r.pick(tricks)(base),
    headers,
    body,
    allowed: readOnly ? "2xx|4xx" : "4xx",
  };
}

function headerCase(r: Rand, ctx: FuzzContext): FuzzCase {
  const base = r.int(0, 3);
  const c: FuzzCase =
    base === 0
      ? { generator: "headers", method: "GET", target: "/healthz", headers: [], allowed: "2xx|4xx" }
      : base === 1
        ? {
            generator: "headers",
            method: "GET",
            target: "/api/destinations",
            headers: [["authorization", `Bearer ${ctx.adminToken}`]],
            allowed: "2xx|4xx",
          }
        : base === 2
          ? {
              generator: "headers",
              method: "POST",
              target: "/api/singleEvent",
              headers: [["authorization", `Bearer ${ctx.ingestKeys[0]}`]],
              body: Buffer.from('{"userID":5,"payload":1}'),
              allowed: "4xx",
            }
          : {
              generator: "headers",
              method: "POST",
              target: "/api/destinations",
              headers: [["authorization", `Bearer ${ctx.adminToken}`]],
              body: Buffer.from('{"url":5}'),
              allowed: "4xx",
            };
  const hasBody = c.body !== undefined;
  switch (r.int(0, 8)) {
    case 0:
      c.headers.push(["x-fuzz", "a".repeat(r.int(1000, 17_000))]);
      break;
    case 1:
      for (let i = r.int(10, 2000); i > 0; i--) c.headers.push([`x-h${i}`, "v"]);
      break;
    case 2:
      c.headers.push([
        "content-type",
        r.pick([
          "application/json; charset=utf-16",
          'application/json; charset="utf-8"',
          "application/json;charset",
          `application/json; boundary=${"x".repeat(5000)}`,
          "application/json\t;",
          ";application/json",
          "application/json, text/plain",
        ]),
      ]);
      if (hasBody && r.chance(0.5)) c.body = Buffer.from((c.body as Buffer).toString("utf8"), "utf16le");
      break;
    case 3:
      c.headers.push(
        ["content-type", "application/json"],
        ["content-type", "text/plain"],
        ["authorization", "Bearer x"],
      );
      break;
    case 4:
      c.headers.push([
        r.pick(["x-nul", "bad name", "x\u0000", "x:y", "é"]),
        r.pick(["a\u0000b", "a\u007fb", "a\u0001b", "a\rb", "\u00ff\u00fe", "€"]),
      ]);
      break;
    case 5:
      c.headers.push([
        r.pick([
          "transfer-encoding",
          "te",
          "content-encoding",
          "range",
          "if-none-match",
          "x-forwarded-for",
          "forwarded",
          "cookie",
          "accept-encoding",
          "accept",
          "x-http-method-override",
        ]),
        r.pick([
          "gzip",
          "trailers",
          "bytes=0-1,-5",
          "*",
          "1.2.3.4, <script>",
          'for="[::1]"',
          "a=".repeat(2000),
          "DELETE",
          "chunked, gzip",
        ]),
      ]);
      break;
    case 6:
      c.headers.push(["expect", r.pick(["100-continue", "200-ok", "", "100-continue, foo"])]);
      break;
    case 7:
      c.headers.push(
        ["connection", r.pick(["upgrade", "close, upgrade", "keep-alive, te", "x-fuzz"])],
        ["upgrade", r.pick(["websocket", "h2c", "tls/1.3"])],
      );
      break;
    default:
      c.headers.push([
        "host",
        r.pick(["", "a b", "evil.example", "127.0.0.1:99999", "[::1", "x".repeat(3000), "ä.example"]),
      ]);
  }
  return c;
}

function methodCase(r: Rand, ctx: FuzzContext): FuzzCase {
  const method = r.pick([
    "PUT",
    "OPTIONS",
    "TRACE",
    "PROPFIND",
    "MKCOL",
    "PURGE",
    "LINK",
    "QUERY",
    "SEARCH",
    "REPORT",
    "M-SEARCH",
    "PATCH",
    "DELETE",
    "POST",
    "GET",
    "HEAD",
    "get",
    "Get",
    "FOO",
    "G@T",
    "BREW",
    "X".repeat(r.int(20, 300)),
  ]);
  const target = r.pick([
    "/api/singleEvent",
    "/api/events",
    "/api/destinations",
    `/api/destinations/${unknownId(r)}`,
    `/api/destinations/${unknownId(r)}/attempts`,
    `/api/destinations/${unknownId(r)}/dead-letters/replay`,
    `/api/events/${unknownId(r)}/attempts`,
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/nope",
  ]);
  const readOnly = method === "GET" || method === "HEAD";
  return {
    generator: "methods",
    method,
    target,
    headers: auth(r, ctx.adminToken, r.chance(0.5)),
    body: readOnly || r.chance(0.5) ? undefined : Buffer.from("{}}"),
    allowed: readOnly ? "2xx|4xx" : "4xx",
  };
}

/** Requests no client library would send, as bytes. `ok` = may be a valid request after all. */
function protocolCase(r: Rand): FuzzCase {
  const host = "host: 127.0.0.1\r\n";
  const post = (extra: string, body: string) =>
    `POST /api/singleEvent HTTP/1.1\r\n${host}content-type: application/json\r\n${extra}\r\n${body}`;
  const cases: Array<[string, string, boolean, boolean?]> = [
    ["garbage", "GARBAGE\r\n\r\n", false],
    ["http/0.9", "GET /healthz\r\n\r\n", true],
    ["http/1.0", "GET /healthz HTTP/1.0\r\n\r\n", true],
    ["http/2.0 line", `GET /healthz HTTP/2.0\r\n${host}\r\n`, true],
    ["http/9.9", `GET /healthz HTTP/9.9\r\n${host}\r\n`, false],
    ["lf only", "GET /healthz HTTP/1.1\nhost: x\n\n", true],
    ["h2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", false],
    ["te+cl", post("content-length: 5\r\ntransfer-encoding: chunked\r\n", "0\r\n\r\n"), false],
    ["bad chunk", post("transfer-encoding: chunked\r\n", "ZZ\r\nabc\r\n0\r\n\r\n"), false],
    ["chunk overflow", post("transfer-encoding: chunked\r\n", "ffffffffffffffffffff\r\nabc\r\n"), false],
    [
      "chunk ext",
      post("transfer-encoding: chunked\r\n", `2;${"e".repeat(20_000)}\r\n{}\r\n0\r\n\r\n`),
      false,
    ],
    [
      "chunked bad json",
      post("transfer-encoding: chunked\r\n", '5\r\n{"use\r\n0\r\nx-trailer: 1\r\n\r\n'),
      false,
    ],
    ["short body", post("content-length: 100\r\n", '{"userID"'), false, true],
    ["short chunked", post("transfer-encoding: chunked\r\n", '10\r\n{"userID"'), false, true],
    [
      "bad cl",
      post(`content-length: ${r.pick(["abc", "-1", "1, 2", "99999999999999999999", "0x10", ""])}\r\n`, "{}"),
      false,
    ],
    ["dup cl", post("content-length: 2\r\ncontent-length: 3\r\n", "{}"), false],
    ["connect", "CONNECT 127.0.0.1:80 HTTP/1.1\r\nhost: 127.0.0.1:80\r\n\r\n", false],
    ["no host", "GET /healthz HTTP/1.1\r\n\r\n", false],
    ["absolute", `GET http://127.0.0.1/healthz HTTP/1.1\r\n${host}\r\n`, true],
    ["asterisk", `OPTIONS * HTTP/1.1\r\n${host}\r\n`, false],
    ["space in target", `GET /a b HTTP/1.1\r\n${host}\r\n`, false],
    ["long method", `${"A".repeat(10_000)} / HTTP/1.1\r\n${host}\r\n`, false],
    ["nul in line", `GET /\u0000 HTTP/1.1\r\n${host}\r\n`, false],
    ["folded header", `GET /healthz HTTP/1.1\r\n${host}x-a: 1\r\n  folded\r\n\r\n`, false],
    ["no colon", `GET /healthz HTTP/1.1\r\n${host}nocolon\r\n\r\n`, false],
    ["tls hello", "\u0016\u0003\u0001\u0000\u00a5\u0001\u0000\u0000\u00a1\u0003\u0003", false, true],
    ["random bytes", `X${r.bytes(r.int(1, 4096)).toString("latin1")}`, false, true],
  ];
  const [name, text, ok, halfClose] = r.pick(cases);
  return {
    generator: "protocol",
    method: text.startsWith("GET") && !name.includes("long") ? "GET" : name,
    target: name,
    headers: [],
    raw: Buffer.from(text, "latin1"),
    halfClose: halfClose ?? false,
    allowed: ok ? "2xx|4xx" : "4xx",
  };
}

const GENERATORS: Array<[number, (r: Rand, ctx: FuzzContext) => FuzzCase]> = [
  [30, ingestCase],
  [25, adminWriteCase],
  [15, adminReadCase],
  [5, (r) => publicCase(r)],
  [8, pathCase],
  [7, headerCase],
  [5, methodCase],
  [5, (r) => protocolCase(r)],
];
const TOTAL_WEIGHT = GENERATORS.reduce((sum, [w]) => sum + w, 0);

/** Case `index` of the run with `seed`: the same request every time. */
export function generateCase(seed: number, index: number, ctx: FuzzContext): FuzzCase {
  const r = caseRand(seed, index);
  let roll = r.next() * TOTAL_WEIGHT;
  for (const [weight, generate] of GENERATORS) {
    roll -= weight;
    if (roll < 0) return generate(r, ctx);
  }
  return ingestCase(r, ctx);
}
