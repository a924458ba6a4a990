/**
 * Debian's chromium driven by playwright-core for the console tests and the console benchmark: launched
 * with flags that keep it off every network but loopback (the gateway and receivers are on 127.0.0.1).
 */
import { existsSync } from "node:fs";
import { type Browser, chromium } from "playwright-core";

export const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

export const OFFLINE_ARGS = [
  // CI runs as root, where Chromium's sandbox cannot start.
  "--no-sandbox",
  // Every host name fails to resolve except loopback: nothing leaves the machine.
  "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
  "--proxy-server=direct://",
  "--proxy-bypass-list=*",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-default-apps",
  "--disable-domain-reliability",
  "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication",
];

export async function launchChromium(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`no Chromium at ${CHROMIUM}: apt-get install -y chromium (what .ci/run does)`);
  }
  return chromium.launch({ executablePath: CHROMIUM, args: OFFLINE_ARGS, headless: true });
}
