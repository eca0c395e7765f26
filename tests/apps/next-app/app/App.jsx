"use client";
import { useEffect, useMemo, useState } from "react";
import { useSession, useTokenClient } from "tokenwarden/react";
import { createAxios, createKy } from "./api.js";

export function App() {
  const client = useTokenClient();
  const { state, expiresAt, claims } = useSession();
  const [events, setEvents] = useState([]);
  const [results, setResults] = useState({});
  const [loginError, setLoginError] = useState("");
  const api = useMemo(() => client && { axios: createAxios(client), ky: createKy(client) }, [client]);

  useEffect(() => {
    if (!client) return undefined;
    return client.subscribe((e) => {
      setEvents((list) => [...list, e.type === "refreshed" ? `refreshed:${e.source}` : e.type]);
    });
  }, [client]);

  async function login(event) {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    setLoginError("");
    const res = await fetch("/auth/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ username: form.get("username"), password: form.get("password") }),
    });
    if (!res.ok) return setLoginError(`login failed: ${res.status}`);
    client.setSession(await res.json()); // the refresh cookie was set by the same response
  }

  // Each result is numbered so the tests can tell a new answer from an old one.
  const show = (name, promise) => {
    const put = (text) => setResults((r) => ({ ...r, [name]: { n: (r[name]?.n ?? 0) + 1, text } }));
    promise.then(put, (err) => put(`error ${err?.response?.status ?? err?.code ?? err}`));
  };

  const callFetch = () =>
    show("fetch", client.fetch("/api/me").then(async (r) => `${r.status} ${r.ok ? (await r.json()).sub : ""}`));
  const callAxios = () => show("axios", api.axios.get("/api/me").then((r) => `${r.status} ${r.data.sub}`));
  const callKy = () => show("ky", api.ky.get("/api/me").then(async (r) => `${r.status} ${(await r.json()).sub}`));
  // An origin not in allowedOrigins (the tests answer it and check it got no token).
  const OTHER = "https://api.other.example/ping";
  const callOther = (kind) =>
    show(`${kind}-other`, {
      fetch: () => client.fetch(OTHER).then((r) => `${r.status}`),
      axios: () => api.axios.get(OTHER).then((r) => `${r.status}`),
      ky: () => api.ky.get(OTHER).then((r) => `${r.status}`),
    }[kind]());

  return (
    <main>
      <h1>tokenwarden · Next.js (client component)</h1>
      <p>
        state: <b data-testid="state">{state}</b> · user: <span data-testid="sub">{claims?.sub ?? "-"}</span> ·
        expires: <span data-testid="expires">{expiresAt ? new Date(expiresAt).toISOString() : "-"}</span>
      </p>
      {state === "signedOut" && (
        <form onSubmit={login} data-testid="login-form">
          <input name="username" placeholder="user" defaultValue="" />
          <input name="password" type="password" placeholder="password" />
          <button type="submit">log in</button>
          <span data-testid="login-error">{loginError}</span>
        </form>
      )}
      <p>
        <button data-testid="call-fetch" disabled={!client} onClick={callFetch}>client.fetch</button>
        <button data-testid="call-axios" disabled={!api} onClick={callAxios}>axios</button>
        <button data-testid="call-ky" disabled={!api} onClick={callKy}>ky</button>
        {["fetch", "axios", "ky"].map((k) => (
          <button key={k} data-testid={`call-${k}-other`} disabled={!api} onClick={() => callOther(k)}>{k} (other origin)</button>
        ))}
        <button data-testid="logout" disabled={!client} onClick={() => client.logout().catch(() => {})}>log out</button>
      </p>
      <ul>
        {["fetch", "axios", "ky", "fetch-other", "axios-other", "ky-other"].map((k) => (
          <li key={k}>
            {k}: <span data-testid={`result-${k}`} data-n={results[k]?.n ?? 0}>{results[k]?.text ?? ""}</span>
          </li>
        ))}
      </ul>
      <p>
        events: <span data-testid="events">{events.join(" ")}</span>
      </p>
    </main>
  );
}
