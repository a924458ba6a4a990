import htm from "htm";
import { h } from "preact";
import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import uPlot from "uplot";
import { api, liveTail, qs } from "./api.js";

const html = htm.bind(h);
const fmtTime = (iso) => (iso ? new Date(iso).toLocaleTimeString() : "");
const fmtDate = (iso) => (iso ? new Date(iso).toLocaleString() : "");
const pct = (x) => (x === null || x === undefined ? "—" : `${(x * 100).toFixed(1)} %`);
const destLink = (id) => `#/destinations/${encodeURIComponent(id)}`;
const eventLink = (id) => `#/events/${encodeURIComponent(id)}`;

/** Loads `load()` now and every `everyMs` (0: once); gives [data, error, reload]. */
function usePoll(load, everyMs, deps) {
  const [data, setData] = useState(null);
  const [error, setError] = useState(null);
  const run = useCallback(async () => {
    try {
      setData(await load());
      setError(null);
    } catch (err) {
      setError(err.message);
    }
  }, deps);
  useEffect(() => {
    run();
    if (!everyMs) return undefined;
    const t = setInterval(run, everyMs);
    return () => clearInterval(t);
  }, [run]);
  return [data, error, run];
}

const Err = ({ error }) => (error ? html`<p class="error" role="alert">${error}</p>` : null);

/** A small uPlot line chart; `series` is [{label, values}], `xs` Unix seconds. */
function Chart({ title, xs, series, unit }) {
  const el = useRef(null);
  const plot = useRef(null);
  const shape = series.map((s) => s.label).join("|");
  useEffect(() => {
    const colors = ["#2563eb", "#16a34a", "#dc2626", "#9333ea", "#ea580c"];
    plot.current = new uPlot(
      {
        width: 320,
        height: 140,
        legend: { show: true },
        axes: [{}, { size: 64, values: (_u, v) => v.map((x) => `${x}${unit ?? ""}`) }],
        series: [
          {},
          ...series.map((s, i) => ({
            label: s.label,
            stroke: colors[i % colors.length],
            points: { show: true, size: 4 },
            width: 1.5,
          })),
        ],
      },
      [xs, ...series.map((s) => s.values)],
      el.current,
    );
    return () => plot.current?.destroy();
  }, [shape]);
  useEffect(() => {
    plot.current?.setData([xs, ...series.map((s) => s.values)]);
  }, [xs, series]);
  return html`<figure class="chart"><figcaption>${title}</figcaption><div ref=${el}></div></figure>`;
}

// ---------------------------------------------------------------------------------------------------
// Overview

function countByType(accepted) {
  const out = {};
  for (const a of accepted) out[a.type] = (out[a.type] ?? 0) + a.count;
  return out;
}

const RANGE_S = 600;
const BUCKET_S = 10;

