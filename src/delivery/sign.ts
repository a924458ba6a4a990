import { createHmac, createSecretKey, type KeyObject, randomBytes } from "node:crypto";

const PREFIX = "whsec_";

/** A new Standard Webhooks secret: `whsec_` + base64 of 32 random bytes. */
export function generateSecret(): string {
  return `${PREFIX}${randomBytes(32).toString("base64")}`;
}

/**
 * The HMAC key of a secret: the base64 after `whsec_`, decoded (Standard Webhooks). A KeyObject, not a
 * Buffer: createHmac wraps a Buffer key in a new KeyObject on every call, which tripled the cost of
 * signing (bench/delivery.ts profile).
 */
export function secretKey(secret: string): KeyObject {
  return createSecretKey(
    Buffer.from(secret.startsWith(PREFIX) ? secret.slice(PREFIX.length) : secret, "base64"),
  );
}

/**
 * The `webhook-signature` header value: `v1,` + base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`.
 * Takes the decoded key so a worker derives it once per destination, not per request.
 */
export function signWebhook(key: KeyObject, id: string, timestampSeconds: number, body: string): string {
  const mac = createHmac("sha256", key).update(`${id}.${timestampSeconds}.`).update(body).digest("base64");
  return `v1,${mac}`;
}
