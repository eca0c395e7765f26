// tokenwarden: the browser shell's performers (hand-written; the wasm
// imports this file through wasm-bindgen, and the release build bundles it
// into index.js).
//
// Each function only performs: the wasm decides what to send, for how long
// to wait, when to steal a lock and what a result means (src/policy), and
// src/browser/*.rs read the plain values these return or resolve with.
// Written in JS for size (issue 14): the same calls made from Rust through
// web-sys and Reflect took 12.2 KB more raw wasm (4.4 KB brotli) and 27 more
// wasm imports than this file costs the entry (+0.7 KB brotli); the payload
// went from 46,764 to 42,988 B.

/** The crate's one call of `fetch`: refresh and logout calls, app requests, the entry's fast path. */
export function send(input, init) {
  return fetch(input, init);
}

/**
 * POSTs an empty body with the cookie and `headers` ("name\nvalue\n…"); the
 * whole exchange, body included, is aborted after `ms`. Resolves with
 * `[status, body, Retry-After, DPoP-Nonce, Date]`; rejects with `true` when the
 * time ran out, `false` for any other failure.
 */
export async function post(url, headers, ms) {
  const c = new AbortController();
  let late = false;
  const t = setTimeout(() => {
    late = true;
    c.abort();
  }, ms);
  try {
    const h = new Headers();
    const a = headers ? headers.split("\n") : [];
    for (let i = 0; i < a.length; i += 2) h.set(a[i], a[i + 1]);
    const r = await send(url, { method: "POST", credentials: "include", cache: "no-store", headers: h, signal: c.signal });
    const get = (n) => r.headers.get(n) ?? undefined;
    return [r.status, await r.text(), get("retry-after"), get("dpop-nonce"), get("date")];
  } catch {
    throw late;
  } finally {
    clearTimeout(t);
    c.abort();
  }
}

/**
 * Asks for the Web Lock `name`, waiting at most `wait` ms (or stealing it
 * when `wait` is negative). Resolves with the function that releases it, or
 * `null` when it was not granted or the host has no Web Locks.
 */
export function lock(name, wait) {
  const locks = globalThis.navigator && navigator.locks;
  if (!locks) return Promise.resolve(null);
  let release, granted;
  const held = new Promise((r) => (release = r));
  const got = new Promise((r) => (granted = r));
  const no = () => (release(), null);
  try {
    const pending = locks.request(name, wait < 0 ? { steal: true } : { signal: AbortSignal.timeout(wait) }, () => {
      granted(true);
      return held;
    });
    // `pending` rejects if the wait is aborted (or the lock is later stolen
    // from us); racing it with `got` also keeps that rejection handled.
    return Promise.race([got, pending]).then((v) => (v ? release : no()), no);
  } catch {
    return Promise.resolve(no());
  }
}

const utf8 = (s) => new TextEncoder().encode(s);

/** A new non-extractable ECDSA P-256 key pair: `[privateKey, x, y]` (the public JWK's coordinates). */
export async function makeKey() {
  const s = crypto.subtle;
  const pair = await s.generateKey({ name: "ECDSA", namedCurve: "P-256" }, false, ["sign"]);
  // The public half is always extractable, whatever `extractable` says.
  const jwk = await s.exportKey("jwk", pair.publicKey);
  return [pair.privateKey, jwk.x, jwk.y];
}

/** ES256 signature (raw r || s) of `input` with `key`. */
export async function sign(key, input) {
  return new Uint8Array(await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, key, utf8(input)));
}

/** SHA-256 of `input`. */
export async function sha256(input) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", utf8(input)));
}

/**
 * Calls `f(online)` whenever a sleeping or hidden page comes back:
 * `visibilitychange` to visible, `focus`, `pageshow`, and `online` (then
 * `f(true)`). Returns the function that stops listening.
 */
export function wake(f) {
  const d = globalThis.document;
  const w = globalThis.window;
  const on = (t, kind, g) => {
    t && t.addEventListener(kind, g);
    return () => t && t.removeEventListener(kind, g);
  };
  const offs = [
    on(d, "visibilitychange", () => d.visibilityState !== "hidden" && f(false)),
    on(w, "focus", () => f(false)),
    on(w, "pageshow", () => f(false)),
    on(w, "online", () => f(true)),
  ];
  return () => offs.forEach((off) => off());
}

