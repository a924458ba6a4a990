// The console's only way to the gateway: the admin API on the same origin, the token as a Bearer header.
// The token lives in sessionStorage (gone with the tab); no cookie is ever set, so there is no CSRF surface.
const KEY = "gateway-admin-token";

export const token = {
  get: () => sessionStorage.getItem(KEY),
  set: (t) => sessionStorage.setItem(KEY, t),
  clear: () => sessionStorage.removeItem(KEY),
};

export class ApiError extends Error {
  constructor(status, problem) {
    const fields = (problem?.errors ?? []).map((e) => `${e.field}: ${e.message}`).join("; ");
    super(
      `${problem?.title ?? `HTTP ${status}`}${problem?.detail ? ` — ${problem.detail}` : ""}${fields ? ` (${fields})` : ""}`,
    );
    this.status = status;
    this.problem = problem;
  }
}

let onUnauthorized = () => {};
export function whenUnauthorized(fn) {
  onUnauthorized = fn;
}

export async function api(path, { method = "GET", body, tokenOverride } = {}) {
  const headers = { authorization: `Bearer ${tokenOverride ?? token.get() ?? ""}` };
  if (body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  const data = text ? JSON.parse(text) : null;
  if (!res.ok) {
    const err = new ApiError(res.status, data);
    if (res.status === 401 && tokenOverride === undefined) onUnauthorized(err);
    throw err;
  }
  return data;
}

export function qs(params) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params))
    if (v !== undefined && v !== null && v !== "") p.set(k, String(v));
  const s = p.toString();
  return s ? `?${s}` : "";
}

/**
 * The live tail: GET /api/live read as a stream with fetch (EventSource cannot send the Authorization
 * header, and a token in the URL would end up in logs). Calls onItems for each `items` event until the
 * signal aborts; reconnects after a second if the stream ends.
 */
export async function liveTail(params, { onItems, onState, signal }) {
  while (!signal.aborted) {
    try {
      const res = await fetch(`/api/live${qs(params)}`, {
        headers: { authorization: `Bearer ${token.get() ?? ""}`, accept: "text/event-stream" },
        signal,
      });
      if (!res.ok) {
        const text = await res.text();
        throw new ApiError(res.status, text ? JSON.parse(text) : null);
      }
      onState("connected");
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let cut = buffer.indexOf("\n\n");
        while (cut >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          let event = "message";
          let data = "";
          for (const line of block.split("\n")) {
            if (line.startsWith("event:")) event = line.slice(6).trim();
            else if (line.startsWith("data:")) data += line.slice(5).trimStart();
          }
          if (event === "items" && data) onItems(JSON.parse(data));
          cut = buffer.indexOf("\n\n");
        }
      }
    } catch (err) {
      if (signal.aborted) return;
      onState(`disconnected: ${err.message}`);
      if (err.status === 401) return;
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}
