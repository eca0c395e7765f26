// tokenwarden demo page — plain ES module, no build step.
// House rule for this file: the access token itself never reaches the DOM, the console
// or any variable that outlives a call. We only ever show state, expiry and decoded claims.

// No polling and no copy of the client's schedule: the page re-renders on the client's
// events (stateChanged included) and shows client.expiresAt and client.refreshAt.
const MAX_TIMELINE = 100;

const $ = (id) => document.getElementById(id);
const el = {
  wasmStatus: $("wasm-status"), message: $("message"),
  loginForm: $("login-form"), loginFieldset: $("login-fieldset"), loginBtn: $("login"),
  loginError: $("login-error"), username: $("username"), password: $("password"),
  state: $("state"), expiresIn: $("expires-in"), expiresAt: $("expires-at"),
  refreshIn: $("refresh-in"), refreshNote: $("refresh-note"),
  claims: $("claims"), scopes: $("scopes"),
  scopeForm: $("scope-form"), scopeInput: $("scope-input"), scopeResult: $("scope-result"),
  callApi: $("call-api"), refresh: $("refresh"), openTab: $("open-tab"), logout: $("logout"),
  apiResult: $("api-result"), timeline: $("timeline"), clearTimeline: $("clear-timeline"),
};

let client = null;
let retrying = false; // the last refresh attempt failed and another one is planned

wireUi();
main();

async function main() {
  try {
    const { createTokenClient } = await import("/pkg/index.js");
    // Upstream mode (make demo-oidc): the server says where sign-in starts.
    const upstream = await fetch("/auth/config").then((r) => (r.ok ? r.json() : null)).catch(() => null);
    client = await createTokenClient({
      refreshUrl: "/auth/refresh", logoutUrl: "/auth/logout",
      ...(upstream ? { loginUrl: upstream.loginUrl } : {}),
    });
    if (upstream) showProviderLogin();
  } catch (err) {
    el.wasmStatus.textContent = `failed: ${errCode(err)}`;
    el.wasmStatus.dataset.kind = "error";
    showError(err, "createTokenClient");
    return;
  }
  el.wasmStatus.textContent = "wasm loaded";
  el.wasmStatus.dataset.kind = "ok";
  client.subscribe(onEvent);
  render();

  setMessage("Restoring session with client.start()…");
  try {
    const restored = await client.start();
    setMessage(restored ? "Session restored — no login needed." : "No session yet — sign in.");
  } catch (err) {
    showError(err, "start()");
  }
  render();
}

// ---- events -------------------------------------------------------------------------

function onEvent(ev) {
  const now = Date.now();
  if (ev.type === "refreshFailed") retrying = typeof ev.retryInMs === "number";
  if (ev.type === "signedIn" || ev.type === "refreshed" || ev.type === "signedOut") retrying = false;
  addTimelineEntry(ev, now);
  render();
}

function addTimelineEntry(ev, now) {
  const li = document.createElement("li");
  li.dataset.type = ev.type;
  const time = document.createElement("time");
  time.dateTime = new Date(now).toISOString();
  time.textContent = clockMs(now);
  const type = document.createElement("span");
  type.className = "type";
  type.textContent = ev.type;
  const details = document.createElement("span");
  details.className = "details";
  details.textContent = describe(ev);
  li.append(time, type, details);
  el.timeline.prepend(li);
  while (el.timeline.children.length > MAX_TIMELINE) el.timeline.lastElementChild.remove();
}

// Whitelist of fields we print, so nothing token-shaped can slip into the page.
function describe(ev) {
  const parts = [];
  if (ev.source) parts.push(`source: ${ev.source}`);
  if (ev.reason) parts.push(`reason: ${ev.reason}`);
  if (ev.error) {
    let e = `error: ${errCode(ev.error)}`;
    if (ev.error.status) e += ` (HTTP ${ev.error.status})`;
    if (ev.error.error) e += ` ${ev.error.error}`;
    parts.push(e);
  }
  if (typeof ev.retryInMs === "number") parts.push(`retry in ${fmtMs(ev.retryInMs)}`);
  if (typeof ev.expiresAt === "number") parts.push(`expires ${clock(ev.expiresAt)}`);
  if (ev.state) parts.push(`state: ${ev.state}`);
  return parts.join(" · ");
}