export function OverviewPage() {
  const [stats, statsError] = usePoll(
    () =>
      api(`/api/stats${qs({ from: new Date(Date.now() - RANGE_S * 1000).toISOString(), bucket: BUCKET_S })}`),
    2000,
    [],
  );
  const [health, healthError] = usePoll(() => api("/api/destination-health"), 5000, []);
  let charts = null;
  if (stats) {
    const start = Date.parse(stats.from) / 1000;
    const end = Date.parse(stats.to) / 1000;
    const xs = [];
    for (let t = start; t < end; t += BUCKET_S) xs.push(t);
    const index = new Map(xs.map((t, i) => [t, i]));
    const zeros = () => xs.map(() => 0);
    const accepted = zeros();
    for (const a of stats.accepted) accepted[index.get(Date.parse(a.bucket) / 1000)] += a.count / BUCKET_S;
    const outcomes = { succeeded: zeros(), failed: zeros(), dead: zeros() };
    let dead = 0;
    for (const d of stats.deliveries) {
      outcomes[d.outcome][index.get(Date.parse(d.bucket) / 1000)] += d.count / BUCKET_S;
      if (d.outcome === "dead") dead += d.count;
    }
    const p50 = xs.map(() => null);
    const p99 = xs.map(() => null);
    for (const l of stats.latency) {
      const i = index.get(Date.parse(l.bucket) / 1000);
      p50[i] = l.p50Ms;
      p99[i] = l.p99Ms;
    }
    const last = (arr) => arr.filter((x) => x !== null).at(-1) ?? null;
    charts = html`
      <section class="tiles">
        <div class="tile"><span>accepted events/s (last 10 s)</span><b data-test="accepted-rate">${(accepted.at(-2) ?? 0).toFixed(1)}</b></div>
        <div class="tile"><span>deliveries/s ok · failed (last 10 s)</span><b>${(outcomes.succeeded.at(-2) ?? 0).toFixed(1)} · ${(outcomes.failed.at(-2) ?? 0).toFixed(1)}</b></div>
        <div class="tile"><span>accept→receive p50 / p99</span><b>${last(p50) ?? "—"} / ${last(p99) ?? "—"} ms</b></div>
        <div class="tile"><span>dead letters (10 min)</span><b>${dead}</b></div>
      </section>
      <section class="charts">
        <${Chart} title="Accepted events/s" xs=${xs} series=${[{ label: "accepted", values: accepted }]} />
        <${Chart} title="Deliveries/s by outcome" xs=${xs} series=${[
          { label: "succeeded", values: outcomes.succeeded },
          { label: "failed", values: outcomes.failed },
          { label: "dead", values: outcomes.dead },
        ]} />
        <${Chart} title="Accept→receive latency" unit="ms" xs=${xs} series=${[
          { label: "p50", values: p50 },
          { label: "p99", values: p99 },
        ]} />
      </section>`;
  }
  return html`<h1>Overview</h1>
    <p class="hint">Last 10 minutes in ${BUCKET_S} s buckets, refreshed every 2 s (GET /api/stats).</p>
    <${Err} error=${statsError ?? healthError} />
    ${charts}
    ${
      stats &&
      html`<section class="charts">
        <table class="small"><thead><tr><th>Type (10 min)</th><th>Accepted</th></tr></thead>
          <tbody>${Object.entries(countByType(stats.accepted))
            .sort((a, b) => b[1] - a[1])
            .map(([type, n]) => html`<tr><td>${type}</td><td>${n}</td></tr>`)}</tbody></table>
        <table class="small"><thead><tr><th>Top users (10 min)</th><th>Accepted</th></tr></thead>
          <tbody>${stats.topUsers.map((u) => html`<tr><td>${u.userID}</td><td>${u.count}</td></tr>`)}</tbody></table>
      </section>`
    }
    <h2>Lag per destination</h2>
    <table>
      <thead><tr><th>Destination</th><th>Lag (events)</th><th>Success (1 h)</th></tr></thead>
      <tbody>${(health?.destinations ?? []).map(
        (d) =>
          html`<tr><td><a href=${destLink(d.id)}>${d.name ?? d.id}</a></td><td>${d.lag ?? "—"}</td><td>${pct(d.lastHour.successRate)}</td></tr>`,
      )}</tbody>
    </table>`;
}

// ---------------------------------------------------------------------------------------------------
// Destinations

