import { createRoute, z } from "@hono/zod-openapi";
import { streamSSE } from "hono/streaming";
import { Counter, type Registry } from "prom-client";
import type { LiveBus, LiveItem } from "../live/bus.ts";
import { problemResponses } from "./admin-shared.ts";
import { adminSecurity } from "./auth.ts";
import { createRouter } from "./router.ts";

/** Items one client may have waiting; beyond this its items are dropped (and counted), never queued. */
export const LIVE_QUEUE_MAX = 5_000;
const KEEPALIVE_MS = 15_000;

const LiveQuery = z.strictObject({
  userID: z.string().min(1).max(256).optional().openapi({ description: "Only this user's events." }),
  type: z.string().min(1).max(128).optional().openapi({
    description: "Only events of this type (deliveries too, when this replica saw the event accepted).",
  }),
  destination: z.string().min(1).max(200).optional().openapi({
    description: "Only deliveries to this destination (accepted events are left out).",
  }),
});

/** One server-sent event of the stream (OpenAPI 3.1: the media type's schema describes each event). */
const LiveEvent = z
  .object({
    event: z.enum(["ready", "items"]).openapi({
      description: "`ready` once, when the subscription is in place; then `items` as they come.",
    }),
    data: z.string().openapi({
      description: "JSON: `{}` for `ready`; `{items: LiveItem[], dropped: number}` for `items`.",
    }),
  })
  .openapi("LiveEvent");

const liveRoute = createRoute({
  method: "get",
  path: "/api/live",
  tags: ["console"],
  summary: "Live tail: accepted events and finished attempts, as server-sent events",
  description:
    "A `text/event-stream` of `items` events, each `{items: LiveItem[], dropped}` (dropped: items this " +
    "client missed because it read too slowly). Accepted events are those of the replica answering; " +
    "finished attempts are those of every replica (read from the outcomes topic by its state view). " +
    "Send the admin token as `Authorization: Bearer` (fetch streaming; no token in the URL).",
  security: adminSecurity,
  request: { query: LiveQuery },
  responses: {
    200: { description: "The stream", content: { "text/event-stream": { schema: LiveEvent } } },
    ...problemResponses(400, 401),
  },
});

function droppedCounter(registry: Registry): Counter {
  const name = "console_live_dropped_total";
  const existing = registry.getSingleMetric(name);
  if (existing) return existing as Counter;
  return new Counter({
    name,
    help: "Live-tail items not sent to a console because it read too slowly",
    registers: [registry],
  });
}

export function liveRoutes(deps: { live: LiveBus; registry: Registry }) {
  const router = createRouter();
  const dropped = droppedCounter(deps.registry);

  router.openapi(liveRoute, (c) => {
    const q = c.req.valid("query");
    const match = (it: LiveItem): boolean => {
      if (q.userID !== undefined && it.userID !== q.userID) return false;
      if (q.type !== undefined && it.type !== q.type) return false;
      if (q.destination !== undefined && (it.kind !== "delivery" || it.destinationId !== q.destination))
        return false;
      return true;
    };
    return streamSSE(c, async (stream) => {
      const queue: LiveItem[] = [];
      let missed = 0;
      let closed = false;
      let wake: (() => void) | undefined;
      const unsubscribe = deps.live.subscribe((items) => {
        for (const it of items) {
          if (!match(it)) continue;
          if (queue.length >= LIVE_QUEUE_MAX) {
            missed++;
            dropped.inc();
          } else queue.push(it);
        }
        wake?.();
      });
      const end = () => {
        closed = true;
        wake?.();
      };
      stream.onAbort(end);
      const offClose = deps.live.onClose(end);
      try {
        await stream.writeSSE({ event: "ready", data: "{}" });
        while (!closed) {
          if (queue.length === 0) {
            await new Promise<void>((resolve) => {
              const timer = setTimeout(resolve, KEEPALIVE_MS);
              wake = () => {
                clearTimeout(timer);
                resolve();
              };
            });
            wake = undefined;
          }
          if (closed) break;
          if (queue.length === 0) {
            await stream.write(": keepalive\n\n");
            continue;
          }
          const items = queue.splice(0);
          await stream.writeSSE({ event: "items", data: JSON.stringify({ items, dropped: missed }) });
        }
      } finally {
        unsubscribe();
        offClose();
      }
    }) as never;
  });
  return router;
}