// ---- rendering ----------------------------------------------------------------------

function render() {
  const state = client ? client.state : "loading";
  el.state.textContent = state;
  el.state.dataset.state = state;
  const signedIn = client !== null && state !== "signedOut";
  el.loginFieldset.disabled = !client || signedIn;
  if (!$("provider-login").hidden) $("provider-sign-in").disabled = !client || signedIn;
  el.callApi.disabled = !signedIn;
  el.refresh.disabled = !signedIn;
  el.logout.disabled = !signedIn;
  renderClaims();
  renderSchedule();
}

// Times, not countdowns: they change only when the client says so (an event).
function renderSchedule() {
  const exp = client?.expiresAt;
  if (typeof exp !== "number") {
    el.expiresIn.textContent = el.refreshIn.textContent = "—";
    el.expiresAt.textContent = el.refreshNote.textContent = "";
    return;
  }
  el.expiresIn.textContent = clock(exp);
  el.expiresAt.textContent = "page clock";
  const at = client.refreshAt;
  if (client.state === "refreshing" && typeof at !== "number") {
    el.refreshIn.textContent = "now";
    el.refreshNote.textContent = "refresh in flight";
  } else if (typeof at === "number") {
    el.refreshIn.textContent = clock(at);
    el.refreshNote.textContent = retrying ? "retry after a failed refresh" : "client.refreshAt";
  } else {
    el.refreshIn.textContent = "—";
    el.refreshNote.textContent = "no silent refresh planned";
  }
}

function renderClaims() {
  let claims;
  try { claims = client && client.state !== "signedOut" ? client.claims() : undefined; } catch { /* disposed */ }
  if (!claims) {
    const p = note(client && client.state !== "signedOut" ? "Opaque token — no claims to decode." : "No token.");
    el.claims.replaceChildren(p);
    el.scopes.replaceChildren(chip("—"));
    return;
  }
  const dl = document.createElement("dl");
  for (const [key, value] of Object.entries(claims)) {
    const dt = document.createElement("dt");
    dt.textContent = key;
    const dd = document.createElement("dd");
    dd.textContent = JSON.stringify(value);
    if (["iat", "exp", "nbf", "auth_time"].includes(key) && typeof value === "number") {
      const when = document.createElement("span");
      when.className = "muted";
      when.textContent = `  ${new Date(value * 1000).toLocaleString()}`;
      dd.append(when);
    }
    dl.append(dt, dd);
  }
  el.claims.replaceChildren(dl);

  const raw = claims.scope ?? claims.scp ?? [];
  const scopes = Array.isArray(raw) ? raw : String(raw).split(/\s+/).filter(Boolean);
  el.scopes.replaceChildren(...(scopes.length
    ? scopes.map((s) => chip(`${client.hasScope(s) ? "✓" : "✗"} ${s}`, "scope"))
    : [chip("no scope claim")]));
}

// ---- actions ------------------------------------------------------------------------

function wireUi() {
  el.loginForm.addEventListener("submit", onLogin);
  el.callApi.addEventListener("click", () => run("GET /api/me", callApi));
  el.refresh.addEventListener("click", () => run("refresh()", async () => {
    await client.refresh(); // resolves with the token: deliberately discarded
    setMessage("Refreshed — new token in memory.");
  }));
  el.logout.addEventListener("click", () => run("logout()", async () => {
    const endSession = await client.logout();
    setMessage("Logged out here and in other tabs; the server revoked the refresh cookie.");
    // Upstream mode: end the provider's session too (RP-initiated logout).
    if (endSession) location.assign(endSession);
  }));
  el.openTab.addEventListener("click", () => window.open(location.href, "_blank"));
  el.clearTimeline.addEventListener("click", () => el.timeline.replaceChildren());
  el.scopeForm.addEventListener("submit", (e) => {
    e.preventDefault();
    const scope = el.scopeInput.value.trim();
    if (!client || !scope) { el.scopeResult.textContent = ""; return; }
    el.scopeResult.textContent = `hasScope(${JSON.stringify(scope)}) → ${client.hasScope(scope)}`;
  });
}

