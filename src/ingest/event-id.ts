import { randomFillSync } from "node:crypto";

/**
 * UUIDv7 event ids (RFC 9562): 48-bit Unix milliseconds, version 7, a 12-bit counter in `rand_a`
 * (RFC 9562 §6.2 method 1) and 62 random bits. Ids of one process sort in the order they were made,
 * also within one millisecond; the counter starts at a random value below 2^11 each millisecond, and
 * when it overflows the timestamp borrows the next millisecond so order still holds.
 */

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

// Random bytes are drawn in bulk: one getrandom call per 512 ids instead of one per id.
const POOL_IDS = 512;
const pool = Buffer.allocUnsafe(8 * POOL_IDS);
let poolOffset = pool.length;

let lastMs = -1;
let counter = 0;

function randomBytes8(): number {
  if (poolOffset >= pool.length) {
    randomFillSync(pool);
    poolOffset = 0;
  }
  const at = poolOffset;
  poolOffset += 8;
  return at;
}

/** A new UUIDv7 string, e.g. `01934f6e-3b2a-7c41-9f0e-5d6c7b8a9e10`. */
export function uuidv7(now: number = Date.now()): string {
  if (now > lastMs) {
    lastMs = now;
    const at = randomBytes8();
    // Seed below 2^11 so at least 2048 ids fit in the millisecond before borrowing.
    counter = ((pool[at] as number) << 3) | ((pool[at + 1] as number) & 0x07);
  } else {
    counter++;
    if (counter > 0xfff) {
      lastMs++;
      counter = 0;
    }
  }
  const ms = lastMs;
  const r = randomBytes8();
  const hi = Math.floor(ms / 0x1000000); // top 24 bits of the 48-bit timestamp
  const lo = ms % 0x1000000; // bottom 24 bits
  const b6 = 0x70 | (counter >> 8);
  const b7 = counter & 0xff;
  const b8 = 0x80 | ((pool[r] as number) & 0x3f); // variant 10xx
  return (
    HEX[(hi >> 16) & 0xff] +
    (HEX[(hi >> 8) & 0xff] as string) +
    HEX[hi & 0xff] +
    HEX[(lo >> 16) & 0xff] +
    "-" +
    HEX[(lo >> 8) & 0xff] +
    HEX[lo & 0xff] +
    "-" +
    HEX[b6] +
    HEX[b7] +
    "-" +
    HEX[b8] +
    HEX[pool[r + 1] as number] +
    "-" +
    HEX[pool[r + 2] as number] +
    HEX[pool[r + 3] as number] +
    HEX[pool[r + 4] as number] +
    HEX[pool[r + 5] as number] +
    HEX[pool[r + 6] as number] +
    HEX[pool[r + 7] as number]
  );
}

let isoMs = Number.NaN;
let isoText = "";

/**
 * `new Date(ms).toISOString()`, kept for the last millisecond asked. Ingest stamps every request with its
 * receive time, and several requests share a millisecond at any real rate; one toISOString is ≈ 600 ns.
 */
export function isoTime(ms: number): string {
  if (ms !== isoMs) {
    isoText = new Date(ms).toISOString();
    isoMs = ms;
  }
  return isoText;
}

/** The Unix millisecond timestamp a UUIDv7 carries. */
export function uuidv7Time(id: string): number {
  return Number.parseInt(id.slice(0, 8) + id.slice(9, 13), 16);
}

export const UUIDV7_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
