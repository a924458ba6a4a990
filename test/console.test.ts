/**
 * The console in a real browser (Debian's chromium via playwright-core) against a real gateway process,
 * a real broker and real receivers on 127.0.0.1: a wrong token, sign-in, registering a destination, an
 * event's id in the live tail, its timeline, replaying a dead letter. Screenshots of each page go to a
 * temporary directory, or to docs/ with UPDATE_SCREENSHOTS=1 (the README shows those).
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { test } from "node:test";
import type { Page } from "playwright-core";
import { ADMIN_TOKEN, gatewayEnv, startGateway } from "./child-gateway.ts";
import { launchChromium } from "./console-browser.ts";
import { startReceiver, waitFor } from "./receiver.ts";

const docs = process.env.UPDATE_SCREENSHOTS === "1";
const shots = docs ? resolve(import.meta.dirname, "../docs") : mkdtempSync(join(tmpdir(), "console-shots-"));

async function shot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: join(shots, `console-${name}.png`), fullPage: true });
}

test("the console: sign-in, destinations, live tail, event timeline, dead-letter replay", async (t) => {
  const ok = await startReceiver();
  let failing = true;
  const flaky = await startReceiver((_req, res) => {
    res.statusCode = failing ? 500 : 200;
  });
  t.after(async () => {
    await ok.close();
    await flaky.close();
    if (!docs) rmSync(shots, { recursive: true, force: true });
  });
  const gateway = await startGateway(t, gatewayEnv());
  const browser = await launchChromium();
  t.after(() => browser.close());
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  const pageErrors: string[] = [];
  page.on("pageerror", (err) => pageErrors.push(err.message));
  // Anything the page asks of another origin is a bug (no CDN): record and refuse it.
  const foreign: string[] = [];
  await page.route("**/*", (route) => {
    const url = route.request().url();
    if (url.startsWith(gateway.url)) return route.continue();
    foreign.push(url);
    return route.abort();
  });

  // A wrong token: a clear error, and still on the sign-in form.
  await page.goto(`${gateway.url}/console`);
  await page.fill("#token", "not-the-token");
  await page.click("button[type=submit]");
  const alert = page.getByRole("alert");
  await alert.waitFor();
  assert.match(await alert.innerText(), /Wrong admin token/);
  await shot(page, "signin");

  await page.fill("#token", ADMIN_TOKEN);
  await page.click("button[type=submit]");
  await page.getByRole("heading", { name: "Overview" }).waitFor();
  assert.equal(
    await page.evaluate("document.cookie"),
    "",
    "no cookie: the token lives in sessionStorage only",
  );

  // Register two destinations through the form: one that answers 200, one that fails (1 attempt → dead).
  await page.click("text=Destinations");
  await page.getByRole("heading", { name: "Destinations" }).waitFor();
  const create = async (name: string, url: string, maxAttempts: string) => {
    await page.click("text=New destination");
    const form = page.locator("[data-test=destination-form]");
    await form.locator("input[name=url]").fill(url);
    await form.locator("input[name=name]").fill(name);
    await form.locator("input[name=maxAttempts]").fill(maxAttempts);
    await form.locator("button[type=submit]").click();
    await page.locator("[data-test=destinations] a", { hasText: name }).waitFor();
  };
  await create("receiver-ok", ok.url, "3");
  await create("receiver-flaky", flaky.url, "1");
  // Edit, disable, enable and delete, on a third one.
  await create("throwaway", `${ok.url}/other`, "2");
  const row = () => page.locator("[data-test=destinations] tr", { hasText: "throwaway" }).first();
  await row().getByRole("button", { name: "Edit" }).click();
  const edit = page.locator("[data-test=destinations] [data-test=destination-form]");
  await edit.locator("input[name=name]").fill("throwaway-renamed");
  await edit.locator("button[type=submit]").click();
  await page.locator("[data-test=destinations] a", { hasText: "throwaway-renamed" }).waitFor();
  await row().getByRole("button", { name: "Disable" }).click();
  await row().locator(".bad", { hasText: "disabled" }).waitFor();
  await row().getByRole("button", { name: "Enable" }).click();
  await row().locator(".ok", { hasText: "enabled" }).waitFor();
  await row().getByRole("button", { name: "Delete" }).click();
  await row().getByRole("button", { name: "Confirm delete" }).click();
  await page.locator("[data-test=destinations] a", { hasText: "throwaway" }).waitFor({ state: "detached" });
  const list = await gateway.get<{ destinations: Array<{ id: string; name: string }> }>("/api/destinations");
  assert.deepEqual(list.destinations.map((d) => d.name).sort(), ["receiver-flaky", "receiver-ok"]);
  const flakyId = list.destinations.find((d) => d.name === "receiver-flaky")?.id;
  assert.ok(flakyId, "the form registered the destination through the API");

  // The live tail: connected, then an event sent through the ingest API shows up with its id.
  await page.click("text=Live tail");
  await page.locator("[data-test=live-state]", { hasText: "connected" }).waitFor();
  const { ids } = await gateway.ingestBatch([{ userID: "u-1", type: "order.paid", payload: { n: 1 } }]);
  const eventId = ids[0] as string;
  await page.locator("[data-test=live] td a", { hasText: eventId }).first().waitFor();
  // Its deliveries follow on the same page (every replica's, from the outcomes topic).
  await page.locator("[data-test=live] tr.delivery", { hasText: eventId }).first().waitFor();
  await shot(page, "live");

  // Pause: new items are not shown until resumed.
  await page.click("[data-test=pause]");
  const paused = await gateway.ingestBatch([{ userID: "u-2", type: "order.paid", payload: { n: 2 } }]);
  await waitFor(() => ok.delivered.some((d) => d.id === paused.ids[0]), "the paused event's delivery");
  assert.equal(await page.locator("[data-test=live]", { hasText: paused.ids[0] as string }).count(), 0);
  await page.click("[data-test=pause]");

  // The event's timeline, found by its id: one success at the good receiver, one dead attempt at the other.
  await page.click("nav >> text=Event");
  await page.fill("input[name=eventId]", eventId);
  await page.click("text=Find");
  const timeline = page.locator("[data-test=timeline]");
  await timeline.locator("li.succeeded").waitFor();
  await timeline.locator("li.dead").waitFor();
  // Its body, read back from the events topic.
  assert.match(await page.locator("[data-test=event-body]").innerText(), /"type": "order.paid"/);
  await shot(page, "event");

  // The failing destination's dead letters (both events), replayed from its page once the receiver recovers.
  await page.goto(`${gateway.url}/console#/destinations/${encodeURIComponent(flakyId)}`);
  await page.locator("[data-test=dead-letters] a", { hasText: eventId }).waitFor();
  failing = false;
  await page.click("[data-test=replay-all]");
  await page.getByRole("status").waitFor();
  assert.match(await page.getByRole("status").innerText(), /Replayed 2 dead letter/);
  await waitFor(() => flaky.delivered.some((d) => d.id === eventId), "the replayed event at the receiver");
  await page.locator("[data-test=attempts] td.ok").first().waitFor();
  await shot(page, "destination");

  // Destinations with health, and the overview with its charts.
  await page.click("text=Destinations");
  await page.locator("[data-test=destinations] a", { hasText: "receiver-ok" }).waitFor();
  await shot(page, "destinations");
  await page.click("text=Overview");
  await page.locator(".chart canvas").first().waitFor();
  await page.locator("table a", { hasText: "receiver-flaky" }).waitFor();
  await shot(page, "overview");

  assert.deepEqual(pageErrors, [], "no script error on any page");
  assert.deepEqual(foreign, [], "the console loads nothing from another origin");
});