function DestinationForm({ initial, onSaved, onCancel }) {
  const [url, setUrl] = useState(initial?.url ?? "");
  const [name, setName] = useState(initial?.name ?? "");
  const [types, setTypes] = useState((initial?.eventTypes ?? []).join(", "));
  const [maxAttempts, setMaxAttempts] = useState(String(initial?.maxAttempts ?? 8));
  const [error, setError] = useState(null);
  const submit = async (e) => {
    e.preventDefault();
    setError(null);
    const body = {
      url,
      name: name || (initial ? null : undefined),
      eventTypes: types
        .split(",")
        .map((t) => t.trim())
        .filter(Boolean),
      maxAttempts: Number(maxAttempts),
    };
    try {
      const saved = initial
        ? await api(`/api/destinations/${encodeURIComponent(initial.id)}`, { method: "PATCH", body })
        : await api("/api/destinations", { method: "POST", body });
      onSaved(saved);
    } catch (err) {
      setError(err.message);
    }
  };
  return html`<form class="card" onSubmit=${submit} data-test="destination-form">
    <label>URL <input name="url" value=${url} onInput=${(e) => setUrl(e.currentTarget.value)} required /></label>
    <label>Name <input name="name" value=${name} onInput=${(e) => setName(e.currentTarget.value)} /></label>
    <label>Event types <input name="eventTypes" placeholder="all" value=${types} onInput=${(e) => setTypes(e.currentTarget.value)} /></label>
    <label>Max attempts <input name="maxAttempts" type="number" min="1" max="50" value=${maxAttempts} onInput=${(e) => setMaxAttempts(e.currentTarget.value)} /></label>
    <div class="row"><button type="submit">${initial ? "Save" : "Create destination"}</button>
      ${onCancel && html`<button type="button" class="link" onClick=${onCancel}>Cancel</button>`}</div>
    <${Err} error=${error} />
  </form>`;
}

function HealthCells({ health }) {
  return html`<td>${pct(health?.lastHour.successRate)}</td>
    <td>${health?.lag ?? "—"}</td>
    <td class="clip" title=${health?.lastError?.error ?? ""}>${
      health?.lastError
        ? `${health.lastError.statusCode ?? ""} ${health.lastError.error ?? ""} (${fmtTime(health.lastError.at)})`
        : "—"
    }</td>`;
}

export function DestinationsPage() {
  const [list, listError, reload] = usePoll(() => api("/api/destinations"), 0, []);
  const [health, , reloadHealth] = usePoll(() => api("/api/destination-health"), 5000, []);
  const [creating, setCreating] = useState(false);
  const [editing, setEditing] = useState(null);
  const [confirming, setConfirming] = useState(null);
  const [error, setError] = useState(null);
  const byId = new Map((health?.destinations ?? []).map((d) => [d.id, d]));
  const refresh = () => {
    reload();
    reloadHealth();
  };
  const act = async (fn) => {
    setError(null);
    try {
      await fn();
      refresh();
    } catch (err) {
      setError(err.message);
    }
  };
  const rows = list?.destinations ?? list?.items ?? (Array.isArray(list) ? list : []);
  return html`<h1>Destinations</h1>
    <${Err} error=${listError ?? error} />
    ${
      creating
        ? html`<${DestinationForm} onSaved=${() => {
            setCreating(false);
            refresh();
          }} onCancel=${() => setCreating(false)} />`
        : html`<button onClick=${() => setCreating(true)}>New destination</button>`
    }
    <table data-test="destinations">
      <thead><tr><th>Name / id</th><th>URL</th><th>Status</th><th>Success (1 h)</th><th>Lag</th><th>Last error</th><th></th></tr></thead>
      <tbody>${rows.map(
        (d) => html`<tr data-id=${d.id}>
          <td><a href=${destLink(d.id)}>${d.name ?? d.id}</a><br /><small>${d.id}</small></td>
          <td class="clip">${d.url}</td>
          <td>${d.disabled ? html`<span class="bad">disabled</span> ${d.disabledReason ?? ""}` : html`<span class="ok">enabled</span>`}</td>
          <${HealthCells} health=${byId.get(d.id)} />
          <td class="actions">
            <button class="link" onClick=${() => setEditing(editing === d.id ? null : d.id)}>Edit</button>
            <button class="link" onClick=${() =>
              act(() =>
                api(`/api/destinations/${encodeURIComponent(d.id)}`, {
                  method: "PATCH",
                  body: { disabled: !d.disabled },
                }),
              )}>
              ${d.disabled ? "Enable" : "Disable"}</button>
            ${
              confirming === d.id
                ? html`<button class="danger" onClick=${() =>
                    act(async () => {
                      setConfirming(null);
                      await api(`/api/destinations/${encodeURIComponent(d.id)}`, { method: "DELETE" });
                    })}>Confirm delete</button>`
                : html`<button class="link" onClick=${() => setConfirming(d.id)}>Delete</button>`
            }
          </td>
        </tr>
        ${
          editing === d.id &&
          html`<tr><td colspan="7"><${DestinationForm} initial=${d} onSaved=${() => {
            setEditing(null);
            refresh();
          }} onCancel=${() => setEditing(null)} /></td></tr>`
        }`,
      )}</tbody>
    </table>`;
}

