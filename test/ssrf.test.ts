import assert from "node:assert/strict";
import diagnostics from "node:diagnostics_channel";
import type { LookupAddress } from "node:dns";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import { request } from "undici";
import {
  assertDialable,
  checkDestinationUrl,
  classifyAddress,
  createDestinationAgent,
  guardedLookup,
  UnsafeDestinationError,
} from "../src/delivery/ssrf.ts";

// Every client socket node:net creates is published here; the parse-and-classify tests assert none is.
const socketsOpened: unknown[] = [];
const onSocket = (msg: unknown) => socketsOpened.push(msg);
before(() => diagnostics.subscribe("net.client.socket", onSocket));
after(() => diagnostics.unsubscribe("net.client.socket", onSocket));

type Row = [address: string, expected: string | undefined];

const IPV4: Row[] = [
  // 0.0.0.0/8
  ["0.0.0.0", "unspecified"],
  ["0.255.255.255", "unspecified"],
  ["1.0.0.0", undefined],
  // 10/8
  ["9.255.255.255", undefined],
  ["10.0.0.0", "private"],
  ["10.0.0.1", "private"],
  ["10.255.255.255", "private"],
  ["11.0.0.0", undefined],
  // 100.64/10
  ["100.63.255.255", undefined],
  ["100.64.0.0", "private"],
  ["100.127.255.255", "private"],
  ["100.128.0.0", undefined],
  // 127/8
  ["126.255.255.255", undefined],
  ["127.0.0.0", "loopback"],
  ["127.0.0.1", "loopback"],
  ["127.255.255.255", "loopback"],
  ["128.0.0.0", undefined],
  // 169.254/16
  ["169.253.255.255", undefined],
  ["169.254.0.0", "link-local"],
  ["169.254.169.254", "link-local"],
  ["169.254.255.255", "link-local"],
  ["169.255.0.0", undefined],
  // 172.16/12
  ["172.15.255.255", undefined],
  ["172.16.0.0", "private"],
  ["172.16.5.4", "private"],
  ["172.31.255.255", "private"],
  ["172.32.0.0", undefined],
  // 192.0.0/24, 192.0.2/24
  ["191.255.255.255", undefined],
  ["192.0.0.0", "reserved"],
  ["192.0.0.255", "reserved"],
  ["192.0.1.0", undefined],
  ["192.0.2.0", "documentation"],
  ["192.0.2.255", "documentation"],
  ["192.0.3.0", undefined],
  // 192.88.99/24
  ["192.88.98.255", undefined],
  ["192.88.99.0", "reserved"],
  ["192.88.99.255", "reserved"],
  ["192.88.100.0", undefined],
  // 192.168/16
  ["192.167.255.255", undefined],
  ["192.168.0.0", "private"],
  ["192.168.1.1", "private"],
  ["192.168.255.255", "private"],
  ["192.169.0.0", undefined],
  // 198.18/15
  ["198.17.255.255", undefined],
  ["198.18.0.0", "reserved"],
  ["198.19.255.255", "reserved"],
  ["198.20.0.0", undefined],
  // 198.51.100/24, 203.0.113/24
  ["198.51.99.255", undefined],
  ["198.51.100.0", "documentation"],
  ["198.51.100.255", "documentation"],
  ["198.51.101.0", undefined],
  ["203.0.112.255", undefined],
  ["203.0.113.0", "documentation"],
  ["203.0.113.255", "documentation"],
  ["203.0.114.0", undefined],
  // 224/4, 240/4, broadcast
  ["223.255.255.255", undefined],
  ["224.0.0.0", "multicast"],
  ["224.0.0.1", "multicast"],
  ["239.255.255.255", "multicast"],
  ["240.0.0.0", "reserved"],
  ["255.255.255.254", "reserved"],
  ["255.255.255.255", "broadcast"],
  // public
  ["8.8.8.8", undefined],
  ["1.1.1.1", undefined],
  ["93.184.215.14", undefined],
];

