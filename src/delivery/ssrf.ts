import dns, { type LookupAddress, type LookupOptions } from "node:dns";
import { isIP, isIPv4, isIPv6 } from "node:net";
import { Agent, buildConnector } from "undici";

/**
 * SSRF guard. A destination URL is checked twice: at registration (`checkDestinationUrl`, which resolves
 * the host) and again at connect time (`createDestinationAgent`, whose lookup refuses before dialling),
 * because DNS may answer differently between the two. Only addresses in public unicast space pass, unless
 * ALLOW_PRIVATE_DESTINATIONS is set for local development and tests.
 */

/** The destination is not allowed; the message is fit to show an API client. */
export class UnsafeDestinationError extends Error {
  override name = "UnsafeDestinationError";
  /** Set so socket-level callers (net, undici) that switch on `code` see a stable value. */
  readonly code = "EUNSAFEDEST";
}

/** Why an address is not public; `classifyAddress` returns one of these or undefined. */
export type AddressReason =
  | "loopback"
  | "private"
  | "unique-local"
  | "link-local"
  | "multicast"
  | "unspecified"
  | "reserved"
  | "broadcast"
  | "documentation";

const REASON_PHRASE: Record<AddressReason, string> = {
  loopback: "a loopback address",
  private: "a private address",
  "unique-local": "a unique-local address",
  "link-local": "a link-local address",
  multicast: "a multicast address",
  unspecified: "an unspecified address",
  reserved: "a reserved address",
  broadcast: "a broadcast address",
  documentation: "a documentation address",
};

type V4Range = { base: number; bits: number; reason: AddressReason };
type V6Range = { base: bigint; bits: number; reason: AddressReason };

// First match wins, so narrower ranges come before the ranges that contain them.
const V4_RANGES: V4Range[] = [
  ["0.0.0.0", 8, "unspecified"],
  ["10.0.0.0", 8, "private"],
  ["100.64.0.0", 10, "private"], // carrier-grade NAT (RFC 6598)
  ["127.0.0.0", 8, "loopback"],
  ["169.254.0.0", 16, "link-local"], // includes the cloud metadata address 169.254.169.254
  ["172.16.0.0", 12, "private"],
  ["192.0.0.0", 24, "reserved"], // IETF protocol assignments
  ["192.0.2.0", 24, "documentation"],
  ["192.88.99.0", 24, "reserved"], // deprecated 6to4 relay anycast
  ["192.168.0.0", 16, "private"],
  ["198.18.0.0", 15, "reserved"], // benchmarking
  ["198.51.100.0", 24, "documentation"],
  ["203.0.113.0", 24, "documentation"],
  ["224.0.0.0", 4, "multicast"],
  ["255.255.255.255", 32, "broadcast"],
  ["240.0.0.0", 4, "reserved"],
].map(([ip, bits, reason]) => ({
  base: v4ToNumber(ip as string) as number,
  bits: bits as number,
  reason: reason as AddressReason,
}));

const V6_RANGES: V6Range[] = [
  ["::", 128, "unspecified"],
  ["::1", 128, "loopback"],
  ["64:ff9b:1::", 48, "private"], // local-use NAT64 (RFC 8215)
  ["100::", 64, "reserved"], // discard-only
  ["2001:db8::", 32, "documentation"],
  ["2001::", 23, "reserved"], // IETF protocol assignments (Teredo 2001::/32 is judged before this table)
  ["3fff::", 20, "documentation"], // RFC 9637
  ["fc00::", 7, "unique-local"],
  ["fe80::", 10, "link-local"],
  ["fec0::", 10, "private"], // deprecated site-local
  ["ff00::", 8, "multicast"],
].map(([ip, bits, reason]) => ({
  base: v6ToBigInt(ip as string) as bigint,
  bits: bits as number,
  reason: reason as AddressReason,
}));

const GLOBAL_UNICAST_V6: V6Range = { base: v6ToBigInt("2000::") as bigint, bits: 3, reason: "reserved" };

function v4ToNumber(ip: string): number | undefined {
  if (!isIPv4(ip)) return undefined;
  return ip.split(".").reduce((acc, octet) => acc * 256 + Number(octet), 0);
}