// ---------------------------------------------------------------------------------------------------
// One destination: attempts (filters, paging) and dead letters (replay)

export function DestinationPage({ id }) {
  const base = `/api/destinations/${encodeURIComponent(id)}`;
  const [dest, destError] = usePoll(() => api(base), 5000, [id]);
  const [health] = usePoll(() => api("/api/destination-health"), 5000, []);
  const [outcome, setOutcome] = useState("");
  const [since, setSince] = useState("");
  const [cursors, setCursors] = useState([undefined]);
  const cursor = cursors.at(-1);
  const [attempts, attemptsError, reloadAttempts] = usePoll(
    () =>
      api(
        `${base}/attempts${qs({ outcome, since: since ? new Date(since).toISOString() : "", cursor, limit: 20 })}`,
      ),
    // The first page follows new attempts; later pages stay put while they are read.
    cursor === undefined ? 3000 : 0,
    [id, outcome, since, cursor],
  );
  const [deadCursors, setDeadCursors] = useState([undefined]);
  const [dead, deadError, reloadDead] = usePoll(
    () => api(`${base}/dead-letters${qs({ cursor: deadCursors.at(-1), limit: 20 })}`),
    deadCursors.length === 1 ? 5000 : 0,
    [id, deadCursors.at(-1)],
  );
  const [selected, setSelected] = useState(new Set());
  const [message, setMessage] = useState(null);
  const replay = async (eventIds) => {
    setMessage(null);
    try {
      const r = await api(`${base}/dead-letters/replay`, {
        method: "POST",
        body: eventIds ? { eventIds } : {},
      });
      setMessage(`Replayed ${r.replayed} dead letter(s).`);
      setSelected(new Set());
      setDeadCursors([undefined]);
      reloadDead();
      reloadAttempts();
    } catch (err) {
      setMessage(err.message);
    }
  };
  const h1 = health?.destinations.find((d) => d.id === id);
  const toggle = (eventId) => {
    const next = new Set(selected);
    if (next.has(eventId)) next.delete(eventId);
    else next.add(eventId);
    setSelected(next);
  };
  return html`<h1>Destination ${dest?.name ?? id}</h1>
    <${Err} error=${destError} />
    ${
      dest &&
      html`<dl class="facts">
        <dt>id</dt><dd>${dest.id}</dd><dt>URL</dt><dd>${dest.url}</dd>
        <dt>status</dt><dd>${dest.disabled ? `disabled: ${dest.disabledReason ?? ""}` : "enabled"}</dd>
        <dt>lag</dt><dd data-test="lag">${dest.lag ?? "—"} events</dd>
        <dt>success (1 h)</dt><dd>${pct(h1?.lastHour.successRate)}</dd>
        <dt>last error</dt><dd>${h1?.lastError ? `${h1.lastError.statusCode ?? ""} ${h1.lastError.error ?? ""} at ${fmtDate(h1.lastError.at)}` : "—"}</dd>
      </dl>`
    }
    <h2>Dead letters</h2>
    <div class="row">
      <button onClick=${() => replay()} data-test="replay-all">Replay all</button>
      <button onClick=${() => replay([...selected])} disabled=${selected.size === 0}>Replay selected (${selected.size})</button>
      ${message && html`<span class="notice" role="status">${message}</span>`}
    </div>
    <${Err} error=${deadError} />
    <table data-test="dead-letters">
      <thead><tr><th></th><th>Event</th><th>User</th><th>Attempts</th><th>Last error</th><th>Dead at</th></tr></thead>
      <tbody>${(dead?.deadLetters ?? []).map(
        (d) => html`<tr>
          <td><input type="checkbox" checked=${selected.has(d.eventId)} onChange=${() => toggle(d.eventId)} aria-label=${`select ${d.eventId}`} /></td>
          <td><a href=${eventLink(d.eventId)}>${d.eventId}</a></td><td>${d.userID}</td><td>${d.attempts}</td>
          <td class="clip">${d.lastError ?? ""}</td><td>${fmtDate(d.deadAt)}</td></tr>`,
      )}</tbody>
    </table>
    <div class="row">
      ${deadCursors.length > 1 && html`<button class="link" onClick=${() => setDeadCursors(deadCursors.slice(0, -1))}>← Previous</button>`}
      ${dead?.nextCursor && html`<button class="link" onClick=${() => setDeadCursors([...deadCursors, dead.nextCursor])}>Next →</button>`}
    </div>
    <h2>Attempts</h2>
    <div class="row filters">
      <label>Outcome <select value=${outcome} onChange=${(e) => {
        setOutcome(e.currentTarget.value);
        setCursors([undefined]);
      }}>
        <option value="">any</option><option>succeeded</option><option>failed</option><option>dead</option>
      </select></label>
      <label>Since <input type="datetime-local" value=${since} onChange=${(e) => {
        setSince(e.currentTarget.value);
        setCursors([undefined]);
      }} /></label>
      <button class="link" onClick=${() => reloadAttempts()}>Refresh</button>
    </div>
    <${Err} error=${attemptsError} />
    <table data-test="attempts">
      <thead><tr><th>Started</th><th>Event</th><th>#</th><th>Outcome</th><th>Status</th><th>ms</th><th>Error</th></tr></thead>
      <tbody>${(attempts?.attempts ?? []).map(
        (a) => html`<tr>
          <td>${fmtDate(a.startedAt)}</td><td><a href=${eventLink(a.eventId)}>${a.eventId}</a></td><td>${a.attemptNumber}</td>
          <td class=${a.outcome === "succeeded" ? "ok" : "bad"}>${a.outcome}</td><td>${a.statusCode ?? ""}</td><td>${a.durationMs}</td>
          <td class="clip">${a.error ?? ""}</td></tr>`,
      )}</tbody>
    </table>
    <div class="row">
      ${cursors.length > 1 && html`<button class="link" onClick=${() => setCursors(cursors.slice(0, -1))}>← Previous</button>`}
      ${attempts?.nextCursor && html`<button class="link" onClick=${() => setCursors([...cursors, attempts.nextCursor])}>Next →</button>`}
    </div>`;
}