function showProviderLogin() {
  el.loginForm.hidden = true;
  const box = $("provider-login");
  box.hidden = false;
  const button = $("provider-sign-in");
  button.addEventListener("click", () => client.login(location.origin + "/"));
  const error = new URLSearchParams(location.search).get("login_error");
  if (error) {
    const p = $("provider-error");
    p.textContent = `Sign-in did not complete: ${error}`;
    p.hidden = false;
  }
}

async function onLogin(e) {
  e.preventDefault();
  if (!client) return;
  el.loginError.hidden = true;
  el.loginBtn.disabled = true;
  try {
    const res = await fetch("/auth/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ username: el.username.value, password: el.password.value }),
      credentials: "include",
    });
    if (res.status !== 200) {
      const body = await res.json().catch(() => ({}));
      const err = new Error(res.status === 401 ? "Wrong username or password." : `HTTP ${res.status}`);
      err.code = typeof body.error === "string" ? body.error : `http_${res.status}`;
      throw err;
    }
    client.setSession(await res.json());
    setMessage("Signed in — the token lives in wasm memory only.");
  } catch (err) {
    el.loginError.textContent = `${errCode(err)}: ${err.message}`;
    el.loginError.hidden = false;
    showError(err, "login");
  } finally {
    el.loginBtn.disabled = false;
    render();
  }
}

async function callApi() {
  el.apiResult.textContent = "Calling…";
  delete el.apiResult.dataset.kind;
  try {
    const res = await client.fetch("/api/me");
    const text = await res.text();
    let body;
    try { body = JSON.stringify(JSON.parse(text), null, 2); } catch { body = text || "(empty body)"; }
    el.apiResult.textContent = `HTTP ${res.status} ${res.statusText}\n\n${body}`;
    el.apiResult.dataset.kind = res.ok ? "ok" : "error";
    setMessage(`GET /api/me → ${res.status}`);
  } catch (err) {
    el.apiResult.textContent = `${errCode(err)}: ${err.message}`;
    el.apiResult.dataset.kind = "error";
    throw err;
  }
}

async function run(label, fn) {
  setMessage(`${label}…`);
  try { await fn(); } catch (err) { showError(err, label); } finally { render(); }
}

// ---- helpers ------------------------------------------------------------------------

function setMessage(text, kind = "info") {
  el.message.textContent = text;
  el.message.dataset.kind = kind;
}

function showError(err, context) {
  setMessage(`${context} failed — ${errCode(err)}: ${err?.message ?? String(err)}`, "error");
}

function errCode(err) {
  return err?.code ?? err?.name ?? "error";
}

function note(text) {
  const p = document.createElement("p");
  p.className = "muted";
  p.textContent = text;
  return p;
}

function chip(text, className = "muted") {
  const li = document.createElement("li");
  li.className = className;
  li.textContent = text;
  return li;
}

function fmtMs(ms) {
  const s = Math.max(0, ms) / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  return m < 60 ? `${m} m ${String(Math.floor(s % 60)).padStart(2, "0")} s` : `${Math.floor(m / 60)} h ${m % 60} m`;
}

function clock(t) {
  return new Date(t).toLocaleTimeString([], { hour12: false });
}

function clockMs(t) {
  return `${clock(t)}.${String(new Date(t).getMilliseconds()).padStart(3, "0")}`;
}