/** Joins the `BroadcastChannel` `name`; `f(data)` gets each message. `null` where there is none. */
export function join(name, f) {
  try {
    const c = new BroadcastChannel(name);
    c.onmessage = (e) => f(e.data);
    return c;
  } catch {
    return null;
  }
}

/** Posts `message` (structured-cloned) to the channel's other members. */
export function tell(c, message) {
  try {
    c.postMessage(message);
  } catch {
    // A closed channel or an uncloneable value: nothing to deliver.
  }
}

/** Leaves the channel. */
export function leave(c) {
  c.onmessage = null;
  c.close();
}

/**
 * A `TokenClientError`: an instance of `C` (the class the entry registered)
 * when there is one, with `code`, and `status` and the OAuth `error` unless
 * 0 and "" (none).
 */
export function error(C, message, code, status, oauth) {
  const e = C ? new C(message) : Object.assign(new Error(message), { name: "TokenClientError" });
  e.code = code;
  if (status) e.status = status;
  if (oauth) e.error = oauth;
  return e;
}

// The property names of each event's two values.
const FIELDS = {
  signedIn: ["expiresAt"],
  refreshed: ["expiresAt", "source"],
  refreshFailed: ["error", "retryInMs"],
  signedOut: ["reason"],
  stateChanged: ["state"],
};

/** Adds `f` to the set of listeners; returns the function that removes it (idempotent). */
export function subscribe(listeners, f) {
  const g = (e) => f(e);
  listeners.add(g);
  return () => listeners.delete(g);
}

/**
 * Tells every listener of the event `{ type, …}`. The set is copied first,
 * so a listener may subscribe, unsubscribe or call the client; one that
 * throws is reported to the console and does not stop the others.
 */
export function emit(listeners, type, a, b) {
  const [ka, kb] = FIELDS[type];
  const event = { [ka]: a };
  if (kb) event[kb] = b;
  event.type = type;
  for (const f of [...listeners]) {
    try {
      f(event);
    } catch (e) {
      console.error("tokenwarden: a subscriber threw", e);
    }
  }
}

/** `navigator.onLine`; true where there is no navigator (the policy counts failures then). */
export function online() {
  return globalThis.navigator?.onLine !== false;
}

/**
 * `[location.href, location.origin, document.baseURI, WebCrypto?]` in a page with `fetch`
 * (the base is what `fetch` resolves a relative URL against: a `<base>` element moves it;
 * WebCrypto is there only in a secure context); `null` elsewhere.
 */
export function page() {
  const l = globalThis.location;
  return l && typeof fetch === "function"
    ? [String(l.href), String(l.origin), String(globalThis.document?.baseURI ?? l.href), !!globalThis.crypto?.subtle]
    : null;
}

/** `new URL(input, base).href`, or `null` when it does not parse. */
export function resolve(input, base) {
  try {
    return new URL(input, base).href;
  } catch {
    return null;
  }
}

/**
 * The origin the browser's `URL` makes of `input` when `input` is one
 * (`scheme://host[:port]`, one trailing `/` allowed): `https://127.1` →
 * `https://127.0.0.1`, a default port dropped, an IDN host in punycode.
 * `null` when it is not (the wasm then says what is wrong).
 */
export function canon(input) {
  const i = input.indexOf("://");
  if (i < 0 || /[?#@]/.test(input) || input.slice(i + 3).replace(/\/+$/, "").includes("/")) return null;
  try {
    const u = new URL(input);
    const bare = u.pathname === "/" && !u.search && !u.hash && !u.username && !u.password;
    return bare && u.origin !== "null" ? u.origin : null;
  } catch {
    return null;
  }
}

/** `new Request(input, init)`, as `fetch(input, init)` would build it; throws as it would. */
export function request(input, init) {
  return new Request(input, init);
}

/** 128 random bits (zeros where there is no `crypto`: DPoP needs a secure context anyway). */
export function random128() {
  const b = new Uint8Array(16);
  if (globalThis.crypto) crypto.getRandomValues(b);
  return b;
}