// ---------------------------------------------------------------------------------------------------
// One event: every attempt at every destination, as a timeline

export function EventPage({ id }) {
  const [value, setValue] = useState(id ?? "");
  const [data, error] = usePoll(
    () => (id ? api(`/api/events/${encodeURIComponent(id)}/attempts`) : Promise.resolve(null)),
    id ? 3000 : 0,
    [id],
  );
  const [event, eventError] = usePoll(
    () =>
      id
        ? api(`/api/events/${encodeURIComponent(id)}`).catch((err) => {
            if (err.status === 404) return null;
            throw err;
          })
        : Promise.resolve(null),
    0,
    [id],
  );
  const attempts = [...(data?.attempts ?? [])].sort(
    (a, b) => Date.parse(a.startedAt) - Date.parse(b.startedAt),
  );
  const body = event;
  const t0 = attempts.length ? Date.parse(attempts[0].startedAt) : 0;
  return html`<h1>Event</h1>
    <form class="row" onSubmit=${(e) => {
      e.preventDefault();
      location.hash = eventLink(value.trim());
    }}>
      <input name="eventId" placeholder="event id" size="40" value=${value} onInput=${(e) => setValue(e.currentTarget.value)} />
      <button type="submit">Find</button>
    </form>
    <${Err} error=${error ?? eventError} />
    ${
      id &&
      data &&
      html`<h2>${id}</h2>
      ${
        body
          ? html`<h3>Body</h3><p class="hint">user ${body.userID} · type ${body.type} · accepted ${fmtDate(body.timestamp)}</p>
              <pre data-test="event-body">${JSON.stringify(body, null, 2)}</pre>`
          : html`<p class="hint">The body is not in the events topic (not accepted, or past its retention).</p>`
      }
      <h3>Timeline</h3>
      ${attempts.length === 0 && html`<p>No attempt recorded for this event yet.</p>`}
      <ol class="timeline" data-test="timeline">${attempts.map(
        (a) => html`<li class=${a.outcome}>
          <time>${fmtDate(a.startedAt)} (+${Date.parse(a.startedAt) - t0} ms)</time>
          <a href=${destLink(a.destinationId)}>${a.destinationId}</a> · attempt ${a.attemptNumber} ·
          <b>${a.outcome}</b> ${a.statusCode ?? ""} in ${a.durationMs} ms ${a.error ? `· ${a.error}` : ""}
          ${a.responseSnippet ? html`<pre class="snippet">${a.responseSnippet}</pre>` : null}
        </li>`,
      )}</ol>`
    }`;
}