/** The 128-bit value of an IPv6 address (zone id ignored), or undefined when it is not one. */
function v6ToBigInt(input: string): bigint | undefined {
  const ip = input.replace(/%.*$/, "");
  if (!isIPv6(ip)) return undefined;
  let text = ip;
  // A trailing dotted quad (::ffff:1.2.3.4) stands for the last two groups.
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (dotted?.[1]) {
    const v4 = v4ToNumber(dotted[1]) as number;
    text = `${text.slice(0, -dotted[1].length)}${(v4 >>> 16).toString(16)}:${(v4 & 0xffff).toString(16)}`;
  }
  const [head = "", tail] = text.split("::");
  const headGroups = head ? head.split(":") : [];
  const tailGroups = tail ? tail.split(":") : [];
  const missing = 8 - headGroups.length - tailGroups.length;
  const groups =
    tail === undefined ? headGroups : [...headGroups, ...Array(missing).fill("0"), ...tailGroups];
  return groups.reduce((acc, g) => (acc << 16n) | BigInt(Number.parseInt(g, 16)), 0n);
}

function inV4(n: number, r: V4Range): boolean {
  const size = 2 ** (32 - r.bits);
  return n >= r.base && n < r.base + size;
}

function inV6(n: bigint, r: V6Range): boolean {
  const shift = BigInt(128 - r.bits);
  return n >> shift === r.base >> shift;
}

function classifyV4(n: number): AddressReason | undefined {
  return V4_RANGES.find((r) => inV4(n, r))?.reason;
}

const LOW32 = 0xffffffffn;

function classifyV6(n: bigint): AddressReason | undefined {
  const top96 = n >> 32n;
  const low32 = Number(n & LOW32);
  // IPv4-mapped ::ffff:a.b.c.d — the kernel dials the IPv4 address, so judge that.
  if (top96 === 0xffffn) return classifyV4(low32);
  // NAT64 64:ff9b::/96 — the translator dials the embedded IPv4 address.
  if (top96 === 0x64ff9b0000000000000000n) return classifyV4(low32);
  // ::/96 holds ::, ::1 and the deprecated IPv4-compatible addresses; none is a real destination.
  if (top96 === 0n) {
    if (n === 0n) return "unspecified";
    if (n === 1n) return "loopback";
    return classifyV4(low32) ?? "reserved";
  }
  // 6to4 2002:a.b.c.d::/48 — relays dial the embedded IPv4 address.
  if (n >> 112n === 0x2002n) return classifyV4(Number((n >> 80n) & LOW32));
  // Teredo 2001:0::/32 — the client address is stored inverted in the low 32 bits.
  if (n >> 96n === 0x20010000n) return classifyV4(~low32 >>> 0);
  const special = V6_RANGES.find((r) => inV6(n, r));
  if (special) return special.reason;
  // Outside 2000::/3 nothing is assigned as global unicast.
  return inV6(n, GLOBAL_UNICAST_V6) ? undefined : "reserved";
}

/**
 * Undefined when `ip` is a public unicast address; otherwise why it is not (loopback, private,
 * unique-local, link-local, multicast, unspecified, reserved, broadcast, documentation). IPv6 forms that
 * embed an IPv4 address (mapped, compatible, NAT64, 6to4, Teredo) are judged by that IPv4 address.
 * A string that is not an IP address at all is "reserved": nothing unknown is let through.
 */
export function classifyAddress(ip: string): AddressReason | undefined {
  const v4 = v4ToNumber(ip);
  if (v4 !== undefined) return classifyV4(v4);
  const v6 = v6ToBigInt(ip);
  if (v6 !== undefined) return classifyV6(v6);
  return "reserved";
}

/** The client-facing error for a resolved address that is not public, or undefined when it is. */
function refuseAddress(host: string, address: string): UnsafeDestinationError | undefined {
  const reason = classifyAddress(address);
  if (!reason) return undefined;
  const shown =
    host === address ? `destination host ${host} is` : `destination host ${host} resolves to ${address},`;
  return new UnsafeDestinationError(`${shown} ${REASON_PHRASE[reason]}`);
}

/** URL.hostname without IPv6 brackets and a trailing root dot. */
function bareHost(hostname: string): string {
  const unbracketed = hostname.startsWith("[") && hostname.endsWith("]") ? hostname.slice(1, -1) : hostname;
  return unbracketed.endsWith(".") ? unbracketed.slice(0, -1) : unbracketed;
}

/** RFC 6761: `localhost` and `*.localhost` are loopback whatever a resolver says. */
function isLocalhostName(host: string): boolean {
  const h = host.toLowerCase();
  return h === "localhost" || h.endsWith(".localhost");
}

function lookupAll(host: string): Promise<LookupAddress[]> {
  return dns.promises.lookup(host, { all: true, verbatim: true });
}

/**
 * Registration-time check. Throws UnsafeDestinationError unless the URL is http(s), has no userinfo and
 * names a host; then, unless `allowPrivate`, resolves the host (IP literals in every spelling the WHATWG
 * parser normalises, e.g. 2130706433, 0x7f000001, 0177.0.0.1, 127.1, [::ffff:7f00:1]) and requires every
 * address to be public — one private answer among public ones is enough to refuse.
 */
