// Test support for tests/browser.rs: a scripted fetch that records every
// request, a storage spy, and small helpers. Routes map a path (same
// origin) or a full origin+path to a list of replies; each request takes
// the next reply and the last one repeats. A reply is
// { status, body, headers, delayMs, networkError, hang, mint: seconds }:
// `mint` answers a fresh token response tok-1, tok-2, ... living `mint` s.

let routes = {};
let minted = 0;

export function setRoutes(r) {
  routes = r;
}

export function stubFetch(r) {
  routes = r;
  minted = 0;
  const log = [];
  globalThis.fetch = async (input, init) => {
    const req = new Request(input, init);
    const u = new URL(req.url);
    const path = u.origin === location.origin ? u.pathname : u.origin + u.pathname;
    const entry = {
      url: req.url,
      path,
      method: req.method,
      auth: req.headers.get("authorization"),
      csrf: req.headers.get("x-requested-with"),
      credentials: req.credentials,
      body: req.method === "GET" || req.method === "HEAD" ? null : await req.text(),
    };
    log.push(entry);
    const list = routes[path] || routes["*"] || [{ status: 404 }];
    const reply = list.length > 1 ? list.shift() : list[0];
    if (reply.delayMs) await new Promise((r) => setTimeout(r, reply.delayMs));
    if (reply.networkError) throw new TypeError("Failed to fetch");
    if (reply.hang) {
      await new Promise((_, reject) => {
        if (req.signal.aborted) reject(new DOMException("aborted", "AbortError"));
        req.signal.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError")));
      });
    }
    let body = reply.body ?? "";
    if (reply.mint !== undefined) {
      minted += 1;
      body = JSON.stringify({ access_token: `tok-${minted}`, token_type: "Bearer", expires_in: reply.mint });
    }
    const status = reply.status ?? 200;
    const nullBody = status === 204 || status === 304;
    return new Response(nullBody ? null : body, { status, headers: reply.headers || {} });
  };
  return log;
}

export function count(log, path) {
  return log.filter((e) => e.path === path).length;
}

export function authsFor(log, path) {
  return log.filter((e) => e.path === path).map((e) => e.auth);
}

export function makeJwt(payload) {
  const b64 = (s) => btoa(String.fromCharCode(...new TextEncoder().encode(s))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  return `${b64(JSON.stringify({ alg: "ES256", typ: "JWT", kid: "test" }))}.${b64(JSON.stringify(payload))}.c2ln`;
}


// Records every write to a persistent store: Web Storage, document.cookie,
// IndexedDB and the Cache API. The report lists what was touched.
export function spyStorage() {
  const touched = [];
  const wrap = (obj, name, label) => {
    const orig = obj[name];
    obj[name] = function (...args) {
      touched.push(label);
      return orig.apply(this, args);
    };
  };
  wrap(Storage.prototype, "setItem", "Storage.setItem");
  const cookie = Object.getOwnPropertyDescriptor(Document.prototype, "cookie");
  Object.defineProperty(document, "cookie", {
    configurable: true,
    get() {
      return cookie.get.call(document);
    },
    set(v) {
      touched.push("document.cookie");
      cookie.set.call(document, v);
    },
  });
  if (globalThis.indexedDB) wrap(IDBFactory.prototype, "open", "indexedDB.open");
  if (globalThis.caches) wrap(CacheStorage.prototype, "open", "caches.open");
  const before = { local: JSON.stringify(localStorage), session: JSON.stringify(sessionStorage) };
  return () => {
    const out = [...touched];
    if (JSON.stringify(localStorage) !== before.local) out.push("localStorage changed");
    if (JSON.stringify(sessionStorage) !== before.session) out.push("sessionStorage changed");
    if (/tok-/.test(document.cookie)) out.push("cookie holds a token");
    return out;
  };
}
