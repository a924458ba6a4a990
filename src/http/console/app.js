import htm from "htm";
import { h, render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { ApiError, api, token, whenUnauthorized } from "./api.js";
import { DestinationPage, DestinationsPage, EventPage, LivePage, OverviewPage } from "./pages.js";

const html = htm.bind(h);

function useHash() {
  const [hash, setHash] = useState(location.hash || "#/overview");
  useEffect(() => {
    const on = () => setHash(location.hash || "#/overview");
    addEventListener("hashchange", on);
    return () => removeEventListener("hashchange", on);
  }, []);
  return hash;
}

function SignIn({ onSignedIn, notice }) {
  const [value, setValue] = useState("");
  const [error, setError] = useState(notice ?? null);
  const [busy, setBusy] = useState(false);
  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await api("/api/destinations", { tokenOverride: value });
      token.set(value);
      onSignedIn();
    } catch (err) {
      setError(
        err instanceof ApiError && err.status === 401
          ? "Wrong admin token: the gateway refused it (401). Use the ADMIN_TOKEN it was started with."
          : `Could not sign in: ${err.message}`,
      );
    } finally {
      setBusy(false);
    }
  };
  return html`<main class="signin">
    <h1>Webhook gateway</h1>
    <form onSubmit=${submit}>
      <label for="token">Admin token</label>
      <input id="token" name="token" type="password" autocomplete="off" value=${value}
        onInput=${(e) => setValue(e.currentTarget.value)} required />
      <button type="submit" disabled=${busy}>Sign in</button>
      ${error && html`<p class="error" role="alert">${error}</p>`}
      <p class="hint">The token is kept in this tab only (sessionStorage) and sent as a Bearer header.</p>
    </form>
  </main>`;
}

const NAV = [
  ["#/overview", "Overview"],
  ["#/destinations", "Destinations"],
  ["#/events", "Event"],
  ["#/live", "Live tail"],
];

function App() {
  const [signedIn, setSignedIn] = useState(Boolean(token.get()));
  const [notice, setNotice] = useState(null);
  const hash = useHash();
  useEffect(
    () =>
      whenUnauthorized(() => {
        token.clear();
        setNotice("The gateway no longer accepts this token (401); sign in again.");
        setSignedIn(false);
      }),
    [],
  );
  if (!signedIn) return html`<${SignIn} notice=${notice} onSignedIn=${() => setSignedIn(true)} />`;
  const [, page, id] = hash.split("/").map(decodeURIComponent);
  let body;
  if (page === "destinations" && id) body = html`<${DestinationPage} id=${id} key=${id} />`;
  else if (page === "destinations") body = html`<${DestinationsPage} />`;
  else if (page === "events") body = html`<${EventPage} id=${id} key=${id ?? ""} />`;
  else if (page === "live") body = html`<${LivePage} />`;
  else body = html`<${OverviewPage} />`;
  return html`<div class="shell">
    <nav>
      <strong>Webhook gateway</strong>
      ${NAV.map(([href, label]) => html`<a href=${href} class=${hash.startsWith(href) ? "active" : ""}>${label}</a>`)}
      <button class="link" onClick=${() => {
        token.clear();
        setNotice(null);
        setSignedIn(false);
      }}>Sign out</button>
    </nav>
    <main>${body}</main>
  </div>`;
}

render(html`<${App} />`, document.getElementById("app"));