// ---------------------------------------------------------------------------------------------------
// Live tail

const KEEP_ROWS = 500;

export function LivePage() {
  const [filters, setFilters] = useState({ userID: "", type: "", destination: "" });
  const [draft, setDraft] = useState(filters);
  const [rows, setRows] = useState([]);
  const [state, setState] = useState("connecting");
  const [paused, setPaused] = useState(false);
  const [missed, setMissed] = useState(0);
  const pausedRef = useRef(false);
  pausedRef.current = paused;
  useEffect(() => {
    const ctl = new AbortController();
    setState("connecting");
    liveTail(filters, {
      signal: ctl.signal,
      onState: setState,
      onItems: ({ items, dropped }) => {
        setMissed(dropped);
        if (pausedRef.current) return;
        setRows((old) => [...items.reverse(), ...old].slice(0, KEEP_ROWS));
      },
    });
    return () => ctl.abort();
  }, [filters]);
  const field = (name, label) =>
    html`<label>${label} <input name=${name} value=${draft[name]} onInput=${(e) => setDraft({ ...draft, [name]: e.currentTarget.value })} /></label>`;
  return html`<h1>Live tail</h1>
    <form class="row filters" onSubmit=${(e) => {
      e.preventDefault();
      setRows([]);
      setFilters(draft);
    }}>
      ${field("userID", "User")} ${field("type", "Type")} ${field("destination", "Destination")}
      <button type="submit">Apply</button>
      <button type="button" onClick=${() => setPaused(!paused)} data-test="pause">${paused ? "Resume" : "Pause"}</button>
      <span class="hint" data-test="live-state">${state}${paused ? " · paused" : ""}${missed ? ` · ${missed} dropped (slow client)` : ""}</span>
    </form>
    <p class="hint">Accepted events are this replica's; deliveries are every replica's (from the outcomes topic).</p>
    <table data-test="live">
      <thead><tr><th>Time</th><th>What</th><th>Event</th><th>User</th><th>Type</th><th>Destination</th><th>Result</th></tr></thead>
      <tbody>${rows.map(
        (r) => html`<tr class=${r.kind}>
          <td>${new Date(r.at).toLocaleTimeString()}</td>
          <td>${r.kind === "accepted" ? "accepted" : `attempt ${r.attemptNumber}`}</td>
          <td><a href=${eventLink(r.eventId)}>${r.eventId}</a></td><td>${r.userID}</td><td>${r.type ?? ""}</td>
          <td>${r.destinationId ? html`<a href=${destLink(r.destinationId)}>${r.destinationId}</a>` : ""}</td>
          <td class=${r.outcome === "succeeded" ? "ok" : r.outcome ? "bad" : ""}>${r.outcome ? `${r.outcome} ${r.statusCode ?? ""} ${r.durationMs} ms` : ""}</td>
        </tr>`,
      )}</tbody>
    </table>`;
}