const IPV6: Row[] = [
  ["::", "unspecified"],
  ["0:0:0:0:0:0:0:0", "unspecified"],
  ["::1", "loopback"],
  ["0:0:0:0:0:0:0:1", "loopback"],
  // IPv4-mapped ::ffff:0:0/96 — judged as the IPv4 address, in both spellings
  ["::ffff:127.0.0.1", "loopback"],
  ["::ffff:7f00:1", "loopback"],
  ["::FFFF:7F00:0001", "loopback"],
  ["::ffff:10.0.0.1", "private"],
  ["::ffff:169.254.169.254", "link-local"],
  ["::ffff:a9fe:a9fe", "link-local"],
  ["::ffff:0.0.0.0", "unspecified"],
  ["::ffff:255.255.255.255", "broadcast"],
  ["::ffff:224.0.0.1", "multicast"],
  ["::ffff:8.8.8.8", undefined],
  ["::ffff:808:808", undefined],
  // IPv4-compatible ::a.b.c.d (deprecated): the embedded reason, else reserved
  ["::127.0.0.1", "loopback"],
  ["::7f00:1", "loopback"],
  ["::10.0.0.1", "private"],
  ["::8.8.8.8", "reserved"],
  ["::2", "unspecified"],
  // NAT64 64:ff9b::/96 — the translator dials the embedded IPv4
  ["64:ff9b::127.0.0.1", "loopback"],
  ["64:ff9b::a00:1", "private"],
  ["64:ff9b::c0a8:101", "private"],
  ["64:ff9b::a9fe:a9fe", "link-local"],
  ["64:ff9b::808:808", undefined],
  ["64:ff9b::8.8.8.8", undefined],
  ["64:ff9b:1::1", "private"],
  // 6to4 2002::/16 — the embedded IPv4 in bits 16..48
  ["2002:7f00:1::", "loopback"],
  ["2002:a00:1::1", "private"],
  ["2002:c0a8:101::1", "private"],
  ["2002:a9fe:a9fe::", "link-local"],
  ["2002::", "unspecified"],
  ["2002:808:808::1", undefined],
  // Teredo 2001::/32 — the client IPv4 is stored inverted in the low 32 bits
  ["2001:0:4136:e378:8000:63bf:3fff:fdd2", "documentation"], // 192.0.2.45
  ["2001:0:4136:e378:8000:63bf:f5ff:fffe", "private"], // 10.0.0.1
  ["2001:0:4136:e378:8000:63bf:f7f7:f7f7", undefined], // 8.8.8.8
  // 2001::/23 IETF assignments, 2001:db8::/32 documentation
  ["2001:1::1", "reserved"],
  ["2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff", "reserved"],
  ["2001:200::", undefined],
  ["2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", undefined],
  ["2001:db8::", "documentation"],
  ["2001:db8::1", "documentation"],
  ["2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", "documentation"],
  ["2001:db9::", undefined],
  // 3fff::/20 documentation
  ["3ffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff", undefined],
  ["3fff::", "documentation"],
  ["3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff", "documentation"],
  ["3fff:1000::", undefined],
  // discard-only 100::/64
  ["100::", "reserved"],
  ["100::ffff:ffff:ffff:ffff", "reserved"],
  // unique-local fc00::/7
  ["fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "reserved"],
  ["fc00::", "unique-local"],
  ["fd00::1", "unique-local"],
  ["fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "unique-local"],
  ["fe00::", "reserved"],
  // link-local fe80::/10, site-local fec0::/10
  ["fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "reserved"],
  ["fe80::", "link-local"],
  ["fe80::1", "link-local"],
  ["fe80::1%eth0", "link-local"],
  ["febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "link-local"],
  ["fec0::1", "private"],
  // multicast ff00::/8
  ["ff00::", "multicast"],
  ["ff02::1", "multicast"],
  ["ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "multicast"],
  // global unicast 2000::/3 and what lies outside it
  ["1fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "reserved"],
  ["2000::", undefined],
  ["2606:4700:4700::1111", undefined],
  ["2a00:1450:4001:80b::200e", undefined],
  ["3fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", undefined],
  ["4000::", "reserved"],
];

describe("classifyAddress", () => {
  for (const [address, expected] of [...IPV4, ...IPV6]) {
    test(`${address} → ${expected ?? "public"}`, () => {
      assert.equal(classifyAddress(address), expected);
    });
  }

  test("a string that is not an IP address is never public", () => {
    for (const s of ["", "localhost", "example.com", "127.1", "2130706433", "1.2.3.4.5", "::g"]) {
      assert.equal(classifyAddress(s), "reserved", s);
    }
  });
});

/** A stand-in resolver for names, so no test asks a real DNS server anything. */
function resolverOf(table: Record<string, string[]>) {
  return async (host: string): Promise<LookupAddress[]> => {
    const addresses = table[host];
    if (!addresses) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: "ENOTFOUND" });
    return addresses.map((address) => ({ address, family: address.includes(":") ? 6 : 4 }));
  };
}

const names = resolverOf({
  "public.example": ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"],
  "mixed.example": ["93.184.215.14", "10.0.0.7"],
  "metadata.example": ["169.254.169.254"],
  "rebind.example": ["::ffff:127.0.0.1"],
});

async function refusal(url: string, allowPrivate = false): Promise<string> {
  try {
    await checkDestinationUrl(url, { allowPrivate, resolve: names });
  } catch (err) {
    assert.ok(err instanceof UnsafeDestinationError, `expected UnsafeDestinationError, got ${err}`);
    return err.message;
  }
  assert.fail(`${url} was allowed`);
}

describe("checkDestinationUrl", () => {
  const privateUrls: [string, RegExp][] = [
    ["http://localhost/", /loopback/],
    ["http://LOCALHOST./hook", /loopback/],
    ["http://api.localhost:8080/", /loopback/],
    ["http://127.0.0.1/", /127\.0\.0\.1 is a loopback address/],
    ["http://2130706433/", /127\.0\.0\.1 is a loopback/], // decimal
    ["http://0x7f000001/", /127\.0\.0\.1 is a loopback/], // hex
    ["http://0x7f.0.0.1/", /127\.0\.0\.1 is a loopback/], // hex octet
    ["http://0177.0.0.1/", /127\.0\.0\.1 is a loopback/], // octal
    ["http://017700000001/", /127\.0\.0\.1 is a loopback/], // octal whole
    ["http://127.1/", /127\.0\.0\.1 is a loopback/], // short form
    ["http://127.0.1/", /127\.0\.0\.1 is a loopback/],
    ["https://[::1]/", /::1 is a loopback/],
    ["http://[::ffff:127.0.0.1]/", /loopback/],
    ["http://[::ffff:7f00:1]:9000/", /loopback/],
    ["http://[0:0:0:0:0:ffff:7f00:1]/", /loopback/],
    ["http://10.0.0.1/", /private/],
    ["http://172.16.5.4/", /private/],
    ["http://192.168.1.1/", /private/],
    ["http://100.64.0.1/", /private/],
    ["http://169.254.169.254/latest/meta-data/", /169\.254\.169\.254 is a link-local/],
    ["http://[fd00::1]/", /unique-local/],
    ["http://[fe80::1]/", /link-local/],
    ["http://224.0.0.1/", /multicast/],
    ["http://0.0.0.0/", /unspecified/],
    ["http://0/", /unspecified/],
    ["http://[::]/", /unspecified/],
    ["http://255.255.255.255/", /broadcast/],
    ["http://[64:ff9b::a00:1]/", /private/],
    ["http://[2002:7f00:1::]/", /loopback/],
    ["http://mixed.example/", /mixed\.example resolves to 10\.0\.0\.7, a private address/],
    ["http://metadata.example/", /resolves to 169\.254\.169\.254, a link-local address/],
    ["http://rebind.example/", /resolves to ::ffff:127\.0\.0\.1, a loopback address/],
  ];

  for (const [url, message] of privateUrls) {
    test(`refuses ${url}, and allows it with allowPrivate`, async () => {
      const opened = socketsOpened.length;
      assert.match(await refusal(url), message);
      await checkDestinationUrl(url, { allowPrivate: true, resolve: names });
      assert.equal(socketsOpened.length, opened, "no socket may be opened to check a URL");
    });
  }

  const malformed: [string, RegExp][] = [
    ["ftp://example.com/", /scheme must be http or https, not ftp:/],
    ["file:///etc/passwd", /scheme must be http or https/],
    ["gopher://127.0.0.1:70/", /scheme/],
    ["javascript:alert(1)", /scheme/],
    ["data:text/plain,hi", /scheme/],
    ["ws://example.com/", /scheme/],
    ["http://user:pass@public.example/", /credentials/],
    ["http://user@public.example/", /credentials/],
    ["https://:secret@public.example/", /credentials/],
    ["not a url", /not a valid absolute URL/],
    ["/relative/path", /not a valid absolute URL/],
    ["http://", /not a valid absolute URL/],
  ];
  for (const [url, message] of malformed) {
    test(`refuses ${url} even with allowPrivate`, async () => {
      assert.match(await refusal(url, true), message);
      assert.match(await refusal(url, false), message);
    });
  }

  test("a name that does not resolve is refused", async () => {
    assert.match(await refusal("https://nowhere.example/"), /nowhere\.example does not resolve/);
  });

  test("public addresses and names whose every address is public pass", async () => {
    const opened = socketsOpened.length;
    for (const url of [
      "https://public.example/hooks?x=1",
      "http://93.184.215.14:8080/",
      "https://[2606:4700:4700::1111]/",
      "http://[64:ff9b::808:808]/",
    ]) {
      await checkDestinationUrl(url, { allowPrivate: false, resolve: names });
    }
    assert.equal(socketsOpened.length, opened);
  });

  test("without a stand-in resolver, localhost is refused by name (RFC 6761) and nothing is dialled", async () => {
    const opened = socketsOpened.length;
    await assert.rejects(
      checkDestinationUrl("http://localhost:1/", { allowPrivate: false }),
      UnsafeDestinationError,
    );
    assert.equal(socketsOpened.length, opened);
  });
});

describe("assertDialable", () => {
  test("refuses non-public IP literals and localhost names, synchronously", () => {
    for (const url of [
      "http://2130706433/",
      "http://127.1:8080/",
      "http://[::ffff:7f00:1]/",
      "http://[fe80::1]/",
      "http://169.254.169.254/",
      "http://localhost/",
    ]) {
      assert.throws(() => assertDialable(new URL(url), false), UnsafeDestinationError, url);
      assert.doesNotThrow(() => assertDialable(new URL(url), true), url);
    }
  });

  test("passes public IP literals and leaves names to the connect-time lookup", () => {
    for (const url of ["http://8.8.8.8/", "https://[2606:4700:4700::1111]/", "https://example.com/"]) {
      assert.doesNotThrow(() => assertDialable(new URL(url), false), url);
    }
  });
});

describe("guardedLookup", () => {
  function lookup(allowPrivate: boolean, options: { all?: boolean; family?: number }) {
    return new Promise<{ err: NodeJS.ErrnoException | null; address: unknown; family?: number }>((done) =>
      guardedLookup(allowPrivate)("localhost", options, (err, address, family) =>
        done({ err, address, family }),
      ),
    );
  }

  test("refuses a name resolving to loopback, with code EUNSAFEDEST, in both callback shapes", async () => {
    for (const all of [true, false]) {
      const { err } = await lookup(false, { all });
      assert.ok(err instanceof UnsafeDestinationError);
      assert.equal(err.code, "EUNSAFEDEST");
      assert.match(err.message, /localhost resolves to (127\.0\.0\.1|::1), a loopback address/);
    }
  });

  test("with allowPrivate answers like dns.lookup: an array with all, else address and family", async () => {
    const many = await lookup(true, { all: true });
    assert.equal(many.err, null);
    assert.ok(Array.isArray(many.address));
    assert.ok((many.address as LookupAddress[]).some((a) => classifyAddress(a.address) === "loopback"));
    const one = await lookup(true, { family: 4 });
    assert.equal(one.err, null);
    assert.equal(one.address, "127.0.0.1");
    assert.equal(one.family, 4);
  });
});

describe("createDestinationAgent (connect-time check)", () => {
  let server: Server;
  let port: number;
  let connections = 0;
  let requests = 0;

  before(async () => {
    server = createServer((req, res) => {
      requests++;
      if (req.url === "/redirect") {
        res.writeHead(302, { location: `http://127.0.0.1:${port}/elsewhere` }).end();
        return;
      }
      res.writeHead(200, { "content-type": "text/plain" }).end("ok");
    });
    server.on("connection", () => connections++);
    await new Promise<void>((done) => server.listen(0, "127.0.0.1", done));
    port = (server.address() as AddressInfo).port;
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise<void>((done) => server.close(() => done()));
  });

  test("refuses a hostname resolving to 127.0.0.1 before dialling; the server sees no connection", async () => {
    const agent = createDestinationAgent({ allowPrivate: false, connections: 2, connectTimeoutMs: 5000 });
    try {
      for (const url of [
        `http://localhost:${port}/`,
        `http://127.0.0.1:${port}/`,
        `http://2130706433:${port}/`,
        `http://[::ffff:127.0.0.1]:${port}/`,
      ]) {
        await assert.rejects(request(url, { dispatcher: agent }), (err: NodeJS.ErrnoException) => {
          assert.ok(err instanceof UnsafeDestinationError, `${url}: ${err}`);
          assert.equal(err.code, "EUNSAFEDEST");
          return true;
        });
      }
      assert.equal(connections, 0);
      assert.equal(requests, 0);
    } finally {
      await agent.close();
    }
  });

  test("with allowPrivate the same request succeeds, and a redirect is returned, not followed", async () => {
    const agent = createDestinationAgent({ allowPrivate: true, connections: 2, connectTimeoutMs: 5000 });
    const opened = socketsOpened.length;
    try {
      const ok = await request(`http://localhost:${port}/`, { dispatcher: agent });
      assert.equal(ok.statusCode, 200);
      assert.equal(await ok.body.text(), "ok");
      assert.ok(connections >= 1);
      // The channel the "nothing dialled" assertions watch does see real connections.
      assert.ok(socketsOpened.length > opened);

      const before = requests;
      const redirected = await request(`http://127.0.0.1:${port}/redirect`, { dispatcher: agent });
      await redirected.body.dump();
      assert.equal(redirected.statusCode, 302);
      assert.equal(requests, before + 1, "the Location was not requested");
    } finally {
      await agent.close();
    }
  });
});