export async function checkDestinationUrl(
  url: string,
  opts: {
    allowPrivate: boolean;
    /** Resolver of every address of a name; dns.lookup `all: true` unless replaced (tests). */
    resolve?: (host: string) => Promise<LookupAddress[]>;
  },
): Promise<void> {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new UnsafeDestinationError("destination URL is not a valid absolute URL");
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    throw new UnsafeDestinationError(`destination URL scheme must be http or https, not ${parsed.protocol}`);
  }
  if (parsed.username || parsed.password) {
    throw new UnsafeDestinationError("destination URL must not contain credentials (user:password@)");
  }
  const host = bareHost(parsed.hostname);
  if (!host) throw new UnsafeDestinationError("destination URL has no host");
  if (opts.allowPrivate) return;

  if (isLocalhostName(host))
    throw new UnsafeDestinationError(`destination host ${host} is a loopback address`);
  if (isIP(host)) {
    const refused = refuseAddress(host, host);
    if (refused) throw refused;
    return;
  }
  let addresses: LookupAddress[];
  try {
    addresses = await (opts.resolve ?? lookupAll)(host);
  } catch {
    throw new UnsafeDestinationError(`destination host ${host} does not resolve`);
  }
  if (addresses.length === 0) throw new UnsafeDestinationError(`destination host ${host} does not resolve`);
  for (const { address } of addresses) {
    const refused = refuseAddress(host, address);
    if (refused) throw refused;
  }
}

type LookupCallback = (
  err: NodeJS.ErrnoException | null,
  address: string | LookupAddress[],
  family?: number,
) => void;

/**
 * A `lookup` with the signature of dns.lookup, for net/tls/undici `connect: { lookup }`. It resolves
 * every address and fails with UnsafeDestinationError (code EUNSAFEDEST) when any is not public, so the
 * socket is never dialled. Answers in the shape asked for (`options.all` true or false).
 */
export function guardedLookup(allowPrivate: boolean) {
  return function lookup(
    hostname: string,
    options: LookupOptions | number | LookupCallback,
    maybeCallback?: LookupCallback,
  ): void {
    const callback = (typeof options === "function" ? options : maybeCallback) as LookupCallback;
    const opts: LookupOptions =
      typeof options === "function" ? {} : typeof options === "number" ? { family: options } : options;
    const answer = (addresses: LookupAddress[]) => {
      if (opts.all) return callback(null, addresses);
      const first = addresses[0] as LookupAddress;
      callback(null, first.address, first.family);
    };
    // No shortcut for `localhost` names here: the addresses the resolver returns now are the ones
    // dialled, so those are what is judged.
    dns.lookup(hostname, { ...opts, all: true }, (err, addresses) => {
      if (err) return callback(err, "");
      if (!allowPrivate) {
        for (const { address } of addresses) {
          const refused = refuseAddress(hostname, address);
          if (refused) return callback(refused, "");
        }
      }
      answer(addresses);
    });
  };
}

/**
 * Synchronous check for IP-literal hosts, right before a request: net.connect does not call `lookup`
 * for an IP literal, so the guarded lookup alone cannot stop `http://127.0.0.1/`.
 */
export function assertDialable(url: URL, allowPrivate: boolean): void {
  if (allowPrivate) return;
  const host = bareHost(url.hostname);
  if (isLocalhostName(host))
    throw new UnsafeDestinationError(`destination host ${host} is a loopback address`);
  if (isIP(host)) {
    const refused = refuseAddress(host, host);
    if (refused) throw refused;
  }
}

/**
 * The HTTP agent of one destination: its own connection pool, a connect timeout, and a connector that
 * refuses non-public addresses before dialling — IP literals by `assertDialable`'s rule, names through
 * the guarded lookup (the address actually dialled is the one checked). undici's Agent follows no
 * redirects unless a redirect interceptor is composed in, and none is.
 */
export function createDestinationAgent(opts: {
  allowPrivate: boolean;
  connections: number;
  connectTimeoutMs: number;
}): Agent {
  const connector = buildConnector({
    timeout: opts.connectTimeoutMs,
    lookup: guardedLookup(opts.allowPrivate),
  } as buildConnector.BuildOptions);
  return new Agent({
    connections: opts.connections,
    connect(connectOpts, callback) {
      if (!opts.allowPrivate) {
        const host = bareHost(connectOpts.hostname);
        const refused = isIP(host) ? refuseAddress(host, host) : undefined;
        if (refused) return callback(refused, null);
      }
      connector(connectOpts, callback);
    },
  });
}
